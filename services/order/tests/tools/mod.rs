//! The external tools of the tests that drive the shop from outside (a browser, an API fuzzer):
//! where `deploy/local/tools.sh` put them, and running them with a bound.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// What `deploy/local/tools.sh install` provides; the tests fail (never skip) without it.
const INSTALL_HINT: &str = "run `deploy/local/tools.sh install`, then `eval \"$(deploy/local/tools.sh env)\"` \
     before `cargo test` (make test does both)";

/// The path a tool's variable names, checked to exist.
pub(crate) fn tool(var: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .with_context(|| format!("{var} is not set: {INSTALL_HINT}"))?;
    anyhow::ensure!(
        path.exists(),
        "{var}={} does not exist: {INSTALL_HINT}",
        path.display()
    );
    Ok(path)
}

/// Runs `command` to its end, at most `limit`; its output is captured and returned with the time it
/// took. Killed (and an error) past the limit.
pub(crate) async fn run_bounded(
    mut command: tokio::process::Command,
    limit: Duration,
) -> anyhow::Result<(Output, Duration)> {
    let shown = format!("{command:?}");
    command.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let started = Instant::now();
    match tokio::time::timeout(limit, command.output()).await {
        Ok(output) => Ok((
            output.with_context(|| format!("starting {shown}"))?,
            started.elapsed(),
        )),
        Err(_) => bail!("{shown} did not finish within {} s", limit.as_secs()),
    }
}
