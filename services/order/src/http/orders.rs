//! The public order API: menu, place, show, list, cancel; the event stream is in [`super::follow`].
//!
//! The handlers are thin: they read the request, call the domain ([`input`] checks an order,
//! [`placing`] writes it with its workflow and its event in one transaction) and shape the answer.
//! The customer's data goes into the order's row and nowhere else.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::{HeaderMap, StatusCode, header};
use opentelemetry::trace::TraceContextExt as _;
use pizza_contracts::events::OrderItem;
use pizza_contracts::menu;
use pizza_servicekit::problem::Rejection;
use pizza_telemetry::attributes::pizza;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use super::feed::TimelineFeed;
use super::input::{self, PlaceOrder};
use super::{ApiError, OrderState, follow};
use crate::fulfillment::cancel;
use crate::kitchen::KitchenClient;
use crate::store::placing::{self, CancelToken, Placed};
use crate::store::{self, NewOrder, OrderRow, Status, TimelineEntry};

/// The routes; `kitchen` answers a cancel's question whether a driver has the pizza, `feed` wakes the
/// event streams.
pub(super) fn routes(kitchen: KitchenClient, feed: TimelineFeed) -> Router<OrderState> {
    Router::new()
        .route("/menu", get(show_menu))
        .route("/orders", post(place).get(list))
        .route("/orders/{order_id}", get(show))
        .route(
            "/orders/{order_id}/events",
            get(follow::follow).layer(Extension(feed)),
        )
        .route(
            "/orders/{order_id}/cancel",
            post(cancel).layer(Extension(kitchen)),
        )
}

// ---- bodies ------------------------------------------------------------------------------------------

/// The answer to `POST /orders`.
#[derive(Debug, Serialize)]
struct Accepted {
    order_id: Uuid,
    status: Status,
    trace_id: String,
    links: Links,
    /// The capability to cancel the order: in the first answer only (a repeated request is answered
    /// without it; only its hash is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_token: Option<String>,
}

/// `POST /orders/{id}/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    /// The token `POST /orders` answered with.
    cancel_token: String,
}

#[derive(Debug, Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: String,
    events: String,
    trace: String,
}

/// `GET /orders/{id}`.
#[derive(Debug, Serialize)]
struct OrderView {
    order_id: Uuid,
    status: Status,
    terminal: bool,
    reason: Option<String>,
    items: Vec<OrderItem>,
    total_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    trace_id: String,
    trace_url: String,
    timeline: Vec<TimelineEntry>,
}

/// One order in `GET /orders`.
#[derive(Debug, Serialize)]
struct OrderSummary {
    order_id: Uuid,
    status: Status,
    total_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

// ---- helpers ----------------------------------------------------------------------------------------

/// The order id in the path; tags the SERVER span with it.
pub(super) fn order_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(raw) = path.map_err(Rejection::from)?;
    let order_id =
        Uuid::parse_str(&raw).map_err(|_| ApiError::bad_request("the order id must be a UUID".into()))?;
    // The SERVER span is the current one here: tag it with the order, like every span of an order.
    tracing::Span::current().set_attribute(pizza::ORDER_ID, order_id.to_string());
    Ok(order_id)
}

fn trace_url(state: &OrderState, trace_id: &str) -> String {
    format!(
        "{}/trace/{trace_id}",
        state.settings.jaeger_ui_url.trim_end_matches('/')
    )
}

// ---- handlers ----------------------------------------------------------------------------------------

/// `GET /menu`.
async fn show_menu() -> Json<serde_json::Value> {
    let pizzas: Vec<_> = menu::PIZZAS
        .iter()
        .map(|p| json!({"id": p.id, "name": display_name(p.id), "price_cents": p.price_cents}))
        .collect();
    Json(json!({ "pizzas": pizzas }))
}

/// `quattro-formaggi` → `Quattro Formaggi`.
fn display_name(id: &str) -> String {
    id.split('-')
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `POST /orders`: 202 with the order's id, trace id and links.
async fn place(
    State(state): State<OrderState>,
    headers: HeaderMap,
    body: Result<Json<PlaceOrder>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = input::idempotency_key(&headers)?;
    let Json(request) = body.map_err(Rejection::from)?;
    let order = input::validate(&request)?;
    let span = tracing::Span::current();
    let trace_id = span.context().span().span_context().trace_id().to_string();

    pizza_servicekit::store::pause_for_db_latency(&state.faults).await;
    let new = NewOrder {
        order_id: Uuid::now_v7(),
        items: &order.items,
        total_cents: order.total_cents,
        customer: &order.customer,
        trace_id: &trace_id,
        idempotency_key: key.as_deref(),
    };
    let deps = placing::Deps {
        pool: &state.pool,
        engine: &state.engine,
        outbox: &state.outbox,
        orders_events_topic: &state.settings.orders_events_topic,
    };
    let placed = placing::place(deps, new).await?;
    let row = placed.order();
    span.set_attribute(pizza::ORDER_ID, row.order_id.to_string());
    let token = match &placed {
        Placed::New {
            order,
            run_id,
            cancel_token,
        } => {
            state.engine.wake();
            tracing::info!(order_id = %order.order_id, %run_id, total_cents = order.total_cents, "order accepted");
            Some(cancel_token.reveal().to_owned())
        }
        Placed::Repeated(_) => None,
    };
    Ok(accepted(&state, row, token)?.into_response())
}

fn accepted(
    state: &OrderState,
    row: &OrderRow,
    cancel_token: Option<String>,
) -> Result<impl IntoResponse + use<>, ApiError> {
    let this = format!("/orders/{}", row.order_id);
    let body = Accepted {
        order_id: row.order_id,
        status: row.status()?,
        trace_id: row.trace_id.clone(),
        links: Links {
            events: format!("{this}/events"),
            trace: trace_url(state, &row.trace_id),
            this: this.clone(),
        },
        cancel_token,
    };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, this)], Json(body)))
}

/// `GET /orders/{id}`.
async fn show(
    State(state): State<OrderState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = order_id(path)?;
    let (row, timeline) = store::find_with_timeline(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    let status = row.status()?;
    Ok(Json(OrderView {
        order_id,
        status,
        terminal: status.is_terminal(),
        reason: row.reason.clone(),
        items: row.items.0.clone(),
        total_cents: row.total_cents,
        created_at: row.created_at,
        updated_at: row.updated_at,
        trace_url: trace_url(&state, &row.trace_id),
        trace_id: row.trace_id,
        timeline,
    }))
}

/// `GET /orders?status=&limit=`.
async fn list(
    State(state): State<OrderState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(Rejection::from)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => {
            Some(Status::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown status {s:?}")))?)
        }
    };
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 100".into()));
    }
    let rows = store::list(&state.pool, status, limit).await?;
    let orders = rows
        .into_iter()
        .map(|r| {
            Ok(OrderSummary {
                order_id: r.order_id,
                status: r.status()?,
                total_cents: r.total_cents,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({ "orders": orders })))
}

/// `POST /orders/{id}/cancel` with the order's cancel token: asks the workflow to stop; it
/// compensates and ends the order `cancelled`. 403 without the right token, 409 once the order has
/// ended or a driver has it (the rule: [`crate::fulfillment::cancel`]), 503 when the kitchen cannot
/// say.
async fn cancel(
    State(state): State<OrderState>,
    Extension(kitchen): Extension<KitchenClient>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<CancelRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let order_id = order_id(path)?;
    let Json(request) = body.map_err(Rejection::from)?;
    let deps = cancel::Deps {
        pool: &state.pool,
        engine: &state.engine,
        kitchen: &kitchen,
    };
    cancel::request(deps, order_id, &CancelToken::presented(&request.cancel_token)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": order_id, "cancel_requested": true })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu_names_read_well() {
        assert_eq!(display_name("quattro-formaggi"), "Quattro Formaggi");
        assert_eq!(display_name("margherita"), "Margherita");
    }
}
