//! `send {topic}` PRODUCER and `process {topic}` CONSUMER spans for Kafka, with the messaging semantic
//! conventions (v1.44, development status) and the topology switch.
//!
//! The producer side: open a [`send_span`] (its parent is the current span, or a context restored from
//! an outbox row), then [`inject`] its context into the record's headers. The consumer side:
//! [`process_span`] reads the producer's context from the headers and draws the edge as the
//! [`Topology`] says:
//!
//! | topology | parent of `process` | link |
//! |---|---|---|
//! | `continuous` | the producer's `send` span | the `send` span (`pizza.link.reason=producer`) |
//! | `linked` | none: a new trace | the `send` span |
//!
//! The link is set before the span starts, so a sampler sees it (see [`crate::sampler`]). When no
//! valid context arrived (none sent, a malformed header, or a dropped edge) the span is a new root
//! without a link, and the consumer goes on.

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, KeyValue};
use rdkafka::message::{Headers, OwnedHeaders};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::attributes::{pizza, semconv};
use crate::config::Topology;
use crate::propagation;

/// The messaging system's name in `messaging.system`.
pub const SYSTEM: &str = "kafka";

/// What a `send` span describes.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The record key (the order id on every pizza topic).
    pub key: Option<&'a str>,
    /// The message id (the CloudEvents `id`).
    pub message_id: Option<&'a str>,
    /// The order the message belongs to, for `pizza.order.id`.
    pub order_id: Option<&'a str>,
    /// The CloudEvents type, for `pizza.event.type`.
    pub event_type: Option<&'a str>,
}

/// What a `process` span describes.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The record key.
    pub key: Option<&'a str>,
    /// The message id, when the consumer has decoded it.
    pub message_id: Option<&'a str>,
    /// The consumer group.
    pub consumer_group: &'a str,
    /// The payload size.
    pub body_size: usize,
}

/// Opens a `send {topic}` PRODUCER span. Its parent is `parent` when given (a context restored from an
/// outbox row, so the relay's publish continues the trace of the request that wrote the row),
/// otherwise the current span.
pub fn send_span(msg: &Outgoing<'_>, parent: Option<&Context>) -> Span {
    let span = tracing::info_span!(
        target: "pizza_telemetry::kafka",
        "kafka.send",
        otel.name = %format!("send {}", msg.topic),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        // A freshly created span has not started, so this cannot fail with AlreadyStarted; without the
        // OpenTelemetry layer (telemetry disabled) there is nothing to parent.
        let _ = span.set_parent(parent.clone());
    }
    span.set_attribute(semconv::MESSAGING_SYSTEM, SYSTEM);
    span.set_attribute(semconv::MESSAGING_OPERATION_TYPE, "send");
    span.set_attribute(semconv::MESSAGING_OPERATION_NAME, "send");
    span.set_attribute(semconv::MESSAGING_DESTINATION_NAME, msg.topic.to_owned());
    set_common(&span, msg.key, msg.message_id, msg.order_id);
    if let Some(t) = msg.event_type {
        span.set_attribute(pizza::EVENT_TYPE, t.to_owned());
    }
    span
}

/// Adds the `send` span's context to the record headers, unless the edge `kafka:{topic}` is dropped by
/// the fault switch (then the span is marked `pizza.trace.context_dropped`).
pub fn inject(span: &Span, topic: &str, headers: OwnedHeaders) -> OwnedHeaders {
    let edge = propagation::kafka_edge(topic);
    let (headers, injected) = propagation::inject_kafka(&span.context(), &edge, headers);
    if !injected && propagation::is_dropped(&edge) {
        span.set_attribute(pizza::CONTEXT_DROPPED, true);
        span.set_attribute(pizza::FAULT_EDGE, edge);
    }
    headers
}

/// Records where the broker put the record.
pub fn record_sent(span: &Span, partition: i32, offset: i64) {
    span.set_attribute(semconv::MESSAGING_DESTINATION_PARTITION_ID, partition.to_string());
    span.set_attribute(semconv::MESSAGING_KAFKA_OFFSET, offset);
}

/// Opens a `process {topic}` CONSUMER span for a received record, parented and linked per `topology`.
pub fn process_span<H: Headers>(msg: &Incoming<'_>, headers: Option<&H>, topology: Topology) -> Span {
    let producer = propagation::extract_kafka(headers);
    process_span_from(msg, &producer, topology)
}

/// Like [`process_span`], with the producer's context already extracted.
pub fn process_span_from(msg: &Incoming<'_>, producer: &Context, topology: Topology) -> Span {
    let span = tracing::info_span!(
        target: "pizza_telemetry::kafka",
        "kafka.process",
        otel.name = %format!("process {}", msg.topic),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    link_to_cause(&span, producer, topology, "producer");
    span.set_attribute(semconv::MESSAGING_SYSTEM, SYSTEM);
    span.set_attribute(semconv::MESSAGING_OPERATION_TYPE, "process");
    span.set_attribute(semconv::MESSAGING_OPERATION_NAME, "process");
    span.set_attribute(semconv::MESSAGING_DESTINATION_NAME, msg.topic.to_owned());
    span.set_attribute(
        semconv::MESSAGING_DESTINATION_PARTITION_ID,
        msg.partition.to_string(),
    );
    span.set_attribute(semconv::MESSAGING_KAFKA_OFFSET, msg.offset);
    span.set_attribute(
        semconv::MESSAGING_CONSUMER_GROUP_NAME,
        msg.consumer_group.to_owned(),
    );
    span.set_attribute(semconv::MESSAGING_MESSAGE_BODY_SIZE, msg.body_size as i64);
    set_common(&span, msg.key, msg.message_id, None);
    span
}

/// Draws an asynchronous edge on a span that has not started yet: in `continuous` the cause becomes
/// the parent and is also linked; in `linked` the span becomes a new root linked to the cause. With no
/// valid cause (none sent, malformed, or dropped) the span is a new root without a link.
///
/// Shared by Kafka consumers and workflow executions, so both edges follow one rule.
pub fn link_to_cause(span: &Span, cause: &Context, topology: Topology, reason: &'static str) {
    let cause_sc = cause.span().span_context().clone();
    // Parent first: an explicit empty context makes the span a root even if a tracing span is current.
    let parent = match topology {
        Topology::Continuous if cause_sc.is_valid() => cause.clone(),
        _ => Context::new(),
    };
    let _ = span.set_parent(parent);
    if cause_sc.is_valid() {
        span.add_link_with_attributes(cause_sc, vec![KeyValue::new(pizza::LINK_REASON, reason)]);
    }
    span.set_attribute(pizza::TRACE_TOPOLOGY, topology.as_str());
}

fn set_common(span: &Span, key: Option<&str>, message_id: Option<&str>, order_id: Option<&str>) {
    if let Some(k) = key {
        span.set_attribute(semconv::MESSAGING_KAFKA_MESSAGE_KEY, k.to_owned());
    }
    if let Some(id) = message_id {
        span.set_attribute(semconv::MESSAGING_MESSAGE_ID, id.to_owned());
    }
    if let Some(order) = order_id {
        span.set_attribute(pizza::ORDER_ID, order.to_owned());
    }
}

/// Marks a span as failed with a low-cardinality error type (`otel.status_code=ERROR`).
pub fn record_error(span: &Span, error_type: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
}
