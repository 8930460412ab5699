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
//! therefore closed without the final synchronous commit of a clean stop. Closing leaves the group
//! at once (a dead process would have been noticed only after the session timeout, which is slower
//! but otherwise the same) and commits only offsets stored before the crash, never the crashed
//! record's. Whoever consumes the partition next, such as a new [`Consumer`] the service starts in
//! the same group (`pizza_servicekit::background::run` does), starts at the crashed record, and
//! the inbox turns that delivery into a duplicate.
//!
//! Records are handled one at a time. Simple and in order; a service that needs more throughput runs
//! more replicas in the group, up to the partition count, and every replica gets its own partitions.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

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
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::cloudevents::{Envelope, peek_id};
use crate::dead_letter::DeadLetter;
use crate::faults::{self, SharedFaultHooks};
use crate::inbox::{Inbox, Origin};
use crate::kafka::{KafkaContext, consumer_config, dead_letter_producer_config};
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
    /// A consumer needs at least one topic and at least one attempt.
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
    /// Handler attempts that failed and were retried.
    pub retries: u64,
    /// Whether the consumer stopped through the crash fault: the last record's effect committed but
    /// its offset was not stored, so it will be delivered again.
    pub crashed: bool,
}

/// How one record ended (`pizza.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum Outcome {
    #[strum(serialize = "ok")]
    Processed,
    Duplicate,
    DeadLettered,
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
}

/// Consumes CloudEvents with a [`Handler`]. See the module docs.
pub struct Consumer<H: Handler> {
    pool: PgPool,
    inbox: Inbox,
    consumer: StreamConsumer<KafkaContext>,
    dead_letters: FutureProducer<KafkaContext>,
    config: ConsumerConfig,
    handler: H,
    metrics: ConsumerMetrics,
    stats: ConsumerStats,
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
        let metrics = ConsumerMetrics::new();
        let consumer: StreamConsumer<KafkaContext> = consumer_config(kafka, &config.group_id)
            .create_with_context(KafkaContext {
                role: "consumer",
                group: Some(config.group_id.clone()),
                lag: Some(metrics.lag.clone()),
            })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = dead_letter_producer_config(kafka).create_with_context(KafkaContext {
            role: "dead-letter",
            group: None,
            lag: None,
        })?;
        Ok(Self {
            pool,
            inbox: Inbox::new(schema),
            consumer,
            dead_letters,
            config,
            handler,
            metrics,
            stats: ConsumerStats::default(),
        })
    }

    /// Consumes until `shutdown` completes. The record in hand when it does is finished unless it is
    /// waiting out a backoff, in which case it is left for redelivery; then the stored offsets are
    /// committed synchronously and the consumer leaves its group.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> ConsumerStats {
        let mut shutdown = pin!(shutdown);
        'records: loop {
            let received = tokio::select! {
                biased;
                () = &mut shutdown => break,
                received = self.consumer.recv() => received.map(|m| m.detach()),
            };
            let message = match received {
                Ok(message) => message,
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
            let mut job = self.start(message);
            let outcome = loop {
                let span = job.span.clone();
                match self.step(&mut job).instrument(span).await {
                    Step::Next => {}
                    Step::Done(outcome) => break outcome,
                    Step::Wait(pause) => tokio::select! {
                        biased;
                        () = &mut shutdown => break 'records,
                        () = tokio::time::sleep(pause) => {}
                    },
                }
            };
            self.settle(&job, outcome, started);
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
                // A crash commits nothing more: close the client without the final commit (only
                // offsets stored before this record can be committed; see the module docs). Closing
                // blocks on the broker, and dropping the producer waits for its queue: off the runtime.
                let (consumer, dead_letters) = (self.consumer, self.dead_letters);
                let _ = tokio::task::spawn_blocking(move || drop((consumer, dead_letters))).await;
                return self.stats;
            }
            self.store_offset(&job.message);
        }
        let stats = self.stats;
        self.commit_and_close().await;
        stats
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
                    Err(HandlerError::Retry(error)) if attempt < self.config.max_attempts => {
                        self.stats.retries += 1;
                        tracing::warn!(attempt, error = %error, "handler failed; retrying");
                        job.phase = Phase::Handle { attempt: attempt + 1 };
                        Step::Wait(self.config.backoff.delay(attempt))
                    }
                    Err(error) => {
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
                        Step::Next
                    }
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
                    Err(kafka) => {
                        *tries += 1;
                        tracing::warn!(error = %kafka, tries = *tries, "dead-letter publish failed; retrying");
                        Step::Wait(self.config.backoff.delay(*tries))
                    }
                }
            }
        }
    }

    /// Claims the event in the inbox and runs the handler, in one transaction. `Ok(false)` for a
    /// duplicate.
    async fn apply(&self, message: &OwnedMessage, event: &Envelope<H::Event>) -> Result<bool, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let origin = Origin {
            consumer_group: &self.config.group_id,
            event_type: &event.attributes.event_type,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        if !self.inbox.claim(&mut tx, event.id(), origin).await? {
            // Nothing was written; dropping the transaction rolls it back.
            return Ok(false);
        }
        self.handler.handle(&mut tx, event).await?;
        tx.commit().await?;
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
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        match self
            .dead_letters
            .send(record, Timeout::Never)
            .instrument(span.clone())
            .await
        {
            Ok(delivery) => {
                tk::record_sent(&span, delivery.partition, delivery.offset);
                process_span.set_attribute(pizza::DEAD_LETTER_TOPIC, topic.clone());
                self.metrics.dead_lettered.add(
                    1,
                    &[
                        KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, message.topic().to_owned()),
                        KeyValue::new(
                            semconv::MESSAGING_CONSUMER_GROUP_NAME,
                            self.config.group_id.clone(),
                        ),
                        KeyValue::new(semconv::ERROR_TYPE, error_type),
                    ],
                );
                Ok(())
            }
            Err((error, _)) => {
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
        }
        self.metrics.process_duration.record(
            started.elapsed().as_secs_f64(),
            &[
                KeyValue::new(
                    semconv::MESSAGING_DESTINATION_NAME,
                    job.message.topic().to_owned(),
                ),
                KeyValue::new(
                    semconv::MESSAGING_CONSUMER_GROUP_NAME,
                    self.config.group_id.clone(),
                ),
                KeyValue::new(pizza::OUTCOME, outcome.as_str()),
            ],
        );
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
    /// consumer. Both block on the broker, so they run off the async runtime.
    ///
    /// librdkafka's own stored offsets are committed (not a copy kept here): it forgets a partition's
    /// stored offset when the partition is revoked, so a partition that came back after another member
    /// moved it on is never committed backwards.
    async fn commit_and_close(self) {
        let consumer = self.consumer;
        let group = self.config.group_id;
        let closed = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => tracing::warn!(
                    %group,
                    %error,
                    "final offset commit failed; records since the last commit will be redelivered"
                ),
            }
            drop(consumer);
        })
        .await;
        if let Err(error) = closed {
            tracing::warn!(%error, "closing the consumer panicked");
        }
    }
}
