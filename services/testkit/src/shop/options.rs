//! What a shop runs: the three services, their settings, their topics.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use pizza_telemetry::Topology;
use sqlx::PgPool;

use crate::{Stack, kafka};

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `pizza-kitchen`: tickets and ovens.
    Kitchen,
    /// `pizza-delivery`: deliveries and drivers.
    Delivery,
    /// `pizza-order`: the API, the workflow, the consumers.
    Order,
}

impl Service {
    /// In start order: each one's peers first.
    pub const ALL: [Service; 3] = [Service::Kitchen, Service::Delivery, Service::Order];

    /// The name (`kitchen`), which is also its `service.name` in traces.
    pub fn name(self) -> &'static str {
        match self {
            Service::Kitchen => "kitchen",
            Service::Delivery => "delivery",
            Service::Order => "order",
        }
    }

    /// The service called `name`, if there is one.
    pub fn named(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The binary's file name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Kitchen => "pizza-kitchen",
            Service::Delivery => "pizza-delivery",
            Service::Order => "pizza-order",
        }
    }

    /// The variable its listen address is read from.
    pub(super) fn addr_var(self) -> &'static str {
        match self {
            Service::Kitchen => "PIZZA_KITCHEN_ADDR",
            Service::Delivery => "PIZZA_DELIVERY_ADDR",
            Service::Order => "PIZZA_ORDER_ADDR",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to run the shop. [`Options::new`] gives test settings: time scaled down to 5%, waits on the
/// kitchen and the driver stretched far beyond a scaled cook or drive (so a slow machine delays an
/// order but never times it out), a 3 s workflow lease (a killed order service's runs are taken over
/// quickly), spans exported every 200 ms and metrics every second. Everything else a service reads
/// can be set per service with [`Options::env`] or for all three with [`Options::env_all`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The database all three use, each in its own schemas (see [`database_url_of`]); with
    /// [`Options::fresh_database`], the server on which the shop creates a database of its own.
    pub database_url: String,
    /// Create a database of the shop's own (`pizza_shop_<id>`) and drop it when the shop stops.
    pub fresh_database: bool,
    /// Kafka bootstrap servers (unless [`Options::private_broker`]).
    pub kafka_bootstrap: String,
    /// Start a broker of the shop's own ([`crate::broker::PrivateBroker`]): needed to stop Kafka
    /// without stopping everyone's ([`super::Shop::stop_broker`]).
    pub private_broker: bool,
    /// The topics, named uniquely by [`Options::new`] and created by [`super::Shop::open`]; known
    /// before the shop starts, so a fault plan can name one (`"drop_trace_context":
    /// ["kafka:<topic>"]`).
    pub topics: Topics,
    /// Partitions of each topic (dead-letter topics have one).
    pub partitions: i32,
    /// `PIZZA_TRACE_TOPOLOGY`.
    pub topology: Topology,
    /// `PIZZA_TIME_SCALE`.
    pub time_scale: f64,
    /// `PIZZA_WORKFLOW_LEASE_SECONDS` of the order service.
    pub lease_seconds: f64,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`.
    pub otlp_protocol: String,
    /// `OTEL_SDK_DISABLED`: no telemetry at all (what tracing costs is measured against this).
    pub sdk_disabled: bool,
    /// `PIZZA_JAEGER_UI_URL` of the order service (its trace links).
    pub jaeger_url: String,
    /// `PIZZA_FAULTS` per service: the fault plan each starts with (JSON, see
    /// `pizza_servicekit::FaultPlan`).
    pub faults: BTreeMap<Service, serde_json::Value>,
    /// More variables per service; they override the harness's own.
    pub env: BTreeMap<Service, Vec<(String, String)>>,
    /// Where the services' logs and span counters go; a fresh temporary directory when unset
    /// (removed after a clean stop, see [`super::Shop::stop_all`]).
    pub log_dir: Option<PathBuf>,
}

impl Options {
    /// Test settings (see the type's docs) on `database_url`, with the stack's Kafka, Collector and
    /// Jaeger.
    pub fn new(database_url: impl Into<String>) -> Self {
        let stack = Stack::from_env();
        Self {
            database_url: database_url.into(),
            fresh_database: false,
            kafka_bootstrap: stack.kafka_bootstrap,
            private_broker: false,
            topics: Topics::unique(),
            partitions: 1,
            topology: Topology::Continuous,
            time_scale: 0.05,
            lease_seconds: 3.0,
            otlp_endpoint: stack.otlp_grpc_endpoint,
            otlp_protocol: "grpc".to_owned(),
            sdk_disabled: false,
            jaeger_url: stack.jaeger_url,
            faults: BTreeMap::new(),
            env: BTreeMap::new(),
            log_dir: None,
        }
    }

    /// With this trace topology.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// With `service` starting under this fault plan.
    pub fn faults(mut self, service: Service, plan: serde_json::Value) -> Self {
        self.faults.insert(service, plan);
        self
    }

    /// With one more variable for `service`.
    pub fn env(mut self, service: Service, name: &str, value: impl Into<String>) -> Self {
        self.env
            .entry(service)
            .or_default()
            .push((name.to_owned(), value.into()));
        self
    }

    /// With one more variable for every service (a service reads only its own).
    pub fn env_all(mut self, name: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        for service in Service::ALL {
            self = self.env(service, name, value.clone());
        }
        self
    }
}

/// The URL of the database behind `pool` (for example the fresh one of a `#[sqlx::test]`): the
/// stack's `DATABASE_URL` with its database name replaced.
pub fn database_url_of(pool: &PgPool) -> anyhow::Result<String> {
    database_url_on(&Stack::from_env().database_url, pool)
}

/// The URL of the database behind `pool`, reached the way `server_url` reaches its server (another
/// transport to the same server, such as its Unix socket).
pub fn database_url_on(server_url: &str, pool: &PgPool) -> anyhow::Result<String> {
    let name = pool
        .connect_options()
        .get_database()
        .context("the pool names no database")?
        .to_owned();
    with_database(server_url, &name)
}

/// `url` naming the database `name` instead of its own.
pub(super) fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (server, _) = url
        .rsplit_once('/')
        .context("the database URL has no database path")?;
    Ok(format!("{server}/{name}"))
}

/// The Kafka topics of one shop, each created with its dead-letter topic.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The kitchen publishes here (`PIZZA_KITCHEN_EVENTS_TOPIC`).
    pub kitchen_events: String,
    /// The order service's own events (`PIZZA_ORDERS_EVENTS_TOPIC`).
    pub orders_events: String,
    /// Delivery commands (`PIZZA_DELIVERY_REQUESTS_TOPIC`).
    pub delivery_requests: String,
    /// The delivery service publishes here (`PIZZA_DELIVERY_EVENTS_TOPIC`).
    pub delivery_events: String,
}

impl Topics {
    /// Four names no other test uses (`kitchen.events.<uuid>`, ...).
    pub fn unique() -> Self {
        Self {
            kitchen_events: kafka::unique_topic("kitchen.events"),
            orders_events: kafka::unique_topic("orders.events"),
            delivery_requests: kafka::unique_topic("delivery.requests"),
            delivery_events: kafka::unique_topic("delivery.events"),
        }
    }

    /// The four topics.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.kitchen_events,
            &self.orders_events,
            &self.delivery_requests,
            &self.delivery_events,
        ]
    }

    /// Each topic's usual name (`kitchen.events`) and this shop's name for it.
    pub fn by_usual_name(&self) -> BTreeMap<String, String> {
        [
            ("kitchen.events", &self.kitchen_events),
            ("orders.events", &self.orders_events),
            ("delivery.requests", &self.delivery_requests),
            ("delivery.events", &self.delivery_events),
        ]
        .into_iter()
        .map(|(usual, real)| (usual.to_owned(), real.clone()))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_add_faults_and_variables_per_service() {
        let options = Options::new("postgres://x/db")
            .topology(Topology::Linked)
            .faults(Service::Kitchen, serde_json::json!({"http_error_rate": 1.0}))
            .env(Service::Order, "PIZZA_WORKFLOW_CONCURRENCY", "1");
        assert_eq!(options.topology, Topology::Linked);
        assert_eq!(options.faults[&Service::Kitchen]["http_error_rate"], 1.0);
        assert_eq!(
            options.env[&Service::Order],
            [("PIZZA_WORKFLOW_CONCURRENCY".to_owned(), "1".to_owned())]
        );
        assert_eq!(
            Service::ALL.map(Service::binary),
            ["pizza-kitchen", "pizza-delivery", "pizza-order"]
        );
    }

    #[test]
    fn a_variable_for_all_reaches_each_service_and_topics_keep_their_usual_names() {
        let options = Options::new("postgres://x/db").env_all("RUST_LOG", "warn");
        for service in Service::ALL {
            assert_eq!(
                options.env[&service],
                [("RUST_LOG".to_owned(), "warn".to_owned())]
            );
            assert_eq!(Service::named(service.name()), Some(service));
        }
        let map = options.topics.by_usual_name();
        assert_eq!(map.len(), 4);
        assert!(map["kitchen.events"].starts_with("kitchen.events."));
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "pizza_shop_1").unwrap(),
            "postgres://u@h:1/pizza_shop_1"
        );
    }
}
