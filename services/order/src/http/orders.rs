//! The public order API: menu, place, show, list, follow (server-sent events), cancel.
//!
//! `POST /orders` writes the order, starts its workflow and enqueues `order-placed` in one
//! transaction: an accepted order always has a workflow, and an order whose commit failed has
//! neither. The customer's data goes into the order's row and nowhere else.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use http::{HeaderMap, StatusCode, header};
use opentelemetry::trace::TraceContextExt as _;
use pizza_contracts::events::{OrderItem, OrderPlaced};
use pizza_contracts::kitchen::{MAX_PIZZAS_PER_TICKET, MAX_QUANTITY_PER_LINE};
use pizza_contracts::menu;
use pizza_messaging::Envelope;
use pizza_telemetry::attributes::pizza;
use pizza_workflow::{Labels, StartOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use super::{ApiError, OrderState};
use crate::fulfillment::{FulfillmentInput, ORDER_FULFILLMENT, SOURCE};
use crate::store::{self, Customer, NewOrder, OrderRow, Status, TimelineEntry};

/// Most lines on one order.
pub(crate) const MAX_LINES: usize = 20;
/// Longest `Idempotency-Key`.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 200;
/// How often an event stream looks for new timeline entries.
const STREAM_POLL: Duration = Duration::from_millis(250);
/// How long one event stream stays open; the browser's EventSource reconnects with `Last-Event-ID`.
const STREAM_LIFETIME: Duration = Duration::from_secs(600);

pub(super) fn routes() -> Router<OrderState> {
    Router::new()
        .route("/menu", get(show_menu))
        .route("/orders", post(place).get(list))
        .route("/orders/{order_id}", get(show))
        .route("/orders/{order_id}/events", get(follow))
        .route("/orders/{order_id}/cancel", post(cancel))
}

// ---- bodies ------------------------------------------------------------------------------------------

/// `POST /orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaceOrder {
    /// Who and where.
    pub(crate) customer: CustomerIn,
    /// What.
    pub(crate) items: Vec<OrderItemIn>,
}

/// The customer, as posted.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomerIn {
    name: String,
    phone: String,
    address: AddressIn,
}

impl std::fmt::Debug for CustomerIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerIn { <redacted> }")
    }
}

/// The address, as posted.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressIn {
    street: String,
    postal_code: String,
    city: String,
}

/// One line, as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderItemIn {
    pizza: String,
    quantity: u32,
}

/// The answer to `POST /orders`.
#[derive(Debug, Serialize)]
struct Accepted {
    order_id: Uuid,
    status: Status,
    trace_id: String,
    links: Links,
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

// ---- validation --------------------------------------------------------------------------------------

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(invalid(field, "must not be empty"));
    }
    if chars > max {
        return Err(invalid(field, format!("at most {max} characters")));
    }
    Ok(())
}

/// Checks an order against the menu and the limits; returns its lines and price.
pub(crate) fn validate(order: &PlaceOrder) -> Result<(Customer, Vec<OrderItem>, u64), ApiError> {
    let c = &order.customer;
    text("/customer/name", &c.name, 100)?;
    text("/customer/phone", &c.phone, 40)?;
    text("/customer/address/street", &c.address.street, 200)?;
    text("/customer/address/postal_code", &c.address.postal_code, 20)?;
    text("/customer/address/city", &c.address.city, 100)?;
    if order.items.is_empty() {
        return Err(invalid("/items", "an order needs at least one pizza"));
    }
    if order.items.len() > MAX_LINES {
        return Err(invalid("/items", format!("at most {MAX_LINES} lines")));
    }
    let mut total = 0u64;
    let mut pizzas = 0u32;
    let mut items = Vec::with_capacity(order.items.len());
    for (index, item) in order.items.iter().enumerate() {
        let Some(pizza) = menu::find(&item.pizza) else {
            return Err(invalid(format!("/items/{index}/pizza"), "not on the menu"));
        };
        if item.quantity == 0 || item.quantity > MAX_QUANTITY_PER_LINE {
            return Err(invalid(
                format!("/items/{index}/quantity"),
                format!("must be between 1 and {MAX_QUANTITY_PER_LINE}"),
            ));
        }
        pizzas += item.quantity;
        total += pizza.price_cents * u64::from(item.quantity);
        items.push(OrderItem {
            pizza: item.pizza.clone(),
            quantity: item.quantity,
        });
    }
    if pizzas > MAX_PIZZAS_PER_TICKET {
        return Err(invalid(
            "/items",
            format!("at most {MAX_PIZZAS_PER_TICKET} pizzas per order, got {pizzas}"),
        ));
    }
    let customer = Customer {
        name: c.name.clone(),
        phone: c.phone.clone(),
        address: store::Address {
            street: c.address.street.clone(),
            postal_code: c.address.postal_code.clone(),
            city: c.address.city.clone(),
        },
    };
    Ok((customer, items, total))
}

fn order_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(raw) = path.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let order_id =
        Uuid::parse_str(&raw).map_err(|_| ApiError::BadRequest("the order id must be a UUID".into()))?;
    // The SERVER span is the current one here: tag it with the order, like every span of an order.
    tracing::Span::current().set_attribute(pizza::ORDER_ID, order_id.to_string());
    Ok(order_id)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(Some(key.to_owned()))
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
    let key = idempotency_key(&headers)?;
    let Json(request) = body.map_err(|r| ApiError::Body {
        status: r.status(),
        detail: r.body_text(),
    })?;
    let (customer, items, total_cents) = validate(&request)?;
    let span = tracing::Span::current();
    let trace_id = span.context().span().span_context().trace_id().to_string();
    let order_id = Uuid::now_v7();

    pizza_servicekit::store::pause_for_db_latency(&state.faults).await;
    let mut tx = state.pool.begin().await?;
    let new = NewOrder {
        order_id,
        items: &items,
        total_cents,
        customer: &customer,
        trace_id: &trace_id,
        idempotency_key: key.as_deref(),
    };
    if let Err(existing) = store::insert(&mut tx, new).await? {
        tx.rollback().await?;
        span.set_attribute(pizza::ORDER_ID, existing.to_string());
        let row = store::find(&state.pool, existing)
            .await?
            .ok_or(ApiError::NotFound(existing))?;
        if row.items.0 != items {
            return Err(ApiError::IdempotencyConflict);
        }
        return Ok(accepted(&state, &row)?.into_response());
    }
    span.set_attribute(pizza::ORDER_ID, order_id.to_string());
    let input = FulfillmentInput {
        order_id,
        items: items.clone(),
        total_cents,
    };
    let options = StartOptions {
        idempotency_key: Some(order_id.to_string()),
        deadline: None,
        labels: Labels::new().with(pizza::ORDER_ID, order_id.to_string()),
    };
    let run_id = state
        .engine
        .start_in(&mut tx, ORDER_FULFILLMENT, &input, options)
        .await?;
    store::set_run(&mut *tx, order_id, run_id).await?;
    let placed = Envelope::new(
        SOURCE,
        OrderPlaced {
            order_id,
            items,
            total_cents,
        },
    );
    state
        .outbox
        .enqueue_to(&mut tx, &state.settings.orders_events_topic, &placed)
        .await?;
    tx.commit().await?;
    state.engine.wake();
    tracing::info!(%order_id, %run_id, total_cents, "order accepted");
    let row = store::find(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    Ok(accepted(&state, &row)?.into_response())
}

fn accepted(state: &OrderState, row: &OrderRow) -> Result<impl IntoResponse + use<>, ApiError> {
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
    };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, this)], Json(body)))
}

/// `GET /orders/{id}`.
async fn show(
    State(state): State<OrderState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = order_id(path)?;
    let row = store::find(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    let timeline = store::timeline(&state.pool, order_id, 0).await?;
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
    let Query(query) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => {
            Some(Status::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown status {s:?}")))?)
        }
    };
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 100".into()));
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

/// `POST /orders/{id}/cancel`: asks the workflow to stop; it compensates and ends the order
/// `cancelled`. 409 once the order has ended or a driver has it.
async fn cancel(
    State(state): State<OrderState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let order_id = order_id(path)?;
    let row = store::find(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    let status = row.status()?;
    // Once a driver has the order nothing can call it back (the delivery service takes no cancel):
    // cancelling then would refund a pizza that still arrives.
    if status.is_terminal() || status.reached(Status::OutForDelivery) {
        return Err(ApiError::NotCancellable(order_id, status));
    }
    let run_id = row.run_id.ok_or(ApiError::NotCancellable(order_id, status))?;
    state.engine.cancel(run_id).await?;
    tracing::info!(%order_id, "cancellation requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": order_id, "cancel_requested": true })),
    )
        .into_response())
}

/// `GET /orders/{id}/events`: the timeline as server-sent events, from `Last-Event-ID` on, then
/// live until the order ends (`event: end`).
async fn follow(
    State(state): State<OrderState>,
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
    Ok(Sse::new(timeline_stream(state.pool.clone(), order_id, after)).keep_alive(KeepAlive::default()))
}

/// Polls the timeline (it works across replicas: whichever process wrote the entry, the stream
/// sees it), emitting each entry once, then `end` after a terminal one.
fn timeline_stream(
    pool: sqlx::PgPool,
    order_id: Uuid,
    after: i32,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Cursor {
        pool: sqlx::PgPool,
        order_id: Uuid,
        after: i32,
        pending: std::collections::VecDeque<Event>,
        ended: bool,
        deadline: tokio::time::Instant,
    }
    let cursor = Cursor {
        pool,
        order_id,
        after,
        pending: Default::default(),
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
            match store::timeline(&c.pool, c.order_id, c.after).await {
                Ok(entries) if !entries.is_empty() => {
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
                            c.pending.push_back(Event::default().event("end").data("{}"));
                            c.ended = true;
                            break;
                        }
                    }
                }
                // Nothing new. A client that reconnects after the terminal entry (its `Last-Event-ID`
                // is the last seq) must still hear `end`, or it would wait out the stream's lifetime
                // and reconnect forever.
                Ok(_) => match store::find(&c.pool, c.order_id).await {
                    Ok(Some(order)) if order.status().is_ok_and(Status::is_terminal) => {
                        c.pending.push_back(Event::default().event("end").data("{}"));
                        c.ended = true;
                    }
                    _ => tokio::time::sleep(STREAM_POLL).await,
                },
                Err(error) => {
                    tracing::warn!(%error, "event stream could not read the timeline; retrying");
                    tokio::time::sleep(STREAM_POLL * 4).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(items: serde_json::Value) -> PlaceOrder {
        serde_json::from_value(json!({
            "customer": {"name": "Ada", "phone": "+39 055 1234",
                         "address": {"street": "1 Oven Lane", "postal_code": "50100", "city": "Firenze"}},
            "items": items
        }))
        .unwrap()
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_valid_order_is_priced_from_the_menu() {
        let (_, items, total) = validate(&order(
            json!([{"pizza": "margherita", "quantity": 2}, {"pizza": "diavola", "quantity": 1}]),
        ))
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(total, 2 * 1_000 + 1_250);
    }

    #[test]
    fn rules_name_the_offending_field() {
        let e = validate(&order(json!([]))).unwrap_err();
        assert_eq!(field_of(e), "/items");
        let e = validate(&order(json!([{"pizza": "hawaii", "quantity": 1}]))).unwrap_err();
        assert_eq!(field_of(e), "/items/0/pizza");
        let e = validate(&order(json!([{"pizza": "marinara", "quantity": 0}]))).unwrap_err();
        assert_eq!(field_of(e), "/items/0/quantity");
        let e = validate(&order(json!([{"pizza": "marinara", "quantity": 21}]))).unwrap_err();
        assert_eq!(field_of(e), "/items/0/quantity");
        let three_lines_of_twenty = json!([
            {"pizza": "marinara", "quantity": 20}, {"pizza": "funghi", "quantity": 20},
            {"pizza": "diavola", "quantity": 20}]);
        assert_eq!(
            field_of(validate(&order(three_lines_of_twenty)).unwrap_err()),
            "/items"
        );
        let mut long_name = order(json!([{"pizza": "marinara", "quantity": 1}]));
        long_name.customer.name = "x".repeat(101);
        assert_eq!(field_of(validate(&long_name).unwrap_err()), "/customer/name");
    }

    #[test]
    fn menu_names_read_well() {
        assert_eq!(display_name("quattro-formaggi"), "Quattro Formaggi");
        assert_eq!(display_name("margherita"), "Margherita");
    }
}
