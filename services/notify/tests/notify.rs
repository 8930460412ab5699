//! The shared listening connection against a real PostgreSQL (`DATABASE_URL`, the native stack):
//! one connection for every channel and every pool of a process, notifications routed by channel,
//! a lost connection reported and healed, the connection closed with the last handle.
//! Each test gets a fresh database (`#[sqlx::test]`).

use std::time::Duration;

use pizza_notify::{Event, Notifications, Source, Subscription};
use sqlx::PgPool;

const PATIENCE: Duration = Duration::from_secs(10);

async fn next(subscription: &mut Subscription) -> Event {
    tokio::time::timeout(PATIENCE, subscription.recv())
        .await
        .expect("an event within the patience")
}

/// Nothing arrives for a while (long enough for a notification on loopback to have arrived).
async fn quiet(subscription: &mut Subscription) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(300), subscription.recv()).await {
        panic!("expected nothing, got {event:?}");
    }
}

/// The next notification's payload, past any `Missed` (a subscription's own start, another's).
async fn notified(subscription: &mut Subscription) -> String {
    loop {
        if let Event::Notified(payload) = next(subscription).await {
            return payload;
        }
    }
}

async fn notify(pool: &PgPool, channel: &str, payload: &str) {
    sqlx::query("select pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await
        .unwrap();
}

/// The backends of this database that listen (their last statement was a `LISTEN`).
async fn listening_backends(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "select pid from pg_stat_activity where datname = current_database() \
         and query ilike 'LISTEN %' and pid <> pg_backend_pid()",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn eventually_listening(pool: &PgPool, count: usize) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let pids = listening_backends(pool).await;
        if pids.len() == count {
            return pids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} listening backends, found {}",
            pids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn every_channel_and_every_pool_of_a_process_share_one_listening_connection(pool: PgPool) {
    let hub = Notifications::shared(&pool);
    let mut ovens = hub.subscribe("kitchen_tickets");
    assert_eq!(
        next(&mut ovens).await,
        Event::Missed,
        "told to look once it listens"
    );
    // A second pool to the same database, as a second component of the process would have.
    let other_pool = PgPool::connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let mut relay = Notifications::shared(&other_pool).subscribe("pizza_outbox");
    let mut relay_too = hub.subscribe("pizza_outbox");
    assert_eq!(next(&mut relay).await, Event::Missed);
    assert_eq!(next(&mut relay_too).await, Event::Missed);

    eventually_listening(&pool, 1).await;

    notify(&pool, "pizza_outbox", "kitchen").await;
    assert_eq!(notified(&mut relay).await, "kitchen");
    assert_eq!(notified(&mut relay_too).await, "kitchen");
    quiet(&mut ovens).await;
    notify(&pool, "kitchen_tickets", "").await;
    assert_eq!(notified(&mut ovens).await, "");
    quiet(&mut relay).await;

    // A private hub is a second connection: what two components without the shared hub cost.
    let private = Notifications::private(&pool);
    let _own = private.subscribe("pizza_outbox");
    eventually_listening(&pool, 2).await;
}

#[sqlx::test(migrations = false)]
async fn a_lost_connection_is_reported_as_missed_and_listening_resumes(pool: PgPool) {
    let hub = Notifications::shared(&pool);
    let mut subscription = hub.subscribe("orders_timeline");
    assert_eq!(next(&mut subscription).await, Event::Missed);
    let pids = eventually_listening(&pool, 1).await;

    sqlx::query("select pg_terminate_backend($1)")
        .bind(pids[0])
        .execute(&pool)
        .await
        .unwrap();
    // Whatever was sent while nobody listened is gone; the subscriber is told so.
    assert_eq!(next(&mut subscription).await, Event::Missed);
    let again = eventually_listening(&pool, 1).await;
    assert_ne!(again, pids, "a new connection listens");

    let order = uuid::Uuid::now_v7().to_string();
    notify(&pool, "orders_timeline", &order).await;
    assert_eq!(notified(&mut subscription).await, order);
}

#[sqlx::test(migrations = false)]
async fn the_connection_closes_with_the_last_handle(pool: PgPool) {
    let hub = Notifications::shared(&pool);
    let mut subscription = hub.subscribe("delivery_deliveries");
    assert_eq!(next(&mut subscription).await, Event::Missed);
    eventually_listening(&pool, 1).await;
    drop(hub);
    // The subscription alone keeps the connection.
    notify(&pool, "delivery_deliveries", "").await;
    assert_eq!(notified(&mut subscription).await, "");
    drop(subscription);
    eventually_listening(&pool, 0).await;
}

#[sqlx::test(migrations = false)]
async fn a_subscriber_that_falls_behind_is_told_it_missed_some(pool: PgPool) {
    let hub = Notifications::shared(&pool);
    let mut slow = hub.subscribe("pizza_workflow_wake");
    assert_eq!(next(&mut slow).await, Event::Missed);
    let burst = pizza_notify::CAPACITY + 10;
    // Distinct payloads: PostgreSQL folds identical notifications of one transaction into one.
    sqlx::query("select pg_notify('pizza_workflow_wake', n::text) from generate_series(1, $1) n")
        .bind(burst as i32)
        .execute(&pool)
        .await
        .unwrap();
    // Let the burst arrive before reading any of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(next(&mut slow).await, Event::Missed, "fell behind");
    // What is still buffered is the newest notifications.
    let Event::Notified(payload) = next(&mut slow).await else {
        panic!("a notification after the lag");
    };
    assert!(payload.parse::<usize>().unwrap() > 10);
}

#[sqlx::test(migrations = false)]
async fn a_process_subscription_opens_no_connection_and_hears_only_its_process(pool: PgPool) {
    let hub = Notifications::private(&pool);
    let mut ovens = hub.subscribe_from("kitchen_tickets", Source::Process);
    assert_eq!(
        next(&mut ovens).await,
        Event::Missed,
        "told to look once, at once"
    );
    // Nothing listens: a NOTIFY from the database never reaches it, and no backend was opened.
    notify(&pool, "kitchen_tickets", "from the database").await;
    quiet(&mut ovens).await;
    assert!(
        listening_backends(&pool).await.is_empty(),
        "a process subscription holds no listening connection"
    );
    // What the process announces reaches it, by channel.
    hub.announce("delivery_deliveries", "elsewhere");
    hub.announce("kitchen_tickets", "committed");
    assert_eq!(notified(&mut ovens).await, "committed");
    quiet(&mut ovens).await;
    // A database subscription to the same channel in the same process hears both.
    let mut listening = hub.subscribe("kitchen_tickets");
    assert_eq!(next(&mut listening).await, Event::Missed);
    hub.announce("kitchen_tickets", "announced");
    assert_eq!(notified(&mut listening).await, "announced");
    notify(&pool, "kitchen_tickets", "notified").await;
    assert_eq!(notified(&mut listening).await, "notified");
}
