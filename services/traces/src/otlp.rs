//! Decoding the OTLP-shaped JSON of Jaeger's query API v3 into [`Span`]s.
//!
//! OTLP/JSON says ids are hex and enums are numbers; protobuf's canonical JSON would make ids base64
//! and enums names. Both are accepted, so a change of Jaeger's encoder cannot make every trace
//! assertion fail with a confusing mismatch.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::jaeger::JaegerError;
use crate::span::{Event, Link, Span, SpanKind, Trace};

#[derive(Deserialize)]
struct Envelope {
    result: Option<TracesData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TracesData {
    #[serde(default)]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans {
    resource: Option<Resource>,
    #[serde(default)]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct ScopeSpans {
    #[serde(default)]
    spans: Vec<RawSpan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpan {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    parent_span_id: Option<String>,
    name: String,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    start_time_unix_nano: Option<Value>,
    #[serde(default)]
    end_time_unix_nano: Option<Value>,
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    links: Vec<RawLink>,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    status: Option<RawStatus>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    name: String,
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(default)]
    code: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLink {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Value,
}

/// Decodes one answer of `/api/v3/traces/{id}`.
pub(crate) fn decode_trace(body: &str) -> Result<Trace, JaegerError> {
    let envelope: Envelope =
        serde_json::from_str(body).map_err(|e| JaegerError::Decode(format!("{e}: {body:.200}")))?;
    let mut spans = Vec::new();
    for rs in envelope.result.map(|r| r.resource_spans).unwrap_or_default() {
        let resource = rs.resource.map(|r| attributes(r.attributes)).unwrap_or_default();
        let service_name = resource
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            spans.push(Span {
                trace_id: hex_id(&span.trace_id, 16)?,
                span_id: hex_id(&span.span_id, 8)?,
                parent_span_id: match span.parent_span_id.as_deref() {
                    None | Some("") => None,
                    Some(id) => Some(hex_id(id, 8)?),
                },
                name: span.name,
                kind: span_kind(span.kind.as_ref()),
                service_name: service_name.clone(),
                attributes: attributes(span.attributes),
                links: span
                    .links
                    .into_iter()
                    .map(|l| {
                        Ok(Link {
                            trace_id: hex_id(&l.trace_id, 16)?,
                            span_id: hex_id(&l.span_id, 8)?,
                            attributes: attributes(l.attributes),
                        })
                    })
                    .collect::<Result<_, JaegerError>>()?,
                events: span
                    .events
                    .into_iter()
                    .map(|e| Event {
                        name: e.name,
                        attributes: attributes(e.attributes),
                    })
                    .collect(),
                status_code: status_code(span.status.and_then(|s| s.code).as_ref()),
                start_unix_nano: nanos(span.start_time_unix_nano.as_ref()),
                end_unix_nano: nanos(span.end_time_unix_nano.as_ref()),
            });
        }
    }
    Ok(Trace { spans })
}

/// OTLP/JSON says ids are hex; protobuf's canonical JSON would make them base64. Accept both, so a
/// change of Jaeger's encoder cannot make every trace assertion fail with a confusing mismatch.
fn hex_id(raw: &str, bytes: usize) -> Result<String, JaegerError> {
    if raw.len() == bytes * 2 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(raw.to_ascii_lowercase());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|e| JaegerError::Decode(format!("id {raw:?} is neither hex nor base64: {e}")))?;
    if decoded.len() != bytes {
        return Err(JaegerError::Decode(format!(
            "id {raw:?} has {} bytes, want {bytes}",
            decoded.len()
        )));
    }
    Ok(decoded.iter().map(|b| format!("{b:02x}")).collect())
}

fn span_kind(raw: Option<&Value>) -> SpanKind {
    let code = match raw {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.as_str() {
            "SPAN_KIND_INTERNAL" => 1,
            "SPAN_KIND_SERVER" => 2,
            "SPAN_KIND_CLIENT" => 3,
            "SPAN_KIND_PRODUCER" => 4,
            "SPAN_KIND_CONSUMER" => 5,
            _ => 0,
        },
        _ => 0,
    };
    match code {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

fn status_code(raw: Option<&Value>) -> i64 {
    match raw {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.as_str() {
            "STATUS_CODE_OK" => 1,
            "STATUS_CODE_ERROR" => 2,
            _ => 0,
        },
        _ => 0,
    }
}

fn nanos(raw: Option<&Value>) -> u64 {
    match raw {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn attributes(kvs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    kvs.into_iter().map(|kv| (kv.key, any_value(kv.value))).collect()
}

/// OTLP `AnyValue` to plain JSON: `{"stringValue": "x"}` becomes `"x"`, `{"intValue": "3"}` becomes `3`.
fn any_value(raw: Value) -> Value {
    let Value::Object(mut map) = raw else { return raw };
    if let Some(v) = map.remove("stringValue") {
        return v;
    }
    if let Some(v) = map.remove("boolValue") {
        return v;
    }
    if let Some(v) = map.remove("doubleValue") {
        return v;
    }
    if let Some(v) = map.remove("intValue") {
        return match v {
            Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(Value::String(s)),
            other => other,
        };
    }
    if let Some(Value::Object(mut array)) = map.remove("arrayValue") {
        let values = match array.remove("values") {
            Some(Value::Array(values)) => values,
            _ => Vec::new(),
        };
        return Value::Array(values.into_iter().map(any_value).collect());
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_otlp_json_trace_with_links_and_typed_attributes() {
        let body = r#"{"result":{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"order"}}]},
          "scopeSpans":[{"scope":{"name":"t"},"spans":[{
            "traceId":"0AF7651916CD43DD8448EB211C80319C","spanId":"b7ad6b7169203331",
            "parentSpanId":"","name":"process kitchen.events","kind":5,
            "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000",
            "attributes":[{"key":"messaging.kafka.offset","value":{"intValue":"42"}},
                          {"key":"retry","value":{"boolValue":true}},
                          {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}],
            "links":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7",
                      "attributes":[{"key":"why","value":{"stringValue":"producer"}}]}]}]}]}]}}"#;
        let trace = decode_trace(body).unwrap();
        let span = trace.span("process kitchen.events").unwrap();
        assert_eq!(span.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span.parent_span_id, None);
        assert_eq!(span.kind, SpanKind::Consumer);
        assert_eq!(span.service_name, "order");
        assert_eq!(span.attributes["messaging.kafka.offset"], Value::from(42));
        assert_eq!(span.attributes["retry"], Value::Bool(true));
        assert_eq!(span.attributes["tags"], serde_json::json!(["a"]));
        assert_eq!(span.end_unix_nano - span.start_unix_nano, 500_000_000);
        assert_eq!(span.links[0].span_id, "00f067aa0ba902b7");
        assert_eq!(span.links[0].attributes["why"], Value::from("producer"));
    }

    #[test]
    fn accepts_base64_ids_and_rejects_ids_of_the_wrong_length() {
        // 8 bytes 0x00..0x07 in base64.
        assert_eq!(hex_id("AAECAwQFBgc=", 8).unwrap(), "0001020304050607");
        assert!(hex_id("AAECAwQFBgc=", 16).is_err());
        assert!(hex_id("not an id", 8).is_err());
    }

    #[test]
    fn names_span_kinds_given_as_strings() {
        assert_eq!(
            span_kind(Some(&Value::from("SPAN_KIND_PRODUCER"))),
            SpanKind::Producer
        );
        assert_eq!(span_kind(None), SpanKind::Unspecified);
    }
}
