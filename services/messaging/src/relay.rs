//! The outbox relay: publishes committed outbox rows to Kafka, at least once, in order per key.
//!
//! # Claim, commit, publish, mark
//! A relay never holds a transaction or a row lock while Kafka answers. It works in *turns*: one
//! short transaction that *settles* the rows the broker has answered for since the last turn
//! (published, retried, backing off, or dead; one statement) and *claims* the next batch (it writes
//! its name in `claimed_by` and the end of the claim in `available_at`; one statement), then
//! commits. The claimed rows go to the producer, and the relay goes on while the broker answers.
//! Answers are marked in the next turn, the one the next claim needs anyway (a notification, the
//! poll, a full batch), so an event costs about one commit, shared with the other events of its
//! turn; and claiming after marking in the same transaction lets the next row of a key just
//! published go at once (the row's own notification starts that turn). While rows are in flight the relay renews their claims every third of
//! [`RelayConfig::claim_lease`], so a broker outage of any length keeps them with the relay that
//! holds them in its producer.
//!
//! # Order per key, with several relays
//! Rows are claimed in id order. A row is claimable only if no earlier pending row of its topic and
//! key is *held*: claimed by a relay (in flight), backing off after a refusal, or dead. The claim
//! statement also skips rows another relay is claiming at that very moment (`for update skip
//! locked`) and then keeps only rows whose earlier pending rows of the key are all in its own batch.
//! So the rows of one key are in the hands of at most one relay at a time and go out in id order,
//! and a later row of an order is claimed once the earlier ones are published. Replicas share the
//! work without talking to each other.
//!
//! # When a relay dies
//! Its claims expire after [`RelayConfig::claim_lease`] and any relay takes the rows again. If it
//! died after the broker stored a record and before the row was marked (a window of up to one
//! poll interval, since marks wait for the next turn), the record is published a second time with
//! the same `ce_id`: at least once is the contract, and the consumers' inbox
//! makes the second copy harmless. A relay started with the same [`RelayConfig::instance_id`] (the
//! same replica, restarted) takes its predecessor's claims back at once instead of waiting for them
//! to expire: nothing else can be holding them. Two live relays must therefore never share an
//! instance id; they would take each other's claims back and publish more duplicates (never lose
//! or reorder anything).
//!
//! # Through a Kafka outage
//! The producer never times a record out (see [`crate::kafka::relay_producer_config`]): during an
//! outage librdkafka reconnects and retries, and the broker deduplicates the retries (idempotent
//! producer). The claimed rows stay with this relay (renewed), the later rows of their keys wait
//! behind them, and new events pile up in the outbox; all of it drains in order once the broker is
//! back. No transaction stays open meanwhile.
//!
//! # A producer that stops answering
//! After a broker restart, librdkafka has been seen to keep a few records in flight for good: no
//! delivery report ever comes (the records never time out, see above), so their rows stay claimed
//! and renewed, and every later row of their keys waits behind them for ever. So when rows are in
//! flight and no answer at all has come for [`RelayConfig::stall_after`], the relay replaces the
//! producer: dropping the old one purges its queue, its records are answered as not sent, their
//! claims are released, and the next round sends them through the new producer. During a real
//! outage that only repeats every `stall_after` (the broker deduplicates nothing across producers,
//! so a record the old producer did deliver may go out twice, which the consumers' inbox absorbs).
//!
//! # Rows the broker will not take
//! A send fails either because of the row itself (*refused*: too large, an unknown topic, an invalid
//! record, no permission) or because of the producer or the broker as a whole (*failed*: the local
//! queue is full, the producer hit a fatal error, or an injected fault). A failed row is retried at
//! the next round and costs nothing else. A refused row is retried after a growing pause
//! ([`RelayConfig::refusal_backoff`]); after [`RelayConfig::max_refusals`] refusals the relay gives
//! up on it: the row is marked dead with its last error, logged as an ERROR, counted in
//! `pizza.outbox.dead`, and listed by [`Outbox::dead`](crate::Outbox::dead) until an operator
//! requeues ([`Outbox::requeue`](crate::Outbox::requeue)) or deletes it. Other keys flow all the
//! while: a refused row holds back only the later rows of its own key.
//!
//! Those later rows wait behind the dead row rather than overtaking it, because order per key is a
//! guarantee the consumers rely on (an `order-completed` before its `order-ready` would be read as
//! a different story). The cost is bounded to one order, whose workflow then times out and
//! compensates as it would for a kitchen that stayed silent; an operator who gives up on the event
//! deletes the dead row and the key moves on. The one case that cannot keep order is a refusal that
//! arrives after later rows of the key were already handed to the producer (only the broker itself
//! refuses that late): those stay published and the refused row follows them. It is logged.
//!
//! # Injected publish failures
//! A fault plan ([`RelayConfig::faults`], see [`crate::faults`]) can fail a share of publishes before
//! they reach the broker. Such a row takes exactly the path of a send the producer refused at once
//! for a full queue: it stays pending with its error and is sent again in a later round, the later
//! rows of its key wait for it, and a round in which every send failed counts as failed, so the
//! relay backs off while failures repeat, as it would against a struggling broker. Nothing reached
//! Kafka, so nothing is duplicated. The failure is counted in `pizza.outbox.publish.failures` and
//! in [`RelayStats::injected`] with `error.type = injected`, and the row's `send` span ends with
//! that error type, so a workshop tells an injected failure from a real one at a glance.
//!
//! # Waking up
//! Every insert into an outbox notifies the channel `pizza_outbox` with the schema as payload (a
//! statement trigger; NOTIFY is delivered at commit, and only if the transaction commits). The
//! relay listens ([`RelayConfig::wakes`]) and claims as soon as rows of its schema are committed,
//! so an event's latency is a round trip, not a poll interval, and an idle relay costs one claim
//! per [`RelayConfig::poll_interval`]. The poll stays as a safety net: a notification is lost with
//! the listening connection, and claims and back-offs expire without one.
//!
//! A service whose outbox rows are all written by its own process can do without the `NOTIFY`
//! ([`RelayConfig::wakes`] = [`Source::Process`]): [`outbox_wake`] drops its outbox's trigger, and
//! the writers call [`Outbox::announce`](crate::Outbox::announce) after their commits. Nobody's listening connection then
//! reads a notification for those rows (see `pizza_notify::Source` for why that matters).
//!
//! # Plans that hold
//! A relay's statements are prepared on its turn connection when the service starts, usually on an
//! empty outbox, and PostgreSQL may keep a generic plan made then for as long as nothing invalidates
//! it: autovacuum's first analyze of the table comes up to a minute later. Planned for a table of
//! one page and one row, the claim's `not exists` checks became anti-joins whose inner side was a
//! whole scan of `outbox_pending_by_key`, filtered per outer row, and the settle a hash join over
//! the whole table. It cost nothing while the outbox was small; once a burst left a backlog, each
//! claim read every pending entry once per candidate row: 0.5 to 3 s a claim, the delivery's relay
//! fell behind 300 events a second, and the backlog made the next claim slower still (two of the
//! first load runs after a fresh start collapsed so at 50 orders/s; the next ones, planned a moment
//! later on a bigger table, held). So the statements are written to leave no such plan: each
//! `not exists` is a subplan that looks its key up in the index, and the rows to update are found
//! through `id = any(array)` on the primary key (see `Outbox`'s SQL, and the test that builds the
//! generic plans on an empty table and runs them on a backlog).
//!
//! # Telemetry
//! Each record gets a `send {topic}` PRODUCER span whose parent is the context stored with the row, so
//! the publish joins the trace of the request that wrote the event, even minutes later. The span's
//! own context goes into the record headers for the consumer. It ends when the broker answers.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use futures::FutureExt as _;
use futures::channel::oneshot;
use futures::stream::{FuturesUnordered, StreamExt as _};
use opentelemetry::KeyValue;
use pizza_notify::{Event, Notifications, Source, Subscription};
use pizza_telemetry::attributes::{pizza, semconv};
use pizza_telemetry::kafka::{self as tk, Outgoing};
use pizza_telemetry::propagation;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::types::RDKafkaErrorCode;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::time::Instant;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::faults::{self, SharedFaultHooks};
use crate::kafka::{AnsweringProducer, KafkaContext, relay_producer_config};
use crate::metrics::RelayMetrics;
use crate::outbox::{Outbox, PendingRow};
use crate::schema::Schema;
use pizza_retry::Backoff;

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per round at most.
    pub batch_size: u32,
    /// Rows handed to the producer and not yet answered, at most. A broker outage stops claiming
    /// there (or earlier: a key's later rows wait behind its row in flight).
    pub max_in_flight: u32,
    /// Pause when there is nothing (more) to claim. With [`wakes`](Self::wakes) a safety net
    /// (for a notification lost with a connection, claims and back-offs running out); without it,
    /// the latency floor of an idle outbox.
    pub poll_interval: Duration,
    /// Wake up when rows are committed rather than only every `poll_interval`, and where the
    /// wake-ups come from: PostgreSQL's `NOTIFY` (`LISTEN pizza_outbox` on the process's one
    /// listening connection for the database, not a connection of the pool; the default), or only
    /// this process's [`Outbox::announce`](crate::Outbox::announce) after its commits, for a service
    /// whose outbox rows are all written by its own process (see `pizza_notify::Source`, and
    /// [`outbox_wake`] for the trigger that goes with each). `None` polls only.
    pub wakes: Option<Source>,
    /// Pause after a round without progress (a database error, every send failed), growing while
    /// such rounds repeat.
    pub backoff: Backoff,
    /// How long a claim lasts unless renewed. Renewed every third of it while the rows are in
    /// flight; a relay that dies leaves its rows to others after this long.
    pub claim_lease: Duration,
    /// Refusals of a row (see the module docs) before the relay gives up on it.
    pub max_refusals: u32,
    /// Pause before a refused row is tried again, growing with its refusals.
    pub refusal_backoff: Backoff,
    /// This relay's stable name, the same across restarts of the replica (`PIZZA_INSTANCE_ID`).
    /// With it, a restarted relay takes its predecessor's claims back at once; without it (`None`),
    /// the relay has a random name and a dead relay's rows wait for their claims to expire. Two live
    /// relays must never share it.
    pub instance_id: Option<String>,
    /// How long rows may stay in flight without a single answer from the producer before the relay
    /// replaces it (see the module docs, "A producer that stops answering").
    pub stall_after: Duration,
    /// How long rows in flight may still be answered after shutdown is requested.
    pub shutdown_grace: Duration,
    /// How often the backlog gauges are refreshed and old published rows are purged.
    pub housekeeping_interval: Duration,
    /// Published rows older than this are deleted (`None` keeps them).
    pub retain_published: Option<Duration>,
    /// Fault injection: asked before each send whether it should fail (see the module docs).
    /// `None` in production unless a fault plan is wired in.
    pub faults: SharedFaultHooks,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            max_in_flight: 1000,
            poll_interval: Duration::from_secs(1),
            wakes: Some(Source::Database),
            backoff: Backoff::default(),
            claim_lease: Duration::from_secs(30),
            stall_after: Duration::from_secs(20),
            max_refusals: 8,
            // 1, 2, 4, ... 60 s: eight refusals take about two minutes, long enough for a topic
            // created late by a deployment to appear.
            refusal_backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
            },
            instance_id: None,
            shutdown_grace: Duration::from_secs(10),
            housekeeping_interval: Duration::from_secs(10),
            retain_published: Some(Duration::from_secs(24 * 3600)),
            faults: None,
        }
    }
}

/// Why the relay could not start or finish a round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The Kafka producer could not be created (bad configuration).
    #[error("creating the relay's Kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    /// Reading or marking outbox rows failed.
    #[error("outbox query failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Totals over a relay's life, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Claim rounds run.
    pub rounds: u64,
    /// Rows published.
    pub published: u64,
    /// Failed sends, refusals and failed rounds (injected failures included).
    pub failures: u64,
    /// Of `failures`, the sends the fault plan failed (`error.type = injected`).
    pub injected: u64,
    /// Rows given up on (marked dead).
    pub dead: u64,
    /// Whether the relay stopped through the crash fault (see
    /// [`FaultHooks::crash_relay_before_mark`](crate::FaultHooks::crash_relay_before_mark)): rows
    /// the broker had stored were left claimed and unmarked.
    pub crashed: bool,
}

/// What one claim round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Round {
    /// Rows claimed.
    claimed: usize,
    /// Rows handed to the producer.
    sent: usize,
    /// Rows whose send failed at once (injected failures included).
    failed: usize,
}

/// How a claimed row ended, as the settle statement writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settle {
    /// The broker stored it.
    Published,
    /// The producer or the broker as a whole failed (or a fault was injected): try again next round.
    Failed(String),
    /// Refused for the row itself: try again after this pause.
    Refused { error: String, retry_after: Duration },
    /// Refused once too often: give up until an operator requeues it.
    Dead(String),
    /// Never handed to the producer (an earlier row of its key failed this round): release it.
    Unsent,
}

impl Settle {
    fn outcome(&self) -> &'static str {
        match self {
            Settle::Published => "published",
            Settle::Failed(_) => "failed",
            Settle::Refused { .. } => "refused",
            Settle::Dead(_) => "dead",
            Settle::Unsent => "unsent",
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Settle::Failed(e) | Settle::Refused { error: e, .. } | Settle::Dead(e) => Some(e),
            Settle::Published | Settle::Unsent => None,
        }
    }

    fn retry_after(&self) -> f64 {
        match self {
            Settle::Refused { retry_after, .. } => retry_after.as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// What becomes of a row whose send failed with `error` (`None`: the fault plan failed it), after
/// `refusals` earlier refusals. See the module docs.
pub(crate) fn after_failure(
    error: Option<&KafkaError>,
    refusals: i32,
    max_refusals: u32,
    backoff: &Backoff,
) -> Settle {
    let Some(error) = error else {
        return Settle::Failed("injected publish failure (fault plan)".to_owned());
    };
    if !is_refusal(error) {
        return Settle::Failed(error.to_string());
    }
    let refusals = u32::try_from(refusals).unwrap_or(0).saturating_add(1);
    if refusals >= max_refusals {
        Settle::Dead(error.to_string())
    } else {
        Settle::Refused {
            error: error.to_string(),
            retry_after: backoff.delay(refusals),
        }
    }
}

/// Whether a send failed because of the record itself. The failures of the producer or the broker
/// as a whole are listed; anything else counts as a refusal, so a record that can never be sent
/// ends dead (visible, and requeued by an operator) instead of being retried for ever.
fn is_refusal(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        error.rdkafka_error_code(),
        None | Some(
            C::QueueFull
                | C::Fatal
                | C::PurgeQueue
                | C::PurgeInflight
                | C::MessageTimedOut
                | C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::BrokerDestroy
                | C::DestroyBroker
                | C::Resolve
                | C::OperationTimedOut
                | C::TimedOutQueue
                | C::Interrupted
                | C::Retry
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::RequestTimedOut
                | C::NetworkException
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::KafkaStorageError
                | C::ThrottlingQuotaExceeded
                | C::OutOfOrderSequenceNumber
                | C::UnknownProducerId
                | C::InvalidProducerEpoch
                | C::ProducerFenced
        )
    )
}

/// A row handed to the producer, until the broker answers.
struct InFlight {
    id: i64,
    topic: String,
    refusals: i32,
    span: Span,
}

/// The broker's answer for one row: `Err(None)` when the delivery report was lost (the producer
/// shut down).
type Answer = (InFlight, Result<(i32, i64), Option<KafkaError>>);

/// Publishes one schema's outbox. See the module docs.
pub struct Relay {
    pool: PgPool,
    /// The connection the turns run on (see [`turn_pool`]).
    turns: PgPool,
    outbox: Outbox,
    producer_config: ClientConfig,
    producer: AnsweringProducer,
    config: RelayConfig,
    /// The name written in `claimed_by`.
    me: String,
    metrics: RelayMetrics,
    /// Topics that had a backlog, so the gauges can drop back to zero for them.
    backlog_topics: BTreeSet<String>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("schema", self.outbox.schema())
            .field("me", &self.me)
            .field("config", &self.config)
            .finish()
    }
}

/// The connection a relay's turns run on ([`pizza_notify::ordered_scan_pool`]): the claim walks
/// `outbox_pending` in id order and stops at its batch.
///
/// Every published row leaves dead entries in the pending indexes (publishing sets `published_at`,
/// which their predicate reads, so the update is never HOT) until vacuum removes them. A plain index
/// scan marks an entry it finds dead, and the next claims skip it; a bitmap scan marks nothing and
/// visits every dead entry's heap page again, claim after claim. Left to itself the planner chose a
/// bitmap scan of `outbox_pending_by_key` and a sort of every available row: at 60 orders/s the
/// delivery outbox's claim took 42 ms (0.9 ms in the same run's other shop), the most expensive
/// statement in the database, and it grew with the backlog it was meant to drain. On a copy of that
/// table (7,000 rows published, dead entries not yet vacuumed): 5.7 ms the first claim, 0.2 ms the
/// next, against 1.4 ms every time. A relay's turns are one at a time.
///
/// The connection also keeps one generic plan per statement (`plan_cache_mode`): the claim and the
/// settle are written so that a generic plan made on an empty outbox holds on a backlog (see "Plans
/// that hold", and the test that builds them so), and left to choose, PostgreSQL planned the order
/// and kitchen relays' settle afresh at every turn (0.2 ms of planning each, as long as the
/// statement's run, at 60 orders/s).
fn turn_pool(pool: &PgPool) -> PgPool {
    let options =
        pizza_notify::ordered_scan_options(pool).options([("plan_cache_mode", "force_generic_plan")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options)
}

fn create_producer(config: &ClientConfig) -> Result<AnsweringProducer, KafkaError> {
    AnsweringProducer::create(
        config,
        KafkaContext {
            role: "relay",
            group: None,
            lag: None,
            group_watch: None,
        },
    )
}

/// The answers in flight.
type Answers = FuturesUnordered<Pin<Box<dyn Future<Output = Answer> + Send>>>;

impl Relay {
    /// A relay for `outbox`, connecting with `kafka` (`bootstrap.servers` and any security settings;
    /// the delivery settings are added here).
    pub fn new(
        pool: PgPool,
        outbox: Outbox,
        kafka: &ClientConfig,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        let producer_config = relay_producer_config(kafka);
        let producer = create_producer(&producer_config)?;
        let me = config
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("relay-{}", Uuid::new_v4().simple()));
        Ok(Self {
            turns: turn_pool(&pool),
            pool,
            outbox,
            producer_config,
            producer,
            config,
            me,
            metrics: RelayMetrics::new(),
            backlog_topics: BTreeSet::new(),
        })
    }

    /// Publishes until `shutdown` completes, then waits for the rows in flight (within
    /// [`RelayConfig::shutdown_grace`]), marks them, releases the rest of its claims and returns.
    /// Failures are logged, counted and retried with backoff; the relay never gives up on its own.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> RelayStats {
        let mut shutdown = pin!(shutdown);
        let mut stats = RelayStats::default();
        if self.config.instance_id.is_some() {
            self.take_back_claims().await;
        }
        let mut listener = self.config.wakes.map(|source| self.listen(source));
        let mut answers: Answers = FuturesUnordered::new();
        let mut in_flight: BTreeSet<i64> = BTreeSet::new();
        let mut settled: Vec<(i64, Settle)> = Vec::new();
        let mut consecutive_failures = 0u32;
        let now = Instant::now();
        let mut next_claim = now;
        let renew_every = self.config.claim_lease / 3;
        let mut next_renew = now + renew_every;
        let mut next_housekeeping = now;
        // The last answer of the producer (or the moment nothing was in flight): see `stall_after`.
        let mut last_answer = now;
        loop {
            // Everything answered so far.
            let answered_before = settled.len();
            while let Some(Some(answer)) = answers.next().now_or_never() {
                in_flight.remove(&answer.0.id);
                settled.push(self.answered(answer, &mut stats));
            }
            if settled.len() > answered_before || in_flight.is_empty() {
                last_answer = Instant::now();
            }
            let now = Instant::now();
            if now >= next_housekeeping {
                self.housekeeping().await;
                next_housekeeping = Instant::now() + self.config.housekeeping_interval;
            }
            if now >= next_renew {
                if !in_flight.is_empty() {
                    self.renew(&in_flight).await;
                }
                next_renew = Instant::now() + renew_every;
            }
            if !in_flight.is_empty() && last_answer.elapsed() >= self.config.stall_after {
                tracing::warn!(
                    schema = %self.outbox.schema(),
                    rows = in_flight.len(),
                    waited = ?last_answer.elapsed(),
                    "the producer answered none of the rows in flight; replacing it (they go out again)"
                );
                self.replace_producer();
                last_answer = Instant::now();
                // Dropping the old producer purges it: their answers (not sent) arrive shortly.
                continue;
            }
            let room = (self.config.max_in_flight as usize).saturating_sub(in_flight.len());
            // Answers wait for the next claim (a notification, the poll, a full batch) and are
            // marked in its turn: one commit for both. Nothing waits on the mark meanwhile: a later
            // row of the same key notifies when it is written, and its turn marks first, then
            // claims it. Only a pile of answers as large as a batch gets a turn of its own.
            let claim = room > 0 && now >= next_claim;
            let mark = claim || settled.len() >= self.config.batch_size as usize;
            if mark {
                // Asked here, about everything this mark would write: answers reach `settled` both
                // at the top of the loop and in the wait below, so a check at the top alone let a
                // stored record be marked before the crash.
                if settled.iter().any(|(_, s)| *s == Settle::Published)
                    && faults::crash_relay_before_mark(&self.config.faults)
                {
                    tracing::warn!(
                        schema = %self.outbox.schema(),
                        "fault: the relay crashes after the broker stored records, before marking them"
                    );
                    stats.crashed = true;
                    // Rows in flight go with the producer; the claims stay until their successor
                    // takes them back or they expire.
                    self.close().await;
                    return stats;
                }
                if claim && let Some(listener) = listener.as_mut() {
                    // This claim reads every row announced so far: the announcements waiting would
                    // only wake the relay again to find nothing (an empty claim is a commit).
                    listener.clear();
                }
                let limit = if claim {
                    room.min(self.config.batch_size as usize)
                } else {
                    0
                };
                match self.turn(&settled, limit).await {
                    Ok(rows) => {
                        settled.clear();
                        if claim {
                            stats.rounds += 1;
                            let round =
                                self.send_all(rows, &mut answers, &mut in_flight, &mut settled, &mut stats);
                            let pause = if round.sent == 0 && round.failed > 0 {
                                consecutive_failures += 1;
                                self.config.backoff.delay(consecutive_failures)
                            } else {
                                consecutive_failures = 0;
                                if round.claimed >= limit && round.sent > 0 {
                                    Duration::ZERO
                                } else {
                                    self.config.poll_interval
                                }
                            };
                            next_claim = Instant::now() + pause;
                            self.replace_producer_if_fatal();
                            if pause.is_zero() {
                                continue;
                            }
                        }
                    }
                    Err(error) => {
                        // What was to be marked is kept and tried again; the claims are renewed
                        // meanwhile.
                        stats.failures += 1;
                        consecutive_failures += 1;
                        self.count_database_failure();
                        tracing::warn!(schema = %self.outbox.schema(), %error, "outbox relay round failed; retrying");
                        next_claim = Instant::now() + self.config.backoff.delay(consecutive_failures);
                    }
                }
            }
            let mut wake = next_housekeeping.min(next_renew);
            if room > 0 {
                wake = wake.min(next_claim);
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(answer) = answers.next(), if !answers.is_empty() => {
                    in_flight.remove(&answer.0.id);
                    settled.push(self.answered(answer, &mut stats));
                    last_answer = Instant::now();
                }
                ours = notified(&mut listener, self.outbox.schema().as_str()) => {
                    if ours && consecutive_failures == 0 {
                        next_claim = Instant::now();
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        drop(listener);
        self.drain(answers, in_flight, settled, &mut stats).await;
        stats
    }

    /// Listens on `pizza_outbox`, on the process's listening connection for the database
    /// ([`pizza_notify`]): PostgreSQL makes every listening connection of a database read every
    /// notification sent in it, in a transaction of its own, so the relay shares one with the rest
    /// of the process rather than holding one of the pool's.
    fn listen(&self, source: Source) -> Subscription {
        Notifications::shared(&self.pool).subscribe_from(NOTIFY_CHANNEL, source)
    }

    /// After shutdown: waits for the answers still due (within the grace), marks what was answered
    /// and releases every other claim of this relay so another relay can take the rows at once.
    async fn drain(
        self,
        mut answers: Answers,
        mut in_flight: BTreeSet<i64>,
        mut settled: Vec<(i64, Settle)>,
        stats: &mut RelayStats,
    ) {
        let deadline = Instant::now() + self.config.shutdown_grace;
        while !answers.is_empty() {
            tokio::select! {
                Some(answer) = answers.next() => {
                    in_flight.remove(&answer.0.id);
                    settled.push(self.answered(answer, stats));
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        if !in_flight.is_empty() {
            tracing::warn!(
                schema = %self.outbox.schema(),
                rows = in_flight.len(),
                "relay stopped with rows in flight; they stay pending and will be sent again"
            );
        }
        if !settled.is_empty()
            && let Err(error) = self.turn(&settled, 0).await
        {
            tracing::warn!(%error, "marking outbox rows at shutdown failed; they will be sent again");
        }
        self.release_claims().await;
        drop(answers);
        self.close().await;
    }

    /// Drops the producer, which purges its queue and waits up to 500 ms: off the runtime.
    async fn close(self) {
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
    }

    /// Hands the claimed rows to the producer, in id order; rows that fail at once, and the later
    /// rows of their keys, go straight to `settled`.
    fn send_all(
        &mut self,
        mut rows: Vec<PendingRow>,
        answers: &mut Answers,
        in_flight: &mut BTreeSet<i64>,
        settled: &mut Vec<(i64, Settle)>,
        stats: &mut RelayStats,
    ) -> Round {
        rows.sort_by_key(|r| r.id);
        let mut round = Round {
            claimed: rows.len(),
            ..Round::default()
        };
        // A key whose row could not be handed to the producer: its later rows of this batch are
        // released, so they never overtake it.
        let mut held: HashSet<(String, String)> = HashSet::new();
        for row in rows {
            let key = (row.topic.clone(), row.message_key.clone());
            if held.contains(&key) {
                settled.push((row.id, Settle::Unsent));
                continue;
            }
            match self.send(row) {
                Ok((flight, delivery)) => {
                    round.sent += 1;
                    in_flight.insert(flight.id);
                    answers.push(Box::pin(async move {
                        let result = match delivery.await {
                            Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
                            Ok(Err((error, _))) => Err(Some(error)),
                            Err(_canceled) => Err(None),
                        };
                        (flight, result)
                    }));
                }
                Err((id, settle, injected)) => {
                    round.failed += 1;
                    stats.failures += 1;
                    stats.injected += u64::from(injected);
                    if let Settle::Dead(_) = settle {
                        stats.dead += 1;
                    }
                    settled.push((id, settle));
                    held.insert(key);
                }
            }
        }
        round
    }

    /// Opens the row's `send` span and hands the record to the producer. On failure: the row id,
    /// what becomes of it, and whether the fault plan failed it.
    fn send(
        &self,
        row: PendingRow,
    ) -> Result<(InFlight, oneshot::Receiver<OwnedDeliveryResult>), (i64, Settle, bool)> {
        let Some(attributes) = row.attributes() else {
            // Only a hand-written row can get here; it can never be published, so give up on it now.
            tracing::error!(
                outbox_id = row.id,
                "outbox row has a key that is not an order id; marking it dead"
            );
            return Err((
                row.id,
                Settle::Dead("message_key is not an order id".to_owned()),
                false,
            ));
        };
        let event_id = row.event_id.to_string();
        let span = tk::send_span(
            &Outgoing {
                topic: &row.topic,
                key: Some(&row.message_key),
                message_id: Some(&event_id),
                order_id: Some(&row.message_key),
                event_type: Some(&row.event_type),
            },
            Some(&propagation::carrier_to_context(&row.carrier())),
        );
        span.set_attribute(pizza::OUTBOX_ID, row.id);
        if faults::fail_publish(&self.config.faults) {
            // Exactly what a send refused at once for a full queue does: nothing reached the producer.
            tk::record_error(&span, INJECTED);
            self.metrics.publish_failures.add(
                1,
                &[
                    KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, row.topic.clone()),
                    KeyValue::new(semconv::ERROR_TYPE, INJECTED),
                ],
            );
            // Info, not warn: the plan asked for it, and the span and the metric already say so.
            span.in_scope(|| {
                tracing::info!(
                    outbox_id = row.id,
                    topic = %row.topic,
                    "injected publish failure (fault plan); the row stays pending"
                )
            });
            let settle = after_failure(
                None,
                row.refusals,
                self.config.max_refusals,
                &self.config.refusal_backoff,
            );
            return Err((row.id, settle, true));
        }
        let headers = tk::inject(&span, &row.topic, attributes.to_headers());
        let sent = self.producer.send(
            &row.topic,
            Some(row.message_key.as_str()),
            Some(row.payload.as_slice()),
            headers,
        );
        match sent {
            Ok(delivery) => Ok((
                InFlight {
                    id: row.id,
                    topic: row.topic.clone(),
                    refusals: row.refusals,
                    span,
                },
                delivery,
            )),
            Err(error) => {
                tk::record_error(&span, kafka_error_type(&error));
                self.count_failure(&row.topic, &error);
                let settle = after_failure(
                    Some(&error),
                    row.refusals,
                    self.config.max_refusals,
                    &self.config.refusal_backoff,
                );
                self.log_failure(row.id, &row.topic, &settle);
                Err((row.id, settle, false))
            }
        }
    }

    /// What becomes of a row the broker answered for.
    fn answered(&self, (row, result): Answer, stats: &mut RelayStats) -> (i64, Settle) {
        let settle = match result {
            Ok((partition, offset)) => {
                tk::record_sent(&row.span, partition, offset);
                stats.published += 1;
                Settle::Published
            }
            Err(Some(error)) => {
                tk::record_error(&row.span, kafka_error_type(&error));
                self.count_failure(&row.topic, &error);
                stats.failures += 1;
                let settle = after_failure(
                    Some(&error),
                    row.refusals,
                    self.config.max_refusals,
                    &self.config.refusal_backoff,
                );
                if !matches!(settle, Settle::Failed(_)) {
                    // Only the broker refuses this late, after the producer took the record: later
                    // rows of its key sent in the same round may be in the topic already.
                    tracing::warn!(
                        outbox_id = row.id,
                        topic = %row.topic,
                        "the broker refused a record the producer had accepted; later records of its key sent \
                         meanwhile stay published, and this one follows them"
                    );
                }
                self.log_failure(row.id, &row.topic, &settle);
                settle
            }
            Err(None) => {
                tk::record_error(&row.span, "canceled");
                stats.failures += 1;
                Settle::Failed("delivery report lost: producer shut down".to_owned())
            }
        };
        if let Settle::Dead(_) = settle {
            stats.dead += 1;
        }
        (row.id, settle)
    }

    /// A dead row needs an operator: ERROR. A refusal that will be retried: WARN.
    fn log_failure(&self, id: i64, topic: &str, settle: &Settle) {
        match settle {
            Settle::Dead(error) => tracing::error!(
                schema = %self.outbox.schema(),
                outbox_id = id,
                topic,
                %error,
                max_refusals = self.config.max_refusals,
                "the broker keeps refusing an outbox row; gave up on it (dead). The later events of its key wait \
                 until it is requeued (Outbox::requeue) or deleted"
            ),
            Settle::Refused { error, retry_after } => tracing::warn!(
                schema = %self.outbox.schema(),
                outbox_id = id,
                topic,
                %error,
                ?retry_after,
                "the broker refused an outbox row; trying again later"
            ),
            Settle::Failed(error) => tracing::warn!(
                schema = %self.outbox.schema(),
                outbox_id = id,
                topic,
                %error,
                "publishing an outbox row failed; retrying"
            ),
            Settle::Published | Settle::Unsent => {}
        }
    }

    /// One transaction: writes how each row of `settled` ended (one statement), then claims up to
    /// `limit` rows (another), and commits. Claiming after marking lets the next rows of a key just
    /// published go in the same turn; one commit for both keeps the database's work per event low.
    async fn turn(&self, settled: &[(i64, Settle)], limit: usize) -> Result<Vec<PendingRow>, sqlx::Error> {
        let mut tx = self.turns.begin().await?;
        if !settled.is_empty() {
            let ids: Vec<i64> = settled.iter().map(|(id, _)| *id).collect();
            let outcomes: Vec<&str> = settled.iter().map(|(_, s)| s.outcome()).collect();
            let errors: Vec<Option<&str>> = settled.iter().map(|(_, s)| s.error()).collect();
            let retry_after: Vec<f64> = settled.iter().map(|(_, s)| s.retry_after()).collect();
            sqlx::query(AssertSqlSafe(self.outbox.sql().settle.clone()))
                .bind(&ids)
                .bind(&outcomes)
                .bind(&errors)
                .bind(&retry_after)
                .bind(&self.me)
                .execute(&mut *tx)
                .await?;
        }
        let rows = if limit > 0 {
            sqlx::query_as(AssertSqlSafe(self.outbox.sql().claim.clone()))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(&self.me)
                .bind(self.config.claim_lease.as_secs_f64())
                .fetch_all(&mut *tx)
                .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(rows)
    }

    /// Extends the claims of the rows in flight. A failure only logs: the claims last a lease, and
    /// the next renewal tries again.
    async fn renew(&self, in_flight: &BTreeSet<i64>) {
        let ids: Vec<i64> = in_flight.iter().copied().collect();
        let renewed = sqlx::query(AssertSqlSafe(self.outbox.sql().renew.clone()))
            .bind(&ids)
            .bind(&self.me)
            .bind(self.config.claim_lease.as_secs_f64())
            .execute(&self.pool)
            .await;
        if let Err(error) = renewed {
            tracing::warn!(schema = %self.outbox.schema(), %error, "renewing the relay's claims failed");
        }
    }

    /// At start, with a stable name: the claims under this name are a dead predecessor's.
    async fn take_back_claims(&self) {
        match self.release().await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                schema = %self.outbox.schema(),
                relay = %self.me,
                rows,
                "took back the claims of this relay's previous run; those rows are sent again"
            ),
            Err(error) => tracing::warn!(%error, "taking back earlier claims failed; they expire instead"),
        }
    }

    /// At stop: rows still claimed by this relay go back to the pool.
    async fn release_claims(&self) {
        if let Err(error) = self.release().await {
            tracing::warn!(%error, "releasing the relay's claims failed; they expire instead");
        }
    }

    async fn release(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(AssertSqlSafe(self.outbox.sql().release.clone()))
            .bind(&self.me)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    fn count_failure(&self, topic: &str, error: &KafkaError) {
        self.metrics.publish_failures.add(
            1,
            &[
                KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_owned()),
                KeyValue::new(semconv::ERROR_TYPE, kafka_error_type(error)),
            ],
        );
    }

    fn count_database_failure(&self) {
        self.metrics
            .publish_failures
            .add(1, &[KeyValue::new(semconv::ERROR_TYPE, "database")]);
    }

    /// A producer with a fatal error (the idempotence state broke) accepts nothing more: make a new
    /// one. Rows it failed stay pending and go out through the new producer.
    fn replace_producer_if_fatal(&mut self) {
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return;
        };
        tracing::warn!(
            ?code,
            reason,
            "the relay's producer hit a fatal error; creating a new one"
        );
        self.replace_producer();
    }

    /// Makes a new producer and drops the old one off the runtime: dropping it purges its queue, so
    /// the records it still held are answered as not sent.
    fn replace_producer(&mut self) {
        match create_producer(&self.producer_config) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.producer, fresh);
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => tracing::error!(%error, "could not create a new producer; retrying next round"),
        }
    }

    /// Refreshes the backlog gauges and purges old published rows. Failures only log: this is
    /// bookkeeping, and the next tick tries again.
    async fn housekeeping(&mut self) {
        match self.outbox.backlog(&self.pool).await {
            Ok(backlog) => {
                let mut now_seen = BTreeSet::new();
                for b in backlog {
                    let topic = [KeyValue::new(
                        semconv::MESSAGING_DESTINATION_NAME,
                        b.topic.clone(),
                    )];
                    self.metrics
                        .backlog
                        .record(u64::try_from(b.pending).unwrap_or(0), &topic);
                    self.metrics
                        .dead
                        .record(u64::try_from(b.dead).unwrap_or(0), &topic);
                    now_seen.insert(b.topic);
                }
                for drained in self.backlog_topics.difference(&now_seen) {
                    let topic = [KeyValue::new(
                        semconv::MESSAGING_DESTINATION_NAME,
                        drained.clone(),
                    )];
                    self.metrics.backlog.record(0, &topic);
                    self.metrics.dead.record(0, &topic);
                }
                self.backlog_topics.extend(now_seen);
            }
            Err(error) => tracing::warn!(%error, "reading the outbox backlog failed"),
        }
        if let Some(retain) = self.config.retain_published {
            let purge = sqlx::query(AssertSqlSafe(self.outbox.sql().purge.clone()))
                .bind(retain.as_secs_f64())
                .execute(&self.pool)
                .await;
            if let Err(error) = purge {
                tracing::warn!(%error, "purging published outbox rows failed");
            }
        }
    }
}

/// The channel the outbox trigger notifies (migration `0005_outbox_notify.sql`).
pub const NOTIFY_CHANNEL: &str = "pizza_outbox";

/// Waits for the next notification; `true` if it may concern `schema`: one for it, or a possible
/// miss (a lost connection). Never completes without a listener.
async fn notified(listener: &mut Option<Subscription>, schema: &str) -> bool {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.recv().await {
        Event::Notified(payload) => payload == schema,
        Event::Missed => true,
    }
}

/// Wakes this process's relay of `schema`'s outbox, as the outbox's `NOTIFY` would (behind
/// [`Outbox::announce`](crate::Outbox::announce)).
pub(crate) fn announce_outbox(pool: &PgPool, schema: &Schema) {
    Notifications::shared(pool).announce(NOTIFY_CHANNEL, schema.as_str());
}

/// Makes `schema`'s outbox send its `NOTIFY` on insert ([`Source::Database`]) or not
/// ([`Source::Process`]: its relay is woken by [`Outbox::announce`](crate::Outbox::announce), and nobody's listening
/// connection reads a notification for it). Idempotent; the service host calls it at every start,
/// after the migrations, so a service that changes its source changes the trigger with it. The
/// DDL runs only when the trigger is not as asked: it locks the outbox against inserts while it
/// runs, which a replica starting beside busy ones should not do for nothing.
pub async fn outbox_wake(pool: &PgPool, schema: &Schema, source: Source) -> Result<(), sqlx::Error> {
    let table = schema.table("outbox");
    // Both names come from a validated `Schema`, never from input.
    let present: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "select exists (select 1 from pg_trigger \
         where tgname = 'outbox_notify' and tgrelid = '{table}'::regclass)"
    )))
    .fetch_one(pool)
    .await?;
    let statement = match (source, present) {
        (Source::Database, false) => format!(
            // `or replace`: two replicas starting at once may both find it missing.
            "create or replace trigger outbox_notify after insert on {table} \
             for each statement execute function {}()",
            schema.table("outbox_notify")
        ),
        (Source::Process, true) => format!("drop trigger if exists outbox_notify on {table}"),
        _ => return Ok(()),
    };
    sqlx::query(AssertSqlSafe(statement)).execute(pool).await?;
    Ok(())
}

/// The `error.type` of a publish the fault plan failed.
pub const INJECTED: &str = "injected";

/// A low-cardinality `error.type` for a Kafka error: librdkafka's error code name.
pub(crate) fn kafka_error_type(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(code) => rdkafka_code_name(code),
        None => "kafka",
    }
}

fn rdkafka_code_name(code: RDKafkaErrorCode) -> &'static str {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut => "message_timed_out",
        C::QueueFull => "queue_full",
        C::MessageSizeTooLarge => "message_size_too_large",
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => "unknown_topic_or_partition",
        C::AllBrokersDown => "all_brokers_down",
        C::BrokerTransportFailure => "broker_transport_failure",
        C::Fatal => "fatal",
        C::PurgeQueue | C::PurgeInflight => "purged",
        C::TopicAuthorizationFailed => "topic_authorization_failed",
        _ => "kafka",
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode as C;

    use super::*;

    /// A pool on the native stack's database and a schema of its own with the messaging tables.
    async fn migrated_schema(prefix: &str) -> (PgPool, Schema) {
        let stack = pizza_testkit::Stack::from_env();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&stack.database_url)
            .await
            .expect("connect to the native PostgreSQL (is deploy/local/infra.sh up?)");
        let schema = Schema::new(&format!("{prefix}_{}", Uuid::new_v4().simple())).expect("schema name");
        crate::migrate(&pool, &schema)
            .await
            .expect("messaging migrations");
        (pool, schema)
    }

    /// The claim's plan on `pool`, as `EXPLAIN` prints it.
    async fn claim_plan(pool: &PgPool, outbox: &Outbox) -> String {
        let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("explain {}", outbox.sql().claim)))
            .bind(256i64)
            .bind("me")
            .bind(30.0f64)
            .fetch_all(pool)
            .await
            .expect("explain the claim");
        lines.join("\n")
    }

    // The statistics say the outbox is empty (analyzed before a burst, as autovacuum leaves it for
    // a while): the shared pool's connection plans a bitmap scan and a sort of every available row,
    // the relay's turn connection walks the pending index in id order and stops at the batch.
    #[tokio::test]
    async fn a_turn_claims_along_the_pending_index_in_id_order_however_stale_the_statistics() {
        let (pool, schema) = migrated_schema("turns").await;
        let t = schema.table("outbox");
        for statement in [
            format!("analyze {t}"),
            format!(
                "insert into {t} (event_id, event_source, event_type, event_time, topic, message_key, payload) \
                 select gen_random_uuid(), 's', 't', now(), 'orders', 'k' || (g % 500), '' \
                 from generate_series(1, 2000) g"
            ),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .unwrap();
        }
        let outbox = Outbox::new(schema.clone());
        let shared = claim_plan(&pool, &outbox).await;
        let turns = claim_plan(&turn_pool(&pool), &outbox).await;
        sqlx::query(AssertSqlSafe(format!("drop schema {} cascade", schema.as_str())))
            .execute(&pool)
            .await
            .unwrap();
        assert!(
            shared.contains("Bitmap") || shared.contains("Sort"),
            "the shared pool's plan, which the turn connection exists to avoid:\n{shared}"
        );
        assert!(
            turns.contains("Index Scan using outbox_pending on")
                && !turns.contains("Bitmap")
                && !turns.contains("Sort"),
            "the turn's claim reads the pending rows along their index, in order:\n{turns}"
        );
    }

    /// `explain (analyze)` of the prepared statement `name` run with `args` on `conn`.
    async fn explain_execute(conn: &mut sqlx::PgConnection, name: &str, args: &str) -> String {
        let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "explain (analyze, costs off) execute {name}({args})"
        )))
        .fetch_all(&mut *conn)
        .await
        .expect("explain the prepared statement");
        lines.join("\n")
    }

    // The plans a relay prepares on an empty outbox must still look rows up by key and id once a
    // backlog is there (see "Plans that hold"): the turn connection keeps generic plans, made here
    // on the empty table, as at a service's start, and run on 300 keys with six rows each, a third
    // published (their index entries dead) and a sixth in flight.
    #[tokio::test]
    async fn the_claim_and_the_settle_planned_on_an_empty_outbox_look_rows_up_by_key_on_a_backlog() {
        let (pool, schema) = migrated_schema("plans").await;
        let t = schema.table("outbox");
        let outbox = Outbox::new(schema.clone());
        let turns = turn_pool(&pool);
        let mut conn = turns.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("show plan_cache_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            mode, "force_generic_plan",
            "the turn connection plans each statement once"
        );
        let setup = [
            format!("analyze {t}"),
            format!("prepare claim(bigint, text, float8) as {}", outbox.sql().claim),
            format!(
                "prepare settle(bigint[], text[], text[], float8[], text) as {}",
                outbox.sql().settle
            ),
            // The generic plans are made now, on the empty table.
            "begin".to_owned(),
            "execute claim(100, 'me', 30)".to_owned(),
            "execute settle('{1}', '{published}', '{null}', '{0}', 'me')".to_owned(),
            "rollback".to_owned(),
            format!(
                "insert into {t} (event_id, event_source, event_type, event_time, topic, message_key, payload) \
                 select gen_random_uuid(), 's', 't', now(), 'delivery', 'k' || k, '' \
                 from generate_series(1, 300) k, generate_series(0, 5) n order by k * 0.02 + n * 3"
            ),
            format!("update {t} set published_at = now() where id <= 600"),
            format!(
                "update {t} set claimed_by = 'me', available_at = now() + interval '30 s' where id > 600 and id <= 900"
            ),
            "begin".to_owned(),
        ];
        for statement in setup {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        let claim = explain_execute(&mut conn, "claim", "100, 'me', 30").await;
        let settle = explain_execute(
            &mut conn,
            "settle",
            "'{901,902}', '{published,published}', '{null,null}', '{0,0}', 'me'",
        )
        .await;
        sqlx::query("rollback").execute(&mut *conn).await.unwrap();
        drop(conn);
        turns.close().await;
        sqlx::query(AssertSqlSafe(format!("drop schema {} cascade", schema.as_str())))
            .execute(&pool)
            .await
            .unwrap();
        let by_key = claim.matches("Index Scan using outbox_pending_by_key").count();
        let by_key_cond = claim.matches("Index Cond: ((message_key = ").count();
        assert!(
            by_key == 2 && by_key_cond == 2 && claim.contains("Index Cond: (id = ANY"),
            "each key check looks its key up, and the update its rows by id:\n{claim}"
        );
        assert!(
            settle.contains("Index Cond: (id = ANY"),
            "the settle finds its rows by id:\n{settle}"
        );
    }

    fn error(code: C) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
        }
    }

    #[test]
    fn a_row_refused_for_itself_backs_off_longer_each_time_then_dies() {
        let too_large = error(C::MessageSizeTooLarge);
        let after = |refusals| after_failure(Some(&too_large), refusals, 4, &backoff());
        let pauses: Vec<Option<u64>> = (0..3)
            .map(|n| match after(n) {
                Settle::Refused { retry_after, .. } => Some(retry_after.as_secs()),
                _ => None,
            })
            .collect();
        assert_eq!(pauses, vec![Some(1), Some(2), Some(4)]);
        assert!(matches!(after(3), Settle::Dead(e) if e.contains("too large") || e.contains("Size")));
        assert!(matches!(after(40), Settle::Dead(_)), "past the cap is dead too");
    }

    #[test]
    fn failures_of_the_producer_or_broker_as_a_whole_never_count_against_the_row() {
        for code in [
            C::QueueFull,
            C::Fatal,
            C::PurgeQueue,
            C::AllBrokersDown,
            C::NotEnoughReplicas,
        ] {
            assert!(
                matches!(
                    after_failure(Some(&error(code)), 100, 3, &backoff()),
                    Settle::Failed(_)
                ),
                "{code:?}"
            );
        }
        assert!(
            matches!(after_failure(None, 100, 3, &backoff()), Settle::Failed(e) if e.contains("injected")),
            "an injected failure is a failure of the producer, not of the row"
        );
    }

    #[test]
    fn unknown_topics_invalid_records_and_anything_unlisted_count_as_refusals() {
        for code in [
            C::UnknownTopicOrPartition,
            C::UnknownTopic,
            C::InvalidRecord,
            C::TopicAuthorizationFailed,
            C::PolicyViolation,
            C::InvalidMessage,
        ] {
            assert!(
                matches!(
                    after_failure(Some(&error(code)), 0, 3, &backoff()),
                    Settle::Refused { .. }
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn the_settle_statement_gets_one_outcome_error_and_pause_per_row() {
        let refused = Settle::Refused {
            error: "too large".into(),
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(
            (refused.outcome(), refused.error(), refused.retry_after()),
            ("refused", Some("too large"), 1.5)
        );
        assert_eq!(
            (Settle::Published.outcome(), Settle::Published.error()),
            ("published", None)
        );
        assert_eq!(
            (Settle::Unsent.outcome(), Settle::Unsent.error()),
            ("unsent", None)
        );
        assert_eq!(Settle::Dead("x".into()).outcome(), "dead");
        assert_eq!(Settle::Failed("y".into()).error(), Some("y"));
    }
}
