//! What one step of a service's background work does, the same way in every loop (the kitchen's
//! ovens, the delivery drivers): open a transaction after the fault plan's database latency, change
//! a row, write the event that reports it to the outbox in the same transaction, with the context
//! of a span that continues the trace stored with the row. A loop that takes a round of steps
//! decides each inside its span and writes the round's events together ([`Effects::publish_all`]),
//! each with the context captured inside its step's span.
//!
//! Continuing the stored trace is what keeps a step minutes after the request that caused it, or
//! after a restart, in the order's trace: the span's parent is the stored context, and the step's
//! outbox row carries that span's context on to the relay's `send` span.

use std::collections::BTreeMap;
use std::fmt::Display;

use pizza_contracts::events::EventData;
use pizza_messaging::{Envelope, Outbox, OutboxError};
use pizza_telemetry::attributes::{pizza, semconv};
use pizza_telemetry::propagation;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::faults::Faults;

/// Where a background loop's effects go: its service's database (behind the live fault plan's
/// database latency) and its events' topic, through the outbox.
#[derive(Debug, Clone)]
pub struct Effects {
    /// The service's database.
    pub pool: PgPool,
    /// The live fault plan (`db_latency_ms`, and the loop's business faults).
    pub faults: Faults,
    /// The outbox in the service's schema.
    pub outbox: Outbox,
    /// The topic the loop's events go to.
    pub topic: String,
    /// The CloudEvents `source` of the loop's events (`/pizza/kitchen`).
    pub source: &'static str,
}

impl Effects {
    /// A transaction, begun after the fault plan's database latency.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        crate::store::begin(&self.pool, &self.faults).await
    }

    /// Writes `event` to the outbox in `tx`, for the topic, from the source; it carries the current
    /// span's context.
    pub async fn publish<E: EventData>(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: E,
    ) -> Result<(), OutboxError> {
        self.outbox
            .enqueue_to(tx, &self.topic, &Envelope::new(self.source, event))
            .await?;
        Ok(())
    }

    /// Writes `events` to the outbox in `tx`, in one statement, each with the trace context beside
    /// it (captured inside the span of the step it reports, with
    /// [`current_carrier`](pizza_messaging::outbox::current_carrier)): for a loop that reports a
    /// round of steps at once.
    pub async fn publish_all<E: EventData>(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        events: Vec<(E, BTreeMap<String, String>)>,
    ) -> Result<(), OutboxError> {
        let envelopes: Vec<_> = events
            .into_iter()
            .map(|(event, carrier)| (Envelope::new(self.source, event), carrier))
            .collect();
        self.outbox.enqueue_all_to(tx, &self.topic, &envelopes).await
    }

    /// Wakes this process's relay after a commit that published: needed where the service's relay
    /// listens only to its own process ([`Service::WAKES`](crate::host::Service::WAKES)), harmless
    /// elsewhere (a relay woken twice looks once more).
    pub fn announce_published(&self) {
        self.outbox.announce(&self.pool);
    }
}

/// Makes `span` continue the trace whose context was stored with a row (`carrier`), and tags it
/// with the order. Call it before the span is first entered, so the stored context is its parent
/// (an empty carrier gives an empty context, and the span starts a trace of its own).
pub fn continue_stored(span: &Span, carrier: &BTreeMap<String, String>, order_id: impl Display) {
    let pairs: Vec<(String, String)> = carrier.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let _ = span.set_parent(propagation::carrier_to_context(&pairs));
    span.set_attribute(pizza::ORDER_ID, order_id.to_string());
}

/// Marks the current span failed with `reason` as its `error.type`. The span must declare
/// `otel.status_code` (as `tracing::field::Empty`).
pub fn fail_current(reason: &'static str) {
    let span = Span::current();
    span.record("otel.status_code", "ERROR");
    span.set_attribute(semconv::ERROR_TYPE, reason);
}
