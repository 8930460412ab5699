//! The background work of a service, and running it beside the HTTP API until shutdown.
//!
//! Every service does durable work in rounds (the kitchen's ovens, the delivery drivers): each round
//! reads what is due from PostgreSQL and takes it one step further, so a restart loses nothing and
//! two replicas share the work. [`rounds`] is that loop. [`run`] starts it with the outbox relay and
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
//!   [`RunStats::consumer_restarts`] counts the restarts.

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
use tokio::sync::watch;

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
    /// The consumer's totals, summed over its restarts (`crashed` is the last consumer's).
    pub consumer: ConsumerStats,
    /// How often the consumer was started again after a crash of the fault plan.
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
        total.crashed = stats.crashed;
        total.fatal = stats.fatal;
        if stats.fatal {
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
