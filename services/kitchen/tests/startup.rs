//! The kitchen's binary at start: a shop reachable beyond loopback never runs with the workshop's
//! published admin token or a guessable one (`pizza_servicekit::faults::admin_access`).
//!
//! The real binary is run, so the check is known to sit on the path every deployment takes. It
//! refuses before it binds or connects: PostgreSQL is pointed at a port nothing listens on, and the
//! refusal must come first.

use std::process::Output;
use std::time::Duration;

use pizza_servicekit::WORKSHOP_ADMIN_TOKEN;
use tokio::process::Command;

/// Starts the kitchen with `addr` and `token` and waits for it to stop on its own.
async fn kitchen(addr: &str, token: &str) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_pizza-kitchen"))
        .env_clear()
        .env("DATABASE_URL", "postgres://pizza:pizza@127.0.0.1:1/pizza")
        .env("PIZZA_KITCHEN_ADDR", addr)
        .env("PIZZA_ADMIN_TOKEN", token)
        .env("OTEL_SDK_DISABLED", "true")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the kitchen stops on its own")
        .expect("the kitchen binary runs")
}

#[tokio::test]
async fn beyond_loopback_the_kitchen_refuses_the_workshop_token_and_a_short_one_before_it_listens() {
    for token in [WORKSHOP_ADMIN_TOKEN, "short-tok"] {
        let out = kitchen("0.0.0.0:0", token).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{token}: {stderr}");
        assert!(
            stderr.contains("PIZZA_ADMIN_TOKEN") && stderr.contains("listens on 0.0.0.0:0, beyond loopback"),
            "{token}: the refusal names the variable and the address: {stderr}"
        );
        assert!(
            !stderr.contains("PostgreSQL"),
            "{token}: refused before connecting: {stderr}"
        );
        assert!(!stderr.contains(token), "the token is never printed: {stderr}");
    }
}
