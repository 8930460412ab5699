//! Reading traces back from Jaeger.
//!
//! Assertions about trace shape use Jaeger's query API v3 (`/api/v3/traces/{id}`), which answers with
//! OTLP-shaped JSON and keeps span links exactly as they were exported. The legacy `/api/traces` API
//! turns links into `FOLLOWS_FROM` references and drops their attributes, so it is not used here.
//!
//! Spans reach Jaeger asynchronously (SDK batch, Collector batch, Jaeger's own pipeline), so the
//! reading methods wait, bounded, until the trace holds what the caller expects.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::otlp::decode_trace;
use crate::span::{Span, Trace};

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
    /// The spans found did not reach the expected shape in time; what was found is kept, so the
    /// caller can say what was missing in its own terms.
    #[error("the spans of {search} not as expected after {waited:?}: {} span(s) found", found.spans.len())]
    NotReady {
        /// What was searched for.
        search: String,
        /// How long we waited.
        waited: Duration,
        /// What Jaeger held at the end.
        found: Box<Found>,
    },
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

/// What to gather from Jaeger: every span of every trace that holds a span with `key` = one of
/// `values` in one of `services`, of the traces named in `traces`, and, up to `max_traces` traces in all, of the traces
/// those spans link to (transitively). In the `linked` topology an order is several traces joined by
/// links; following them finds the traces no attribute search reaches (a producer's trace started by
/// something else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanSearch {
    /// The attribute searched for.
    pub key: String,
    /// The values searched for (any of them).
    pub values: Vec<String>,
    /// The services whose traces are searched.
    pub services: Vec<String>,
    /// Traces read whatever the search finds.
    pub traces: Vec<String>,
    /// Follow links until this many traces are read; 0 follows none.
    pub max_traces: usize,
}

/// The services an order's spans come from.
pub const SHOP_SERVICES: &[&str] = &["order", "kitchen", "delivery"];

impl SpanSearch {
    /// Spans with `key` = `value` in `service`'s traces.
    pub fn attribute(service: &str, key: &str, value: &str) -> Self {
        Self {
            key: key.to_owned(),
            values: vec![value.to_owned()],
            services: vec![service.to_owned()],
            traces: Vec::new(),
            max_traces: 0,
        }
    }

    /// Every trace of the three services holding a span of the order (`pizza.order.id`).
    pub fn order(order_id: impl std::fmt::Display) -> Self {
        Self {
            services: SHOP_SERVICES.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::attribute(
                "",
                pizza_telemetry::attributes::pizza::ORDER_ID,
                &order_id.to_string(),
            )
        }
    }

    /// The same search, also for spans with the key set to `value`.
    pub fn or_value(mut self, value: &str) -> Self {
        self.values.push(value.to_owned());
        self
    }

    /// The same search, also reading these traces.
    pub fn with_traces(mut self, traces: impl IntoIterator<Item = String>) -> Self {
        self.traces.extend(traces);
        self
    }

    /// The same search, following links until `max_traces` traces are read.
    pub fn following_links(mut self, max_traces: usize) -> Self {
        self.max_traces = max_traces;
        self
    }
}

impl std::fmt::Display for SpanSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={} in {}",
            self.key,
            self.values.join("|"),
            self.services.join(", ")
        )
    }
}

/// What a [`SpanSearch`] found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Every span, one copy each (two searches may find the same trace).
    pub spans: Vec<Span>,
    /// The traces read.
    pub traces: BTreeSet<String>,
    /// Services whose search hit Jaeger's limit of 100 traces: more may exist than were read.
    pub cut: Vec<String>,
}

/// How long [`Jaeger::wait_for_spans`] waits, and for how long the answer must stop growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    /// Give up after this long.
    pub limit: Duration,
    /// Once ready, the number of spans must not change for this long (spans of one order arrive
    /// from three processes, each on its own batch schedule).
    pub quiet: Duration,
    /// Pause between reads.
    pub poll: Duration,
}

impl Jaeger {
    /// Jaeger's search answers at most this many traces.
    pub const SEARCH_LIMIT: usize = 100;

    /// Reads what `search` names now, once; see [`SpanSearch`].
    pub async fn find_spans(&self, search: &SpanSearch) -> Result<Found, JaegerError> {
        let mut wanted: BTreeSet<String> = search.traces.iter().cloned().collect();
        let mut cut = Vec::new();
        for service in &search.services {
            for value in &search.values {
                let ids = self.find_trace_ids(service, &search.key, value).await?;
                if ids.len() >= Self::SEARCH_LIMIT {
                    cut.push(format!("{service} ({}={value})", search.key));
                }
                wanted.extend(ids);
            }
        }
        let mut read = BTreeSet::new();
        let mut spans = Vec::new();
        let mut seen = BTreeSet::new();
        loop {
            for trace_id in std::mem::take(&mut wanted) {
                if !read.insert(trace_id.clone()) {
                    continue;
                }
                if let Some(trace) = self.trace(&trace_id).await? {
                    spans.extend(
                        trace
                            .spans
                            .into_iter()
                            .filter(|s| seen.insert((s.trace_id.clone(), s.span_id.clone()))),
                    );
                }
            }
            if read.len() >= search.max_traces {
                break;
            }
            wanted = spans
                .iter()
                .flat_map(|s| s.links.iter().map(|l| l.trace_id.clone()))
                .filter(|t| !read.contains(t))
                .collect();
            if wanted.is_empty() {
                break;
            }
        }
        Ok(Found {
            spans,
            traces: read,
            cut,
        })
    }

    /// Reads what `search` names until `ready` accepts the spans and their number has not changed for
    /// `settle.quiet`; fails with [`JaegerError::NotReady`] (holding the last answer) after
    /// `settle.limit`. A failed request is tried again within the limit; an answer that cannot be
    /// decoded fails at once.
    pub async fn wait_for_spans(
        &self,
        search: &SpanSearch,
        settle: Settle,
        ready: impl Fn(&[Span]) -> bool,
    ) -> Result<Found, JaegerError> {
        let started = Instant::now();
        let mut stable: Option<(usize, Instant)> = None;
        let mut last = Found::default();
        loop {
            // A busy Jaeger may time out a search: that is "not yet", not a verdict.
            let found = match self.find_spans(search).await {
                Ok(found) => found,
                Err(e @ JaegerError::Decode(_)) => return Err(e),
                Err(_) if started.elapsed() <= settle.limit => {
                    tokio::time::sleep(settle.poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            last.clone_from(&found);
            if ready(&found.spans) {
                match stable {
                    Some((n, since)) if n == found.spans.len() && since.elapsed() >= settle.quiet => {
                        return Ok(found);
                    }
                    Some((n, _)) if n == found.spans.len() => {}
                    _ if settle.quiet.is_zero() => return Ok(found),
                    _ => stable = Some((found.spans.len(), Instant::now())),
                }
            } else {
                stable = None;
            }
            if started.elapsed() > settle.limit {
                return Err(JaegerError::NotReady {
                    search: search.to_string(),
                    waited: settle.limit,
                    found: Box::new(last),
                });
            }
            tokio::time::sleep(settle.poll).await;
        }
    }
}
