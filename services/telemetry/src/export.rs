//! Span export that never blocks the business path, holds bounded memory, and counts what it loses.
//!
//! The SDK's batch processor already exports on its own thread; what it does not do is tell the
//! application how many spans it dropped (its counter is private and only logged at shutdown). Two
//! thin wrappers make loss visible:
//!
//! - [`CountingProcessor`] sits in front of the batch processor and admits at most `capacity` spans
//!   that are ended but not yet handed to the exporter. Beyond that it drops the span itself and counts
//!   it (`queue_full`). Memory stays bounded by `capacity` spans whatever the Collector does.
//! - [`CountingExporter`] wraps the OTLP exporter and counts spans exported and spans lost to failed
//!   exports (`export_failed`: Collector down, timeout), after the exporter's own retries.
//!
//! [`SpanStats`] reads the counters; [`crate::init()`] also exports them as the metric
//! `pizza.telemetry.spans` with `outcome` = `exported` | `queue_full` | `export_failed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
        }
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

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
