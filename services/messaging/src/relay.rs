//! The outbox relay: publishes committed outbox rows to Kafka, at least once, in order per key.
//!
//! One round: lock a batch of pending rows (`for update skip locked`, so several relays share the
//! work), keep the rows no earlier row of their key is waiting for (see
//! [`publishable`](crate::outbox)), send them all, wait for the broker's acknowledgement of each, mark
//! the acknowledged rows published and the failed ones with their error, commit. The row locks are
//! held until the commit, so no other relay sends the same row meanwhile; if this relay dies, the locks
//! go with its connection and another relay takes the rows.
//!
//! # Through a Kafka outage
//! The producer never times a record out (see [`crate::kafka::relay_producer_config`]): during an
//! outage the round simply waits while librdkafka reconnects and retries, and the broker deduplicates
//! the retries (idempotent producer). New events pile up in the outbox meanwhile, and the relay
//! drains them in order once the round completes. The one price is a transaction left open for the
//! length of the outage.
//!
//! # When a send fails
//! A row the producer refuses at once (its queue full, for example) holds back the later rows of its
//! key for the round, so they never overtake it. A row the *broker* refuses after later rows of its key
//! were already handed over can only be a permanent error (transient ones are retried without limit);
//! the later rows stay published and this one follows them, which breaks order for that key. That is
//! logged as an error: it means a record the broker will never accept, such as one over its size limit.
//!
//! # Injected publish failures
//! A fault plan ([`RelayConfig::faults`], see [`crate::faults`]) can fail a share of publishes before
//! they reach the broker. Such a row takes exactly the path of a send the producer refused at once,
//! because that is the failure it stands for and the path whose guarantees we want exercised: the
//! row stays pending with its error and is sent again in a later round, the later rows of its key
//! wait for it (order per key kept), and the round counts as failed, so the relay backs off while
//! failures repeat, as it would against a struggling broker. Nothing reached Kafka, so nothing is
//! duplicated. The failure is counted in `pizza.outbox.publish.failures` and in
//! [`RelayStats::injected`] with `error.type = injected`, and the row's `send` span ends with that
//! error type, so a workshop tells an injected failure from a real one at a glance.
//!
//! # Duplicates
//! A row is sent again only if its round did not commit: the relay stopped (or was killed) after
//! sending and before marking, or its database connection broke. Consumers absorb those with their
//! inbox. The relay never resends a row because a send seemed slow.
//!
//! # Telemetry
//! Each record gets a `send {topic}` PRODUCER span whose parent is the context stored with the row, so
//! the publish joins the trace of the request that wrote the event, even minutes later. The span's
//! own context goes into the record headers for the consumer. It ends when the broker answers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::future::join_all;
use opentelemetry::KeyValue;
use pizza_telemetry::attributes::{pizza, semconv};
use pizza_telemetry::kafka::{self as tk, Outgoing};
use pizza_telemetry::propagation;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use sqlx::{AssertSqlSafe, PgPool};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::faults::{self, SharedFaultHooks};
use crate::kafka::{KafkaContext, relay_producer_config};
use crate::metrics::RelayMetrics;
use crate::outbox::{Outbox, PendingRow, publishable};
use pizza_retry::Backoff;

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows locked and sent per round.
    pub batch_size: u32,
    /// Pause when there is nothing (more) to publish. The latency floor of an idle outbox.
    pub poll_interval: Duration,
    /// Pause after a failed round, growing while failures repeat.
    pub backoff: Backoff,
    /// How long a round in progress may finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// How often the backlog gauge is refreshed and old published rows are purged.
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
            poll_interval: Duration::from_millis(200),
            backoff: Backoff::default(),
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

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Pending rows this relay locked.
    pub locked: usize,
    /// Rows the broker acknowledged, now marked published.
    pub published: usize,
    /// Rows whose send failed (injected failures included); they stay pending with their error.
    pub failed: usize,
    /// Of `failed`, the sends the fault plan failed.
    pub injected: usize,
    /// Rows left for later because an earlier row of their key was not in the batch.
    pub waiting: usize,
}

/// Totals over a relay's life, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Rounds run.
    pub rounds: u64,
    /// Rows published.
    pub published: u64,
    /// Failed sends and failed rounds (injected failures included).
    pub failures: u64,
    /// Of `failures`, the sends the fault plan failed (`error.type = injected`).
    pub injected: u64,
}

/// Publishes one schema's outbox. See the module docs.
pub struct Relay {
    pool: PgPool,
    outbox: Outbox,
    producer_config: ClientConfig,
    producer: FutureProducer<KafkaContext>,
    config: RelayConfig,
    metrics: RelayMetrics,
    /// Topics that had a backlog, so the gauge can drop back to zero for them.
    backlog_topics: BTreeSet<String>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("schema", self.outbox.schema())
            .field("config", &self.config)
            .finish()
    }
}

fn create_producer(config: &ClientConfig) -> Result<FutureProducer<KafkaContext>, KafkaError> {
    config.create_with_context(KafkaContext {
        role: "relay",
        group: None,
        lag: None,
    })
}

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
        Ok(Self {
            pool,
            outbox,
            producer_config,
            producer,
            config,
            metrics: RelayMetrics::new(),
            backlog_topics: BTreeSet::new(),
        })
    }

    /// Publishes until `shutdown` completes, then lets the round in progress finish (within
    /// [`RelayConfig::shutdown_grace`]) and returns. Failures are logged, counted and retried with
    /// backoff; the relay never gives up on its own.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> RelayStats {
        let mut shutdown = pin!(shutdown);
        let mut stats = RelayStats::default();
        let mut consecutive_failures = 0u32;
        let mut next_housekeeping = Instant::now();
        loop {
            if Instant::now() >= next_housekeeping {
                self.housekeeping().await;
                next_housekeeping = Instant::now() + self.config.housekeeping_interval;
            }
            let mut stopping = false;
            let grace = self.config.shutdown_grace;
            let outcome = {
                let mut round = pin!(self.publish_batch());
                tokio::select! {
                    biased;
                    result = &mut round => Some(result),
                    () = &mut shutdown => {
                        stopping = true;
                        tokio::time::timeout(grace, &mut round).await.ok()
                    }
                }
            };
            stats.rounds += 1;
            let pause = match outcome {
                None => {
                    tracing::warn!(
                        schema = %self.outbox.schema(),
                        "relay stopped with a round in flight; its rows stay pending and will be sent again"
                    );
                    break;
                }
                Some(Ok(round)) => {
                    stats.published += round.published as u64;
                    stats.failures += round.failed as u64;
                    stats.injected += round.injected as u64;
                    // Back off only when a round made no progress at all: with a partial failure
                    // (a flaky broker, an injected failure rate) the rows that did go out show the
                    // broker is there, and backing off to the maximum would cap the relay's
                    // throughput at one batch per maximum pause while events pile up.
                    if round.failed > 0 && round.published == 0 {
                        consecutive_failures += 1;
                        self.config.backoff.delay(consecutive_failures)
                    } else if round.failed > 0 {
                        consecutive_failures = 0;
                        self.config.poll_interval
                    } else {
                        consecutive_failures = 0;
                        if round.locked >= self.config.batch_size as usize && round.published > 0 {
                            Duration::ZERO
                        } else {
                            self.config.poll_interval
                        }
                    }
                }
                Some(Err(error)) => {
                    stats.failures += 1;
                    consecutive_failures += 1;
                    self.metrics
                        .publish_failures
                        .add(1, &[KeyValue::new(semconv::ERROR_TYPE, "database")]);
                    tracing::warn!(schema = %self.outbox.schema(), %error, "outbox relay round failed; retrying");
                    self.config.backoff.delay(consecutive_failures)
                }
            };
            if stopping {
                break;
            }
            self.replace_producer_if_fatal();
            if !pause.is_zero() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        // Dropping a producer purges its queue and waits up to 500 ms: keep that off the runtime.
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
        stats
    }

    /// One round (see the module docs). Public so a service or a test can drive the relay by hand.
    pub async fn publish_batch(&mut self) -> Result<Round, RelayError> {
        let sql = self.outbox.sql();
        let mut tx = self.pool.begin().await?;
        let rows: Vec<PendingRow> = sqlx::query_as(AssertSqlSafe(sql.lock_pending.clone()))
            .bind(i64::from(self.config.batch_size))
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Round::default());
        }

        let keys: Vec<&str> = rows.iter().map(|r| r.message_key.as_str()).collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let blockers: HashMap<(String, String), i64> =
            sqlx::query_as::<_, (String, String, i64)>(AssertSqlSafe(sql.blockers.clone()))
                .bind(&keys)
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(topic, key, id)| ((topic, key), id))
                .collect();
        let batch: Vec<(i64, &str, &str)> = rows
            .iter()
            .map(|r| (r.id, r.topic.as_str(), r.message_key.as_str()))
            .collect();
        let go: BTreeSet<i64> = publishable(&batch, &blockers).into_iter().collect();

        // Enqueue everything first, in id order: librdkafka keeps that order per partition, and the
        // round waits for one round trip instead of one per row.
        let mut in_flight = Vec::new();
        let mut failed: Vec<(i64, String)> = Vec::new();
        let mut injected = 0usize;
        // A key whose row could not be handed to the producer this round: its later rows wait for
        // the next round, so they never overtake it.
        let mut held: HashSet<(&str, &str)> = HashSet::new();
        for row in rows.iter().filter(|r| go.contains(&r.id)) {
            let key = (row.topic.as_str(), row.message_key.as_str());
            if held.contains(&key) {
                continue;
            }
            let Some(attributes) = row.attributes() else {
                // Only a hand-written row can get here; it can never be published, so say so loudly.
                tracing::error!(
                    outbox_id = row.id,
                    "outbox row has a key that is not an order id; skipping it"
                );
                failed.push((row.id, "message_key is not an order id".to_owned()));
                held.insert(key);
                continue;
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
                // Exactly what a refused send does below: nothing reached the producer.
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
                failed.push((row.id, "injected publish failure (fault plan)".to_owned()));
                injected += 1;
                held.insert(key);
                continue;
            }
            let headers = tk::inject(&span, &row.topic, attributes.to_headers());
            let record = FutureRecord::to(&row.topic)
                .key(row.message_key.as_str())
                .payload(row.payload.as_slice())
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => in_flight.push((row, span, delivery)),
                Err((error, _)) => {
                    tk::record_error(&span, kafka_error_type(&error));
                    self.count_failure(&row.topic, &error);
                    failed.push((row.id, error.to_string()));
                    held.insert(key);
                }
            }
        }

        let acks = join_all(in_flight.into_iter().map(|(row, span, delivery)| async move {
            let result = delivery.await;
            (row, span, result)
        }))
        .await;
        let mut published = Vec::with_capacity(acks.len());
        for (row, span, result) in acks {
            match result {
                Ok(Ok(delivery)) => {
                    tk::record_sent(&span, delivery.partition, delivery.offset);
                    published.push(row.id);
                }
                Ok(Err((error, _))) => {
                    // Later rows of this key were already handed to the producer and may be in the
                    // topic: they stay published (re-sending them would duplicate), and this row
                    // follows them next round. Only a permanent broker error gets here (the producer
                    // retries transient ones without limit), so it is logged as one.
                    tk::record_error(&span, kafka_error_type(&error));
                    self.count_failure(&row.topic, &error);
                    tracing::error!(
                        outbox_id = row.id,
                        topic = %row.topic,
                        %error,
                        "publish failed permanently; the row stays pending and later events of its key may overtake it"
                    );
                    failed.push((row.id, error.to_string()));
                }
                Err(_canceled) => {
                    tk::record_error(&span, "canceled");
                    failed.push((row.id, "delivery report lost: producer shut down".to_owned()));
                }
            }
        }

        if !published.is_empty() {
            sqlx::query(AssertSqlSafe(sql.mark_published.clone()))
                .bind(&published)
                .execute(&mut *tx)
                .await?;
        }
        if !failed.is_empty() {
            let (ids, errors): (Vec<i64>, Vec<String>) = failed.iter().cloned().unzip();
            sqlx::query(AssertSqlSafe(sql.mark_failed.clone()))
                .bind(&ids)
                .bind(&errors)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Round {
            locked: rows.len(),
            published: published.len(),
            failed: failed.len(),
            injected,
            waiting: rows.len() - go.len(),
        })
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
        match create_producer(&self.producer_config) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.producer, fresh);
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => tracing::error!(%error, "could not create a new producer; retrying next round"),
        }
    }

    /// Refreshes the backlog gauge and purges old published rows. Failures only log: this is
    /// bookkeeping, and the next tick tries again.
    async fn housekeeping(&mut self) {
        match self.outbox.backlog(&self.pool).await {
            Ok(backlog) => {
                let mut now_seen = BTreeSet::new();
                for (topic, count) in backlog {
                    self.metrics.backlog.record(
                        u64::try_from(count).unwrap_or(0),
                        &[KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.clone())],
                    );
                    now_seen.insert(topic);
                }
                for drained in self.backlog_topics.difference(&now_seen) {
                    self.metrics.backlog.record(
                        0,
                        &[KeyValue::new(
                            semconv::MESSAGING_DESTINATION_NAME,
                            drained.clone(),
                        )],
                    );
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

/// The `error.type` of a publish the fault plan failed.
pub const INJECTED: &str = "injected";

/// A low-cardinality `error.type` for a Kafka error: librdkafka's error code name.
pub(crate) fn kafka_error_type(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(code) => rdkafka_code_name(code),
        None => "kafka",
    }
}

fn rdkafka_code_name(code: rdkafka::types::RDKafkaErrorCode) -> &'static str {
    use rdkafka::types::RDKafkaErrorCode as C;
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
