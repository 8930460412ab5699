//! Placing an order: the order's row, its workflow run and its `order-placed` event, in one
//! transaction.
//!
//! One commit makes all three true together: an accepted order always has a workflow that will end it,
//! and a failed commit leaves neither an order without a workflow nor a workflow without an order.
//! `order-placed` goes through the outbox in the same commit, so it is published once the order
//! exists and never for an order that does not.
//!
//! A new order comes with its cancel token, the capability to cancel it (`POST /orders/{id}/cancel`
//! asks for it): 256 random bits, handed back in the answer to whoever placed the order and kept only
//! as a SHA-256, so the database never holds a usable token and a repeated request cannot be answered
//! with it again.
//!
//! A client that repeats a request with the same `Idempotency-Key` (its answer was lost) gets the
//! first order back, and nothing new is written. A key is scoped by the request it came with (a
//! digest of the whole validated request, customer included): the same key with any other request is
//! a conflict, so a client that happens to reuse someone else's key with the same pizzas is refused
//! instead of being handed their order.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pizza_contracts::events::OrderPlaced;
use pizza_messaging::{Envelope, Outbox, OutboxError};
use pizza_telemetry::attributes::pizza;
use pizza_workflow::{Engine, Labels, StartOptions};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::{NewOrder, OrderRow, StoreError};
use crate::fulfillment::{FulfillmentInput, ORDER_FULFILLMENT, SOURCE};

/// What placing an order did.
#[derive(Debug)]
pub enum Placed {
    /// A new order, with its run and its `order-placed`.
    New {
        /// The order as stored.
        order: OrderRow,
        /// Its workflow run.
        run_id: Uuid,
        /// The capability to cancel it, handed out this once.
        cancel_token: CancelToken,
    },
    /// The `Idempotency-Key` was used before for the same items: the first order, unchanged.
    Repeated(OrderRow),
}

impl Placed {
    /// The order, new or repeated.
    pub fn order(&self) -> &OrderRow {
        match self {
            Placed::New { order, .. } | Placed::Repeated(order) => order,
        }
    }
}

/// Why an order was not placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The `Idempotency-Key` came with another request before.
    #[error("the Idempotency-Key was used for another request")]
    KeyReused,
    /// The order just written or found is gone (orders are never deleted: a hand-edited database).
    #[error("order {0} vanished")]
    Vanished(Uuid),
    /// The order tables failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The workflow run could not be started.
    #[error("starting the order's workflow: {0}")]
    Workflow(#[from] pizza_workflow::Error),
    /// `order-placed` could not be written to the outbox.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The operating system gave no randomness for the cancel token.
    #[error("no randomness for the cancel token: {0}")]
    Random(#[from] getrandom::Error),
}

impl From<sqlx::Error> for PlaceError {
    fn from(error: sqlx::Error) -> Self {
        PlaceError::Store(error.into())
    }
}

/// Where an order's workflow and events go.
#[derive(Debug, Clone, Copy)]
pub struct Deps<'a> {
    /// The database.
    pub pool: &'a PgPool,
    /// The workflow engine that runs [`ORDER_FULFILLMENT`].
    pub engine: &'a Engine,
    /// The order service's outbox.
    pub outbox: &'a Outbox,
    /// The topic of `order-placed`.
    pub orders_events_topic: &'a str,
}

/// Places `order` (see the module docs). The caller wakes the engine after a new order, so a local
/// worker starts it at once.
pub async fn place(deps: Deps<'_>, order: NewOrder<'_>) -> Result<Placed, PlaceError> {
    let order_id = order.order_id;
    let digest = request_digest(&order);
    let cancel_token = CancelToken::new()?;
    let mut tx = deps.pool.begin().await?;
    let mut row = match super::insert(&mut tx, order.clone(), &digest, &cancel_token.hash()).await? {
        Ok(row) => row,
        Err(holder) => return repeated(deps, tx, &order, &digest, holder).await,
    };
    let input = FulfillmentInput {
        order_id,
        items: order.items.to_vec(),
        total_cents: order.total_cents,
    };
    let options = StartOptions {
        idempotency_key: Some(order_id.to_string()),
        deadline: None,
        labels: Labels::new().with(pizza::ORDER_ID, order_id.to_string()),
    };
    let run_id = deps
        .engine
        .start_in(&mut tx, ORDER_FULFILLMENT, &input, options)
        .await?;
    super::set_run(&mut *tx, order_id, run_id).await?;
    let placed = Envelope::new(
        SOURCE,
        OrderPlaced {
            order_id,
            items: order.items.to_vec(),
            total_cents: order.total_cents,
        },
    );
    deps.outbox
        .enqueue_to(&mut tx, deps.orders_events_topic, &placed)
        .await?;
    tx.commit().await?;
    // The row as inserted, with the run it now has: no read after the commit.
    row.run_id = Some(run_id);
    deps.outbox.announce(deps.pool);
    Ok(Placed::New {
        order: row,
        run_id,
        cancel_token,
    })
}

/// The `Idempotency-Key` of `order` is held by an earlier order: that order, if it was placed for the
/// same request.
async fn repeated(
    deps: Deps<'_>,
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    order: &NewOrder<'_>,
    digest: &[u8; 32],
    holder: super::KeyHolder,
) -> Result<Placed, PlaceError> {
    tx.rollback().await?;
    let row = super::find(deps.pool, holder.order_id)
        .await?
        .ok_or(PlaceError::Vanished(holder.order_id))?;
    let same = match &holder.request_digest {
        Some(stored) => stored.as_slice() == digest.as_slice(),
        // Placed before digests were kept: the items are all there is to compare.
        None => row.items.0 == order.items,
    };
    if !same {
        return Err(PlaceError::KeyReused);
    }
    Ok(Placed::Repeated(row))
}

/// The capability to cancel one order: 32 random bytes, URL-safe base64 on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelToken(String);

impl CancelToken {
    /// A fresh token.
    pub fn new() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as a client presented it.
    pub fn presented(token: &str) -> Self {
        Self(token.to_owned())
    }

    /// The token, to hand to the client that placed the order.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What the database keeps: its SHA-256.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CancelToken(<redacted>)")
    }
}

/// The digest that scopes an `Idempotency-Key`: SHA-256 over the validated request (customer and
/// items, serialized in their fixed field order), so a re-sent request matches whatever its JSON
/// spacing or key order, and any change to who, where or what does not.
pub fn request_digest(order: &NewOrder<'_>) -> [u8; 32] {
    let canonical =
        serde_json::to_vec(&(order.customer, order.items)).expect("customer and items serialize to JSON");
    Sha256::digest(&canonical).into()
}

#[cfg(test)]
mod tests {
    use pizza_contracts::events::OrderItem;

    use super::*;
    use crate::store::{Address, Customer};

    fn customer() -> Customer {
        Customer {
            name: "Ada Testperson".into(),
            phone: "+39 055 0000".into(),
            address: Address {
                street: "1 Oven Lane".into(),
                postal_code: "50100".into(),
                city: "Firenze".into(),
            },
        }
    }

    fn items(pizza: &str) -> Vec<OrderItem> {
        vec![OrderItem {
            pizza: pizza.into(),
            quantity: 2,
        }]
    }

    async fn count(pool: &PgPool, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    }

    /// Orders, runs of the order workflow and outbox rows, in that order.
    async fn written(pool: &PgPool) -> (i64, i64, i64) {
        (
            count(pool, "select count(*) from orders.orders").await,
            count(
                pool,
                "select count(*) from workflow.runs where workflow_name = 'order-fulfillment'",
            )
            .await,
            count(
                pool,
                "select count(*) from orders.outbox where event_type = 'order-placed'",
            )
            .await,
        )
    }

    /// The order service's schema on a fresh database, and what placing needs.
    struct Fixture {
        pool: PgPool,
        engine: Engine,
        outbox: Outbox,
    }

    impl Fixture {
        async fn new(pool: PgPool) -> Self {
            crate::store::migrate(&pool).await.unwrap();
            Self {
                engine: Engine::builder(pool.clone()).build(),
                outbox: Outbox::new(crate::store::messaging_schema()),
                pool,
            }
        }

        fn deps(&self) -> Deps<'_> {
            Deps {
                pool: &self.pool,
                engine: &self.engine,
                outbox: &self.outbox,
                orders_events_topic: "orders.events",
            }
        }
    }

    fn new_order<'a>(items: &'a [OrderItem], customer: &'a Customer, key: Option<&'a str>) -> NewOrder<'a> {
        NewOrder {
            order_id: Uuid::now_v7(),
            items,
            total_cents: 2_000,
            customer,
            trace_id: "0af7651916cd43dd8448eb211c80319c",
            idempotency_key: key,
        }
    }

    #[sqlx::test(migrations = false)]
    async fn a_placed_order_has_its_run_and_its_event_from_one_commit(pool: PgPool) {
        let fixture = Fixture::new(pool).await;
        let deps = fixture.deps();
        let (items, customer) = (items("margherita"), customer());
        let placed = place(deps, new_order(&items, &customer, None)).await.unwrap();
        let Placed::New {
            order,
            run_id,
            cancel_token,
        } = placed
        else {
            panic!("{placed:?}")
        };
        assert_eq!(order.run_id, Some(run_id));
        // The token is 256 bits in URL-safe base64; the database holds only its hash.
        assert_eq!(cancel_token.reveal().len(), 43);
        let stored: Vec<u8> = sqlx::query_scalar("select cancel_token_hash from orders.orders")
            .fetch_one(&fixture.pool)
            .await
            .unwrap();
        assert_eq!(stored, cancel_token.hash());
        for (token, expected) in [(cancel_token.clone(), true), (CancelToken::new().unwrap(), false)] {
            let mut tx = fixture.pool.begin().await.unwrap();
            let found = crate::store::lock_for_cancel(&mut tx, order.order_id, &token.hash())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.token_matches, expected);
        }
        assert_eq!(order.status, "accepted");
        assert_eq!(written(&fixture.pool).await, (1, 1, 1));
    }

    #[sqlx::test(migrations = false)]
    async fn a_repeated_key_returns_the_first_order_and_writes_nothing(pool: PgPool) {
        let fixture = Fixture::new(pool).await;
        let deps = fixture.deps();
        let (margherita, funghi, customer) = (items("margherita"), items("funghi"), customer());
        let first = place(deps, new_order(&margherita, &customer, Some("k1")))
            .await
            .unwrap();
        let again = place(deps, new_order(&margherita, &customer, Some("k1")))
            .await
            .unwrap();
        assert!(matches!(again, Placed::Repeated(_)), "{again:?}");
        assert_eq!(again.order().order_id, first.order().order_id);
        let other = place(deps, new_order(&funghi, &customer, Some("k1"))).await;
        assert!(matches!(other, Err(PlaceError::KeyReused)), "{other:?}");
        // Another customer who happens to send the same key with the same pizzas is not handed the
        // first customer's order.
        let mut someone_else = customer.clone();
        someone_else.address.street = "2 Dough Street".into();
        let theirs = place(deps, new_order(&margherita, &someone_else, Some("k1"))).await;
        assert!(matches!(theirs, Err(PlaceError::KeyReused)), "{theirs:?}");
        assert_eq!(written(&fixture.pool).await, (1, 1, 1));
    }
}
