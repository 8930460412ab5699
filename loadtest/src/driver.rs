//! The open-loop driver: sends `POST /orders` on schedule, records every answer, then waits
//! (bounded) for every accepted order to reach a terminal state.
//!
//! Arrival `i` is sent at its due time ([`crate::schedule`]) by a task of its own, so a slow answer
//! never delays the next arrival. Latency is measured from the due time: when the client falls
//! behind, the wait it caused counts against the system, as a user would have felt it. At most
//! `max_in_flight` requests are outstanding; an arrival beyond that is recorded as overflow and not
//! sent, rather than queued (queueing would turn the test back into a closed loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use uuid::Uuid;

use crate::progress::Progress;
use crate::schedule::{self, Schedule};
use crate::target::Target;

/// How one arrival ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// 202: the order exists.
    Accepted {
        /// The order.
        order_id: Uuid,
        /// The trace of `POST /orders`.
        trace_id: String,
    },
    /// Any other status.
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// No answer (connection refused, timeout).
    Failed {
        /// Why.
        error: String,
    },
    /// Not sent: `max_in_flight` requests were outstanding.
    Overflow,
}

/// One arrival of the schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arrival {
    /// Its index in the schedule.
    pub index: u64,
    /// When it was due, seconds since the start.
    pub due_s: f64,
    /// When it was sent, seconds since the start (`None` for overflow).
    pub sent_s: Option<f64>,
    /// From the due time to the answer, microseconds (`None` when not sent).
    pub latency_us: Option<u64>,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Arrival {
    /// The order id, if accepted.
    pub fn order_id(&self) -> Option<Uuid> {
        self.accepted().map(|(order_id, _)| order_id)
    }

    /// The order id and the trace id the answer carried (empty if none), if accepted.
    pub fn accepted(&self) -> Option<(Uuid, &str)> {
        match &self.outcome {
            Outcome::Accepted { order_id, trace_id } => Some((*order_id, trace_id.as_str())),
            _ => None,
        }
    }
}

/// Everything the arrival phase recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Arrivals {
    /// Every arrival, by index.
    pub arrivals: Vec<Arrival>,
    /// Arrivals sent more than [`schedule::LATE_START`] after their due time.
    pub late_starts: u64,
    /// Arrivals not sent because too many requests were in flight.
    pub overflow: u64,
    /// Seconds from the first due time to the last answer.
    pub elapsed_s: f64,
}

/// Settings of the arrival phase.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// The arrival plan.
    pub schedule: Schedule,
    /// Requests outstanding at most.
    pub max_in_flight: usize,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

/// An HTTP client for the shop, with a timeout.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .build()
        .expect("a reqwest client with a timeout always builds")
}

/// A valid order of made-up data. The customer is obviously synthetic: the load tester's orders
/// must not look like anyone's personal data, and the privacy checks can search for these strings.
pub fn order_body(index: u64) -> Value {
    let pizzas = ["margherita", "marinara", "diavola"];
    json!({
        "customer": {
            "name": "Load Tester",
            "phone": "+00 000 0000",
            "address": {"street": "1 Synthetic Way", "postal_code": "00000", "city": "Loadville"}
        },
        "items": [{"pizza": pizzas[(index % 3) as usize], "quantity": 1 + (index % 2)}]
    })
}

/// Sends the schedule's arrivals against `target` and records them. `started` is the run's start
/// (the fault driver counts from the same instant).
pub async fn drive(
    target: &Target,
    options: &DriveOptions,
    started: Instant,
    progress: &Progress,
) -> Arrivals {
    let client = http_client(options.request_timeout);
    let count = options.schedule.count();
    let slots = Arc::new(Semaphore::new(options.max_in_flight));
    let results = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let late = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let url = format!("{}/orders", target.order_url.trim_end_matches('/'));
    for index in 0..count {
        let due = options.schedule.due(index);
        tokio::time::sleep_until((started + due).into()).await;
        let sent = started.elapsed();
        if schedule::is_late(due, sent) {
            late.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            results.lock().await.push(Arrival {
                index,
                due_s: due.as_secs_f64(),
                sent_s: None,
                latency_us: None,
                outcome: Outcome::Overflow,
            });
            progress.arrival(false);
            continue;
        };
        let client = client.clone();
        let url = url.clone();
        let results = results.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let outcome = post_order(&client, &url, index).await;
            let latency = started.elapsed().saturating_sub(due);
            drop(permit);
            progress.arrival(matches!(outcome, Outcome::Accepted { .. }));
            results.lock().await.push(Arrival {
                index,
                due_s: due.as_secs_f64(),
                sent_s: Some(sent.as_secs_f64()),
                latency_us: Some(latency.as_micros() as u64),
                outcome,
            });
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut arrivals = std::mem::take(&mut *results.lock().await);
    arrivals.sort_by_key(|a| a.index);
    let overflow = arrivals.iter().filter(|a| a.outcome == Outcome::Overflow).count() as u64;
    Arrivals {
        arrivals,
        late_starts: late.load(Ordering::Relaxed),
        overflow,
        elapsed_s: started.elapsed().as_secs_f64(),
    }
}

async fn post_order(client: &reqwest::Client, url: &str, index: u64) -> Outcome {
    let response = client
        .post(url)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .json(&order_body(index))
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Failed {
                error: error_chain(&e),
            };
        }
    };
    let status = response.status().as_u16();
    if status != 202 {
        return Outcome::Refused { status };
    }
    match response.json::<Value>().await {
        Ok(body) => match body["order_id"].as_str().and_then(|s| s.parse().ok()) {
            Some(order_id) => Outcome::Accepted {
                order_id,
                trace_id: body["trace_id"].as_str().unwrap_or_default().to_owned(),
            },
            None => Outcome::Failed {
                error: format!("202 without an order_id: {body}"),
            },
        },
        Err(e) => Outcome::Failed {
            error: error_chain(&e),
        },
    }
}

/// The error with its causes, for the report (reqwest's top-level message alone says little).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An order as `GET /orders/{id}` shows it at the end of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderState {
    /// The order.
    pub order_id: Uuid,
    /// Its status (`missing` when the API answered 404).
    pub status: String,
    /// Whether the status is terminal.
    pub terminal: bool,
    /// Why it was cancelled or rejected.
    pub reason: Option<String>,
    /// Timeline entries with a terminal status (exactly one for a well-behaved order).
    pub terminal_entries: usize,
    /// Seconds from creation to the terminal timeline entry, by the service's clock.
    pub end_to_end_s: Option<f64>,
    /// Where that time went: each timeline entry after the first, in `seq` order, with the seconds
    /// since the entry before it (`"payment-captured"` and the time from `order-accepted` to it, and
    /// so on), by the service's clock. An entry's time is when the order service recorded it (an
    /// event from Kafka: when its consumer applied it), so a gap holds the work before the entry
    /// and every queue on the way: under load the gap that grows names the stage that queues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<(String, f64)>,
}

/// The terminal statuses of the order API.
pub const TERMINAL: &[&str] = &["completed", "cancelled", "rejected"];

/// How many `GET /orders/{id}` [`settle`] has in flight at once. All of a round at once was a burst
/// of a thousand requests every second after a busy step, landing on the shop while it finishes the
/// very orders the bench times: the tester's own reads slowed what it measured.
const SETTLE_LOOKS_IN_FLIGHT: usize = 64;

/// What [`settle`] found, and what it cost the shop.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// The last state of each order, in the order asked.
    pub states: Vec<OrderState>,
    /// The `GET /orders/{id}` the order service answered (each one statement, one commit, in its
    /// database): what the bench leaves out of the platform's commits per order.
    pub looks: u64,
}

/// Polls every order until it is terminal or `timeout` has passed; returns the last state of each.
pub async fn settle(target: &Target, orders: &[Uuid], timeout: Duration, progress: &Progress) -> Settled {
    let client = http_client(Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    let mut states: std::collections::BTreeMap<Uuid, OrderState> = Default::default();
    let mut pending: Vec<Uuid> = orders.to_vec();
    let mut looks = 0u64;
    loop {
        let round: Vec<(Uuid, Option<OrderState>)> = futures::stream::iter(pending.iter().map(|id| {
            let client = client.clone();
            let url = format!("{}/orders/{id}", target.order_url.trim_end_matches('/'));
            let id = *id;
            async move { (id, fetch_state(&client, &url, id).await) }
        }))
        .buffer_unordered(SETTLE_LOOKS_IN_FLIGHT)
        .collect()
        .await;
        pending.clear();
        looks += round.iter().filter(|(_, state)| state.is_some()).count() as u64;
        for (id, state) in round {
            match state {
                Some(s) if s.terminal => {
                    states.insert(id, s);
                }
                Some(s) => {
                    states.insert(id, s);
                    pending.push(id);
                }
                None => pending.push(id),
            }
        }
        progress.settling(orders.len() - pending.len(), orders.len());
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let states = orders
        .iter()
        .map(|id| {
            states.remove(id).unwrap_or(OrderState {
                order_id: *id,
                status: "unknown".into(),
                terminal: false,
                reason: None,
                terminal_entries: 0,
                end_to_end_s: None,
                stages: Vec::new(),
            })
        })
        .collect();
    Settled { states, looks }
}

/// One `GET /orders/{id}`; `None` when the service did not answer (it may be restarting).
async fn fetch_state(client: &reqwest::Client, url: &str, id: Uuid) -> Option<OrderState> {
    // An unsampled parent: the services trust it and record no spans for these polls, so the
    // tester's own reads neither load Jaeger nor clutter the order's traces.
    let traceparent = format!(
        "00-{}-{}-00",
        Uuid::new_v4().simple(),
        &Uuid::new_v4().simple().to_string()[..16]
    );
    let response = client
        .get(url)
        .header("traceparent", traceparent)
        .send()
        .await
        .ok()?;
    if response.status().as_u16() == 404 {
        return Some(OrderState {
            order_id: id,
            status: "missing".into(),
            terminal: false,
            reason: None,
            terminal_entries: 0,
            end_to_end_s: None,
            stages: Vec::new(),
        });
    }
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    Some(state_from_json(id, &body))
}

/// Reads the parts of an order document the verification needs.
pub fn state_from_json(id: Uuid, body: &Value) -> OrderState {
    let status = body["status"].as_str().unwrap_or("unknown").to_owned();
    let timeline = body["timeline"].as_array().cloned().unwrap_or_default();
    let terminal_entries: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)))
        .collect();
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
    };
    let end_to_end_s = match (
        parse(&body["created_at"]),
        terminal_entries.first().and_then(|e| parse(&e["at"])),
    ) {
        (Some(start), Some(end)) => Some((end - start).as_seconds_f64()),
        _ => None,
    };
    OrderState {
        order_id: id,
        terminal: body["terminal"]
            .as_bool()
            .unwrap_or_else(|| TERMINAL.contains(&status.as_str())),
        status,
        reason: body["reason"].as_str().map(str::to_owned),
        terminal_entries: terminal_entries.len(),
        end_to_end_s,
        stages: stages(&timeline),
    }
}

/// The gaps between an order's timeline entries, in `seq` order (see [`OrderState::stages`]);
/// entries without a readable event or time are left out.
fn stages(timeline: &[Value]) -> Vec<(String, f64)> {
    let mut entries: Vec<(i64, &str, time::OffsetDateTime)> = timeline
        .iter()
        .filter_map(|e| {
            let at = time::OffsetDateTime::parse(
                e["at"].as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            Some((e["seq"].as_i64()?, e["event"].as_str()?, at))
        })
        .collect();
    entries.sort_by_key(|(seq, _, _)| *seq);
    entries
        .windows(2)
        .map(|w| (w[1].1.to_owned(), (w[1].2 - w[0].2).as_seconds_f64()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_document_yields_status_terminal_entries_and_end_to_end_time() {
        let id = Uuid::new_v4();
        let body = json!({
            "order_id": id, "status": "completed", "terminal": true, "reason": null,
            "created_at": "2026-01-01T10:00:00Z",
            "timeline": [
                {"seq": 1, "at": "2026-01-01T10:00:00Z", "status": "accepted"},
                {"seq": 2, "at": "2026-01-01T10:00:04.5Z", "status": "completed"}
            ]
        });
        let s = state_from_json(id, &body);
        assert!(s.terminal);
        assert_eq!(s.terminal_entries, 1);
        assert_eq!(s.end_to_end_s, Some(4.5));
        assert!(s.stages.is_empty(), "entries without an event name are no stage");
        let twice = json!({"status": "cancelled", "terminal": true, "timeline": [
            {"status": "completed", "at": "x"}, {"status": "cancelled", "at": "y"}]});
        assert_eq!(state_from_json(id, &twice).terminal_entries, 2);
    }

    #[test]
    fn the_stages_are_the_gaps_between_timeline_entries_in_seq_order() {
        let id = Uuid::new_v4();
        // Out of order on purpose: the gaps follow `seq`, not the array.
        let body = json!({"status": "completed", "terminal": true, "timeline": [
            {"seq": 3, "at": "2026-01-01T10:00:03.5Z", "status": "completed", "event": "order-completed"},
            {"seq": 1, "at": "2026-01-01T10:00:00Z", "status": "accepted", "event": "order-accepted"},
            {"seq": 2, "at": "2026-01-01T10:00:01.25Z", "status": "paid", "event": "payment-captured"},
            {"seq": 4, "at": "not a time", "status": "completed", "event": "ignored"}
        ]});
        assert_eq!(
            state_from_json(id, &body).stages,
            vec![
                ("payment-captured".to_owned(), 1.25),
                ("order-completed".to_owned(), 2.25)
            ]
        );
    }

    #[test]
    fn the_synthetic_order_is_valid_and_varies_its_items() {
        let a = order_body(0);
        let b = order_body(1);
        assert_ne!(a["items"], b["items"]);
        assert_eq!(a["customer"]["name"], "Load Tester");
    }
}
