//! Reading what a service published: records of a topic read back to its end, decoded enough for a
//! test to say which events went out, in which order, with which trace context; and polling with a
//! bounded deadline until something has happened.
//!
//! Tests never assert on timing: they poll until a condition holds and fail, naming what never
//! happened, once a generous limit has passed. A test that waits on a fixed sleep is either slow or
//! flaky; one that polls is neither.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

/// The CloudEvents `type` attribute in the Kafka binary binding (`pizza_messaging::cloudevents`
/// names the same header; this crate cannot depend on messaging, whose tests depend on it).
pub const CE_TYPE: &str = "ce_type";

/// Polls `check` every 100 ms until it yields a value, or fails after `limit` saying `what` never
/// happened. An error from `check` ends the wait at once.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of `topic` on `bootstrap`, read from the beginning of each partition to the high
/// watermark it had when reading started, in partition order; fails if that end is not reached
/// within `limit`.
///
/// The reader assigns itself the partitions (no group rebalance to wait for) under a group id of its
/// own, and never commits, so reading changes nothing for the services under test.
pub async fn read_topic(bootstrap: &str, topic: &str, limit: Duration) -> anyhow::Result<Vec<OwnedMessage>> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<OwnedMessage>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        ensure!(partitions > 0, "topic {topic} has no partitions");
        let mut ends = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
            if high > low {
                ends.insert(p, high);
                assignment.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
        }
        let mut records = Vec::new();
        if ends.is_empty() {
            return Ok(records);
        }
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + limit;
        let mut done: HashSet<i32> = HashSet::new();
        while done.len() < ends.len() {
            ensure!(
                Instant::now() < deadline,
                "reading {topic} did not reach its end within {limit:?}"
            );
            if let Some(result) = consumer.poll(Duration::from_millis(200)) {
                let message = result?.detach();
                if message.offset() + 1 >= ends[&message.partition()] {
                    done.insert(message.partition());
                }
                records.push(message);
            }
        }
        Ok(records)
    })
    .await?
}

/// Reads `topic` with [`read_topic`] until it holds at least `count` records, or fails after `limit`.
pub async fn read_until_count(
    bootstrap: &str,
    topic: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<OwnedMessage>> {
    eventually(limit, &format!("{count} records on {topic}"), || async {
        let records = read_topic(bootstrap, topic, limit).await?;
        Ok((records.len() >= count).then_some(records))
    })
    .await
}

/// The last value of header `name`, if it is UTF-8 (Kafka allows repeated headers; the last wins,
/// as in the consumers under test).
pub fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// One event read back from a topic, decoded as far as tests look.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The CloudEvents type (`ce_type`), empty if missing.
    pub event_type: String,
    /// The payload as JSON, `null` if it is not JSON.
    pub body: Value,
    /// The W3C `traceparent` header, if the record carried one.
    pub traceparent: Option<String>,
}

impl Seen {
    /// Decodes one record.
    pub fn decode(message: &OwnedMessage) -> Self {
        Self {
            event_type: header(message, CE_TYPE).unwrap_or_default().to_owned(),
            body: serde_json::from_slice(message.payload().unwrap_or_default()).unwrap_or(Value::Null),
            traceparent: header(message, "traceparent").map(str::to_owned),
        }
    }
}

/// The events of `topic` keyed by `key` (services key records by order id), in partition order.
pub async fn events(bootstrap: &str, topic: &str, key: &str, limit: Duration) -> anyhow::Result<Vec<Seen>> {
    let records = read_topic(bootstrap, topic, limit).await?;
    Ok(records
        .iter()
        .filter(|m| m.key() == Some(key.as_bytes()))
        .map(Seen::decode)
        .collect())
}

/// Waits until the events of `topic` keyed by `key` include one of type `last`, and returns them all.
pub async fn events_until(
    bootstrap: &str,
    topic: &str,
    key: &str,
    last: &str,
    limit: Duration,
) -> anyhow::Result<Vec<Seen>> {
    eventually(limit, &format!("{last} on {topic}"), || async {
        let seen = events(bootstrap, topic, key, limit).await?;
        Ok(seen.iter().any(|s| s.event_type == last).then_some(seen))
    })
    .await
}

/// The event types of `seen`, in order: what most assertions compare.
pub fn types_of(seen: &[Seen]) -> Vec<&str> {
    seen.iter().map(|s| s.event_type.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    fn message(headers: OwnedHeaders, payload: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"k".to_vec()),
            "t".to_owned(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        )
    }

    #[test]
    fn a_record_decodes_to_its_type_json_body_and_last_traceparent() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: CE_TYPE,
                value: Some("order-ready"),
            })
            .insert(Header {
                key: "traceparent",
                value: Some("first"),
            })
            .insert(Header {
                key: "traceparent",
                value: Some("second"),
            });
        let seen = Seen::decode(&message(headers, br#"{"a":1}"#));
        assert_eq!(seen.event_type, "order-ready");
        assert_eq!(seen.body, serde_json::json!({"a": 1}));
        assert_eq!(seen.traceparent.as_deref(), Some("second"));
        assert_eq!(types_of(&[seen]), ["order-ready"]);
    }

    #[test]
    fn a_record_without_headers_or_json_decodes_to_empty_values() {
        let seen = Seen::decode(&message(OwnedHeaders::new(), b"not json"));
        assert_eq!(seen.event_type, "");
        assert_eq!(seen.body, Value::Null);
        assert_eq!(seen.traceparent, None);
    }

    #[tokio::test]
    async fn eventually_returns_the_first_value_and_names_what_never_happened() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(5), "three calls", || {
            calls += 1;
            let n = calls;
            async move { Ok((n >= 3).then_some(n)) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let error = eventually(Duration::from_millis(10), "the impossible", || async {
            Ok(None::<()>)
        })
        .await
        .unwrap_err();
        assert!(error.to_string().starts_with("the impossible: not within"));
    }
}
