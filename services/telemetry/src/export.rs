//! Span export that never blocks the business path, holds bounded memory, rides out a Collector
//! outage, and counts what it loses.
//!
//! The SDK's batch processor already exports on its own thread; what it does not do is tell the
//! application how many spans it dropped (its counter is private and only logged at shutdown), nor
//! keep a batch the Collector could not take: the OTLP exporter (opentelemetry-otlp 0.33.1) retries
//! an `Unavailable` three times within about 3.5 s (100 ms to 1.6 s back-off), then the processor
//! logs the error and drops the whole batch. Every span that ends while the Collector is down for
//! longer than that is lost. Three thin wrappers fix both:
//!
//! - [`CountingProcessor`] sits in front of the batch processor and admits at most `capacity` spans
//!   that are ended but not yet handed to the exporter. Beyond that it drops the span itself and counts
//!   it (`queue_full`). Memory stays bounded by `capacity` spans (plus the one batch in the
//!   exporter's hands) whatever the Collector does.
//! - [`RetryingExporter`] holds a batch the exporter could not send and tries again with capped
//!   exponential back-off until it goes through or `retry_for` has passed. It runs on the processor's
//!   own thread, so while it holds a batch, new spans wait in the processor's queue, which the
//!   counting processor bounds: the queue *is* the hold buffer. When the Collector is back, the held
//!   batch goes first and the queue drains behind it, in order. A Collector outage of `T` seconds
//!   loses no span as long as the spans ended in `T` seconds fit in `capacity` and `T < retry_for`.
//! - [`CountingExporter`] wraps the retrying exporter and counts spans exported and spans lost to
//!   failed exports (`export_failed`: retries exhausted, or given up at shutdown).
//!
//! [`SpanStats`] reads the counters; [`crate::init()`] also exports them as the metric
//! `pizza.telemetry.spans` with `outcome` = `exported` | `queue_full` | `export_failed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

#[derive(Debug, Default)]
struct Counters {
    ended: AtomicU64,
    handed: AtomicU64,
    exported: AtomicU64,
    queue_full: AtomicU64,
    export_failed: AtomicU64,
    retries: AtomicU64,
    stopping: AtomicBool,
}

/// A snapshot of the span pipeline's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpanStats {
    /// Sampled spans that ended.
    pub ended: u64,
    /// Spans the exporter sent successfully.
    pub exported: u64,
    /// Spans dropped because too many were waiting for export.
    pub queue_full: u64,
    /// Spans lost in failed exports.
    pub export_failed: u64,
    /// Export attempts that failed and were tried again (the Collector was away for a while).
    pub retries: u64,
}

impl SpanStats {
    /// Every span lost, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.queue_full + self.export_failed
    }
}

/// Shared handle to the counters of one pipeline.
#[derive(Debug, Clone, Default)]
pub struct SpanCounters(Arc<Counters>);

impl SpanCounters {
    /// Reads the counters.
    pub fn stats(&self) -> SpanStats {
        SpanStats {
            ended: self.0.ended.load(Ordering::Relaxed),
            exported: self.0.exported.load(Ordering::Relaxed),
            queue_full: self.0.queue_full.load(Ordering::Relaxed),
            export_failed: self.0.export_failed.load(Ordering::Relaxed),
            retries: self.0.retries.load(Ordering::Relaxed),
        }
    }

    /// Tells a [`RetryingExporter`] sharing these counters that the process is shutting down: a
    /// batch it holds gets one more attempt, then is dropped and counted, so shutdown never waits
    /// for a Collector that is away.
    pub fn begin_shutdown(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Relaxed)
    }
}

/// Bounds and counts the spans waiting for export; see the module docs.
#[derive(Debug)]
pub struct CountingProcessor<P> {
    inner: P,
    capacity: u64,
    counters: SpanCounters,
}

impl<P: SpanProcessor> CountingProcessor<P> {
    /// Wraps `inner`, admitting at most `capacity` spans in flight. `counters` must be the same handle
    /// given to the [`CountingExporter`] inside `inner`.
    pub fn new(inner: P, capacity: usize, counters: SpanCounters) -> Self {
        Self {
            inner,
            capacity: capacity as u64,
            counters,
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let c = &self.counters.0;
        if !span.span_context.is_sampled() {
            return;
        }
        c.ended.fetch_add(1, Ordering::Relaxed);
        let in_flight = c
            .ended
            .load(Ordering::Relaxed)
            .saturating_sub(c.handed.load(Ordering::Relaxed));
        if in_flight > self.capacity {
            // Count it as handed too, so the in-flight arithmetic stays right.
            c.handed.fetch_add(1, Ordering::Relaxed);
            c.queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter wrappers here add to `export` only; shutdown, flush and the resource go to the inner
/// exporter unchanged.
macro_rules! delegate_lifecycle {
    () => {
        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.inner.shutdown_with_timeout(timeout)
        }

        fn force_flush(&self) -> OTelSdkResult {
            self.inner.force_flush()
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.inner.set_resource(resource);
        }
    };
}

/// Counts exported and failed spans; see the module docs.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    counters: SpanCounters,
}

impl<E> CountingExporter<E> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: E, counters: SpanCounters) -> Self {
        Self { inner, counters }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let c = &self.counters.0;
        c.handed.fetch_add(n, Ordering::Relaxed);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => c.exported.fetch_add(n, Ordering::Relaxed),
            Err(_) => c.export_failed.fetch_add(n, Ordering::Relaxed),
        };
        result
    }

    delegate_lifecycle!();
}

/// How a [`RetryingExporter`] tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The pause after the first failed attempt; it doubles after each further one.
    pub initial_backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
    /// How long one batch is retried before it is dropped and counted.
    pub retry_for: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            retry_for: Duration::from_secs(300),
        }
    }
}

/// Holds a batch the exporter could not send and tries again; see the module docs.
#[derive(Debug)]
pub struct RetryingExporter<E> {
    inner: E,
    policy: RetryPolicy,
    counters: SpanCounters,
}

impl<E> RetryingExporter<E> {
    /// Wraps `inner`; `counters` tells it when the process is shutting down and counts its retries.
    pub fn new(inner: E, policy: RetryPolicy, counters: SpanCounters) -> Self {
        Self {
            inner,
            policy,
            counters,
        }
    }
}

impl<E: SpanExporter> SpanExporter for RetryingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let started = Instant::now();
        let mut backoff = self.policy.initial_backoff;
        loop {
            // The exporter takes the batch by value, so a copy is kept for the next attempt. That
            // costs a clone per batch on the processor's thread, never on a request's.
            let result = self.inner.export(batch.clone()).await;
            let give_up = self.counters.stopping() || started.elapsed() + backoff > self.policy.retry_for;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if give_up => return Err(e),
                Err(_) => {
                    self.counters.0.retries.fetch_add(1, Ordering::Relaxed);
                    // This runs on the batch processor's own thread (under its `block_on`), not on
                    // an async runtime: sleeping here holds that thread, which is the point. New
                    // spans wait in the bounded queue meanwhile.
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !self.counters.stopping() {
                        std::thread::sleep(Duration::from_millis(50).min(backoff));
                    }
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
            }
        }
    }

    delegate_lifecycle!();
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// An exporter that fails its first `failures` attempts, then records what it is given.
    #[derive(Debug, Default)]
    struct Flaky {
        failures: Mutex<usize>,
        attempts: Mutex<usize>,
        received: Mutex<Vec<SpanData>>,
    }

    impl SpanExporter for &Flaky {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            *self.attempts.lock().unwrap() += 1;
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(OTelSdkError::InternalFailure("unavailable".into()));
            }
            self.received.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn span(n: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(n) + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: format!("span {n}").into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: vec![KeyValue::new("n", n as i64)],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    fn quick(retry_for: Duration) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            retry_for,
        }
    }

    #[test]
    fn a_batch_the_collector_refused_is_held_and_delivered_whole_once_it_takes_it_again() {
        let flaky = Flaky {
            failures: Mutex::new(5),
            ..Flaky::default()
        };
        let counters = SpanCounters::default();
        let exporter = CountingExporter::new(
            RetryingExporter::new(&flaky, quick(Duration::from_secs(30)), counters.clone()),
            counters.clone(),
        );
        let batch: Vec<SpanData> = (0..7).map(span).collect();
        futures::executor::block_on(exporter.export(batch)).expect("delivered after the retries");
        let names: Vec<String> = flaky
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(names, (0..7).map(|n| format!("span {n}")).collect::<Vec<_>>());
        assert_eq!(*flaky.attempts.lock().unwrap(), 6);
        let stats = counters.stats();
        assert_eq!((stats.exported, stats.export_failed, stats.retries), (7, 0, 5));
    }

    #[test]
    fn a_batch_is_dropped_and_counted_once_its_retry_window_is_spent() {
        let flaky = Flaky {
            failures: Mutex::new(usize::MAX),
            ..Flaky::default()
        };
        let counters = SpanCounters::default();
        let exporter = CountingExporter::new(
            RetryingExporter::new(&flaky, quick(Duration::from_millis(30)), counters.clone()),
            counters.clone(),
        );
        assert!(futures::executor::block_on(exporter.export((0..3).map(span).collect())).is_err());
        let stats = counters.stats();
        assert_eq!((stats.exported, stats.export_failed), (0, 3));
        assert!(stats.retries >= 1, "{stats:?}");
    }

    #[test]
    fn at_shutdown_a_held_batch_gets_one_more_attempt_and_is_then_counted_lost() {
        let flaky = Flaky {
            failures: Mutex::new(usize::MAX),
            ..Flaky::default()
        };
        let counters = SpanCounters::default();
        counters.begin_shutdown();
        let exporter = CountingExporter::new(
            RetryingExporter::new(&flaky, RetryPolicy::default(), counters.clone()),
            counters.clone(),
        );
        let started = Instant::now();
        assert!(futures::executor::block_on(exporter.export((0..2).map(span).collect())).is_err());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no back-off at shutdown"
        );
        assert_eq!(*flaky.attempts.lock().unwrap(), 1);
        assert_eq!(counters.stats().export_failed, 2);
    }
}
