//! Every SQL statement of the engine, in one place.
//!
//! Statements are checked at run time (`sqlx::query`), not at compile time: the workspace builds
//! offline without committed query data. The tests run every statement against the real PostgreSQL.
//!
//! None of these queries is traced: the claim loop polls several times a second per worker, and a
//! span per poll would bury the workflow spans in Jaeger under thousands of roots. Queue lag is a
//! metric instead ([`crate::telemetry`]).
//!
//! # Fencing
//! Every write an execution makes names the lease it holds: `lease_owner` and the `executions`
//! count it claimed with. A worker that stalled past its lease (a long GC pause, a partition) and
//! wakes up after another worker took the run over finds no row to update and stops
//! ([`WorkflowError::LeaseLost`]): the claim bumped `executions`, so the stale token no longer matches.
//! Fencing needs no clock: the token is exact. Time decides only when a lease is over, and that is
//! the database's time (see `claim`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgQueryResult, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Row as _, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::core::{AttemptRecord, AttemptStatus, Interrupt, RunStatus, StepKind};
use crate::error::{Error, RunError, StepError, WorkflowError};
use crate::labels::Labels;
use crate::{RunInfo, StepRecord};

/// The channel on which every change that makes a run due sooner is announced (`pg_notify`), and on
/// which idle workers listen ([`crate::worker`]).
pub(crate) const WAKE_CHANNEL: &str = "pizza_workflow_wake";

/// Where a write that makes a run due sooner announces it: [`WAKE_CHANNEL`], or nowhere (`None`) for
/// an engine whose wakes stay in its process (see `EngineBuilder::wakes`).
pub(crate) type WakeChannel = Option<&'static str>;

/// The fence as a condition inside one statement: the execution whose lease is `$1` (run id), `$2`
/// (owner), `$3` (execution) still holds it. `for share` makes a takeover (which updates the row)
/// wait for the statement's transaction, so the two never interleave.
macro_rules! holds_lease {
    () => {
        "exists (select 1 from workflow.runs where id = $1 and lease_owner = $2 and executions = $3 \
         and status = 'running' for share)"
    };
}

/// Applies the engine's migrations. The schema `workflow` and its migration history
/// (`workflow._sqlx_migrations`) belong to the engine alone, so the migrations of the service that
/// embeds it, with their own `_sqlx_migrations`, never see these and never collide with them.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("workflow._sqlx_migrations");
    migrator.create_schema("workflow");
    migrator.run(pool).await?;
    Ok(())
}

/// The lease an execution holds: the fencing token of every write it makes.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub run_id: Uuid,
    pub owner: String,
    pub execution: i32,
}

/// A run as a worker claimed it.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedRun {
    pub id: Uuid,
    pub workflow_name: String,
    pub input: Value,
    pub executions: i32,
    pub carrier: Vec<(String, String)>,
    pub wake_carrier: Vec<(String, String)>,
    pub wake_reason: Option<String>,
    pub wake_seq: i64,
    pub created_at: OffsetDateTime,
    pub deadline_at: Option<OffsetDateTime>,
    pub cancel_requested: bool,
    pub interrupt: Option<(Interrupt, u32)>,
    pub labels: Labels,
    pub due_at: OffsetDateTime,
    pub lease_expired: bool,
    /// The names of the signals in the run's mailbox that no wait has taken, as the claim saw them
    /// (in no particular order: a wait asks only whether its name is there, and an order would cost
    /// the claim connection, which may not sort, a walk of the whole mailbox table in id order): a
    /// hint that spares a wait its read of the mailbox (see `WorkflowContext::wait_for_signal`). A
    /// signal sent after the claim's snapshot is not in it; the park finds it.
    pub mailbox: Vec<String>,
    /// The run's recorded attempts, read with the claim; `None` for a takeover, whose history the
    /// execution reads afresh.
    pub history: Option<Vec<AttemptRecord>>,
}

/// A run to create.
#[derive(Debug)]
pub(crate) struct NewRun<'a> {
    pub id: Uuid,
    pub workflow_name: &'a str,
    pub input: &'a Value,
    pub idempotency_key: Option<&'a str>,
    pub parent_run_id: Option<Uuid>,
    pub carrier: &'a [(String, String)],
    pub created_at: OffsetDateTime,
    pub deadline_at: Option<OffsetDateTime>,
    pub labels: &'a Labels,
    pub channel: WakeChannel,
}

fn carrier(tp: Option<String>, ts: Option<String>) -> Vec<(String, String)> {
    let mut c = Vec::new();
    if let Some(tp) = tp {
        c.push(("traceparent".to_owned(), tp));
    }
    if let Some(ts) = ts.filter(|s| !s.is_empty()) {
        c.push(("tracestate".to_owned(), ts));
    }
    c
}

fn field<'a>(carrier: &'a [(String, String)], key: &str) -> Option<&'a str> {
    carrier.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Inserts a run unless one with the same workflow name and idempotency key exists; returns the run's
/// id and whether it was created now.
pub(crate) async fn insert_run(
    conn: &mut PgConnection,
    run: NewRun<'_>,
) -> Result<(Uuid, bool), sqlx::Error> {
    // Workers listening anywhere learn of the new run when the caller commits.
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "with inserted as ( \
             insert into workflow.runs (id, workflow_name, status, input, idempotency_key, parent_run_id, \
                 available_at, traceparent, tracestate, created_at, deadline_at, labels) \
             values ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $6, $9, $10) \
             on conflict (workflow_name, idempotency_key) do nothing \
             returning id \
         ) \
         select id, case when $11::text is not null then pg_notify($11, '') end from inserted",
    )
    .bind(run.id)
    .bind(run.workflow_name)
    .bind(run.input)
    .bind(run.idempotency_key)
    .bind(run.parent_run_id)
    .bind(run.created_at)
    .bind(field(run.carrier, "traceparent"))
    .bind(field(run.carrier, "tracestate"))
    .bind(run.deadline_at)
    .bind(Json(run.labels))
    .bind(run.channel)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let existing: Uuid =
        sqlx::query_scalar("select id from workflow.runs where workflow_name = $1 and idempotency_key = $2")
            .bind(run.workflow_name)
            .bind(run.idempotency_key)
            .fetch_one(&mut *conn)
            .await?;
    Ok((existing, false))
}

/// The claim statement ([`claim`]): `$1` the engine's now, `$2` the workflow names, `$3` the owner,
/// `$4` the lease in milliseconds, `$5` how many runs at most.
const CLAIM: &str = "with next as ( \
         select id, available_at, status from workflow.runs \
         where status in ('pending', 'running', 'sleeping') and workflow_name = any($2) \
           and available_at <= greatest($1, statement_timestamp()) \
           and case when status = 'running' then available_at <= statement_timestamp() \
                    else available_at <= $1 end \
         order by available_at \
         limit $5 \
         for update skip locked \
     ), claimed as ( \
         update workflow.runs r \
         set status = 'running', lease_owner = $3, \
             available_at = clock_timestamp() + $4 * interval '1 millisecond', \
             executions = r.executions + 1, started_at = coalesce(r.started_at, $1) \
         from next where r.id = next.id \
         returning r.id, r.workflow_name, r.input, r.executions, r.traceparent, r.tracestate, \
             r.wake_traceparent, r.wake_tracestate, r.wake_reason, r.wake_seq, r.created_at, \
             r.deadline_at, r.cancel_requested_at is not null as cancel_requested, r.interrupt_kind, \
             r.interrupt_step, r.labels, next.available_at as due_at, next.status as previous_status, \
             array(select s.signal_name from workflow.signals s \
                   where s.run_id = r.id and s.consumed_by_step is null) as mailbox \
     ), due as ( \
         select case when (select count(*) from claimed) < $5 then \
             extract(epoch from least( \
                 (select min(available_at) from workflow.runs \
                  where status in ('pending', 'sleeping') and workflow_name = any($2) \
                    and available_at > $1) - $1, \
                 (select min(available_at) from workflow.runs \
                  where status = 'running' and workflow_name = any($2) \
                    and available_at > statement_timestamp()) - clock_timestamp()))::float8 \
         end as next_due_s \
     ) \
     select d.next_due_s, c.*, a.step_index as a_step_index, a.step_name as a_step_name, \
         a.kind as a_kind, a.attempt as a_attempt, a.status as a_status, a.output as a_output, \
         a.error as a_error, a.retry_at as a_retry_at, a.wake_at as a_wake_at, \
         a.child_run_id as a_child_run_id, a.started_at as a_started_at \
     from due d left join (claimed c \
         left join workflow.step_attempts a on a.run_id = c.id and c.previous_status <> 'running') \
         on true \
     order by c.due_at, c.id, a.step_index, a.attempt";

/// The connection a worker claims on ([`pizza_notify::ordered_scan_pool`]): the claim holds to its
/// plan whatever the table's statistics say.
///
/// The claim wants the oldest due runs, read in order along `runs_due` and stopped at `limit`.
/// PostgreSQL plans that from the table's statistics, and those lag the table by up to a minute
/// (autovacuum's analyze): after a burst of starts, or on a table that was empty when last
/// analyzed, the planner believes one run is due and picks a bitmap scan that reads every due run
/// and sorts them, once per claim. With 2,000 runs due that was 0.7 ms and 120 buffers a claim,
/// against 0.06 ms and 4, and it grows with the backlog: quadratic work exactly when a backlog
/// (after an outage, a restart) most needs draining. Without sequential scans, bitmap scans and
/// explicit sorts to choose from, the one cheap path left is the ordered index scan. The claims of
/// a worker are one at a time.
pub(crate) fn claim_pool(pool: &PgPool) -> PgPool {
    pizza_notify::ordered_scan_pool(pool)
}

/// The connections a worker's executions use for what they write while their step's code may hold
/// a connection of `pool`: the record of a step still running after `record_start_after`, and the
/// heartbeats. At most `size`, opened when first needed.
///
/// An execution otherwise holds one connection of the shared pool at a time (its step's
/// transaction, or the engine's statement, never both). The running record is the exception: it
/// is written while the step's code is paused, and that code may be holding its transaction. On the
/// shared pool, a pool smaller than twice the worker's slots could then deadlock: every connection
/// held by a paused step, every execution waiting for one more to record it. These statements are
/// single and short, and none of them waits on a connection of the shared pool, so a few serve
/// every execution, and the shared pool can be sized for the work instead (see `decisions.md`).
pub(crate) fn side_pool(pool: &PgPool, size: usize) -> PgPool {
    let size = u32::try_from(size.clamp(1, SIDE_CONNECTIONS)).expect("a few connections");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// The most connections of a worker's [`side_pool`].
const SIDE_CONNECTIONS: usize = 4;

/// Claims the most overdue runnable run of the given workflows, if any, under a lease of `lease`.
///
/// `for update skip locked` is what lets any number of workers poll the same table: a run another
/// worker is claiming at this instant is skipped, not waited for, so each runnable run goes to exactly
/// one worker and nobody blocks. A `running` run is claimable too once its lease (`available_at`) has
/// expired: that is how a dead worker's runs are recovered, with no coordinator.
///
/// # Two clocks
/// A pending or sleeping run is due by the engine's [`Clock`](crate::Clock) (`now`): its
/// `available_at` is a workflow timer, computed from that clock, which tests move by hand. A lease
/// is the database's alone: it is set and renewed as `clock_timestamp()` plus its length, and it has
/// expired when the claim statement's start on that clock (`statement_timestamp()`) has passed it.
/// So a worker whose clock runs ahead (a skewed
/// replica) cannot take a run whose holder is alive and heartbeating: no worker's clock takes part
/// in deciding that a lease is over.
pub(crate) async fn claim(
    pool: &PgPool,
    owner: &str,
    workflows: &[String],
    now: OffsetDateTime,
    lease: Duration,
    limit: usize,
) -> Result<Claim, sqlx::Error> {
    // One round trip claims up to `limit` runs, reads their histories, and says when the next run
    // of these workflows not claimed now is due (the worker sleeps that long when it got fewer runs
    // than it asked for). A run taken over from a worker whose lease expired is the exception: that
    // worker may have committed a step between this statement's snapshot and the moment it locked
    // the row, so its history is read afresh by the execution (`history: None`).
    //
    // The statement's one row per claimed run and attempt hangs off the single `due` row, so an
    // empty claim still returns the due time. Only a claim that got fewer runs than it asked for
    // reads it (the worker sleeps on it then, and claims again at once otherwise): the reads walk
    // the index from now on, through the leases of every run claimed in the last lease period,
    // most of them finished and dead, so on a busy table they cost more than the claim itself.
    //
    // Both scans have a bound the planner can use as an index condition (`$1` and
    // `statement_timestamp()` are fixed for the statement; `clock_timestamp()` is not): the claim
    // reads only the runs due now, not every active run, and the due time reads only the runs due
    // later. That matters on a table every step updates: the front of its `available_at` index is
    // the dead versions of runs that were due a moment ago, and a scan from the start walked them
    // all (2.5 ms a claim at 30 orders/s, the most expensive statement of the shop). A run due now
    // that the claim skipped (locked: another worker is claiming it, or a signal or cancel is
    // being written to it) is not a reason to look again: its claimer runs it, and a signal or
    // cancel wakes the workers when it commits.
    let rows = sqlx::query(CLAIM)
        .bind(now)
        .bind(workflows)
        .bind(owner)
        .bind(millis(lease))
        .bind(i64::try_from(limit.max(1)).unwrap_or(1))
        .fetch_all(pool)
        .await?;
    let mut claim = Claim {
        runs: Vec::new(),
        next_due: None,
    };
    for row in &rows {
        claim.next_due = row
            .try_get::<Option<f64>, _>("next_due_s")?
            .map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX));
        let Some(id) = row.try_get::<Option<Uuid>, _>("id")? else {
            continue;
        };
        if claim.runs.last().is_none_or(|r| r.id != id) {
            claim.runs.push(claimed_from_row(row)?);
        }
        let run = claim.runs.last_mut().expect("pushed above");
        let has_attempt = row.try_get::<Option<i32>, _>("a_step_index")?.is_some();
        if let (Some(history), true) = (&mut run.history, has_attempt) {
            history.push(attempt_from_row(row, "a_")?);
        }
    }
    Ok(claim)
}

/// What one [`claim`] got.
#[derive(Debug)]
pub(crate) struct Claim {
    /// The runs claimed, oldest due first.
    pub runs: Vec<ClaimedRun>,
    /// How long until the next run not claimed now is due, if any is: the earliest timer (on the
    /// engine's clock) or lease expiry (on the database's). Read only when the claim got fewer runs
    /// than it asked for (`None` otherwise).
    pub next_due: Option<Duration>,
}

fn claimed_from_row(row: &PgRow) -> Result<ClaimedRun, sqlx::Error> {
    let interrupt_kind: Option<String> = row.try_get("interrupt_kind")?;
    let interrupt_step: Option<i32> = row.try_get("interrupt_step")?;
    let interrupt = match (interrupt_kind, interrupt_step) {
        (Some(k), Some(i)) => Some((parse("interrupt", &k)?, i as u32)),
        _ => None,
    };
    let lease_expired = row.try_get::<String, _>("previous_status")? == "running";
    Ok(ClaimedRun {
        id: row.try_get("id")?,
        workflow_name: row.try_get("workflow_name")?,
        input: row.try_get("input")?,
        executions: row.try_get("executions")?,
        carrier: carrier(row.try_get("traceparent")?, row.try_get("tracestate")?),
        wake_carrier: carrier(row.try_get("wake_traceparent")?, row.try_get("wake_tracestate")?),
        wake_reason: row.try_get("wake_reason")?,
        wake_seq: row.try_get("wake_seq")?,
        created_at: row.try_get("created_at")?,
        deadline_at: row.try_get("deadline_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
        interrupt,
        labels: row.try_get::<Json<Labels>, _>("labels")?.0,
        due_at: row.try_get("due_at")?,
        lease_expired,
        mailbox: row.try_get("mailbox")?,
        history: (!lease_expired).then(Vec::new),
    })
}

/// A fenced write's outcome: one row written, or the lease is gone and nothing was.
fn fenced(done: PgQueryResult) -> Result<(), WorkflowError> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(WorkflowError::LeaseLost)
    }
}

/// A duration as whole milliseconds for SQL (`$n * interval '1 millisecond'`).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn decode_err(e: String) -> sqlx::Error {
    sqlx::Error::Decode(e.into())
}

/// One of the engine's enums from its spelling in a row.
fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, sqlx::Error> {
    s.parse().map_err(|_| decode_err(format!("unknown {what} {s:?}")))
}

/// Ends at once the leases `owner` still holds, so its runs are claimable now. For a worker that
/// starts under the name of a dead predecessor (see `WorkerConfig::id`): nobody else can hold those
/// leases, and waiting for them to run out is only lost time. If the predecessor is in fact alive,
/// the execution that claims the run next fences it, as after any expired lease.
pub(crate) async fn end_leases_of(pool: &PgPool, owner: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update workflow.runs set available_at = clock_timestamp() \
         where status = 'running' and lease_owner = $1 and available_at > clock_timestamp()",
    )
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Extends a lease to `length` from now on the database's clock. `false` means the lease is gone:
/// another worker owns the run, or it ended.
pub(crate) async fn heartbeat(pool: &PgPool, lease: &Lease, length: Duration) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "update workflow.runs set available_at = clock_timestamp() + $4 * interval '1 millisecond' \
         where id = $1 and lease_owner = $2 and executions = $3 and status = 'running'",
    )
    .bind(lease.run_id)
    .bind(&lease.owner)
    .bind(lease.execution)
    .bind(millis(length))
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Locks the run row in share mode if this execution still holds its lease, else fails with
/// [`WorkflowError::LeaseLost`]. Held until the transaction ends, so a takeover (which updates the
/// row) waits for this transaction and then sees what it wrote.
pub(crate) async fn fence(conn: &mut PgConnection, lease: &Lease) -> Result<(), WorkflowError> {
    let held: Option<i32> = sqlx::query_scalar(
        "select 1 from workflow.runs \
         where id = $1 and lease_owner = $2 and executions = $3 and status = 'running' for share",
    )
    .bind(lease.run_id)
    .bind(&lease.owner)
    .bind(lease.execution)
    .fetch_optional(&mut *conn)
    .await?;
    held.map(|_| ()).ok_or(WorkflowError::LeaseLost)
}

/// An attempt from a row whose attempt columns are named `{prefix}{column}`.
fn attempt_from_row(row: &PgRow, prefix: &str) -> Result<AttemptRecord, sqlx::Error> {
    let col = |name: &str| format!("{prefix}{name}");
    let kind: String = row.try_get(col("kind").as_str())?;
    let status: String = row.try_get(col("status").as_str())?;
    let error: Option<Value> = row.try_get(col("error").as_str())?;
    Ok(AttemptRecord {
        step_index: row.try_get::<i32, _>(col("step_index").as_str())? as u32,
        step_name: row.try_get(col("step_name").as_str())?,
        kind: parse::<StepKind>("step kind", &kind)?,
        attempt: row.try_get::<i32, _>(col("attempt").as_str())? as u32,
        status: parse::<AttemptStatus>("attempt status", &status)?,
        output: row.try_get(col("output").as_str())?,
        error: error
            .map(serde_json::from_value::<StepError>)
            .transpose()
            .map_err(|e| decode_err(e.to_string()))?,
        retry_at: row.try_get(col("retry_at").as_str())?,
        wake_at: row.try_get(col("wake_at").as_str())?,
        child_run_id: row.try_get(col("child_run_id").as_str())?,
        started_at: row.try_get(col("started_at").as_str())?,
    })
}

/// Every recorded attempt of a run, in step order: what replay matches against.
pub(crate) async fn load_history(pool: &PgPool, run_id: Uuid) -> Result<Vec<AttemptRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "select step_index, step_name, kind, attempt, status, output, error, retry_at, wake_at, child_run_id, \
             started_at \
         from workflow.step_attempts where run_id = $1 order by step_index, attempt",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|row| attempt_from_row(row, "")).collect()
}

/// A new attempt row.
#[derive(Debug)]
pub(crate) struct NewAttempt<'a> {
    pub step_index: u32,
    pub step_name: &'a str,
    pub kind: StepKind,
    pub attempt: u32,
    pub status: AttemptStatus,
    pub output: Option<&'a Value>,
    pub wake_at: Option<OffsetDateTime>,
    pub child_run_id: Option<Uuid>,
    pub started_at: OffsetDateTime,
}

/// Records an attempt (fenced by the caller's transaction or by `fence` here).
pub(crate) async fn insert_attempt(
    conn: &mut PgConnection,
    run_id: Uuid,
    a: NewAttempt<'_>,
) -> Result<(), sqlx::Error> {
    let finished = (a.status == AttemptStatus::Completed).then_some(a.started_at);
    sqlx::query(
        "insert into workflow.step_attempts \
             (run_id, step_index, step_name, kind, attempt, status, output, wake_at, child_run_id, started_at, \
              finished_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(run_id)
    .bind(a.step_index as i32)
    .bind(a.step_name)
    .bind(a.kind.as_str())
    .bind(a.attempt as i32)
    .bind(a.status.as_str())
    .bind(a.output)
    .bind(a.wake_at)
    .bind(a.child_run_id)
    .bind(a.started_at)
    .bind(finished)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum AttemptEnd<'a> {
    /// Completed with this output.
    Completed(&'a Value),
    /// Failed; retried at `retry_at` if given.
    Failed {
        error: &'a StepError,
        retry_at: Option<OffsetDateTime>,
    },
}

/// An attempt as recorded in one fenced statement: a step that finished before anything was
/// recorded (`Completed`/`Failed` at once), or one that is recorded as it starts (`Running`).
#[derive(Debug)]
pub(crate) struct RecordedAttempt<'a> {
    pub step_index: u32,
    pub step_name: &'a str,
    pub kind: StepKind,
    pub attempt: u32,
    pub started_at: OffsetDateTime,
    /// `None`: still running.
    pub end: Option<(AttemptEnd<'a>, OffsetDateTime)>,
}

/// The columns an attempt's end writes.
#[derive(Debug, Clone)]
struct EndColumns {
    status: &'static str,
    output: Option<Value>,
    error: Option<Value>,
    retry_at: Option<OffsetDateTime>,
}

impl EndColumns {
    fn of(end: Option<&AttemptEnd<'_>>) -> Result<Self, WorkflowError> {
        let (status, output, error, retry_at) = match end {
            None => (AttemptStatus::Running, None, None, None),
            Some(AttemptEnd::Completed(v)) => (AttemptStatus::Completed, Some((*v).clone()), None, None),
            Some(AttemptEnd::Failed { error, retry_at }) => (
                AttemptStatus::Failed,
                None,
                Some(serde_json::to_value(error)?),
                *retry_at,
            ),
        };
        Ok(Self {
            status: status.as_str(),
            output,
            error,
            retry_at,
        })
    }
}

/// An attempt's row as [`record_attempt`] writes it, owned: what a quick step's attempt leaves for
/// the execution's next write to carry ([`ParkArgs::ended`], [`finish_run`]; see `context::run`,
/// "Deferred records").
#[derive(Debug, Clone)]
pub(crate) struct AttemptRow {
    step_index: u32,
    step_name: String,
    kind: StepKind,
    attempt: u32,
    started_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
    end: EndColumns,
}

impl AttemptRow {
    pub(crate) fn new(a: RecordedAttempt<'_>) -> Result<Self, WorkflowError> {
        Ok(Self {
            step_index: a.step_index,
            step_name: a.step_name.to_owned(),
            kind: a.kind,
            attempt: a.attempt,
            started_at: a.started_at,
            finished_at: a.end.as_ref().map(|(_, at)| *at),
            end: EndColumns::of(a.end.as_ref().map(|(e, _)| e))?,
        })
    }
}

/// The insert of a deferred [`AttemptRow`] as a data-modifying CTE named `recorded`, for a statement
/// whose `$1` is the run and `$4`..`$13` the row as [`bind_row`] binds it: the row is inserted once
/// for each row of `$from` (the statement's fenced update, so only if the fence held), and not at all
/// when `$4` is null (no row to carry).
macro_rules! recorded_with {
    ($from:literal) => {
        concat!(
            "recorded as ( \
                 insert into workflow.step_attempts \
                     (run_id, step_index, step_name, kind, attempt, status, output, error, retry_at, \
                      started_at, finished_at) \
                 select id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 from ",
            $from,
            " where $4::int is not null)"
        )
    };
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `sql` with the lease bound as `$1` (run), `$2` (owner) and `$3` (execution), as `holds_lease!`
/// and the fenced updates read it.
fn leased<'q>(sql: &'static str, lease: &'q Lease) -> PgQuery<'q> {
    sqlx::query(sql)
        .bind(lease.run_id)
        .bind(&lease.owner)
        .bind(lease.execution)
}

/// Binds an attempt's row as `$4`..`$13` (after the lease's `$1`..`$3`); `None` binds nulls.
fn bind_row<'q>(query: PgQuery<'q>, row: Option<&'q AttemptRow>) -> PgQuery<'q> {
    query
        .bind(row.map(|r| r.step_index as i32))
        .bind(row.map(|r| r.step_name.as_str()))
        .bind(row.map(|r| r.kind.as_str()))
        .bind(row.map(|r| r.attempt as i32))
        .bind(row.map(|r| r.end.status))
        .bind(row.and_then(|r| r.end.output.as_ref()))
        .bind(row.and_then(|r| r.end.error.as_ref()))
        .bind(row.and_then(|r| r.end.retry_at))
        .bind(row.map(|r| r.started_at))
        .bind(row.and_then(|r| r.finished_at))
}

/// Records an attempt in one statement, fenced by the lease: one round trip and one commit. `Err(
/// LeaseLost)` if the lease is gone (nothing is written).
pub(crate) async fn record_attempt(
    db: impl PgExecutor<'_>,
    lease: &Lease,
    a: RecordedAttempt<'_>,
) -> Result<(), WorkflowError> {
    record_row(db, lease, &AttemptRow::new(a)?).await
}

/// Writes an attempt's row in one statement, fenced by the lease (see [`record_attempt`]).
pub(crate) async fn record_row(
    db: impl PgExecutor<'_>,
    lease: &Lease,
    row: &AttemptRow,
) -> Result<(), WorkflowError> {
    let query = leased(
        concat!(
            "insert into workflow.step_attempts \
                 (run_id, step_index, step_name, kind, attempt, status, output, error, retry_at, \
                  started_at, finished_at) \
             select $1, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 where ",
            holds_lease!()
        ),
        lease,
    );
    let inserted = bind_row(query, Some(row)).execute(db).await?;
    fenced(inserted)
}

/// Closes an attempt recorded as running or waiting, in one statement fenced by the lease (on its
/// own, or inside a transaction that does more).
pub(crate) async fn close_attempt(
    db: impl PgExecutor<'_>,
    lease: &Lease,
    step_index: u32,
    attempt: u32,
    end: AttemptEnd<'_>,
    now: OffsetDateTime,
) -> Result<(), WorkflowError> {
    let end_columns = EndColumns::of(Some(&end))?;
    let updated = sqlx::query(concat!(
        "update workflow.step_attempts set status = $6, output = $7, error = $8, retry_at = $9, \
             finished_at = $10 \
         where run_id = $1 and step_index = $4 and attempt = $5 and ",
        holds_lease!()
    ))
    .bind(lease.run_id)
    .bind(&lease.owner)
    .bind(lease.execution)
    .bind(step_index as i32)
    .bind(attempt as i32)
    .bind(end_columns.status)
    .bind(end_columns.output)
    .bind(end_columns.error)
    .bind(end_columns.retry_at)
    .bind(now)
    .execute(db)
    .await?;
    fenced(updated)
}

/// Records that an interrupt was delivered to the step call at `step_index`.
pub(crate) async fn record_interrupt(
    conn: &mut PgConnection,
    lease: &Lease,
    interrupt: Interrupt,
    step_index: u32,
) -> Result<(), WorkflowError> {
    let updated = sqlx::query(
        "update workflow.runs set interrupt_kind = $4, interrupt_step = $5 \
         where id = $1 and lease_owner = $2 and executions = $3 and status = 'running'",
    )
    .bind(lease.run_id)
    .bind(&lease.owner)
    .bind(lease.execution)
    .bind(interrupt.as_str())
    .bind(step_index as i32)
    .execute(&mut *conn)
    .await?;
    fenced(updated)
}

/// Parks the run until `until`, and records this execution as what will wake it (a timer). If
/// something woke the run while it executed (`wake_seq` moved), or it parks for a signal
/// ([`ParkArgs::signal`]) that is in its mailbox already, it is made due at once and keeps that cause
/// instead: without this, a signal arriving after the claim read the mailbox would sleep until the
/// wait's timeout. So a wait needs no read of its own before it parks: the claim's look at the
/// mailbox is a hint, and this statement is the check. With `waiting`, the wait's `waiting` row is written by the same
/// statement, and only if the park was (the park is the fence): one round trip and one commit for
/// the common wait, where a transaction around an insert and an update took four statements. The
/// same goes for [`ParkArgs::ended`], the deferred row of the step before the park. Returns when the
/// run is due now (`until`, or now if it was woken meanwhile).
async fn park(
    conn: &mut PgConnection,
    args: ParkArgs<'_>,
    waiting: Option<WaitingRow<'_>>,
) -> Result<OffsetDateTime, WorkflowError> {
    let ParkArgs {
        lease,
        seen_wake_seq,
        until,
        now,
        wake,
        reason,
        ended,
        signal,
        channel: _,
    } = args;
    // `woken!()`: something the execution did not see woke the run, either a signal or a child's
    // end that moved `wake_seq` after the claim, or (for a signal wait) a signal of the awaited name
    // in the mailbox that the claim's snapshot did not show: the run is due at once, and keeps that
    // cause as what wakes it. `wake_seq` is the row's own column, so a signal committed while this
    // statement waits for the row's lock is seen too (the row is read again once the lock is
    // granted); the mailbox is read once, in `mail`.
    macro_rules! woken {
        () => {
            "(wake_seq <> $14 or (select waiting from mail))"
        };
    }
    let sql = concat!(
        "with mail as ( \
             select $26::text is not null and exists (select 1 from workflow.signals \
                 where run_id = $1 and signal_name = $26 and consumed_by_step is null) as waiting \
         ), parked as ( \
             update workflow.runs set status = 'sleeping', lease_owner = null, \
                 available_at = case when ",
        woken!(),
        " then $15 else $16 end, \
                 wake_traceparent = case when ",
        woken!(),
        " then wake_traceparent else $17 end, \
                 wake_tracestate = case when ",
        woken!(),
        " then wake_tracestate else $18 end, \
                 wake_reason = case when ",
        woken!(),
        " then wake_reason else $19 end \
             where id = $1 and lease_owner = $2 and executions = $3 and status = 'running' \
             returning id, available_at \
         ), waiting as ( \
             insert into workflow.step_attempts \
                 (run_id, step_index, step_name, kind, attempt, status, wake_at, child_run_id, started_at) \
             select id, $20, $21, $22, 1, 'waiting', $23, $24, $25 from parked where $20::int is not null \
         ), ",
        recorded_with!("parked"),
        " select min(available_at) from parked"
    );
    let query = leased(sql, lease);
    let row = bind_row(query, ended)
        .bind(seen_wake_seq)
        .bind(now)
        .bind(until)
        .bind(field(wake, "traceparent"))
        .bind(field(wake, "tracestate"))
        .bind(reason)
        .bind(waiting.as_ref().map(|w| w.step_index as i32))
        .bind(waiting.as_ref().map(|w| w.step_name))
        .bind(waiting.as_ref().map(|w| w.kind.as_str()))
        .bind(waiting.as_ref().map(|w| w.wake_at))
        .bind(waiting.as_ref().and_then(|w| w.child_run_id))
        .bind(waiting.as_ref().map(|w| w.started_at))
        .bind(signal)
        .fetch_one(&mut *conn)
        .await?;
    row.try_get::<Option<OffsetDateTime>, _>(0)?
        .ok_or(WorkflowError::LeaseLost)
}

/// The `waiting` row a park writes (attempt 1, no output until the wait resolves).
#[derive(Debug)]
struct WaitingRow<'a> {
    step_index: u32,
    step_name: &'a str,
    kind: StepKind,
    wake_at: OffsetDateTime,
    child_run_id: Option<Uuid>,
    started_at: OffsetDateTime,
}

/// What [`finish_run`] records: the run's status, output, error, when, the cause its parent links
/// to, and the deferred row it carries.
pub(crate) type RunEndArgs<'a> = (
    RunStatus,
    Option<&'a Value>,
    Option<&'a RunError>,
    OffsetDateTime,
    &'a [(String, String)],
    Option<&'a AttemptRow>,
);

/// Ends the run and, if it is a child, wakes its parent (with `cause` as what woke it), in one
/// statement: one round trip, one commit. `ended` is the attempt of a quick step whose row waited for
/// this end (the workflow's last step, typically): written by the same statement, and only if the
/// run ended. Returns the parent, if any.
pub(crate) async fn finish_run(
    db: impl PgExecutor<'_>,
    lease: &Lease,
    (status, output, error, now, cause, ended): RunEndArgs<'_>,
    channel: WakeChannel,
) -> Result<Option<Uuid>, WorkflowError> {
    let error = error.map(serde_json::to_value).transpose()?;
    let sql = concat!(
        "with finished as ( \
             update workflow.runs set status = $14, output = $15, error = $16, finished_at = $17, \
                 lease_owner = null \
             where id = $1 and lease_owner = $2 and executions = $3 and status = 'running' \
             returning id, parent_run_id \
         ), woke as ( \
             update workflow.runs p set wake_seq = p.wake_seq + 1, \
                 available_at = case when p.status = 'sleeping' then least(p.available_at, $17) \
                                else p.available_at end, \
                 wake_traceparent = coalesce($18, p.wake_traceparent), \
                 wake_tracestate = case when $18 is null then p.wake_tracestate else $19 end, \
                 wake_reason = 'child' \
             from finished f \
             where p.id = f.parent_run_id and p.status in ('pending', 'running', 'sleeping') \
             returning p.id \
         ), ",
        recorded_with!("finished"),
        " select (select count(*) from finished) as finished, \
             (select parent_run_id from finished) as parent, \
             (select count(pg_notify($20, '')) from woke where $20::text is not null) as notified"
    );
    let query = leased(sql, lease);
    let row = bind_row(query, ended)
        .bind(status.as_str())
        .bind(output)
        .bind(error)
        .bind(now)
        .bind(field(cause, "traceparent"))
        .bind(field(cause, "tracestate"))
        .bind(channel)
        .fetch_one(db)
        .await?;
    if row.try_get::<i64, _>("finished")? != 1 {
        return Err(WorkflowError::LeaseLost);
    }
    Ok(row.try_get("parent")?)
}

/// Wakes a run from outside (a signal, a child's end, a cancel): bumps `wake_seq`, makes a parked run
/// due now, and records the cause for the next execution's span link. A run that is executing keeps
/// its lease; its park sees the moved `wake_seq` and comes straight back.
pub(crate) async fn wake(
    conn: &mut PgConnection,
    run_id: Uuid,
    now: OffsetDateTime,
    cause: &[(String, String)],
    reason: &str,
    channel: WakeChannel,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update workflow.runs set wake_seq = wake_seq + 1, \
             available_at = case when status = 'sleeping' then least(available_at, $2) else available_at end, \
             wake_traceparent = coalesce($3, wake_traceparent), \
             wake_tracestate = case when $3 is null then wake_tracestate else $4 end, \
             wake_reason = $5 \
         where id = $1 and status in ('pending', 'running', 'sleeping') \
         returning case when $6::text is not null then pg_notify($6, '') end",
    )
    .bind(run_id)
    .bind(now)
    .bind(field(cause, "traceparent"))
    .bind(field(cause, "tracestate"))
    .bind(reason)
    .bind(channel)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What a sender needs to know about the run it signals.
#[derive(Debug)]
pub(crate) struct SignalTarget {
    pub status: RunStatus,
    pub workflow_name: String,
    pub carrier: Vec<(String, String)>,
    pub labels: Labels,
}

/// The run a signal goes to.
pub(crate) async fn signal_target(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Option<SignalTarget>, sqlx::Error> {
    Ok(signal_targets(conn, &[run_id]).await?.remove(&run_id))
}

/// The runs signals go to, by id (an id without a run is missing), in one statement.
pub(crate) async fn signal_targets(
    conn: &mut PgConnection,
    run_ids: &[Uuid],
) -> Result<HashMap<Uuid, SignalTarget>, sqlx::Error> {
    let rows = sqlx::query(
        "select id, status, workflow_name, traceparent, tracestate, labels from workflow.runs \
         where id = any($1)",
    )
    .bind(run_ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            Ok((
                row.try_get("id")?,
                SignalTarget {
                    status: parse("run status", &status)?,
                    workflow_name: row.try_get("workflow_name")?,
                    carrier: carrier(row.try_get("traceparent")?, row.try_get("tracestate")?),
                    labels: row.try_get::<Json<Labels>, _>("labels")?.0,
                },
            ))
        })
        .collect()
}

/// A signal for [`insert_signals`].
#[derive(Debug)]
pub(crate) struct NewSignal<'a> {
    pub run_id: Uuid,
    pub name: &'a str,
    pub payload: Value,
    pub idempotency_key: Option<&'a str>,
    /// The send span's context: the run's wake cause.
    pub sender: Vec<(String, String)>,
}

/// Puts a signal in the run's mailbox (once per idempotency key and run) and wakes the run. Returns whether it
/// was stored now.
pub(crate) async fn insert_signal(
    conn: &mut PgConnection,
    signal: NewSignal<'_>,
    now: OffsetDateTime,
    channel: WakeChannel,
) -> Result<bool, sqlx::Error> {
    let stored = insert_signals(conn, std::slice::from_ref(&signal), now, channel).await?;
    Ok(stored.first().copied().unwrap_or(false))
}

/// Puts signals in their runs' mailboxes (each once per idempotency key and run, the first of the
/// slice winning a key it repeats) and wakes each run that got a new one, in one statement. Whether
/// each was stored now, in the slice's order.
pub(crate) async fn insert_signals(
    conn: &mut PgConnection,
    signals: &[NewSignal<'_>],
    now: OffsetDateTime,
    channel: WakeChannel,
) -> Result<Vec<bool>, sqlx::Error> {
    if signals.is_empty() {
        return Ok(Vec::new());
    }
    // The signals and the wakes they cause in one statement: a consumer that signals runs as it
    // applies events pays its round trips one after another, so every statement is a wait. A run
    // is woken only for a new signal, once however many it got, carrying its last one's context as
    // the wake's cause. Rows go in in the slice's order (`ordinality`), so the mailbox, which is read
    // oldest id first, keeps it.
    let run_ids: Vec<Uuid> = signals.iter().map(|s| s.run_id).collect();
    let names: Vec<&str> = signals.iter().map(|s| s.name).collect();
    let payloads: Vec<&Value> = signals.iter().map(|s| &s.payload).collect();
    let keys: Vec<Option<&str>> = signals.iter().map(|s| s.idempotency_key).collect();
    let parents: Vec<Option<&str>> = signals.iter().map(|s| field(&s.sender, "traceparent")).collect();
    let states: Vec<Option<&str>> = signals.iter().map(|s| field(&s.sender, "tracestate")).collect();
    // The keyed signals stored now (a key-less one always is). The condition on `woke` has no
    // column of the row, so PostgreSQL checks it once before any row, however many rows follow:
    // that is what sends the notifications, even when no row comes back.
    let stored: Vec<(Uuid, String)> = sqlx::query_as(
        "with input as ( \
             select * from unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::text[]) \
                 with ordinality as i(run_id, signal_name, payload, idempotency_key, traceparent, tracestate, n) \
         ), stored as ( \
             insert into workflow.signals (run_id, signal_name, payload, idempotency_key, sent_at, \
                 traceparent, tracestate) \
             select run_id, signal_name, payload, idempotency_key, $7, traceparent, tracestate \
             from input order by n \
             on conflict (run_id, idempotency_key) do nothing \
             returning id, run_id, idempotency_key, traceparent, tracestate \
         ), cause as ( \
             select distinct on (run_id) run_id, traceparent, tracestate from stored order by run_id, id desc \
         ), woke as ( \
             update workflow.runs r set wake_seq = wake_seq + 1, \
                 available_at = case when status = 'sleeping' then least(available_at, $7) \
                                else available_at end, \
                 wake_traceparent = coalesce(c.traceparent, r.wake_traceparent), \
                 wake_tracestate = case when c.traceparent is null then r.wake_tracestate else c.tracestate end, \
                 wake_reason = 'signal' \
             from cause c \
             where r.id = c.run_id and r.status in ('pending', 'running', 'sleeping') \
             returning r.id \
         ) \
         select s.run_id, s.idempotency_key from stored s \
         where (select count(pg_notify($8, '')) from woke where $8::text is not null) >= 0 \
             and s.idempotency_key is not null",
    )
    .bind(&run_ids)
    .bind(&names)
    .bind(&payloads)
    .bind(&keys)
    .bind(&parents)
    .bind(&states)
    .bind(now)
    .bind(channel)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored: std::collections::HashSet<(Uuid, String)> = stored.into_iter().collect();
    Ok(signals
        .iter()
        .map(|s| match s.idempotency_key {
            None => true,
            // The first signal with the key took it; a later one in the slice found it taken.
            Some(key) => stored.remove(&(s.run_id, key.to_owned())),
        })
        .collect())
}

/// A signal taken from the mailbox.
#[derive(Debug)]
pub(crate) struct ConsumedSignal {
    pub payload: Value,
    pub sender: Vec<(String, String)>,
}

/// Takes the oldest unconsumed signal `name` of the run, marking it consumed by `step_index`.
pub(crate) async fn consume_signal(
    conn: &mut PgConnection,
    run_id: Uuid,
    name: &str,
    step_index: u32,
    now: OffsetDateTime,
) -> Result<Option<ConsumedSignal>, sqlx::Error> {
    let row = sqlx::query(
        "update workflow.signals set consumed_by_step = $3, consumed_at = $4 \
         where id = (select id from workflow.signals \
                     where run_id = $1 and signal_name = $2 and consumed_by_step is null \
                     order by id limit 1 for update) \
         returning payload, traceparent, tracestate",
    )
    .bind(run_id)
    .bind(name)
    .bind(step_index as i32)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(ConsumedSignal {
            payload: row.try_get("payload")?,
            sender: carrier(row.try_get("traceparent")?, row.try_get("tracestate")?),
        })
    })
    .transpose()
}

/// A wait that began in an execution that then parks: its `waiting` row (and, for a child wait, the
/// child run), written with the park.
#[derive(Debug, Clone)]
pub(crate) struct WaitStart {
    pub step_index: u32,
    pub step_name: String,
    pub kind: StepKind,
    pub wake_at: OffsetDateTime,
    pub started_at: OffsetDateTime,
    pub child: Option<ChildStart>,
}

impl WaitStart {
    /// A wait without a child.
    pub(crate) fn new(
        step_index: u32,
        step_name: &str,
        kind: StepKind,
        started_at: OffsetDateTime,
        wake_at: OffsetDateTime,
    ) -> Self {
        Self {
            step_index,
            step_name: step_name.to_owned(),
            kind,
            wake_at,
            started_at,
            child: None,
        }
    }
}

/// A child run to create.
#[derive(Debug, Clone)]
pub(crate) struct ChildStart {
    pub id: Uuid,
    pub workflow_name: String,
    pub input: Value,
    /// `parent/index`: a child is started once per position.
    pub idempotency_key: String,
    /// The child's create span.
    pub carrier: Vec<(String, String)>,
    pub labels: Labels,
}

/// Creates the child run of `parent` (or finds the one this position created); returns its id.
pub(crate) async fn insert_child(
    conn: &mut PgConnection,
    parent: Uuid,
    created_at: OffsetDateTime,
    child: &ChildStart,
    channel: WakeChannel,
) -> Result<Uuid, sqlx::Error> {
    let run = NewRun {
        id: child.id,
        workflow_name: &child.workflow_name,
        input: &child.input,
        idempotency_key: Some(&child.idempotency_key),
        parent_run_id: Some(parent),
        carrier: &child.carrier,
        created_at,
        deadline_at: None,
        labels: &child.labels,
        channel,
    };
    Ok(insert_run(conn, run).await?.0)
}

/// Records the start of a wait and parks the run (see [`park`]), atomically: the wait's row is
/// only ever on record for a run that parked for it. The park is the fence: if the lease is gone,
/// neither is written. A child wait also creates the child run, so it takes a transaction; any
/// other park is one statement. `held`, the transaction of a step whose commit waited for the
/// execution's next write (see `context::run`, "Held commits"), takes the park and commits with it.
/// Returns the earliest time the park made anything due: the run's own due time, or now for a child
/// created with it.
pub(crate) async fn park_waiting(
    pool: &PgPool,
    held: Option<Transaction<'static, Postgres>>,
    park_args: ParkArgs<'_>,
    wait: Option<&WaitStart>,
) -> Result<OffsetDateTime, WorkflowError> {
    let row = |child_run_id| {
        wait.map(|w| WaitingRow {
            step_index: w.step_index,
            step_name: &w.step_name,
            kind: w.kind,
            wake_at: w.wake_at,
            child_run_id,
            started_at: w.started_at,
        })
    };
    let child = wait.and_then(|w| w.child.as_ref().map(|c| (w, c)));
    let mut tx = match (held, child) {
        (Some(tx), _) => tx,
        (None, Some(_)) => pool.begin().await?,
        (None, None) => {
            let mut conn = pool.acquire().await?;
            return park(&mut conn, park_args, row(None)).await;
        }
    };
    let due = match child {
        None => park(&mut tx, park_args, row(None)).await?,
        Some((wait, child)) => {
            let child_run_id = insert_child(
                &mut tx,
                park_args.lease.run_id,
                wait.started_at,
                child,
                park_args.channel,
            )
            .await?;
            park(&mut tx, park_args, row(Some(child_run_id)))
                .await?
                .min(wait.started_at)
        }
    };
    tx.commit().await?;
    Ok(due)
}

/// What a park writes (see [`park`]).
#[derive(Debug)]
pub(crate) struct ParkArgs<'a> {
    pub lease: &'a Lease,
    pub seen_wake_seq: i64,
    pub until: OffsetDateTime,
    pub now: OffsetDateTime,
    pub wake: &'a [(String, String)],
    pub reason: &'a str,
    /// The attempt of a quick step whose row waited for this park (written with it, or not at all).
    pub ended: Option<&'a AttemptRow>,
    /// The signal the run parks waiting for, if it does: if one is in the mailbox already, the park
    /// makes the run due at once (see [`park`]).
    pub signal: Option<&'a str>,
    /// Where a child created with the park is announced.
    pub channel: WakeChannel,
}

/// Asks a run to stop. Returns its status, or `None` if there is no such run.
pub(crate) async fn request_cancel(
    conn: &mut PgConnection,
    run_id: Uuid,
    now: OffsetDateTime,
    channel: WakeChannel,
) -> Result<Option<RunStatus>, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(
        "update workflow.runs set cancel_requested_at = coalesce(cancel_requested_at, $2) \
         where id = $1 returning status",
    )
    .bind(run_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let status = status.map(|s| parse::<RunStatus>("run status", &s)).transpose()?;
    if status.is_some_and(|s| !s.is_terminal()) {
        wake(conn, run_id, now, &[], "cancel", channel).await?;
    }
    Ok(status)
}

fn run_from_row(row: &PgRow) -> Result<RunInfo, Error> {
    let status: String = row.try_get("status")?;
    let error: Option<Value> = row.try_get("error")?;
    Ok(RunInfo {
        id: row.try_get("id")?,
        workflow_name: row.try_get("workflow_name")?,
        status: status
            .parse()
            .map_err(|_| Error::Corrupt(format!("unknown run status {status:?}")))?,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: error.map(serde_json::from_value).transpose()?,
        idempotency_key: row.try_get("idempotency_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        executions: row.try_get::<i32, _>("executions")? as u32,
        traceparent: row.try_get("traceparent")?,
        labels: row.try_get::<Json<Labels>, _>("labels")?.0,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        available_at: row.try_get("available_at")?,
        deadline_at: row.try_get("deadline_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
    })
}

/// A run's row.
pub(crate) async fn run_info(conn: &mut PgConnection, run_id: Uuid) -> Result<Option<RunInfo>, Error> {
    let row = sqlx::query(
        "select id, workflow_name, status, input, output, error, idempotency_key, parent_run_id, executions, \
             traceparent, labels, created_at, started_at, finished_at, available_at, deadline_at, \
             cancel_requested_at is not null as cancel_requested \
         from workflow.runs where id = $1",
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

/// A run's step attempts, for people and tests.
pub(crate) async fn step_history(pool: &PgPool, run_id: Uuid) -> Result<Vec<StepRecord>, Error> {
    let rows = sqlx::query(
        "select step_index, step_name, kind, attempt, status, output, error, retry_at, wake_at, child_run_id, \
             started_at, finished_at \
         from workflow.step_attempts where run_id = $1 order by step_index, attempt",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let record = attempt_from_row(row, "")?;
            Ok(StepRecord {
                step_index: record.step_index,
                step_name: record.step_name,
                kind: record.kind,
                attempt: record.attempt,
                status: record.status,
                output: record.output,
                error: record.error,
                retry_at: record.retry_at,
                wake_at: record.wake_at,
                child_run_id: record.child_run_id,
                started_at: record.started_at,
                finished_at: row.try_get("finished_at")?,
            })
        })
        .collect()
}

/// Runs not yet ended, for the `workflow.active_runs` gauge.
pub(crate) async fn count_active(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from workflow.runs where status in ('pending', 'running', 'sleeping')",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim's plan on `pool`, as `EXPLAIN` prints it, and its `next` scan alone (the lines
    /// from `CTE next` up to the next CTE).
    async fn claim_plan(pool: &PgPool) -> (String, String) {
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("explain {CLAIM}")))
            .bind(OffsetDateTime::now_utc())
            .bind(vec!["quick".to_owned()])
            .bind("w")
            .bind(30_000i64)
            .bind(1i64)
            .fetch_all(pool)
            .await
            .expect("explain the claim");
        let next = lines
            .iter()
            .skip_while(|l| !l.contains("CTE next"))
            .take_while(|l| !l.contains("CTE claimed"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        (lines.join("\n"), next)
    }

    /// Claims up to `limit` runs of the workflow `quick` on `pool`, as worker `w` with a 30 s lease.
    async fn claim_quick(pool: &PgPool, limit: usize) -> Claim {
        claim(
            pool,
            "w",
            &["quick".to_owned()],
            OffsetDateTime::now_utc(),
            Duration::from_secs(30),
            limit,
        )
        .await
        .expect("claim")
    }

    // The statistics say the table is empty (analyzed before the starts, as after a burst that
    // autovacuum has not caught up with): the shared pool's connection plans a bitmap scan of every
    // due run and a sort, the worker's claim connection still walks the due index in order and
    // stops at the limit.
    #[sqlx::test(migrations = false)]
    async fn the_claim_walks_the_due_index_in_order_however_stale_the_statistics(pool: PgPool) {
        migrate(&pool).await.expect("migrations");
        sqlx::query("analyze workflow.runs").execute(&pool).await.unwrap();
        sqlx::query(
            "insert into workflow.runs (id, workflow_name, status, input, available_at, created_at) \
             select gen_random_uuid(), 'quick', 'pending', 'null', \
                 now() - interval '1 second' + g * interval '1 microsecond', now() \
             from generate_series(1, 2000) g",
        )
        .execute(&pool)
        .await
        .unwrap();
        let claims = claim_pool(&pool);
        let (whole, plan) = claim_plan(&claims).await;
        assert!(
            plan.contains("Index Scan using runs_due on runs"),
            "the claim reads the due runs along their index:\n{plan}"
        );
        assert!(
            !plan.contains("Sort") && !plan.contains("Bitmap") && !plan.contains("Seq Scan"),
            "and neither reads all of them nor sorts them:\n{plan}"
        );
        assert!(!whole.contains("JIT"), "and is not compiled first:\n{whole}");
        assert!(
            whole.contains("using signals_mailbox on signals") && !whole.contains("signals_pkey"),
            "each claimed run's mailbox is read along its run's entries, not the whole table's:\n{whole}"
        );
        let oldest: Vec<Uuid> =
            sqlx::query_scalar("select id from workflow.runs order by available_at limit 3")
                .fetch_all(&pool)
                .await
                .unwrap();
        let first = claim_quick(&claims, 3).await;
        let claimed: Vec<Uuid> = first.runs.iter().map(|r| r.id).collect();
        assert_eq!(claimed, oldest, "the three runs due first, oldest first");
        assert_eq!(
            first.next_due, None,
            "a full claim does not read the next due time"
        );
        let rest = claim_quick(&claims, 5000).await;
        assert_eq!(rest.runs.len(), 1997, "the other runs due");
        let due = rest.next_due.expect("a partial claim reads the next due time");
        assert!(
            due > Duration::from_secs(20) && due <= Duration::from_secs(30),
            "the first lease to expire: {due:?}"
        );
        claims.close().await;
    }
}
