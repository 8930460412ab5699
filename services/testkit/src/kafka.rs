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

/// A topic name no other test (or earlier run) uses: `{prefix}.{uuid}`. Tests create their own
/// topics so they can run in parallel on the shared broker and read back only their own records.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be created or the request failed.
    #[error("kafka admin request failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker refused the topic.
    #[error("creating topic {topic}: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: rdkafka::types::RDKafkaErrorCode,
    },
    /// The topic's partitions had no leader in time.
    #[error("topic {0} has no leader for every partition after 30 s")]
    NotReady(String),
}

/// Creates `topics` (`(name, partitions)`, replication factor 1) on the broker at `bootstrap`, and
/// waits until metadata shows a leader for every partition, so a producer or consumer started next
/// finds them. The shared broker has auto-creation off: a test's topics exist only if it makes them.
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> Result<(), TopicError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await? {
        if let Err((topic, code)) = result
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            return Err(TopicError::Refused { topic, code });
        }
    }
    let wanted: Vec<(String, usize)> = topics
        .iter()
        .map(|(n, p)| ((*n).to_owned(), *p as usize))
        .collect();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for (name, partitions) in wanted {
            loop {
                let ready = admin
                    .inner()
                    .fetch_metadata(Some(&name), std::time::Duration::from_secs(5))
                    .ok()
                    .and_then(|m| {
                        m.topics().iter().find(|t| t.name() == name).map(|t| {
                            t.error().is_none()
                                && t.partitions().len() == partitions
                                && t.partitions()
                                    .iter()
                                    .all(|p| p.leader() >= 0 && p.error().is_none())
                        })
                    })
                    .unwrap_or(false);
                if ready {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(TopicError::NotReady(name));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| TopicError::NotReady("(metadata task panicked)".to_owned()))?
}
