//! What an order costs the platform, measured around one bench step on a shop of the tester's own:
//! PostgreSQL commits, Kafka records, spans, and each service's memory and CPU.
//!
//! Every figure comes from outside the services, so it holds whatever the services think they do:
//! - **writes**: transactions that wrote something, from PostgreSQL's transaction id counter
//!   (`pg_snapshot_xmax(pg_current_snapshot())`, the next id it will hand out; reading it hands none
//!   out). Only a transaction that writes is given an id, so this is what an order costs the
//!   database's write path (WAL, fsync at commit), whoever the transaction belonged to: the three
//!   services, the engine, the relays and the consumers. The counter is the server's, not the
//!   database's: the bench's server runs nothing else while it measures.
//! - **commits**: `pg_stat_database.xact_commit` of the shop's own database (nobody else uses
//!   it): every transaction, reads included, so also the load tester's `GET /orders/{id}` while it
//!   follows the orders and the event streams' reads. The tester counts its looks the order service
//!   answered (each is one statement outside a transaction: one commit), and the platform's figure
//!   leaves them out: how often the tester polls is not what an order costs. PostgreSQL flushes a backend's counters at
//!   most once a second while it is busy, ten seconds after it goes idle, and when it exits: the
//!   step's last reading is taken after the services have stopped, so every commit of theirs is
//!   counted. The reading between steps (the idle window) can lag by those ten seconds; it is a
//!   rate, not an audit.
//! - **where the writes go**: when the server has `pg_stat_statements` loaded (the native stack
//!   starts PostgreSQL with it), the statements that wrote in the shop's database during the step,
//!   counted per table they write (`insert into`, `update`, `delete from`, the first one in the
//!   statement) and per completed order: the profile that says which part of the design the writes
//!   come from. Without the extension the profile is left out, and the bench says so.
//! - **Kafka records**: the sum of the high watermarks of the shop's topics, which are created
//!   empty for the shop (dead-letter topics included when they exist).
//! - **spans**: the services' own span counters (ended), written when they stop gracefully.
//! - **memory and CPU**: `/proc/<pid>/status` (`VmRSS`, `VmHWM`) and `/proc/<pid>/stat` (user and
//!   system time) of each service process. Linux reports those times in `USER_HZ` ticks, which the
//!   kernel ABI fixes at 100 a second on every architecture Rust's Linux targets run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde::Serialize;

/// `USER_HZ`: the unit of `utime` and `stime` in `/proc/<pid>/stat` (see the module docs).
const TICKS_PER_SECOND: f64 = 100.0;

/// One look at a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// Resident memory now, in KiB.
    pub rss_kib: u64,
    /// The largest resident memory so far, in KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time so far, in ticks.
    pub cpu_ticks: u64,
    /// When it was taken.
    pub at: Instant,
}

/// Reads `/proc/<pid>`; `None` when the process is gone.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcessSample {
        rss_kib: status_kib(&status, "VmRSS:")?,
        peak_rss_kib: status_kib(&status, "VmHWM:")?,
        cpu_ticks: stat_cpu_ticks(&stat)?,
        at: Instant::now(),
    })
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// `utime + stime` of `/proc/<pid>/stat`: fields 14 and 15, counted after the command name, which is
/// in parentheses and may itself hold spaces and parentheses (so the last `)` ends it).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state): field n is at index n - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A service's use of the machine between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    /// Resident memory at the end, in MB.
    pub rss_mb: f64,
    /// The largest resident memory of the process's life, in MB.
    pub peak_rss_mb: f64,
    /// CPU time over wall time: 1.0 is one core busy the whole time.
    pub cores: f64,
}

/// The use between `before` and `after` (of the same process).
pub fn usage(before: &ProcessSample, after: &ProcessSample) -> Usage {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_SECOND;
    Usage {
        rss_mb: after.rss_kib as f64 / 1024.0,
        peak_rss_mb: after.peak_rss_kib as f64 / 1024.0,
        cores: if wall > 0.0 { cpu / wall } else { 0.0 },
    }
}

/// Samples every process of `pids`.
pub fn sample_all(pids: &BTreeMap<String, u32>) -> BTreeMap<String, ProcessSample> {
    pids.iter()
        .filter_map(|(name, pid)| Some((name.clone(), sample(*pid)?)))
        .collect()
}

/// The use of each process sampled in both `before` and `after`.
pub fn usage_all(
    before: &BTreeMap<String, ProcessSample>,
    after: &BTreeMap<String, ProcessSample>,
) -> BTreeMap<String, Usage> {
    before
        .iter()
        .filter_map(|(name, b)| Some((name.clone(), usage(b, after.get(name)?))))
        .collect()
}

/// The database's transaction counters at one moment (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transactions {
    /// Transactions committed in the database so far, reads included.
    pub commits: i64,
    /// Transaction ids the server has handed out so far: transactions that wrote.
    pub writes: i64,
}

impl std::ops::Sub for Transactions {
    type Output = Transactions;

    fn sub(self, earlier: Transactions) -> Transactions {
        Transactions {
            commits: self.commits - earlier.commits,
            writes: self.writes - earlier.writes,
        }
    }
}

/// The transaction counters of the database of `database_url` now (see the module docs for how
/// fresh the commit counter is). Reading them writes nothing.
pub async fn transactions(database_url: &str) -> anyhow::Result<Transactions> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .context("connecting to read pg_stat_database")?;
    let (commits, writes): (i64, i64) = sqlx::query_as(
        "select xact_commit, pg_snapshot_xmax(pg_current_snapshot())::text::bigint \
         from pg_stat_database where datname = current_database()",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(Transactions { commits, writes })
}

/// The connections of the database of `database_url` that listen for notifications: those whose
/// last statement was a `LISTEN`. Each of them reads every notification committed in the database,
/// on whichever channel, in a transaction of its own (counted in the commits): a process should
/// hold one (`pizza_notify`), not one per loop.
pub async fn listening_backends(database_url: &str) -> anyhow::Result<usize> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .context("connecting to read pg_stat_activity")?;
    let listening: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() \
         and query ilike 'LISTEN %' and pid <> pg_backend_pid()",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(usize::try_from(listening).unwrap_or(0))
}

/// Starts a write profile of the database of `database_url`: creates `pg_stat_statements` there if
/// the server has it loaded and forgets what it counted for this database so far. `Ok(false)`
/// when the server does not have it (the profile is then left out).
pub async fn start_write_profile(database_url: &str) -> anyhow::Result<bool> {
    let pool = one_connection(database_url).await?;
    let loaded: bool = sqlx::query_scalar(
        "select 'pg_stat_statements' = any(string_to_array(current_setting('shared_preload_libraries'), ', '))",
    )
    .fetch_one(&pool)
    .await?;
    if loaded {
        sqlx::query("create extension if not exists pg_stat_statements")
            .execute(&pool)
            .await?;
        sqlx::query(
            "select pg_stat_statements_reset(0, (select oid from pg_database where datname = current_database()), 0)",
        )
        .execute(&pool)
        .await?;
    }
    pool.close().await;
    Ok(loaded)
}

/// What the database of `database_url` ran since [`start_write_profile`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatementProfile {
    /// Statements that wrote, summed per table they write, most first.
    pub writes_by_table: Vec<(String, i64)>,
    /// Every statement, reads and `BEGIN`/`COMMIT` included, most called first, as
    /// [`statement_label`] shortens it: where the round trips (and the server's per-statement work)
    /// go.
    pub most_called: Vec<(String, i64)>,
}

/// How many statements [`StatementProfile::most_called`] keeps.
const MOST_CALLED: usize = 12;

/// The statements that ran in the database of `database_url` since [`start_write_profile`] (see
/// the module docs).
pub async fn write_profile(database_url: &str) -> anyhow::Result<StatementProfile> {
    let pool = one_connection(database_url).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select query, calls from pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database()) \
         order by calls desc",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(StatementProfile {
        writes_by_table: writes_by_table(&rows),
        most_called: rows
            .iter()
            .take(MOST_CALLED)
            .map(|(q, n)| (statement_label(q), *n))
            .collect(),
    })
}

/// A statement in one line, whitespace collapsed, cut at 90 characters.
pub fn statement_label(query: &str) -> String {
    let one_line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(90) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

async fn one_connection(database_url: &str) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .with_context(|| "connecting to the shop's database for the bench's counters".to_string())
}

/// Sums `(statement, calls)` per table the statement writes; statements that write nothing (reads,
/// `BEGIN`, `COMMIT`, locks) are left out.
pub fn writes_by_table(statements: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut by_table: BTreeMap<String, i64> = BTreeMap::new();
    for (query, calls) in statements {
        if let Some(table) = written_table(query) {
            *by_table.entry(table).or_default() += calls;
        }
    }
    let mut sorted: Vec<(String, i64)> = by_table.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted
}

/// The first table a statement writes: the name after the first `insert into`, `update` (not a
/// row lock's) or `delete from` (quotes dropped), if any.
fn written_table(query: &str) -> Option<String> {
    let words: Vec<String> = query.split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
    let at = words.iter().enumerate().find_map(|(i, w)| match w.as_str() {
        "insert" if words.get(i + 1).map(String::as_str) == Some("into") => Some(i + 2),
        "delete" if words.get(i + 1).map(String::as_str) == Some("from") => Some(i + 2),
        // Not a row lock (`for update`, `for no key update`) or an upsert's `do update`.
        "update"
            if !matches!(
                i.checked_sub(1).and_then(|p| words.get(p)).map(String::as_str),
                Some("for" | "key" | "do")
            ) =>
        {
            Some(i + 1)
        }
        _ => None,
    })?;
    let name: String = words
        .get(at)?
        .chars()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '"'))
        .filter(|c| *c != '"')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Records written to `topics` and their dead-letter topics (`<topic>.dlq`) so far: the sum of
/// their high watermarks (the shop's topics start empty).
pub fn kafka_records(bootstrap: &str, topics: &[String]) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "pizza-load-cost")
        .create()
        .context("a Kafka client to read watermarks")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let mut total = 0u64;
    for topic in metadata.topics() {
        let wanted = topics
            .iter()
            .any(|t| topic.name() == t || topic.name() == format!("{t}.dlq"));
        if !wanted {
            continue;
        }
        for partition in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic.name(), partition.id(), timeout)?;
            // Retention never deletes within a bench step; `high - low` would undercount if it did.
            let _ = low;
            total += u64::try_from(high).unwrap_or(0);
        }
    }
    Ok(total)
}

/// What one bench step cost, per order and per second.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepCost {
    /// Orders that completed in the step.
    pub orders: u64,
    /// PostgreSQL commits from the first arrival until the services stopped, reads included.
    pub commits: i64,
    /// Of those, the `GET /orders/{id}` the tester made while it waited for the orders to end:
    /// one commit each (see the module docs).
    pub tester_looks: i64,
    /// Of those, the transactions that wrote (see the module docs).
    pub writes: i64,
    /// Kafka records written to the shop's topics.
    pub kafka_records: u64,
    /// Spans the services ended.
    pub spans: u64,
    /// How long the arrivals lasted.
    pub seconds: f64,
    /// Each service's use of the machine while the step ran.
    pub load: BTreeMap<String, Usage>,
    /// Each service's use of the machine in the idle window before the step.
    pub idle: BTreeMap<String, Usage>,
    /// Commits a second in the idle window.
    pub idle_commits_per_s: f64,
    /// Writing transactions a second in the idle window.
    pub idle_writes_per_s: f64,
    /// Connections of the shop's database listening for notifications in the idle window (see
    /// [`listening_backends`]).
    pub listening: usize,
    /// The statements of the step; `None` without `pg_stat_statements`.
    pub statements: Option<StatementProfile>,
}

impl StepCost {
    /// `x / orders`, or NaN without orders.
    fn per_order(&self, x: f64) -> f64 {
        if self.orders == 0 {
            f64::NAN
        } else {
            x / self.orders as f64
        }
    }

    /// Commits per completed order, reads included.
    pub fn commits_per_order(&self) -> f64 {
        self.per_order(self.commits as f64)
    }

    /// Commits per completed order of the platform itself: the tester's own looks at the orders
    /// left out (its `GET /orders/{id}`, one commit each, as many as its polling makes them).
    pub fn platform_commits_per_order(&self) -> f64 {
        self.per_order((self.commits - self.tester_looks) as f64)
    }

    /// Writing transactions per completed order.
    pub fn writes_per_order(&self) -> f64 {
        self.per_order(self.writes as f64)
    }

    /// Kafka records per completed order.
    pub fn records_per_order(&self) -> f64 {
        self.per_order(self.kafka_records as f64)
    }

    /// Spans per completed order.
    pub fn spans_per_order(&self) -> f64 {
        self.per_order(self.spans as f64)
    }

    /// Spans a second over the arrivals.
    pub fn spans_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.spans as f64 / self.seconds
        } else {
            f64::NAN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_label_is_one_line_and_short() {
        assert_eq!(statement_label("select 1\n   from  t"), "select 1 from t");
        let long = format!("select {} from t", "x, ".repeat(60));
        let label = statement_label(&long);
        assert_eq!(label.chars().count(), 91, "90 characters and an ellipsis");
        assert!(label.ends_with('…'));
    }

    #[test]
    fn reads_cpu_ticks_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (pizza (order) x) S 1 4242 4242 0 -1 4194304 500 0 0 0 170 30 0 0 20 0 9 0 100 0";
        assert_eq!(stat_cpu_ticks(stat), Some(200));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_memory_lines_of_proc_status() {
        let status = "Name:\tpizza-order\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(40_960));
        assert_eq!(status_kib(status, "VmHWM:"), Some(51_200));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_sampled_and_its_cpu_share_is_a_fraction_of_the_machine() {
        let me = std::process::id();
        let before = sample(me).expect("/proc/self is readable");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample(me).unwrap();
        let u = usage(&before, &after);
        assert!(u.rss_mb > 1.0 && u.peak_rss_mb >= u.rss_mb, "{u:?}");
        // A busy loop on one thread: near one core, and never more than the machine has.
        let cores = std::thread::available_parallelism().map_or(64, |n| n.get()) as f64;
        assert!(u.cores > 0.2 && u.cores <= cores + 0.1, "{u:?}");
    }

    #[test]
    fn writes_are_summed_per_table_they_write_and_reads_are_left_out() {
        let statements = [
            (
                "insert into \"kitchen\".outbox (event_id) values ($1)".to_string(),
                5,
            ),
            (
                "INSERT INTO kitchen.outbox (event_id) select * from unnest($1)".to_string(),
                2,
            ),
            (
                "update workflow.runs set status = $2 where id = $1".to_string(),
                4,
            ),
            (
                "with batch as (select id from \"orders\".outbox where published_at is null \
                 for update skip locked) update \"orders\".outbox o set claimed_by = $1 from batch"
                    .to_string(),
                3,
            ),
            ("delete from orders.outbox where published_at < $1".to_string(), 1),
            (
                "select status from orders.orders where order_id = $1 for update".to_string(),
                9,
            ),
            ("BEGIN".to_string(), 20),
            (
                "insert into orders.payments (k) values ($1) on conflict (k) do update set k = $1"
                    .to_string(),
                1,
            ),
            ("select pg_notify($1, '')".to_string(), 1),
        ];
        assert_eq!(
            writes_by_table(&statements),
            vec![
                ("kitchen.outbox".to_string(), 7),
                ("orders.outbox".to_string(), 4),
                ("workflow.runs".to_string(), 4),
                ("orders.payments".to_string(), 1),
            ]
        );
    }

    #[test]
    fn per_order_figures_divide_by_completed_orders() {
        let c = StepCost {
            orders: 10,
            commits: 250,
            writes: 120,
            kafka_records: 80,
            spans: 400,
            seconds: 5.0,
            ..StepCost::default()
        };
        assert_eq!(c.commits_per_order(), 25.0);
        let polled = StepCost {
            tester_looks: 30,
            ..c.clone()
        };
        assert_eq!(polled.platform_commits_per_order(), 22.0);
        assert_eq!(polled.commits_per_order(), 25.0);
        assert_eq!(c.writes_per_order(), 12.0);
        assert_eq!(c.records_per_order(), 8.0);
        assert_eq!(c.spans_per_order(), 40.0);
        assert_eq!(c.spans_per_s(), 80.0);
        assert!(StepCost::default().commits_per_order().is_nan());
    }
}
