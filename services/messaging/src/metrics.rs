//! The crate's instruments, made once per relay or consumer from the global meter provider.
//!
//! Names come from `pizza_telemetry::metrics` and attribute keys from `pizza_telemetry::attributes`.
//! Attribute values are topics, partitions, groups, outcomes and error kinds: never an order id (too
//! many values) and never customer data.

use opentelemetry::global;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use pizza_telemetry::metrics as names;

/// The meter's name.
pub const METER: &str = "pizza-messaging";

/// Relay instruments.
#[derive(Debug, Clone)]
pub(crate) struct RelayMetrics {
    /// `pizza.outbox.backlog`, per topic.
    pub(crate) backlog: Gauge<u64>,
    /// `pizza.outbox.dead`, per topic.
    pub(crate) dead: Gauge<u64>,
    /// `pizza.outbox.publish.failures`, per topic and error type.
    pub(crate) publish_failures: Counter<u64>,
}

impl RelayMetrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter(METER);
        Self {
            backlog: meter
                .u64_gauge(names::OUTBOX_BACKLOG)
                .with_description("Outbox rows not yet published (dead rows apart)")
                .with_unit("{event}")
                .build(),
            dead: meter
                .u64_gauge(names::OUTBOX_DEAD)
                .with_description("Outbox rows the relay gave up on, waiting for an operator")
                .with_unit("{event}")
                .build(),
            publish_failures: meter
                .u64_counter(names::OUTBOX_PUBLISH_FAILURES)
                .with_description("Failed publish attempts of the outbox relay")
                .with_unit("{attempt}")
                .build(),
        }
    }
}

/// Consumer instruments.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMetrics {
    /// `messaging.process.duration`, per topic, group and outcome.
    pub(crate) process_duration: Histogram<f64>,
    /// `pizza.consumer.dead_lettered`, per topic, group and error type.
    pub(crate) dead_lettered: Counter<u64>,
    /// `pizza.consumer.parked`, per topic, group and error type.
    pub(crate) parked: Counter<u64>,
    /// `pizza.consumer.lag`, per topic, partition and group (fed by librdkafka statistics).
    pub(crate) lag: Gauge<i64>,
}

impl ConsumerMetrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter(METER);
        Self {
            process_duration: meter
                .f64_histogram(names::MESSAGING_PROCESS_DURATION)
                .with_description("Time to process one message, retries and dead-lettering included")
                .with_unit("s")
                .build(),
            dead_lettered: meter
                .u64_counter(names::DEAD_LETTERED)
                .with_description("Messages sent to a dead-letter topic")
                .with_unit("{message}")
                .build(),
            parked: meter
                .u64_counter(names::PARKED_DEAD_LETTERS)
                .with_description("Dead letters their dead-letter topic would not take, kept in the database")
                .with_unit("{message}")
                .build(),
            lag: meter
                .i64_gauge(names::CONSUMER_LAG)
                .with_description("Records behind the high watermark, from the stored offset")
                .with_unit("{message}")
                .build(),
        }
    }
}
