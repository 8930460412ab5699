//! `POST /tickets`, `GET /tickets/{order_id}`, pickup and cancel.
//!
//! The request's trace context is stored with the ticket: the ovens pick the ticket up later, in
//! another task (maybe another process), and continue that trace from it.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use pizza_contracts::events::OrderItem;
use pizza_contracts::kitchen::{
    CreateTicket, MAX_PIZZAS_PER_TICKET, MAX_QUANTITY_PER_LINE, Ticket, TicketStatus,
};
use pizza_contracts::menu;
use pizza_servicekit::problem::Rejection;
use pizza_telemetry::attributes::pizza;
use pizza_telemetry::propagation;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::{ovens, store};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tickets", post(create))
        .route("/tickets/{order_id}", get(show))
        .route("/tickets/{order_id}/pickup", post(pickup))
        .route("/tickets/{order_id}/cancel", post(cancel))
}

/// Checks the items against the menu and the limits.
pub(crate) fn validate(items: &[OrderItem]) -> Result<(), ApiError> {
    let invalid = |field: String, message: String| Err(ApiError::InvalidTicket { field, message });
    if items.is_empty() {
        return invalid("/items".into(), "a ticket needs at least one item".into());
    }
    let mut total = 0u32;
    for (index, item) in items.iter().enumerate() {
        if menu::find(&item.pizza).is_none() {
            return Err(ApiError::UnknownPizza {
                index,
                pizza: item.pizza.clone(),
            });
        }
        if item.quantity == 0 {
            return invalid(format!("/items/{index}/quantity"), "must be at least 1".into());
        }
        if item.quantity > MAX_QUANTITY_PER_LINE {
            return invalid(
                format!("/items/{index}/quantity"),
                format!("at most {MAX_QUANTITY_PER_LINE} of one pizza per ticket"),
            );
        }
        total = total.saturating_add(item.quantity);
    }
    if total > MAX_PIZZAS_PER_TICKET {
        return invalid(
            "/items".into(),
            format!("at most {MAX_PIZZAS_PER_TICKET} pizzas per ticket, got {total}"),
        );
    }
    Ok(())
}

fn order_id(path: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(order_id) = path.map_err(Rejection::from)?;
    // The SERVER span is the current one here: tag it with the order, like every span of an order.
    tracing::Span::current().set_attribute(pizza::ORDER_ID, order_id.to_string());
    Ok(order_id)
}

/// Creates the ticket of an order: 201 with the new ticket, 200 with the existing one if the same
/// order and items were sent before, 409 if the order has a ticket with other items.
async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateTicket>, JsonRejection>,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    let Json(request) = body.map_err(Rejection::from)?;
    tracing::Span::current().set_attribute(pizza::ORDER_ID, request.order_id.to_string());
    validate(&request.items)?;
    let carrier: BTreeMap<String, String> =
        propagation::context_to_carrier(&tracing::Span::current().context())
            .into_iter()
            .collect();
    pizza_servicekit::store::pause_for_db_latency(&state.faults).await;
    if let Some(row) = store::insert(&state.pool, request.order_id, &request.items, &carrier).await? {
        ovens::announce(&state.pool);
        tracing::info!(ticket_id = %row.ticket_id, "ticket queued");
        return Ok((StatusCode::CREATED, Json(row.to_ticket()?)));
    }
    let existing = store::find(&state.pool, request.order_id)
        .await?
        .ok_or(ApiError::NotFound(request.order_id))?;
    if existing.items.0 == request.items {
        Ok((StatusCode::OK, Json(existing.to_ticket()?)))
    } else {
        Err(ApiError::Conflict(request.order_id))
    }
}

/// The ticket of an order.
async fn show(
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Ticket>, ApiError> {
    let order_id = order_id(path)?;
    let row = store::find(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    Ok(Json(row.to_ticket()?))
}

/// A driver takes a ready ticket. Picking up a picked-up ticket again answers 200, so a driver whose
/// first answer was lost can simply retry.
async fn pickup(
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Ticket>, ApiError> {
    let order_id = order_id(path)?;
    let mut tx = pizza_servicekit::store::begin(&state.pool, &state.faults)
        .await
        .map_err(store::StoreError::from)?;
    let row = store::lock(&mut *tx, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    let mut ticket = row.to_ticket()?;
    match ticket.status {
        TicketStatus::Ready => {
            store::mark_picked_up(&mut *tx, order_id).await?;
            ticket.status = TicketStatus::PickedUp;
        }
        TicketStatus::PickedUp => {}
        status @ (TicketStatus::Queued | TicketStatus::Cooking) => {
            return Err(ApiError::NotReady(order_id, status));
        }
        status @ (TicketStatus::Cancelled | TicketStatus::Failed) => {
            return Err(ApiError::Closed(order_id, status));
        }
    }
    tx.commit().await.map_err(store::StoreError::from)?;
    Ok(Json(ticket))
}

/// Cancels a ticket unless it was picked up. Cancelling a cancelled ticket answers 200.
async fn cancel(
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Ticket>, ApiError> {
    let order_id = order_id(path)?;
    let mut tx = pizza_servicekit::store::begin(&state.pool, &state.faults)
        .await
        .map_err(store::StoreError::from)?;
    let row = store::lock(&mut *tx, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    let mut ticket = row.to_ticket()?;
    match ticket.status {
        TicketStatus::PickedUp => return Err(ApiError::Closed(order_id, TicketStatus::PickedUp)),
        TicketStatus::Cancelled => {}
        _ => {
            store::mark_cancelled(&mut *tx, order_id).await?;
            ticket.status = TicketStatus::Cancelled;
        }
    }
    tx.commit().await.map_err(store::StoreError::from)?;
    // A cancelled cooking ticket freed an oven.
    ovens::announce(&state.pool);
    Ok(Json(ticket))
}
