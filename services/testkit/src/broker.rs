//! A private Kafka broker for tests that stop and start Kafka.
//!
//! An outage test must not stop the shared broker: every other test runs against it in parallel.
//! [`PrivateBroker`] runs a second broker from the same cached jars with `deploy/local/infra.sh`, on
//! free ports and with its own run directory (pid, log, data) under the checkout's `.run/`, and stops
//! it by its saved pid, never by name. Stopping and starting it again keeps its data directory, like
//! a real broker restart.
//!
//! Dropping it stops the broker. The run directory is removed unless the test is failing, so the
//! broker's log is there to read.

use crate::ports::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Stack;

/// A broker of the test's own. See the module docs.
#[derive(Debug)]
pub struct PrivateBroker {
    run_dir: PathBuf,
    port: u16,
    controller_port: u16,
    running: bool,
}

/// Why the private broker could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No free port, or the run directory could not be made.
    #[error("preparing the private broker: {0}")]
    Io(#[from] std::io::Error),
    /// `infra.sh` failed; its output says why.
    #[error("`infra.sh {command} kafka` failed ({status}):\n{output}")]
    Script {
        /// `up` or `down`.
        command: &'static str,
        /// The exit status.
        status: std::process::ExitStatus,
        /// The script's stderr and stdout.
        output: String,
    },
    /// The script could not be run in the background.
    #[error("the infra.sh task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl PrivateBroker {
    /// Starts a new broker on free ports and waits until it answers (`infra.sh up kafka`).
    pub async fn start() -> Result<Self, BrokerError> {
        let run_dir = Stack::repo_root()
            .join(".run")
            .join("test-brokers")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&run_dir)?;
        let mut broker = Self {
            run_dir,
            port: free_port()?,
            controller_port: free_port()?,
            running: false,
        };
        while broker.controller_port == broker.port {
            broker.controller_port = free_port()?;
        }
        broker.up().await?;
        Ok(broker)
    }

    /// `bootstrap.servers` for this broker.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the broker's pid, log and data live.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Starts the broker again after [`PrivateBroker::stop`], on the same ports and data.
    pub async fn up(&mut self) -> Result<(), BrokerError> {
        let command = self.command("up");
        tokio::task::spawn_blocking(move || run(command, "up")).await??;
        self.running = true;
        Ok(())
    }

    /// Stops the broker (SIGTERM by saved pid, as a real shutdown), keeping its data.
    pub async fn stop(&mut self) -> Result<(), BrokerError> {
        let command = self.command("down");
        tokio::task::spawn_blocking(move || run(command, "down")).await??;
        self.running = false;
        Ok(())
    }

    fn command(&self, verb: &str) -> Command {
        let mut command = Command::new(Stack::repo_root().join("deploy/local/infra.sh"));
        command
            .arg(verb)
            .arg("kafka")
            .env("PIZZA_RUN_DIR", &self.run_dir)
            .env("PIZZA_KAFKA_PORT", self.port.to_string())
            .env("PIZZA_KAFKA_CONTROLLER_PORT", self.controller_port.to_string());
        command
    }
}

fn run(mut command: Command, verb: &'static str) -> Result<String, BrokerError> {
    let output = command.output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(BrokerError::Script {
            command: verb,
            status: output.status,
            output: text,
        })
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if self.running
            && let Err(error) = run(self.command("down"), "down")
        {
            eprintln!(
                "stopping the private broker in {}: {error}",
                self.run_dir.display()
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "private broker files kept for inspection: {}",
                self.run_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}
