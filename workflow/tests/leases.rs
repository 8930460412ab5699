//! Leases and fencing under injected interleavings: a lease-holder that stalls past its lease and
//! wakes after another worker took the run over, a worker whose clock is skewed, and a crash after a
//! step's side effect and before its result is recorded. The interleavings are made with the
//! engine's test hooks (a worker stalled at an exact point until the test opens a gate), never by
//! sleeping and hoping.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Gate, Reaction, ScriptedHooks, Workers, migrated, reached};
use pizza_workflow::{
    AttemptStatus, Engine, HookPoint, ManualClock, RetryPolicy, RunInfo, RunStatus, StartOptions, StepError,
    WorkerConfig, WorkflowError, Workflows,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const FLOW: &str = "fenced";
/// The lease of the worker that goes stale: short, so the takeover comes quickly.
const SHORT_LEASE: Duration = Duration::from_millis(600);
const WAIT: Duration = Duration::from_secs(30);

fn config(id: &str, lease: Duration) -> WorkerConfig {
    WorkerConfig {
        id: id.to_owned(),
        lease,
        poll_interval: Duration::from_millis(20),
        concurrency: 1,
    }
}

/// How the step writes its side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// `run`: in a transaction of the step's own, committed before the engine records the attempt.
    Own,
    /// `run_tx`: in the step's transaction, which the engine's record of the attempt commits.
    InStepTx,
}

/// One step whose side effect is a row in `effects` (one per attempt that ran, with the step's
/// idempotency key); the run returns `[attempt that completed the step, execution that ended it]`.
fn workflows(pool: PgPool) -> Workflows {
    workflows_with(pool, Effect::Own)
}

fn workflows_with(pool: PgPool, effect: Effect) -> Workflows {
    Workflows::new().register(FLOW, move |ctx, _: ()| {
        let pool = pool.clone();
        async move {
            let policy = RetryPolicy {
                initial_interval: Duration::from_millis(10),
                maximum_attempts: 5,
                ..RetryPolicy::default()
            };
            let insert = "insert into effects (idempotency_key, attempt) values ($1, $2)";
            let failed = |e: sqlx::Error| StepError::retryable("database", e.to_string());
            let attempt: u32 = match effect {
                Effect::Own => {
                    ctx.run("effect", policy, |step| async move {
                        sqlx::query(insert)
                            .bind(&step.idempotency_key)
                            .bind(step.attempt as i32)
                            .execute(&pool)
                            .await
                            .map_err(failed)?;
                        Ok(step.attempt)
                    })
                    .await?
                }
                Effect::InStepTx => {
                    ctx.run_tx("effect", policy, |step, tx| async move {
                        let mut tx = tx.transaction().await.map_err(failed)?;
                        sqlx::query(insert)
                            .bind(&step.idempotency_key)
                            .bind(step.attempt as i32)
                            .execute(&mut **tx)
                            .await
                            .map_err(failed)?;
                        Ok(step.attempt)
                    })
                    .await?
                }
            };
            // Returning the execution number (never branching on it) shows which execution ended
            // the run.
            Ok::<_, WorkflowError>((attempt, ctx.execution_number()))
        }
    })
}

async fn effects_table(pool: &PgPool) {
    sqlx::query("create table effects (id bigserial primary key, idempotency_key text not null, attempt int not null)")
        .execute(pool)
        .await
        .unwrap();
}

/// Everything the engine holds about a run: its row and its step attempts, as comparable values.
async fn snapshot(engine: &Engine, run: Uuid) -> (String, Option<Value>, u32, Vec<String>) {
    let info: RunInfo = engine.status(run).await.unwrap();
    let history = engine
        .history(run)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            format!(
                "{} #{} {:?} {:?} {:?}",
                s.step_name, s.attempt, s.status, s.output, s.finished_at
            )
        })
        .collect();
    (
        format!("{:?} {:?}", info.status, info.finished_at),
        info.output,
        info.executions,
        history,
    )
}

fn is_stale(point: &HookPoint, wanted: fn(&HookPoint) -> bool) -> bool {
    wanted(point)
        && matches!(
            point,
            HookPoint::StepReturned { worker_id, .. }
                | HookPoint::BeforeFinish { worker_id, .. }
                | HookPoint::BeforePark { worker_id, .. }
                | HookPoint::Heartbeat { worker_id, .. }
                if worker_id == "stale"
        )
}

/// Where the stale worker stalls, and whether its heartbeat is let through after the takeover.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// After the step's code returned, before its result is recorded; the gate opens after the
    /// takeover, so the stale worker tries to record the result.
    StepResult,
    /// Before the run's end is recorded; the gate opens after the takeover, so the stale worker
    /// tries to complete the run.
    Completion,
    /// After the step's code returned (that gate never opens); its heartbeat is let through after
    /// the takeover and finds the lease gone.
    Heartbeat,
}

/// The stale worker claims the run and stalls (its heartbeat stalls too, so its lease runs out on
/// the database's clock while it is alive); a rescuer takes the run over and ends it; then the stale
/// worker is let go. Returns the run's state after the rescue and after the stale worker stopped.
async fn stale_holder_wakes_after_takeover(pool: PgPool, stall: Stall, effect: Effect) -> (Engine, Uuid) {
    migrated(&pool).await;
    effects_table(&pool).await;
    let stall_gate = Gate::new();
    let heartbeat_gate = Gate::new();
    let (hooks, mut points) = {
        let stall_gate = stall_gate.clone();
        let heartbeat_gate = heartbeat_gate.clone();
        ScriptedHooks::new(move |point| {
            let stalls_here = match stall {
                Stall::StepResult | Stall::Heartbeat => {
                    is_stale(point, |p| matches!(p, HookPoint::StepReturned { .. }))
                }
                Stall::Completion => is_stale(point, |p| matches!(p, HookPoint::BeforeFinish { .. })),
            };
            if stalls_here {
                Reaction::Wait(stall_gate.clone())
            } else if is_stale(point, |p| matches!(p, HookPoint::Heartbeat { .. })) {
                Reaction::Wait(heartbeat_gate.clone())
            } else {
                Reaction::Go
            }
        })
    };
    let engine = Engine::builder(pool.clone()).hooks(hooks).build();
    let flows = workflows_with(pool.clone(), effect);
    let stale = Workers::start(&engine, &flows, 1, |_| config("stale", SHORT_LEASE));
    let run = engine.start(FLOW, &(), StartOptions::default()).await.unwrap();
    reached(&mut points, "the stale worker stalled", |p| {
        is_stale(p, |p| {
            matches!(p, HookPoint::StepReturned { .. } | HookPoint::BeforeFinish { .. })
        })
    })
    .await;

    // The stale worker is alive but stalled; its lease runs out and a rescuer takes over.
    let rescuer = Workers::start(&engine, &flows, 1, |_| config("rescuer", Duration::from_secs(30)));
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    rescuer.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.executions, 2, "the stale execution and the rescuing one");
    let rescued = snapshot(&engine, run).await;

    // Now the stale worker wakes up and tries to write.
    match stall {
        Stall::StepResult | Stall::Completion => stall_gate.open(),
        Stall::Heartbeat => heartbeat_gate.open(),
    }
    // It stops on its own: its write is refused (or its heartbeat finds the lease gone), so its
    // execution ends. If it did not, stopping the worker would wait for it forever.
    tokio::time::timeout(WAIT, stale.stop())
        .await
        .expect("the stale execution ended after it was fenced");
    assert_eq!(
        snapshot(&engine, run).await,
        rescued,
        "nothing the stale worker wrote after the takeover landed"
    );
    heartbeat_gate.open();
    stall_gate.open();
    (engine, run)
}

/// Whether `sql`, a yes-or-no question about the run `$1`, says yes (`xmin` is the id of the
/// transaction that wrote a row version: equal ones were written by one transaction).
async fn holds(pool: &PgPool, sql: &'static str, run: Uuid) -> bool {
    sqlx::query_scalar(sql).bind(run).fetch_one(pool).await.unwrap()
}

async fn effects(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as("select idempotency_key, attempt from effects order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn completed_steps(engine: &Engine, run: Uuid) -> usize {
    engine
        .history(run)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.status == AttemptStatus::Completed)
        .count()
}

#[sqlx::test(migrations = false)]
async fn a_stale_lease_holder_that_records_a_step_result_after_a_takeover_is_fenced(pool: PgPool) {
    let (engine, run) = stale_holder_wakes_after_takeover(pool.clone(), Stall::StepResult, Effect::Own).await;
    let done = engine.status(run).await.unwrap();
    let effects = effects(&pool).await;
    assert_eq!(effects.len(), 2, "the step's side effect ran in both executions");
    assert_eq!(effects[0].0, effects[1].0, "under one idempotency key");
    assert_eq!(
        completed_steps(&engine, run).await,
        1,
        "its result is recorded once, by the rescuer"
    );
    assert_eq!(
        done.output,
        Some(json!([effects[1].1, 2])),
        "the rescuer's attempt completed the step and its execution ended the run"
    );
}

/// A stale holder of a transactional step stalled at `stall`, taken over: the stale attempt's write
/// went with its transaction (refused with its record, or rolled back with its held commit), and
/// the rescuer's execution ran the step and ended the run.
async fn only_the_rescuers_write_landed(pool: &PgPool, stall: Stall) {
    let (engine, run) = stale_holder_wakes_after_takeover(pool.clone(), stall, Effect::InStepTx).await;
    let effects = effects(pool).await;
    assert_eq!(effects.len(), 1, "only the rescuer's write landed");
    assert_eq!(completed_steps(&engine, run).await, 1);
    assert_eq!(
        engine.status(run).await.unwrap().output,
        Some(json!([effects[0].1, 2]))
    );
}

#[sqlx::test(migrations = false)]
async fn a_stale_lease_holders_transactional_step_writes_nothing_after_a_takeover(pool: PgPool) {
    only_the_rescuers_write_landed(&pool, Stall::StepResult).await;
}

#[sqlx::test(migrations = false)]
async fn a_stale_lease_holder_that_parks_for_a_wait_after_a_takeover_writes_neither_the_park_nor_the_wait(
    pool: PgPool,
) {
    migrated(&pool).await;
    let flows = Workflows::new().register("waits", |ctx, _: ()| async move {
        let got: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
        Ok::<_, WorkflowError>((got, ctx.execution_number()))
    });
    let stall_gate = Gate::new();
    let (hooks, mut points) = {
        let stall_gate = stall_gate.clone();
        ScriptedHooks::new(move |point| {
            if is_stale(point, |p| {
                matches!(p, HookPoint::BeforePark { .. } | HookPoint::Heartbeat { .. })
            }) {
                Reaction::Wait(stall_gate.clone())
            } else {
                Reaction::Go
            }
        })
    };
    let engine = Engine::builder(pool.clone()).hooks(hooks).build();
    let stale = Workers::start(&engine, &flows, 1, |_| config("stale", SHORT_LEASE));
    let run = engine.start("waits", &(), StartOptions::default()).await.unwrap();
    reached(&mut points, "the stale worker is about to park", |p| {
        is_stale(p, |p| matches!(p, HookPoint::BeforePark { .. }))
    })
    .await;
    // Its lease runs out; the rescuer replays the run to the same wait and parks for it.
    let rescuer = Workers::start(&engine, &flows, 1, |_| config("rescuer", Duration::from_secs(30)));
    let waiting = || async {
        let history = engine.history(run).await.unwrap();
        let waits = history.iter().filter(|s| s.step_name == "go").count();
        let parked = engine.status(run).await.unwrap().status == RunStatus::Sleeping;
        (waits, parked)
    };
    let started = std::time::Instant::now();
    while waiting().await != (1, true) {
        assert!(started.elapsed() < WAIT, "the rescuer never parked for the wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The run's row as the park left it (when it is due, and what wakes it), beside its history.
    let row = || async {
        sqlx::query_as::<_, (String, Option<String>, String, Option<String>)>(
            "select status, lease_owner, available_at::text, wake_reason from workflow.runs where id = $1",
        )
        .bind(run)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let parked_by_rescuer = (snapshot(&engine, run).await, row().await);
    // The stale worker goes on to its park: refused, with the wait's row.
    stall_gate.open();
    tokio::time::timeout(WAIT, stale.stop())
        .await
        .expect("the stale execution ended after its park was fenced");
    assert_eq!(
        (snapshot(&engine, run).await, row().await),
        parked_by_rescuer,
        "the stale worker's park and wait row did not land"
    );
    engine.signal(run, "go", &"now", None).await.unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    rescuer.stop().await;
    assert_eq!(
        done.output,
        Some(json!(["now", 3])),
        "the rescuer's wait received the signal"
    );
}

/// A transactional step's transaction is held until the run's end (`context::run`, "Held
/// commits"), and its record's fence holds a share lock on the run's row, which the claim skips. A
/// worker that hangs in between, alive, must not keep the run from being taken over: the server
/// ends a held transaction that sits idle for a lease, and the rescuer takes the run once the
/// lease has run out, as after a crash.
#[sqlx::test(migrations = false)]
async fn a_stale_holder_of_a_transactional_steps_commit_is_taken_over_and_its_write_never_lands(
    pool: PgPool,
) {
    only_the_rescuers_write_landed(&pool, Stall::Completion).await;
}

#[sqlx::test(migrations = false)]
async fn a_stale_lease_holder_that_completes_the_run_after_a_takeover_is_fenced(pool: PgPool) {
    let (engine, run) = stale_holder_wakes_after_takeover(pool.clone(), Stall::Completion, Effect::Own).await;
    let done = engine.status(run).await.unwrap();
    // The run's last quick step leaves its row to the run's end (one commit, see `context::run`,
    // "Deferred records"), and the stall held that end back: the rescuer ran the step again, under
    // the same idempotency key, and the stale worker's row for it was fenced with its end.
    let effects = effects(&pool).await;
    assert_eq!(
        effects.len(),
        2,
        "the step's row was not written before the stall"
    );
    assert_eq!(effects[0].0, effects[1].0, "one idempotency key");
    assert_eq!(
        completed_steps(&engine, run).await,
        1,
        "the stale worker's deferred row did not land"
    );
    assert_eq!(
        done.output,
        Some(json!([1, 2])),
        "the rescuer's execution ended the run, not the stale one"
    );
}

#[sqlx::test(migrations = false)]
async fn a_stale_lease_holder_whose_heartbeat_resumes_after_a_takeover_stops_its_execution(pool: PgPool) {
    let (engine, run) = stale_holder_wakes_after_takeover(pool.clone(), Stall::Heartbeat, Effect::Own).await;
    assert_eq!(completed_steps(&engine, run).await, 1);
    assert_eq!(engine.status(run).await.unwrap().status, RunStatus::Completed);
}

#[sqlx::test(migrations = false)]
async fn a_worker_whose_clock_runs_an_hour_ahead_does_not_take_a_live_run(pool: PgPool) {
    migrated(&pool).await;
    effects_table(&pool).await;
    let gate = Gate::new();
    let (live_hooks, mut live_points) = {
        let gate = gate.clone();
        ScriptedHooks::new(move |point| match point {
            HookPoint::StepReturned { .. } => Reaction::Wait(gate.clone()),
            _ => Reaction::Go,
        })
    };
    let live_engine = Engine::builder(pool.clone()).hooks(live_hooks).build();
    let flows = workflows(pool.clone());
    let live = Workers::start(&live_engine, &flows, 1, |_| config("live", SHORT_LEASE));
    let run = live_engine
        .start(FLOW, &(), StartOptions::default())
        .await
        .unwrap();
    reached(&mut live_points, "the live worker inside the step", |p| {
        matches!(p, HookPoint::StepReturned { .. })
    })
    .await;

    // A replica whose clock is an hour ahead: by its clock every lease taken in the last hour is over.
    let skewed_clock = ManualClock::new(time::OffsetDateTime::now_utc() + Duration::from_secs(3600));
    let (skewed_hooks, mut skewed_points) = ScriptedHooks::new(|_| Reaction::Go);
    let skewed_engine = Engine::builder(pool.clone())
        .clock(Arc::new(skewed_clock))
        .hooks(skewed_hooks)
        .build();
    let skewed = Workers::start(&skewed_engine, &flows, 1, |_| config("skewed", SHORT_LEASE));
    // Let the live worker renew its lease three times (well past the lease's length) while the
    // skewed one keeps polling; none of its polls may take the run.
    let mut heartbeats = 0;
    let mut polls = 0;
    tokio::time::timeout(WAIT, async {
        while heartbeats < 3 {
            tokio::select! {
                Some(point) = live_points.recv() => {
                    if matches!(point, HookPoint::Heartbeat { .. }) {
                        heartbeats += 1;
                    }
                }
                Some(point) = skewed_points.recv() => {
                    if let HookPoint::Polled { claimed, .. } = point {
                        assert_eq!(claimed, None, "the skewed worker took the live run");
                        polls += 1;
                    }
                }
            }
        }
    })
    .await
    .expect("three heartbeats of the live worker");
    skewed.stop().await;
    assert!(polls >= 2, "the skewed worker polled meanwhile ({polls} polls)");

    gate.open();
    let done = live_engine.wait_until_finished(run, WAIT).await.unwrap();
    live.stop().await;
    assert_eq!(done.executions, 1, "only the live worker ever executed the run");
    assert_eq!(done.output, Some(json!([1, 1])));
    assert_eq!(effects(&pool).await.len(), 1, "the side effect ran once");
}

/// Runs the flow with its step writing `effect`, crashing the first execution right after the step's
/// code returned (before its result is recorded); returns the run once it completed.
async fn crash_once_after_the_step_returns(pool: &PgPool, effect: Effect) -> (Engine, RunInfo) {
    crash_once_at(pool, effect, |p| matches!(p, HookPoint::StepReturned { .. })).await
}

/// Runs the flow with its step writing `effect`, crashing the first execution at the first point
/// `at` picks; returns the run once it completed.
async fn crash_once_at(pool: &PgPool, effect: Effect, at: fn(&HookPoint) -> bool) -> (Engine, RunInfo) {
    migrated(pool).await;
    effects_table(pool).await;
    let crashed = Arc::new(AtomicBool::new(false));
    let (hooks, mut points) = {
        let crashed = crashed.clone();
        ScriptedHooks::new(move |point| {
            if at(point) && !crashed.swap(true, Ordering::SeqCst) {
                Reaction::Crash
            } else {
                Reaction::Go
            }
        })
    };
    let engine = Engine::builder(pool.clone()).hooks(hooks).build();
    let flows = workflows_with(pool.clone(), effect);
    let workers = Workers::start(&engine, &flows, 1, |_| config("w", SHORT_LEASE));
    let run = engine.start(FLOW, &(), StartOptions::default()).await.unwrap();
    reached(&mut points, "the crash", at).await;
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        done.executions, 2,
        "the crashed execution, then the one after its lease ran out"
    );
    assert_eq!(completed_steps(&engine, run).await, 1, "the step completed once");
    (engine, done)
}

#[sqlx::test(migrations = false)]
async fn a_crash_after_a_steps_side_effect_before_its_result_is_recorded_runs_the_step_again_under_its_key(
    pool: PgPool,
) {
    crash_once_after_the_step_returns(&pool, Effect::Own).await;
    let effects = effects(&pool).await;
    assert_eq!(
        effects.len(),
        2,
        "the side effect ran again: at least once, never lost"
    );
    assert_eq!(
        effects[0].0, effects[1].0,
        "both runs of it carry the step's idempotency key, so a keyed effect applies once"
    );
}

#[sqlx::test(migrations = false)]
async fn a_transactional_steps_write_and_its_record_commit_together_so_a_crash_between_leaves_neither(
    pool: PgPool,
) {
    let (_, done) = crash_once_after_the_step_returns(&pool, Effect::InStepTx).await;
    assert_eq!(
        effects(&pool).await.len(),
        1,
        "the crashed attempt's write went with its record: the effect happened exactly once"
    );
    assert!(
        holds(
            &pool,
            "select e.xmin::text = a.xmin::text from effects e, workflow.step_attempts a \
             where a.run_id = $1 and a.step_name = 'effect' and a.status = 'completed'",
            done.id,
        )
        .await,
        "the effect and the attempt were written by one transaction"
    );
}

/// A transactional step's commit waits for the execution's next write (`context::run`, "Held
/// commits"): for the flow's only step that is the run's end, so the two are one commit, and a crash
/// between them leaves neither.
#[sqlx::test(migrations = false)]
async fn a_transactional_last_step_commits_with_the_runs_end_so_a_crash_between_leaves_neither(pool: PgPool) {
    let (_, done) = crash_once_at(&pool, Effect::InStepTx, |p| {
        matches!(p, HookPoint::BeforeFinish { .. })
    })
    .await;
    assert_eq!(
        effects(&pool).await.len(),
        1,
        "the crashed execution's write went with its end: the effect happened once"
    );
    assert_eq!(
        done.output,
        Some(json!([1, 2])),
        "the step ran again in the second execution (nothing of the first was on record)"
    );
    assert!(
        holds(
            &pool,
            "select e.xmin::text = a.xmin::text and a.xmin::text = r.xmin::text \
             from effects e, workflow.step_attempts a, workflow.runs r \
             where a.run_id = $1 and a.step_name = 'effect' and r.id = $1",
            done.id,
        )
        .await,
        "the effect, the step's record and the run's end were written by one transaction"
    );
}

#[sqlx::test(migrations = false)]
async fn a_worker_restarted_under_its_name_takes_back_its_runs_without_waiting_for_their_leases(
    pool: PgPool,
) {
    migrated(&pool).await;
    effects_table(&pool).await;
    // The first life of `replica-0` dies inside the step (as a killed process would: nothing more is
    // written, the lease stays) while holding a lease of ten minutes.
    let long = Duration::from_secs(600);
    let crashed = Arc::new(AtomicBool::new(false));
    let (hooks, mut points) = {
        let crashed = crashed.clone();
        ScriptedHooks::new(move |point| match point {
            HookPoint::StepReturned { .. } if !crashed.swap(true, Ordering::SeqCst) => Reaction::Crash,
            _ => Reaction::Go,
        })
    };
    let engine = Engine::builder(pool.clone()).hooks(hooks).build();
    let flows = workflows(pool.clone());
    let first_life = Workers::start(&engine, &flows, 1, |_| config("replica-0", long));
    let run = engine.start(FLOW, &(), StartOptions::default()).await.unwrap();
    reached(&mut points, "the crash", |p| {
        matches!(p, HookPoint::StepReturned { .. })
    })
    .await;
    first_life.stop().await;
    let held = engine.status(run).await.unwrap();
    assert_eq!(
        (held.status, held.executions),
        (RunStatus::Running, 1),
        "the dead worker's lease still holds the run"
    );

    // The replica comes back under the same name: the run resumes at once, not in ten minutes.
    let second_life = Workers::start(&engine, &flows, 1, |_| config("replica-0", long));
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    second_life.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        done.executions, 2,
        "the crashed execution, then the taken-back one"
    );
    let effects = effects(&pool).await;
    assert_eq!(effects.len(), 2, "the step ran again, under its idempotency key");
    assert_eq!(effects[0].0, effects[1].0);
    assert_eq!(completed_steps(&engine, run).await, 1);
}
