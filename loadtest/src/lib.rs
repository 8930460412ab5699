//! `pizza-load`: drives orders into the pizza shop at a fixed rate while breaking things on
//! purpose, then checks what happened to the orders (none lost, nothing done twice) and to their
//! traces (complete, continuous or linked, not fragmented), and writes a report with a chart.
//!
//! ```text
//!  scenario (YAML) ─► schedule: arrival i due at i/rate ─► POST /orders (open loop, HDR latency)
//!        │                                                    │
//!        └─► fault driver: kill / stop / fault plan / poison  │
//!                                                             ▼
//!          wait (bounded) for terminal states ─► orders: API + SQL duplicate checks
//!                                              ─► traces: Jaeger, per order, against expected-spans.yaml
//!                                              ─► report.json, report.md, report.svg
//! ```
//!
//! # Layout
//! - [`scenario`]: the scenario file format and its checks.
//! - [`schedule`]: open-loop arrival arithmetic.
//! - [`driver`]: sending orders, recording answers, waiting for terminal states.
//! - [`progress`]: a bar in a terminal, plain lines in CI.
//! - [`target`]: where the shop runs and what its topics are called.
//! - [`faults`]: the fault driver and the platform switch (native, compose, managed).
//! - [`managed`]: a shop of the tester's own (`pizza_testkit::shop`'s processes), for tests and
//!   benchmarks.
//! - [`verify`]: lost orders and duplicated side effects.
//! - [`traces`]: each order's traces read and judged (with [`pizza_traces`]), patiently.
//! - [`tree`]: `pizza-load trace ORDER_ID`, the order's spans as one tree across linked traces.
//! - [`report`]: JSON, Markdown and the SVG chart.
//! - [`mod@run`]: one run from arrivals to report ([`run()`]).
//! - [`matrix`]: `pizza-load matrix`, every scenario in both topologies and sampled, side by side.

pub mod bench;
pub mod cost;
pub mod driver;
pub mod faults;
pub mod managed;
pub mod matrix;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod target;
pub mod traces;
pub mod tree;
pub mod verify;

pub use run::{RunOptions, RunResult, run};
pub use scenario::Scenario;
pub use target::Target;
