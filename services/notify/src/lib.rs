//! One PostgreSQL `LISTEN` connection per process and database, shared by every loop that waits
//! for a `NOTIFY`: the outbox relay, the workflow worker, the kitchen's ovens, the delivery's
//! drivers, the order's event streams.
//!
//! # Why one
//! PostgreSQL (15 here, and every release up to at least 17) signals *every* backend that listens
//! in a database when a notification is committed there, whatever channel it is on and whatever
//! channels that backend listens to; each signalled backend then reads the notification queue in a
//! transaction of its own, which `pg_stat_database.xact_commit` counts like any other. A process
//! whose four loops each held a listening connection paid four of those transactions for every
//! `NOTIFY` anyone in the database sent. Measured on the shop (three services in one database, a
//! relay in each, the order's worker, the ovens and the drivers: six listening connections),
//! those reads were more than half of all the commits an order cost, with nobody's statements
//! behind them. Sharing one connection per process makes it one read per process per
//! notification (a backend that was signalled several times before it got to read reads them all
//! in one transaction), and one connection instead of several.
//!
//! # Use
//! [`Notifications::shared`] gives the process's hub for the database a pool connects to (the
//! same one for every pool to that database in the same runtime), and
//! [`Notifications::subscribe`] a [`Subscription`] to one channel. The hub starts listening on a
//! channel when it is first subscribed to, on a connection of its own outside the pool (a listening
//! connection is held for as long as it listens; the pool is sized for the work), and closes that
//! connection when the last handle and subscription are gone.
//!
//! # Or no `LISTEN` at all
//! A loop whose work only ever comes from its own process's commits subscribes with
//! [`Source::Process`] and is woken by [`Notifications::announce`], which the writer calls after
//! its commit: no connection, and, with the tables' `NOTIFY` triggers gone, nothing for the other
//! services' listening connections to read either (see [`Source`]). The kitchen, the delivery and
//! the order service's relay and workflow workers work this way; the order service's event streams
//! listen (while some are open), because they must hear what any replica writes.
//!
//! # What a subscriber must do with [`Event::Missed`]
//! A notification is lost when the listening connection is: what was committed while it was down,
//! or before a `LISTEN` took effect, was never sent to us. The hub then says [`Event::Missed`] to
//! every subscriber (after each connect, after a subscriber fell more than [`CAPACITY`] behind, and
//! once to each new subscription when its channel is listened to), and a subscriber looks at the
//! database as if it had been notified. Every loop that uses this keeps a slow safety-net poll for
//! what even that cannot cover (the database away for a long time).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{broadcast, mpsc, watch};

/// Notifications a subscriber may fall behind before it is told [`Event::Missed`] instead.
pub const CAPACITY: usize = 1024;

/// What a [`Subscription`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `NOTIFY` on the channel, with its payload.
    Notified(String),
    /// Notifications may have been lost (see the module docs): look as if notified.
    Missed,
}

/// The process's listening connection to one database; cheap to clone. See the module docs.
#[derive(Debug, Clone)]
pub struct Notifications {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One sender per channel subscribed to so far.
    channels: Mutex<HashMap<String, broadcast::Sender<Event>>>,
    /// Channels to listen on, to the task that owns the connection.
    listen: mpsc::UnboundedSender<String>,
    /// Dropped with the last handle: the task then closes the connection and ends.
    _alive: watch::Sender<()>,
}

/// Which hub a pool gets: one per runtime (a hub's task lives on the runtime that started it) and
/// database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    runtime: tokio::runtime::Id,
    host: String,
    port: u16,
    database: Option<String>,
    username: String,
}

fn hubs() -> &'static Mutex<HashMap<Key, Weak<Inner>>> {
    static HUBS: OnceLock<Mutex<HashMap<Key, Weak<Inner>>>> = OnceLock::new();
    HUBS.get_or_init(Default::default)
}

impl Notifications {
    /// The process's hub for the database `pool` connects to, started if there is none yet. Must
    /// be called inside a Tokio runtime.
    pub fn shared(pool: &PgPool) -> Self {
        let options = pool.connect_options();
        let key = Key {
            runtime: tokio::runtime::Handle::current().id(),
            host: options.get_host().to_owned(),
            port: options.get_port(),
            database: options.get_database().map(str::to_owned),
            username: options.get_username().to_owned(),
        };
        let mut hubs = hubs().lock().expect("notification hubs lock");
        hubs.retain(|_, hub| hub.strong_count() > 0);
        if let Some(inner) = hubs.get(&key).and_then(Weak::upgrade)
            && !inner.listen.is_closed()
        {
            return Self { inner };
        }
        let hub = Self::private(pool);
        hubs.insert(key, Arc::downgrade(&hub.inner));
        hub
    }

    /// A hub of its own for `pool`'s database, shared with nobody: its own listening connection.
    /// For tests that need to tell two listeners apart; services use [`Notifications::shared`].
    pub fn private(pool: &PgPool) -> Self {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*pool.connect_options()).clone());
        let (listen, requests) = mpsc::unbounded_channel();
        let (alive, gone) = watch::channel(());
        let inner = Arc::new(Inner {
            channels: Mutex::default(),
            listen,
            _alive: alive,
        });
        tokio::spawn(run(Arc::downgrade(&inner), own, requests, gone));
        Self { inner }
    }

    /// Notifications on `channel` from now on, from the database (`LISTEN`). The first
    /// [`Event::Missed`] arrives once the channel is listened to: look once then, for what was
    /// committed before.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        self.subscribe_from(channel, Source::Database)
    }

    /// Notifications on `channel` from now on, from `source`. A [`Source::Process`] subscription
    /// starts with an [`Event::Missed`] (look once, for what was committed before) and then gets
    /// only what this process [announces](Self::announce).
    pub fn subscribe_from(&self, channel: &str, source: Source) -> Subscription {
        let receiver = {
            let mut channels = self.inner.channels.lock().expect("notification channels lock");
            channels
                .entry(channel.to_owned())
                .or_insert_with(|| broadcast::channel(CAPACITY).0)
                .subscribe()
        };
        match source {
            // The task answers every request with a `Missed` on the channel once it listens there.
            Source::Database => {
                let _ = self.inner.listen.send(channel.to_owned());
            }
            Source::Process => {}
        }
        Subscription {
            receiver,
            first: (source == Source::Process).then_some(Event::Missed),
            _hub: self.inner.clone(),
        }
    }

    /// Hands `payload` to this process's subscribers of `channel`, as a `NOTIFY` would, without the
    /// database. Call it after the commit of what it announces: a subscriber woken before the
    /// commit looks, finds nothing, and sleeps again.
    pub fn announce(&self, channel: &str, payload: &str) {
        self.inner.send(channel, Event::Notified(payload.to_owned()));
    }
}

/// Where a [`Subscription`]'s notifications come from.
///
/// A process whose loops are only ever handed work by its own commits (the kitchen's tickets and
/// outbox rows are written by the kitchen, the delivery's by the delivery) needs no `LISTEN`: it
/// announces its commits in memory, holds no listening connection, and sends no `NOTIFY`. That
/// matters beyond the process: PostgreSQL signals every listening connection of the database for
/// every notifying commit, whoever sent it and whatever the channel, and each signalled connection
/// reads the queue in a transaction of its own. With one database for the shop, every `NOTIFY` the
/// kitchen or the delivery sent cost a read in each of the three services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Source {
    /// `LISTEN` on the process's connection: every process's commits.
    #[default]
    Database,
    /// Only what this process [announces](Notifications::announce): no connection, no `NOTIFY`.
    /// Another replica's commits reach the loop at its safety-net poll.
    Process,
}

/// Notifications on one channel; see [`Notifications::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Event>,
    /// What the first `recv` returns before anything received (a process subscription's `Missed`).
    first: Option<Event>,
    /// Keeps the hub, and so its connection, alive.
    _hub: Arc<Inner>,
}

impl Subscription {
    /// The next event. Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Event {
        if let Some(first) = self.first.take() {
            return first;
        }
        match self.receiver.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => Event::Missed,
            // The hub holds the sender as long as this subscription holds the hub.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// Forgets every event received so far: for a reader about to look at everything they could
    /// have announced (a claim that reads the whole table). A commit is announced after it is
    /// done, so what was announced before the look began is in the look; without this, each
    /// announcement that queued up while the reader was busy would wake it once more, to find
    /// nothing.
    pub fn clear(&mut self) {
        self.first = None;
        // A lag only means more was dropped than kept: go on until nothing is left.
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = self.receiver.try_recv() {}
    }
}

impl Inner {
    fn send(&self, channel: &str, event: Event) {
        let channels = self.channels.lock().expect("notification channels lock");
        if let Some(sender) = channels.get(channel) {
            // No receivers is fine: nobody is waiting on that channel right now.
            let _ = sender.send(event);
        }
    }

    fn send_all(&self, event: &Event) {
        let channels = self.channels.lock().expect("notification channels lock");
        for sender in channels.values() {
            let _ = sender.send(event.clone());
        }
    }
}

/// The task that owns the listening connection: listens on each channel asked for, hands every
/// notification to its channel's subscribers, reconnects (with back-off) after a lost connection,
/// and ends when the hub is gone.
async fn run(
    hub: Weak<Inner>,
    own: PgPool,
    mut requests: mpsc::UnboundedReceiver<String>,
    mut gone: watch::Receiver<()>,
) {
    let mut channels: Vec<String> = Vec::new();
    let mut listener: Option<PgListener> = None;
    let mut failures = 0u32;
    loop {
        if listener.is_none() && !channels.is_empty() {
            match connect(&own, &channels).await {
                Ok(connected) => {
                    failures = 0;
                    listener = Some(connected);
                    let Some(hub) = hub.upgrade() else { break };
                    hub.send_all(&Event::Missed);
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "listening for notifications failed; retrying (loops poll meanwhile)");
                    tokio::select! {
                        _ = gone.changed() => break,
                        () = tokio::time::sleep(pizza_retry::Backoff::default().delay(failures)) => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            // Fails when the hub's sender is dropped with the last handle.
            _ = gone.changed() => break,
            request = requests.recv() => {
                let Some(channel) = request else { break };
                if !channels.contains(&channel) {
                    channels.push(channel.clone());
                    if let Some(connected) = listener.as_mut()
                        && let Err(error) = connected.listen(&channel).await
                    {
                        tracing::warn!(%error, channel, "listening on a channel failed; reconnecting");
                        listener = None;
                        // The reconnect listens on every channel and says `Missed` to all.
                        continue;
                    }
                }
                if listener.is_some() {
                    let Some(hub) = hub.upgrade() else { break };
                    hub.send(&channel, Event::Missed);
                }
            }
            received = next(&mut listener) => {
                let Some(hub) = hub.upgrade() else { break };
                match received {
                    Ok(Some(notification)) => {
                        hub.send(notification.channel(), Event::Notified(notification.payload().to_owned()));
                    }
                    // The connection was lost and is back (listening again on every channel):
                    // what was sent meanwhile is gone.
                    Ok(None) => hub.send_all(&Event::Missed),
                    Err(error) => {
                        tracing::warn!(%error, "the listening connection failed; reconnecting");
                        listener = None;
                        failures = failures.saturating_add(1);
                        tokio::time::sleep(pizza_retry::Backoff::default().delay(failures)).await;
                    }
                }
            }
        }
    }
    drop(listener);
    own.close().await;
}

async fn connect(own: &PgPool, channels: &[String]) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(own).await?;
    let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
    listener.listen_all(channels).await?;
    Ok(listener)
}

/// The next notification of a connected listener; never completes without one.
async fn next(
    listener: &mut Option<PgListener>,
) -> Result<Option<sqlx::postgres::PgNotification>, sqlx::Error> {
    match listener {
        Some(listener) => listener.try_recv().await,
        None => std::future::pending().await,
    }
}

/// A pool of one connection of its own to the database of `pool`, whose planner may walk indexes in
/// order and nothing else: no sequential scan, no bitmap scan, no explicit sort, and no JIT.
///
/// For a claim that wants the first rows of a partial index in its order and stops at its limit
/// (the workflow engine's due runs, a relay's pending outbox rows), while the table's statistics lag
/// it by up to a minute and dead index entries pile up between vacuums. Left free, the planner
/// picks a bitmap scan and a sort of every candidate row, claim after claim: work that grows with
/// the very backlog the claims drain (each caller's docs have its measurements). A plain index scan
/// also marks the dead entries it meets, so the next claim skips them. JIT is off because the
/// planner prices the forbidden paths at ten billion, which crosses `jit_above_cost`: every claim
/// compiled itself first (0.6 s a claim, measured). The settings are the connection's, so they touch
/// no statement of the caller's pool; the claims of one loop run one at a time, so one connection
/// serves them, and a claim never queues behind the loop's work for a connection of the shared pool.
pub fn ordered_scan_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(ordered_scan_options(pool))
}

/// The connect options of [`ordered_scan_pool`], for a caller that adds settings of its own.
pub fn ordered_scan_options(pool: &PgPool) -> PgConnectOptions {
    (*pool.connect_options()).clone().options([
        ("enable_seqscan", "off"),
        ("enable_bitmapscan", "off"),
        ("enable_sort", "off"),
        ("jit", "off"),
    ])
}
