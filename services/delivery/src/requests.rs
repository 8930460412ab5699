//! What the service consumes: `delivery.requests`.

use std::collections::BTreeMap;

use pizza_contracts::events::DeliveryCommand;
use pizza_messaging::{Envelope, Handler, HandlerError};
use pizza_telemetry::propagation;
use sqlx::{PgPool, Postgres, Transaction};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::store;

/// Records a requested delivery; the driver loop does the rest (woken after each commit). The
/// context of the `process` span is stored with it, so the drive continues the order's trace. A
/// repeated request for the same order changes nothing.
#[derive(Debug, Clone)]
pub struct Requests {
    /// The service's database (whose driver loop it wakes).
    pub pool: PgPool,
}

impl Handler for Requests {
    type Event = DeliveryCommand;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<DeliveryCommand>,
    ) -> Result<(), HandlerError> {
        let DeliveryCommand::Requested(request) = &event.data;
        let carrier: BTreeMap<String, String> =
            propagation::context_to_carrier(&tracing::Span::current().context())
                .into_iter()
                .collect();
        let new = store::insert(&mut **tx, request.order_id, request.ticket_id, &carrier)
            .await
            .map_err(HandlerError::retry)?;
        tracing::info!(order_id = %request.order_id, new, "delivery requested");
        Ok(())
    }

    fn committed(&self) {
        crate::drivers::announce(&self.pool);
    }
}
