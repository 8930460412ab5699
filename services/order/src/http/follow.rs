//! `GET /orders/{id}/events`: an order's timeline as server-sent events, from `Last-Event-ID` on,
//! then live until the order ends (`event: end`).
//!
//! A stream reads the timeline when the process's one listener says its order changed
//! ([`super::feed`]), not on a timer of its own. Each process serves a bounded number of streams at
//! once; beyond that the answer is 429 with `Retry-After`, and the browser's `EventSource` (or the
//! UI's fallback to polling) tries again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use http::HeaderMap;
use uuid::Uuid;

use super::feed::{Subscription, TimelineFeed};
use super::orders::order_id;
use super::{ApiError, OrderState};
use crate::store::{self, Status};

/// How long one event stream stays open; the browser's EventSource reconnects with `Last-Event-ID`.
const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// The pause after a failed read of the timeline.
const READ_RETRY: Duration = Duration::from_secs(1);

/// `GET /orders/{id}/events`: the timeline as server-sent events, from `Last-Event-ID` on, then
/// live until the order ends (`event: end`). 429 when the process serves all the streams it may.
pub(super) async fn follow(
    State(state): State<OrderState>,
    Extension(feed): Extension<TimelineFeed>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let order_id = order_id(path)?;
    store::find(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
        .max(0);
    let subscription = feed
        .subscribe(order_id)
        .map_err(|full| ApiError::TooManyStreams(full.0))?;
    Ok(
        Sse::new(timeline_stream(state.pool.clone(), subscription, order_id, after))
            .keep_alive(KeepAlive::default()),
    )
}

/// Emits each timeline entry after `after` once, then `end` after a terminal one; reads when the
/// subscription says the order changed.
fn timeline_stream(
    pool: sqlx::PgPool,
    subscription: Subscription,
    order_id: Uuid,
    after: i32,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Cursor {
        pool: sqlx::PgPool,
        subscription: Subscription,
        order_id: Uuid,
        after: i32,
        pending: VecDeque<Event>,
        ended: bool,
        deadline: tokio::time::Instant,
    }
    let cursor = Cursor {
        pool,
        subscription,
        order_id,
        after,
        pending: VecDeque::new(),
        ended: false,
        deadline: tokio::time::Instant::now() + STREAM_LIFETIME,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok(event), c));
            }
            if c.ended || tokio::time::Instant::now() >= c.deadline {
                return None;
            }
            // Seen before reading: whatever commits after the read wakes the wait below.
            c.subscription.mark_seen();
            match read(&c.pool, c.order_id, c.after).await {
                Ok(Read::Entries(entries)) => {
                    for entry in entries {
                        c.after = entry.seq;
                        let terminal = Status::parse(&entry.status).is_some_and(Status::is_terminal);
                        let data = serde_json::to_string(&entry).unwrap_or_else(|_| "{}".into());
                        c.pending.push_back(
                            Event::default()
                                .id(entry.seq.to_string())
                                .event("status")
                                .data(data),
                        );
                        if terminal {
                            c.pending.push_back(end());
                            c.ended = true;
                            break;
                        }
                    }
                }
                // A client that reconnects after the terminal entry (its `Last-Event-ID` is the last
                // seq) must still hear `end`, or it would wait out the stream's lifetime and
                // reconnect forever.
                Ok(Read::Ended) => {
                    c.pending.push_back(end());
                    c.ended = true;
                }
                Ok(Read::Nothing) => {
                    tokio::select! {
                        () = c.subscription.changed() => {}
                        () = tokio::time::sleep_until(c.deadline) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "event stream could not read the timeline; retrying");
                    tokio::time::sleep(READ_RETRY).await;
                }
            }
        }
    })
}

/// What a stream found.
enum Read {
    /// New entries.
    Entries(Vec<store::TimelineEntry>),
    /// Nothing new, and the order has ended.
    Ended,
    /// Nothing new.
    Nothing,
}

async fn read(pool: &sqlx::PgPool, order_id: Uuid, after: i32) -> Result<Read, store::StoreError> {
    let entries = store::timeline(pool, order_id, after).await?;
    if !entries.is_empty() {
        return Ok(Read::Entries(entries));
    }
    let ended = store::find(pool, order_id)
        .await?
        .is_some_and(|order| order.status().is_ok_and(Status::is_terminal));
    Ok(if ended { Read::Ended } else { Read::Nothing })
}

fn end() -> Event {
    Event::default().event("end").data("{}")
}
