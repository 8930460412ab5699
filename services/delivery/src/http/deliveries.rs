//! `GET /deliveries/{order_id}`, and the service's one error type.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use pizza_servicekit::Problem;
use pizza_servicekit::problem::Rejection;
use pizza_telemetry::attributes::pizza;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use super::AppState;
use crate::store::{self, StoreError};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/deliveries/{order_id}", get(show))
}

/// A delivery as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// The service's id for the trip.
    pub delivery_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The kitchen ticket.
    pub ticket_id: Uuid,
    /// `requested`, `on_the_way`, `delivered` or `failed`.
    pub status: String,
    /// Position updates sent so far.
    pub updates_sent: i32,
    /// Pickup attempts the kitchen answered "not yet".
    pub pickup_attempts: i32,
    /// Why it failed (`driver-failure`, `ticket-unavailable`, `pickup-timeout`).
    pub failure_reason: Option<String>,
}

/// Everything a route can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The order id in the path is not a UUID.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The order has no delivery.
    #[error("order {0} has no delivery")]
    NotFound(Uuid),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Rejected(rejection) => rejection.into(),
            ApiError::NotFound(_) => Problem::typed(
                StatusCode::NOT_FOUND,
                "/problems/unknown-delivery",
                "Unknown delivery",
                self.to_string(),
            ),
            ApiError::Store(error) => Problem::unavailable(
                error,
                "delivery database failure",
                "the delivery database is unavailable; try again",
            ),
        }
        .into_response()
    }
}

/// The delivery of an order.
async fn show(
    State(state): State<AppState>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<DeliveryView>, ApiError> {
    let Path(order_id) = path.map_err(Rejection::from)?;
    tracing::Span::current().set_attribute(pizza::ORDER_ID, order_id.to_string());
    let row = store::find(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound(order_id))?;
    Ok(Json(DeliveryView {
        delivery_id: row.delivery_id,
        order_id: row.order_id,
        ticket_id: row.ticket_id,
        status: row.status,
        updates_sent: row.progress_step,
        pickup_attempts: row.pickup_attempts,
        failure_reason: row.failure_reason,
    }))
}
