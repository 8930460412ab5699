//! `docker compose up`, run for real: the shop in containers, end to end, on the images the compose
//! file names (the upstream ones, or deploy/standins' local builds of them where no registry answers).
//!
//! One test in steps, because every step needs the stack the first one starts, and starting it takes
//! minutes:
//!
//! 1. `docker compose -f deploy/docker-compose.yml up --build --wait`, with host ports of its own (the
//!    compose file's `PIZZA_*_PORT` variables), so it never meets the native stack, which holds 16686,
//!    4317 and 4318 while `make test` runs, and an admin token of its own (`PIZZA_ADMIN_TOKEN`: the
//!    compose file has none, so the fault admin API would be off);
//! 2. every long-running container runs and is healthy, with the memory limit the compose file gives
//!    it, and the limits add up to less than 1.5 GiB;
//! 3. an order placed on the shop's published port completes, and its trace, read from Jaeger's
//!    published port, is one continuous trace holding every expected span of order, kitchen, delivery
//!    and the workflow (`loadtest/expected-spans.yaml`);
//! 4. the faults panel's proxy on the shop's port reaches the admin API of order, kitchen and delivery
//!    with that token and none without it (the three share the token compose gave them);
//! 5. Prometheus, on its published port, answers a span-metrics query for the order service: what
//!    Jaeger's Monitor tab shows;
//! 6. `pizza-load`'s `order-crash` on the compose platform (a real `docker compose kill -s SIGKILL
//!    order`, then `docker compose start order`) loses no accepted order and repeats no side effect;
//! 7. every container's peak memory under that load, from its memory cgroup, stays under its limit;
//! 8. `docker compose down -v` leaves no container, network or volume of the project behind.
//!
//! A failing step prints the logs of the services it depends on, then the stack is taken down. The
//! test is built only with the feature `compose-e2e`, since it needs a Docker engine; `make test` runs
//! it (deploy/local/test.sh). By hand:
//!
//! ```sh
//! deploy/local/docker.sh up && eval "$(deploy/local/docker.sh env)" && deploy/local/docker.sh images
//! cargo test -p pizza-deploy-checks --features compose-e2e --test compose_up -- --nocapture
//! ```

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use pizza_load::driver;
use pizza_load::faults::Platform;
use pizza_load::progress::Progress;
use pizza_load::{RunOptions, Scenario, Target};
use serde_json::Value;
use support::model::Compose;
use support::*;
use tokio::process::Command;

/// The compose project: the compose file's own `name`, so the load tester's `docker compose kill`
/// and `start` (which know only the file) act on this very stack.
const PROJECT: &str = "pizza";

/// The README's footprint statement for the default profile: 1.5 GiB.
const FOOTPRINT_BYTES: u64 = 1536 * 1024 * 1024;

/// The services with a published port, and the variable that moves it.
const PORT_VARS: &[(&str, &str)] = &[
    ("shop", "PIZZA_SHOP_PORT"),
    ("jaeger", "PIZZA_JAEGER_PORT"),
    ("prometheus", "PIZZA_PROMETHEUS_PORT"),
    ("otlp-grpc", "PIZZA_OTLP_GRPC_PORT"),
    ("otlp-http", "PIZZA_OTLP_HTTP_PORT"),
    ("postgres", "PIZZA_POSTGRES_PORT"),
];

/// The stack under test: the compose file, the environment its commands run with, the host ports,
/// the admin token.
struct Stack {
    file: PathBuf,
    env: Vec<(String, String)>,
    admin_token: String,
    ports: BTreeMap<&'static str, u16>,
    down: bool,
}

impl Stack {
    fn new() -> Self {
        let mut ports = BTreeMap::new();
        let mut env = Vec::new();
        for (name, var) in PORT_VARS {
            // Free now and outside the kernel's ephemeral range, so no client's connection takes it
            // before compose binds it.
            let port = pizza_testkit::ports::free_port().expect("a free port on 127.0.0.1");
            ports.insert(*name, port);
            env.push(((*var).to_owned(), port.to_string()));
        }
        // The compose file has no default token (the admin API is off without one): like an operator,
        // the test brings a random one of its own, long enough for a service beyond loopback.
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        env.push(("PIZZA_ADMIN_TOKEN".to_owned(), admin_token.clone()));
        Self {
            file: root().join("deploy/docker-compose.yml"),
            env,
            admin_token,
            ports,
            down: false,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[name])
    }

    fn compose(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("compose")
            .arg("-f")
            .arg(&self.file)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        command
    }

    /// `docker compose ARGS`, its stdout; an error with its stderr when it fails.
    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .compose()
            .args(args)
            .output()
            .await
            .with_context(|| format!("running docker compose {args:?} (is docker installed?)"))?;
        if !out.status.success() {
            bail!(
                "docker compose {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of each service's log, for a failure message.
    async fn logs(&self, services: &[&str]) -> String {
        let mut text = String::new();
        for service in services {
            let log = self
                .run(&["logs", "--no-color", "--timestamps", "--tail", "150", service])
                .await
                .unwrap_or_else(|e| format!("(no logs: {e:#})"));
            text.push_str(&format!(
                "\n===== docker compose logs {service} (last 150 lines) =====\n{log}"
            ));
        }
        text
    }

    /// Runs one step; when it fails, panics with the error and the logs of `services`.
    async fn step<T>(
        &self,
        what: &str,
        services: &[&str],
        step: impl Future<Output = anyhow::Result<T>>,
    ) -> T {
        let started = Instant::now();
        eprintln!("compose: {what} ...");
        match step.await {
            Ok(value) => {
                eprintln!("compose: {what}: ok ({:.0} s)", started.elapsed().as_secs_f64());
                value
            }
            Err(e) => panic!("compose: {what}: {e:#}\n{}", self.logs(services).await),
        }
    }

    /// The container id of a service.
    async fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.run(&["ps", "-a", "-q", service]).await?;
        let id = id.trim();
        ensure!(!id.is_empty(), "no container for {service}");
        Ok(id.to_owned())
    }

    /// `docker compose down -v` and what the project leaves behind.
    async fn take_down(&mut self) -> anyhow::Result<()> {
        // The volumes the containers use, named or anonymous (images' VOLUMEs: PostgreSQL's data,
        // Kafka's log dirs), which carry no project label to find them by afterwards.
        let mut volumes = Vec::new();
        for id in self.run(&["ps", "-a", "-q"]).await?.split_whitespace() {
            let c = inspect(id).await?;
            for m in c["Mounts"].as_array().into_iter().flatten() {
                if m["Type"] == "volume" {
                    volumes.push(scalar(&m["Name"]));
                }
            }
        }
        ensure!(
            !volumes.is_empty(),
            "the project's containers use no volume (PostgreSQL's data is one)"
        );
        self.down = true;
        self.run(&["down", "-v", "--remove-orphans", "--timeout", "20"])
            .await?;
        let mut left = Vec::new();
        for volume in &volumes {
            let out = Command::new("docker")
                .args(["volume", "inspect", volume])
                .output()
                .await?;
            if out.status.success() {
                left.push(format!("volume {volume}"));
            }
        }
        for kind in ["container", "network", "volume"] {
            let mut command = Command::new("docker");
            command.arg(kind).arg("ls").arg("-q");
            if kind == "container" {
                command.arg("-a");
            }
            let out = command
                .args(["--filter", &format!("label=com.docker.compose.project={PROJECT}")])
                .output()
                .await?;
            let ids = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !ids.is_empty() {
                left.push(format!("{kind}s: {}", ids.replace('\n', " ")));
            }
        }
        ensure!(left.is_empty(), "down -v left behind {}", left.join("; "));
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.down {
            // A failed step: take the stack down all the same, so the next run starts clean.
            let _ = std::process::Command::new("docker")
                .arg("compose")
                .arg("-f")
                .arg(&self.file)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .args(["down", "-v", "--remove-orphans", "--timeout", "10"])
                .status();
        }
    }
}

/// The compose file's services as the test needs them: which run for good, and their memory limits.
fn long_running(compose: &Compose) -> BTreeMap<String, u64> {
    compose
        .services
        .iter()
        .filter(|(_, s)| s.profiles.is_empty() && !s.one_shot())
        .map(|(name, s)| {
            let limit = s.mem_limit.clone().unwrap_or_default();
            let mib: u64 = limit
                .strip_suffix('m')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: mem_limit {limit:?} is not in m"));
            (name.clone(), mib * 1024 * 1024)
        })
        .collect()
}

async fn inspect(id: &str) -> anyhow::Result<Value> {
    let out = Command::new("docker").args(["inspect", id]).output().await?;
    ensure!(
        out.status.success(),
        "docker inspect {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout)?;
    Ok(all[0].clone())
}

/// Every long-running container runs and is healthy, with its limit from the compose file.
async fn healthy(stack: &Stack, services: &BTreeMap<String, u64>) -> anyhow::Result<u64> {
    let mut sum = 0;
    for (service, limit) in services {
        let c = inspect(&stack.container(service).await?).await?;
        let state = scalar(&c["State"]["Status"]);
        let health = scalar(&c["State"]["Health"]["Status"]);
        ensure!(
            state == "running" && health == "healthy",
            "{service}: {state}, health {health:?}"
        );
        let memory = c["HostConfig"]["Memory"].as_u64().unwrap_or(0);
        ensure!(
            memory == *limit,
            "{service}: runs with a memory limit of {memory} bytes, the file says {limit}"
        );
        sum += memory;
    }
    let init = inspect(&stack.container("kafka-init").await?).await?;
    ensure!(
        init["State"]["Status"] == "exited" && init["State"]["ExitCode"] == 0,
        "kafka-init: {} (exit {})",
        init["State"]["Status"],
        init["State"]["ExitCode"]
    );
    ensure!(sum < FOOTPRINT_BYTES, "the limits add up to {} MiB", sum >> 20);
    Ok(sum)
}

fn target(stack: &Stack) -> Target {
    Target {
        order_url: stack.url("shop"),
        // Reached from inside the compose network only; order-crash sets no fault plan on them.
        kitchen_url: "http://kitchen:8081".into(),
        delivery_url: "http://delivery:8082".into(),
        admin_token: Some(stack.admin_token.clone()),
        database_url: format!(
            "postgres://pizza:pizza@127.0.0.1:{}/pizza",
            stack.ports["postgres"]
        ),
        kafka_bootstrap: "kafka:9092".into(),
        jaeger_url: stack.url("jaeger"),
        topics: Target::default_topics(),
    }
}

/// One order through the shop, then its trace in Jaeger.
async fn one_order(stack: &Stack) -> anyhow::Result<()> {
    let target = target(stack);
    let client = driver::http_client(Duration::from_secs(10));
    let response = client
        .post(format!("{}/orders", target.order_url))
        .json(&driver::order_body(0))
        .send()
        .await?;
    ensure!(
        response.status() == 202,
        "POST /orders answered {}",
        response.status()
    );
    let body: Value = response.json().await?;
    let id: uuid::Uuid = scalar(&body["order_id"]).parse().context("an order_id")?;
    let progress = Progress::new("compose", 1, true);
    let state = driver::settle(&target, &[id], Duration::from_secs(180), &progress)
        .await
        .states;
    ensure!(state[0].status == "completed", "order {id} ended {:?}", state[0]);
    // No trace id: the order is searched for in every service, so a span of it in any other
    // trace counts against the continuity asserted below (read by id, a whole trace would end it).
    let order = pizza_load::traces::ToRead {
        order_id: id,
        status: "completed".into(),
        trace_id: None,
    };
    let verdict =
        pizza_load::traces::collect(&target, &[order], Duration::from_secs(60), false, &progress).await;
    let v = &verdict[0];
    eprintln!(
        "compose: order {id}: {} spans in {} trace(s), missing {:?}",
        v.spans, v.traces, v.missing
    );
    ensure!(v.complete, "the trace lacks expected spans: {:?}", v.missing);
    ensure!(
        v.continuous && v.traces == 1,
        "the order's spans are in {} traces",
        v.traces
    );
    ensure!(
        v.orphans == 0,
        "{} spans have a parent that is not in the trace",
        v.orphans
    );
    Ok(())
}

/// The faults panel's proxy reaches each service's admin API with the stack's token and none without
/// it: compose gave the three services the same token.
async fn admin_api(stack: &Stack) -> anyhow::Result<()> {
    let client = driver::http_client(Duration::from_secs(10));
    for service in ["order", "kitchen", "delivery"] {
        let url = format!("{}/admin/services/{service}/faults", stack.url("shop"));
        let with = client
            .get(&url)
            .bearer_auth(&stack.admin_token)
            .send()
            .await?
            .status();
        ensure!(with == 200, "GET {url} with the token answered {with}");
        let without = client.get(&url).send().await?.status();
        ensure!(without == 401, "GET {url} without a token answered {without}");
    }
    Ok(())
}

/// Prometheus has the Collector's span metrics for the order service.
async fn span_metrics(stack: &Stack) -> anyhow::Result<f64> {
    let client = driver::http_client(Duration::from_secs(10));
    let query = "sum(traces_span_metrics_calls_total{service_name=\"order\"})";
    // The Collector flushes span metrics every 15 s and Prometheus scrapes every 15 s.
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query", stack.url("prometheus")),
        [("query", query)],
    )?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let body: Value = client.get(url.clone()).send().await?.json().await?;
        ensure!(body["status"] == "success", "{query}: {body}");
        let value = body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        match value {
            Some(calls) if calls > 0.0 => return Ok(calls),
            _ if Instant::now() > deadline => bail!("{query} has no samples after 90 s: {body}"),
            _ => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    }
}

/// `pizza-load run --platform compose --scenario order-crash`, as the library the CLI calls.
async fn order_crash(stack: &Stack) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&root().join("loadtest/scenarios"), "order-crash")?;
    // The compose shop runs in real time with the default kitchen: 4 ovens of 8 s cook about half a
    // ticket a second. The scenario's 4 orders/s would queue tickets past the kitchen timeout and
    // measure the kitchen, not the crash (81 of 157 cancelled for `kitchen-timeout` when tried).
    scenario.rate = 0.4;
    // The services' span counters are files inside their containers, out of the tester's reach; the
    // trace-integrity matrix bounds spans dropped on a shop whose counters it can read.
    scenario.expect.max_spans_dropped = None;
    scenario.validate()?;
    let options = RunOptions::new("compose", "continuous");
    let platform = Platform::Compose {
        file: stack.file.clone(),
    };
    let result = pizza_load::run(&scenario, &target(stack), &platform, &options).await;
    let report = &result.report;
    eprintln!("{}", report.markdown("report.svg"));
    let kills: Vec<_> = report.faults.iter().map(|f| (&f.what, &f.error)).collect();
    ensure!(
        report.faults.len() == 2 && report.faults.iter().all(|f| f.error.is_none()),
        "the kill and the start of order: {kills:?}"
    );
    let orders = &report.orders;
    ensure!(orders.accepted > 0, "no order was accepted");
    ensure!(
        orders.lost.is_empty(),
        "{} accepted orders lost: {:?}",
        orders.lost.len(),
        orders.lost
    );
    ensure!(
        orders.checks.iter().all(|c| c.error.is_none()),
        "the duplicate checks did not run: {:?}",
        orders.checks
    );
    ensure!(
        orders.duplicated_side_effects == 0,
        "{} side effects twice",
        orders.duplicated_side_effects
    );
    ensure!(report.pass, "the run did not pass");
    let unmet: Vec<_> = report.checks.iter().filter(|c| !c.ok).collect();
    ensure!(unmet.is_empty(), "the scenario's expectations: {unmet:?}");
    Ok(())
}

/// The memory cgroup of a running container's main process (cgroup v1 or v2).
fn memory_peak(pid: u64) -> anyhow::Result<(u64, PathBuf)> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let candidate = if controllers.split(',').any(|c| c == "memory") {
            Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join("memory.max_usage_in_bytes")
        } else if controllers.is_empty() {
            Path::new("/sys/fs/cgroup")
                .join(path.trim_start_matches('/'))
                .join("memory.peak")
        } else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(&candidate) {
            return Ok((text.trim().parse()?, candidate));
        }
    }
    bail!("no memory cgroup with a peak for pid {pid}: {cgroups}")
}

/// A counter of a cgroup's memory file (`memory.stat`, `memory.oom_control`, `memory.events`): the
/// value on the line `name value`, 0 when the file or the line is missing.
fn cgroup_counter(dir: &Path, file: &str, name: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Every long-running container's memory against its limit. The cgroup's peak counts the page cache
/// too, which the kernel reclaims at the limit: a container that writes files (PostgreSQL, Kafka)
/// shows its limit as its peak while it is in no danger. So the peak is printed, and what fails is
/// the kernel's own verdict (a process killed for memory: Docker's `OOMKilled`, the cgroup's
/// `oom_kill` counter) or memory that cannot be reclaimed (anonymous and shared, e.g. PostgreSQL's
/// shared buffers) above 90% of the limit after the load.
async fn peaks(stack: &Stack, services: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    let mut over = Vec::new();
    for (service, limit) in services {
        let c = inspect(&stack.container(service).await?).await?;
        let pid = c["State"]["Pid"].as_u64().context("a pid")?;
        let (peak, file) = memory_peak(pid)?;
        let dir = file.parent().context("a cgroup directory")?;
        let v1 = file.ends_with("memory.max_usage_in_bytes");
        let (kills, unreclaimable) = if v1 {
            (
                cgroup_counter(dir, "memory.oom_control", "oom_kill"),
                cgroup_counter(dir, "memory.stat", "total_rss")
                    + cgroup_counter(dir, "memory.stat", "total_shmem"),
            )
        } else {
            (
                cgroup_counter(dir, "memory.events", "oom_kill"),
                cgroup_counter(dir, "memory.stat", "anon") + cgroup_counter(dir, "memory.stat", "shmem"),
            )
        };
        let oom = c["State"]["OOMKilled"] == true || kills > 0;
        eprintln!(
            "compose: {service:<15} peak {:>4} MiB of {:>4} MiB ({:.0} %, page cache included); {:>4} MiB unreclaimable now{}",
            peak >> 20,
            limit >> 20,
            100.0 * peak as f64 / *limit as f64,
            unreclaimable >> 20,
            if oom { ", OOM-killed" } else { "" }
        );
        if oom || unreclaimable as f64 >= 0.9 * *limit as f64 {
            over.push(format!(
                "{service}: {unreclaimable} bytes unreclaimable of {limit}, {kills} OOM kills ({})",
                dir.display()
            ));
        }
    }
    ensure!(over.is_empty(), "killed for memory or near the limit: {over:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compose_deployment_runs_the_shop_end_to_end() {
    let services = long_running(&compose_file());
    let all: Vec<&str> = services.keys().map(String::as_str).collect();
    let mut stack = Stack::new();

    // Another stack of this project would be taken down with ours: refuse instead.
    let running = stack
        .run(&["ps", "-a", "-q"])
        .await
        .expect("docker compose answers");
    assert!(
        running.trim().is_empty(),
        "a compose project `{PROJECT}` exists already; stop it first: docker compose -f deploy/docker-compose.yml down"
    );
    eprintln!("compose: host ports {:?}", stack.ports);

    let started = Instant::now();
    stack
        .step("up --build --wait", &all, async {
            stack
                .run(&["up", "--build", "--wait", "--wait-timeout", "600"])
                .await
                .map(drop)
        })
        .await;
    eprintln!("compose: up in {:.0} s", started.elapsed().as_secs_f64());

    let sum = stack
        .step(
            "every long-running container healthy",
            &all,
            healthy(&stack, &services),
        )
        .await;
    eprintln!("compose: memory limits add up to {} MiB", sum >> 20);

    stack
        .step(
            "one order completes and is one trace in Jaeger",
            &["order", "kitchen", "delivery", "otel-collector", "jaeger"],
            one_order(&stack),
        )
        .await;

    stack
        .step(
            "the faults panel reaches every admin API with the token, none without",
            &["order", "kitchen", "delivery"],
            admin_api(&stack),
        )
        .await;

    let calls = stack
        .step(
            "Prometheus has the order service's span metrics",
            &["prometheus", "otel-collector"],
            span_metrics(&stack),
        )
        .await;
    eprintln!("compose: Prometheus counts {calls} calls of the order service's spans");

    stack
        .step(
            "order-crash: kill -9 order mid-load, no order lost",
            &["order", "kitchen", "delivery", "postgres", "kafka"],
            order_crash(&stack),
        )
        .await;

    stack
        .step("memory within each limit", &all, peaks(&stack, &services))
        .await;

    stack.take_down().await.expect("docker compose down -v");
}
