//! Client configurations for the test broker.
//!
//! Tests that consume read exactly what they produced: they note the partition and offset the broker
//! acknowledged and assign themselves there, instead of joining a group and racing a rebalance.

use rdkafka::ClientConfig;

use crate::Stack;

/// A producer that waits for the broker's acknowledgement of every record (`acks=all`, idempotent):
/// the only setting under which "sent" means "stored".
pub fn producer_config(stack: &Stack) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000");
    config
}

/// A consumer that never commits on its own: tests decide what was processed.
pub fn consumer_config(stack: &Stack, group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    config
}
