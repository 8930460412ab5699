//! Dead letters: records a consumer cannot process, parked on `<topic>.dlq` so the partition moves on.
//!
//! A dead letter is the original record (same key, same body, same `ce_*` headers) plus headers that
//! say why and from where. Its trace headers are those of the consumer's `send {topic}.dlq` span, a
//! child of the `process` span that gave up, so the trace shows where the message went. An operator
//! can fix the cause and publish the record back to its topic; the inbox makes that safe even if the
//! first attempt had half-succeeded.
//!
//! If the dead-letter topic will not take the record either (it does not exist, the broker refuses
//! the record), the consumer keeps it in the service's database instead ([`Parking`]), so one
//! unpublishable dead letter never stops its partition.
//!
//! The error text comes from [`DecodeError`](crate::DecodeError) (which never quotes the body) or
//! from the handler's error: handlers must not put customer data in their errors.

use pizza_telemetry::propagation::headers as w3c;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::schema::Schema;

/// Header names added to a dead letter.
pub mod headers {
    /// The error, as text (at most [`super::MAX_ERROR_LEN`] bytes).
    pub const ERROR: &str = "dlq_error";
    /// A low-cardinality error kind (`missing_header`, `invalid_body`, `handler_failed`, ...).
    pub const ERROR_TYPE: &str = "dlq_error_type";
    /// The topic the record came from.
    pub const ORIGIN_TOPIC: &str = "dlq_origin_topic";
    /// Its partition.
    pub const ORIGIN_PARTITION: &str = "dlq_origin_partition";
    /// Its offset.
    pub const ORIGIN_OFFSET: &str = "dlq_origin_offset";
    /// The consumer group that gave up.
    pub const CONSUMER_GROUP: &str = "dlq_consumer_group";
    /// How many times the handler ran (0 when the record did not decode).
    pub const ATTEMPTS: &str = "dlq_attempts";
    /// When it was dead-lettered (RFC 3339).
    pub const TIME: &str = "dlq_time";
}

/// Longest error text kept in a header.
pub const MAX_ERROR_LEN: usize = 1024;

/// Why and from where a record is dead-lettered.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The error, as text.
    pub error: &'a str,
    /// Its low-cardinality kind.
    pub error_type: &'a str,
    /// Origin topic.
    pub topic: &'a str,
    /// Origin partition.
    pub partition: i32,
    /// Origin offset.
    pub offset: i64,
    /// The consumer group.
    pub consumer_group: &'a str,
    /// Handler attempts made.
    pub attempts: u32,
}

impl DeadLetter<'_> {
    /// The dead letter's headers: the original ones minus trace context and earlier `dlq_*` headers,
    /// plus this dead letter's. Trace context is added afterwards by the send span.
    pub fn headers<H: Headers>(&self, original: Option<&H>) -> OwnedHeaders {
        let dropped = |key: &str| {
            key.starts_with("dlq_")
                || key.eq_ignore_ascii_case(w3c::TRACEPARENT)
                || key.eq_ignore_ascii_case(w3c::TRACESTATE)
                || key.eq_ignore_ascii_case(w3c::BAGGAGE)
        };
        let mut out = OwnedHeaders::new();
        if let Some(original) = original {
            for h in original.iter().filter(|h| !dropped(h.key)) {
                out = out.insert(h);
            }
        }
        let partition = self.partition.to_string();
        let offset = self.offset.to_string();
        let attempts = self.attempts.to_string();
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        let error = truncate(self.error, MAX_ERROR_LEN);
        for (key, value) in [
            (headers::ERROR, error),
            (headers::ERROR_TYPE, self.error_type),
            (headers::ORIGIN_TOPIC, self.topic),
            (headers::ORIGIN_PARTITION, partition.as_str()),
            (headers::ORIGIN_OFFSET, offset.as_str()),
            (headers::CONSUMER_GROUP, self.consumer_group),
            (headers::ATTEMPTS, attempts.as_str()),
            (headers::TIME, now.as_str()),
        ] {
            out = out.insert(Header {
                key,
                value: Some(value),
            });
        }
        out
    }
}

/// Where a consumer keeps the dead letters their dead-letter topic would not take:
/// `<schema>.parked_dead_letters` (see [`crate::consumer`]). One row per record and consumer group; a
/// record parked twice (redelivered after a crash) stays one row.
#[derive(Debug, Clone)]
pub struct Parking {
    table: String,
    insert: String,
}

impl Parking {
    /// The parking table of `schema` (created by [`crate::migrate`]).
    pub fn new(schema: &Schema) -> Self {
        let table = schema.table("parked_dead_letters");
        let insert = format!(
            "insert into {table} (consumer_group, topic, kafka_partition, kafka_offset, message_key, payload, headers, \
             error, error_type, attempts, publish_error) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             on conflict (consumer_group, topic, kafka_partition, kafka_offset) do nothing"
        );
        Self { table, insert }
    }

    /// The table, quoted as in SQL.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Keeps `message` with the headers `letter` would have put on the dead-letter topic, and why
    /// publishing it there failed.
    pub async fn park(
        &self,
        pool: &PgPool,
        message: &OwnedMessage,
        letter: &DeadLetter<'_>,
        publish_error: &str,
    ) -> Result<(), sqlx::Error> {
        let headers: Vec<(String, Option<String>)> = letter
            .headers(message.headers())
            .iter()
            .map(|h| {
                let value = h
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_owned);
                (h.key.to_owned(), value)
            })
            .collect();
        sqlx::query(AssertSqlSafe(self.insert.clone()))
            .bind(letter.consumer_group)
            .bind(letter.topic)
            .bind(letter.partition)
            .bind(letter.offset)
            .bind(message.key())
            .bind(message.payload())
            .bind(Json(headers))
            .bind(truncate(letter.error, MAX_ERROR_LEN))
            .bind(letter.error_type)
            .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
            .bind(truncate(publish_error, MAX_ERROR_LEN))
            .execute(pool)
            .await?;
        Ok(())
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(h: &'a OwnedHeaders, key: &str) -> Vec<&'a str> {
        h.iter()
            .filter(|x| x.key == key)
            .filter_map(|x| x.value)
            .map(|v| std::str::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn a_dead_letter_keeps_the_event_headers_and_says_why_and_from_where() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("e1"),
            })
            .insert(Header {
                key: "traceparent",
                value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            })
            .insert(Header {
                key: "baggage",
                value: Some("k=v"),
            })
            .insert(Header {
                key: "dlq_error",
                value: Some("an older failure"),
            });
        let letter = DeadLetter {
            error: "handler failed: boom",
            error_type: "handler_failed",
            topic: "kitchen.events",
            partition: 2,
            offset: 41,
            consumer_group: "order",
            attempts: 3,
        };
        let h = letter.headers(Some(&original));
        assert_eq!(value(&h, "ce_id"), vec!["e1"]);
        assert!(value(&h, "traceparent").is_empty() && value(&h, "baggage").is_empty());
        assert_eq!(
            value(&h, headers::ERROR),
            vec!["handler failed: boom"],
            "the older dlq_error is replaced"
        );
        assert_eq!(value(&h, headers::ERROR_TYPE), vec!["handler_failed"]);
        assert_eq!(value(&h, headers::ORIGIN_TOPIC), vec!["kitchen.events"]);
        assert_eq!(value(&h, headers::ORIGIN_PARTITION), vec!["2"]);
        assert_eq!(value(&h, headers::ORIGIN_OFFSET), vec!["41"]);
        assert_eq!(value(&h, headers::CONSUMER_GROUP), vec!["order"]);
        assert_eq!(value(&h, headers::ATTEMPTS), vec!["3"]);
        assert!(OffsetDateTime::parse(value(&h, headers::TIME)[0], &Rfc3339).is_ok());
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate(&long, MAX_ERROR_LEN);
        assert!(cut.len() <= MAX_ERROR_LEN && cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short", 10), "short");
    }
}
