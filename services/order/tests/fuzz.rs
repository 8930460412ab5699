//! The order API fuzzed from its own OpenAPI document by schemathesis, against the real shop (order,
//! kitchen and delivery as real processes, `pizza_testkit::shop`, on the real PostgreSQL and Kafka).
//!
//! Schemathesis generates requests from `/openapi.json` (valid ones, and invalid ones: malformed
//! bodies, wrong types, out-of-range quantities, unknown pizzas and order ids, odd headers) and
//! checks every answer:
//! - `not_a_server_error`: never a 5xx (a 503 is documented for a lost database, and the database
//!   is up here, so none is expected);
//! - `status_code_conformance`, `content_type_conformance`, `response_schema_conformance`,
//!   `response_headers_conformance`: every answer is one the document promises, bodies included
//!   (so every 4xx is a problem+json that matches the Problem schema);
//! - `negative_data_rejection`: a request that breaks the schema is refused with a 4xx.
//!
//! All documented operations are fuzzed, the event stream included: for an unknown or malformed id
//! it answers at once, and for an order that exists (the stateful phase follows the links from
//! `POST /orders`) it streams until the order ends, which at this time scale is seconds, within the
//! request timeout; schemathesis checks each event against the stream's schema, the timeline entry
//! inside `data` included. The admin API is not in the public document
//! (it is token-protected and has its own tests in `pizza-servicekit`), so it is not fuzzed.
//!
//! The run is bounded (examples per operation, a fixed seed, a time budget) and prints its seed, so a
//! failure reproduces with the same command. A second test proves the harness can fail: the same
//! checks against a small router that answers 500 and breaks its own schema must fail.
//!
//! schemathesis comes from `deploy/local/tools.sh install` (which `make test` runs); without it this
//! test fails with that instruction instead of skipping.

mod tools;

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use pizza_testkit::app::Running;
use pizza_testkit::shop::{Options, Service, Shop, database_url_of};
use serde_json::json;
use sqlx::PgPool;

/// Test cases per operation and phase; with 8 operations this is a run of about a minute here.
const MAX_EXAMPLES: u32 = 40;
/// The seed, fixed so that a failure reproduces; `PIZZA_FUZZ_SEED` picks another one.
const DEFAULT_SEED: u64 = 20_261_122;
/// Bounds the whole schemathesis process. (Its `--max-time` is no bound: fuzzing repeats until that
/// budget is spent, so it is not used; `--max-examples` bounds the run.)
const RUN_LIMIT: Duration = Duration::from_secs(420);

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,negative_data_rejection";

fn seed() -> u64 {
    std::env::var("PIZZA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// Runs schemathesis against `base` with the checks above; returns its exit code and its output.
async fn schemathesis(base: &str, seed: u64, work_dir: &Path) -> anyhow::Result<(Option<i32>, String)> {
    let bin = tools::tool("PIZZA_SCHEMATHESIS_BIN")?;
    let mut command = tokio::process::Command::new(&bin);
    command
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", base])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--request-timeout", "30"])
        // One worker: with several threads, hypothesis's concurrent source parsing trips a CPython
        // 3.11 bug (gh-106905, a spurious "AST constructor recursion depth mismatch" SystemError)
        // that schemathesis reports as a runtime error of the run, not of the API.
        .args(["--workers", "1"])
        // Examples are not kept between runs: each run is the seed's, not the seed's plus history.
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "");
    // Keeps whatever schemathesis or hypothesis writes out of the checkout.
    command.current_dir(work_dir);
    let (output, took) = tools::run_bounded(command, RUN_LIMIT).await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "schemathesis against {base} (seed {seed}, {MAX_EXAMPLES} examples per operation): exit {:?} after {:.1} s",
        output.status.code(),
        took.as_secs_f64()
    );
    Ok((output.status.code(), text))
}

/// The part of schemathesis's output worth printing: from its summary on (or all of it).
fn summary(output: &str) -> &str {
    output
        .find("SUMMARY")
        .or_else(|| output.find("FAILURES"))
        .map_or(output, |at| &output[at..])
}

/// The number of test cases schemathesis generated (its summary's `N generated, ...` line).
fn generated(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.trim().split_once(" generated"))
        .and_then(|(n, _)| n.trim().parse().ok())
}

fn temp_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("pizza-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[sqlx::test(migrations = false)]
async fn the_order_api_survives_fuzzing_from_its_openapi_document(pool: PgPool) -> anyhow::Result<()> {
    tools::tool("PIZZA_SCHEMATHESIS_BIN")?;
    let shop = Shop::open(Options::new(database_url_of(&pool)?)).await?;
    let dir = temp_dir("fuzz")?;
    let seed = seed();
    let run = schemathesis(&shop.url(Service::Order), seed, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (code, output) = run?;
    println!("{}", summary(&output));
    ensure!(
        code == Some(0),
        "schemathesis found problems in the order API (exit {code:?}, seed {seed}; rerun with \
         PIZZA_FUZZ_SEED={seed}):\n{output}"
    );
    // A run that tested nothing would also exit 0.
    let cases = generated(&output);
    ensure!(
        cases.is_some_and(|n| n >= 100),
        "schemathesis reported {cases:?} test cases, expected at least 100:\n{output}"
    );
    shop.stop().await
}

/// The harness can fail: a router that answers 500 on one documented route and breaks its schema on
/// another makes the same schemathesis run exit non-zero, naming both.
#[tokio::test]
async fn the_fuzzer_fails_on_a_server_error_and_a_schema_violation() -> anyhow::Result<()> {
    tools::tool("PIZZA_SCHEMATHESIS_BIN")?;
    let document = json!({
        "openapi": "3.1.0",
        "info": {"title": "broken on purpose", "version": "0"},
        "paths": {
            "/menu": {"get": {"operationId": "getMenu", "responses": {"200": {
                "description": "the menu",
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["pizzas"],
                    "properties": {"pizzas": {"type": "array"}}
                }}}
            }}}},
            "/orders/{order_id}": {"get": {
                "operationId": "getOrder",
                "parameters": [{"name": "order_id", "in": "path", "required": true,
                                "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"404": {"description": "unknown",
                    "content": {"application/problem+json": {"schema": {"type": "object"}}}}}
            }}
        }
    });
    let router = axum::Router::new()
        .route(
            "/openapi.json",
            get(move || async move { Json(document.clone()) }),
        )
        // Breaks the schema: `pizzas` is documented as an array.
        .route("/menu", get(|| async { Json(json!({"pizzas": "margherita"})) }))
        .route(
            "/orders/{order_id}",
            get(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "application/problem+json")],
                    r#"{"type":"about:blank","title":"Internal Server Error","status":500}"#,
                )
                    .into_response()
            }),
        );
    let broken = Running::start(|listener, shutdown| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    })
    .await?;
    let dir = temp_dir("fuzz-broken")?;
    let run = schemathesis(&broken.base, seed(), &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    broken.stop().await?;
    let (code, output) = run?;
    ensure!(
        code.is_some_and(|c| c != 0),
        "schemathesis passed a router that answers 500:\n{output}"
    );
    for expected in ["Server error", "Response violates schema"] {
        ensure!(
            output.contains(expected),
            "schemathesis did not report {expected:?}:\n{output}"
        );
    }
    println!("{}", summary(&output));
    Ok(())
}
