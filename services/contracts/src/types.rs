//! CloudEvents `type` values (the `ce_type` header), named as the Dapr pizza demo named them.

/// A customer placed an order (on `orders.events`).
pub const ORDER_PLACED: &str = "order-placed";
/// The kitchen started on the order (on `kitchen.events`).
pub const ORDER_IN_PREPARATION: &str = "order-in-preparation";
/// The pizzas are out of the oven, waiting for a driver (on `kitchen.events`).
pub const ORDER_READY: &str = "order-ready";
/// A driver picked the order up (on `delivery.events`).
pub const ORDER_OUT_FOR_DELIVERY: &str = "order-out-for-delivery";
/// A position update on the way to the customer; several per delivery (on `delivery.events`).
pub const ORDER_ON_ITS_WAY: &str = "order-on-its-way";
/// The order was handed over (on `delivery.events`).
pub const ORDER_COMPLETED: &str = "order-completed";
/// The order was cancelled, with a reason (on `orders.events`).
pub const ORDER_CANCELLED: &str = "order-cancelled";
/// The kitchen could not make the order (on `kitchen.events`).
pub const KITCHEN_ISSUE: &str = "kitchen-issue";
/// The delivery failed (on `delivery.events`).
pub const DELIVERY_ISSUE: &str = "delivery-issue";
/// A command: deliver this order (on `delivery.requests`). Not in the Dapr demo, which called the
/// delivery service over HTTP; here the workflow sends it through the outbox.
pub const DELIVERY_REQUESTED: &str = "delivery-requested";

/// Every type above.
pub const ALL: &[&str] = &[
    ORDER_PLACED,
    ORDER_IN_PREPARATION,
    ORDER_READY,
    ORDER_OUT_FOR_DELIVERY,
    ORDER_ON_ITS_WAY,
    ORDER_COMPLETED,
    ORDER_CANCELLED,
    KITCHEN_ISSUE,
    DELIVERY_ISSUE,
    DELIVERY_REQUESTED,
];
