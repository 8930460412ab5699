//! Retry policies for the pizza platform: one exponential back-off, and the HTTP retry built on it.
//!
//! Three loops retry: the Kafka outbox relay and consumer (`pizza-messaging`), the workflow engine's
//! step retries (`pizza-workflow`), and HTTP calls between services. They used to compute their
//! delays three times, and only one of the three guarded against overflow (a large attempt count
//! made `Duration::mul_f64` panic). The arithmetic lives here once, in [`Backoff`], and this crate
//! depends on no other crate of the workspace, so every layer can use it without a dependency
//! running upwards.
//!
//! The HTTP retry is here rather than in `pizza-telemetry`, where it started: resending a request is
//! resilience, not telemetry. The two meet in one value, [`http::ResendCount`], which the retry
//! layer sets on each attempt and the telemetry layer records as `http.request.resend_count`.
//!
//! ```
//! use std::time::Duration;
//! use pizza_retry::Backoff;
//! let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 };
//! assert_eq!(b.delay(3), Duration::from_millis(400));
//! assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
//! ```
//!
//! # Layout
//! - [`backoff`]: [`Backoff`], the delays.
//! - [`http`]: [`http::Retry`], a `reqwest-middleware` layer that resends under a
//!   [`http::RetryPolicy`].

pub mod backoff;
pub mod http;

pub use backoff::Backoff;
