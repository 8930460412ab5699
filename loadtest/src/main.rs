//! The `pizza-load` command line: `run`, `trace`, `bench`, `render`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use pizza_load::faults::Platform;
use pizza_load::managed::{ManagedOptions, ManagedStack};
use pizza_load::scenario::parse_duration;
use pizza_load::{RunOptions, Scenario, Target};

#[derive(Debug, Parser)]
#[command(
    name = "pizza-load",
    version,
    about = "Load tester of the pizza shop: scenarios, faults, verification, reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive orders at a fixed rate through a scenario, verify orders and traces, write a report.
    Run(Box<RunArgs>),
    /// Print an order's spans as one tree, following links across traces.
    Trace {
        /// The order id.
        order_id: uuid::Uuid,
        /// Jaeger's query service.
        #[arg(long, env = "PIZZA_JAEGER_URL", default_value = "http://127.0.0.1:16686")]
        jaeger_url: String,
    },
    /// Benchmarks on a shop of the tester's own: the highest sustained rate with every span
    /// sampled, tracing overhead against OTEL_SDK_DISABLED=true, spans dropped. Printed, not asserted.
    Bench(BenchArgs),
    /// Every scenario in both topologies and with the link-aware sampler at 10%, three shops side by
    /// side under each fault, on a private Collector (and broker): one report, matrix.md.
    Matrix(MatrixArgs),
    /// Write report.md and report.svg again from a report directory's report.json.
    Render {
        /// The report directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlatformArg {
    /// The native stack and services of this checkout (`make demo`): processes by pid.
    Native,
    /// `docker compose` (`deploy/docker-compose.yml`).
    Compose,
    /// A shop this tool starts itself: child processes, a fresh database, topics of its own.
    Managed,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario name (a file in loadtest/scenarios/) or path to a scenario file.
    #[arg(long, default_value = "baseline")]
    scenario: String,
    /// Orders per second (overrides the scenario's).
    #[arg(long)]
    rate: Option<f64>,
    /// How long arrivals go on, e.g. 60s (overrides the scenario's).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Where the shop runs and how process faults are done.
    #[arg(long, value_enum, default_value = "native")]
    platform: PlatformArg,
    /// Report directory (default loadtest/reports/<timestamp>-<scenario>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The order service (native and compose); `--target` is an alias.
    #[arg(
        long,
        alias = "target",
        env = "PIZZA_ORDER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    order_url: String,
    /// The kitchen (its admin API).
    #[arg(long, env = "PIZZA_KITCHEN_URL", default_value = "http://127.0.0.1:8081")]
    kitchen_url: String,
    /// The delivery service (its admin API).
    #[arg(long, env = "PIZZA_DELIVERY_URL", default_value = "http://127.0.0.1:8082")]
    delivery_url: String,
    /// Bearer token of the services' admin APIs (needed by fault-plan scenarios).
    #[arg(long, env = "PIZZA_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// PostgreSQL of the services (duplicate checks).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:55432/postgres"
    )]
    database_url: String,
    /// Kafka (poison records).
    #[arg(long, env = "PIZZA_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    kafka_bootstrap: String,
    /// Jaeger's query service.
    #[arg(long, env = "PIZZA_JAEGER_URL", default_value = "http://127.0.0.1:16686")]
    jaeger_url: String,
    /// The compose file (compose platform).
    #[arg(long, default_value = "deploy/docker-compose.yml")]
    compose_file: PathBuf,
    /// Requests in flight at most; arrivals beyond are counted as overflow.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Timeout of one POST /orders.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    request_timeout: Duration,
    /// The longest wait for every accepted order to reach a terminal state.
    #[arg(long, value_parser = parse_duration, default_value = "180s")]
    settle_timeout: Duration,
    /// The longest wait for traces to be complete in Jaeger.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    trace_patience: Duration,
    /// Skip reading traces.
    #[arg(long)]
    no_traces: bool,
    /// Exit 2 when a scenario expectation is not met (lost orders always exit 1).
    #[arg(long)]
    strict: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// The services' trace topology (managed: set; otherwise: for the report).
    #[arg(long, env = "PIZZA_TRACE_TOPOLOGY", default_value = "continuous")]
    topology: String,
    /// Managed: PIZZA_TIME_SCALE of the services.
    #[arg(long, default_value_t = 0.1)]
    time_scale: f64,
    /// Managed: run the services with OTEL_SDK_DISABLED=true.
    #[arg(long)]
    sdk_disabled: bool,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Rates to try, in order, until one is not sustained.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,30,40,50,60,80,100,120,150,200"
    )]
    rates: Vec<f64>,
    /// Arrivals at each rate.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    step: Duration,
    /// Where the bench's reports go (default loadtest/reports/<timestamp>-bench/).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct MatrixArgs {
    /// Scenarios to run (names in loadtest/scenarios/), in order; default all of them.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Orders per second in each of the three shops.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Arrivals per scenario (faults that would outlast them are cut).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    duration: Duration,
    /// Where the matrix goes (default loadtest/reports/<timestamp>-matrix/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Trace { order_id, jaeger_url } => trace(order_id, &jaeger_url).await,
        Command::Bench(args) => bench(args).await,
        Command::Matrix(args) => matrix(args).await,
        Command::Render { dir } => render(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pizza-load: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// The checkout this runs in: the nearest directory at or above the working directory holding
/// `loadtest/scenarios` (a container image has no `Cargo.lock` to look for), else the working
/// directory.
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|d| d.join("loadtest/scenarios").is_dir())
        .map_or(cwd.clone(), PathBuf::from)
}

fn report_dir(out: Option<PathBuf>, name: &str) -> PathBuf {
    out.unwrap_or_else(|| {
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        repo_root()
            .join("loadtest/reports")
            .join(format!("{stamp}-{name}"))
    })
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let root = repo_root();
    let mut scenario = Scenario::load(&root.join("loadtest/scenarios"), &args.scenario)?;
    if let Some(rate) = args.rate {
        scenario.rate = rate;
    }
    if let Some(duration) = args.duration {
        scenario.duration = duration;
    }
    scenario.validate()?;
    let mut managed = None;
    let (target, platform) = match args.platform {
        PlatformArg::Managed => {
            let mut options = ManagedOptions::new();
            options.database_url = args.database_url.clone();
            options.kafka_bootstrap = args.kafka_bootstrap.clone();
            options.jaeger_url = args.jaeger_url.clone();
            options.time_scale = args.time_scale;
            options.topology = args.topology.parse()?;
            options.sdk_disabled = args.sdk_disabled;
            options.private_broker = scenario.faults.iter().any(|f| f.target == "kafka");
            let stack = Arc::new(ManagedStack::start(options).await?);
            let target = stack.target();
            managed = Some(stack.clone());
            (target, Platform::Managed(stack))
        }
        other => {
            let target = Target {
                order_url: args.order_url.clone(),
                kitchen_url: args.kitchen_url.clone(),
                delivery_url: args.delivery_url.clone(),
                admin_token: args.admin_token.clone(),
                database_url: args.database_url.clone(),
                kafka_bootstrap: args.kafka_bootstrap.clone(),
                jaeger_url: args.jaeger_url.clone(),
                topics: Target::default_topics(),
            };
            let platform = if other == PlatformArg::Native {
                Platform::Native { root: root.clone() }
            } else {
                Platform::Compose {
                    file: args.compose_file.clone(),
                }
            };
            (target, platform)
        }
    };
    let options = RunOptions {
        max_in_flight: args.max_in_flight,
        request_timeout: args.request_timeout,
        settle_timeout: args.settle_timeout,
        trace_patience: args.trace_patience,
        read_traces: !args.no_traces,
        platform_name: format!("{:?}", args.platform).to_lowercase(),
        topology: args.topology.clone(),
        sdk_disabled: args.sdk_disabled,
        quiet: args.quiet,
        sampled: None,
        export_delay_s: 0.5,
    };
    let mut result = pizza_load::run(&scenario, &target, &platform, &options).await;
    drop(platform);
    if let Some(stack) = managed {
        let stack =
            Arc::try_unwrap(stack).map_err(|_| anyhow::anyhow!("the managed shop is still in use"))?;
        result.report.span_stats = stack.shutdown().await?;
        result.report.recheck();
    }
    let dir = report_dir(args.out, &scenario.name);
    result
        .write(&dir)
        .with_context(|| format!("writing the report to {}", dir.display()))?;
    out(&result.report.markdown("report.svg"));
    out(&format!("\nreport: {}\n", dir.display()));
    if !result.report.pass {
        return Ok(ExitCode::from(1));
    }
    if args.strict && result.report.checks.iter().any(|c| !c.ok) {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

async fn trace(order_id: uuid::Uuid, jaeger_url: &str) -> anyhow::Result<ExitCode> {
    let jaeger = pizza_testkit::Jaeger::new(jaeger_url);
    let spans = pizza_load::tree::gather(&jaeger, order_id, 50).await?;
    if spans.is_empty() {
        out(&format!("no spans with pizza.order.id={order_id} in Jaeger\n"));
        return Ok(ExitCode::from(1));
    }
    out(&pizza_load::tree::render(&spans));
    Ok(ExitCode::SUCCESS)
}

fn render(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let report: pizza_load::report::Report = serde_json::from_str(&text)?;
    std::fs::write(dir.join("report.md"), report.markdown("report.svg"))?;
    std::fs::write(dir.join("report.svg"), report.svg())?;
    Ok(ExitCode::SUCCESS)
}

async fn matrix(args: MatrixArgs) -> anyhow::Result<ExitCode> {
    let dir = repo_root().join("loadtest/scenarios");
    let names = if args.scenarios.is_empty() {
        pizza_load::matrix::scenario_names(&dir)?
    } else {
        args.scenarios
    };
    let scenarios = names
        .iter()
        .map(|n| Scenario::load(&dir, n))
        .collect::<Result<Vec<_>, _>>()?;
    let options = pizza_load::matrix::MatrixOptions {
        scenarios,
        rate: args.rate,
        duration: args.duration,
        out: report_dir(args.out, "matrix"),
        quiet: args.quiet,
    };
    // On SIGINT or SIGTERM the run is dropped: its shops' child processes are killed with it, the
    // private Collector and broker are stopped, so nothing outlives the command.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = pizza_load::matrix::run_matrix(&options) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; partial results in {}", options.out.display()),
        _ = term.recv() => anyhow::bail!("terminated; partial results in {}", options.out.display()),
    };
    out(&report.markdown());
    out(&format!(
        "\nmatrix: {}\n",
        options.out.join("matrix.md").display()
    ));
    Ok(if report.pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let dir = report_dir(args.out, "bench");
    let text = pizza_load::bench::run(&args.rates, args.step, &dir).await?;
    out(&text);
    Ok(ExitCode::SUCCESS)
}
