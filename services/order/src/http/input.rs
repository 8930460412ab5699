//! What `POST /orders` accepts, and the rules an order must meet before anything is written: the
//! menu, the limits, the customer's fields, the `Idempotency-Key` header.
//!
//! Every rule that fails names the offending field as a JSON pointer, so the answer (422
//! problem+json) says what to fix.

use http::HeaderMap;
use pizza_contracts::events::OrderItem;
use pizza_contracts::kitchen::{MAX_PIZZAS_PER_TICKET, MAX_QUANTITY_PER_LINE};
use pizza_contracts::menu;
use serde::Deserialize;

use super::ApiError;
use crate::store::{self, Customer};

/// Most lines on one order.
pub(crate) const MAX_LINES: usize = 20;
/// Longest `Idempotency-Key`.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 200;

/// `POST /orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaceOrder {
    /// Who and where.
    pub(crate) customer: CustomerIn,
    /// What.
    pub(crate) items: Vec<OrderItemIn>,
}

/// The customer, as posted.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomerIn {
    name: String,
    phone: String,
    address: AddressIn,
}

impl std::fmt::Debug for CustomerIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerIn { <redacted> }")
    }
}

/// The address, as posted.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressIn {
    street: String,
    postal_code: String,
    city: String,
}

/// One line, as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderItemIn {
    pizza: String,
    quantity: u32,
}

/// An order that meets every rule: who, what, and the price from the menu.
#[derive(Debug)]
pub(crate) struct ValidOrder {
    pub(crate) customer: Customer,
    pub(crate) items: Vec<OrderItem>,
    pub(crate) total_cents: u64,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Characters a name, phone or address never needs and that only do harm: control characters (a NUL
/// cannot even be stored in `jsonb`; a newline forges lines in whatever prints the label), the bidi
/// overrides and isolates that reorder what a label shows ("Trojan Source"), and invisible characters
/// that make two labels look the same (zero-width space, word joiner, byte order mark). The joiners
/// (U+200C, U+200D: Persian and Indic writing, emoji) and the plain direction marks stay allowed.
/// The OpenAPI document's `pattern` on these fields spells the same set.
pub(crate) fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(invalid(field, "must not be empty"));
    }
    if chars > max {
        return Err(invalid(field, format!("at most {max} characters")));
    }
    if let Some(c) = value.chars().find(|c| is_forbidden(*c)) {
        return Err(invalid(
            field,
            format!(
                "must not contain control or invisible formatting characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    if value.chars().all(char::is_whitespace) {
        return Err(invalid(field, "must not be blank"));
    }
    Ok(())
}

/// Checks an order against the menu and the limits; returns its lines and price.
pub(crate) fn validate(order: &PlaceOrder) -> Result<ValidOrder, ApiError> {
    let c = &order.customer;
    text("/customer/name", &c.name, 100)?;
    text("/customer/phone", &c.phone, 40)?;
    text("/customer/address/street", &c.address.street, 200)?;
    text("/customer/address/postal_code", &c.address.postal_code, 20)?;
    text("/customer/address/city", &c.address.city, 100)?;
    if order.items.is_empty() {
        return Err(invalid("/items", "an order needs at least one pizza"));
    }
    if order.items.len() > MAX_LINES {
        return Err(invalid("/items", format!("at most {MAX_LINES} lines")));
    }
    let mut total = 0u64;
    let mut pizzas = 0u32;
    let mut items = Vec::with_capacity(order.items.len());
    for (index, item) in order.items.iter().enumerate() {
        let Some(pizza) = menu::find(&item.pizza) else {
            return Err(invalid(format!("/items/{index}/pizza"), "not on the menu"));
        };
        if item.quantity == 0 || item.quantity > MAX_QUANTITY_PER_LINE {
            return Err(invalid(
                format!("/items/{index}/quantity"),
                format!("must be between 1 and {MAX_QUANTITY_PER_LINE}"),
            ));
        }
        pizzas += item.quantity;
        total += pizza.price_cents * u64::from(item.quantity);
        items.push(OrderItem {
            pizza: item.pizza.clone(),
            quantity: item.quantity,
        });
    }
    if pizzas > MAX_PIZZAS_PER_TICKET {
        return Err(invalid(
            "/items",
            format!("at most {MAX_PIZZAS_PER_TICKET} pizzas per order, got {pizzas}"),
        ));
    }
    let customer = Customer {
        name: c.name.clone(),
        phone: c.phone.clone(),
        address: store::Address {
            street: c.address.street.clone(),
            postal_code: c.address.postal_code.clone(),
            city: c.address.city.clone(),
        },
    };
    Ok(ValidOrder {
        customer,
        items,
        total_cents: total,
    })
}

/// The `Idempotency-Key` header, if sent: visible ASCII, 1 to [`MAX_IDEMPOTENCY_KEY`] characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII".into()))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order(items: serde_json::Value) -> PlaceOrder {
        serde_json::from_value(json!({
            "customer": {"name": "Ada", "phone": "+39 055 1234",
                         "address": {"street": "1 Oven Lane", "postal_code": "50100", "city": "Firenze"}},
            "items": items
        }))
        .unwrap()
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_valid_order_is_priced_from_the_menu() {
        let valid = validate(&order(
            json!([{"pizza": "margherita", "quantity": 2}, {"pizza": "diavola", "quantity": 1}]),
        ))
        .unwrap();
        assert_eq!(valid.items.len(), 2);
        assert_eq!(valid.total_cents, 2 * 1_000 + 1_250);
    }

    #[test]
    fn rules_name_the_offending_field() {
        let e = validate(&order(json!([]))).unwrap_err();
        assert_eq!(field_of(e), "/items");
        let e = validate(&order(json!([{"pizza": "hawaii", "quantity": 1}]))).unwrap_err();
        assert_eq!(field_of(e), "/items/0/pizza");
        let e = validate(&order(json!([{"pizza": "marinara", "quantity": 0}]))).unwrap_err();
        assert_eq!(field_of(e), "/items/0/quantity");
        let e = validate(&order(json!([{"pizza": "marinara", "quantity": 21}]))).unwrap_err();
        assert_eq!(field_of(e), "/items/0/quantity");
        let three_lines_of_twenty = json!([
            {"pizza": "marinara", "quantity": 20}, {"pizza": "funghi", "quantity": 20},
            {"pizza": "diavola", "quantity": 20}]);
        assert_eq!(
            field_of(validate(&order(three_lines_of_twenty)).unwrap_err()),
            "/items"
        );
        let mut long_name = order(json!([{"pizza": "marinara", "quantity": 1}]));
        long_name.customer.name = "x".repeat(101);
        assert_eq!(field_of(validate(&long_name).unwrap_err()), "/customer/name");
    }

    /// Values every customer field refuses.
    const REFUSED: [&str; 10] = [
        "Ada\u{0}Lovelace",
        "Ada\nLovelace",
        "\u{7}",
        "Ada\u{85}",
        "\u{202E}ecalevol adA",
        "Ada\u{2066}x\u{2069}",
        "Ada\u{200B}",
        "\u{FEFF}Ada",
        " ",
        "\u{3000}\u{00A0} ",
    ];
    /// Values every customer field takes (within its length).
    const ALLOWED: [&str; 5] = [
        "Zoë O'Brien-Łukasz",
        "東京都",
        "القاهرة",
        "1 Oven Lane, 2nd floor",
        "می\u{200C}خواهم",
    ];

    fn city(value: &str) -> Result<ValidOrder, ApiError> {
        let mut order = order(json!([{"pizza": "marinara", "quantity": 1}]));
        order.customer.address.city = value.into();
        validate(&order)
    }

    #[test]
    fn control_characters_invisible_formatting_and_blank_values_are_refused() {
        for value in REFUSED {
            let error = city(value).unwrap_err();
            assert_eq!(field_of(error), "/customer/address/city", "{value:?}");
        }
        for value in ALLOWED {
            assert!(city(value).is_ok(), "{value:?}");
        }
    }

    /// The OpenAPI document's `pattern` and [`text`] agree on every character of the Basic
    /// Multilingual Plane, alone and after a letter, and on the examples above.
    #[test]
    fn the_openapi_pattern_refuses_what_validation_refuses() {
        let doc: serde_json::Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        let customer = "/components/schemas/PlaceOrder/properties/customer/properties";
        let pattern = doc
            .pointer(&format!("{customer}/name/pattern"))
            .and_then(|p| p.as_str())
            .expect("the name has a pattern");
        let schema = jsonschema::draft202012::new(&json!({"type": "string", "pattern": pattern})).unwrap();
        let mut values: Vec<String> = REFUSED.iter().chain(&ALLOWED).map(|v| v.to_string()).collect();
        for c in (0..=0xFFFF).filter_map(char::from_u32) {
            values.push(c.to_string());
            values.push(format!("a{c}"));
        }
        for value in &values {
            let accepted = text("/x", value, 100).is_ok();
            assert_eq!(schema.is_valid(&json!(value)), accepted, "{value:?}");
        }
        for field in [
            "phone",
            "address/properties/street",
            "address/properties/postal_code",
            "address/properties/city",
        ] {
            assert_eq!(
                doc.pointer(&format!("{customer}/{field}/pattern"))
                    .and_then(|p| p.as_str()),
                Some(pattern),
                "{field}"
            );
        }
    }
}
