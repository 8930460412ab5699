//! What happened to the orders: every accepted order in exactly one terminal state, nothing lost,
//! no side effect twice.
//!
//! The order API says where each order ended ([`crate::driver::settle`]); the services' tables say
//! what was done for it. Each duplicate check is one SQL query over the run's order ids, counting
//! rows that the platform's guarantees say exist at most once per order:
//!
//! | check | table | at most one per order |
//! |---|---|---|
//! | `kitchen-ticket` | `kitchen.tickets` | ticket |
//! | `delivery` | `delivery.deliveries` | delivery |
//! | `order-ready-event` | `kitchen.outbox` | `order-ready` event written |
//! | `order-completed-event` | `delivery.outbox` | `order-completed` event written |
//! | `payment-capture` | `orders.payments` | capture |
//! | `workflow-run` | `workflow.runs` | `order-fulfillment` run |
//! | `terminal-state` | `orders.timeline` | terminal timeline entry |
//!
//! Redelivered Kafka records are expected (at-least-once); they must find the inbox and have no
//! second effect, which is exactly what these counts see.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::driver::OrderState;

/// One duplicate check: its name, the SQL, and the orders where it found more than one row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DuplicateCheck {
    /// The check's name (see the module table).
    pub check: String,
    /// Orders with more than one row, and how many rows.
    pub duplicates: BTreeMap<Uuid, i64>,
    /// Why the check could not run (a missing table on this platform), if so.
    pub error: Option<String>,
}

/// The verdict on the orders of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrdersVerdict {
    /// Orders the API accepted.
    pub accepted: usize,
    /// Final status → orders.
    pub by_status: BTreeMap<String, usize>,
    /// Accepted orders not in a terminal state (or unknown to the API) after the wait.
    pub lost: Vec<Uuid>,
    /// Side effects found more than once, summed over every check.
    pub duplicated_side_effects: u64,
    /// The checks, with their findings.
    pub checks: Vec<DuplicateCheck>,
    /// Completed orders with no kitchen ticket or no delivery (an effect that never happened).
    pub completed_without_effects: Vec<Uuid>,
}

/// The duplicate checks: name and SQL (one parameter: the order ids as `uuid[]`; each query returns
/// `(order_id uuid, n bigint)` for the orders with more than one row).
pub const CHECKS: &[(&str, &str)] = &[
    (
        "kitchen-ticket",
        "select order_id, count(*) from kitchen.tickets where order_id = any($1) \
         group by order_id having count(*) > 1",
    ),
    (
        "delivery",
        "select order_id, count(*) from delivery.deliveries where order_id = any($1) \
         group by order_id having count(*) > 1",
    ),
    (
        "order-ready-event",
        "select message_key::uuid, count(*) from kitchen.outbox \
         where event_type = 'order-ready' and message_key = any($1::text[]) \
         group by message_key having count(*) > 1",
    ),
    (
        "order-completed-event",
        "select message_key::uuid, count(*) from delivery.outbox \
         where event_type = 'order-completed' and message_key = any($1::text[]) \
         group by message_key having count(*) > 1",
    ),
    (
        "payment-capture",
        "select order_id, count(*) from orders.payments where operation = 'capture' \
         and order_id = any($1) group by order_id having count(*) > 1",
    ),
    (
        "workflow-run",
        "select (labels->>'pizza.order.id')::uuid, count(*) from workflow.runs \
         where workflow_name = 'order-fulfillment' and labels->>'pizza.order.id' = any($1::text[]) \
         group by 1 having count(*) > 1",
    ),
    (
        "terminal-state",
        "select order_id, count(*) from orders.timeline \
         where status in ('completed', 'cancelled', 'rejected') and order_id = any($1) \
         group by order_id having count(*) > 1",
    ),
];

/// The part of the verdict the order API alone gives: final states and lost orders.
pub fn verify_orders_without_database(states: &[OrderState]) -> OrdersVerdict {
    let mut verdict = OrdersVerdict {
        accepted: states.len(),
        ..Default::default()
    };
    for s in states {
        *verdict.by_status.entry(s.status.clone()).or_default() += 1;
        if !s.terminal {
            verdict.lost.push(s.order_id);
        }
    }
    verdict
}

/// Judges the orders: `states` from the API, duplicates from the database.
pub async fn verify_orders(pool: &PgPool, states: &[OrderState]) -> OrdersVerdict {
    let mut verdict = verify_orders_without_database(states);
    let ids: Vec<Uuid> = states.iter().map(|s| s.order_id).collect();
    for (check, sql) in CHECKS {
        let rows: Result<Vec<(Uuid, i64)>, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(*sql))
            .bind(&ids)
            .fetch_all(pool)
            .await;
        let result = match rows {
            Ok(rows) => {
                verdict.duplicated_side_effects += rows.iter().map(|(_, n)| (n - 1) as u64).sum::<u64>();
                DuplicateCheck {
                    check: (*check).to_owned(),
                    duplicates: rows.into_iter().collect(),
                    error: None,
                }
            }
            Err(e) => DuplicateCheck {
                check: (*check).to_owned(),
                duplicates: BTreeMap::new(),
                error: Some(e.to_string()),
            },
        };
        verdict.checks.push(result);
    }
    let completed: Vec<Uuid> = states
        .iter()
        .filter(|s| s.status == "completed")
        .map(|s| s.order_id)
        .collect();
    let missing: Result<Vec<(Uuid,)>, sqlx::Error> = sqlx::query_as(
        "select o from unnest($1::uuid[]) as o \
         where not exists (select 1 from kitchen.tickets t where t.order_id = o) \
            or not exists (select 1 from delivery.deliveries d where d.order_id = o)",
    )
    .bind(&completed)
    .fetch_all(pool)
    .await;
    match missing {
        Ok(rows) => verdict.completed_without_effects = rows.into_iter().map(|(o,)| o).collect(),
        Err(e) => verdict.checks.push(DuplicateCheck {
            check: "completed-has-ticket-and-delivery".into(),
            duplicates: BTreeMap::new(),
            error: Some(e.to_string()),
        }),
    }
    verdict
}
