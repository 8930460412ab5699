//! CloudEvents 1.0 in Kafka's binary content mode.
//!
//! The event's context attributes travel as record headers (`ce_specversion`, `ce_id`, `ce_source`,
//! `ce_type`, `ce_subject`, `ce_time`, and `content-type` for the data's media type), the data is the
//! record's value (JSON), and the record key is the order id so every event of one order lands in one
//! partition, in order. Binary mode keeps the body the plain payload a consumer expects and lets
//! brokers, proxies and consumers route on headers without parsing JSON.
//!
//! The pizza contract narrows CloudEvents a little: `ce_id` is a UUID (v7, so ids sort by time),
//! `ce_subject` is the order id, and `ce_time` is always present. Writers are strict; the reader
//! accepts a missing `content-type` (the contract's data is always JSON) and `content-type`
//! parameters such as `charset`.
//!
//! Headers never carry customer data: the order id is the only business value in them.

use pizza_contracts::{DataError, EventData};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Header names of the Kafka protocol binding.
pub mod headers {
    /// `specversion`.
    pub const SPECVERSION: &str = "ce_specversion";
    /// `id`: unique per event; the consumer's inbox key.
    pub const ID: &str = "ce_id";
    /// `source`: the producing service (`/pizza/order`).
    pub const SOURCE: &str = "ce_source";
    /// `type`: one of `pizza_contracts::types`.
    pub const TYPE: &str = "ce_type";
    /// `subject`: the order id.
    pub const SUBJECT: &str = "ce_subject";
    /// `time`: when the event happened (RFC 3339).
    pub const TIME: &str = "ce_time";
    /// `datacontenttype`, which the binding maps to the plain `content-type` header.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// The CloudEvents version written and accepted.
pub const SPEC_VERSION: &str = "1.0";
/// The data's media type.
pub const JSON: &str = "application/json";

/// The context attributes of one event (everything but the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `ce_id`.
    pub id: Uuid,
    /// `ce_source`.
    pub source: String,
    /// `ce_type`.
    pub event_type: String,
    /// `ce_subject`: the order the event belongs to, also the record key.
    pub order_id: Uuid,
    /// `ce_time`.
    pub time: OffsetDateTime,
}

impl Attributes {
    /// The record headers for these attributes, `content-type` included.
    pub fn to_headers(&self) -> OwnedHeaders {
        let id = self.id.to_string();
        let subject = self.order_id.to_string();
        // Formatting a UTC timestamp as RFC 3339 only fails for years outside 0..=9999.
        let time = self
            .time
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
        [
            (headers::SPECVERSION, SPEC_VERSION),
            (headers::ID, id.as_str()),
            (headers::SOURCE, self.source.as_str()),
            (headers::TYPE, self.event_type.as_str()),
            (headers::SUBJECT, subject.as_str()),
            (headers::TIME, time.as_str()),
            (headers::CONTENT_TYPE, JSON),
        ]
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(8), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
    }

    /// Reads and checks the attributes from record headers.
    pub fn from_headers<H: Headers>(headers: Option<&H>) -> Result<Self, DecodeError> {
        let get = |name: &'static str| header_str(headers, name);
        let require = |name: &'static str| get(name)?.ok_or(DecodeError::MissingHeader(name));

        let version = require(headers::SPECVERSION)?;
        if version != SPEC_VERSION {
            return Err(DecodeError::UnsupportedSpecVersion(
                version.chars().take(16).collect(),
            ));
        }
        if let Some(content_type) = get(headers::CONTENT_TYPE)? {
            let media = content_type.split(';').next().unwrap_or_default().trim();
            if !media.eq_ignore_ascii_case(JSON) {
                return Err(DecodeError::UnsupportedContentType(
                    media.chars().take(64).collect(),
                ));
            }
        }
        let uuid = |name: &'static str| -> Result<Uuid, DecodeError> {
            Uuid::parse_str(require(name)?).map_err(|_| DecodeError::InvalidHeader {
                header: name,
                expected: "a UUID",
            })
        };
        let source = require(headers::SOURCE)?;
        if source.is_empty() {
            return Err(DecodeError::InvalidHeader {
                header: headers::SOURCE,
                expected: "a non-empty URI reference",
            });
        }
        let event_type = require(headers::TYPE)?;
        if event_type.is_empty() {
            return Err(DecodeError::InvalidHeader {
                header: headers::TYPE,
                expected: "a non-empty type",
            });
        }
        let time = OffsetDateTime::parse(require(headers::TIME)?, &Rfc3339).map_err(|_| {
            DecodeError::InvalidHeader {
                header: headers::TIME,
                expected: "an RFC 3339 timestamp",
            }
        })?;
        Ok(Self {
            id: uuid(headers::ID)?,
            source: source.to_owned(),
            event_type: event_type.to_owned(),
            order_id: uuid(headers::SUBJECT)?,
            time,
        })
    }
}

/// The value of header `name` as text (the last one wins if it repeats, as Kafka clients read them).
fn header_str<'h, H: Headers>(
    headers: Option<&'h H>,
    name: &'static str,
) -> Result<Option<&'h str>, DecodeError> {
    let Some(headers) = headers else { return Ok(None) };
    match headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
    {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| DecodeError::InvalidHeader {
                header: name,
                expected: "UTF-8 text",
            }),
    }
}

/// Reads `ce_id` without checking anything else, for span attributes before (or despite) decoding.
pub fn peek_id<H: Headers>(headers: Option<&H>) -> Option<String> {
    header_str(headers, headers::ID)
        .ok()
        .flatten()
        .map(|s| s.chars().take(64).collect())
}

/// One event: its attributes and its typed data.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    /// The context attributes (`ce_*` headers).
    pub attributes: Attributes,
    /// The body.
    pub data: T,
}

/// An event ready for a Kafka record.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The record key: the order id.
    pub key: String,
    /// The `ce_*` and `content-type` headers.
    pub headers: OwnedHeaders,
    /// The JSON body.
    pub payload: Vec<u8>,
}

impl<T: EventData> Envelope<T> {
    /// A new event from `source` (the producing service, e.g. `/pizza/kitchen`): a fresh v7 id, the
    /// current time, and type and subject taken from the data.
    pub fn new(source: impl Into<String>, data: T) -> Self {
        let now = OffsetDateTime::now_utc();
        // PostgreSQL keeps microseconds: trimming here means the outbox row and this value agree.
        let time = now
            .replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now);
        Self {
            attributes: Attributes {
                id: Uuid::now_v7(),
                source: source.into(),
                event_type: data.event_type().to_owned(),
                order_id: data.order_id(),
                time,
            },
            data,
        }
    }

    /// `ce_id`.
    pub fn id(&self) -> Uuid {
        self.attributes.id
    }

    /// `ce_subject`, the order id.
    pub fn order_id(&self) -> Uuid {
        self.attributes.order_id
    }

    /// The record key: the order id, so one order's events keep their order in one partition.
    pub fn key(&self) -> String {
        self.attributes.order_id.to_string()
    }

    /// Key, headers and body for a Kafka record.
    pub fn encode(&self) -> Result<Encoded, EncodeError> {
        let payload = self.data.to_json().map_err(|source| EncodeError::Json {
            event_type: self.data.event_type(),
            source,
        })?;
        Ok(Encoded {
            key: self.key(),
            headers: self.attributes.to_headers(),
            payload,
        })
    }

    /// Reads an event from a received record.
    pub fn decode<M: Message>(message: &M) -> Result<Self, DecodeError> {
        Self::decode_parts(message.headers(), message.payload())
    }

    /// Reads an event from record headers and body.
    pub fn decode_parts<H: Headers>(
        headers: Option<&H>,
        payload: Option<&[u8]>,
    ) -> Result<Self, DecodeError> {
        let attributes = Attributes::from_headers(headers)?;
        let body = payload.ok_or(DecodeError::MissingBody)?;
        let data = T::from_json(&attributes.event_type, body)?;
        if data.order_id() != attributes.order_id {
            return Err(DecodeError::SubjectMismatch);
        }
        Ok(Self { attributes, data })
    }
}

/// Why an event could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The data could not be serialized as JSON.
    #[error("serializing {event_type} as JSON: {source}")]
    Json {
        /// The event type.
        event_type: &'static str,
        /// serde's error.
        source: serde_json::Error,
    },
}

/// Why a record is not a valid pizza CloudEvent. None of the variants quotes the body, which may hold
/// customer data: these errors end up in dead-letter headers and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A required CloudEvents header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but its value is not what the contract allows.
    #[error("header {header} is not {expected}")]
    InvalidHeader {
        /// The header.
        header: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
    /// `ce_specversion` is not `1.0`.
    #[error("unsupported CloudEvents specversion {0:?}, expected {SPEC_VERSION}")]
    UnsupportedSpecVersion(String),
    /// `content-type` names a media type other than JSON.
    #[error("unsupported content-type {0:?}, expected {JSON}")]
    UnsupportedContentType(String),
    /// The record has no value.
    #[error("the record has no body")]
    MissingBody,
    /// The body is not the JSON of a type this consumer reads (bad JSON, wrong shape, unknown type).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The body's order id differs from `ce_subject`: the record key would route it wrongly.
    #[error("the body's order id differs from ce_subject")]
    SubjectMismatch,
}

impl DecodeError {
    /// A low-cardinality name for `error.type` on spans and metrics, and for dead-letter headers.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::MissingHeader(_) => "missing_header",
            DecodeError::InvalidHeader { .. } => "invalid_header",
            DecodeError::UnsupportedSpecVersion(_) => "unsupported_specversion",
            DecodeError::UnsupportedContentType(_) => "unsupported_content_type",
            DecodeError::MissingBody => "missing_body",
            DecodeError::Data(DataError::UnexpectedType { .. }) => "unexpected_type",
            DecodeError::Data(DataError::Json { .. }) => "invalid_body",
            DecodeError::SubjectMismatch => "subject_mismatch",
        }
    }
}

#[cfg(test)]
mod tests {
    use pizza_contracts::events::{KitchenEvent, OrderReady};
    use pizza_contracts::types;

    use super::*;

    fn ready() -> Envelope<OrderReady> {
        Envelope::new(
            "/pizza/kitchen",
            OrderReady {
                order_id: Uuid::now_v7(),
                ticket_id: Uuid::now_v7(),
            },
        )
    }

    fn header<'a>(h: &'a OwnedHeaders, name: &str) -> Option<&'a str> {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .map(|v| std::str::from_utf8(v).unwrap())
    }

    fn without(h: &OwnedHeaders, name: &str) -> OwnedHeaders {
        h.iter()
            .filter(|x| x.key != name)
            .fold(OwnedHeaders::new(), |acc, x| acc.insert(x))
    }

    fn replaced(h: &OwnedHeaders, name: &str, value: &str) -> OwnedHeaders {
        without(h, name).insert(Header {
            key: name,
            value: Some(value),
        })
    }

    #[test]
    fn encoding_writes_every_binary_mode_header_and_keys_by_order() {
        let event = ready();
        let encoded = event.encode().unwrap();
        assert_eq!(encoded.key, event.order_id().to_string());
        let h = &encoded.headers;
        assert_eq!(header(h, "ce_specversion"), Some("1.0"));
        assert_eq!(header(h, "ce_id"), Some(event.id().to_string().as_str()));
        assert_eq!(header(h, "ce_source"), Some("/pizza/kitchen"));
        assert_eq!(header(h, "ce_type"), Some(types::ORDER_READY));
        assert_eq!(
            header(h, "ce_subject"),
            Some(event.order_id().to_string().as_str())
        );
        assert_eq!(header(h, "content-type"), Some("application/json"));
        let time = OffsetDateTime::parse(header(h, "ce_time").unwrap(), &Rfc3339).unwrap();
        assert_eq!(time, event.attributes.time);
        assert_eq!(event.id().get_version_num(), 7);
        let body: serde_json::Value = serde_json::from_slice(&encoded.payload).unwrap();
        assert_eq!(body["order_id"], event.order_id().to_string());
    }

    #[test]
    fn decoding_what_was_encoded_gives_the_same_event() {
        let event = ready();
        let encoded = event.encode().unwrap();
        let back =
            Envelope::<OrderReady>::decode_parts(Some(&encoded.headers), Some(&encoded.payload)).unwrap();
        assert_eq!(back, event);
        let as_topic =
            Envelope::<KitchenEvent>::decode_parts(Some(&encoded.headers), Some(&encoded.payload)).unwrap();
        assert_eq!(as_topic.data, KitchenEvent::Ready(event.data.clone()));
        assert_eq!(as_topic.attributes, event.attributes);
    }

    #[test]
    fn each_missing_header_is_named() {
        let encoded = ready().encode().unwrap();
        for name in [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_subject",
            "ce_time",
        ] {
            let err = Envelope::<OrderReady>::decode_parts(
                Some(&without(&encoded.headers, name)),
                Some(&encoded.payload),
            )
            .unwrap_err();
            assert_eq!(err, DecodeError::MissingHeader(name));
            assert_eq!(err.kind(), "missing_header");
        }
        let none: Option<&OwnedHeaders> = None;
        assert_eq!(
            Envelope::<OrderReady>::decode_parts(none, Some(&encoded.payload)).unwrap_err(),
            DecodeError::MissingHeader("ce_specversion")
        );
    }

    #[test]
    fn invalid_header_values_are_rejected() {
        let encoded = ready().encode().unwrap();
        let decode = |h: OwnedHeaders| Envelope::<OrderReady>::decode_parts(Some(&h), Some(&encoded.payload));
        assert_eq!(
            decode(replaced(&encoded.headers, "ce_specversion", "0.3")).unwrap_err(),
            DecodeError::UnsupportedSpecVersion("0.3".into())
        );
        assert!(matches!(
            decode(replaced(&encoded.headers, "ce_id", "not-a-uuid")).unwrap_err(),
            DecodeError::InvalidHeader { header: "ce_id", .. }
        ));
        assert!(matches!(
            decode(replaced(&encoded.headers, "ce_subject", "order 7")).unwrap_err(),
            DecodeError::InvalidHeader {
                header: "ce_subject",
                ..
            }
        ));
        assert!(matches!(
            decode(replaced(&encoded.headers, "ce_time", "yesterday")).unwrap_err(),
            DecodeError::InvalidHeader {
                header: "ce_time",
                ..
            }
        ));
        assert_eq!(
            decode(replaced(&encoded.headers, "content-type", "application/xml")).unwrap_err(),
            DecodeError::UnsupportedContentType("application/xml".into())
        );
        let bad_utf8 = without(&encoded.headers, "ce_type").insert(Header {
            key: "ce_type",
            value: Some(&[0xff, 0xfe][..]),
        });
        assert!(matches!(
            decode(bad_utf8).unwrap_err(),
            DecodeError::InvalidHeader {
                header: "ce_type",
                ..
            }
        ));
    }

    #[test]
    fn content_type_parameters_and_a_missing_content_type_are_accepted() {
        let event = ready();
        let encoded = event.encode().unwrap();
        let with_charset = replaced(
            &encoded.headers,
            "content-type",
            "application/json; charset=utf-8",
        );
        assert!(Envelope::<OrderReady>::decode_parts(Some(&with_charset), Some(&encoded.payload)).is_ok());
        let bare = without(&encoded.headers, "content-type");
        assert_eq!(
            Envelope::<OrderReady>::decode_parts(Some(&bare), Some(&encoded.payload)).unwrap(),
            event
        );
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        let event = ready();
        let encoded = event.encode().unwrap();
        let decode = |body: Option<&[u8]>| Envelope::<OrderReady>::decode_parts(Some(&encoded.headers), body);
        assert_eq!(decode(None).unwrap_err(), DecodeError::MissingBody);
        let err = decode(Some(b"{\"order_id\": ")).unwrap_err();
        assert_eq!(err.kind(), "invalid_body");
        let other_order = OrderReady {
            order_id: Uuid::now_v7(),
            ticket_id: event.data.ticket_id,
        };
        let err = decode(Some(&serde_json::to_vec(&other_order).unwrap())).unwrap_err();
        assert_eq!(err, DecodeError::SubjectMismatch);
        let placed = replaced(&encoded.headers, "ce_type", types::ORDER_PLACED);
        let err = Envelope::<KitchenEvent>::decode_parts(Some(&placed), Some(&encoded.payload)).unwrap_err();
        assert_eq!(err.kind(), "unexpected_type");
    }

    #[test]
    fn peek_reads_the_id_of_a_record_that_does_not_decode() {
        let encoded = ready().encode().unwrap();
        let broken = without(&encoded.headers, "ce_type");
        assert_eq!(
            peek_id(Some(&broken)),
            Some(header(&encoded.headers, "ce_id").unwrap().to_owned())
        );
        assert_eq!(peek_id(None::<&OwnedHeaders>), None);
    }
}
