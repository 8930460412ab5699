//! Short scenario runs on the real stack: the services as real processes (a shop of the test's own:
//! fresh database, own topics and consumer groups, a private broker where Kafka is stopped), real
//! Kafka, PostgreSQL, Collector and Jaeger.
//!
//! The runs share one machine with the rest of the suite, so they run one after another (a lock),
//! and each takes about a minute: arrivals, the wait for terminal states, reading every order's
//! traces back from Jaeger.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pizza_load::faults::Platform;
use pizza_load::managed::{ManagedOptions, ManagedStack};
use pizza_load::{RunOptions, RunResult, Scenario};

/// One scenario at a time: three shops at once would measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(name: &str, duration: Duration) -> RunResult {
    let _serial = SERIAL.lock().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut scenario = Scenario::load(&dir, name).unwrap();
    scenario.duration = duration;
    let mut options = ManagedOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_pizza-load")));
    options.private_broker = scenario.faults.iter().any(|f| f.target == "kafka");
    let stack = Arc::new(ManagedStack::start(options).await.unwrap());
    let target = stack.target();
    let platform = Platform::Managed(stack.clone());
    let run_options = RunOptions {
        max_in_flight: 256,
        request_timeout: Duration::from_secs(10),
        settle_timeout: Duration::from_secs(120),
        trace_patience: Duration::from_secs(60),
        read_traces: true,
        platform_name: "managed".into(),
        topology: "continuous".into(),
        sdk_disabled: false,
        quiet: false,
    };
    let mut result = pizza_load::run(&scenario, &target, &platform, &run_options).await;
    drop(platform);
    let stack = Arc::try_unwrap(stack).unwrap();
    let logs = stack.log_dir().to_path_buf();
    result.report.span_stats = stack.shutdown().await.unwrap();
    let out = logs.join("report");
    result.write(&out).unwrap();
    eprintln!(
        "{}\nreport and service logs: {}",
        result.report.markdown("report.svg"),
        logs.display()
    );
    result
}

fn assert_no_order_lost_or_doubled(r: &RunResult) {
    let rep = &r.report;
    assert!(
        rep.arrivals.accepted > 0,
        "no order was accepted: {:?}",
        rep.arrivals
    );
    assert_eq!(rep.orders.lost, Vec::<uuid::Uuid>::new(), "lost orders");
    assert_eq!(rep.orders.duplicated_side_effects, 0, "{:?}", rep.orders.checks);
    for check in &rep.orders.checks {
        assert_eq!(check.error, None, "check {} could not run", check.check);
    }
    assert_eq!(
        rep.orders.by_status.get("completed").copied(),
        Some(rep.orders.accepted)
    );
    assert!(rep.orders.completed_without_effects.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baseline_loses_nothing_and_every_order_has_one_complete_continuous_trace() {
    let r = run("baseline", Duration::from_secs(30)).await;
    assert_no_order_lost_or_doubled(&r);
    let rep = &r.report;
    assert_eq!(
        rep.arrivals.accepted, rep.arrivals.scheduled,
        "{:?}",
        rep.arrivals
    );
    let t = rep.traces.as_ref().unwrap();
    assert_eq!(t.orders, rep.orders.accepted);
    assert_eq!(t.complete, t.orders, "missing spans: {:?}", t.missing);
    assert_eq!((t.continuous, t.linked), (t.orders, t.orders));
    assert_eq!((t.fragmented, t.with_orphans), (0, 0));
    assert!(rep.checks.iter().all(|c| c.ok), "{:?}", rep.checks);
    // The terminal tree of one order is one piece.
    let tree = order_tree(&r).await;
    assert!(tree.lines().next().unwrap().contains(", 1 piece(s)"), "{tree}");
}

/// `pizza-load trace` for the first order of a run.
async fn order_tree(r: &RunResult) -> String {
    let jaeger = pizza_testkit::Jaeger::new(pizza_testkit::Stack::from_env().jaeger_url);
    let spans = pizza_load::tree::gather(&jaeger, r.states[0].order_id, 50)
        .await
        .unwrap();
    pizza_load::tree::render(&spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_20_second_kafka_outage_loses_nothing_and_leaves_every_trace_complete() {
    let r = run("kafka-outage", Duration::from_secs(40)).await;
    assert_no_order_lost_or_doubled(&r);
    let rep = &r.report;
    let applied: Vec<&str> = rep.faults.iter().map(|f| f.what.as_str()).collect();
    assert_eq!(
        applied,
        ["apply stop kafka", "undo stop kafka"],
        "{:?}",
        rep.faults
    );
    assert!(rep.faults.iter().all(|f| f.error.is_none()), "{:?}", rep.faults);
    let t = rep.traces.as_ref().unwrap();
    assert_eq!(t.complete, t.orders, "missing spans: {:?}", t.missing);
    assert_eq!(t.fragmented, 0);
    // The outage is visible: orders accepted during it waited for the broker.
    assert!(rep.end_to_end_ms.max > 5_000.0, "{:?}", rep.end_to_end_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_trace_context_on_kitchen_events_is_detected_as_fragmentation() {
    let r = run("broken-propagation", Duration::from_secs(20)).await;
    assert_no_order_lost_or_doubled(&r);
    let t = r.report.traces.as_ref().unwrap();
    assert!(t.orders > 0);
    // Every order falls apart, and the figures say how.
    assert_eq!(t.fragmented, t.orders, "{t:?}");
    assert!(t.max_fragments >= 2);
    assert_eq!(t.continuous, 0);
    assert_eq!(
        t.linked, 0,
        "the consumer spans of kitchen.events have nothing to link to"
    );
    for o in &r.traces {
        assert!(o.unlinked >= 1 && o.traces >= 2, "{o:?}");
    }
    // The tree shows the pieces: the order's root and the consumer spans that lost their parent.
    let tree = order_tree(&r).await;
    let roots: Vec<&str> = tree.lines().filter(|l| l.starts_with('●')).collect();
    assert!(roots.len() >= 2, "{tree}");
    assert!(
        roots.iter().any(|l| l.contains("process kitchen.events")),
        "{tree}"
    );
    assert!(r.report.checks.iter().all(|c| c.ok), "{:?}", r.report.checks);
}
