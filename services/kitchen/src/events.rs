//! What the kitchen consumes: `orders.events`, for cancellations.

use pizza_contracts::events::OrderEvent;
use pizza_messaging::{Envelope, Handler, HandlerError};
use sqlx::{PgPool, Postgres, Transaction};

use crate::store;

/// Cancels the ticket of a cancelled order (if it has one and it was not picked up). Other events
/// on the topic are acknowledged and ignored. Idempotent by the consumer's inbox, and harmless even
/// without it: cancelling a cancelled ticket changes nothing. After each commit it wakes the ovens
/// (a cancelled cooking ticket frees one).
#[derive(Debug, Clone)]
pub struct Cancellations {
    /// The kitchen's database (whose ovens it wakes).
    pub pool: PgPool,
}

impl Handler for Cancellations {
    type Event = OrderEvent;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<OrderEvent>,
    ) -> Result<(), HandlerError> {
        if let OrderEvent::Cancelled(cancelled) = &event.data {
            let changed = store::mark_cancelled(&mut **tx, cancelled.order_id)
                .await
                .map_err(HandlerError::retry)?;
            tracing::info!(order_id = %cancelled.order_id, changed, "order cancelled");
        }
        Ok(())
    }

    fn committed(&self) {
        crate::ovens::announce(&self.pool);
    }
}
