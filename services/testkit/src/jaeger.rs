//! Reading traces back from Jaeger.
//!
//! Assertions about trace shape use Jaeger's query API v3 (`/api/v3/traces/{id}`), which answers with
//! OTLP-shaped JSON and keeps span links exactly as they were exported. The legacy `/api/traces` API
//! turns links into `FOLLOWS_FROM` references and drops their attributes, so it is not used here.
//!
//! Spans reach Jaeger asynchronously (SDK batch, Collector batch, Jaeger's own pipeline), so the
//! reading methods wait, bounded, until the trace holds what the caller expects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

/// What can go wrong talking to Jaeger.
#[derive(Debug, thiserror::Error)]
pub enum JaegerError {
    /// The HTTP request itself failed (Jaeger not running, connection refused, timeout).
    #[error("request to Jaeger failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Jaeger answered with a status other than 200 or 404.
    #[error("Jaeger answered {status} for {url}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The URL asked for.
        url: String,
        /// The response body, for the error message.
        body: String,
    },
    /// The body was not the OTLP-shaped JSON the v3 API promises.
    #[error("unexpected answer from Jaeger: {0}")]
    Decode(String),
    /// The trace did not reach the expected shape in time.
    #[error("trace {trace_id} not as expected after {waited:?}; last seen: {last}")]
    Timeout {
        /// The trace asked for.
        trace_id: String,
        /// How long we waited.
        waited: Duration,
        /// A summary of what Jaeger held at the end.
        last: String,
    },
}

/// A client for one Jaeger query service.
#[derive(Debug, Clone)]
pub struct Jaeger {
    base: String,
    http: reqwest::Client,
}

/// A trace as Jaeger stores it: every span with its service.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// All spans, in the order Jaeger returned them.
    pub spans: Vec<Span>,
}

/// The span kinds of the OpenTelemetry data model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Not given.
    Unspecified,
    /// In-process work.
    Internal,
    /// Handles a synchronous request.
    Server,
    /// Makes a synchronous request.
    Client,
    /// Creates a message or a unit of deferred work.
    Producer,
    /// Processes a message or a unit of deferred work.
    Consumer,
}

/// One span, decoded from OTLP JSON, ids as lower-case hex.
#[derive(Debug, Clone)]
pub struct Span {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span name.
    pub name: String,
    /// The span kind.
    pub kind: SpanKind,
    /// `service.name` of the resource that emitted the span.
    pub service_name: String,
    /// Span attributes, values converted to JSON (strings, numbers, booleans, arrays).
    pub attributes: BTreeMap<String, Value>,
    /// Span links, exactly as exported.
    pub links: Vec<Link>,
    /// Span events (logs recorded on the span, exceptions).
    pub events: Vec<Event>,
    /// `STATUS_CODE_ERROR` spans are errors; see [`Span::is_error`].
    pub status_code: i64,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

/// A span event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// Event attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// A span link.
#[derive(Debug, Clone)]
pub struct Link {
    /// The linked span's trace id (32 hex digits).
    pub trace_id: String,
    /// The linked span's id (16 hex digits).
    pub span_id: String,
    /// Link attributes.
    pub attributes: BTreeMap<String, Value>,
}

impl Jaeger {
    /// A client for the Jaeger query service at `base` (for example `http://127.0.0.1:16686`).
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client with a timeout always builds");
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// Service names Jaeger has seen (`/api/services`).
    pub async fn services(&self) -> Result<Vec<String>, JaegerError> {
        #[derive(Deserialize)]
        struct Services {
            data: Option<Vec<String>>,
        }
        let url = format!("{}/api/services", self.base);
        let response = self.http.get(&url).send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        if status != 200 {
            return Err(JaegerError::Status { status, url, body });
        }
        let services: Services =
            serde_json::from_str(&body).map_err(|e| JaegerError::Decode(e.to_string()))?;
        Ok(services.data.unwrap_or_default())
    }

    /// The trace as Jaeger holds it now, or `None` if Jaeger has no span of it yet.
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Trace>, JaegerError> {
        let url = format!("{}/api/v3/traces/{trace_id}", self.base);
        let response = self.http.get(&url).send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        match status {
            200 => decode_trace(&body).map(Some),
            404 => Ok(None),
            _ => Err(JaegerError::Status { status, url, body }),
        }
    }

    /// Ids of the traces of `service` from the last hour that hold a span with the attribute
    /// `key` = `value` (at most 100, newest first).
    ///
    /// Searching is the one thing read through the legacy `/api/traces` API: its `tags` filter is what
    /// Jaeger's UI uses, while the v3 search takes its filters in a form that varies between Jaeger
    /// versions. Only the ids are taken from the answer; read the traces with [`Self::trace`], which
    /// keeps links intact.
    pub async fn find_trace_ids(
        &self,
        service: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<String>, JaegerError> {
        #[derive(Deserialize)]
        struct Found {
            data: Option<Vec<FoundTrace>>,
        }
        #[derive(Deserialize)]
        struct FoundTrace {
            #[serde(rename = "traceID")]
            trace_id: String,
        }
        let tags = serde_json::json!({ key: value }).to_string();
        let params = [
            ("service", service),
            ("tags", tags.as_str()),
            ("lookback", "1h"),
            ("limit", "100"),
        ];
        let url = reqwest::Url::parse_with_params(&format!("{}/api/traces", self.base), &params)
            .map_err(|e| JaegerError::Decode(format!("search URL: {e}")))?;
        let response = self.http.get(url.clone()).send().await?;
        let url = url.to_string();
        let status = response.status().as_u16();
        let body = response.text().await?;
        if status != 200 {
            return Err(JaegerError::Status { status, url, body });
        }
        let found: Found = serde_json::from_str(&body).map_err(|e| JaegerError::Decode(e.to_string()))?;
        let mut ids: Vec<String> = found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.trace_id)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Waits, up to `timeout`, until the trace exists and `ready` accepts it; returns it.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        ready: impl Fn(&Trace) -> bool,
    ) -> Result<Trace, JaegerError> {
        let started = Instant::now();
        let mut last = String::from("no trace");
        loop {
            match self.trace(trace_id).await {
                Ok(Some(trace)) if ready(&trace) => return Ok(trace),
                Ok(Some(trace)) => last = trace.summary(),
                Ok(None) => {}
                Err(e @ JaegerError::Decode(_)) => return Err(e),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() >= timeout {
                return Err(JaegerError::Timeout {
                    trace_id: trace_id.to_owned(),
                    waited: timeout,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Trace {
    /// The first span with this name.
    pub fn span(&self, name: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.name == name)
    }

    /// The span with this id.
    pub fn by_id(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }

    /// One line naming each span, for failure messages.
    pub fn summary(&self) -> String {
        let names: Vec<String> = self
            .spans
            .iter()
            .map(|s| format!("{}:{}({})", s.service_name, s.name, s.span_id))
            .collect();
        format!("{} span(s): {}", self.spans.len(), names.join(", "))
    }
}

impl Span {
    /// A string attribute's value.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// An integer attribute's value.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }

    /// Whether the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status_code == 2
    }

    /// Whether `other` is this span's parent.
    pub fn is_child_of(&self, other: &Span) -> bool {
        self.trace_id == other.trace_id && self.parent_span_id.as_deref() == Some(other.span_id.as_str())
    }

    /// Whether this span links to `other`.
    pub fn links_to(&self, other: &Span) -> bool {
        self.links
            .iter()
            .any(|l| l.trace_id == other.trace_id && l.span_id == other.span_id)
    }
}

// ---- decoding OTLP JSON ------------------------------------------------------------------------------

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

fn decode_trace(body: &str) -> Result<Trace, JaegerError> {
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
