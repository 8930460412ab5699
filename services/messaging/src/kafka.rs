//! Kafka client settings and the client context every client of this crate uses.
//!
//! The settings encode the delivery guarantees, so they are set here rather than left to callers:
//! callers pass a base [`ClientConfig`] with the connection (`bootstrap.servers`, security), and these
//! functions add what makes "sent" mean "stored" and "consumed" mean "processed".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::oneshot;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Gauge;
use pizza_telemetry::attributes::semconv;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{OwnedHeaders, ToBytes};
use rdkafka::producer::future_producer::{Delivery, OwnedDeliveryResult};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::statistics::Statistics;

/// The relay's producer: idempotent with `acks=all`, and no local delivery timeout.
///
/// An infinite `message.timeout.ms` (0) means librdkafka keeps retrying a record through a broker
/// outage instead of failing it. That matters: a failed record makes the relay send the row again,
/// and if the first send had in fact landed, the topic gets a duplicate. Retried inside the
/// idempotent producer, the broker deduplicates by sequence number instead.
pub fn relay_producer_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        // Up to 5 in-flight requests keep order under idempotence; a little lingering batches a
        // relay round into few requests.
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5");
    // A topic created after the producer found it missing (an operator fixing the cause of dead
    // rows, then requeueing them) is seen at the next metadata refresh: 10 s rather than the
    // default 5 min, well within the refusals a requeued row is allowed.
    if config.get("topic.metadata.refresh.interval.ms").is_none() {
        config.set("topic.metadata.refresh.interval.ms", "10000");
    }
    config
}

/// The dead-letter producer: idempotent with `acks=all`, and a bounded timeout so a consumer that
/// cannot reach the dead-letter topic notices, backs off and tries again (or stops on shutdown)
/// instead of hanging on one record.
pub fn dead_letter_producer_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000");
    config
}

/// The at-least-once consumer: offsets are stored by the application after the effect committed
/// (`enable.auto.offset.store=false`), and only stored offsets are committed, in the background
/// (`enable.auto.commit=true`) and synchronously at shutdown. A new group starts at the earliest
/// record, so nothing published before the first start is skipped.
///
/// With an `instance_id` the consumer is a *static* member of its group (`group.instance.id`,
/// KIP-345): the broker keeps its partitions for it across a restart, so a replica that comes back
/// after `kill -9` resumes at once instead of waiting out the dead member's session (45 s, the
/// session timeout is left at librdkafka's default: see `docs/decisions.md`). A static member does
/// not leave its group when it closes; [`Consumer::run`](crate::Consumer::run) makes it leave on a
/// graceful stop, so a replica that is stopped for good hands its partitions over at once too.
pub fn consumer_config(base: &ClientConfig, group_id: &str, instance_id: Option<&str>) -> ClientConfig {
    let mut config = base.clone();
    if let Some(instance_id) = instance_id {
        config.set("group.instance.id", instance_id);
    }
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    // Defaults a caller's base configuration may override.
    let defaults = [
        ("auto.offset.reset", "earliest"),
        // A fetch waits up to 20 ms for records to pile up instead of returning with the first
        // byte: at librdkafka's defaults every produce woke every consumer of the topic with a
        // fetch of its own, and the broker took 0.28 of the shop's two cores at 80 orders/s; 0.13
        // with this, for at most 20 ms more a hop (see `docs/decisions.md`).
        ("fetch.min.bytes", "65536"),
        ("fetch.wait.max.ms", "20"),
        // Statistics feed the consumer-lag gauge and the stall watch.
        ("statistics.interval.ms", "10000"),
    ];
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
}

/// What a consumer's statistics last said of its membership in its group, for the stall watch of
/// [`Consumer::run`](crate::Consumer::run) (see the consumer's module docs, "Stalled membership").
#[derive(Debug)]
pub(crate) struct GroupWatch {
    state: std::sync::Mutex<GroupState>,
}

#[derive(Debug)]
struct GroupState {
    /// When the statistics last showed the consumer a steady member (or when it was created).
    steady_at: std::time::Instant,
    /// The group handler's state and join state in the last statistics (`up` and `steady` when
    /// the member is in the group with its assignment, however many partitions that is).
    state: String,
    join_state: String,
}

impl GroupWatch {
    pub(crate) fn new() -> Self {
        Self {
            state: std::sync::Mutex::new(GroupState {
                steady_at: std::time::Instant::now(),
                state: "init".into(),
                join_state: "init".into(),
            }),
        }
    }

    fn observe(&self, state: &str, join_state: &str) {
        let mut last = self.state.lock().expect("group watch lock");
        if is_steady(state, join_state) {
            last.steady_at = std::time::Instant::now();
        }
        state.clone_into(&mut last.state);
        join_state.clone_into(&mut last.join_state);
    }

    /// How long the consumer has not been a steady member, with its last states, if longer than
    /// `limit`.
    pub(crate) fn unsteady_beyond(
        &self,
        limit: std::time::Duration,
    ) -> Option<(std::time::Duration, String, String)> {
        let last = self.state.lock().expect("group watch lock");
        let unsteady = last.steady_at.elapsed();
        (unsteady > limit).then(|| (unsteady, last.state.clone(), last.join_state.clone()))
    }
}

/// Whether librdkafka's group handler is in the group with its assignment settled.
fn is_steady(state: &str, join_state: &str) -> bool {
    state == "up" && join_state == "steady"
}

/// Routes librdkafka's logs and errors to `tracing`, and its statistics to the consumer-lag gauge
/// and the consumer's group watch.
///
/// librdkafka reports every failed connection while a broker is down; those are WARN, not ERROR,
/// because the client retries by itself and no operator action is needed until the backlog says so.
pub(crate) struct KafkaContext {
    /// `relay`, `consumer` or `dead-letter`: which client logged.
    pub(crate) role: &'static str,
    /// The consumer group, for lag attributes.
    pub(crate) group: Option<String>,
    /// `pizza.consumer.lag`, when this is a consumer.
    pub(crate) lag: Option<Gauge<i64>>,
    /// The membership the statistics report, when this is a consumer.
    pub(crate) group_watch: Option<std::sync::Arc<GroupWatch>>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let role = self.role;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::warn!(target: "librdkafka", role, facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", role, facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", role, facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", role, facility = fac, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", role = self.role, %error, reason, "kafka client error");
    }

    fn stats(&self, statistics: Statistics) {
        if let (Some(watch), Some(cgrp)) = (&self.group_watch, &statistics.cgrp) {
            watch.observe(&cgrp.state, &cgrp.join_state);
        }
        let (Some(lag), Some(group)) = (&self.lag, &self.group) else {
            return;
        };
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal unassigned queue; a negative lag is unknown.
                if *partition < 0 || p.consumer_lag_stored < 0 {
                    continue;
                }
                lag.record(
                    p.consumer_lag_stored,
                    &[
                        KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.clone()),
                        KeyValue::new(semconv::MESSAGING_DESTINATION_PARTITION_ID, partition.to_string()),
                        KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.clone()),
                    ],
                );
            }
        }
    }
}

impl ConsumerContext for KafkaContext {}

/// Each record's answer goes to the channel it was sent with (see [`AnsweringProducer`]).
impl ProducerContext for KafkaContext {
    type DeliveryOpaque = Box<oneshot::Sender<OwnedDeliveryResult>>;

    fn delivery(&self, result: &DeliveryResult<'_>, answer: Self::DeliveryOpaque) {
        let owned = match result {
            Ok(message) => Ok(Delivery {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp(),
            }),
            Err((error, message)) => Err((error.clone(), message.detach())),
        };
        // The sender stopped waiting (its relay or consumer is gone): nobody to tell.
        let _ = answer.send(owned);
    }
}

/// How long the answering thread waits for a delivery report before it looks whether to stop: at
/// most this long to drop an [`AnsweringProducer`] (off the runtime), and the only wake-up of an idle
/// producer.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// A producer whose delivery reports a thread of its own hands back, each to the channel its record
/// was sent with: rdkafka's `FutureProducer`, with one difference that matters at rest.
/// `FutureProducer`'s thread polls with a 100 ms deadline, and rdkafka turns the deadline's
/// remainder into whole milliseconds, so in the last millisecond of every poll it polls without
/// waiting, over and over: about 1% of a core per producer with nothing to send, two producers per
/// service (the relay's and the consumer's dead letters), which was nearly all of an idle service's
/// CPU. Here the thread waits [`ANSWER_WAIT`]; the spin is the same millisecond a second.
pub(crate) struct AnsweringProducer {
    producer: Arc<BaseProducer<KafkaContext>>,
    stop: Arc<AtomicBool>,
    answering: Option<std::thread::JoinHandle<()>>,
}

impl AnsweringProducer {
    /// A producer with `config` and `context`, and its answering thread.
    pub(crate) fn create(config: &ClientConfig, context: KafkaContext) -> KafkaResult<Self> {
        let producer: Arc<BaseProducer<KafkaContext>> = Arc::new(config.create_with_context(context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let answering = {
            let (producer, stop) = (producer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafka answers".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(ANSWER_WAIT);
                    }
                })
                .map_err(|e| KafkaError::ClientCreation(format!("starting the answering thread: {e}")))?
        };
        Ok(Self {
            producer,
            stop,
            answering: Some(answering),
        })
    }

    /// The client, for its fatal error.
    pub(crate) fn client(&self) -> &Client<KafkaContext> {
        self.producer.client()
    }

    /// Hands a record to the producer: its answer arrives on the returned channel (`Canceled` only if
    /// the producer was dropped without answering). Fails at once when librdkafka refuses the
    /// record (its queue is full, say).
    pub(crate) fn send<K, P>(
        &self,
        topic: &str,
        key: Option<&K>,
        payload: Option<&P>,
        headers: OwnedHeaders,
    ) -> Result<oneshot::Receiver<OwnedDeliveryResult>, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (answer, answered) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(answer)).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record)
            .map(|()| answered)
            .map_err(|(error, _)| error)
    }
}

/// Blocks until the answering thread has stopped (up to [`ANSWER_WAIT`]); then the producer itself
/// drops, which purges what it still holds and answers those records as not sent. Drop it off the
/// runtime.
impl Drop for AnsweringProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(answering) = self.answering.take() {
            let _ = answering.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:1");
        c
    }

    fn context() -> KafkaContext {
        KafkaContext {
            role: "relay",
            group: None,
            lag: None,
            group_watch: None,
        }
    }

    /// What the relay's replacement of a stalled producer relies on: a record the producer still
    /// holds when it is dropped is answered, as not sent, not left without an answer.
    #[tokio::test]
    async fn a_record_still_held_when_the_producer_is_dropped_is_answered_as_not_sent() {
        // Nothing listens on port 1: the record stays in the producer's queue.
        let producer = AnsweringProducer::create(&relay_producer_config(&base()), context()).unwrap();
        let answer = producer
            .send::<str, [u8]>("t", Some("k"), Some(b"v".as_slice()), OwnedHeaders::new())
            .unwrap();
        tokio::task::spawn_blocking(move || drop(producer)).await.unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("answered when the producer went")
            .expect("answered, not abandoned");
        let (error, message) = answered.expect_err("not sent");
        assert!(matches!(error, KafkaError::MessageProduction(_)), "{error:?}");
        assert_eq!(message.key(), Some(b"k".as_slice()));
    }

    /// Fetches wait for records to pile up (20 ms at most) unless the caller said otherwise.
    #[test]
    fn a_consumer_fetches_in_batches_unless_its_caller_chose_otherwise() {
        let config = consumer_config(&base(), "g", None);
        assert_eq!(config.get("fetch.min.bytes"), Some("65536"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("20"));
        let mut own = base();
        own.set("fetch.wait.max.ms", "5");
        assert_eq!(
            consumer_config(&own, "g", None).get("fetch.wait.max.ms"),
            Some("5")
        );
    }

    #[test]
    fn the_group_watch_counts_from_the_last_statistics_that_showed_a_steady_member() {
        let limit = std::time::Duration::from_millis(10);
        let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
        let watch = GroupWatch::new();
        pause();
        assert!(
            watch.unsteady_beyond(limit).is_some(),
            "never steady since it was created"
        );
        watch.observe("up", "steady");
        assert!(watch.unsteady_beyond(limit).is_none(), "steady just now");
        // The coordinator is lost: the join state alone does not make it steady.
        watch.observe("wait-coord", "steady");
        pause();
        let (unsteady, state, join_state) = watch.unsteady_beyond(limit).expect("unsteady");
        assert!(unsteady >= std::time::Duration::from_millis(30), "{unsteady:?}");
        assert_eq!((state.as_str(), join_state.as_str()), ("wait-coord", "steady"));
        // In the group but rejoining: not steady either.
        watch.observe("up", "wait-join");
        assert!(watch.unsteady_beyond(limit).is_some());
        watch.observe("up", "steady");
        assert!(watch.unsteady_beyond(limit).is_none());
    }

    #[test]
    fn the_relay_producer_waits_for_every_replica_and_never_gives_up_on_a_record() {
        let c = relay_producer_config(&base());
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("message.timeout.ms"), Some("0"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:1"));
    }

    #[test]
    fn the_consumer_stores_offsets_itself_and_commits_only_stored_ones() {
        let c = consumer_config(&base(), "kitchen", None);
        assert_eq!(c.get("group.id"), Some("kitchen"));
        assert_eq!(
            c.get("group.instance.id"),
            None,
            "a dynamic member unless told otherwise"
        );
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("true"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        let mut latest = base();
        latest.set("auto.offset.reset", "latest");
        assert_eq!(
            consumer_config(&latest, "g", None).get("auto.offset.reset"),
            Some("latest")
        );
    }

    #[test]
    fn an_instance_id_makes_the_consumer_a_static_member() {
        let c = consumer_config(&base(), "kitchen", Some("kitchen-0"));
        assert_eq!(c.get("group.instance.id"), Some("kitchen-0"));
        assert_eq!(
            c.get("session.timeout.ms"),
            None,
            "librdkafka's session timeout is kept (see docs/decisions.md)"
        );
    }

    #[test]
    fn the_dead_letter_producer_is_durable_but_bounded() {
        let c = dead_letter_producer_config(&base());
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("message.timeout.ms"), Some("30000"));
    }
}
