//! The web UI in a real browser against the real shop: Debian's Chromium, headless, driven by
//! playwright-core (`tests/browser/place_order.mjs`), ordering from the order service while the
//! kitchen and delivery services cook and drive it, all three as real processes
//! (`pizza_testkit::shop`) on the real PostgreSQL, Kafka, Collector and Jaeger.
//!
//! The browser and its driver come from `deploy/local/tools.sh install` (which `make test` runs). A
//! machine without them fails this test with that instruction: a UI test that skips itself when the
//! browser is missing would pass on exactly the machines where nobody looked at the UI.

mod tools;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use pizza_testkit::conventions::personal_data;
use pizza_testkit::shop::{ADMIN_TOKEN, Options, Service, Shop, database_url_of};
use pizza_testkit::{Jaeger, Stack};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The customer the browser types in: distinctive, so a leak into a span is unambiguous.
const NAME: &str = "Ada Browsertest";
const PHONE: &str = "+39 055 7654321";
const STREET: &str = "7 Headless Way";
const POSTAL_CODE: &str = "50123";
const CITY: &str = "Firenze";

/// The script's own waits are bounded (60 s for the order); this bounds the whole browser run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

fn ui_file(name: &str) -> PathBuf {
    Stack::repo_root().join("services/order").join(name)
}

#[sqlx::test(migrations = false)]
async fn a_customer_orders_in_the_browser_and_watches_the_order_arrive(pool: PgPool) -> anyhow::Result<()> {
    let chromium = tools::tool("PIZZA_CHROMIUM_BIN")?;
    let playwright = tools::tool("PIZZA_PLAYWRIGHT_DIR")?;
    let shop = Shop::open(Options::new(database_url_of(&pool)?)).await?;

    let customer = json!({
        "name": NAME, "phone": PHONE, "street": STREET, "postal_code": POSTAL_CODE, "city": CITY,
    });
    let screenshot = std::env::temp_dir().join(format!("pizza-browser-{}.png", std::process::id()));
    let mut node = tokio::process::Command::new("node");
    node.arg(ui_file("tests/browser/place_order.mjs"))
        .arg(shop.url(Service::Order))
        .env("PIZZA_CHROMIUM_BIN", &chromium)
        .env("PIZZA_PLAYWRIGHT_DIR", &playwright)
        .env("PIZZA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PIZZA_JAEGER_URL", Stack::from_env().jaeger_url)
        .env("PIZZA_BROWSER_CUSTOMER", customer.to_string())
        .env("PIZZA_BROWSER_SCREENSHOT", &screenshot);
    let (output, took) = tools::run_bounded(node, SCRIPT_LIMIT).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The script narrates each step with its time; shown on failure, and with --nocapture.
    eprintln!("{stderr}");
    ensure!(
        output.status.success(),
        "the browser run failed ({}) after {:.1} s; screenshot: {}\n{stderr}",
        output.status,
        took.as_secs_f64(),
        screenshot.display()
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
            .with_context(|| format!("the script printed no {key}: {stdout}"))
    };
    let order_id = value("ORDER_ID=")?;
    let trace_id = value("TRACE_ID=")?;

    // What the page showed is what the API says.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let order: Value = http
        .get(format!("{}/orders/{order_id}", shop.url(Service::Order)))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(order["status"] == "completed", "the order is {}", order["status"]);
    ensure!(
        order["terminal"] == true,
        "a completed order is terminal: {order}"
    );
    ensure!(
        order["trace_id"] == trace_id.as_str(),
        "trace ids differ: {order}"
    );
    let trace_url = order["trace_url"].as_str().context("trace_url")?;
    ensure!(
        trace_url == format!("{}/trace/{trace_id}", Stack::from_env().jaeger_url),
        "trace_url {trace_url} does not point at the stack's Jaeger"
    );
    let quantities: Vec<u64> = order["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| i["quantity"].as_u64())
        .collect();
    ensure!(
        quantities.iter().sum::<u64>() == 3,
        "the browser ordered 2 + 1 pizzas, the order has {}",
        order["items"]
    );

    // The link the customer clicks leads to a real trace, and it holds none of their details.
    let jaeger = Jaeger::new(Stack::from_env().jaeger_url);
    let trace = jaeger
        .wait_for_trace(&trace_id, Duration::from_secs(60), |t| {
            t.span("POST /orders").is_some() && t.span("POST /tickets").is_some()
        })
        .await?;
    let leaked = personal_data(&trace, &[NAME, PHONE, STREET, POSTAL_CODE, CITY]);
    ensure!(leaked.is_empty(), "customer data in spans: {leaked:?}");
    println!(
        "browser run {:.1} s: order {order_id} completed, trace {trace_id} with {} spans in Jaeger",
        took.as_secs_f64(),
        trace.spans.len()
    );
    shop.stop().await
}

/// The UI's script and the browser test's script parse (a syntax error in app.js would otherwise
/// show only as a blank page).
#[test]
fn the_ui_scripts_are_valid_javascript() -> anyhow::Result<()> {
    for file in ["ui/app.js", "tests/browser/place_order.mjs"] {
        let path = ui_file(file);
        let output = std::process::Command::new("node")
            .arg("--check")
            .arg(&path)
            .output()
            .context("running node (install Node.js 18 or later)")?;
        ensure!(
            output.status.success(),
            "node --check {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The page loads nothing from elsewhere: every `src` and `href` in it is a path on the service.
#[test]
fn the_ui_references_nothing_outside_the_service() -> anyhow::Result<()> {
    for file in ["ui/index.html", "ui/app.js", "ui/style.css"] {
        let text = std::fs::read_to_string(ui_file(file))?;
        for needle in ["http://", "https://", "//fonts.", "@import", "url("] {
            ensure!(
                !text.contains(needle),
                "{file} contains {needle:?}: the UI must work offline"
            );
        }
    }
    Ok(())
}
