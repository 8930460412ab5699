//! Resending HTTP requests: a `reqwest-middleware` layer.
//!
//! Stack it outside the tracing layer of `pizza-telemetry` (`.with(Retry::new(..))` before
//! `.with(Tracing::new(..))`), so every attempt gets its own CLIENT span and its own injected
//! `traceparent`, and the retries show as `http.request.resend_count` 1, 2, ...: this layer puts a
//! [`ResendCount`] in the request's extensions and the tracing layer reads it.
//!
//! ```no_run
//! use pizza_retry::http::{Retry, RetryPolicy};
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(Retry::new(RetryPolicy::default()))
//!     .build();
//! ```

use std::time::Duration;

use ::http::{Extensions, StatusCode};
use reqwest_middleware::{Middleware, Next, Result};

use crate::Backoff;

/// Which attempt this is, set by [`Retry`] in the request's extensions for the layers inside it
/// (0 on the first send, 1 on the first resend, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResendCount(pub u32);

/// How often [`Retry`] tries, and how long it waits between tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub max_attempts: u32,
    /// The wait before each resend (resend `n` waits `backoff.delay(n)`).
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 3 tries, waiting 100 ms, then 200 ms (doubling, at most 2 s).
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                multiplier: 2.0,
            },
        }
    }
}

/// Resends a request on connection errors, timeouts, 429 and 5xx, with exponential back-off.
///
/// Only requests whose body can be cloned are retried. Callers are expected to make retried requests
/// idempotent (the kitchen's `POST /tickets` is idempotent on the order id).
#[derive(Debug, Clone)]
pub struct Retry {
    policy: RetryPolicy,
}

impl Retry {
    /// A retry layer with this policy.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

#[async_trait::async_trait]
impl Middleware for Retry {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            let Some(this_try) = req.try_clone() else {
                return next.run(req, extensions).await;
            };
            extensions.insert(ResendCount(attempt));
            let result = next.clone().run(this_try, extensions).await;
            attempt += 1;
            let retryable = match &result {
                Ok(r) => r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS,
                Err(reqwest_middleware::Error::Reqwest(e)) => e.is_connect() || e.is_timeout(),
                Err(_) => false,
            };
            if !retryable || attempt >= self.policy.max_attempts {
                return result;
            }
            tokio::time::sleep(self.policy.backoff.delay(attempt)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_waits_100_then_200_ms_between_its_three_tries() {
        let p = RetryPolicy::default();
        let waits: Vec<u128> = (1..p.max_attempts)
            .map(|n| p.backoff.delay(n).as_millis())
            .collect();
        assert_eq!(waits, vec![100, 200]);
    }
}
