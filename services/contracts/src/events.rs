//! Event payloads: the JSON body of each CloudEvent.
//!
//! Each payload struct implements [`Event`]: it knows its CloudEvents `type`, the topic it travels on
//! and the order it belongs to (the record key and `ce_subject`). A consumer that handles everything on
//! a topic reads the topic's enum instead ([`OrderEvent`], [`KitchenEvent`], [`DeliveryCommand`],
//! [`DeliveryEvent`]), which picks the variant by `ce_type`. Both implement [`EventData`], the one
//! trait the messaging crate needs.
//!
//! Bodies tolerate fields they do not know (no `deny_unknown_fields`), so a producer can add a field
//! before every consumer has been redeployed. Removing or retyping a field is a new event type.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{topics, types};

/// A payload with a fixed CloudEvents type and topic.
pub trait Event: Serialize + DeserializeOwned {
    /// The CloudEvents `type` (one of [`crate::types`]).
    const TYPE: &'static str;
    /// The topic it travels on (one of [`crate::topics`]).
    const TOPIC: &'static str;
    /// The order the event belongs to.
    fn order_id(&self) -> Uuid;
}

/// What the messaging layer needs of a body: its type, topic and order, and JSON both ways.
///
/// Implemented for every [`Event`] and for the per-topic enums, so a consumer can ask for one type
/// (`Envelope<OrderReady>`) or for whatever the topic carries (`Envelope<KitchenEvent>`).
pub trait EventData: Sized {
    /// The CloudEvents `type` of this value.
    fn event_type(&self) -> &'static str;
    /// The topic this value is published on unless the publisher says otherwise.
    fn topic(&self) -> &'static str;
    /// The order the event belongs to: the record key and `ce_subject`.
    fn order_id(&self) -> Uuid;
    /// The JSON body.
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    /// Reads a JSON body that arrived with CloudEvents type `event_type`.
    fn from_json(event_type: &str, body: &[u8]) -> Result<Self, DataError>;
}

/// Why a body could not be read.
///
/// The JSON variant keeps serde's category and position but not its message, because serde quotes
/// the offending value and a payload may hold customer data; this error ends up in dead-letter
/// headers and logs, which must not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The event type is not one this payload (or topic) carries.
    #[error("unexpected event type {found:?}; expected one of {expected:?}")]
    UnexpectedType {
        /// The type that arrived.
        found: String,
        /// The types that would have been understood.
        expected: &'static [&'static str],
    },
    /// The body is not the JSON the event type defines.
    #[error("{event_type} body is not valid: {category} error at line {line}, column {column}")]
    Json {
        /// The event type whose body failed.
        event_type: &'static str,
        /// serde's category: `syntax`, `data` (wrong shape or type), `eof` or `io`.
        category: &'static str,
        /// Line of the error in the body (1-based).
        line: usize,
        /// Column of the error in the body (1-based).
        column: usize,
    },
}

impl DataError {
    /// A [`DataError::Json`] from serde's error, without serde's message (see the type's docs).
    pub fn json(event_type: &'static str, error: &serde_json::Error) -> Self {
        let category = match error.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        DataError::Json {
            event_type,
            category,
            line: error.line(),
            column: error.column(),
        }
    }
}

impl<E: Event> EventData for E {
    fn event_type(&self) -> &'static str {
        E::TYPE
    }
    fn topic(&self) -> &'static str {
        E::TOPIC
    }
    fn order_id(&self) -> Uuid {
        Event::order_id(self)
    }
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
    fn from_json(event_type: &str, body: &[u8]) -> Result<Self, DataError> {
        if event_type != E::TYPE {
            return Err(DataError::UnexpectedType {
                found: event_type.to_owned(),
                expected: &[E::TYPE],
            });
        }
        serde_json::from_slice(body).map_err(|e| DataError::json(E::TYPE, &e))
    }
}

macro_rules! event {
    ($ty:ident, $type_name:expr, $topic:expr) => {
        impl Event for $ty {
            const TYPE: &'static str = $type_name;
            const TOPIC: &'static str = $topic;
            fn order_id(&self) -> Uuid {
                self.order_id
            }
        }
    };
}

/// One enum per topic: every event the topic carries, chosen by `ce_type`.
macro_rules! topic_enum {
    ($(#[$meta:meta])* $name:ident, $topic:expr, { $($(#[$vmeta:meta])* $variant:ident($ty:ident)),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $($(#[$vmeta])* $variant($ty),)+
        }

        impl $name {
            /// The topic.
            pub const TOPIC: &'static str = $topic;
            /// Every event type the topic carries.
            pub const TYPES: &'static [&'static str] = &[$(<$ty as Event>::TYPE),+];
        }

        $(impl From<$ty> for $name {
            fn from(event: $ty) -> Self {
                $name::$variant(event)
            }
        })+

        impl EventData for $name {
            fn event_type(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => <$ty as Event>::TYPE,)+
                }
            }
            fn topic(&self) -> &'static str {
                $topic
            }
            fn order_id(&self) -> Uuid {
                match self {
                    $($name::$variant(e) => Event::order_id(e),)+
                }
            }
            fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
                match self {
                    $($name::$variant(e) => serde_json::to_vec(e),)+
                }
            }
            fn from_json(event_type: &str, body: &[u8]) -> Result<Self, DataError> {
                $(if event_type == <$ty as Event>::TYPE {
                    return <$ty as EventData>::from_json(event_type, body).map($name::$variant);
                })+
                Err(DataError::UnexpectedType { found: event_type.to_owned(), expected: Self::TYPES })
            }
        }
    };
}

// ---- orders.events ---------------------------------------------------------------------------------

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The menu item (`margherita`).
    pub pizza: String,
    /// How many.
    pub quantity: u32,
}

/// `order-placed`: the order service accepted an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: Uuid,
    /// What was ordered.
    pub items: Vec<OrderItem>,
    /// The price, in cents (integers: money is never a float).
    pub total_cents: u64,
}
event!(OrderPlaced, types::ORDER_PLACED, topics::ORDERS_EVENTS);

/// `order-cancelled`: the order ended cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: Uuid,
    /// A short machine-readable code (`kitchen-timeout`, `payment-declined`), never free text a
    /// customer typed.
    pub reason: String,
}
event!(OrderCancelled, types::ORDER_CANCELLED, topics::ORDERS_EVENTS);

topic_enum!(
    /// Everything on `orders.events`.
    OrderEvent, topics::ORDERS_EVENTS, {
        /// `order-placed`.
        Placed(OrderPlaced),
        /// `order-cancelled`.
        Cancelled(OrderCancelled),
    }
);

// ---- kitchen.events --------------------------------------------------------------------------------

/// `order-in-preparation`: the kitchen took the ticket and started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInPreparation {
    /// The order.
    pub order_id: Uuid,
    /// The kitchen's ticket.
    pub ticket_id: Uuid,
}
event!(
    OrderInPreparation,
    types::ORDER_IN_PREPARATION,
    topics::KITCHEN_EVENTS
);

/// `order-ready`: the order waits for a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderReady {
    /// The order.
    pub order_id: Uuid,
    /// The kitchen's ticket.
    pub ticket_id: Uuid,
}
event!(OrderReady, types::ORDER_READY, topics::KITCHEN_EVENTS);

/// `kitchen-issue`: the kitchen cannot make the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitchenIssue {
    /// The order.
    pub order_id: Uuid,
    /// The kitchen's ticket.
    pub ticket_id: Uuid,
    /// A short machine-readable code (`oven-failure`, `out-of-dough`).
    pub reason: String,
}
event!(KitchenIssue, types::KITCHEN_ISSUE, topics::KITCHEN_EVENTS);

topic_enum!(
    /// Everything on `kitchen.events`.
    KitchenEvent, topics::KITCHEN_EVENTS, {
        /// `order-in-preparation`.
        InPreparation(OrderInPreparation),
        /// `order-ready`.
        Ready(OrderReady),
        /// `kitchen-issue`.
        Issue(KitchenIssue),
    }
);

// ---- delivery.requests -----------------------------------------------------------------------------

/// Where to deliver, and to whom. Customer data: it travels in the payload because the delivery
/// service needs it, and its `Debug` output is redacted so it never reaches a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAddress {
    /// Who receives the order.
    pub recipient: String,
    /// Street and number.
    pub street: String,
    /// Postal code.
    pub postal_code: String,
    /// City.
    pub city: String,
}

impl fmt::Debug for DeliveryAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeliveryAddress { <redacted> }")
    }
}

/// `delivery-requested`: a command from the order workflow to the delivery service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRequested {
    /// The order.
    pub order_id: Uuid,
    /// The kitchen ticket to pick up.
    pub ticket_id: Uuid,
    /// Where to go.
    pub address: DeliveryAddress,
}
event!(
    DeliveryRequested,
    types::DELIVERY_REQUESTED,
    topics::DELIVERY_REQUESTS
);

topic_enum!(
    /// Everything on `delivery.requests`.
    DeliveryCommand, topics::DELIVERY_REQUESTS, {
        /// `delivery-requested`.
        Requested(DeliveryRequested),
    }
);

// ---- delivery.events -------------------------------------------------------------------------------

/// `order-out-for-delivery`: a driver picked the order up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOutForDelivery {
    /// The order.
    pub order_id: Uuid,
    /// The delivery service's id for this trip.
    pub delivery_id: Uuid,
}
event!(
    OrderOutForDelivery,
    types::ORDER_OUT_FOR_DELIVERY,
    topics::DELIVERY_EVENTS
);

/// `order-on-its-way`: a progress update (several per delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOnItsWay {
    /// The order.
    pub order_id: Uuid,
    /// The delivery service's id for this trip.
    pub delivery_id: Uuid,
    /// How far along the route the driver is, 0 to 100. Progress, not a position: a position
    /// near the customer's door is customer data.
    pub progress_percent: u8,
}
event!(OrderOnItsWay, types::ORDER_ON_ITS_WAY, topics::DELIVERY_EVENTS);

/// `order-completed`: the order was handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    /// The order.
    pub order_id: Uuid,
    /// The delivery service's id for this trip.
    pub delivery_id: Uuid,
}
event!(OrderCompleted, types::ORDER_COMPLETED, topics::DELIVERY_EVENTS);

/// `delivery-issue`: the delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryIssue {
    /// The order.
    pub order_id: Uuid,
    /// The delivery service's id for this trip.
    pub delivery_id: Uuid,
    /// A short machine-readable code (`no-driver`, `customer-absent`).
    pub reason: String,
}
event!(DeliveryIssue, types::DELIVERY_ISSUE, topics::DELIVERY_EVENTS);

topic_enum!(
    /// Everything on `delivery.events`.
    DeliveryEvent, topics::DELIVERY_EVENTS, {
        /// `order-out-for-delivery`.
        OutForDelivery(OrderOutForDelivery),
        /// `order-on-its-way`.
        OnItsWay(OrderOnItsWay),
        /// `order-completed`.
        Completed(OrderCompleted),
        /// `delivery-issue`.
        Issue(DeliveryIssue),
    }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order() -> Uuid {
        Uuid::parse_str("0192f1a2-7c3b-7d4e-8f90-123456789abc").unwrap()
    }

    #[test]
    fn order_placed_has_a_stable_json_shape() {
        let event = OrderPlaced {
            order_id: order(),
            items: vec![OrderItem {
                pizza: "margherita".into(),
                quantity: 2,
            }],
            total_cents: 2400,
        };
        let value: serde_json::Value = serde_json::from_slice(&event.to_json().unwrap()).unwrap();
        assert_eq!(
            value,
            json!({
                "order_id": "0192f1a2-7c3b-7d4e-8f90-123456789abc",
                "items": [{"pizza": "margherita", "quantity": 2}],
                "total_cents": 2400
            })
        );
        assert_eq!(
            OrderPlaced::from_json(types::ORDER_PLACED, &event.to_json().unwrap()).unwrap(),
            event
        );
    }

    #[test]
    fn every_payload_round_trips_through_its_topic_enum() {
        let ticket = Uuid::now_v7();
        let delivery = Uuid::now_v7();
        let address = DeliveryAddress {
            recipient: "Ada".into(),
            street: "1 Oven Lane".into(),
            postal_code: "1000".into(),
            city: "Napoli".into(),
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                types::ORDER_PLACED,
                OrderEvent::from(OrderPlaced {
                    order_id: order(),
                    items: vec![],
                    total_cents: 0,
                })
                .to_json()
                .unwrap(),
            ),
            (
                types::ORDER_CANCELLED,
                OrderCancelled {
                    order_id: order(),
                    reason: "kitchen-timeout".into(),
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::ORDER_IN_PREPARATION,
                OrderInPreparation {
                    order_id: order(),
                    ticket_id: ticket,
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::ORDER_READY,
                OrderReady {
                    order_id: order(),
                    ticket_id: ticket,
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::KITCHEN_ISSUE,
                KitchenIssue {
                    order_id: order(),
                    ticket_id: ticket,
                    reason: "oven-failure".into(),
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::DELIVERY_REQUESTED,
                DeliveryRequested {
                    order_id: order(),
                    ticket_id: ticket,
                    address,
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::ORDER_OUT_FOR_DELIVERY,
                OrderOutForDelivery {
                    order_id: order(),
                    delivery_id: delivery,
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::ORDER_ON_ITS_WAY,
                OrderOnItsWay {
                    order_id: order(),
                    delivery_id: delivery,
                    progress_percent: 40,
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::ORDER_COMPLETED,
                OrderCompleted {
                    order_id: order(),
                    delivery_id: delivery,
                }
                .to_json()
                .unwrap(),
            ),
            (
                types::DELIVERY_ISSUE,
                DeliveryIssue {
                    order_id: order(),
                    delivery_id: delivery,
                    reason: "no-driver".into(),
                }
                .to_json()
                .unwrap(),
            ),
        ];
        for (event_type, body) in &cases {
            let (decoded_type, order_id, again) = if OrderEvent::TYPES.contains(event_type) {
                let e = OrderEvent::from_json(event_type, body).unwrap();
                (e.event_type(), EventData::order_id(&e), e.to_json().unwrap())
            } else if KitchenEvent::TYPES.contains(event_type) {
                let e = KitchenEvent::from_json(event_type, body).unwrap();
                (e.event_type(), EventData::order_id(&e), e.to_json().unwrap())
            } else if DeliveryCommand::TYPES.contains(event_type) {
                let e = DeliveryCommand::from_json(event_type, body).unwrap();
                (e.event_type(), EventData::order_id(&e), e.to_json().unwrap())
            } else {
                let e = DeliveryEvent::from_json(event_type, body).unwrap();
                (e.event_type(), EventData::order_id(&e), e.to_json().unwrap())
            };
            assert_eq!(decoded_type, *event_type);
            assert_eq!(order_id, order());
            assert_eq!(&again, body, "{event_type} changed on a round trip");
        }
        let covered: Vec<&str> = cases.iter().map(|(t, _)| *t).collect();
        for t in types::ALL {
            assert!(covered.contains(t), "{t} has no round-trip case");
        }
    }

    #[test]
    fn a_topic_enum_picks_the_variant_by_type_and_rejects_foreign_types() {
        let body = br#"{"order_id":"0192f1a2-7c3b-7d4e-8f90-123456789abc","ticket_id":"0192f1a2-7c3b-7d4e-8f90-000000000001"}"#;
        assert!(matches!(
            KitchenEvent::from_json(types::ORDER_READY, body),
            Ok(KitchenEvent::Ready(_))
        ));
        assert!(matches!(
            KitchenEvent::from_json(types::ORDER_IN_PREPARATION, body),
            Ok(KitchenEvent::InPreparation(_))
        ));
        let err = KitchenEvent::from_json(types::ORDER_PLACED, body).unwrap_err();
        assert_eq!(
            err,
            DataError::UnexpectedType {
                found: types::ORDER_PLACED.into(),
                expected: KitchenEvent::TYPES
            }
        );
        assert!(matches!(
            OrderReady::from_json(types::ORDER_IN_PREPARATION, body),
            Err(DataError::UnexpectedType { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_tolerated_so_producers_can_add_fields_first() {
        let body = br#"{"order_id":"0192f1a2-7c3b-7d4e-8f90-123456789abc","ticket_id":"0192f1a2-7c3b-7d4e-8f90-000000000001","oven":3}"#;
        let ready = OrderReady::from_json(types::ORDER_READY, body).unwrap();
        assert_eq!(Event::order_id(&ready), order());
    }

    #[test]
    fn a_bad_body_is_reported_without_quoting_its_content() {
        let body = br#"{"order_id":"0192f1a2-7c3b-7d4e-8f90-123456789abc","ticket_id":"0192f1a2-7c3b-7d4e-8f90-000000000001","address":{"recipient":"Ada Secret","street":42}}"#;
        let err = DeliveryRequested::from_json(types::DELIVERY_REQUESTED, body).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Json {
                    category: "data",
                    event_type: "delivery-requested",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(!text.contains("Ada") && !text.contains("42"), "{text}");
        let err = OrderReady::from_json(types::ORDER_READY, b"{not json").unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Json {
                    category: "syntax",
                    line: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = OrderReady::from_json(types::ORDER_READY, br#"{"order_id":"not-a-uuid"}"#).unwrap_err();
        assert!(matches!(err, DataError::Json { category: "data", .. }), "{err:?}");
    }

    #[test]
    fn customer_data_stays_out_of_debug_output() {
        let request = DeliveryRequested {
            order_id: order(),
            ticket_id: order(),
            address: DeliveryAddress {
                recipient: "Ada Lovelace".into(),
                street: "12 Analytical Row".into(),
                postal_code: "NW1".into(),
                city: "London".into(),
            },
        };
        let debug = format!("{request:?}");
        for secret in ["Ada", "Analytical", "NW1", "London"] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        assert!(debug.contains("0192f1a2-7c3b-7d4e-8f90-123456789abc"));
    }

    #[test]
    fn each_event_names_its_topic() {
        assert_eq!(OrderPlaced::TOPIC, topics::ORDERS_EVENTS);
        assert_eq!(
            KitchenEvent::from(OrderReady {
                order_id: order(),
                ticket_id: order()
            })
            .topic(),
            topics::KITCHEN_EVENTS
        );
        assert_eq!(DeliveryCommand::TOPIC, topics::DELIVERY_REQUESTS);
        assert_eq!(DeliveryEvent::TYPES.len(), 4);
    }
}
