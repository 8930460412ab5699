//! Progress on stderr: a bar in a terminal, plain lines every few seconds otherwise.
//!
//! In CI (`CI` set) or when stderr is not a terminal, a redrawn bar is noise in a log file, so the
//! same counters are printed as one line every [`LINE_EVERY`] instead.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often plain progress lines are printed.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Inner {
    bar: Option<ProgressBar>,
    total: u64,
    sent: AtomicU64,
    accepted: AtomicU64,
    started: Instant,
    last_line: std::sync::Mutex<Instant>,
    label: String,
}

/// Progress of one run. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Inner>);

impl Progress {
    /// Progress of `total` arrivals; a bar only when stderr is an attended terminal outside CI, or
    /// nothing at all when `quiet`.
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = (interactive && !quiet).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar
        });
        Self(Arc::new(Inner {
            bar,
            total,
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            started: Instant::now(),
            last_line: std::sync::Mutex::new(Instant::now()),
            label: if quiet { String::new() } else { label.to_owned() },
        }))
    }

    /// One arrival answered (or overflowed).
    pub fn arrival(&self, accepted: bool) {
        let sent = self.0.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let accepted = if accepted {
            self.0.accepted.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.0.accepted.load(Ordering::Relaxed)
        };
        if let Some(bar) = &self.0.bar {
            bar.set_position(sent);
            bar.set_message(format!("accepted {accepted}"));
        } else {
            self.line(&format!("arrivals {sent}/{} accepted {accepted}", self.0.total));
        }
    }

    /// Waiting for terminal states: `done` of `total` orders are terminal.
    pub fn settling(&self, done: usize, total: usize) {
        let text = format!("waiting for terminal states: {done}/{total}");
        if let Some(bar) = &self.0.bar {
            bar.set_message(text);
        } else {
            self.line(&text);
        }
    }

    /// A note that always shows (a fault applied, a phase begins).
    pub fn note(&self, text: &str) {
        if self.0.label.is_empty() {
            return;
        }
        let line = format!(
            "[{} {:>6.1}s] {text}",
            self.0.label,
            self.0.started.elapsed().as_secs_f64()
        );
        match &self.0.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Ends the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.0.bar {
            bar.finish();
        }
    }

    fn line(&self, text: &str) {
        if self.0.label.is_empty() {
            return;
        }
        let mut last = self.0.last_line.lock().expect("progress lock");
        if last.elapsed() >= LINE_EVERY {
            *last = Instant::now();
            drop(last);
            self.note(text);
        }
    }
}
