//! The background work of a service, and running it beside the HTTP API until shutdown.
//!
//! Every service does durable work in rounds (the kitchen's ovens, the delivery drivers): each round
//! reads what is due from PostgreSQL and takes it one step further, so a restart loses nothing and
//! two replicas share the work. [`rounds`] is the plain loop on a fixed interval; [`scheduled`] and
//! [`notified_rounds`] are the loop that sleeps until there is work (see "Waking on events"). [`run`]
//! starts the service's loops with the outbox relay and
//! the idempotent consumer of `pizza-messaging`, serves HTTP, and on shutdown stops all of them in
//! the order that loses nothing: HTTP first (in-flight requests finish), then the background work
//! (the relay finishes its round, the consumer commits its offsets).
//!
//! # The Kafka faults
//! [`run`] hands the service's live fault plan ([`Messaging::faults`]) to the relay and the consumer
//! (through `pizza_messaging::FaultHooks`), so a plan set with `PIZZA_FAULTS` or through the admin
//! API reaches them at their next decision:
//!
//! - `kafka_publish_failure_rate`: the relay fails that share of its publishes before they reach the
//!   broker and sends those rows again in a later round, in order per order (see
//!   `pizza_messaging::relay`).
//! - `consumer_crash_before_commit`: that many of the next applied records make the consumer stop as
//!   if the process had died after the effect's commit and before the offset was stored (see
//!   `pizza_messaging::consumer`). A real crash would end the process and its supervisor would start
//!   a new one; here the process lives on, so [`run`] plays the supervisor: it logs a warning, waits
//!   [`CONSUMER_RESTART_PAUSE`], and starts a new consumer in the same group. The crashed one was
//!   closed without committing the crashed record's offset, so the new one gets that record again
//!   and its inbox turns the delivery into a duplicate: the effect exists once. The pause keeps a
//!   plan with many crashes from spinning; a restart that fails is logged and tried again after the
//!   same pause; a stop ends the loop at any point, the pause included.
//!   [`RunStats::consumer_restarts`] counts the restarts. A consumer that ends through a fatal Kafka
//!   error, or stalled outside its group for too long (see `pizza_messaging::consumer`), is replaced
//!   the same way, with or without a fault plan.
//!
//! # Waking on events
//! A loop that polls every 200 ms costs five transactions a second per loop per replica whether or
//! not there is anything to do, and still adds up to 200 ms to every step of an order. A round of a
//! [`scheduled`] loop instead says when its next piece of work is due (the earliest `cook_until`,
//! the earliest `next_at`), and the loop sleeps exactly that long, or until it is woken: new work
//! (a ticket inserted, an oven freed) arrives as a PostgreSQL `NOTIFY`, which [`listen`] turns into a
//! [`Wake`]. NOTIFY is transactional (delivered at commit, only if the transaction commits) and
//! reaches every replica, so a woken round always finds the rows that woke it. A notification can
//! still be lost (the listening connection drops and reconnects); the loop then finds the work at its
//! *safety net*, a slow fixed poll (a second by default), and [`listen`] wakes the loop after every
//! reconnect so such a gap is closed at once. A service whose loops only its own process hands work
//! to (the kitchen, the delivery) does without the `NOTIFY`: its writers announce their commits in
//! memory ([`pizza_notify::Source::Process`]), and it holds no listening connection at all.

use std::fmt::Display;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use pizza_messaging::{
    Consumer, ConsumerConfig, ConsumerError, ConsumerStats, FaultHooks, Handler, Outbox, Relay, RelayConfig,
    RelayError, RelayStats, Schema,
};
use rdkafka::ClientConfig;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// Runs `round` every `tick` until `shutdown` completes. A failed round is logged (as `"{what}
/// round failed; retrying"`) and retried on the next tick: a database hiccup must not stop the
/// loop. Shutdown is checked between rounds, never in the middle of one, so a round's transaction
/// always commits or rolls back as a whole.
pub async fn rounds<F, Fut, T, E>(
    what: &str,
    tick: Duration,
    shutdown: impl Future<Output = ()>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let mut shutdown = pin!(shutdown);
    loop {
        if let Err(error) = round().await {
            tracing::warn!(%error, "{what} round failed; retrying");
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep(tick) => {}
        }
    }
}

/// Wakes a [`scheduled`] loop ahead of its schedule. Clones wake the same loop. A wake that
/// arrives while a round runs is kept, so the loop runs one more round right after it: work
/// committed during a round is never left for the safety net.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// A wake for a new loop.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the loop now, or at the end of the round it is in.
    pub fn wake(&self) {
        // One stored permit at most: any number of wakes during a round make one more round.
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

/// How long a [`scheduled`] loop waits after a failed round (or its safety net, if shorter): soon
/// enough that a database hiccup costs an order little, slow enough not to flood the log.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// Runs `round` until `shutdown` completes, sleeping between rounds until the work the round said
/// is next is due (`Ok(Some(in))`), `wake` is woken, or `safety_net` has passed, whichever comes
/// first; `Ok(None)` means nothing is scheduled. A failed round is logged (as `"{what} round
/// failed; retrying"`) and retried after [`RETRY_AFTER_FAILURE`]. Shutdown is checked between
/// rounds, never in the middle of one, so a round's transaction always commits or rolls back whole.
pub async fn scheduled<F, Fut, E>(
    what: &str,
    safety_net: Duration,
    wake: Wake,
    shutdown: impl Future<Output = ()>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Duration>, E>>,
    E: Display,
{
    let mut shutdown = pin!(shutdown);
    loop {
        let wait = match round().await {
            Ok(next) => next.map_or(safety_net, |next| next.min(safety_net)),
            Err(error) => {
                tracing::warn!(%error, "{what} round failed; retrying");
                RETRY_AFTER_FAILURE.min(safety_net)
            }
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = wake.woken() => {}
            // More is due already (a round takes a bounded batch): go on at once, but let a stop in.
            () = tokio::task::yield_now(), if wait.is_zero() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A number of seconds from now read from the database (`extract(epoch from due - clock_timestamp())`)
/// as the wait for [`scheduled`]: zero when it is past, saturated when it is absurdly far.
pub fn seconds_from_now(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX)
}

/// Added to a wait for work due at a time the database set, so the round that wakes for it finds
/// it due by the database's clock (timers fire on the millisecond; the database's clock has
/// microseconds).
pub const DUE_SLACK: Duration = Duration::from_millis(2);

/// The wait a round hands [`scheduled`] for work due in `due` (from [`seconds_from_now`]): at once
/// if it is due, else [`DUE_SLACK`] after it.
pub fn until_due(due: Option<Duration>) -> Option<Duration> {
    due.map(|due| if due.is_zero() { due } else { due + DUE_SLACK })
}

/// [`scheduled`], woken by every notification on `channel` from `source` (see [`listen`]): a
/// `NOTIFY` in the database of `pool`, or this process's announcement
/// ([`pizza_notify::Notifications::announce`]).
pub async fn notified_rounds<F, Fut, E>(
    what: &str,
    (pool, channel, source): (&PgPool, &'static str, pizza_notify::Source),
    safety_net: Duration,
    shutdown: impl Future<Output = ()>,
    round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Duration>, E>>,
    E: Display,
{
    let wake = Wake::new();
    let listener = tokio::spawn(listen(pool.clone(), (channel, source), wake.clone()));
    scheduled(what, safety_net, wake, shutdown, round).await;
    listener.abort();
}

/// Listens on `channel` and wakes `wake` on every notification, and whenever some may have been
/// missed (after every (re)connect: notifications sent while nobody listened are gone). Runs until
/// aborted; a lost connection is re-established with back-off, the loop's safety net covering the
/// gap.
///
/// The listening connection is the process's one for the database of `pool` ([`pizza_notify`]),
/// shared with the relay, the workflow worker and anything else in the process that listens there:
/// PostgreSQL makes every listening connection of a database read every notification sent in it,
/// in a transaction of its own.
pub async fn listen(pool: PgPool, (channel, source): (&'static str, pizza_notify::Source), wake: Wake) {
    let mut notifications = pizza_notify::Notifications::shared(&pool).subscribe_from(channel, source);
    loop {
        notifications.recv().await;
        wake.wake();
    }
}

/// Completes when [`run`] stops the background work. Hand it to a loop as its shutdown future.
#[derive(Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Waits for the stop.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Two handles on the same stop, for work that runs two loops.
    pub fn split(self) -> (Stop, Stop) {
        (Stop(self.0.clone()), self)
    }
}

/// The messaging side of a service: where its outbox and inbox live, how to reach Kafka, and what
/// it consumes.
#[derive(Debug)]
pub struct Messaging<H: Handler> {
    /// The service's database.
    pub pool: PgPool,
    /// The schema of its outbox and inbox.
    pub schema: Schema,
    /// Kafka client settings (bootstrap servers).
    pub kafka: ClientConfig,
    /// How often the relay looks for unpublished events at most (the service's tick, when it is
    /// shorter than the relay's default).
    pub relay_poll: Duration,
    /// Where the relay's wake-ups come from (see [`Service::WAKES`](crate::host::Service::WAKES)).
    pub wakes: pizza_messaging::Source,
    /// The consumer's group and topics, and the replica's stable name
    /// ([`ConsumerConfig::instance_id`]), which the relay's claims carry too.
    pub consumer: ConsumerConfig,
    /// What the consumer does with each event.
    pub handler: H,
    /// The service's live fault plan: Kafka publish failures for the relay, crashes before commit
    /// for the consumer.
    pub faults: crate::Faults,
}

/// Why a service could not run, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The outbox relay could not be created.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The consumer could not be created.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// Serving HTTP failed.
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
    /// A background task panicked.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What the relay and the consumer did, for the log line of a clean stop.
#[derive(Debug, Clone)]
pub struct RunStats {
    /// The relay's totals.
    pub relay: RelayStats,
    /// The consumer's totals, summed over its restarts (`crashed`, `fatal` and `stalled` are the
    /// last consumer's).
    pub consumer: ConsumerStats,
    /// How often the consumer was started again after a crash of the fault plan, a fatal error or a
    /// stall.
    pub consumer_restarts: u32,
}

/// How long [`run`] waits before starting a new consumer after one crashed (see the module docs).
pub const CONSUMER_RESTART_PAUSE: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` and runs `work` (given its [`Stop`]), the outbox relay and the
/// consumer of `messaging` until `shutdown` completes; then lets in-flight requests finish, stops
/// the background work, waits for it and returns what the relay and the consumer did.
pub async fn run<H, W, WF>(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    messaging: Messaging<H>,
    work: W,
) -> Result<RunStats, RunError>
where
    H: Handler,
    W: FnOnce(Stop) -> WF,
    WF: Future<Output = ()> + Send + 'static,
{
    let Messaging {
        pool,
        schema,
        kafka,
        relay_poll,
        wakes,
        consumer,
        handler,
        faults,
    } = messaging;
    let faults: Arc<dyn FaultHooks> = Arc::new(faults);
    let relay = Relay::new(
        pool.clone(),
        Outbox::new(schema.clone()),
        &kafka,
        RelayConfig {
            poll_interval: relay_poll.min(RelayConfig::default().poll_interval),
            instance_id: consumer.instance_id.clone(),
            faults: Some(faults.clone()),
            wakes: Some(wakes),
            ..RelayConfig::default()
        },
    )?;
    let consumer_config = ConsumerConfig {
        faults: Some(faults),
        ..consumer
    };
    // Shared, so a consumer started after a crash gets the same handler.
    let handler = Arc::new(handler);
    let new_consumer = move || {
        Consumer::new(
            pool.clone(),
            schema.clone(),
            &kafka,
            consumer_config.clone(),
            handler.clone(),
        )
    };
    // The first one is created here, so a configuration error stops the service at start.
    let first = new_consumer()?;
    let (stop, stopped) = watch::channel(false);
    let work = tokio::spawn(work(Stop(stopped.clone())));
    let relay = tokio::spawn(relay.run(Stop(stopped.clone()).wait()));
    let consumer = tokio::spawn(supervise_consumer(
        first,
        new_consumer,
        stopped,
        CONSUMER_RESTART_PAUSE,
    ));
    let served = crate::serve::serve(listener, router, shutdown).await;
    let _ = stop.send(true);
    work.await?;
    let relay = relay.await?;
    let (consumer, consumer_restarts) = consumer.await?;
    served?;
    Ok(RunStats {
        relay,
        consumer,
        consumer_restarts,
    })
}

/// Runs `first` until `stopped`; whenever a consumer stops through a crash of the fault plan, waits
/// `pause` and runs a new one from `new_consumer` (see the module docs). Returns the summed stats
/// and the number of restarts.
async fn supervise_consumer<H: Handler>(
    first: Consumer<H>,
    new_consumer: impl Fn() -> Result<Consumer<H>, ConsumerError>,
    stopped: watch::Receiver<bool>,
    pause: Duration,
) -> (ConsumerStats, u32) {
    let mut total = ConsumerStats::default();
    let mut restarts = 0u32;
    let mut consumer = first;
    loop {
        let stats = consumer.run(Stop(stopped.clone()).wait()).await;
        total.processed += stats.processed;
        total.duplicates += stats.duplicates;
        total.dead_lettered += stats.dead_lettered;
        total.retries += stats.retries;
        total.parked += stats.parked;
        total.crashed = stats.crashed;
        total.fatal = stats.fatal;
        total.stalled = stats.stalled;
        if stats.stalled {
            tracing::warn!(
                restarts,
                ?pause,
                "the consumer stalled outside its group; starting a new one, which resumes from the \
                 committed offsets"
            );
        } else if stats.fatal {
            tracing::warn!(
                restarts,
                ?pause,
                "the consumer hit a fatal Kafka error; starting a new one, which resumes from the \
                 committed offsets"
            );
        } else if stats.crashed {
            tracing::warn!(
                restarts,
                ?pause,
                "the consumer crashed before storing an offset (fault plan); starting a new one, which \
                 gets that record again"
            );
        } else {
            return (total, restarts);
        }
        consumer = loop {
            let mut stop = pin!(Stop(stopped.clone()).wait());
            tokio::select! {
                biased;
                () = &mut stop => return (total, restarts),
                () = tokio::time::sleep(pause) => {}
            }
            match new_consumer() {
                Ok(consumer) => break consumer,
                Err(error) => tracing::warn!(%error, "starting a new consumer failed; retrying"),
            }
        };
        restarts += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Starts a [`scheduled`] loop whose rounds answer `next` and count themselves; the safety net
    /// is an hour, so only a wake or a round's own schedule can start another round.
    fn scheduled_loop(
        next: Option<Duration>,
    ) -> (
        Arc<AtomicU32>,
        Wake,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let wake = Wake::new();
        let (stop, stopped) = watch::channel(false);
        let counted = calls.clone();
        let woken = wake.clone();
        let task = tokio::spawn(async move {
            scheduled(
                "test",
                Duration::from_secs(3600),
                woken,
                Stop(stopped).wait(),
                move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move { Ok::<_, &str>(next) }
                },
            )
            .await
        });
        (calls, wake, stop, task)
    }

    async fn until_calls(calls: &AtomicU32, at_least: u32) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while calls.load(Ordering::SeqCst) < at_least {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{at_least} rounds within 5 s"));
    }

    #[tokio::test]
    async fn a_scheduled_loop_sleeps_until_woken_and_a_wake_during_a_round_is_kept() {
        let (calls, wake, stop, task) = scheduled_loop(None);
        until_calls(&calls, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "nothing scheduled: no second round"
        );
        wake.wake();
        until_calls(&calls, 2).await;
        // A burst of wakes: one wakes the waiting loop, the rest are kept as one more round at most.
        for _ in 0..10 {
            wake.wake();
        }
        until_calls(&calls, 3).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after_burst = calls.load(Ordering::SeqCst);
        assert!(
            (3..=4).contains(&after_burst),
            "ten wakes made {} rounds",
            after_burst - 2
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn a_scheduled_loop_runs_again_when_its_round_says_the_next_work_is_due() {
        let (calls, _wake, stop, task) = scheduled_loop(Some(Duration::from_millis(10)));
        until_calls(&calls, 5).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop stops on shutdown")
            .unwrap();

        // Work due now (a full batch): rounds back to back, and a stop still gets in.
        let (calls, _wake, stop, task) = scheduled_loop(Some(Duration::ZERO));
        until_calls(&calls, 100).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a loop with work due still stops")
            .unwrap();
    }

    #[test]
    fn seconds_from_the_database_become_a_wait() {
        assert_eq!(seconds_from_now(-3.0), Duration::ZERO);
        assert_eq!(seconds_from_now(f64::NAN), Duration::ZERO);
        assert_eq!(seconds_from_now(0.25), Duration::from_millis(250));
        assert_eq!(seconds_from_now(f64::INFINITY), Duration::MAX);
        assert_eq!(until_due(Some(Duration::ZERO)), Some(Duration::ZERO));
        assert_eq!(
            until_due(Some(Duration::from_millis(10))),
            Some(Duration::from_millis(12))
        );
        assert_eq!(until_due(None), None);
    }

    #[tokio::test]
    async fn rounds_keep_going_after_a_failure_and_stop_on_shutdown() {
        let calls = Arc::new(AtomicU32::new(0));
        let (stop, stopped) = watch::channel(false);
        let counted = calls.clone();
        let task = tokio::spawn(async move {
            rounds(
                "test",
                Duration::from_millis(5),
                Stop(stopped).wait(),
                move || {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    async move { if n == 1 { Err("boom") } else { Ok(()) } }
                },
            )
            .await
        });
        while calls.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop stops on shutdown")
            .unwrap();
        let after_stop = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            after_stop,
            "no round after the stop"
        );
    }
}
