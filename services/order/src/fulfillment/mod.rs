//! The order workflow, `order-fulfillment`, and its child `charge-payment`, on `pizza-workflow`.
//!
//! ```text
//! validate-order ─► charge-payment (child: authorize, capture) ─► mark-paid
//!   ─► place-kitchen-ticket (HTTP, retried as step attempts) ─► wait kitchen-ready (timeout)
//!   ─► request-delivery (outbox → delivery.requests) ─► wait delivered (timeout)
//!   ─► sleep feedback-delay ─► request-feedback (completed)
//! on a timeout, a failure or a cancel: cancel-kitchen-ticket, refund-payment, cancel-order
//! ```
//!
//! A cancel follows one rule, kept in [`cancel`]: until a driver has the pizza. The workflow keeps it
//! too: when the compensation of a cancel finds the ticket picked up, it does not refund a pizza that
//! is on its way; it waits for the delivery and completes the order (and compensates after all if the
//! delivery then fails). The compensation runs to its end whatever interrupt lands on it
//! (`to_the_end`).
//!
//! # Layout
//! - this module: the workflows, their steps and the compensation.
//! - [`cancel`]: a customer's cancel, and where its rule is enforced.
//!
//! Every path ends in exactly one terminal status of the order: `request-feedback` sets `completed`,
//! `cancel-order` sets `cancelled` (or `rejected` when the order itself is invalid), and the store
//! never leaves a terminal status. The compensation runs only what the happy path did, so an order
//! cancelled before its ticket does not call the kitchen, and one never charged is never refunded.
//!
//! Customer data is not in the workflow's input: `request-delivery` reads the address from the
//! order's row inside its step, so it never lands in `workflow.runs`, in spans, or in errors.
//!
//! Side effects are keyed by the step's idempotency key: payments by a unique ledger row, the kitchen
//! ticket by the order id, outbox events by an event id derived from the key (a second attempt finds
//! the first one's row and writes none; if that row was already published and purged, the duplicate
//! record carries the same `ce_id` and the consumer's inbox absorbs it), timeline entries by
//! `Change::once`. The refund settles against the ledger: it runs only once the payment child has
//! ended, and only if a capture was recorded.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pizza_contracts::events::{DeliveryAddress, DeliveryRequested, OrderCancelled, OrderItem};
use pizza_contracts::menu;
use pizza_messaging::{Envelope, Outbox};
use pizza_servicekit::Faults;
use pizza_workflow::{
    RetryPolicy, StepContext, StepError, StepTx, WorkflowContext, WorkflowError, Workflows,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

pub mod cancel;

use crate::config::Timings;
use crate::kitchen::{CancelOutcome, KitchenClient};
use crate::store::{self, Change, Status};

/// The order workflow.
pub const ORDER_FULFILLMENT: &str = "order-fulfillment";
/// The payment child workflow.
pub const CHARGE_PAYMENT: &str = "charge-payment";
/// Signal: the kitchen reported (`order-ready`, or `kitchen-issue`).
pub const KITCHEN_READY: &str = "kitchen-ready";
/// Signal: the delivery reported (`order-completed`, or `delivery-issue`).
pub const DELIVERED: &str = "delivered";
/// The `ce_source` of the order service's events.
pub const SOURCE: &str = "/pizza/order";
/// The reason of an order its customer cancelled (also the error type of `request-delivery` refusing
/// to ask for a driver once the cancel is on file).
pub const CUSTOMER_CANCELLED: &str = "customer-cancelled";

/// The input of [`ORDER_FULFILLMENT`]: no customer data (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfillmentInput {
    /// The order.
    pub order_id: Uuid,
    /// What was ordered.
    pub items: Vec<OrderItem>,
    /// The price the customer accepted.
    pub total_cents: u64,
}

/// The input of [`CHARGE_PAYMENT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInput {
    /// The order.
    pub order_id: Uuid,
    /// How much.
    pub amount_cents: u64,
}

/// What a kitchen or delivery signal says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Ready (kitchen) or handed over (delivery).
    pub ok: bool,
    /// Why not: the short code of `kitchen-issue` or `delivery-issue`.
    pub reason: Option<String>,
}

impl Report {
    /// Ready, or handed over.
    pub fn ok() -> Self {
        Self {
            ok: true,
            reason: None,
        }
    }

    /// Not, for `reason` (an issue's short code).
    pub fn failed(reason: &str) -> Self {
        Self {
            ok: false,
            reason: Some(reason.to_owned()),
        }
    }
}

/// How an order workflow ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `completed`, `cancelled` or `rejected`.
    pub status: Status,
    /// Why, when not completed.
    pub reason: Option<String>,
}

/// What the workflows' steps use.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The order service's database.
    pub pool: PgPool,
    /// The kitchen.
    pub kitchen: KitchenClient,
    /// The order service's outbox.
    pub outbox: Outbox,
    /// The live fault plan (`payment` business failures).
    pub faults: Faults,
    /// Timeouts and delays, scaled.
    pub timings: Timings,
    /// Where delivery commands go.
    pub delivery_requests_topic: String,
    /// Where the order's own events go.
    pub orders_events_topic: String,
}

/// The workflows of the order service.
pub fn workflows(deps: Deps) -> Workflows {
    let deps = Arc::new(deps);
    let payment_deps = deps.clone();
    Workflows::new()
        .register(ORDER_FULFILLMENT, move |ctx, input: FulfillmentInput| {
            let deps = deps.clone();
            async move { fulfill(&ctx, &input, &deps).await }
        })
        .register(CHARGE_PAYMENT, move |ctx, input: PaymentInput| {
            let deps = payment_deps.clone();
            async move { charge(&ctx, &input, &deps).await }
        })
}

/// What the happy path got done, so the compensation knows what to undo.
#[derive(Debug, Default)]
struct Progress {
    paid: bool,
    ticket: bool,
    delivered: bool,
}

/// Why the happy path stopped.
#[derive(Debug)]
enum Stop {
    /// A business reason: compensate, then end the order with this status and reason.
    Business(Status, String),
    /// Stopped from outside (a cancel, the deadline): compensate and end the order `cancelled` with
    /// this reason, unless a driver already has the pizza.
    Interrupted(String),
    /// The engine's own signal (the execution parked, the lease was lost, the database failed):
    /// hand it back untouched, the run resumes later by replay.
    Engine(WorkflowError),
}

impl From<WorkflowError> for Stop {
    fn from(error: WorkflowError) -> Self {
        let cancel = |reason: &str| Stop::Business(Status::Cancelled, reason.to_owned());
        match error {
            // `request-delivery` found the customer's cancel on file.
            WorkflowError::StepFailed { error, .. } if error.error_type == CUSTOMER_CANCELLED => {
                Stop::Interrupted(CUSTOMER_CANCELLED.to_owned())
            }
            WorkflowError::StepFailed { step, error, .. } => match step.as_str() {
                "validate-order" => Stop::Business(Status::Rejected, error.error_type),
                "place-kitchen-ticket" => cancel("kitchen-unavailable"),
                _ => cancel(&format!("{step}-failed")),
            },
            WorkflowError::Cancelled => Stop::Interrupted(CUSTOMER_CANCELLED.to_owned()),
            WorkflowError::DeadlineExceeded => Stop::Interrupted("deadline-exceeded".to_owned()),
            WorkflowError::ChildFailed { error, .. } => cancel(&error.error_type),
            WorkflowError::ChildTimedOut { .. } => cancel("payment-timeout"),
            other => Stop::Engine(other),
        }
    }
}

async fn fulfill(
    ctx: &WorkflowContext,
    input: &FulfillmentInput,
    deps: &Deps,
) -> Result<Outcome, WorkflowError> {
    let mut progress = Progress::default();
    let (status, mut reason, interrupted) = match happy_path(ctx, input, deps, &mut progress).await {
        Ok(()) => {
            return Ok(Outcome {
                status: Status::Completed,
                reason: None,
            });
        }
        Err(Stop::Engine(error)) => return Err(error),
        Err(Stop::Business(status, reason)) => (status, reason, false),
        Err(Stop::Interrupted(reason)) => (Status::Cancelled, reason, true),
    };
    tracing::info!(order_id = %input.order_id, %reason, "order stops; compensating");
    if progress.delivered {
        // Handed over already: there is nothing to undo, and the customer has the pizza.
        finish(ctx, input, deps).await?;
        return Ok(Outcome {
            status: Status::Completed,
            reason: None,
        });
    }
    let order_id = input.order_id;
    if progress.ticket {
        let cancelled = to_the_end(ctx, "cancel-kitchen-ticket", compensation_policy(deps), |_, _| {
            let kitchen = deps.kitchen.clone();
            async move { kitchen.cancel_ticket(order_id).await }
        })
        .await;
        match cancelled {
            Ok(CancelOutcome::PickedUp) if interrupted => {
                // A driver had the pizza before the cancel reached the kitchen (an interrupt that did
                // not come through `cancel::request`, which refuses this case). Nothing calls it back,
                // and a refund would pay for a pizza the customer still gets: the cancel is not
                // honoured, the order goes on to its delivery.
                tracing::warn!(%order_id, %reason, "cancel after pickup; the order is delivered, not refunded");
                match ctx
                    .wait_for_signal::<Report>(DELIVERED, deps.timings.delivery_timeout)
                    .await?
                {
                    Some(Report { ok: true, .. }) => {
                        finish(ctx, input, deps).await?;
                        return Ok(Outcome {
                            status: Status::Completed,
                            reason: None,
                        });
                    }
                    // The delivery failed after all: the shop did not deliver, so it refunds.
                    None => reason = "delivery-timeout".to_owned(),
                    Some(Report {
                        ok: false,
                        reason: why,
                    }) => {
                        reason = why.unwrap_or_else(|| "delivery-issue".into());
                    }
                }
            }
            Ok(_) => {}
            // The kitchen stayed away for the whole budget. The refund and the order's end must not
            // wait on it: `order-cancelled`, which `cancel-order` publishes, cancels the ticket when
            // the kitchen reads its topic again.
            Err(WorkflowError::StepFailed { error, .. }) => {
                tracing::warn!(%order_id, %error, "kitchen ticket not cancelled; order-cancelled will do it");
            }
            Err(other) => return Err(other),
        }
    }
    if progress.paid {
        let amount = input.total_cents;
        let _refunded: bool = to_the_end(ctx, "refund-payment", compensation_policy(deps), |step, tx| {
            let pool = deps.pool.clone();
            async move {
                // The payment child may still be capturing (a cancel is delivered at its next step
                // boundary, and `capture` is its last step): wait for it to end, as step retries.
                let in_flight: bool = sqlx::query_scalar(
                    "select exists (select 1 from workflow.runs where parent_run_id = $1 \
                     and workflow_name = $2 and status not in ('completed', 'failed', 'cancelled'))",
                )
                .bind(step.run_id)
                .bind(CHARGE_PAYMENT)
                .fetch_one(&pool)
                .await
                .map_err(|e| db(e.into()))?;
                if in_flight {
                    return Err(StepError::retryable(
                        "payment_in_flight",
                        "charge-payment is still running",
                    ));
                }
                if !store::has_payment(&pool, order_id, "capture").await.map_err(db)? {
                    return Ok(false);
                }
                simulate_provider(deps.timings.payment).await;
                let mut tx = tx.transaction().await.map_err(|e| db(e.into()))?;
                store::record_payment(&mut **tx, &step.idempotency_key, order_id, "refund", amount)
                    .await
                    .map_err(db)?;
                Ok(true)
            }
        })
        .await?;
    }
    to_the_end(ctx, "cancel-order", compensation_policy(deps), |step, step_tx| {
        let (outbox, topic) = (deps.outbox.clone(), deps.orders_events_topic.clone());
        let pool = deps.pool.clone();
        let code = reason.clone();
        async move {
            let mut tx = step_tx.transaction().await.map_err(|e| db(e.into()))?;
            let event = if status == Status::Rejected {
                "order-rejected"
            } else {
                "order-cancelled"
            };
            let advanced = store::advance(&mut tx, order_id, Change::to(status, event).because(&code).once())
                .await
                .map_err(db)?;
            if advanced.is_some_and(|a| !a.before.is_terminal() && a.after == status) {
                let mut envelope = Envelope::new(
                    SOURCE,
                    OrderCancelled {
                        order_id,
                        reason: code.clone(),
                    },
                );
                envelope.attributes.id = event_id(&step.idempotency_key);
                outbox
                    .enqueue_to(&mut tx, &topic, &envelope)
                    .await
                    .map_err(|e| StepError::retryable("outbox", e.to_string()))?;
                announce_after_commit(&step_tx, &outbox, &pool);
            }
            Ok(())
        }
    })
    .await?;
    Ok(Outcome {
        status,
        reason: Some(reason),
    })
}

async fn happy_path(
    ctx: &WorkflowContext,
    input: &FulfillmentInput,
    deps: &Deps,
    progress: &mut Progress,
) -> Result<(), Stop> {
    let order_id = input.order_id;

    let items = input.items.clone();
    let accepted_total = input.total_cents;
    ctx.run("validate-order", RetryPolicy::no_retry(), |_| async move {
        validate(&items, accepted_total)
    })
    .await?;

    let payment = PaymentInput {
        order_id,
        amount_cents: input.total_cents,
    };
    // Each provider call takes `payment`; allow for a few retries of each, and for the child's worker
    // dying mid-call (its run waits out the lease before another worker resumes it).
    let payment_timeout = deps.timings.payment * 10 + deps.timings.retry_max * 2 + deps.timings.lease * 3;
    // Marked before the child runs: a cancel or a timeout can reach the parent while the child is
    // inside `capture`, which then still completes. The refund settles against the ledger.
    progress.paid = true;
    let () = ctx
        .run_workflow(CHARGE_PAYMENT, &payment, payment_timeout)
        .await?;
    ctx.run_tx("mark-paid", step_policy(deps), |_, tx| async move {
        change(tx, order_id, Change::to(Status::Paid, "payment-captured").once()).await
    })
    .await?;

    let (kitchen, items) = (deps.kitchen.clone(), input.items.clone());
    // Marked before the call: a ticket placed by an attempt whose answer was lost still gets
    // cancelled by the compensation (cancelling an unknown ticket is a no-op).
    progress.ticket = true;
    let _ticket: Uuid = ctx
        .run_tx("place-kitchen-ticket", kitchen_policy(deps), |_, tx| async move {
            let ticket = kitchen.place_ticket(order_id, &items).await?;
            change(
                tx,
                order_id,
                Change::to(Status::Paid, "kitchen-ticket-placed").once(),
            )
            .await?;
            Ok(ticket)
        })
        .await?;

    match ctx
        .wait_for_signal::<Report>(KITCHEN_READY, deps.timings.kitchen_timeout)
        .await?
    {
        None => return Err(Stop::Business(Status::Cancelled, "kitchen-timeout".into())),
        Some(Report { ok: false, reason }) => {
            return Err(Stop::Business(
                Status::Cancelled,
                reason.unwrap_or_else(|| "kitchen-issue".into()),
            ));
        }
        Some(_) => {}
    }

    let (outbox, topic) = (deps.outbox.clone(), deps.delivery_requests_topic.clone());
    let pool = deps.pool.clone();
    let ticket_id = _ticket;
    ctx.run_tx(
        "request-delivery",
        step_policy(deps),
        |step, step_tx| async move {
            let mut tx = step_tx.transaction().await.map_err(|e| db(e.into()))?;
            // The order's row lock first: a customer's cancel takes it too, so either the cancel is on
            // file now and no driver is asked for, or the cancel sees this request and asks the kitchen.
            let cancelled = store::lock_for_delivery(&mut tx, order_id)
                .await
                .map_err(db)?
                .ok_or_else(|| StepError::permanent("unknown_order", format!("order {order_id} is gone")))?;
            if cancelled {
                return Err(StepError::permanent(
                    CUSTOMER_CANCELLED,
                    "the customer cancelled before a driver was asked for",
                ));
            }
            let customer = store::customer(&mut **tx, order_id)
                .await
                .map_err(db)?
                .ok_or_else(|| StepError::permanent("unknown_order", format!("order {order_id} is gone")))?;
            let mut envelope = Envelope::new(
                SOURCE,
                DeliveryRequested {
                    order_id,
                    ticket_id,
                    address: DeliveryAddress {
                        recipient: customer.name,
                        street: customer.address.street,
                        postal_code: customer.address.postal_code,
                        city: customer.address.city,
                    },
                },
            );
            envelope.attributes.id = event_id(&step.idempotency_key);
            // An earlier attempt may have committed and died before its result was recorded: its row
            // holds this event id (unique), so enqueue only if it is not there.
            if !store::outbox_has(&mut **tx, envelope.attributes.id)
                .await
                .map_err(db)?
            {
                outbox
                    .enqueue_to(&mut tx, &topic, &envelope)
                    .await
                    .map_err(|e| StepError::retryable("outbox", e.to_string()))?;
                announce_after_commit(&step_tx, &outbox, &pool);
            }
            store::advance(
                &mut tx,
                order_id,
                Change::to(Status::Ready, store::DELIVERY_REQUESTED).once(),
            )
            .await
            .map_err(db)?;
            Ok(())
        },
    )
    .await?;

    match ctx
        .wait_for_signal::<Report>(DELIVERED, deps.timings.delivery_timeout)
        .await?
    {
        None => return Err(Stop::Business(Status::Cancelled, "delivery-timeout".into())),
        Some(Report { ok: false, reason }) => {
            return Err(Stop::Business(
                Status::Cancelled,
                reason.unwrap_or_else(|| "delivery-issue".into()),
            ));
        }
        Some(_) => progress.delivered = true,
    }

    ctx.sleep("feedback-delay", deps.timings.feedback_delay).await?;
    finish(ctx, input, deps).await?;
    Ok(())
}

/// `request-feedback`: the simulated feedback request, and the order's terminal `completed`.
async fn finish(ctx: &WorkflowContext, input: &FulfillmentInput, deps: &Deps) -> Result<(), WorkflowError> {
    let order_id = input.order_id;
    to_the_end(ctx, "request-feedback", step_policy(deps), |_, tx| async move {
        change(
            tx,
            order_id,
            Change::to(Status::Completed, "feedback-requested").once(),
        )
        .await
    })
    .await
}

/// Runs the step `name` to its end whatever arrives meanwhile: the compensation, and the last step of
/// a delivered order. An interrupt (a cancel, the deadline) that lands on it is taken, and the step is
/// called again. The engine delivers one interrupt per run, once, at the first step position not yet
/// settled, so the second call runs; a replay takes the same path, because the interrupt is recorded
/// at the position it was delivered. Without this, a cancel arriving while the compensation of a
/// failure runs would end the run `cancelled` between the kitchen and the refund, with the capture
/// kept.
async fn to_the_end<T, F, Fut>(
    ctx: &WorkflowContext,
    name: &str,
    policy: RetryPolicy,
    step: F,
) -> Result<T, WorkflowError>
where
    T: Serialize + DeserializeOwned,
    F: Fn(StepContext, StepTx) -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    match ctx.run_tx(name, policy, &step).await {
        Err(interrupt @ (WorkflowError::Cancelled | WorkflowError::DeadlineExceeded)) => {
            tracing::info!(run_id = %ctx.run_id(), step = name, %interrupt, "interrupt during a step that must finish; it goes on");
            ctx.run_tx(name, policy, &step).await
        }
        other => other,
    }
}

/// `charge-payment`: authorize, then capture, with the simulated provider. A `payment` business
/// fault declines the authorization (permanent: the card will not be better on a retry).
async fn charge(ctx: &WorkflowContext, input: &PaymentInput, deps: &Deps) -> Result<(), WorkflowError> {
    let (order_id, amount) = (input.order_id, input.amount_cents);
    for operation in ["authorize", "capture"] {
        let (faults, latency) = (deps.faults.clone(), deps.timings.payment);
        ctx.run_tx(operation, step_policy(deps), |step, tx| async move {
            simulate_provider(latency).await;
            if operation == "authorize" && faults.business_failure("payment") {
                return Err(StepError::permanent("payment-declined", "the card was declined"));
            }
            let mut tx = tx.transaction().await.map_err(|e| db(e.into()))?;
            store::record_payment(&mut **tx, &step.idempotency_key, order_id, operation, amount)
                .await
                .map_err(db)?;
            Ok(())
        })
        .await
        .map_err(|error| match error {
            // The parent reads the child's error class as the order's reason (`payment-declined`).
            WorkflowError::StepFailed { error, .. } => WorkflowError::failed(error.error_type, error.message),
            other => other,
        })?;
    }
    Ok(())
}

/// Checks the items against today's menu and the price the customer accepted.
fn validate(items: &[OrderItem], accepted_total: u64) -> Result<u64, StepError> {
    let mut total = 0u64;
    for item in items {
        let pizza = menu::find(&item.pizza).ok_or_else(|| {
            StepError::permanent("not-on-menu", format!("{} is no longer on the menu", item.pizza))
        })?;
        total += pizza.price_cents * u64::from(item.quantity);
    }
    if total != accepted_total {
        return Err(StepError::permanent(
            "price-changed",
            format!("the order costs {total} cents now, {accepted_total} were accepted"),
        ));
    }
    Ok(total)
}

/// The simulated provider's latency.
async fn simulate_provider(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// Wakes this process's relay once the step's transaction, which wrote to the outbox, has committed
/// (the outbox sends no `NOTIFY`; see `pizza_messaging::Source`).
fn announce_after_commit(step_tx: &StepTx, outbox: &Outbox, pool: &PgPool) {
    let (outbox, pool) = (outbox.clone(), pool.clone());
    step_tx.after_commit(move || outbox.announce(&pool));
}

/// One order change, in the step's transaction: it commits with the step's record, exactly once.
async fn change(tx: StepTx, order_id: Uuid, change: Change<'_>) -> Result<(), StepError> {
    let mut tx = tx.transaction().await.map_err(|e| db(e.into()))?;
    store::advance(&mut tx, order_id, change).await.map_err(db)?;
    Ok(())
}

/// The event id of an event a step publishes: the same for every attempt of the step, so a repeated
/// attempt's duplicate record is absorbed by the consumer's inbox.
pub fn event_id(step_key: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("pizza:order-step:{step_key}").as_bytes(),
    )
}

fn db(error: store::StoreError) -> StepError {
    StepError::retryable("database", error.to_string())
}

/// Database steps: quick retries, generous count.
fn step_policy(deps: &Deps) -> RetryPolicy {
    RetryPolicy {
        initial_interval: deps.timings.retry_initial,
        backoff_coefficient: 2.0,
        maximum_interval: deps.timings.retry_max,
        maximum_attempts: 8,
    }
}

/// The kitchen call: retried with exponential back-off for about a minute of scaled time.
fn kitchen_policy(deps: &Deps) -> RetryPolicy {
    RetryPolicy {
        maximum_attempts: 12,
        ..step_policy(deps)
    }
}

/// Compensation must finish: many attempts.
fn compensation_policy(deps: &Deps) -> RetryPolicy {
    RetryPolicy {
        maximum_attempts: 50,
        ..step_policy(deps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pizza: &str, quantity: u32) -> OrderItem {
        OrderItem {
            pizza: pizza.into(),
            quantity,
        }
    }

    #[test]
    fn validation_prices_the_order_and_refuses_a_changed_price_or_menu() {
        assert_eq!(validate(&[item("margherita", 2)], 2_000), Ok(2_000));
        let e = validate(&[item("margherita", 2)], 1_999).unwrap_err();
        assert_eq!((e.retryable, e.error_type.as_str()), (false, "price-changed"));
        let e = validate(&[item("hawaii", 1)], 1_000).unwrap_err();
        assert_eq!((e.retryable, e.error_type.as_str()), (false, "not-on-menu"));
    }

    #[test]
    fn engine_signals_pass_through_and_business_failures_compensate() {
        assert!(matches!(
            Stop::from(WorkflowError::Suspended),
            Stop::Engine(WorkflowError::Suspended)
        ));
        assert!(matches!(Stop::from(WorkflowError::LeaseLost), Stop::Engine(_)));
        match Stop::from(WorkflowError::Cancelled) {
            Stop::Interrupted(r) => assert_eq!(r, "customer-cancelled"),
            other => panic!("{other:?}"),
        }
        // request-delivery refusing because the customer's cancel is on file counts as the cancel.
        let refused = WorkflowError::StepFailed {
            step: "request-delivery".into(),
            attempts: 1,
            error: StepError::permanent(CUSTOMER_CANCELLED, "x"),
        };
        assert!(matches!(Stop::from(refused), Stop::Interrupted(r) if r == CUSTOMER_CANCELLED));
        let failed = WorkflowError::StepFailed {
            step: "validate-order".into(),
            attempts: 1,
            error: StepError::permanent("price-changed", "x"),
        };
        match Stop::from(failed) {
            Stop::Business(Status::Rejected, r) => assert_eq!(r, "price-changed"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_step_publishes_under_one_event_id_whatever_the_attempt() {
        assert_eq!(
            event_id("run/request-delivery/5"),
            event_id("run/request-delivery/5")
        );
        assert_ne!(event_id("run/request-delivery/5"), event_id("run/cancel-order/9"));
    }
}
