//! The menu: what the shop sells, in one place, so the order service and the kitchen agree on it.
//!
//! The order service prices an order from it; the kitchen refuses a ticket for anything not on it.
//! Ids are the `pizza` field of an [`OrderItem`](crate::events::OrderItem).

/// One pizza on the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pizza {
    /// The id used on the wire (`margherita`).
    pub id: &'static str,
    /// The price of one, in cents (integers: money is never a float).
    pub price_cents: u64,
}

/// Everything the shop sells.
pub const PIZZAS: &[Pizza] = &[
    Pizza {
        id: "margherita",
        price_cents: 1_000,
    },
    Pizza {
        id: "marinara",
        price_cents: 900,
    },
    Pizza {
        id: "diavola",
        price_cents: 1_250,
    },
    Pizza {
        id: "quattro-formaggi",
        price_cents: 1_300,
    },
    Pizza {
        id: "capricciosa",
        price_cents: 1_350,
    },
    Pizza {
        id: "funghi",
        price_cents: 1_150,
    },
];

/// The pizza with this id, if the shop sells it.
pub fn find(id: &str) -> Option<&'static Pizza> {
    PIZZAS.iter().find(|p| p.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_lower_case_and_found() {
        for (i, pizza) in PIZZAS.iter().enumerate() {
            assert!(
                pizza.id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{}",
                pizza.id
            );
            assert!(
                PIZZAS[i + 1..].iter().all(|p| p.id != pizza.id),
                "{} twice",
                pizza.id
            );
            assert_eq!(find(pizza.id), Some(pizza));
        }
        assert_eq!(find("hawaii"), None);
    }
}
