//! The bench's counters on the real PostgreSQL: a transaction that writes is counted as a write,
//! reading the counters writes nothing, and the write profile names the table written.

use pizza_load::cost;
use pizza_testkit::Stack;
use sqlx::postgres::PgPoolOptions;

#[tokio::test]
async fn a_writing_transaction_moves_the_write_counter_and_reading_it_does_not() {
    let url = Stack::from_env().database_url;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query("create temporary table cost_probe (n int)")
        .execute(&pool)
        .await
        .unwrap();

    // The native stack loads pg_stat_statements (deploy/local/infra.sh), so the profile is on.
    assert!(
        cost::start_write_profile(&url).await.unwrap(),
        "pg_stat_statements is loaded"
    );
    let before = cost::transactions(&url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for n in 0..3 {
        sqlx::query("insert into cost_probe values ($1)")
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let after = cost::transactions(&url).await.unwrap();
    let moved = after - before;
    // Other tests may write on the same server meanwhile: at least ours, one id for three rows.
    assert!(moved.writes >= 1, "{moved:?}");
    let profile = cost::write_profile(&url).await.unwrap();
    let probe = profile
        .writes_by_table
        .iter()
        .find(|(table, _)| table == "cost_probe");
    assert_eq!(
        probe.map(|(_, n)| *n),
        Some(3),
        "three inserts into the probe: {profile:?}"
    );
    assert!(
        profile
            .most_called
            .iter()
            .any(|(statement, calls)| statement == "insert into cost_probe values ($1)" && *calls == 3),
        "the probe's insert among the most called, with its three calls: {profile:?}"
    );

    // Reading the counters back to back: they hand out no transaction id themselves. Another test
    // writing between the two reads would move them, so look for one quiet pair in a few tries.
    let mut quiet = false;
    for _ in 0..20 {
        let a = cost::transactions(&url).await.unwrap();
        let b = cost::transactions(&url).await.unwrap();
        if (b - a).writes == 0 {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "reading the counters must not count as a write");
    pool.close().await;
}

/// Nobody listens for notifications until someone follows an order: the kitchen and the delivery
/// wake their loops in memory after their own commits, and so do the order service's relay and
/// workflow worker; only an event stream needs to hear what other replicas write, and it listens on
/// the order service's one connection. PostgreSQL makes every listening connection of a database
/// read every notification sent there, so each one costs a transaction per notifying commit: a
/// loop with a connection of its own made it four, five or six here, one per service three, the
/// order service's alone one.
#[tokio::test]
async fn nobody_listens_until_an_order_is_followed_and_then_on_one_connection() {
    use std::time::{Duration, Instant};

    use pizza_load::managed::{ManagedOptions, ManagedStack};

    let stack = ManagedStack::start(ManagedOptions::new()).await.unwrap();
    let target = stack.target();
    let url = target.database_url.clone();
    // The loops subscribe as they start; give them time to have all started, then look a while.
    let started = Instant::now();
    let mut idle = Vec::new();
    while started.elapsed() < Duration::from_secs(4) {
        idle.push(cost::listening_backends(&url).await.unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Someone follows an order.
    let client = pizza_load::driver::http_client(Duration::from_secs(10));
    let base = target.order_url.trim_end_matches('/').to_owned();
    let placed: serde_json::Value = client
        .post(format!("{base}/orders"))
        .json(&pizza_load::driver::order_body(1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order = placed["order_id"].as_str().unwrap().to_owned();
    let stream = client
        .get(format!("{base}/orders/{order}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let started = Instant::now();
    let mut following = Vec::new();
    while started.elapsed() < Duration::from_secs(4) {
        following.push(cost::listening_backends(&url).await.unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(stream);
    stack.shutdown().await.unwrap();
    assert!(
        idle.iter().all(|n| *n == 0),
        "nobody, while nobody follows an order: {idle:?}"
    );
    assert_eq!(
        following.last(),
        Some(&1),
        "the order service's, for its stream: {following:?}"
    );
    assert!(
        following.iter().all(|n| *n <= 1),
        "never more than the order service's one: {following:?}"
    );
}
