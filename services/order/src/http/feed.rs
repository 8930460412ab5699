//! One listener per process for every order's event stream: PostgreSQL `LISTEN/NOTIFY` on timeline
//! changes, fanned out to the streams that follow each order.
//!
//! ```text
//!  any replica: insert into orders.timeline ──trigger──► pg_notify('orders_timeline', order id)
//!                                                                │ (at commit)
//!  this process: one listener  ─► registry: order id ─► watch ─► each stream of that order re-reads
//! ```
//!
//! Every replica writes timeline rows (the workflow's steps, the consumer's events, the reconciler),
//! so an in-process signal would miss what the others write; `NOTIFY` reaches every listener, from
//! whichever process committed, and only at commit, so a stream never reads a row before it is
//! visible. A stream costs no query while nothing happens to its order: it reads when its order is
//! notified, and on a slow safety-net timer that covers a notification lost while the listener
//! reconnected (after a reconnect every stream is told to read anyway).
//!
//! The listener is the process's one listening connection for the database ([`pizza_notify`]), never
//! a connection of the handlers' pool; the feed subscribes to it with its first stream (the
//! workflow worker and the relay of the order service wake in memory and listen to nothing, so
//! without streams the process holds no listening connection). The number of streams a process
//! serves at once is capped ([`TimelineFeed::subscribe`] refuses beyond it).
//!
//! # Notifications only while someone streams
//! The trigger notifies only while some process is registered in `orders.timeline_listeners`
//! (migration 0007): a notifying commit costs every listening connection of the database a
//! transaction and takes the cluster's notification queue lock, and most orders are followed by
//! nobody. A process registers while it has streams open ([`REGISTRATION`], renewed every
//! [`RENEW_EVERY`]); when its first stream opens, every stream reads again once the registration has
//! committed, so an entry written before the writers could see it is not left to the safety net
//! (only one whose transaction began before the registration and committed after that read is,
//! for [`FeedConfig::safety_poll`] at most).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pizza_notify::{Event, Notifications};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use uuid::Uuid;

/// The channel the timeline trigger notifies (migration 0006), with the order id as payload.
pub(crate) const CHANNEL: &str = "orders_timeline";

/// How long a registration in `orders.timeline_listeners` lasts (see the module docs).
const REGISTRATION: Duration = Duration::from_secs(60);
/// How often a process with streams open renews its registration.
const RENEW_EVERY: Duration = Duration::from_secs(20);

/// How a feed is sized and paced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeedConfig {
    /// Streams served at once by this process.
    pub(crate) max_streams: usize,
    /// How often a stream reads its order's timeline when nothing was notified: the safety net.
    pub(crate) safety_poll: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            max_streams: 200,
            safety_poll: Duration::from_secs(5),
        }
    }
}

/// The timeline notifications of this process (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct TimelineFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    config: FeedConfig,
    streams: Arc<Semaphore>,
    orders: Mutex<HashMap<Uuid, Watched>>,
    listening: std::sync::Once,
    /// Dropped with the feed: the listener sees it go, closes its connection and ends.
    alive: watch::Sender<()>,
    /// This process's name in `orders.timeline_listeners`.
    listener: String,
    /// Tells the listener the first stream opened: register now.
    register: Arc<tokio::sync::Notify>,
}

#[derive(Debug)]
struct Watched {
    changed: watch::Sender<u64>,
    subscribers: usize,
}

/// A stream's hold on the feed: its place under the cap, and the changes of its order. Dropping it
/// gives both back.
#[derive(Debug)]
pub(crate) struct Subscription {
    feed: Arc<Inner>,
    order_id: Uuid,
    changed: watch::Receiver<u64>,
    _permit: OwnedSemaphorePermit,
}

/// Every stream slot is taken.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this process serves {0} event streams already")]
pub(crate) struct Full(pub(crate) usize);

impl TimelineFeed {
    /// A feed on the database of `pool`; its listener starts with the first subscription.
    pub(crate) fn new(pool: &PgPool, config: FeedConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: pool.clone(),
                config,
                streams: Arc::new(Semaphore::new(config.max_streams)),
                orders: Mutex::new(HashMap::new()),
                listening: std::sync::Once::new(),
                alive: watch::channel(()).0,
                listener: format!("order-{}", Uuid::new_v4().simple()),
                register: Arc::default(),
            }),
        }
    }

    /// Follows the changes of `order_id`, if a stream slot is free.
    pub(crate) fn subscribe(&self, order_id: Uuid) -> Result<Subscription, Full> {
        let permit = self
            .inner
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full(self.inner.config.max_streams))?;
        self.inner.listening.call_once(|| {
            let feed_gone = self.inner.alive.subscribe();
            let notifications = Notifications::shared(&self.inner.pool).subscribe(CHANNEL);
            let register = self.inner.register.clone();
            tokio::spawn(listen(
                Arc::downgrade(&self.inner),
                notifications,
                feed_gone,
                register,
            ));
        });
        let changed = {
            let mut orders = self.inner.orders.lock().expect("feed registry lock");
            if orders.is_empty() {
                // The first stream (again): the writers must start notifying.
                self.inner.register.notify_one();
            }
            let watched = orders.entry(order_id).or_insert_with(|| Watched {
                changed: watch::channel(0).0,
                subscribers: 0,
            });
            watched.subscribers += 1;
            watched.changed.subscribe()
        };
        Ok(Subscription {
            feed: self.inner.clone(),
            order_id,
            changed,
            _permit: permit,
        })
    }
}

impl Inner {
    /// Registers (or renews) this process as one whose streams need the timeline's notifications;
    /// clears registrations long expired. Whether it worked (a failure is logged: the streams fall
    /// back to their safety-net reads until the next try).
    async fn registered(&self) -> bool {
        let done = sqlx::query(
            "with expired as ( \
                 delete from orders.timeline_listeners where until < now() - interval '1 hour' \
             ) \
             insert into orders.timeline_listeners (listener, until) \
             values ($1, now() + make_interval(secs => $2)) \
             on conflict (listener) do update set until = excluded.until",
        )
        .bind(&self.listener)
        .bind(REGISTRATION.as_secs_f64())
        .execute(&self.pool)
        .await;
        if let Err(error) = &done {
            tracing::warn!(%error, "registering for timeline notifications failed; streams read on their safety net");
        }
        done.is_ok()
    }

    fn notify(&self, order_id: Uuid) {
        if let Some(watched) = self.orders.lock().expect("feed registry lock").get(&order_id) {
            watched.changed.send_modify(|n| *n += 1);
        }
    }

    fn notify_all(&self) {
        for watched in self.orders.lock().expect("feed registry lock").values() {
            watched.changed.send_modify(|n| *n += 1);
        }
    }
}

impl Subscription {
    /// Marks every change so far as seen: call it before reading the timeline, so a change committed
    /// after the read wakes [`Subscription::changed`].
    pub(crate) fn mark_seen(&mut self) {
        self.changed.borrow_and_update();
    }

    /// Completes when the order changed since [`Subscription::mark_seen`], or after `safety_poll`.
    pub(crate) async fn changed(&mut self) {
        let poll = self.feed.config.safety_poll;
        // The sender lives in the registry as long as this subscription does: `changed` cannot fail.
        let _ = tokio::time::timeout(poll, self.changed.changed()).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut orders = self.feed.orders.lock().expect("feed registry lock");
        if let Some(watched) = orders.get_mut(&self.order_id) {
            watched.subscribers -= 1;
            if watched.subscribers == 0 {
                orders.remove(&self.order_id);
            }
        }
    }
}

/// The listener: `orders_timeline` on the process's listening connection, each notification to the
/// streams of its order, every stream told to read when notifications may have been missed (the
/// connection was lost and is back); and the process's registration for those notifications,
/// made when a first stream opens and renewed while streams are open. Ends when the feed is gone.
async fn listen(
    feed: Weak<Inner>,
    mut notifications: pizza_notify::Subscription,
    mut feed_gone: watch::Receiver<()>,
    register: Arc<tokio::sync::Notify>,
) {
    // The first stream's request registers at once; renewals start one period later.
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = notifications.recv() => event,
            // Fails when the feed's sender is dropped: the feed is gone.
            _ = feed_gone.changed() => return,
            () = register.notified() => {
                let Some(feed) = feed.upgrade() else { return };
                if feed.registered().await {
                    // What was written before the writers saw the registration: read it now.
                    feed.notify_all();
                }
                continue;
            }
            _ = renew.tick() => {
                let Some(feed) = feed.upgrade() else { return };
                if !feed.orders.lock().expect("feed registry lock").is_empty() {
                    feed.registered().await;
                }
                continue;
            }
        };
        let Some(feed) = feed.upgrade() else { return };
        match event {
            Event::Notified(payload) => match payload.parse::<Uuid>() {
                Ok(order_id) => feed.notify(order_id),
                Err(_) => tracing::warn!(payload, "timeline notification without an order id"),
            },
            Event::Missed => feed.notify_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_streams: usize) -> FeedConfig {
        FeedConfig {
            max_streams,
            // Never within a test: only a notification can wake a subscription.
            safety_poll: Duration::from_secs(3600),
        }
    }

    #[sqlx::test(migrations = false)]
    async fn a_notification_from_any_connection_wakes_the_streams_of_that_order_only(pool: PgPool) {
        let feed = TimelineFeed::new(&pool, config(4));
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut a = feed.subscribe(mine).unwrap();
        let mut b = feed.subscribe(mine).unwrap();
        let mut c = feed.subscribe(other).unwrap();
        for s in [&mut a, &mut b, &mut c] {
            s.mark_seen();
        }
        // The listener is up once a notification for a registered order reaches it: send until one
        // does (a notification sent before LISTEN took effect is lost by design; the listener then
        // tells every stream to read, which also wakes `a`).
        let notify = || {
            sqlx::query("select pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(mine.to_string())
                .execute(&pool)
        };
        notify().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), a.changed.changed())
            .await
            .expect("the first notification or the listener's start wakes the stream")
            .unwrap();
        // From here on the listener is known to listen: exactly the streams of `mine` wake.
        for s in [&mut a, &mut b, &mut c] {
            s.mark_seen();
        }
        notify().await.unwrap();
        for s in [&mut a, &mut b] {
            tokio::time::timeout(Duration::from_secs(30), s.changed.changed())
                .await
                .expect("a notification of its order wakes a stream")
                .unwrap();
        }
        assert!(
            !c.changed.has_changed().unwrap(),
            "another order's stream sleeps on"
        );
    }

    #[sqlx::test(migrations = false)]
    async fn a_timeline_entry_committed_anywhere_notifies_its_order(pool: PgPool) {
        let order = migrated_with_an_order(&pool).await;
        let feed = TimelineFeed::new(&pool, config(2));
        let mut stream = feed.subscribe(order).unwrap();
        settled(&pool, &feed, &mut stream).await;
        let mut tx = pool.begin().await.unwrap();
        let change = crate::store::Change::to(crate::store::Status::Paid, "payment-captured");
        crate::store::advance(&mut tx, order, change).await.unwrap();
        assert!(
            !stream.changed.has_changed().unwrap(),
            "nothing before the commit"
        );
        tx.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), stream.changed.changed())
            .await
            .expect("the commit of a timeline entry notifies the order's streams")
            .unwrap();
    }

    /// Migrates the order service's schema and inserts one bare order; returns its id.
    async fn migrated_with_an_order(pool: &PgPool) -> Uuid {
        crate::store::migrate(pool).await.unwrap();
        let order = Uuid::now_v7();
        sqlx::query(
            "insert into orders.orders (order_id, status, items, total_cents, customer, trace_id) \
             values ($1, 'accepted', '[]', 0, '{}', 'x')",
        )
        .bind(order)
        .execute(pool)
        .await
        .unwrap();
        order
    }

    async fn until_registered(pool: &PgPool) {
        let registered = || async {
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from orders.timeline_listeners where until > now())",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        };
        let started = std::time::Instant::now();
        while !registered().await {
            assert!(started.elapsed() < Duration::from_secs(30), "no registration");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the feed's start is behind `stream`, then marks it seen: the listener listens
    /// (the `Missed` it says then was handled) and the process's registration committed and told
    /// every stream to read. From then on only a notification of its order wakes `stream`.
    ///
    /// A probe stream of another order tells: when a notification of the probe's order wakes the
    /// probe but not `stream`, neither start event can still be pending (the listening one comes
    /// before any notification; the registration's query had committed, and the listener handles
    /// nothing else until it told the streams).
    async fn settled(pool: &PgPool, feed: &TimelineFeed, stream: &mut Subscription) {
        until_registered(pool).await;
        let probe_order = Uuid::now_v7();
        let mut probe = feed.subscribe(probe_order).unwrap();
        let started = std::time::Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the feed never settled"
            );
            stream.mark_seen();
            probe.mark_seen();
            sqlx::query("select pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(probe_order.to_string())
                .execute(pool)
                .await
                .unwrap();
            let probe_woke = tokio::time::timeout(Duration::from_secs(1), probe.changed.changed())
                .await
                .is_ok();
            if probe_woke && !stream.changed.has_changed().unwrap() {
                return;
            }
        }
    }

    /// Whether `listener` hears a notification within a moment.
    async fn heard(listener: &mut sqlx::postgres::PgListener) -> bool {
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_ok()
    }

    #[sqlx::test(migrations = false)]
    async fn timeline_entries_notify_only_while_a_process_serves_event_streams(pool: PgPool) {
        let order = migrated_with_an_order(&pool).await;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
        listener.listen(CHANNEL).await.unwrap();
        let advance = |event: &'static str| {
            let pool = pool.clone();
            async move {
                let mut conn = pool.acquire().await.unwrap();
                let change = crate::store::Change::to(crate::store::Status::Paid, event);
                crate::store::advance(&mut conn, order, change).await.unwrap();
            }
        };
        advance("nobody-follows").await;
        assert!(!heard(&mut listener).await, "no stream anywhere: no notification");
        // A process's first stream registers it, and entries notify from then on.
        let feed = TimelineFeed::new(&pool, config(1));
        let stream = feed.subscribe(order).unwrap();
        until_registered(&pool).await;
        advance("followed").await;
        assert!(heard(&mut listener).await, "a stream is open: the entry notifies");
        // The process stops serving streams: its listener ends, and a registration it may have had
        // in flight (the first renewal and the first stream's both run at its start) commits.
        drop(stream);
        drop(feed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The registration lapses (made to here, as `REGISTRATION` would) once streams are gone.
        sqlx::query("update orders.timeline_listeners set until = now() - interval '1 second'")
            .execute(&pool)
            .await
            .unwrap();
        advance("nobody-follows-again").await;
        assert!(!heard(&mut listener).await, "no stream any more: no notification");
    }

    #[sqlx::test(migrations = false)]
    async fn the_streams_of_a_process_are_capped_and_a_closed_one_frees_its_slot(pool: PgPool) {
        let feed = TimelineFeed::new(&pool, config(2));
        let order = Uuid::now_v7();
        let first = feed.subscribe(order).unwrap();
        let _second = feed.subscribe(Uuid::now_v7()).unwrap();
        assert!(matches!(feed.subscribe(order), Err(Full(2))));
        drop(first);
        let _third = feed
            .subscribe(order)
            .expect("a closed stream gives its slot back");
        assert_eq!(
            feed.inner.orders.lock().unwrap().len(),
            2,
            "one entry per followed order"
        );
    }
}
