//! Checks that keep the deployments true on machines without a Docker engine, and the containers'
//! health probe.
//!
//! The deployments (`deploy/docker-compose.yml`, `deploy/k8s/`, `deploy/Dockerfile`) cannot be run
//! here, so the tests of this crate check what can be checked without running them, each against the
//! real thing where one exists:
//!
//! - `tests/collector_config.rs`: the Collector and Jaeger binaries the native stack built validate
//!   `otel-collector/config.yaml` and `deploy/jaeger/config.yaml` with the environment compose and the
//!   Kubernetes manifests give those containers;
//! - `tests/compose_schema.rs`: the compose file validates against the Compose Specification's schema
//!   (a pinned copy, `compose-spec.json`);
//! - `tests/kustomize_render.rs`: the kind overlay renders with kustomize and every object parses;
//! - `tests/consistency.rs`: every variable set is one a program reads, every address points at a port
//!   something listens on, image tags are pinned, health checks and probes exist, the topic list is the
//!   native stack's, the memory limits add up to the footprint the README states.
//!
//! Each check is also run against a deliberately broken copy, to show it can fail.
//!
//! # Layout
//!
//! - [`probe`]: `pizza-probe URL`, an HTTP GET that exits 0 on a 2xx answer; compose's health checks
//!   run it inside the service images, which carry no curl.

pub mod probe;
