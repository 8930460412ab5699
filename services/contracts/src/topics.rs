//! Kafka topic names.
//!
//! The native stack creates each of these (and its dead-letter topic) at start, from
//! `deploy/local/kafka/topics.txt`: the broker's auto-creation is off, so a typo fails loudly instead of
//! quietly creating a new topic. A test in this module keeps the two lists in step.

/// What the order service tells the world: `order-placed`, `order-cancelled`.
pub const ORDERS_EVENTS: &str = "orders.events";
/// What the kitchen reports: `order-in-preparation`, `order-ready`, `kitchen-issue`.
pub const KITCHEN_EVENTS: &str = "kitchen.events";
/// Commands to the delivery service: `delivery-requested`.
pub const DELIVERY_REQUESTS: &str = "delivery.requests";
/// What the delivery service reports: `order-out-for-delivery`, `order-on-its-way`,
/// `order-completed`, `delivery-issue`.
pub const DELIVERY_EVENTS: &str = "delivery.events";

/// Every business topic.
pub const ALL: &[&str] = &[ORDERS_EVENTS, KITCHEN_EVENTS, DELIVERY_REQUESTS, DELIVERY_EVENTS];

/// What a dead-letter topic adds to the name of the topic it serves.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// The dead-letter topic of `topic`: where a consumer parks a message it cannot process
/// (`orders.events` → `orders.events.dlq`).
pub fn dead_letter(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// Is `topic` a dead-letter topic? Consumers of a dead-letter topic must not dead-letter again.
pub fn is_dead_letter(topic: &str) -> bool {
    topic.ends_with(DEAD_LETTER_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_letter_topic_is_the_topic_with_a_dlq_suffix() {
        assert_eq!(dead_letter(KITCHEN_EVENTS), "kitchen.events.dlq");
        assert!(is_dead_letter(&dead_letter(ORDERS_EVENTS)));
        assert!(!is_dead_letter(ORDERS_EVENTS));
    }

    #[test]
    fn the_native_stack_creates_every_topic_and_its_dead_letter_topic() {
        let listed = include_str!("../../../deploy/local/kafka/topics.txt");
        let created: Vec<&str> = listed
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for topic in ALL {
            assert!(created.contains(topic), "{topic} missing from topics.txt");
            assert!(
                created.contains(&dead_letter(topic).as_str()),
                "{topic}.dlq missing from topics.txt"
            );
        }
    }
}
