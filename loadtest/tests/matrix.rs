//! The trace-integrity matrix on the real stack: every scenario, each run by three shops side by
//! side (continuous, linked, linked with the link-aware sampler at 10%) under the same fault, the
//! services as real processes, a private Collector (and a private broker where Kafka is stopped)
//! forwarding to the real Jaeger. Every expectation of every scenario must hold, in every variant.
//!
//! One test runs the whole matrix (about ten minutes): the scenarios share one machine and must not
//! measure each other, so they run one after another, and the matrix report is written once, to
//! `target/loadtest-logs/matrix-<id>/matrix.md`, for the README. The scenario-specific assertions
//! below are the ones the single-scenario tests made before the matrix (baseline, kafka-outage,
//! broken-propagation), plus the Collector outage's bound and the crash's.

use std::path::PathBuf;
use std::time::Duration;

use pizza_load::Scenario;
use pizza_load::matrix::{MatrixOptions, MatrixReport, MatrixRun, run_matrix, scenario_names};

fn runs<'a>(m: &'a MatrixReport, scenario: &str) -> Vec<&'a MatrixRun> {
    m.runs.iter().filter(|r| r.scenario == scenario).collect()
}

fn continuous<'a>(m: &'a MatrixReport, scenario: &str) -> &'a MatrixRun {
    runs(m, scenario)
        .into_iter()
        .find(|r| r.variant == "continuous")
        .unwrap_or_else(|| panic!("no continuous run of {scenario}"))
}

/// `pizza-load trace` for the first order of a run.
async fn order_tree(r: &MatrixRun) -> String {
    let jaeger = pizza_testkit::Jaeger::new(pizza_testkit::Stack::from_env().jaeger_url);
    let spans = pizza_load::tree::gather(&jaeger, r.states[0].order_id, 50)
        .await
        .unwrap();
    pizza_load::tree::render(&spans)
}

fn assert_no_order_lost_or_doubled(r: &MatrixRun) {
    let rep = &r.report;
    let what = format!("{} / {}", r.scenario, r.variant);
    assert!(
        rep.arrivals.accepted > 0,
        "{what}: no order was accepted: {:?}",
        rep.arrivals
    );
    assert_eq!(rep.orders.lost, Vec::<uuid::Uuid>::new(), "{what}: lost orders");
    assert_eq!(
        rep.orders.duplicated_side_effects, 0,
        "{what}: {:?}",
        rep.orders.checks
    );
    for check in &rep.orders.checks {
        assert_eq!(check.error, None, "{what}: check {} could not run", check.check);
    }
    assert!(rep.orders.completed_without_effects.is_empty(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_in_every_variant_meets_its_expectations() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_pizza-load"));
    let names = scenario_names(&dir).unwrap();
    assert_eq!(names.len(), 10, "{names:?}");
    let out = exe
        .parent()
        .unwrap()
        .join("loadtest-logs")
        .join(format!("matrix-{}", uuid::Uuid::new_v4().simple()));
    let options = MatrixOptions {
        scenarios: names.iter().map(|n| Scenario::load(&dir, n).unwrap()).collect(),
        rate: 2.0,
        duration: Duration::from_secs(30),
        out: out.clone(),
        quiet: false,
    };
    let m = run_matrix(&options).await.unwrap();
    eprintln!(
        "{}\nmatrix and every run's report: {}",
        m.markdown(),
        out.display()
    );
    assert_eq!(
        m.runs.len(),
        names.len() * 3,
        "every scenario, three variants each"
    );

    // Every expectation of every scenario, in every variant.
    for r in &m.runs {
        assert_no_order_lost_or_doubled(r);
        let failed: Vec<_> = r.report.checks.iter().filter(|c| !c.ok).collect();
        assert!(failed.is_empty(), "{} / {}: {failed:?}", r.scenario, r.variant);
    }

    // Baseline: every order accepted, one complete trace each, continuous in `continuous`.
    let base = continuous(&m, "baseline");
    let rep = &base.report;
    assert_eq!(
        rep.arrivals.accepted, rep.arrivals.scheduled,
        "{:?}",
        rep.arrivals
    );
    assert_eq!(
        rep.orders.by_status.get("completed").copied(),
        Some(rep.orders.accepted)
    );
    let t = rep.traces.as_ref().unwrap();
    assert_eq!(t.orders, rep.orders.accepted);
    assert_eq!(t.complete, t.orders, "missing spans: {:?}", t.missing);
    assert_eq!((t.continuous, t.linked), (t.orders, t.orders));
    assert_eq!((t.fragmented, t.with_orphans), (0, 0));
    let tree = order_tree(base).await;
    assert!(tree.lines().next().unwrap().contains(", 1 piece(s)"), "{tree}");

    // Kafka outage: the broker really stopped and came back; every trace complete; orders waited.
    let kafka = continuous(&m, "kafka-outage");
    let rep = &kafka.report;
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
    assert!(rep.end_to_end_ms.max > 5_000.0, "{:?}", rep.end_to_end_ms);

    // Broken propagation: every order falls apart, and the figures and the tree say how.
    let broken = continuous(&m, "broken-propagation");
    let t = broken.report.traces.as_ref().unwrap();
    assert!(t.orders > 0);
    assert_eq!(t.fragmented, t.orders, "{t:?}");
    assert!(t.max_fragments >= 2);
    assert_eq!(t.continuous, 0);
    assert_eq!(
        t.linked, 0,
        "the consumer spans of kitchen.events have nothing to link to"
    );
    for o in &broken.traces {
        assert!(o.unlinked >= 1 && o.traces >= 2, "{o:?}");
    }
    let tree = order_tree(broken).await;
    let roots: Vec<&str> = tree.lines().filter(|l| l.starts_with('●')).collect();
    assert!(roots.len() >= 2, "{tree}");
    assert!(
        roots.iter().any(|l| l.contains("process kitchen.events")),
        "{tree}"
    );

    // The Collector outage's bound: stopped for 20 s at 2 orders/s in each of three shops, no span
    // lost anywhere, every trace complete, and the SDKs did hold and retry.
    for r in runs(&m, "collector-down") {
        let rep = &r.report;
        let applied: Vec<&str> = rep.faults.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(
            applied,
            ["apply stop collector", "undo stop collector"],
            "{:?}",
            rep.faults
        );
        assert_eq!(
            rep.spans_dropped(),
            0,
            "{} {:?} {:?}",
            r.variant,
            rep.span_stats,
            rep.collector
        );
        let t = rep.traces.as_ref().unwrap();
        assert_eq!(t.complete, t.orders, "{}: missing {:?}", r.variant, t.missing);
        let retries: u64 = rep
            .span_stats
            .values()
            .map(|v| v["retries"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            retries > 0,
            "{}: the outage was never felt: {:?}",
            r.variant,
            rep.span_stats
        );
    }

    // A crash: whatever is incomplete is what the killed process held, and the report names it.
    for r in runs(&m, "order-crash") {
        let k = &r.report.killed;
        assert_eq!(k.kills.len(), 1, "{:?}", r.report.faults);
        assert_eq!(k.unexplained, 0, "{}: {k:?}", r.variant);
        assert!(k.missing_spans.keys().all(|s| s == "order"), "{k:?}");
    }

    // The sampled variant kept some orders, and judged only those.
    for r in m.runs.iter().filter(|r| r.report.sampled.is_some()) {
        let t = r.report.traces.as_ref().unwrap();
        assert_eq!(t.orders + t.not_kept, r.report.orders.accepted, "{}", r.scenario);
    }
}
