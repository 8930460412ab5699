//! A service running in-process on port 0, the way `TestApp` helpers start one.
//!
//! Binding port 0 lets tests run in parallel without choosing ports; handing the service its
//! shutdown future lets a test stop it cleanly (in-flight requests finish, offsets are committed)
//! and so test what a restart picks up.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a service may take to stop before the test fails.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// The shutdown future a [`Running`] service is given: it completes when the test stops it (or
/// drops it).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A service serving on `127.0.0.1:<some free port>` in a background task.
#[derive(Debug)]
pub struct Running {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Binds port 0 and spawns `run(listener, shutdown)`: typically a service's
    /// `run(listener, shutdown)`.
    pub async fn start<F>(run: impl FnOnce(TcpListener, Shutdown) -> F) -> anyhow::Result<Self>
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(listener, shutdown));
        Ok(Self {
            base,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops the service and waits for it, failing if it does not stop within 30 s or stopped with
    /// an error.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().context("stopped twice")?;
        tokio::time::timeout(STOP_LIMIT, task)
            .await
            .context("did not stop within 30 s")???;
        Ok(())
    }
}

impl Drop for Running {
    /// A test that fails before stopping its service still stops it, so the next test does not
    /// share its broker and database with a leftover.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_running_service_stops_when_asked_and_reports_its_error() {
        let running = Running::start(|listener, shutdown| async move {
            let _listener = listener;
            shutdown.await;
            Ok(())
        })
        .await
        .unwrap();
        assert!(running.base.starts_with("http://127.0.0.1:"));
        running.stop().await.unwrap();
        let failing = Running::start(|_, shutdown| async move {
            shutdown.await;
            anyhow::bail!("broken")
        })
        .await
        .unwrap();
        assert_eq!(failing.stop().await.unwrap_err().to_string(), "broken");
    }
}
