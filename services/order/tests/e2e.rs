//! End to end, on the real stack, with the three services as real processes (issue #5): orders placed
//! through the public API, their traces read back from Jaeger and checked against the span model of
//! the TELEMETRY design.
//!
//! | test | what it shows |
//! |---|---|
//! | `continuous` | one order, one trace: every span of all three services and of the workflow |
//! | `linked` | the same order as several traces, each found by `pizza.order.id`, joined by links |
//! | `dropped context` | the kitchen's Kafka edge loses its context: the order completes, the trace breaks |
//! | `kill -9` | the order service dies inside a step; restarted, it completes the order in the same trace |
//! | `kitchen 500s` | failed kitchen calls are step attempts with their HTTP spans; the order completes |
//! | `personal data` | no customer name, address or phone in any exported span, log or metric |
//!
//! Each test gets a fresh database, its own topics and consumer groups, and its own three processes
//! ([`pizza_testkit::shop`]), exporting to the native Collector, which passes the traces to Jaeger.
//! The customer's details are distinctive strings, so a scan for them cannot match anything else.
//!
//! Spans reach Jaeger a moment after the work (SDK batch every 200 ms, the Collector's batch, Jaeger's
//! ingestion), so every read waits, bounded, until the trace holds what the test expects and then until
//! it stops growing. The customer's `GET /orders/{id}` polls are requests of their own, each a trace
//! of its own; they are left out of the order's flow.
//!
//! An order takes 2 to 3 s here. Across a `kill -9` it takes about 45 s: the restarted order service
//! joins its Kafka consumer group at once, but the broker hands it the partitions only when the
//! killed member's session has timed out (librdkafka's default `session.timeout.ms`, 45 s); until
//! then the kitchen's `order-ready` waits on the topic.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use pizza_telemetry::Topology;
use pizza_telemetry::attributes::{pizza, semconv, workflow as wf};
use pizza_testkit::conventions::{Registry, personal_data, unknown_attributes};
use pizza_testkit::records::eventually;
use pizza_testkit::shop::{Options, Service, Shop, database_url_of};
use pizza_testkit::{Jaeger, JaegerError, Settle, Span, SpanGraph, SpanKind, SpanSearch, Stack, Trace};
use rdkafka::Message as _;
use rdkafka::message::Headers as _;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// The customer: strings that occur nowhere else, so finding one in telemetry means it leaked.
const NAME: &str = "Zebulon Quaxworth";
const PHONE: &str = "+39 055 7391 4628";
const STREET: &str = "17 Vicolo dei Quaxworth";
const POSTAL_CODE: &str = "50133";
const CITY: &str = "Fiesole-Quaxbury";
/// What the scans look for. The postal code alone is too short to be distinctive; it is searched
/// with the city, as an address line would carry it.
const PERSONAL: &[&str] = &[
    NAME,
    "Quaxworth",
    PHONE,
    "7391 4628",
    STREET,
    CITY,
    "50133 Fiesole",
];

/// How long an order may take to end (2 to 5 s here, about a minute across a `kill -9`).
const ORDER_LIMIT: Duration = Duration::from_secs(150);
/// How long Jaeger may take to hold every span of an order.
const TRACE_LIMIT: Duration = Duration::from_secs(60);

fn order_body() -> Value {
    json!({
        "customer": {"name": NAME, "phone": PHONE,
                     "address": {"street": STREET, "postal_code": POSTAL_CODE, "city": CITY}},
        "items": [{"pizza": "margherita", "quantity": 2}, {"pizza": "diavola", "quantity": 1}]
    })
}

// ---- driving the shop --------------------------------------------------------------------------------

/// An accepted order.
struct Placed {
    order: Uuid,
    /// The trace id `POST /orders` answered with.
    trace_id: String,
    at: Instant,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client with a timeout builds")
}

async fn place(shop: &Shop) -> anyhow::Result<Placed> {
    let response = client()
        .post(format!("{}/orders", shop.url(Service::Order)))
        .json(&order_body())
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status == 202, "POST /orders answered {status}: {body}");
    Ok(Placed {
        order: body["order_id"].as_str().context("order_id")?.parse()?,
        trace_id: body["trace_id"].as_str().context("trace_id")?.to_owned(),
        at: Instant::now(),
    })
}

async fn get_order(shop: &Shop, order: Uuid) -> anyhow::Result<Value> {
    let response = client()
        .get(format!("{}/orders/{order}", shop.url(Service::Order)))
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "GET /orders/{order}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

/// Polls `GET /orders/{id}` until the order is terminal; fails unless it ended `completed`. Every
/// poll is a trace of its own carrying the order id, and Jaeger's search returns at most 100 traces
/// per service: after the first seconds it polls once a second, so a slow order does not crowd its
/// own traces out of the search.
async fn until_completed(shop: &Shop, placed: &Placed) -> anyhow::Result<Value> {
    let started = Instant::now();
    let done = loop {
        let order = get_order(shop, placed.order).await?;
        if order["terminal"].as_bool().unwrap_or(false) {
            break order;
        }
        ensure!(
            started.elapsed() < ORDER_LIMIT,
            "the order did not end within {ORDER_LIMIT:?}: {order}"
        );
        let pause = if started.elapsed() < Duration::from_secs(5) {
            200
        } else {
            1000
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    };
    ensure!(
        done["status"] == "completed",
        "the order did not complete: {done}"
    );
    eprintln!("order {} completed in {:?}", placed.order, placed.at.elapsed());
    Ok(done)
}

/// The order's step attempts, as `(step, attempt, status, error type)`, in order.
async fn attempts(pool: &PgPool, order: Uuid) -> anyhow::Result<Vec<(String, i32, String, Option<String>)>> {
    Ok(sqlx::query_as(
        "select a.step_name, a.attempt, a.status, a.error->>'error_type' from workflow.step_attempts a \
         join orders.orders o on o.run_id = a.run_id where o.order_id = $1 order by a.id",
    )
    .bind(order)
    .fetch_all(pool)
    .await?)
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---- reading the order back from Jaeger ----------------------------------------------------------------

/// Every span of every trace holding a span with `pizza.order.id` = `order`, from any of the three
/// services, read whole through the v3 API; waits until `ready` accepts them and their number has not
/// changed for a second and a half.
async fn order_spans(order: Uuid, ready: impl Fn(&[Span]) -> bool) -> anyhow::Result<Vec<Span>> {
    let jaeger = Jaeger::new(Stack::from_env().jaeger_url);
    let started = Instant::now();
    let settle = Settle {
        limit: TRACE_LIMIT,
        quiet: Duration::from_millis(1500),
        poll: Duration::from_millis(300),
    };
    let found = match jaeger
        .wait_for_spans(&SpanSearch::order(order), settle, ready)
        .await
    {
        Ok(found) => found,
        Err(JaegerError::NotReady { found, .. }) => bail!(
            "the spans of order {order} never reached the expected shape within {TRACE_LIMIT:?}:\n{}",
            shape(&found.spans).join("\n")
        ),
        Err(e) => return Err(e.into()),
    };
    ensure!(
        found.cut.is_empty(),
        "{:?} answered Jaeger's search limit for order {order}: some traces may be missing",
        found.cut
    );
    eprintln!(
        "order {order}: {} spans in {} traces, read back in {:?}",
        found.spans.len(),
        found.traces.len(),
        started.elapsed()
    );
    Ok(found.spans)
}

/// The spans of the order's processing: everything but the customer's own reads (`GET /orders/{id}`
/// polls: separate requests, each its own trace).
fn flow(spans: &[Span]) -> Vec<&Span> {
    SpanGraph::of_order(spans).spans().to_vec()
}

fn named<'a>(spans: &[&'a Span], name: &str, kind: SpanKind) -> Vec<&'a Span> {
    spans
        .iter()
        .copied()
        .filter(|s| s.name == name && s.kind == kind)
        .collect()
}

fn one<'a>(spans: &[&'a Span], name: &str, kind: SpanKind) -> anyhow::Result<&'a Span> {
    let found = named(spans, name, kind);
    ensure!(
        found.len() == 1,
        "want one {kind:?} span {name:?}, found {}",
        found.len()
    );
    Ok(found[0])
}

fn find<'a>(spans: &[&'a Span], trace_id: &str, span_id: &str) -> Option<&'a Span> {
    SpanGraph::new(spans.iter().copied()).get(trace_id, span_id)
}

fn parent<'a>(spans: &[&'a Span], span: &Span) -> Option<&'a Span> {
    SpanGraph::new(spans.iter().copied()).parent(span)
}

fn link_reason(span: &Span, target: &Span) -> Option<String> {
    span.link_to(target).map(|l| l.reason().unwrap_or("").to_owned())
}

fn traces_of(spans: &[&Span]) -> BTreeSet<String> {
    spans.iter().map(|s| s.trace_id.clone()).collect()
}

/// Spans per trace, largest first, for the report.
fn trace_sizes(spans: &[&Span]) -> Vec<usize> {
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for s in spans {
        *sizes.entry(s.trace_id.as_str()).or_default() += 1;
    }
    let mut sizes: Vec<usize> = sizes.into_values().collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

fn label(span: &Span) -> String {
    let mut label = format!("{}:{}", span.service_name, span.name);
    if let Some(n) = span.attr_i64(wf::EXECUTION_NUMBER) {
        label.push_str(&format!(" #{n}"));
    }
    if let Some(n) = span.attr_i64(wf::STEP_ATTEMPT) {
        label.push_str(&format!(" @{n}"));
    }
    label
}

/// One line per span: trace, label, parent, links; for failure messages.
fn shape(spans: &[Span]) -> Vec<String> {
    SpanGraph::new(spans).shape(|s| format!("{} {}", &s.trace_id[..8], label(s)))
}

/// What every finished order's spans hold before they are checked: the run's summary (emitted when it
/// ends), the last step, and the work of the kitchen and the delivery.
fn finished_order(spans: &[Span]) -> bool {
    let has = |service: &str, name: &str| spans.iter().any(|s| s.service_name == service && s.name == name);
    has("order", "POST /orders")
        && has("order", "workflow.run order-fulfillment")
        && has("order", "workflow.step request-feedback")
        && has("kitchen", "POST /tickets")
        && has("kitchen", "cook.finish")
        && spans
            .iter()
            .any(|s| s.name.starts_with("workflow.signal.send delivered"))
}

// ---- checks every test makes -----------------------------------------------------------------------------

/// A kitchen SERVER span whose request never reached its handler, so could not know the order:
/// answered 500 by the fault plan, or abandoned (no status) by a caller that was killed.
fn never_read(span: &Span) -> bool {
    span.kind == SpanKind::Server
        && matches!(
            span.attr_i64(semconv::HTTP_RESPONSE_STATUS_CODE),
            None | Some(500)
        )
}

/// All three services and the workflow are there; no span carries the customer's data; every
/// attribute is registered or a semantic convention; every span of the order's flow carries the order
/// id (except [`never_read`] requests) and every workflow span its run id.
fn check_common(spans: &[Span], order: Uuid) -> anyhow::Result<()> {
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    ensure!(
        services == BTreeSet::from(["delivery", "kitchen", "order"]),
        "services: {services:?}"
    );
    let trace = Trace {
        spans: spans.to_vec(),
    };
    let leaked = personal_data(&trace, PERSONAL);
    ensure!(leaked.is_empty(), "customer data in spans: {leaked:?}");
    let registry = Registry::load().map_err(anyhow::Error::msg)?;
    let unknown = unknown_attributes(&trace, &registry);
    ensure!(unknown.is_empty(), "unregistered attributes: {unknown:?}");
    let runless: Vec<String> = spans
        .iter()
        .filter(|s| s.name.starts_with("workflow") && s.attr_str(wf::RUN_ID).is_none())
        .map(label)
        .collect();
    ensure!(
        runless.is_empty(),
        "workflow spans without {}: {runless:?}",
        wf::RUN_ID
    );
    let order = order.to_string();
    let without: BTreeSet<String> = flow(spans)
        .into_iter()
        .filter(|s| s.attr_str(pizza::ORDER_ID) != Some(order.as_str()))
        .filter(|s| !never_read(s))
        .map(|s| format!("{}:{} ({:?})", s.service_name, s.name, s.kind))
        .collect();
    ensure!(
        without.is_empty(),
        "spans of the order without {}={order}: {without:?}",
        pizza::ORDER_ID
    );
    Ok(())
}

/// In both topologies: the synchronous edges and the in-process spans form the same tree.
///
/// - `POST /orders` SERVER is a root; `workflow_run.create order-fulfillment` PRODUCER its child;
/// - each `workflow.step` is a child of a `workflow.execute` of the same run;
/// - each `place-kitchen-ticket` attempt has one CLIENT `POST /tickets` child, and that one the
///   kitchen's SERVER `POST /tickets`;
/// - `workflow.signal.send` is a child of a `process` span and links to the run's create span;
/// - every `workflow.wait signal` links to a signal's send span;
/// - the run's summary is a child of the create span and says `completed`;
/// - every link points at a span that was found.
fn check_tree(all: &[&Span]) -> anyhow::Result<()> {
    let post = one(all, "POST /orders", SpanKind::Server)?;
    ensure!(post.parent_span_id.is_none(), "POST /orders is a root");
    let create = one(all, "workflow_run.create order-fulfillment", SpanKind::Producer)?;
    ensure!(create.is_child_of(post), "the run is created inside POST /orders");

    for step in all.iter().filter(|s| s.name.starts_with("workflow.step ")) {
        let execution = parent(all, step).with_context(|| format!("{} has no parent", label(step)))?;
        ensure!(
            execution.name.starts_with("workflow.execute ")
                && execution.attr_str(wf::RUN_ID) == step.attr_str(wf::RUN_ID),
            "{} is a child of {}",
            label(step),
            label(execution)
        );
    }
    let tickets = named(all, "workflow.step place-kitchen-ticket", SpanKind::Internal);
    ensure!(!tickets.is_empty(), "no place-kitchen-ticket attempt");
    for step in tickets {
        let clients: Vec<&Span> = all
            .iter()
            .copied()
            .filter(|s| s.kind == SpanKind::Client && s.is_child_of(step))
            .collect();
        ensure!(
            clients.len() == 1 && clients[0].name == "POST /tickets",
            "{} has one CLIENT POST /tickets child: {:?}",
            label(step),
            clients.iter().map(|c| label(c)).collect::<Vec<_>>()
        );
        let servers: Vec<&Span> = all
            .iter()
            .copied()
            .filter(|s| s.kind == SpanKind::Server && s.is_child_of(clients[0]))
            .collect();
        ensure!(
            servers.len() == 1 && servers[0].service_name == "kitchen" && servers[0].name == "POST /tickets",
            "the kitchen's SERVER POST /tickets under the client of {}",
            label(step)
        );
    }
    for signal in all.iter().filter(|s| s.name.starts_with("workflow.signal.send ")) {
        let process = parent(all, signal).with_context(|| format!("{} has no parent", label(signal)))?;
        ensure!(
            process.kind == SpanKind::Consumer && process.name.starts_with("process "),
            "{} is sent from a process span, not {}",
            label(signal),
            label(process)
        );
        ensure!(
            link_reason(signal, create).as_deref() == Some("signal_target"),
            "{} links to the run's create span",
            label(signal)
        );
    }
    let waits = named(all, "workflow.wait signal", SpanKind::Internal);
    ensure!(
        waits.len() == 2,
        "two signal waits (kitchen-ready, delivered), found {}",
        waits.len()
    );
    for wait in waits {
        let signals: Vec<&Span> = wait
            .links
            .iter()
            .filter_map(|l| find(all, &l.trace_id, &l.span_id))
            .filter(|s| s.name.starts_with("workflow.signal.send "))
            .collect();
        ensure!(
            signals.len() == 1,
            "{} links to the signal that ended it",
            label(wait)
        );
    }
    let summary = one(all, "workflow.run order-fulfillment", SpanKind::Internal)?;
    ensure!(
        summary.is_child_of(create),
        "the run's summary is a child of its create span"
    );
    ensure!(
        summary.attr_str(wf::RUN_STATUS) == Some("completed"),
        "run status"
    );

    for span in all {
        for link in &span.links {
            ensure!(
                find(all, &link.trace_id, &link.span_id).is_some(),
                "{} links to {}/{}, which is not among the order's spans",
                label(span),
                link.trace_id,
                link.span_id
            );
        }
    }
    Ok(())
}

/// Every `process <topic>` CONSUMER span with its `send <topic>` PRODUCER, found through its link
/// (its only link, reason `producer`).
fn consumers_and_producers<'a>(all: &[&'a Span]) -> anyhow::Result<Vec<(&'a Span, &'a Span)>> {
    let mut pairs = Vec::new();
    for process in all
        .iter()
        .copied()
        .filter(|s| s.kind == SpanKind::Consumer && s.name.starts_with("process "))
    {
        let topic = &process.name["process ".len()..];
        ensure!(
            process.links.len() == 1,
            "{} has one link: {:?}",
            label(process),
            process.links
        );
        let send = find(all, &process.links[0].trace_id, &process.links[0].span_id)
            .with_context(|| format!("{}: its producer span was not found", label(process)))?;
        ensure!(
            send.kind == SpanKind::Producer && send.name == format!("send {topic}"),
            "{} links to {}",
            label(process),
            label(send)
        );
        ensure!(
            link_reason(process, send).as_deref() == Some("producer"),
            "link reason"
        );
        pairs.push((process, send));
    }
    Ok(pairs)
}

// ---- the tests -------------------------------------------------------------------------------------------

/// `continuous`: the whole order is one trace, POST /orders at its root, spans from all three services
/// and the workflow in it; every Kafka consumer is a child of its producer and links to it; every
/// workflow execution is a child of the run's create span and links to it.
#[sqlx::test(migrations = false)]
async fn in_continuous_mode_one_order_is_one_trace_across_three_services_and_the_workflow(
    pool: PgPool,
) -> anyhow::Result<()> {
    let shop = Shop::open(Options::new(database_url_of(&pool)?).topology(Topology::Continuous)).await?;
    let placed = place(&shop).await?;
    until_completed(&shop, &placed).await?;
    let spans = order_spans(placed.order, finished_order).await?;
    let all = flow(&spans);

    let traces = traces_of(&all);
    ensure!(
        traces == BTreeSet::from([placed.trace_id.clone()]),
        "one trace, the one POST /orders answered ({}): {traces:?}\n{}",
        placed.trace_id,
        shape(&spans).join("\n")
    );
    eprintln!("continuous: {} spans of the order in 1 trace", all.len());
    for span in &all {
        if span.parent_span_id.is_some() {
            ensure!(
                parent(&all, span).is_some(),
                "{} has a parent that is not in the trace",
                label(span)
            );
        } else {
            ensure!(span.name == "POST /orders", "{} is a second root", label(span));
        }
    }
    check_tree(&all)?;

    let pairs = consumers_and_producers(&all)?;
    for (process, send) in &pairs {
        ensure!(
            process.is_child_of(send),
            "{} is a child of {}",
            label(process),
            label(send)
        );
        ensure!(
            process.attr_str(pizza::TRACE_TOPOLOGY) == Some("continuous"),
            "topology attribute"
        );
    }
    let consumed = |prefix: &str| pairs.iter().filter(|(p, _)| p.name.starts_with(prefix)).count();
    ensure!(
        consumed("process kitchen.events") == 2,
        "in-preparation and ready consumed by order"
    );
    ensure!(
        consumed("process delivery.requests") == 1,
        "the delivery request consumed by delivery"
    );
    ensure!(
        consumed("process delivery.events") >= 3,
        "out-for-delivery, updates, completed"
    );
    ensure!(
        consumed("process orders.events") == 1,
        "order-placed consumed by the kitchen"
    );

    let create = one(&all, "workflow_run.create order-fulfillment", SpanKind::Producer)?;
    let executions = named(&all, "workflow.execute order-fulfillment", SpanKind::Consumer);
    ensure!(executions.len() >= 4, "executions: {}", executions.len());
    for execution in &executions {
        ensure!(
            execution.is_child_of(create),
            "{} is a child of the create span",
            label(execution)
        );
        ensure!(
            link_reason(execution, create).as_deref() == Some("created_by"),
            "{}",
            label(execution)
        );
    }
    let child_create = one(&all, "workflow_run.create charge-payment", SpanKind::Producer)?;
    for execution in named(&all, "workflow.execute charge-payment", SpanKind::Consumer) {
        ensure!(
            execution.is_child_of(child_create),
            "the payment's execution under its create span"
        );
    }
    eprintln!(
        "continuous: {} executions, {} Kafka consumer spans, services {:?}",
        executions.len(),
        pairs.len(),
        all.iter()
            .map(|s| s.service_name.as_str())
            .collect::<BTreeSet<_>>()
    );
    check_common(&spans, placed.order)?;
    shop.stop().await
}

/// `linked`: the same order is several traces; every one is found by `pizza.order.id`, every
/// consumer and every execution starts a trace of its own and links to its cause, and the links join
/// all of them to the trace of `POST /orders`.
#[sqlx::test(migrations = false)]
async fn in_linked_mode_the_order_is_several_traces_joined_by_links_and_found_by_its_id(
    pool: PgPool,
) -> anyhow::Result<()> {
    let shop = Shop::open(Options::new(database_url_of(&pool)?).topology(Topology::Linked)).await?;
    let placed = place(&shop).await?;
    until_completed(&shop, &placed).await?;
    let spans = order_spans(placed.order, finished_order).await?;
    let all = flow(&spans);
    check_tree(&all)?;

    let traces = traces_of(&all);
    ensure!(traces.len() > 1, "linked: more than one trace");
    ensure!(
        traces.contains(&placed.trace_id),
        "the POST's trace is among them"
    );
    eprintln!(
        "linked: {} spans of the order in {} traces, sizes {:?}",
        all.len(),
        traces.len(),
        trace_sizes(&all)
    );
    let pairs = consumers_and_producers(&all)?;
    ensure!(pairs.len() >= 7, "Kafka consumer spans: {}", pairs.len());
    for (process, send) in &pairs {
        ensure!(
            process.parent_span_id.is_none(),
            "{} starts a trace",
            label(process)
        );
        ensure!(
            process.trace_id != send.trace_id,
            "{} is in a trace of its own",
            label(process)
        );
        ensure!(
            process.attr_str(pizza::TRACE_TOPOLOGY) == Some("linked"),
            "topology attribute"
        );
    }
    let create = one(&all, "workflow_run.create order-fulfillment", SpanKind::Producer)?;
    let executions = named(&all, "workflow.execute order-fulfillment", SpanKind::Consumer);
    ensure!(executions.len() >= 4, "executions: {}", executions.len());
    for execution in &executions {
        ensure!(
            execution.parent_span_id.is_none(),
            "{} starts a trace",
            label(execution)
        );
        ensure!(
            link_reason(execution, create).as_deref() == Some("created_by"),
            "{}",
            label(execution)
        );
    }
    // Joined: from the POST's trace, following links either way, every trace is reached.
    let mut reached = BTreeSet::from([placed.trace_id.clone()]);
    loop {
        let before = reached.len();
        for span in &all {
            for link in &span.links {
                if reached.contains(&span.trace_id) || reached.contains(&link.trace_id) {
                    reached.insert(span.trace_id.clone());
                    reached.insert(link.trace_id.clone());
                }
            }
        }
        if reached.len() == before {
            break;
        }
    }
    let apart: Vec<&String> = traces.difference(&reached).collect();
    ensure!(
        apart.is_empty(),
        "traces not joined by any link to the POST's: {apart:?}"
    );
    check_common(&spans, placed.order)?;
    shop.stop().await
}

/// The workshop's starting picture: the kitchen publishes its events without trace context (the
/// `drop_trace_context` fault on its Kafka edge). The order still completes, but the order service's
/// `process kitchen.events` spans start traces of their own with neither parent nor link, so the
/// order falls apart into fragments.
#[sqlx::test(migrations = false)]
async fn with_the_kitchens_kafka_context_dropped_the_order_completes_and_its_trace_is_fragmented(
    pool: PgPool,
) -> anyhow::Result<()> {
    let options = Options::new(database_url_of(&pool)?).topology(Topology::Continuous);
    let edge = format!("kafka:{}", options.topics.kitchen_events);
    let options = options.faults(Service::Kitchen, json!({"drop_trace_context": [edge]}));
    let shop = Shop::open(options).await?;
    let placed = place(&shop).await?;
    until_completed(&shop, &placed).await?;
    let spans = order_spans(placed.order, finished_order).await?;
    let all = flow(&spans);
    check_tree(&all)?;

    let topic = &shop.topics.kitchen_events;
    let sends = named(&all, &format!("send {topic}"), SpanKind::Producer);
    let processes = named(&all, &format!("process {topic}"), SpanKind::Consumer);
    ensure!(
        sends.len() == 2 && processes.len() == 2,
        "two kitchen events sent and consumed"
    );
    for send in &sends {
        ensure!(
            send.trace_id == placed.trace_id,
            "the kitchen's send is still in the order's trace"
        );
        ensure!(
            send.attributes.get(pizza::CONTEXT_DROPPED) == Some(&Value::Bool(true))
                && send.attr_str(pizza::FAULT_EDGE) == Some(edge.as_str()),
            "{} says its context was dropped",
            label(send)
        );
    }
    for process in &processes {
        ensure!(
            process.parent_span_id.is_none() && process.links.is_empty(),
            "{} has neither parent nor link",
            label(process)
        );
        ensure!(
            process.trace_id != placed.trace_id,
            "{} is outside the order's trace",
            label(process)
        );
        // Nothing in its fragment comes from the kitchen: the consumer cannot be traced back to it.
        ensure!(
            all.iter()
                .filter(|s| s.trace_id == process.trace_id)
                .all(|s| s.service_name == "order"),
            "the fragment of {} holds no kitchen span",
            label(process)
        );
    }
    // The edges that kept their context are still whole.
    for (process, send) in consumers_and_producers(
        &all.iter()
            .copied()
            .filter(|s| s.name != format!("process {topic}"))
            .collect::<Vec<_>>(),
    )? {
        ensure!(
            process.is_child_of(send),
            "{} is still a child of its producer",
            label(process)
        );
    }
    let traces = traces_of(&all);
    ensure!(
        traces.len() >= 3,
        "the order's trace plus one fragment per kitchen event, found {}",
        traces.len()
    );
    eprintln!(
        "dropped context: {} spans of the order in {} traces, sizes {:?}",
        all.len(),
        traces.len(),
        trace_sizes(&all)
    );
    check_common(&spans, placed.order)?;
    shop.stop().await
}

/// `kill -9` of the order service while a workflow step is in flight (the kitchen answers slowly):
/// restarted, the service takes the run over once the lease expires, replays it, and the order
/// completes, its ticket placed once; the executions after the restart are in the same trace as
/// `POST /orders`, continued from the carrier stored with the run.
#[sqlx::test(migrations = false)]
async fn after_kill_9_of_the_order_service_mid_workflow_the_restarted_one_completes_the_order_in_the_same_trace(
    pool: PgPool,
) -> anyhow::Result<()> {
    let options = Options::new(database_url_of(&pool)?)
        .topology(Topology::Continuous)
        // 4 s per kitchen request (its client gives up after 5 s): a step long enough to die in.
        .faults(Service::Kitchen, json!({"http_latency_ms": 4000}))
        // The restarted consumer gets its partitions only once the broker has given up on the killed
        // member (librdkafka's session timeout, 45 s): the waits must outlast that, or the order is
        // cancelled for a kitchen that did answer. 1000 s (the most a setting takes) x 0.1 = 100 s.
        .env(Service::Order, "PIZZA_TIME_SCALE", "0.1")
        .env(Service::Order, "PIZZA_ORDER_KITCHEN_TIMEOUT_SECONDS", "1000")
        .env(Service::Order, "PIZZA_ORDER_DELIVERY_TIMEOUT_SECONDS", "1000");
    let mut shop = Shop::open(options).await?;
    let placed = place(&shop).await?;
    eventually(
        Duration::from_secs(30),
        "place-kitchen-ticket in flight",
        || async {
            let running = attempts(&pool, placed.order)
                .await?
                .iter()
                .any(|(step, _, status, _)| step == "place-kitchen-ticket" && status == "running");
            Ok(running.then_some(()))
        },
    )
    .await?;
    // Let the spans that already ended leave the process (the SDK exports every 200 ms); the open
    // execution and step die with it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let old_pid = shop.pid(Service::Order).context("order runs")?;
    let status = get_order(&shop, placed.order).await?;
    ensure!(status["terminal"] == false, "still mid-way when killed: {status}");
    let killed_at = now_unix_nanos();
    let exit = shop.kill_hard(Service::Order).await?;
    ensure!(exit.signal() == Some(9), "killed by SIGKILL: {exit}");
    let restarted = Instant::now();
    shop.start(Service::Order).await?;
    let new_pid = shop.pid(Service::Order).context("order runs again")?;
    eprintln!(
        "kill -9: order {old_pid} killed, {new_pid} ready after {:?}",
        restarted.elapsed()
    );
    // The kitchen may answer quickly now: the test is about the restart, not the latency.
    shop.set_faults(Service::Kitchen, &json!({})).await?;

    until_completed(&shop, &placed).await?;
    let tickets: i64 = sqlx::query_scalar("select count(*) from kitchen.tickets where order_id = $1")
        .bind(placed.order)
        .fetch_one(&pool)
        .await?;
    ensure!(
        tickets == 1,
        "one ticket, whatever the killed attempt did: {tickets}"
    );

    let spans = order_spans(placed.order, finished_order).await?;
    let all = flow(&spans);
    let traces = traces_of(&all);
    ensure!(
        traces == BTreeSet::from([placed.trace_id.clone()]),
        "one trace across the kill: {traces:?}\n{}",
        shape(&spans).join("\n")
    );
    let create = one(&all, "workflow_run.create order-fulfillment", SpanKind::Producer)?;
    let executions = named(&all, "workflow.execute order-fulfillment", SpanKind::Consumer);
    // Both lives of the replica work under its stable name (PIZZA_INSTANCE_ID, which the shop sets
    // to `order-0`): that is how the restarted worker takes back the leases of the killed one at once.
    for execution in &executions {
        ensure!(
            execution.attr_str(wf::WORKER_ID) == Some("order-0"),
            "{} ran under the replica's stable name",
            label(execution)
        );
    }
    let (before, after): (Vec<&Span>, Vec<&Span>) = executions
        .iter()
        .copied()
        .partition(|e| e.start_unix_nano < killed_at);
    ensure!(
        !before.is_empty(),
        "executions of the killed process reached Jaeger"
    );
    ensure!(!after.is_empty(), "the restarted process executed the run");
    for execution in &after {
        ensure!(
            execution.is_child_of(create),
            "{} continues the order's trace",
            label(execution)
        );
        ensure!(
            link_reason(execution, create).as_deref() == Some("created_by"),
            "created_by link"
        );
    }
    ensure!(
        after
            .iter()
            .any(|e| e.attr_i64(wf::REPLAYED_STEPS).unwrap_or(0) > 0),
        "the restarted process replayed the steps done before the kill"
    );
    let late: Vec<&Span> = all
        .iter()
        .copied()
        .filter(|s| s.start_unix_nano > killed_at)
        .collect();
    ensure!(
        late.iter().any(|s| s.service_name == "kitchen") && late.iter().any(|s| s.service_name == "delivery"),
        "kitchen and delivery spans after the restart, in the same trace"
    );
    let summary = one(&all, "workflow.run order-fulfillment", SpanKind::Internal)?;
    ensure!(
        summary.attr_str(wf::RUN_STATUS) == Some("completed"),
        "run status"
    );
    let tries = named(&all, "workflow.step place-kitchen-ticket", SpanKind::Internal);
    let first_consumed = late
        .iter()
        .filter(|s| {
            s.service_name == "order" && s.kind == SpanKind::Consumer && s.name.starts_with("process ")
        })
        .map(|s| s.start_unix_nano)
        .min()
        .context("the restarted order service consumed nothing")?;
    eprintln!(
        "kill -9: {} spans in 1 trace, {} after the kill; executions {} before, {} after; first record \
         consumed {:.1} s after the kill; place-kitchen-ticket attempts with a span: {:?}; run executions {:?}",
        all.len(),
        late.len(),
        before.len(),
        after.len(),
        (first_consumed - killed_at) as f64 / 1e9,
        tries
            .iter()
            .filter_map(|t| t.attr_i64(wf::STEP_ATTEMPT))
            .collect::<Vec<_>>(),
        summary.attr_i64(wf::RUN_EXECUTIONS)
    );
    check_common(&spans, placed.order)?;
    shop.stop().await
}

/// The kitchen answers 500 to every ticket for a while: each call is a `place-kitchen-ticket`
/// attempt of its own, failed with `error.type=http_500`, with its CLIENT span and the kitchen's
/// SERVER span; once the kitchen recovers, the next attempt succeeds and the order completes.
#[sqlx::test(migrations = false)]
async fn kitchen_500s_show_as_failed_step_attempts_with_their_http_spans_and_the_order_completes(
    pool: PgPool,
) -> anyhow::Result<()> {
    let options = Options::new(database_url_of(&pool)?)
        .topology(Topology::Continuous)
        .faults(Service::Kitchen, json!({"http_error_rate": 1.0}));
    let shop = Shop::open(options).await?;
    let placed = place(&shop).await?;
    eventually(Duration::from_secs(60), "three failed kitchen calls", || async {
        let failed = attempts(&pool, placed.order)
            .await?
            .iter()
            .filter(|(step, _, status, _)| step == "place-kitchen-ticket" && status == "failed")
            .count();
        Ok((failed >= 3).then_some(()))
    })
    .await?;
    // The kitchen recovers.
    shop.set_faults(Service::Kitchen, &json!({})).await?;
    until_completed(&shop, &placed).await?;

    let recorded: Vec<(i32, String, Option<String>)> = attempts(&pool, placed.order)
        .await?
        .into_iter()
        .filter(|(step, ..)| step == "place-kitchen-ticket")
        .map(|(_, attempt, status, error)| (attempt, status, error))
        .collect();
    let spans = order_spans(placed.order, |spans| {
        finished_order(spans)
            && spans
                .iter()
                .filter(|s| s.name == "workflow.step place-kitchen-ticket")
                .count()
                == recorded.len()
    })
    .await?;
    let all = flow(&spans);
    check_tree(&all)?;
    ensure!(traces_of(&all).len() == 1, "retries stay in the order's trace");

    let mut tries = named(&all, "workflow.step place-kitchen-ticket", SpanKind::Internal);
    tries.sort_by_key(|s| s.attr_i64(wf::STEP_ATTEMPT));
    let numbers: Vec<i64> = tries
        .iter()
        .filter_map(|s| s.attr_i64(wf::STEP_ATTEMPT))
        .collect();
    let expected: Vec<i64> = (1..=recorded.len() as i64).collect();
    ensure!(
        numbers == expected,
        "one span per attempt the engine recorded: {numbers:?} vs {recorded:?}"
    );
    let (last, failed) = tries.split_last().context("attempts")?;
    ensure!(failed.len() >= 3, "at least three failed attempts");
    let server_of = |step: &Span| -> anyhow::Result<(Span, Span)> {
        let client = all
            .iter()
            .find(|s| s.kind == SpanKind::Client && s.is_child_of(step))
            .with_context(|| format!("{} has no CLIENT span", label(step)))?;
        let server = all
            .iter()
            .find(|s| s.kind == SpanKind::Server && s.is_child_of(client))
            .with_context(|| format!("the client of {} has no SERVER span", label(step)))?;
        Ok(((*client).clone(), (*server).clone()))
    };
    for step in failed {
        ensure!(step.is_error(), "{} has ERROR status", label(step));
        ensure!(
            step.attr_str(semconv::ERROR_TYPE) == Some("http_500"),
            "{} error.type",
            label(step)
        );
        let (client, server) = server_of(step)?;
        ensure!(
            client.attr_i64(semconv::HTTP_RESPONSE_STATUS_CODE) == Some(500),
            "client sees 500"
        );
        ensure!(client.is_error(), "the CLIENT span of a 500 is an error");
        ensure!(
            server.service_name == "kitchen"
                && server.attr_i64(semconv::HTTP_RESPONSE_STATUS_CODE) == Some(500),
            "the kitchen's SERVER span answered 500"
        );
        ensure!(server.is_error(), "the SERVER span of a 500 is an error");
    }
    ensure!(!last.is_error(), "the last attempt succeeded");
    let (client, server) = server_of(last)?;
    let ok = |s: &Span| {
        s.attr_i64(semconv::HTTP_RESPONSE_STATUS_CODE)
            .is_some_and(|c| (200..300).contains(&c))
    };
    ensure!(ok(&client) && ok(&server), "the last call was answered 2xx");
    for (attempt, (number, status, error)) in recorded.iter().enumerate() {
        let failed_attempt = attempt + 1 < recorded.len();
        ensure!(
            *number == attempt as i32 + 1
                && (status == "failed") == failed_attempt
                && (error.as_deref() == Some("http_500")) == failed_attempt,
            "the engine's record: {recorded:?}"
        );
    }
    eprintln!(
        "kitchen 500s: {} attempts ({} failed), {} spans in 1 trace",
        tries.len(),
        failed.len(),
        all.len()
    );
    check_common(&spans, placed.order)?;
    shop.stop().await
}

// ---- personal data -----------------------------------------------------------------------------------

/// What the three services exported over OTLP/HTTP, request by request, on its way to the Collector.
#[derive(Debug, Default)]
struct Exports {
    /// `(service, signal, body)`.
    requests: Vec<(String, String, Vec<u8>)>,
    /// `Content-Encoding` of any compressed request (a compressed body could not be scanned).
    encodings: BTreeSet<String>,
}

/// A pass-through recorder between the services and the Collector: each service exports to
/// `<recorder>/<service>`, so `POST /<service>/v1/<signal>` is recorded and forwarded unchanged to
/// the Collector's OTLP/HTTP receiver, whose answer goes back to the service. Telemetry still reaches
/// the Collector and Jaeger; the test also sees the exact bytes of every span, log record and metric
/// data point (with its labels) as the SDKs sent them.
async fn start_recorder(collector: String) -> anyhow::Result<(String, Arc<Mutex<Exports>>)> {
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};

    type Shared = (Arc<Mutex<Exports>>, String, reqwest::Client);
    async fn record(
        State((exports, collector, http)): State<Shared>,
        Path((service, signal)): Path<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, Vec<u8>) {
        {
            let mut exports = exports.lock().expect("exports lock");
            if let Some(encoding) = headers.get("content-encoding").and_then(|v| v.to_str().ok()) {
                exports.encodings.insert(encoding.to_owned());
            }
            exports.requests.push((service, signal.clone(), body.to_vec()));
        }
        let forwarded = http
            .post(format!("{collector}/v1/{signal}"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        match forwarded {
            Ok(response) => {
                let status =
                    StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                (
                    status,
                    response.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                )
            }
            Err(_) => (StatusCode::BAD_GATEWAY, Vec::new()),
        }
    }
    let exports = Arc::new(Mutex::new(Exports::default()));
    let app = axum::Router::new()
        .route("/{service}/v1/{signal}", axum::routing::post(record))
        .with_state((exports.clone(), collector, client()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, exports))
}

/// Where `needles` occur in `haystack`, case-insensitively (ASCII).
fn occurrences(haystack: &[u8], needles: &[&str]) -> Vec<String> {
    let haystack = haystack.to_ascii_lowercase();
    needles
        .iter()
        .filter(|n| {
            let n = n.to_ascii_lowercase();
            haystack.windows(n.len()).any(|w| w == n.as_bytes())
        })
        .map(|n| (*n).to_owned())
        .collect()
}

/// The customer's name, address and phone appear in no exported span (read back from Jaeger: names,
/// attributes, events, links), in no OTLP export of any service (traces, logs, metrics with their
/// labels, as the bytes the SDKs sent), in no Kafka record header (trace context, baggage,
/// CloudEvents attributes), and in no line the services logged on stdout; while the same
/// strings did travel through the shop (the delivery request carries the address), so their absence
/// from the telemetry means something.
#[sqlx::test(migrations = false)]
async fn no_exported_span_log_or_metric_carries_the_customers_name_address_or_phone(
    pool: PgPool,
) -> anyhow::Result<()> {
    let stack = Stack::from_env();
    // The Collector takes OTLP/HTTP on 4318 next to OTLP/gRPC on 4317 (the stack names only the
    // latter).
    ensure!(
        stack.otlp_grpc_endpoint.ends_with(":4317"),
        "the OTLP/HTTP port of {} is not known",
        stack.otlp_grpc_endpoint
    );
    let collector_http = stack.otlp_grpc_endpoint.replace(":4317", ":4318");
    let (recorder, exports) = start_recorder(collector_http).await?;
    let mut options = Options::new(database_url_of(&pool)?).topology(Topology::Continuous);
    options.otlp_protocol = "http/protobuf".to_owned();
    for service in Service::ALL {
        options = options.env(
            service,
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{recorder}/{service}"),
        );
    }
    let mut shop = Shop::open(options).await?;
    let placed = place(&shop).await?;
    until_completed(&shop, &placed).await?;

    // The strings did go through the shop: the delivery request carries the address.
    let requests = pizza_testkit::read_topic(
        &stack.kafka_bootstrap,
        &shop.topics.delivery_requests,
        Duration::from_secs(20),
    )
    .await?;
    let carried: BTreeSet<String> = requests
        .iter()
        .filter_map(|m| m.payload())
        .flat_map(|p| occurrences(p, PERSONAL))
        .collect();
    ensure!(
        carried.contains(STREET) && carried.contains(NAME),
        "the delivery request: {carried:?}"
    );
    // The record headers (`traceparent`, `tracestate`, `baggage`, `ce_*`) of every event carry none
    // of it: baggage is where personal data would ride along unseen.
    let mut headers = 0;
    for topic in shop.topics.all() {
        for record in
            pizza_testkit::read_topic(&stack.kafka_bootstrap, topic, Duration::from_secs(20)).await?
        {
            for header in record.headers().into_iter().flat_map(|h| h.iter()) {
                headers += 1;
                let found = occurrences(header.value.unwrap_or_default(), PERSONAL);
                ensure!(found.is_empty(), "{topic} header {}: {found:?}", header.key);
            }
        }
    }
    ensure!(headers > 0, "the events carry headers");

    let spans = order_spans(placed.order, finished_order).await?;
    let leaked = personal_data(&Trace { spans: spans.clone() }, PERSONAL);
    ensure!(leaked.is_empty(), "customer data in spans: {leaked:?}");

    // A graceful stop flushes every signal (and the metrics' last collection) through the recorder.
    shop.stop_all().await?;
    let logs: BTreeMap<Service, String> = Service::ALL
        .iter()
        .map(|s| Ok((*s, shop.log(*s)?)))
        .collect::<anyhow::Result<_>>()?;
    let exports = std::mem::take(&mut *exports.lock().expect("exports lock"));
    ensure!(
        exports.encodings.is_empty(),
        "compressed exports cannot be scanned: {:?}",
        exports.encodings
    );
    let mut seen: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut leaks = Vec::new();
    for (service, signal, body) in &exports.requests {
        let entry = seen.entry((service.clone(), signal.clone())).or_default();
        entry.0 += 1;
        entry.1 += body.len();
        for found in occurrences(body, PERSONAL) {
            leaks.push(format!("{service} {signal}: {found}"));
        }
    }
    eprintln!("OTLP exports recorded (service, signal) -> (requests, bytes): {seen:?}");
    for service in Service::ALL {
        for signal in ["traces", "metrics", "logs"] {
            ensure!(
                seen.contains_key(&(service.name().to_owned(), signal.to_owned())),
                "{service} exported no {signal} through the recorder: {seen:?}"
            );
        }
    }
    ensure!(leaks.is_empty(), "customer data in OTLP exports: {leaks:?}");

    for (service, log) in &logs {
        ensure!(log.lines().count() > 5, "{service} logged: {log}");
        for line in log.lines() {
            let found = occurrences(line.as_bytes(), PERSONAL);
            ensure!(
                found.is_empty(),
                "{service} logged customer data {found:?}: {line}"
            );
        }
    }
    eprintln!(
        "stdout log lines scanned: {:?}",
        logs.iter()
            .map(|(s, l)| (s.name(), l.lines().count()))
            .collect::<Vec<_>>()
    );
    check_common(&spans, placed.order)
}
