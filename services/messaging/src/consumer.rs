//! The at-least-once, idempotent consumer.
//!
//! For each record, in partition order:
//!
//! 1. open a `process {topic}` CONSUMER span from the record's trace headers, drawn as the
//!    [`Topology`] says;
//! 2. decode the CloudEvent; a record that does not decode is dead-lettered at once (retrying cannot
//!    fix it);
//! 3. in one database transaction, claim the event id in the [`Inbox`] and run the [`Handler`]; commit.
//!    A claimed id means a redelivery: the effect is skipped. A [`HandlerError::Retry`] is retried with
//!    backoff up to [`ConsumerConfig::max_attempts`] times; then, or at once for a
//!    [`HandlerError::Reject`], the record is dead-lettered;
//! 4. only then store the record's offset, which librdkafka commits in the background (and this
//!    consumer synchronously at shutdown).
//!
//! A crash anywhere before step 4 means the record comes again, and step 3 makes that harmless. That
//! is the whole guarantee: effects exactly once, deliveries at least once.
//!
//! # Crashing on purpose
//! A crash between steps 3 and 4 is the case the inbox exists for, so it can be caused at will: with
//! [`ConsumerConfig::crash_before_storing_offset`] (the first applied record) or when the fault hooks
//! of [`ConsumerConfig::faults`] say so
//! ([`crash_before_commit`](crate::FaultHooks::crash_before_commit), asked after each applied
//! record), the consumer stops right after the effect's commit, as if the process had died there:
//! [`Consumer::run`] returns with [`ConsumerStats::crashed`] set, and the record's offset was neither
//! stored nor committed.
//!
//! It is a crash *inside* a process that lives on, and one librdkafka detail decides whether it
//! behaves like a real one: the client still holds the partition and may hold stored offsets. It is
//! therefore closed without the final synchronous commit of a clean stop, which commits only offsets
//! stored before the crash, never the crashed record's. Whoever consumes the partition next, such as
//! a new [`Consumer`] the service starts in the same group (`pizza_servicekit::background::run`
//! does), starts at the crashed record, and the inbox turns that delivery into a duplicate.
//!
//! # Dead letters that cannot be published
//! A dead letter is published to `<topic>.dlq` with up to [`ConsumerConfig::dead_letter_attempts`]
//! tries (the dead-letter producer gives each one 30 s). If none succeeds (the topic does not exist,
//! the broker refuses the record), retrying longer would hold the partition for ever, and skipping
//! would lose the record. So the consumer *parks* it: the record, its dead-letter headers and both
//! errors go to `<schema>.parked_dead_letters` ([`Parking`]), the consumer logs an ERROR (an
//! operator must fix the dead-letter topic and republish the record), counts it in
//! `pizza.consumer.parked` and [`ConsumerStats::parked`], and stores the offset. Only if the
//! database is down too does the consumer keep retrying the parking, and then nothing else could
//! move anyway.
//!
//! # Crash recovery and static membership
//! A consumer that dies without leaving its group (`kill -9`, a lost node) keeps its partitions until
//! the broker expires its session (librdkafka's 45 s). A dynamic member restarted meanwhile joins as a
//! new member, and the rebalance waits for the dead one: the partitions are unread for up to 45 s.
//! With [`ConsumerConfig::instance_id`] set, the consumer is a static member (`group.instance.id`):
//! the restarted replica comes back under the same name, the broker hands it the dead member's
//! partitions at once, without a rebalance, and it resumes from the committed offsets. A graceful
//! stop still leaves the group (see `Consumer::run`), so partitions of a replica that is gone for
//! good move at once too. Two live consumers with the same instance id fence each other: each
//! replica needs its own.
//!
//! # Fatal errors
//! librdkafka reports a few errors as fatal: the client can do nothing more, and only a new one can
//! go on. The one seen here is a static member *fenced* (`FencedInstanceId`) when the broker it
//! talked to came back from an outage and the member rejoined under a new member id. Left alone, the
//! consumer would read nothing for the rest of its life while its service looked healthy; so
//! [`Consumer::run`] returns with [`ConsumerStats::fatal`] set, and the service starts a new
//! consumer under the same name (as after a crash), which resumes from the committed offsets.
//!
//! # Stalled membership
//! Once seen in CI: the broker came back from an outage, and a consumer whose group session had
//! expired meanwhile logged "Consumer group session timed out ... revoking assignment and rejoining
//! group" and never consumed again, while its service looked healthy and its partitions went
//! unread. Whatever state librdkafka's group handler is stuck in, a new client gets out of it (as
//! after a fatal error). So the consumer watches its membership in librdkafka's statistics (every
//! 10 s): when they have not shown it a steady member of its group (`up`, join state `steady`,
//! however many partitions it holds, none included) for [`ConsumerConfig::stall_after`],
//! [`Consumer::run`] returns with [`ConsumerStats::stalled`] set, and the service starts a new
//! consumer under the same name, which resumes from the committed offsets. A broker outage longer
//! than that restarts the consumer too, which costs nothing: the new one waits for the broker as
//! the old one did. Without statistics (`statistics.interval.ms=0` in the caller's settings) there
//! is no watch.
//!
//! # Batches
//! Records the client has already fetched are taken together, up to [`ConsumerConfig::max_batch`]
//! (never waiting for more), and applied in one transaction per partition, up to
//! [`ConsumerConfig::partitions_at_once`] partitions at once: one statement claims all their event
//! ids in the inbox, the handler gets the new ones together ([`Handler::handle_batch`], which by
//! default handles them one after another in partition order, and which a handler may answer with
//! a few statements for the whole batch), one commit; then their offsets are stored in order.
//! Under load that is one commit for many records instead of one each; idle, a batch is one
//! record. Partitions go side by side because a consumer's throughput is round trips
//! to PostgreSQL, one after another, and Kafka orders records only within a partition (an event's
//! key, the order, keeps all of an order's events in one): on the 2-core bench one transaction at a
//! time capped the order service's consumer near 800 records a second, the shop near 100 orders a
//! second. Two partitions' transactions can still meet on a row (a kitchen event and a delivery
//! event of one order, in two topics): one waits for the other, and a deadlock, which PostgreSQL
//! breaks by failing one of them, costs that partition's records the one-at-a-time way above, not
//! a record. If any handler fails, its partition's transaction rolls back and its records go the
//! one-at-a-time way above, in order (the failed handler's run counts as its first attempt), so a
//! poison record costs its batch one retry and nothing else. While a crash fault may fire
//! ([`ConsumerConfig::crash_before_storing_offset`], or hooks whose
//! [`may_crash_consumer`](crate::FaultHooks::may_crash_consumer) says so) records go one per
//! transaction, so that a crash comes right after exactly one record's effect, as it claims.
//!
//! A service that needs more throughput still runs more replicas in the group, up to the partition
//! count, and every replica gets its own partitions.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use opentelemetry::KeyValue;
use pizza_contracts::EventData;
use pizza_contracts::topics::dead_letter;
use pizza_telemetry::Topology;
use pizza_telemetry::attributes::{pizza, semconv};
use pizza_telemetry::kafka::{self as tk, Incoming, Outgoing};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message as _, OwnedMessage};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::cloudevents::{Envelope, peek_id};
use crate::dead_letter::{DeadLetter, Parking};
use crate::faults::{self, SharedFaultHooks};
use crate::inbox::{Inbox, Origin};
use crate::kafka::{
    AnsweringProducer, GroupWatch, KafkaContext, consumer_config, dead_letter_producer_config,
};
use crate::metrics::ConsumerMetrics;
use crate::relay::kafka_error_type;
use crate::schema::Schema;
use pizza_retry::Backoff;

/// Any error a handler wants to report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a handler failed, which decides what happens next. The text ends up in logs, span events and
/// dead-letter headers: never put customer data in it.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (the database hiccuped, a peer is down): retried with backoff, then
    /// dead-lettered after the last attempt.
    #[error("{0}")]
    Retry(BoxError),
    /// Will never succeed (the event contradicts the handler's state): dead-lettered at once.
    #[error("rejected: {0}")]
    Reject(BoxError),
}

impl HandlerError {
    /// A retryable error.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        HandlerError::Retry(error.into())
    }

    /// A permanent error.
    pub fn reject(error: impl Into<BoxError>) -> Self {
        HandlerError::Reject(error.into())
    }
}

impl From<sqlx::Error> for HandlerError {
    /// Database errors are retried: a constraint that fails every time still ends in the
    /// dead-letter topic after the last attempt.
    fn from(error: sqlx::Error) -> Self {
        HandlerError::Retry(Box::new(error))
    }
}

/// What a service does with an event. Its effect goes through `tx`, the transaction that also
/// records the event in the inbox: commit and dedupe are one.
pub trait Handler: Send + Sync + 'static {
    /// What the consumed topics carry: one event type, or a topic enum of `pizza-contracts`.
    type Event: EventData + Send + Sync + 'static;

    /// Applies `event` inside `tx`. Do not commit `tx`: the consumer does, after this returns `Ok`.
    fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<Self::Event>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies `records`, fetched together from one partition, in partition order inside `tx`: the
    /// batch path of the module docs ("Batches"). The default hands each to
    /// [`handle`](Self::handle) inside its record's span, one after another. A handler whose effect
    /// is a statement per event overrides it to make one statement of many, since a consumer's
    /// throughput is its round trips to PostgreSQL, one after another. It must leave the same
    /// effect as `handle` on each record in turn, and on failure say which record failed: the
    /// transaction rolls back, that record's attempt counts as its first, and the records go the
    /// one-at-a-time way.
    fn handle_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[Batched<'_, Self::Event>],
    ) -> impl Future<Output = Result<(), BatchError>> + Send {
        async move {
            for (index, record) in records.iter().enumerate() {
                self.handle(tx, record.event)
                    .instrument(record.span.clone())
                    .await
                    .map_err(|error| BatchError { index, error })?;
            }
            Ok(())
        }
    }

    /// Called after a transaction in which [`handle`](Self::handle) applied at least one event
    /// has committed: where a handler whose writes hand work to a loop of its own process wakes
    /// that loop ([`pizza_notify::Notifications::announce`]). Does nothing by default.
    fn committed(&self) {}
}

/// A shared handler handles like the handler it shares. A service that starts a new [`Consumer`]
/// after one crashed (see the module docs) hands each the same handler this way.
impl<H: Handler> Handler for std::sync::Arc<H> {
    type Event = H::Event;

    fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<Self::Event>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(tx, event)
    }

    fn handle_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[Batched<'_, Self::Event>],
    ) -> impl Future<Output = Result<(), BatchError>> + Send {
        (**self).handle_batch(tx, records)
    }

    fn committed(&self) {
        (**self).committed();
    }
}

/// One record of a batch, as [`Handler::handle_batch`] gets it.
#[derive(Debug)]
pub struct Batched<'a, E> {
    /// The record's event.
    pub event: &'a Envelope<E>,
    /// The record's `process` span: what the handler does for this record belongs in it (a signal
    /// it sends, a log line).
    pub span: &'a Span,
}

/// Which record of a batch failed, and how ([`Handler::handle_batch`]).
#[derive(Debug)]
pub struct BatchError {
    /// The record's place in the batch.
    pub index: usize,
    /// Its error.
    pub error: HandlerError,
}

/// Who consumes what, and how hard to try.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group (`messaging.consumer.group.name`; also scopes the inbox).
    pub group_id: String,
    /// The topics.
    pub topics: Vec<String>,
    /// How `process` spans relate to the producer's trace.
    pub topology: Topology,
    /// Handler attempts before a record is dead-lettered.
    pub max_attempts: u32,
    /// Pause between handler attempts, and between dead-letter publish attempts.
    pub backoff: Backoff,
    /// Publishes to the dead-letter topic before the record is parked in the database instead (see
    /// the module docs).
    pub dead_letter_attempts: u32,
    /// Records already fetched that are applied together at most (see the module docs).
    pub max_batch: usize,
    /// Partitions of a batch applied at once, each in a transaction of its own (see the module
    /// docs); each holds a connection of the pool meanwhile.
    pub partitions_at_once: usize,
    /// This replica's stable name in the group (`group.instance.id`, from `PIZZA_INSTANCE_ID`): the
    /// same across restarts of the replica, different from every other live replica of the group.
    /// With it, a replica restarted after a crash takes its partitions back at once instead of
    /// waiting for the broker to expire the dead member's session; `None` joins as a dynamic member.
    pub instance_id: Option<String>,
    /// How long the consumer may go without being a steady member of its group before it ends its
    /// run as stalled (see the module docs). Longer than a rebalance that waits out a dead dynamic
    /// member's session (45 s).
    pub stall_after: Duration,
    /// Fault injection: stop like a crashed process right after the first effect commits, before
    /// its offset is stored. The record is delivered again to whoever consumes the partition next,
    /// and the inbox must absorb it. Off in production.
    pub crash_before_storing_offset: bool,
    /// Fault injection from a fault plan: asked after each applied record whether to crash there,
    /// the same way as [`crash_before_storing_offset`](Self::crash_before_storing_offset) (see the
    /// module docs). `None` injects nothing.
    pub faults: SharedFaultHooks,
}

impl ConsumerConfig {
    /// A configuration with the default retry policy (5 attempts, backoff 100 ms doubling to 5 s).
    pub fn new(group_id: impl Into<String>, topics: Vec<String>, topology: Topology) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            topology,
            max_attempts: 5,
            backoff: Backoff::default(),
            dead_letter_attempts: 3,
            max_batch: 64,
            partitions_at_once: 4,
            instance_id: None,
            stall_after: Duration::from_secs(60),
            crash_before_storing_offset: false,
            faults: None,
        }
    }
}

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The Kafka consumer or the dead-letter producer could not be created, or subscribing failed.
    #[error("setting up the Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// A consumer needs at least one topic, at least one attempt of each kind, and a non-empty
    /// instance id if any.
    #[error("invalid consumer configuration: {0}")]
    Config(&'static str),
}

/// Totals over a consumer's life, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records whose effect was applied.
    pub processed: u64,
    /// Records skipped because the inbox had their event id.
    pub duplicates: u64,
    /// Records sent to a dead-letter topic.
    pub dead_lettered: u64,
    /// Records that could not be sent to their dead-letter topic and were parked in the database.
    pub parked: u64,
    /// Handler attempts that failed and were retried.
    pub retries: u64,
    /// Whether the consumer stopped through the crash fault: the last record's effect committed but
    /// its offset was not stored, so it will be delivered again.
    pub crashed: bool,
    /// Whether the consumer stopped because librdkafka reported a fatal error (the client cannot go
    /// on; see the module docs): offsets stored since the last commit are delivered again.
    pub fatal: bool,
    /// Whether the consumer stopped because it had not been a steady member of its group for
    /// [`ConsumerConfig::stall_after`] (see the module docs): as after a fatal error.
    pub stalled: bool,
}

/// How one record ended (`pizza.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum Outcome {
    #[strum(serialize = "ok")]
    Processed,
    Duplicate,
    DeadLettered,
    Parked,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a record is in its handling.
enum Phase {
    /// Run the handler, this attempt (1-based).
    Handle { attempt: u32 },
    /// Publish to the dead-letter topic; `tries` failed publishes so far.
    DeadLetter {
        error: String,
        error_type: &'static str,
        attempts: u32,
        tries: u32,
    },
    /// The dead-letter topic would not take it: keep it in the database; `tries` failed so far.
    Park {
        error: String,
        error_type: &'static str,
        attempts: u32,
        publish_error: String,
        tries: u32,
    },
}

/// What the run loop does after a step.
enum Step {
    /// Take the next step now.
    Next,
    /// Take the next step after this pause (interruptible by shutdown).
    Wait(Duration),
    /// The record is settled: store its offset.
    Done(Outcome),
}

/// One record being handled.
struct Job<E> {
    message: OwnedMessage,
    span: Span,
    event: Option<Envelope<E>>,
    phase: Phase,
    /// Wait this long before the next step (a retry's back-off).
    pause: Duration,
}

/// How one partition's records of a batch went (see `Consumer::apply_batch`): the outcome of each
/// record if its transaction committed, `None` if a handler failed (`failed` says which, and why),
/// or the database's error.
struct PartitionApplied {
    result: Result<Option<Vec<(usize, Outcome)>>, sqlx::Error>,
    failed: Option<(usize, HandlerError)>,
}

/// Consumes CloudEvents with a [`Handler`]. See the module docs.
pub struct Consumer<H: Handler> {
    pool: PgPool,
    inbox: Inbox,
    parked: Parking,
    consumer: StreamConsumer<KafkaContext>,
    dead_letters: AnsweringProducer,
    config: ConsumerConfig,
    handler: H,
    metrics: ConsumerMetrics,
    stats: ConsumerStats,
    /// The membership the client's statistics report; `None` without statistics.
    group_watch: Option<Arc<GroupWatch>>,
}

impl<H: Handler> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("schema", self.inbox.schema())
            .field("config", &self.config)
            .finish()
    }
}

impl<H: Handler> Consumer<H> {
    /// A consumer whose inbox lives in `schema`, connecting with `kafka` (`bootstrap.servers` and any
    /// security settings; group and offset settings are added here). It subscribes at once.
    pub fn new(
        pool: PgPool,
        schema: Schema,
        kafka: &ClientConfig,
        config: ConsumerConfig,
        handler: H,
    ) -> Result<Self, ConsumerError> {
        if config.topics.is_empty() {
            return Err(ConsumerError::Config("no topics"));
        }
        if config.max_attempts == 0 {
            return Err(ConsumerError::Config("max_attempts must be at least 1"));
        }
        if config.dead_letter_attempts == 0 {
            return Err(ConsumerError::Config("dead_letter_attempts must be at least 1"));
        }
        if config.max_batch == 0 {
            return Err(ConsumerError::Config("max_batch must be at least 1"));
        }
        if config.partitions_at_once == 0 {
            return Err(ConsumerError::Config("partitions_at_once must be at least 1"));
        }
        if config.instance_id.as_deref().is_some_and(str::is_empty) {
            return Err(ConsumerError::Config("instance_id must not be empty"));
        }
        let metrics = ConsumerMetrics::new();
        let settings = consumer_config(kafka, &config.group_id, config.instance_id.as_deref());
        let group_watch =
            (settings.get("statistics.interval.ms") != Some("0")).then(|| Arc::new(GroupWatch::new()));
        let consumer: StreamConsumer<KafkaContext> = settings.create_with_context(KafkaContext {
            role: "consumer",
            group: Some(config.group_id.clone()),
            lag: Some(metrics.lag.clone()),
            group_watch: group_watch.clone(),
        })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = AnsweringProducer::create(
            &dead_letter_producer_config(kafka),
            KafkaContext {
                role: "dead-letter",
                group: None,
                lag: None,
                group_watch: None,
            },
        )?;
        Ok(Self {
            pool,
            parked: Parking::new(&schema),
            inbox: Inbox::new(schema),
            consumer,
            dead_letters,
            config,
            handler,
            metrics,
            stats: ConsumerStats::default(),
            group_watch,
        })
    }

    /// Consumes until `shutdown` completes. The record in hand when it does is finished unless it is
    /// waiting out a backoff, in which case it is left for redelivery; then the stored offsets are
    /// committed synchronously and the consumer leaves its group (a static member too: see the
    /// module docs).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> ConsumerStats {
        let mut shutdown = pin!(shutdown);
        // A few looks per `stall_after`, so a stall ends the run soon after the bound.
        let mut stall_check =
            tokio::time::interval((self.config.stall_after / 6).max(Duration::from_millis(100)));
        stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'records: loop {
            let received = tokio::select! {
                biased;
                () = &mut shutdown => break,
                received = self.consumer.recv() => received.map(|m| m.detach()),
                _ = stall_check.tick(), if self.group_watch.is_some() => {
                    if self.stalled() {
                        self.stats.stalled = true;
                        return self.abandon().await;
                    }
                    continue;
                }
            };
            let first = match received {
                Ok(message) => message,
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    // The client is unusable for good (a static member fenced after the broker came
                    // back, say): end this consumer so the service starts a new one, which rejoins
                    // under the same name and resumes from the committed offsets.
                    tracing::error!(
                        group = %self.config.group_id,
                        error = %code,
                        "fatal kafka consumer error; this consumer ends and a new one takes its place"
                    );
                    self.stats.fatal = true;
                    return self.abandon().await;
                }
                Err(error) => {
                    // Broker trouble surfaces here too; librdkafka reconnects by itself.
                    tracing::warn!(group = %self.config.group_id, %error, "kafka consumer error");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            let started = Instant::now();
            let messages = self.more_ready(first);
            let mut jobs: Vec<Job<H::Event>> = messages.into_iter().map(|m| self.start(m)).collect();
            let batched = self.apply_batch(&mut jobs).await;
            for (job, batched) in jobs.iter_mut().zip(batched) {
                let outcome = match batched {
                    Some(outcome) => outcome,
                    None => loop {
                        if !job.pause.is_zero() {
                            let pause = std::mem::take(&mut job.pause);
                            tokio::select! {
                                biased;
                                () = &mut shutdown => break 'records,
                                () = tokio::time::sleep(pause) => {}
                            }
                        }
                        let span = job.span.clone();
                        match self.step(job).instrument(span).await {
                            Step::Next => {}
                            Step::Done(outcome) => break outcome,
                            Step::Wait(pause) => job.pause = pause,
                        }
                    },
                };
                self.settle(job, outcome, started);
                if outcome == Outcome::Processed && self.crash_now() {
                    job.span.in_scope(|| {
                        tracing::warn!(
                            group = %self.config.group_id,
                            topic = job.message.topic(),
                            partition = job.message.partition(),
                            offset = job.message.offset(),
                            "fault: crashing after the effect committed, before storing the offset"
                        )
                    });
                    self.stats.crashed = true;
                    return self.abandon().await;
                }
                self.store_offset(&job.message);
            }
        }
        let stats = self.stats;
        self.commit_and_close().await;
        stats
    }

    /// Ends the run without the final commit of a clean stop, for a new consumer to take over: after
    /// a crash (only offsets stored before the crashed record can be committed; see the module
    /// docs), a fatal error or a stall. Closing blocks on the broker, and dropping the producer
    /// waits for its queue: off the runtime. Returns once the client is gone, so the new one never
    /// meets it in the group under the same instance id.
    async fn abandon(self) -> ConsumerStats {
        let stats = self.stats;
        let (consumer, dead_letters) = (self.consumer, self.dead_letters);
        let _ = tokio::task::spawn_blocking(move || drop((consumer, dead_letters))).await;
        stats
    }

    /// Whether the statistics have not shown this consumer a steady member of its group for
    /// [`ConsumerConfig::stall_after`] (see the module docs); logs it if so.
    fn stalled(&self) -> bool {
        let Some(watch) = &self.group_watch else {
            return false;
        };
        let Some((unsteady, state, join_state)) = watch.unsteady_beyond(self.config.stall_after) else {
            return false;
        };
        tracing::error!(
            group = %self.config.group_id,
            unsteady_seconds = unsteady.as_secs(),
            state,
            join_state,
            "the kafka consumer has not been a steady member of its group for too long; this consumer \
             ends and a new one takes its place"
        );
        true
    }

    /// `first` and the records already fetched behind it, up to [`ConsumerConfig::max_batch`]:
    /// never waits for more. One at a time while a crash fault may fire (see the module docs).
    fn more_ready(&self, first: OwnedMessage) -> Vec<OwnedMessage> {
        let mut messages = vec![first];
        if self.may_crash() {
            return messages;
        }
        while messages.len() < self.config.max_batch {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => messages.push(message.detach()),
                // An error comes again at the next `recv`, where it is logged.
                Some(Err(_)) | None => break,
            }
        }
        messages
    }

    /// Applies every decoded record of `jobs`: one transaction per partition, up to
    /// [`ConsumerConfig::partitions_at_once`] of them at once, each claiming its records' event ids
    /// in the inbox in one statement, then running each handler in partition order, one commit. The
    /// outcome of each job, or `None` for the jobs left to the one-at-a-time path: those that did
    /// not decode, and all of a partition's if its transaction failed. A partition's transaction
    /// fails as a whole (nothing of it commits); the record whose handler failed then counts that
    /// as its first attempt, and the others start afresh. The handler hears of the commits once,
    /// after every transaction has ended (see `Handler::committed`).
    async fn apply_batch(&mut self, jobs: &mut [Job<H::Event>]) -> Vec<Option<Outcome>> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
        let decoded: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].event.is_some()).collect();
        if decoded.len() < 2 {
            return outcomes;
        }
        // The batch's records by partition, each in the order fetched.
        let mut partitions: Vec<((String, i32), Vec<usize>)> = Vec::new();
        for i in decoded {
            let at = (jobs[i].message.topic().to_owned(), jobs[i].message.partition());
            match partitions.iter_mut().find(|(p, _)| *p == at) {
                Some((_, records)) => records.push(i),
                None => partitions.push((at, vec![i])),
            }
        }
        let applied: Vec<PartitionApplied> = {
            let (this, jobs) = (&*self, &*jobs);
            futures::stream::iter(partitions)
                .map(|(_, records)| this.apply_partition(jobs, records))
                .buffer_unordered(self.config.partitions_at_once)
                .collect()
                .await
        };
        if applied.iter().any(
            |a| matches!(&a.result, Ok(Some(done)) if done.iter().any(|(_, o)| *o == Outcome::Processed)),
        ) {
            self.handler.committed();
        }
        for PartitionApplied { result, failed } in applied {
            match result {
                Ok(Some(done)) => {
                    for (i, outcome) in done {
                        if outcome == Outcome::Duplicate {
                            let job = &jobs[i];
                            job.span.set_attribute(pizza::DUPLICATE, true);
                            job.span.in_scope(|| {
                                tracing::info!(event_id = ?job.event.as_ref().map(Envelope::id), "event already applied; skipping its effect")
                            });
                        }
                        outcomes[i] = Some(outcome);
                    }
                }
                Ok(None) => {
                    if let Some((i, error)) = failed {
                        let job = &mut jobs[i];
                        let span = job.span.clone();
                        let _entered = span.enter();
                        self.after_failed_attempt(job, 1, error);
                    }
                }
                Err(error) => {
                    tracing::warn!(group = %self.config.group_id, %error, "a batch of records failed; handling them one at a time");
                }
            }
        }
        outcomes
    }

    /// Applies the decoded `records` of one partition (indexes into `jobs`) in one transaction; see
    /// [`apply_batch`](Self::apply_batch).
    async fn apply_partition(&self, jobs: &[Job<H::Event>], records: Vec<usize>) -> PartitionApplied {
        let mut failed: Option<(usize, HandlerError)> = None;
        let result = async {
            let mut tx = self.pool.begin().await?;
            let claims: Vec<(Uuid, Origin<'_>)> = records
                .iter()
                .map(|&i| {
                    let job = &jobs[i];
                    let event = job.event.as_ref().expect("decoded");
                    (event.id(), self.origin(&job.message, event))
                })
                .collect();
            let mut fresh = self.inbox.claim_all(&mut tx, &claims).await?;
            let mut applied = Vec::with_capacity(records.len());
            let mut handled = Vec::with_capacity(records.len());
            for &i in &records {
                let job = &jobs[i];
                let event = job.event.as_ref().expect("decoded");
                // The first copy of an event in the batch claims it; a second copy is a duplicate.
                if fresh.remove(&event.id()) {
                    applied.push((i, Outcome::Processed));
                    handled.push(i);
                } else {
                    applied.push((i, Outcome::Duplicate));
                }
            }
            let batch: Vec<Batched<'_, H::Event>> = handled
                .iter()
                .map(|&i| Batched {
                    event: jobs[i].event.as_ref().expect("decoded"),
                    span: &jobs[i].span,
                })
                .collect();
            if !batch.is_empty()
                && let Err(BatchError { index, error }) = self.handler.handle_batch(&mut tx, &batch).await
            {
                failed = Some((handled[index.min(handled.len() - 1)], error));
                return Ok(None);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(applied))
        }
        .await;
        PartitionApplied { result, failed }
    }

    /// Whether a crash fault may fire: then records are handled one per transaction, so the crash
    /// comes exactly after one record's effect (see the module docs).
    fn may_crash(&self) -> bool {
        self.config.crash_before_storing_offset || faults::may_crash_consumer(&self.config.faults)
    }

    /// Whether to crash after the record just applied (see the module docs). The hooks are asked
    /// only when the switch is off, so a plan's crash is not used up by a test's.
    fn crash_now(&self) -> bool {
        self.config.crash_before_storing_offset || faults::crash_before_commit(&self.config.faults)
    }

    /// Opens the span and decodes the record.
    fn start(&self, message: OwnedMessage) -> Job<H::Event> {
        let message_id = peek_id(message.headers());
        let span = tk::process_span(
            &Incoming {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().and_then(|k| std::str::from_utf8(k).ok()),
                message_id: message_id.as_deref(),
                consumer_group: &self.config.group_id,
                body_size: message.payload().map_or(0, <[u8]>::len),
            },
            message.headers(),
            self.config.topology,
        );
        match Envelope::<H::Event>::decode(&message) {
            Ok(event) => {
                span.set_attribute(pizza::ORDER_ID, event.order_id().to_string());
                span.set_attribute(pizza::EVENT_TYPE, event.attributes.event_type.clone());
                Job {
                    message,
                    span,
                    event: Some(event),
                    phase: Phase::Handle { attempt: 1 },
                    pause: Duration::ZERO,
                }
            }
            Err(error) => {
                tk::record_error(&span, error.kind());
                span.in_scope(|| {
                    tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        error = %error,
                        "record is not a valid event; dead-lettering it"
                    )
                });
                let phase = Phase::DeadLetter {
                    error: error.to_string(),
                    error_type: error.kind(),
                    attempts: 0,
                    tries: 0,
                };
                Job {
                    message,
                    span,
                    event: None,
                    phase,
                    pause: Duration::ZERO,
                }
            }
        }
    }

    /// Advances a job by one step.
    async fn step(&mut self, job: &mut Job<H::Event>) -> Step {
        match &mut job.phase {
            Phase::Handle { attempt } => {
                let attempt = *attempt;
                let Some(event) = &job.event else {
                    // `start` only enters Handle with a decoded event.
                    return Step::Done(Outcome::DeadLettered);
                };
                match self.apply(&job.message, event).await {
                    Ok(true) => Step::Done(Outcome::Processed),
                    Ok(false) => {
                        job.span.set_attribute(pizza::DUPLICATE, true);
                        tracing::info!(event_id = %event.id(), "event already applied; skipping its effect");
                        Step::Done(Outcome::Duplicate)
                    }
                    Err(error) => match self.after_failed_attempt(job, attempt, error) {
                        Duration::ZERO => Step::Next,
                        pause => Step::Wait(pause),
                    },
                }
            }
            Phase::DeadLetter {
                error,
                error_type,
                attempts,
                tries,
            } => {
                match self
                    .publish_dead_letter(&job.message, &job.span, error, error_type, *attempts)
                    .await
                {
                    Ok(()) => Step::Done(Outcome::DeadLettered),
                    Err(kafka) if *tries + 1 < self.config.dead_letter_attempts => {
                        *tries += 1;
                        tracing::warn!(error = %kafka, tries = *tries, "dead-letter publish failed; retrying");
                        Step::Wait(self.config.backoff.delay(*tries))
                    }
                    Err(kafka) => {
                        tracing::warn!(
                            error = %kafka,
                            tries = *tries + 1,
                            "dead-letter publish failed; parking the record in the database"
                        );
                        job.phase = Phase::Park {
                            error: std::mem::take(error),
                            error_type,
                            attempts: *attempts,
                            publish_error: kafka.to_string(),
                            tries: 0,
                        };
                        Step::Next
                    }
                }
            }
            Phase::Park {
                error,
                error_type,
                attempts,
                publish_error,
                tries,
            } => {
                let letter = DeadLetter {
                    error,
                    error_type,
                    topic: job.message.topic(),
                    partition: job.message.partition(),
                    offset: job.message.offset(),
                    consumer_group: &self.config.group_id,
                    attempts: *attempts,
                };
                match self
                    .parked
                    .park(&self.pool, &job.message, &letter, publish_error)
                    .await
                {
                    Ok(()) => {
                        self.metrics.parked.add(
                            1,
                            &self.attributes(
                                job.message.topic(),
                                KeyValue::new(semconv::ERROR_TYPE, *error_type),
                            ),
                        );
                        tracing::error!(
                            group = %self.config.group_id,
                            topic = job.message.topic(),
                            partition = job.message.partition(),
                            offset = job.message.offset(),
                            %publish_error,
                            table = %self.parked.table(),
                            "a dead letter could not be published to its dead-letter topic; it is kept in the \
                             database and the partition moves on. Fix the dead-letter topic and publish the record \
                             from there"
                        );
                        Step::Done(Outcome::Parked)
                    }
                    Err(database) => {
                        // Nothing else can move without the database either: keep trying.
                        *tries += 1;
                        tracing::warn!(error = %database, tries = *tries, "parking a dead letter failed; retrying");
                        Step::Wait(self.config.backoff.delay(*tries))
                    }
                }
            }
        }
    }

    /// After attempt `attempt` of a job's handler failed: retry (the pause before the next
    /// attempt) or dead-letter (`Duration::ZERO`, the job moved to its dead-letter phase).
    fn after_failed_attempt(
        &mut self,
        job: &mut Job<H::Event>,
        attempt: u32,
        error: HandlerError,
    ) -> Duration {
        match error {
            HandlerError::Retry(error) if attempt < self.config.max_attempts => {
                self.stats.retries += 1;
                tracing::warn!(attempt, error = %error, "handler failed; retrying");
                job.phase = Phase::Handle { attempt: attempt + 1 };
                job.pause = self.config.backoff.delay(attempt);
                job.pause
            }
            error => {
                let error_type = match error {
                    HandlerError::Retry(_) => "handler_failed",
                    HandlerError::Reject(_) => "handler_rejected",
                };
                tk::record_error(&job.span, error_type);
                tracing::warn!(attempt, error = %error, "handler gave up; dead-lettering the record");
                job.phase = Phase::DeadLetter {
                    error: error.to_string(),
                    error_type,
                    attempts: attempt,
                    tries: 0,
                };
                Duration::ZERO
            }
        }
    }

    /// Where a record came from, for its inbox row.
    fn origin<'a>(&'a self, message: &'a OwnedMessage, event: &'a Envelope<H::Event>) -> Origin<'a> {
        Origin {
            consumer_group: &self.config.group_id,
            event_type: &event.attributes.event_type,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        }
    }

    /// Claims the event in the inbox and runs the handler, in one transaction. `Ok(false)` for a
    /// duplicate.
    async fn apply(&self, message: &OwnedMessage, event: &Envelope<H::Event>) -> Result<bool, HandlerError> {
        let mut tx = self.pool.begin().await?;
        if !self
            .inbox
            .claim(&mut tx, event.id(), self.origin(message, event))
            .await?
        {
            // Nothing was written; dropping the transaction rolls it back.
            return Ok(false);
        }
        self.handler.handle(&mut tx, event).await?;
        tx.commit().await?;
        self.handler.committed();
        Ok(true)
    }

    /// Publishes the record to `<topic>.dlq` and waits for the broker's acknowledgement.
    async fn publish_dead_letter(
        &self,
        message: &OwnedMessage,
        process_span: &Span,
        error: &str,
        error_type: &'static str,
        attempts: u32,
    ) -> Result<(), KafkaError> {
        let topic = dead_letter(message.topic());
        let letter = DeadLetter {
            error,
            error_type,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            consumer_group: &self.config.group_id,
            attempts,
        };
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        let message_id = peek_id(message.headers());
        let span = tk::send_span(
            &Outgoing {
                topic: &topic,
                key,
                message_id: message_id.as_deref(),
                order_id: None,
                event_type: None,
            },
            Some(&process_span.context()),
        );
        let headers = tk::inject(&span, &topic, letter.headers(message.headers()));
        // Like `FutureProducer::send` with no timeout: a full local queue is waited out.
        let answered = async {
            loop {
                match self
                    .dead_letters
                    .send(&topic, message.key(), message.payload(), headers.clone())
                {
                    Ok(answer) => {
                        return match answer.await {
                            Ok(answered) => answered.map_err(|(error, _)| error),
                            Err(_canceled) => Err(KafkaError::Canceled),
                        };
                    }
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        match answered.instrument(span.clone()).await {
            Ok(delivery) => {
                tk::record_sent(&span, delivery.partition, delivery.offset);
                process_span.set_attribute(pizza::DEAD_LETTER_TOPIC, topic.clone());
                self.metrics.dead_lettered.add(
                    1,
                    &self.attributes(message.topic(), KeyValue::new(semconv::ERROR_TYPE, error_type)),
                );
                Ok(())
            }
            Err(error) => {
                tk::record_error(&span, kafka_error_type(&error));
                Err(error)
            }
        }
    }

    /// Counts the outcome and records the processing time.
    fn settle(&mut self, job: &Job<H::Event>, outcome: Outcome, started: Instant) {
        match outcome {
            Outcome::Processed => self.stats.processed += 1,
            Outcome::Duplicate => self.stats.duplicates += 1,
            Outcome::DeadLettered => self.stats.dead_lettered += 1,
            Outcome::Parked => self.stats.parked += 1,
        }
        self.metrics.process_duration.record(
            started.elapsed().as_secs_f64(),
            &self.attributes(
                job.message.topic(),
                KeyValue::new(pizza::OUTCOME, outcome.as_str()),
            ),
        );
    }

    /// The attributes of the consumer's metrics: the topic, the group and `last`.
    fn attributes(&self, topic: &str, last: KeyValue) -> [KeyValue; 3] {
        [
            KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_owned()),
            KeyValue::new(
                semconv::MESSAGING_CONSUMER_GROUP_NAME,
                self.config.group_id.clone(),
            ),
            last,
        ]
    }

    /// Marks the record done for the next commit. A failure means the partition was taken away in a
    /// rebalance; its next owner gets the record again and the inbox absorbs it.
    fn store_offset(&mut self, message: &OwnedMessage) {
        match self
            .consumer
            .store_offset(message.topic(), message.partition(), message.offset())
        {
            Ok(()) => {}
            Err(error) => tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                %error,
                "could not store the offset (partition revoked?); the record will be delivered again"
            ),
        }
    }

    /// Commits the stored offsets of the partitions still assigned, synchronously, then closes the
    /// consumer; a static member leaves its group first (see below). Committing and closing block on
    /// the broker, so they run off the async runtime.
    ///
    /// librdkafka's own stored offsets are committed (not a copy kept here): it forgets a partition's
    /// stored offset when the partition is revoked, so a partition that came back after another member
    /// moved it on is never committed backwards.
    ///
    /// A static member ([`ConsumerConfig::instance_id`]) does not leave its group when it closes: the
    /// broker keeps its partitions until its session expires, waiting for the same instance to come
    /// back. That is what a crash needs, and the wrong thing for a stop: a replica stopped for good
    /// (scaled down, or replaced by a pod of another name) would leave its partitions unread for the
    /// session timeout. So a graceful stop unsubscribes first, which sends the leave, and waits (at
    /// most [`LEAVE_LIMIT`]) until the partitions are revoked.
    async fn commit_and_close(self) {
        let consumer = self.consumer;
        let group = self.config.group_id;
        let committed = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => tracing::warn!(
                    %group,
                    %error,
                    "final offset commit failed; records since the last commit will be redelivered"
                ),
            }
            consumer
        })
        .await;
        let consumer = match committed {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "committing the consumer's offsets panicked");
                return;
            }
        };
        if self.config.instance_id.is_some() {
            leave_group(&consumer).await;
        }
        if let Err(error) = tokio::task::spawn_blocking(move || drop(consumer)).await {
            tracing::warn!(%error, "closing the consumer panicked");
        }
    }
}

/// How long a static member waits for its partitions to be revoked when it leaves its group.
pub const LEAVE_LIMIT: Duration = Duration::from_secs(5);

/// Unsubscribes and serves the consumer's queue until the partitions are revoked, so librdkafka
/// sends the leave before the consumer is closed (closing alone would not, for a static member).
/// Records still arriving are dropped unprocessed: their offsets were not stored, so they come
/// again to the partitions' next owner.
async fn leave_group(consumer: &StreamConsumer<KafkaContext>) {
    consumer.unsubscribe();
    let deadline = Instant::now() + LEAVE_LIMIT;
    loop {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if assigned == 0 || Instant::now() >= deadline {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    // One more turn of the queue, so the leave that follows the revocation goes out.
    let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
}

#[cfg(test)]
mod tests {
    use pizza_contracts::events::DeliveryEvent;

    use super::*;

    struct Nothing;

    impl Handler for Nothing {
        type Event = DeliveryEvent;

        async fn handle(
            &self,
            _tx: &mut Transaction<'static, Postgres>,
            _event: &Envelope<DeliveryEvent>,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_setting_that_would_leave_the_consumer_doing_nothing_is_refused_up_front() {
        // Neither is reached: every refusal comes before the first connection.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:9/none")
            .unwrap();
        let mut kafka = ClientConfig::new();
        kafka.set("bootstrap.servers", "127.0.0.1:9");
        let base = ConsumerConfig::new("g", vec!["t".to_owned()], Topology::Continuous);
        let refusal = |change: fn(&mut ConsumerConfig)| {
            let mut config = base.clone();
            change(&mut config);
            match Consumer::new(pool.clone(), Schema::new("s").unwrap(), &kafka, config, Nothing) {
                Err(ConsumerError::Config(why)) => why,
                Err(other) => panic!("not a setting's refusal: {other}"),
                Ok(_) => "accepted",
            }
        };
        assert_eq!(refusal(|c| c.max_batch = 0), "max_batch must be at least 1");
        assert_eq!(
            refusal(|c| c.partitions_at_once = 0),
            "partitions_at_once must be at least 1"
        );
        assert_eq!(refusal(|c| c.max_attempts = 0), "max_attempts must be at least 1");
        assert_eq!(refusal(|_| {}), "accepted");
    }
}
