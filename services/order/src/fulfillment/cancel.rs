//! A customer's cancel, and the rule it follows: **an order can be cancelled until a driver has picked
//! it up; after that the cancel is refused (409) and the order is delivered and paid.**
//!
//! The rule is enforced where the truth is, synchronously, before the customer is answered:
//! - Before the delivery is requested, no driver can have the pizza. The cancel marks the order's row
//!   (`cancel_requested_at`) under the row's lock, and `request-delivery` takes the same lock first
//!   and refuses to ask for a driver once the mark is there. Whichever commits first wins: either the
//!   delivery was requested before the cancel looked (next case), or it never will be.
//! - Once the delivery is requested, only the kitchen knows whether a driver has the pizza: pickup is
//!   a transaction on the kitchen's ticket. The cancel cancels the ticket at the kitchen first. If
//!   that works, no driver can pick it up any more (the kitchen refuses a cancelled ticket) and the
//!   cancel goes on; if the kitchen answers that the ticket was picked up, the cancel is refused. The
//!   order's own status is not asked: `out_for_delivery` reaches it later (outbox, Kafka, consumer),
//!   and a cancel read against it would refund a pizza that is on its way.
//! - Only then is the workflow asked to stop; its compensation cancels the ticket (already done, or
//!   never placed), refunds the capture and ends the order `cancelled`.
//!
//! The workflow keeps the rule too, for interrupts that do not come through here (an operator's
//! `Engine::cancel`, a deadline): its compensation does not refund a ticket the kitchen reports
//! picked up, and waits for the delivery instead (see [`super`]).

use pizza_workflow::{Engine, StepError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::kitchen::{CancelOutcome, KitchenClient};
use crate::store::placing::CancelToken;
use crate::store::{self, Status, StoreError};

/// Why a cancel was not requested.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such order.
    #[error("no order {0}")]
    NotFound(Uuid),
    /// The token is not the order's.
    #[error("the cancel token does not match order {0}")]
    WrongToken(Uuid),
    /// The order ended, is on hold, or the order's status says a driver has it.
    #[error("order {0} is {1}")]
    TooLate(Uuid, Status),
    /// The kitchen reports the ticket picked up: a driver has the pizza.
    #[error("a driver has picked up order {0}")]
    PickedUp(Uuid),
    /// The kitchen did not answer; nothing was changed, the cancel can be tried again.
    #[error("the kitchen did not answer: {0}")]
    KitchenUnavailable(StepError),
    /// The order tables failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The workflow engine failed.
    #[error(transparent)]
    Workflow(#[from] pizza_workflow::Error),
}

impl From<sqlx::Error> for CancelError {
    fn from(error: sqlx::Error) -> Self {
        CancelError::Store(error.into())
    }
}

/// What a cancel needs.
#[derive(Debug, Clone, Copy)]
pub struct Deps<'a> {
    /// The order service's database.
    pub pool: &'a PgPool,
    /// The engine that runs the order's workflow.
    pub engine: &'a Engine,
    /// The kitchen, which knows whether a driver has the pizza.
    pub kitchen: &'a KitchenClient,
}

/// Asks the order's workflow to stop, if the rule in the module docs allows it.
pub async fn request(deps: Deps<'_>, order_id: Uuid, token: &CancelToken) -> Result<(), CancelError> {
    let mut tx = deps.pool.begin().await?;
    let order = store::lock_for_cancel(&mut tx, order_id, &token.hash())
        .await?
        .ok_or(CancelError::NotFound(order_id))?;
    if !order.token_matches {
        return Err(CancelError::WrongToken(order_id));
    }
    let status = Status::parse(&order.status).ok_or(StoreError::UnknownStatus(order_id, order.status))?;
    let run_id = match order.run_id {
        Some(run_id) if !status.reached(Status::OutForDelivery) => run_id,
        _ => return Err(CancelError::TooLate(order_id, status)),
    };
    if order.delivery_requested {
        // Let go of the row before calling the kitchen: nothing in this service can put the pizza
        // in a driver's hands any more; only the kitchen decides now.
        tx.commit().await?;
        match deps.kitchen.cancel_ticket(order_id).await {
            Ok(CancelOutcome::Cancelled | CancelOutcome::NoTicket) => {}
            Ok(CancelOutcome::PickedUp) => return Err(CancelError::PickedUp(order_id)),
            Err(error) => return Err(CancelError::KitchenUnavailable(error)),
        }
        let mut tx = deps.pool.begin().await?;
        store::mark_cancel_requested(&mut tx, order_id).await?;
        tx.commit().await?;
    } else {
        store::mark_cancel_requested(&mut tx, order_id).await?;
        tx.commit().await?;
    }
    deps.engine.cancel(run_id).await?;
    tracing::info!(%order_id, after_delivery_request = order.delivery_requested, "cancellation requested");
    Ok(())
}
