//! A private OpenTelemetry Collector for runs that stop the Collector.
//!
//! A Collector outage must not stop the shared Collector: every other test exports through it. A
//! [`PrivateCollector`] runs the native stack's own binary (`PIZZA_OTELCOL_BIN`, or what
//! `deploy/local/infra.sh path collector` names) with the one `otel-collector/config.yaml`, on free
//! ports, with its persistent queue in a directory of its own, forwarding to the shared Jaeger. It is
//! stopped gracefully (SIGTERM by its pid, as a real shutdown) and started again on the same ports and
//! queue directory. Its own metrics endpoint says what it accepted, sent and dropped.
//!
//! Dropping it stops the Collector.

use crate::ports::free_port;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::Stack;

/// Why the private Collector could not be started, stopped or read.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// No free port, no binary, or its files could not be made.
    #[error("private Collector: {0}")]
    Io(#[from] std::io::Error),
    /// It did not answer in time, or exited.
    #[error("private Collector: {0}")]
    NotReady(String),
    /// Its metrics endpoint could not be read.
    #[error("private Collector metrics: {0}")]
    Metrics(#[from] reqwest::Error),
}

/// A Collector of the caller's own; see the module docs.
#[derive(Debug)]
pub struct PrivateCollector {
    binary: PathBuf,
    dir: PathBuf,
    ports: Ports,
    child: Option<Child>,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    grpc: u16,
    http: u16,
    health: u16,
    metrics: u16,
    prometheus: u16,
}

/// The Collector's own counts of spans, from its metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CollectorSpans {
    /// Spans its receivers accepted.
    pub accepted: u64,
    /// Spans its exporters sent on.
    pub sent: u64,
    /// Spans refused or dropped: refused by the receiver or a processor (memory limit), failed to
    /// enqueue (queue full) or failed to send after every retry.
    pub dropped: u64,
}

/// The Collector binary of the native stack.
pub fn collector_binary() -> std::io::Result<PathBuf> {
    if let Some(bin) = Stack::from_env().otelcol_bin {
        return Ok(bin);
    }
    let output = std::process::Command::new(Stack::repo_root().join("deploy/local/infra.sh"))
        .args(["path", "collector"])
        .output()?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || path.is_empty() {
        return Err(std::io::Error::other(format!(
            "no Collector binary: set PIZZA_OTELCOL_BIN or run `deploy/local/infra.sh install collector` ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(PathBuf::from(path))
}

impl PrivateCollector {
    /// Starts a new Collector on free ports and waits until it answers.
    pub async fn start() -> Result<Self, CollectorError> {
        let dir = Stack::repo_root()
            .join(".run")
            .join("test-collectors")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir)?;
        let mut ports = Vec::new();
        while ports.len() < 5 {
            let p = free_port()?;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut collector = Self {
            binary: collector_binary()?,
            dir,
            ports: Ports {
                grpc: ports[0],
                http: ports[1],
                health: ports[2],
                metrics: ports[3],
                prometheus: ports[4],
            },
            child: None,
        };
        collector.up().await?;
        Ok(collector)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for OTLP/gRPC to this Collector.
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.grpc)
    }

    /// Where its log, pid and queue live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (again), on the same ports and queue directory, and waits until it answers.
    pub async fn up(&mut self) -> Result<(), CollectorError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("collector.log"))?;
        // The native Jaeger's OTLP/gRPC port (deploy/local/infra.sh), behind the shared Collector.
        let jaeger_otlp = "127.0.0.1:14317";
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(Stack::repo_root().join("otel-collector/config.yaml"))
            .env("OTELCOL_LISTEN_HOST", "127.0.0.1")
            .env("OTELCOL_OTLP_GRPC_PORT", self.ports.grpc.to_string())
            .env("OTELCOL_OTLP_HTTP_PORT", self.ports.http.to_string())
            .env("OTELCOL_HEALTH_PORT", self.ports.health.to_string())
            .env("OTELCOL_METRICS_PORT", self.ports.metrics.to_string())
            .env("OTELCOL_PROMETHEUS_PORT", self.ports.prometheus.to_string())
            .env("OTELCOL_STORAGE_DIR", self.dir.join("file_storage"))
            .env("JAEGER_OTLP_ENDPOINT", jaeger_otlp)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a client with a timeout builds");
        let started = Instant::now();
        let health = format!("http://127.0.0.1:{}/", self.ports.health);
        loop {
            if client
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(CollectorError::NotReady(format!(
                    "exited with {status}; see {}",
                    self.dir.join("collector.log").display()
                )));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(CollectorError::NotReady(format!(
                    "no answer on {health} after 60 s; see {}",
                    self.dir.join("collector.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it gracefully (SIGTERM by pid; it flushes what it holds to Jaeger or its queue).
    pub async fn stop(&mut self) -> Result<(), CollectorError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await?;
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                child.start_kill()?;
                Err(CollectorError::NotReady(
                    "did not stop within 30 s of SIGTERM; killed".into(),
                ))
            }
        }
    }

    /// Its span counters, from its own metrics endpoint (counters reset when it restarts, so read
    /// them before a stop and add).
    pub async fn spans(&self) -> Result<CollectorSpans, CollectorError> {
        let url = format!("http://127.0.0.1:{}/metrics", self.ports.metrics);
        let text = reqwest::get(&url).await?.error_for_status()?.text().await?;
        Ok(parse_span_metrics(&text))
    }
}

impl Drop for PrivateCollector {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop would SIGKILL; a graceful stop is not possible without a runtime here.
            let _ = child.start_kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sums the Collector's span counters from Prometheus text.
fn parse_span_metrics(text: &str) -> CollectorSpans {
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("otelcol_")) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *sums.entry(name).or_default() += value;
    }
    let sum = |pred: &dyn Fn(&str) -> bool| -> u64 {
        sums.iter().filter(|(n, _)| pred(n)).map(|(_, v)| *v).sum::<f64>() as u64
    };
    CollectorSpans {
        accepted: sum(&|n| n.starts_with("otelcol_receiver_accepted_spans")),
        // Only the exporter towards Jaeger: the spanmetrics connector is not an exporter.
        sent: sum(&|n| n.starts_with("otelcol_exporter_sent_spans")),
        dropped: sum(&|n| {
            n.starts_with("otelcol_receiver_refused_spans")
                || n.starts_with("otelcol_processor_refused_spans")
                || n.starts_with("otelcol_exporter_enqueue_failed_spans")
                || n.starts_with("otelcol_exporter_send_failed_spans")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_counters_are_summed_over_labels_and_failures_of_every_kind_count_as_dropped() {
        let text = r#"# HELP otelcol_receiver_accepted_spans_total Number of spans successfully pushed into the pipeline.
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 120
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"} 3
otelcol_receiver_refused_spans_total{receiver="otlp",transport="grpc"} 2
otelcol_exporter_sent_spans_total{exporter="otlp_grpc/jaeger"} 118
otelcol_exporter_send_failed_spans_total{exporter="otlp_grpc/jaeger"} 1
otelcol_exporter_enqueue_failed_spans_total{exporter="otlp_grpc/jaeger"} 4
otelcol_process_uptime_seconds_total 12.5
"#;
        assert_eq!(
            parse_span_metrics(text),
            CollectorSpans {
                accepted: 123,
                sent: 118,
                dropped: 7
            }
        );
    }
}
