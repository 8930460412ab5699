//! The engine against the real PostgreSQL: retries, failures and compensation, signals, cancellation,
//! deadlines, child workflows, determinism checks, injected time, metrics, and many workers on many
//! runs. Each test gets a fresh database (`#[sqlx::test]`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Gate, Reaction, ScriptedHooks, Workers, eventually, migrated, reached, worker_config};
use pizza_workflow::{
    AttemptStatus, Engine, HookPoint, Labels, ManualClock, Metrics, RetryPolicy, RunStatus, Signal, Source,
    StartOptions, StepError, StepKind, WorkerConfig, WorkflowError, Workflows,
};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn fast_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(20),
        backoff_coefficient: 2.0,
        maximum_interval: Duration::from_millis(100),
        maximum_attempts: attempts,
    }
}

async fn wait_for_status(engine: &Engine, run: Uuid, status: RunStatus) {
    eventually(&format!("run {run} {status}"), WAIT, || async {
        (engine.status(run).await.unwrap().status == status).then_some(())
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_retried_step_runs_again_after_its_backoff_with_the_same_idempotency_key(pool: PgPool) {
    migrated(&pool).await;
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = keys.clone();
    let workflows = Workflows::new().register("flaky", move |ctx, _: ()| {
        let seen = seen.clone();
        async move {
            ctx.run("charge", fast_retries(5), |step| async move {
                seen.lock().unwrap().push(step.idempotency_key.clone());
                if step.attempt < 3 {
                    Err(StepError::retryable("http_503", "busy"))
                } else {
                    Ok(step.attempt)
                }
            })
            .await
        }
    });
    let engine = Engine::builder(pool).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine.start("flaky", &(), StartOptions::default()).await.unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;

    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!(3)));
    assert_eq!(
        done.executions, 3,
        "each retry is a new execution after the back-off"
    );
    let history = engine.history(run).await.unwrap();
    let statuses: Vec<_> = history.iter().map(|s| (s.attempt, s.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (1, AttemptStatus::Failed),
            (2, AttemptStatus::Failed),
            (3, AttemptStatus::Completed)
        ]
    );
    assert_eq!(history[0].error.as_ref().unwrap().error_type, "http_503");
    assert!(history[0].retry_at.is_some());
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == format!("{run}/charge/0")), "{keys:?}");
}

#[sqlx::test(migrations = false)]
async fn a_permanent_failure_fails_the_step_at_once_and_compensation_is_ordinary_code(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("pay", |ctx, _: ()| async move {
        ctx.run("reserve", RetryPolicy::default(), |_| async {
            Ok("table-7".to_owned())
        })
        .await?;
        match ctx
            .run("charge", RetryPolicy::default(), |_| async {
                Err::<(), _>(StepError::permanent("card_declined", "insufficient funds"))
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(WorkflowError::StepFailed { error, attempts, .. }) => {
                assert_eq!(attempts, 1);
                ctx.run("release", RetryPolicy::default(), |_| async { Ok(()) })
                    .await?;
                Err(WorkflowError::failed("payment_declined", error.message))
            }
            Err(other) => Err(other),
        }
    });
    let engine = Engine::builder(pool).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine.start("pay", &(), StartOptions::default()).await.unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;

    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.error.unwrap().error_type, "payment_declined");
    let steps: Vec<_> = engine
        .history(run)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.step_name, s.status))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("reserve".to_owned(), AttemptStatus::Completed),
            ("charge".to_owned(), AttemptStatus::Failed),
            ("release".to_owned(), AttemptStatus::Completed),
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn a_signal_sent_before_the_wait_begins_is_not_lost_and_signals_feed_waits_in_send_order(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("listen", |ctx, _: ()| async move {
        ctx.sleep("settle", Duration::from_millis(50)).await?;
        let first: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(30)).await?;
        let second: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(30)).await?;
        let third: Option<String> = ctx.wait_for_signal("go", Duration::from_millis(100)).await?;
        Ok::<_, WorkflowError>(vec![first, second, third])
    });
    let engine = Engine::builder(pool).build();
    let run = engine
        .start("listen", &(), StartOptions::default())
        .await
        .unwrap();
    // Both signals arrive before the run has even started, long before any wait begins.
    assert!(
        engine
            .signal(run, "go", &"first", Some("kitchen-1"))
            .await
            .unwrap()
    );
    assert!(
        !engine
            .signal(run, "go", &"first again", Some("kitchen-1"))
            .await
            .unwrap(),
        "same key: stored once"
    );
    assert!(engine.signal(run, "go", &"second", None).await.unwrap());
    assert!(
        engine
            .signal(run, "other", &"not for these waits", None)
            .await
            .unwrap()
    );

    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;

    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        done.output,
        Some(json!(["first", "second", null])),
        "the third wait timed out"
    );
    let unconsumed: i64 =
        sqlx::query_scalar("select count(*) from workflow.signals where consumed_by_step is null")
            .fetch_one(engine.pool())
            .await
            .unwrap();
    assert_eq!(unconsumed, 1, "the signal no wait asked for stays in the mailbox");
    let err = engine.signal(run, "go", &"late", None).await.unwrap_err();
    assert!(
        matches!(err, pizza_workflow::Error::RunFinished(id) if id == run),
        "{err}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_signal_idempotency_key_is_per_run_so_two_runs_each_get_theirs_and_one_run_gets_it_once(
    pool: PgPool,
) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("listen", |ctx, _: ()| async move {
        let first: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(30)).await?;
        let second: Option<String> = ctx.wait_for_signal("go", Duration::from_millis(100)).await?;
        Ok::<_, WorkflowError>(vec![first, second])
    });
    let engine = Engine::builder(pool).build();
    let a = engine
        .start("listen", &(), StartOptions::default())
        .await
        .unwrap();
    let b = engine
        .start("listen", &(), StartOptions::default())
        .await
        .unwrap();
    // One event that concerns two runs, signalled to each under the event's id.
    let key = Some("event-1");
    assert!(engine.signal(a, "go", &"to a", key).await.unwrap());
    assert!(
        engine.signal(b, "go", &"to b", key).await.unwrap(),
        "the same key on another run is another signal"
    );
    assert!(
        !engine.signal(a, "go", &"to a again", key).await.unwrap(),
        "the same key on the same run: stored once"
    );

    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let done_a = engine.wait_until_finished(a, WAIT).await.unwrap();
    let done_b = engine.wait_until_finished(b, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(
        done_a.output,
        Some(json!(["to a", null])),
        "a got its signal once"
    );
    assert_eq!(done_b.output, Some(json!(["to b", null])), "b got its own");
}

/// Until the run's wait `step` is on record as waiting.
async fn until_waiting(engine: &Engine, run: Uuid, step: &str) {
    eventually(&format!("the wait {step}"), WAIT, || async {
        let history = engine.history(run).await.unwrap();
        history
            .iter()
            .any(|s| s.step_name == step && s.status == AttemptStatus::Waiting)
            .then_some(())
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn an_idle_worker_that_never_polls_is_woken_by_another_processs_start_and_signal_and_by_its_timers(
    pool: PgPool,
) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("wake", |ctx, _: ()| async move {
        ctx.sleep("timer", Duration::from_millis(200)).await?;
        let got: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
        Ok::<_, WorkflowError>(got)
    });
    // The worker's process: its safety-net poll is an hour, so only a notification or a due time
    // can wake it.
    let worker_engine = Engine::builder(pool.clone()).build();
    let workers = Workers::start(&worker_engine, &workflows, 1, |_| WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        ..worker_config("idle")
    });
    // Another process: another engine, which cannot wake the worker in memory.
    let other = Engine::builder(pool).build();
    let run = other.start("wake", &(), StartOptions::default()).await.unwrap();
    until_waiting(&other, run, "go").await;
    other.signal(run, "go", &"now", None).await.unwrap();
    let done = other.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!("now")));
    assert_eq!(
        done.executions, 3,
        "started by a notification, woken by its timer, then by the signal's notification"
    );
}

#[sqlx::test(migrations = false)]
async fn an_engine_whose_wakes_stay_in_its_process_notifies_nobody_and_its_workers_take_every_wake_at_once(
    pool: PgPool,
) {
    migrated(&pool).await;
    let workflows = Workflows::new()
        .register("parent", |ctx, _: ()| async move {
            let doubled: u64 = ctx
                .run_workflow("double", &21u64, Duration::from_secs(30))
                .await?;
            let got: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
            let other: Option<String> = ctx.wait_for_signal("more", Duration::from_secs(3600)).await?;
            Ok::<_, WorkflowError>((doubled, got, other))
        })
        .register("double", |ctx, n: u64| async move {
            ctx.run("double", RetryPolicy::no_retry(), |_| async move { Ok(n * 2) })
                .await
        })
        .register("held", |ctx, _: ()| async move {
            ctx.wait_for_signal::<()>("never", Duration::from_secs(3600))
                .await?;
            Ok::<_, WorkflowError>(())
        });
    // Whoever listens on the engine's channel hears nothing from this engine.
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen("pizza_workflow_wake").await.unwrap();
    // Its workers' safety-net poll is an hour: only a wake in memory or a due time moves them.
    let engine = Engine::builder(pool.clone()).wakes(Source::Process).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        ..worker_config("process")
    });
    let run = engine
        .start("parent", &(), StartOptions::default())
        .await
        .unwrap();
    engine.wake();
    until_waiting(&engine, run, "go").await;
    engine.signal(run, "go", &"now", None).await.unwrap();
    until_waiting(&engine, run, "more").await;
    // A signal in someone else's transaction (a consumer's): the caller wakes the workers once it
    // has committed.
    let mut tx = pool.begin().await.unwrap();
    engine
        .signal_in(&mut tx, run, "more", &"later", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    engine.wake();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    let held = engine.start("held", &(), StartOptions::default()).await.unwrap();
    engine.wake();
    until_waiting(&engine, held, "never").await;
    engine.cancel(held).await.unwrap();
    wait_for_status(&engine, held, RunStatus::Cancelled).await;
    workers.stop().await;
    assert_eq!(done.output, Some(json!([42, "now", "later"])));
    let heard = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(
        heard.is_err(),
        "a notification on the engine's channel: {heard:?}"
    );
}

/// A worker with four slots that only a notification or a due time wakes (its safety-net poll is an
/// hour), and the hook points it passes.
fn hooked_idle_worker(
    pool: &PgPool,
    workflows: &Workflows,
) -> (Workers, tokio::sync::mpsc::UnboundedReceiver<HookPoint>) {
    let (hooks, points) = ScriptedHooks::new(|_| Reaction::Go);
    let engine = Engine::builder(pool.clone()).hooks(hooks).build();
    let workers = Workers::start(&engine, workflows, 1, |_| WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        concurrency: 4,
        ..worker_config("w")
    });
    (workers, points)
}

#[sqlx::test(migrations = false)]
async fn a_worker_that_claimed_fewer_runs_than_it_has_slots_does_not_claim_again_until_woken(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("quick", |ctx, _: ()| async move {
        ctx.run("one", RetryPolicy::no_retry(), |_| async { Ok(1) }).await
    });
    let (workers, mut points) = hooked_idle_worker(&pool, &workflows);
    // Started one after the other by another process: the worker learns of each by a notification.
    let other = Engine::builder(pool).build();
    const RUNS: usize = 10;
    for _ in 0..RUNS {
        let run = other.start("quick", &(), StartOptions::default()).await.unwrap();
        other.wait_until_finished(run, WAIT).await.unwrap();
    }
    workers.stop().await;
    let mut claims = (0, 0);
    while let Ok(point) = points.try_recv() {
        match point {
            HookPoint::Polled { claimed: Some(_), .. } => claims.0 += 1,
            HookPoint::Polled { claimed: None, .. } => claims.1 += 1,
            _ => {}
        }
    }
    assert_eq!(claims.0, RUNS, "each run claimed once");
    // Empty claims: the one at the start, and the one the listener's connection makes (it wakes
    // the worker to look for what was sent before it listened); not one after every run.
    assert!(
        claims.1 <= 2,
        "one run for four free slots: nothing else was due, so no claim followed; {} empty claims \
         for {RUNS} runs",
        claims.1
    );
}

#[sqlx::test(migrations = false)]
async fn a_run_parked_here_makes_no_idle_worker_claim_before_it_is_due(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("naps", |ctx, _: ()| async move {
        ctx.sleep("nap", Duration::from_millis(300)).await?;
        let got: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
        Ok::<_, WorkflowError>(got)
    });
    let (workers, mut points) = hooked_idle_worker(&pool, &workflows);
    // The worker's first looks (its own, and its listener's once connected) are over before the run
    // starts: from then on, every claim is one the run caused.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), points.recv()).await {}
    let other = Engine::builder(pool).build();
    let run = other.start("naps", &(), StartOptions::default()).await.unwrap();
    until_waiting(&other, run, "go").await;
    // Time for a claim the second park would have caused to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.signal(run, "go", &"now", None).await.unwrap();
    let done = other.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!("now")));
    let mut claims = Vec::new();
    while let Ok(point) = points.try_recv() {
        if let HookPoint::Polled { claimed, .. } = point {
            claims.push(claimed.is_some());
        }
    }
    // Each claim got the run: the start's notification, the nap's due time, the signal's
    // notification. Each park told the sleeping worker when the run falls due instead of waking it
    // to claim.
    assert_eq!(
        claims,
        [true, true, true],
        "three executions, no empty claim after a park: {claims:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_signal_wait_reads_no_mailbox_of_its_own_and_its_park_finds_a_signal_the_claim_missed(
    pool: PgPool,
) {
    migrated(&pool).await;
    sqlx::query("create extension if not exists pg_stat_statements")
        .execute(&pool)
        .await
        .unwrap();
    let workflows = Workflows::new().register("mail", |ctx, _: ()| async move {
        let first: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
        let second: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
        Ok::<_, WorkflowError>((first, second))
    });
    // The first signal is in the mailbox before the run's first claim: the claim shows it, and the
    // first wait takes it in that execution.
    let other = Engine::builder(pool.clone()).build();
    let run = other.start("mail", &(), StartOptions::default()).await.unwrap();
    other.signal(run, "go", &"one", None).await.unwrap();
    // The second wait's park stalls until the test has put a signal in the mailbox the way a
    // signal the claim's snapshot missed looks to the execution: there, and `wake_seq` as claimed.
    let gate = Gate::new();
    let held = gate.clone();
    let (hooks, mut points) = ScriptedHooks::new(move |point| match point {
        HookPoint::BeforePark { .. } => Reaction::Wait(held.clone()),
        _ => Reaction::Go,
    });
    let engine = Engine::builder(pool.clone()).hooks(hooks).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    reached(&mut points, "the second wait's park", |p| {
        matches!(p, HookPoint::BeforePark { .. })
    })
    .await;
    sqlx::query(
        "insert into workflow.signals (run_id, signal_name, payload, sent_at) \
         values ($1, 'go', '\"two\"', now())",
    )
    .bind(run)
    .execute(&pool)
    .await
    .unwrap();
    gate.open();
    // Without the park's look at the mailbox the run would sleep until the wait's hour is up.
    let done = other.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!(["one", "two"])));
    assert_eq!(done.executions, 2, "one execution per park");
    // No statement of the engine read the mailbox on its own: the claim and the park did.
    let reads: i64 = sqlx::query_scalar(
        "select coalesce(sum(calls), 0)::int8 from pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database()) \
           and query ilike 'select%workflow.signals%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reads, 0, "reads of the mailbox outside the claim and the park");
}

#[sqlx::test(migrations = false)]
async fn a_due_run_locked_by_another_transaction_does_not_make_an_idle_worker_claim_in_a_loop(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("quick", |ctx, _: ()| async move {
        ctx.run("one", RetryPolicy::no_retry(), |_| async { Ok(1) }).await
    });
    // Due now, with no worker yet; then a transaction of someone else's holds its row (as a
    // consumer's signal or an operator's cancel does while it writes).
    let other = Engine::builder(pool.clone()).build();
    let run = other.start("quick", &(), StartOptions::default()).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("select 1 from workflow.runs where id = $1 for update")
        .bind(run)
        .execute(&mut *holder)
        .await
        .unwrap();
    let (workers, mut points) = hooked_idle_worker(&pool, &workflows);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut empty = 0;
    while let Ok(point) = points.try_recv() {
        if let HookPoint::Polled { claimed, .. } = point {
            assert_eq!(claimed, None, "the locked run cannot be claimed");
            empty += 1;
        }
    }
    // The claim at the start and the one the listener's connection makes; a worker that counted
    // the locked run as due now claimed again at once, hundreds of times in half a second.
    assert!(empty <= 2, "{empty} empty claims while the run was locked");
    // The holder commits and, like a signal does, wakes the workers.
    holder.commit().await.unwrap();
    other.signal(run, "nudge", &(), None).await.unwrap();
    let done = other.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!(1)));
}

#[sqlx::test(migrations = false)]
async fn cancelling_a_waiting_run_interrupts_the_wait_and_compensation_runs_before_it_ends_cancelled(
    pool: PgPool,
) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("order", |ctx, _: ()| async move {
        ctx.run("reserve-oven", RetryPolicy::default(), |_| async { Ok(()) })
            .await?;
        match ctx
            .wait_for_signal::<String>("kitchen-ready", Duration::from_secs(60))
            .await
        {
            Err(WorkflowError::Cancelled) => {
                ctx.run("release-oven", RetryPolicy::default(), |_| async { Ok(()) })
                    .await?;
                Err(WorkflowError::Cancelled)
            }
            other => other.map(|_| ()),
        }
    });
    let engine = Engine::builder(pool).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine.start("order", &(), StartOptions::default()).await.unwrap();
    wait_for_status(&engine, run, RunStatus::Sleeping).await;
    assert_eq!(engine.cancel(run).await.unwrap(), RunStatus::Sleeping);
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;

    assert_eq!(done.status, RunStatus::Cancelled);
    assert_eq!(done.error.unwrap().error_type, "cancelled");
    let steps: Vec<_> = engine
        .history(run)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.step_index, s.step_name, s.kind, s.status))
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                0,
                "reserve-oven".to_owned(),
                StepKind::Run,
                AttemptStatus::Completed
            ),
            (
                1,
                "kitchen-ready".to_owned(),
                StepKind::WaitForSignal,
                AttemptStatus::Failed
            ),
            (
                2,
                "release-oven".to_owned(),
                StepKind::Run,
                AttemptStatus::Completed
            ),
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn a_deadline_interrupts_a_sleep_that_would_outlast_it(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("slow", |ctx, _: ()| async move {
        ctx.sleep("nap", Duration::from_secs(3600)).await?;
        Ok::<_, WorkflowError>(())
    });
    let engine = Engine::builder(pool).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let options = StartOptions {
        deadline: Some(Duration::from_millis(300)),
        ..StartOptions::default()
    };
    let run = engine.start("slow", &(), options).await.unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.error.unwrap().error_type, "deadline_exceeded");
    assert!(done.deadline_at.is_some());
}

#[sqlx::test(migrations = false)]
async fn starting_twice_with_one_idempotency_key_starts_one_run(pool: PgPool) {
    migrated(&pool).await;
    let engine = Engine::builder(pool).build();
    let options = StartOptions {
        idempotency_key: Some("order-42".into()),
        ..StartOptions::default()
    };
    let a = engine.start("order", &1, options.clone()).await.unwrap();
    let b = engine.start("order", &2, options.clone()).await.unwrap();
    let other = engine.start("refund", &1, options).await.unwrap();
    assert_eq!(a, b);
    assert_ne!(a, other, "keys are unique per workflow name");
    assert_eq!(
        engine.status(a).await.unwrap().input,
        json!(1),
        "the first start's input is kept"
    );
    assert!(matches!(
        engine.status(Uuid::now_v7()).await,
        Err(pizza_workflow::Error::NotFound(_))
    ));
}

#[sqlx::test(migrations = false)]
async fn a_child_workflow_returns_its_output_and_one_that_overruns_its_timeout_is_cancelled(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new()
        .register("parent", |ctx, n: u64| async move {
            let doubled: u64 = ctx.run_workflow("double", &n, Duration::from_secs(30)).await?;
            let slow = ctx
                .run_workflow::<_, ()>("dawdle", &(), Duration::from_millis(200))
                .await;
            let timed_out = matches!(slow, Err(WorkflowError::ChildTimedOut { .. }));
            Ok::<_, WorkflowError>((doubled, timed_out))
        })
        .register("double", |ctx, n: u64| async move {
            ctx.run("multiply", RetryPolicy::default(), |_| async move { Ok(n * 2) })
                .await
        })
        .register("dawdle", |ctx, _: ()| async move {
            ctx.sleep("forever", Duration::from_secs(3600)).await
        });
    let engine = Engine::builder(pool).build();
    let workers = Workers::start(&engine, &workflows, 2, |i| worker_config(&format!("w{i}")));
    let run = engine
        .start(
            "parent",
            &21u64,
            StartOptions {
                labels: Labels::new().with("pizza.order.id", "o-7"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    let history = engine.history(run).await.unwrap();
    let dawdle = history[1].child_run_id.unwrap();
    let child = engine.wait_until_finished(dawdle, WAIT).await.unwrap();
    workers.stop().await;

    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!([42, true])));
    let double = engine.status(history[0].child_run_id.unwrap()).await.unwrap();
    assert_eq!(double.parent_run_id, Some(run));
    assert_eq!(
        double.labels.get("pizza.order.id"),
        Some("o-7"),
        "children inherit the labels"
    );
    assert_eq!(double.idempotency_key, Some(format!("{run}/0")));
    assert_eq!(
        child.status,
        RunStatus::Cancelled,
        "a child that overran its timeout is cancelled"
    );
}

#[sqlx::test(migrations = false)]
async fn a_workflow_that_calls_different_steps_on_replay_fails_loudly(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("fickle", |ctx, _: ()| async move {
        // Branching on anything but step results breaks replay: exactly what this test shows.
        let step = if ctx.execution_number() == 1 { "a" } else { "b" };
        ctx.run(step, RetryPolicy::default(), |_| async { Ok(()) })
            .await?;
        ctx.sleep("pause", Duration::from_secs(60)).await
    });
    // The sleep ends when the test moves the clock, so the first execution always parks, however
    // slow the machine, and the second one replays.
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let engine = Engine::builder(pool).clock(Arc::new(clock.clone())).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine
        .start("fickle", &(), StartOptions::default())
        .await
        .unwrap();
    wait_for_status(&engine, run, RunStatus::Sleeping).await;
    clock.advance(Duration::from_secs(60));
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.status, RunStatus::Failed);
    let error = done.error.unwrap();
    assert_eq!(error.error_type, "non_deterministic");
    assert!(
        error.message.contains("\"a\"") && error.message.contains("\"b\""),
        "{}",
        error.message
    );
}

#[sqlx::test(migrations = false)]
async fn a_panicking_workflow_fails_its_run_instead_of_retrying_forever(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new().register("broken", |ctx, _: ()| async move {
        ctx.run("explode", RetryPolicy::default(), |_| async {
            Ok::<u8, StepError>(1)
        })
        .await?;
        panic!("bug in workflow code");
        #[allow(unreachable_code)] // the panic is the point
        Ok::<_, WorkflowError>(())
    });
    let engine = Engine::builder(pool).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine
        .start("broken", &(), StartOptions::default())
        .await
        .unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.status, RunStatus::Failed);
    let error = done.error.unwrap();
    assert_eq!(
        (error.error_type.as_str(), error.message.as_str()),
        ("panic", "bug in workflow code")
    );
    assert_eq!(done.executions, 1);
}

/// Waits until `run` is parked with `step` in its history.
async fn parked_with(engine: &Engine, run: Uuid, step: &str) {
    eventually(&format!("run {run} parked at {step}"), WAIT, || async {
        let history = engine.history(run).await.unwrap();
        let parked = engine.status(run).await.unwrap().status == RunStatus::Sleeping;
        (parked && history.iter().any(|s| s.step_name == step)).then_some(())
    })
    .await;
}

/// Whether the attempt of `step` in `status` was written by the transaction that last wrote the
/// run's row (its park, or its end): `xmin` is the id of the transaction that wrote a row version.
async fn written_with_run(pool: &PgPool, run: Uuid, step: &str, status: &str) -> bool {
    sqlx::query_scalar(
        "select a.xmin::text = r.xmin::text from workflow.step_attempts a \
         join workflow.runs r on r.id = a.run_id \
         where r.id = $1 and a.step_name = $2 and a.status = $3",
    )
    .bind(run)
    .bind(step)
    .bind(status)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Whether the run's `waiting` attempt of `step` was written by its park.
async fn wait_written_with_park(pool: &PgPool, run: Uuid, step: &str) -> bool {
    written_with_run(pool, run, step, "waiting").await
}

#[sqlx::test(migrations = false)]
async fn a_wait_that_parks_the_run_is_recorded_in_the_parks_own_transaction(pool: PgPool) {
    migrated(&pool).await;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let workflows = Workflows::new()
        .register("parks", |ctx, _: ()| async move {
            let () = ctx.run_workflow("held", &(), Duration::from_secs(3600)).await?;
            let got: Option<String> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
            ctx.sleep("rest", Duration::from_secs(3600)).await?;
            Ok::<_, WorkflowError>(got)
        })
        .register("held", |ctx, _: ()| async move {
            let _: Option<()> = ctx.wait_for_signal("release", Duration::from_secs(3600)).await?;
            Ok::<_, WorkflowError>(())
        });
    let engine = Engine::builder(pool.clone())
        .clock(Arc::new(clock.clone()))
        .build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine.start("parks", &(), StartOptions::default()).await.unwrap();
    let child = eventually("the child started and parked", WAIT, || async {
        let child = engine.history(run).await.unwrap().first()?.child_run_id?;
        (engine.status(child).await.unwrap().status == RunStatus::Sleeping).then_some(child)
    })
    .await;
    assert!(
        wait_written_with_park(&pool, run, "held").await,
        "the child run, its wait's row and the parent's park: one commit"
    );
    engine.signal(child, "release", &(), None).await.unwrap();
    parked_with(&engine, run, "go").await;
    assert!(
        wait_written_with_park(&pool, run, "go").await,
        "the signal wait's row and the park: one commit"
    );
    engine.signal(run, "go", &"now", None).await.unwrap();
    parked_with(&engine, run, "rest").await;
    assert!(
        wait_written_with_park(&pool, run, "rest").await,
        "the sleep's row and the park: one commit"
    );
    clock.advance(Duration::from_secs(3600));
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!("now")));
    let history = engine.history(run).await.unwrap();
    assert!(
        history.iter().all(|s| s.status == AttemptStatus::Completed),
        "both waits closed: {history:?}"
    );
}

/// Whether the completed attempt of `step` was written by the run's park or its end.
async fn step_written_with_run(pool: &PgPool, run: Uuid, step: &str) -> bool {
    written_with_run(pool, run, step, "completed").await
}

#[sqlx::test(migrations = false)]
async fn a_quick_steps_row_is_on_record_before_the_next_step_and_rides_with_the_park_or_the_runs_end(
    pool: PgPool,
) {
    migrated(&pool).await;
    let db = pool.clone();
    let workflows = Workflows::new().register("deferred", move |ctx, _: ()| {
        let db = db.clone();
        async move {
            let first: u32 = ctx
                .run("first", RetryPolicy::no_retry(), |_| async { Ok(1) })
                .await?;
            // The next step's code sees the one before on record: its row waited for this step,
            // which wrote it before running anything.
            let on_record: bool = ctx
                .run("second", RetryPolicy::no_retry(), move |step| async move {
                    sqlx::query_scalar(
                        "select count(*) = 1 from workflow.step_attempts \
                         where run_id = $1 and step_name = 'first' and status = 'completed'",
                    )
                    .bind(step.run_id)
                    .fetch_one(&db)
                    .await
                    .map_err(|e| StepError::permanent("database", e.to_string()))
                })
                .await?;
            let _: Option<()> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
            let last: u32 = ctx
                .run("last", RetryPolicy::no_retry(), |_| async { Ok(3) })
                .await?;
            Ok::<_, WorkflowError>((first, on_record, last))
        }
    });
    let engine = Engine::builder(pool.clone()).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine
        .start("deferred", &(), StartOptions::default())
        .await
        .unwrap();
    wait_for_status(&engine, run, RunStatus::Sleeping).await;
    assert!(
        step_written_with_run(&pool, run, "second").await,
        "the step before the wait, the wait's row and the park: one commit"
    );
    assert!(
        !step_written_with_run(&pool, run, "first").await,
        "the first step's row was written by the second step, before it ran"
    );
    engine.signal(run, "go", &(), None).await.unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!([1, true, 3])));
    assert!(
        step_written_with_run(&pool, run, "last").await,
        "the last step and the run's end: one commit"
    );
    let history = engine.history(run).await.unwrap();
    let steps: Vec<_> = history.iter().map(|s| (s.step_name.as_str(), s.status)).collect();
    assert_eq!(
        steps,
        vec![
            ("first", AttemptStatus::Completed),
            ("second", AttemptStatus::Completed),
            ("go", AttemptStatus::Completed),
            ("last", AttemptStatus::Completed),
        ]
    );
}

/// A transactional step's transaction, and a resolved wait's, commit with the execution's next
/// write (`context::run`, "Held commits"): a park after them is the same commit, and a step after
/// them finds them committed before its code runs.
#[sqlx::test(migrations = false)]
async fn a_transactional_step_and_a_resolved_wait_commit_with_the_park_after_them(pool: PgPool) {
    migrated(&pool).await;
    sqlx::query("create table effects (step text not null)")
        .execute(&pool)
        .await
        .unwrap();
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let db = pool.clone();
    let workflows = Workflows::new().register("held", move |ctx, _: ()| {
        let db = db.clone();
        async move {
            ctx.run_tx("place", RetryPolicy::no_retry(), |_, tx| async move {
                let mut tx = tx
                    .transaction()
                    .await
                    .map_err(|e| StepError::permanent("database", e.to_string()))?;
                sqlx::query("insert into effects (step) values ('place')")
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| StepError::permanent("database", e.to_string()))?;
                Ok(())
            })
            .await?;
            let _: Option<()> = ctx.wait_for_signal("go", Duration::from_secs(3600)).await?;
            ctx.sleep("rest", Duration::from_secs(3600)).await?;
            // Another connection sees what came before: committed before this step's code ran.
            let seen: i64 = ctx
                .run("look", RetryPolicy::no_retry(), move |step| async move {
                    sqlx::query_scalar(
                        "select (select count(*) from effects) + (select count(*) \
                         from workflow.step_attempts where run_id = $1 and status = 'completed')",
                    )
                    .bind(step.run_id)
                    .fetch_one(&db)
                    .await
                    .map_err(|e| StepError::permanent("database", e.to_string()))
                })
                .await?;
            Ok::<_, WorkflowError>(seen)
        }
    });
    let engine = Engine::builder(pool.clone())
        .clock(Arc::new(clock.clone()))
        .build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine.start("held", &(), StartOptions::default()).await.unwrap();
    wait_for_status(&engine, run, RunStatus::Sleeping).await;
    assert!(
        step_written_with_run(&pool, run, "place").await,
        "the transactional step, its record and the park for the signal: one commit"
    );
    let effect_with_park: bool = sqlx::query_scalar(
        "select e.xmin::text = r.xmin::text from effects e, workflow.runs r where r.id = $1",
    )
    .bind(run)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(effect_with_park, "the step's own write went with the park");
    engine.signal(run, "go", &(), None).await.unwrap();
    parked_with(&engine, run, "rest").await;
    assert!(
        written_with_run(&pool, run, "go", "completed").await,
        "the signal taken, the wait's end and the sleep's park: one commit"
    );
    clock.advance(Duration::from_secs(3600));
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        done.output,
        Some(json!(4)),
        "the effect and three completed steps (place, go, rest) were on record for the next step"
    );
}

/// An execution holds one connection of the engine's pool at a time, even when a transactional
/// step outlasts `record_start_after` with its transaction open and its attempt is recorded as
/// running meanwhile: that record goes through the worker's own side connections. So a pool with
/// fewer connections than the worker has slots only queues: here two connections and four slots,
/// every step holding its transaction 300 ms. Recorded on the shared pool, the four executions
/// would wait on each other until the pool's acquire timeout failed their steps.
#[sqlx::test(migrations = false)]
async fn steps_that_outlast_their_record_while_holding_a_transaction_need_one_connection_each(pool: PgPool) {
    migrated(&pool).await;
    sqlx::query("create table effects (run_id uuid not null)")
        .execute(&pool)
        .await
        .unwrap();
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let look = pool.clone();
    let workflows = Workflows::new().register("hold", move |ctx, _: ()| {
        let look = look.clone();
        async move {
            ctx.run_tx("hold", RetryPolicy::no_retry(), |step, tx| async move {
                let database = |e: sqlx::Error| StepError::permanent("database", e.to_string());
                let mut tx = tx.transaction().await.map_err(database)?;
                sqlx::query("insert into effects (run_id) values ($1)")
                    .bind(step.run_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(database)?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                // Seen from outside while the transaction is still open: the running record.
                let recorded: Option<String> = sqlx::query_scalar(
                    "select status from workflow.step_attempts where run_id = $1 and step_name = 'hold'",
                )
                .bind(step.run_id)
                .fetch_optional(&look)
                .await
                .map_err(database)?;
                Ok(recorded)
            })
            .await
        }
    });
    let engine = Engine::builder(small.clone())
        .record_start_after(Duration::from_millis(50))
        .build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(engine.start("hold", &(), StartOptions::default()).await.unwrap());
    }
    for run in runs {
        let done = engine.wait_until_finished(run, WAIT).await.unwrap();
        assert_eq!(
            (done.status, done.output),
            (RunStatus::Completed, Some(json!("running"))),
            "run {run}: recorded as running while its step held its transaction, then completed"
        );
    }
    workers.stop().await;
    let effects: i64 = sqlx::query_scalar("select count(*) from effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(effects, 4, "each step's write once");
    small.close().await;
}

#[sqlx::test(migrations = false)]
async fn a_transactional_steps_failed_attempt_writes_nothing_and_the_retry_writes_once_and_runs_its_after_commit(
    pool: PgPool,
) {
    migrated(&pool).await;
    sqlx::query("create table effects (attempt int not null)")
        .execute(&pool)
        .await
        .unwrap();
    // What each attempt's after-commit saw: its attempt, and its own write in the table.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(u32, i64)>();
    let checker = pool.clone();
    let workflows = Workflows::new().register("ledger", move |ctx, _: ()| {
        let (seen_tx, checker) = (seen_tx.clone(), checker.clone());
        async move {
            let attempt: u32 = ctx
                .run_tx("write", fast_retries(3), |step, tx| async move {
                    let failed = |e: sqlx::Error| StepError::retryable("database", e.to_string());
                    let mut db = tx.transaction().await.map_err(failed)?;
                    sqlx::query("insert into effects (attempt) values ($1)")
                        .bind(step.attempt as i32)
                        .execute(&mut **db)
                        .await
                        .map_err(failed)?;
                    let attempt = step.attempt;
                    tx.after_commit(move || {
                        // Another connection looks at once: the commit is done, the write visible.
                        tokio::spawn(async move {
                            let visible = sqlx::query_scalar::<_, i64>(
                                "select count(*) from effects where attempt = $1",
                            )
                            .bind(attempt as i32)
                            .fetch_one(&checker)
                            .await
                            .unwrap_or(-1);
                            let _ = seen_tx.send((attempt, visible));
                        });
                    });
                    if step.attempt == 1 {
                        return Err(StepError::retryable(
                            "flaky",
                            "the first attempt fails after its write",
                        ));
                    }
                    Ok(step.attempt)
                })
                .await?;
            Ok::<_, WorkflowError>(attempt)
        }
    });
    let engine = Engine::builder(pool.clone()).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine
        .start("ledger", &(), StartOptions::default())
        .await
        .unwrap();
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!(2)));
    let written: Vec<i32> = sqlx::query_scalar("select attempt from effects")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(written, vec![2], "the failed attempt's write was rolled back");
    let mut after = vec![tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap()];
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(call) = seen.try_recv() {
        after.push(call);
    }
    assert_eq!(
        after,
        vec![(2, 1)],
        "after the commit of the attempt that committed only, its write visible to another connection"
    );
    let statuses: Vec<AttemptStatus> = engine
        .history(run)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.status)
        .collect();
    assert_eq!(statuses, vec![AttemptStatus::Failed, AttemptStatus::Completed]);
}

#[sqlx::test(migrations = false)]
async fn time_is_injected_so_an_hour_long_sleep_ends_when_the_clock_is_moved(pool: PgPool) {
    migrated(&pool).await;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let workflows = Workflows::new().register("nap", |ctx, _: ()| async move {
        ctx.sleep("an-hour", Duration::from_secs(3600)).await?;
        Ok::<_, WorkflowError>("rested")
    });
    let engine = Engine::builder(pool).clock(Arc::new(clock.clone())).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    let run = engine.start("nap", &(), StartOptions::default()).await.unwrap();
    wait_for_status(&engine, run, RunStatus::Sleeping).await;
    let parked = engine.status(run).await.unwrap();
    assert_eq!(
        parked.available_at - parked.created_at,
        time::Duration::hours(1),
        "the row is the timer"
    );
    clock.advance(Duration::from_secs(3600));
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!("rested")));
    assert_eq!(
        done.finished_at.unwrap() - done.created_at,
        time::Duration::hours(1)
    );
}

#[sqlx::test(migrations = false)]
async fn four_workers_complete_two_hundred_runs_each_exactly_once(pool: PgPool) {
    migrated(&pool).await;
    sqlx::query("create table effects (idempotency_key text primary key, applied integer not null)")
        .execute(&pool)
        .await
        .unwrap();
    let effects = pool.clone();
    let workflows = Workflows::new().register("three", move |ctx, n: u64| {
        let effects = effects.clone();
        async move {
            let a: u64 = ctx
                .run("one", RetryPolicy::default(), |_| async move { Ok(n + 1) })
                .await?;
            let b: u64 = ctx
                .run("two", RetryPolicy::default(), |_| async move { Ok(a + 1) })
                .await?;
            ctx.run("three", RetryPolicy::default(), |step| async move {
                sqlx::query(
                    "insert into effects values ($1, 1) \
                     on conflict (idempotency_key) do update set applied = effects.applied + 1",
                )
                .bind(&step.idempotency_key)
                .execute(&effects)
                .await
                .map_err(|e| StepError::retryable("database", e.to_string()))?;
                Ok(b + 1)
            })
            .await
        }
    });
    let engine = Engine::builder(pool.clone()).build();
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    for n in 0..200u64 {
        runs.push(engine.start("three", &n, StartOptions::default()).await.unwrap());
    }
    let workers = Workers::start(&engine, &workflows, 4, |i| worker_config(&format!("w{i}")));
    for (n, run) in runs.iter().enumerate() {
        let done = engine
            .wait_until_finished(*run, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(done.status, RunStatus::Completed);
        assert_eq!(done.output, Some(json!(n as u64 + 3)));
    }
    workers.stop().await;
    println!("200 runs, 4 workers: {:?}", started.elapsed());

    let completed_steps: i64 =
        sqlx::query_scalar("select count(*) from workflow.step_attempts where status = 'completed'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(completed_steps, 600, "three steps per run, each completed once");
    let (effects, applied): (i64, i64) =
        sqlx::query_as("select count(*), coalesce(sum(applied), 0)::bigint from effects")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (effects, applied),
        (200, 200),
        "every run's effect applied exactly once"
    );
    let terminal: i64 = sqlx::query_scalar("select count(*) from workflow.runs where status = 'completed'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(terminal, 200);
}

#[sqlx::test(migrations = false)]
async fn metrics_count_step_attempts_by_outcome_and_record_run_duration_queue_lag_and_active_runs(
    pool: PgPool,
) {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    migrated(&pool).await;
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let metrics = Metrics::new(&provider.meter("pizza-workflow-test"));
    let workflows = Workflows::new().register("flaky", |ctx, _: ()| async move {
        ctx.run("charge", fast_retries(3), |step| async move {
            if step.attempt == 1 {
                Err(StepError::retryable("http_503", "busy"))
            } else {
                Ok(())
            }
        })
        .await
    });
    let engine = Engine::builder(pool).metrics(metrics).build();
    let run = engine.start("flaky", &(), StartOptions::default()).await.unwrap();
    let workers = Workers::start(&engine, &workflows, 1, |_| worker_config("w"));
    engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    provider.force_flush().unwrap();

    let exported = exporter.get_finished_metrics().unwrap();
    let metrics: Vec<_> = exported
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .collect();
    let find = |name: &str| {
        metrics
            .iter()
            .rev()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let AggregatedMetrics::U64(MetricData::Sum(attempts)) = find("workflow.step.attempts").data() else {
        panic!("workflow.step.attempts is a u64 counter")
    };
    let mut by_outcome: Vec<(String, u64)> = attempts
        .data_points()
        .map(|p| {
            let outcome = p
                .attributes()
                .find(|kv| kv.key.as_str() == "pizza.outcome")
                .unwrap()
                .value
                .to_string();
            (outcome, p.value())
        })
        .collect();
    by_outcome.sort();
    assert_eq!(by_outcome, vec![("ok".to_owned(), 1), ("retry".to_owned(), 1)]);
    let AggregatedMetrics::F64(MetricData::Histogram(duration)) = find("workflow.run.duration").data() else {
        panic!("workflow.run.duration is a histogram")
    };
    assert_eq!(duration.data_points().map(|p| p.count()).sum::<u64>(), 1);
    let AggregatedMetrics::F64(MetricData::Histogram(lag)) = find("workflow.queue.lag").data() else {
        panic!("workflow.queue.lag is a histogram")
    };
    assert_eq!(
        lag.data_points().map(|p| p.count()).sum::<u64>(),
        2,
        "two claims: the first try and the retry"
    );
    assert!(matches!(
        find("workflow.active_runs").data(),
        AggregatedMetrics::I64(MetricData::Gauge(_))
    ));
}

#[sqlx::test(migrations = false)]
async fn signals_sent_together_are_answered_stored_and_woken_as_if_sent_one_by_one(pool: PgPool) {
    migrated(&pool).await;
    let workflows = Workflows::new()
        .register("collect", |ctx, _: ()| async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                let item: Option<String> = ctx.wait_for_signal("item", Duration::from_secs(3600)).await?;
                got.extend(item);
            }
            Ok::<_, WorkflowError>(got)
        })
        .register("quick", |_ctx, _: ()| async move { Ok::<_, WorkflowError>(()) });
    // Only the commit's notification (or a due time an hour away) moves this worker.
    let engine = Engine::builder(pool.clone()).build();
    let workers = Workers::start(&engine, &workflows, 1, |_| WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        ..worker_config("batch")
    });
    let run = engine
        .start("collect", &(), StartOptions::default())
        .await
        .unwrap();
    let ended = engine.start("quick", &(), StartOptions::default()).await.unwrap();
    engine.wait_until_finished(ended, WAIT).await.unwrap();
    until_waiting(&engine, run, "item").await;
    let missing = Uuid::now_v7();

    let parent = tracing::Span::none();
    let signal = |run_id, payload, key| Signal {
        run_id,
        name: "item",
        payload,
        idempotency_key: key,
        parent: &parent,
    };
    let (one, two, again, three, late) = (
        "one".to_owned(),
        "two".to_owned(),
        "again".to_owned(),
        "three".to_owned(),
        "late".to_owned(),
    );
    let signals = [
        signal(run, &one, Some("k1")),
        signal(ended, &late, Some("k1")),
        signal(run, &two, Some("k2")),
        signal(missing, &late, None),
        signal(run, &again, Some("k1")),
        signal(run, &three, None),
    ];
    let mut tx = pool.begin().await.unwrap();
    let answers = engine.signal_all_in(&mut tx, &signals).await.unwrap();
    let answers: Vec<String> = answers
        .into_iter()
        .map(|a| match a {
            Ok(stored) => format!("stored {stored}"),
            Err(pizza_workflow::Error::RunFinished(r)) if r == ended => "finished".to_owned(),
            Err(pizza_workflow::Error::NotFound(r)) if r == missing => "missing".to_owned(),
            Err(other) => format!("{other}"),
        })
        .collect();
    assert_eq!(
        answers,
        [
            "stored true",
            "finished",
            "stored true",
            "missing",
            "stored false",
            "stored true"
        ]
    );
    // Nothing is stored, and nobody woken, before the caller's commit.
    let mut other = pool.acquire().await.unwrap();
    let visible: i64 = sqlx::query_scalar("select count(*) from workflow.signals where run_id = $1")
        .bind(run)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert_eq!(visible, 0);
    tx.commit().await.unwrap();
    // One wake for the run, by the notification at the commit; the signals in the slice's order.
    let done = engine.wait_until_finished(run, WAIT).await.unwrap();
    workers.stop().await;
    assert_eq!(done.output, Some(json!(["one", "two", "three"])));
}
