//! Failure injection: one seeded plan per service, set at start from the environment and changed at
//! run time through a token-protected admin API.
//!
//! A workshop or a load scenario says *what* should go wrong (half the kitchen's requests fail; the
//! oven breaks one time in five; the Kafka edge loses its trace context) and the service decides *when*
//! with a pseudo-random sequence seeded by the plan. The same plan and the same sequence of calls give
//! the same failures, so a scenario replays the same way.
//!
//! The generator is SplitMix64, written out here rather than taken from a crate: its output for a seed
//! is fixed forever, whereas a library's default generator may change between versions and silently
//! change what a recorded scenario does.
//!
//! Process-level faults (kill, restart, broker outage) are not here: the load tester drives them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, http::StatusCode};
use serde::{Deserialize, Serialize};

use crate::problem::Problem;

/// The longest latency a plan may inject, so a typo can't hang a service for hours.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// What should go wrong. Every field defaults to "nothing"; an empty plan is no faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the decision sequence.
    pub seed: u64,
    /// Share of business HTTP requests answered 500 (0 to 1). Admin and health routes are exempt.
    pub http_error_rate: f64,
    /// Latency added to every business HTTP request, in milliseconds.
    pub http_latency_ms: u64,
    /// Share of Kafka publishes that fail before reaching the broker (0 to 1).
    pub kafka_publish_failure_rate: f64,
    /// How many upcoming messages make the consumer crash after their effect committed but before
    /// their offset is stored (so the message is redelivered).
    pub consumer_crash_before_commit: u32,
    /// Latency added before database transactions, in milliseconds.
    pub db_latency_ms: u64,
    /// Business failures by kind (`oven`, `driver`, `payment`), each a share (0 to 1).
    pub business_failure_rate: BTreeMap<String, f64>,
    /// Edges whose trace context is dropped (`kafka:<topic>`, `http:<peer>`).
    pub drop_trace_context: Vec<String>,
}

/// A plan that can't be applied.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    /// A rate outside 0..=1.
    #[error("{field} must be between 0 and 1, got {value}")]
    Rate {
        /// The field.
        field: String,
        /// Its value.
        value: f64,
    },
    /// A latency above [`MAX_LATENCY_MS`].
    #[error("{field} must be at most {MAX_LATENCY_MS} ms, got {value}")]
    Latency {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// An edge name that is neither `kafka:<topic>` nor `http:<peer>`.
    #[error("drop_trace_context entry {0:?} must look like kafka:<topic> or http:<peer>")]
    Edge(String),
}

impl FaultPlan {
    /// Checks every field's domain.
    pub fn validate(&self) -> Result<(), FaultError> {
        let rates = [
            ("http_error_rate".to_owned(), self.http_error_rate),
            (
                "kafka_publish_failure_rate".to_owned(),
                self.kafka_publish_failure_rate,
            ),
        ]
        .into_iter()
        .chain(
            self.business_failure_rate
                .iter()
                .map(|(k, v)| (format!("business_failure_rate.{k}"), *v)),
        );
        for (field, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultError::Rate { field, value });
            }
        }
        for (field, value) in [
            ("http_latency_ms", self.http_latency_ms),
            ("db_latency_ms", self.db_latency_ms),
        ] {
            if value > MAX_LATENCY_MS {
                return Err(FaultError::Latency { field, value });
            }
        }
        for edge in &self.drop_trace_context {
            let ok = edge
                .split_once(':')
                .is_some_and(|(kind, name)| (kind == "kafka" || kind == "http") && !name.is_empty());
            if !ok {
                return Err(FaultError::Edge(edge.clone()));
            }
        }
        Ok(())
    }

    /// Parses a plan from JSON (the `PIZZA_FAULTS` variable holds one) and validates it.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let plan: FaultPlan = serde_json::from_str(text).map_err(|e| e.to_string())?;
        plan.validate().map_err(|e| e.to_string())?;
        Ok(plan)
    }
}

/// SplitMix64: a tiny, fixed, well-distributed generator (see the module docs for why it is ours).
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
struct Inner {
    plan: RwLock<FaultPlan>,
    rng: Mutex<SplitMix64>,
    crashes_left: AtomicU32,
}

/// A service's live fault plan. Cheap to clone; every clone sees changes.
#[derive(Debug, Clone)]
pub struct Faults(Arc<Inner>);

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self(Arc::new(Inner {
            plan: RwLock::new(FaultPlan::default()),
            rng: Mutex::new(SplitMix64(0)),
            crashes_left: AtomicU32::new(0),
        }))
    }

    /// Starts with `plan`.
    pub fn new(plan: FaultPlan) -> Result<Self, FaultError> {
        let faults = Self::none();
        faults.set(plan)?;
        Ok(faults)
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.0.plan.read().expect("fault plan lock").clone()
    }

    /// Replaces the plan and restarts the decision sequence from its seed. The dropped trace-context
    /// edges take effect in the process's propagation at once.
    pub fn set(&self, plan: FaultPlan) -> Result<(), FaultError> {
        plan.validate()?;
        pizza_telemetry::propagation::set_dropped_edges(plan.drop_trace_context.iter().cloned());
        *self.0.rng.lock().expect("fault rng lock") = SplitMix64(plan.seed);
        self.0
            .crashes_left
            .store(plan.consumer_crash_before_commit, Ordering::SeqCst);
        *self.0.plan.write().expect("fault plan lock") = plan;
        Ok(())
    }

    /// One decision: true with probability `rate`.
    fn roll(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        self.0.rng.lock().expect("fault rng lock").next_f64() < rate
    }

    /// Should this business HTTP request fail with a 500?
    pub fn http_error(&self) -> bool {
        let rate = self.0.plan.read().expect("fault plan lock").http_error_rate;
        self.roll(rate)
    }

    /// Latency to add to a business HTTP request.
    pub fn http_latency(&self) -> Duration {
        Duration::from_millis(self.0.plan.read().expect("fault plan lock").http_latency_ms)
    }

    /// Should this Kafka publish fail?
    pub fn kafka_publish_failure(&self) -> bool {
        let rate = self
            .0
            .plan
            .read()
            .expect("fault plan lock")
            .kafka_publish_failure_rate;
        self.roll(rate)
    }

    /// Should the consumer crash now, after the effect and before storing the offset? Each `true`
    /// uses up one of the plan's `consumer_crash_before_commit`.
    pub fn take_consumer_crash(&self) -> bool {
        self.0
            .crashes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Latency to add before a database transaction.
    pub fn db_latency(&self) -> Duration {
        Duration::from_millis(self.0.plan.read().expect("fault plan lock").db_latency_ms)
    }

    /// Should this business operation of `kind` (`oven`, `driver`, `payment`) fail?
    pub fn business_failure(&self, kind: &str) -> bool {
        let rate = self
            .0
            .plan
            .read()
            .expect("fault plan lock")
            .business_failure_rate
            .get(kind)
            .copied()
            .unwrap_or(0.0);
        self.roll(rate)
    }
}

/// The Kafka part of the plan, as the relay and the consumer of `pizza-messaging` ask for it
/// (`pizza-messaging` cannot name this crate, which depends on it). `background::run` hands the
/// service's live plan to both, so a plan set through the admin API takes effect at the next publish
/// or the next applied record.
impl pizza_messaging::FaultHooks for Faults {
    fn fail_publish(&self) -> bool {
        self.kafka_publish_failure()
    }

    fn crash_before_commit(&self) -> bool {
        self.take_consumer_crash()
    }
}

/// Paths the HTTP faults never touch: the admin API (so a workshop can always turn faults off) and
/// health probes (so a fault scenario does not get the process restarted by its supervisor).
pub fn is_exempt(path: &str) -> bool {
    path.starts_with("/admin") || path == "/healthz" || path == "/readyz"
}

/// axum middleware applying the HTTP part of the plan. Add it with
/// `axum::middleware::from_fn_with_state(faults, pizza_servicekit::faults::inject_http_faults)`,
/// inside the telemetry layer so injected failures show on the SERVER span.
pub async fn inject_http_faults(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    if is_exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let latency = faults.http_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if faults.http_error() {
        tracing::warn!(path = request.uri().path(), "injected HTTP 500 (fault plan)");
        return Problem::typed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/injected-fault",
            "Injected fault",
            "this failure was injected by the service's fault plan",
        )
        .into_response();
    }
    next.run(request).await
}

#[derive(Clone)]
struct AdminState {
    faults: Faults,
    token: Option<Arc<str>>,
}

/// The admin API: `GET`, `PUT` and `DELETE` on `/admin/faults`, each requiring
/// `Authorization: Bearer <token>`. Without a configured token the API answers 403 to everyone.
pub fn admin_router(faults: Faults, token: Option<String>) -> Router {
    let state = AdminState {
        faults,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
    };
    Router::new()
        .route("/admin/faults", get(get_plan).put(put_plan).delete(clear_plan))
        .with_state(state)
}

fn authorize(state: &AdminState, headers: &http::HeaderMap) -> Result<(), Problem> {
    let Some(expected) = &state.token else {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: start the service with PIZZA_ADMIN_TOKEN set",
        ));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

/// Compares without an early exit, so the time taken says nothing about how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn get_plan(State(state): State<AdminState>, headers: http::HeaderMap) -> Response {
    match authorize(&state, &headers) {
        Ok(()) => Json(state.faults.plan()).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn put_plan(
    State(state): State<AdminState>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(p) = authorize(&state, &headers) {
        return p.into_response();
    }
    let plan: FaultPlan = match serde_json::from_slice(&body) {
        Ok(plan) => plan,
        Err(e) => {
            return Problem::new(StatusCode::BAD_REQUEST, format!("not a fault plan: {e}")).into_response();
        }
    };
    match state.faults.set(plan) {
        Ok(()) => {
            tracing::info!(plan = ?state.faults.plan(), "fault plan replaced");
            Json(state.faults.plan()).into_response()
        }
        Err(e) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    }
}

async fn clear_plan(State(state): State<AdminState>, headers: http::HeaderMap) -> Response {
    if let Err(p) = authorize(&state, &headers) {
        return p.into_response();
    }
    match state.faults.set(FaultPlan::default()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    fn plan(json: &str) -> FaultPlan {
        FaultPlan::from_json(json).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_failures_and_another_seed_others() {
        let run = |seed: u64| {
            let f = Faults::new(FaultPlan {
                seed,
                http_error_rate: 0.5,
                ..Default::default()
            })
            .unwrap();
            (0..64).map(|_| f.http_error()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let failures = run(7).iter().filter(|&&b| b).count();
        assert!((16..=48).contains(&failures), "about half of 64 fail: {failures}");
    }

    #[test]
    fn splitmix64_output_is_fixed_for_a_seed() {
        // Reference values of SplitMix64 for seed 0: if these change, recorded scenarios would replay
        // differently.
        let mut g = SplitMix64(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn rates_of_zero_and_one_are_never_and_always() {
        let f = Faults::new(plan(r#"{"business_failure_rate":{"oven":1.0,"driver":0.0}}"#)).unwrap();
        assert!((0..100).all(|_| f.business_failure("oven")));
        assert!((0..100).all(|_| !f.business_failure("driver")));
        assert!(!f.business_failure("payment"), "an unnamed kind never fails");
    }

    #[test]
    fn consumer_crashes_are_used_up_one_by_one() {
        let f = Faults::new(plan(r#"{"consumer_crash_before_commit":2}"#)).unwrap();
        assert_eq!(
            (0..4).map(|_| f.take_consumer_crash()).collect::<Vec<_>>(),
            vec![true, true, false, false]
        );
    }

    #[test]
    fn the_messaging_hooks_follow_the_live_plan() {
        use pizza_messaging::FaultHooks as _;
        let f = Faults::none();
        assert!(
            !f.fail_publish() && !f.crash_before_commit(),
            "no plan, no faults"
        );
        f.set(plan(
            r#"{"kafka_publish_failure_rate":1.0,"consumer_crash_before_commit":1}"#,
        ))
        .unwrap();
        assert!(f.fail_publish());
        assert!(f.crash_before_commit());
        assert!(!f.crash_before_commit(), "the one crash is used up");
        let seeded = |seed: u64| {
            let f = Faults::new(FaultPlan {
                seed,
                kafka_publish_failure_rate: 0.5,
                ..Default::default()
            })
            .unwrap();
            (0..64).map(|_| f.fail_publish()).collect::<Vec<_>>()
        };
        assert_eq!(seeded(3), seeded(3), "the same seed fails the same publishes");
    }

    #[test]
    fn invalid_plans_are_refused_with_the_field_named() {
        assert!(
            FaultPlan::from_json(r#"{"http_error_rate":1.5}"#)
                .unwrap_err()
                .contains("http_error_rate")
        );
        assert!(
            FaultPlan::from_json(r#"{"http_latency_ms":3600000}"#)
                .unwrap_err()
                .contains("http_latency_ms")
        );
        assert!(
            FaultPlan::from_json(r#"{"drop_trace_context":["kitchen"]}"#)
                .unwrap_err()
                .contains("kitchen")
        );
        assert!(
            FaultPlan::from_json(r#"{"http_eror_rate":0.5}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            FaultPlan::from_json(r#"{"business_failure_rate":{"oven":-0.1}}"#)
                .unwrap_err()
                .contains("oven")
        );
    }

    async fn call(app: &Router, method: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut req = http::Request::builder().method(method).uri("/admin/faults");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let response = app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        if status >= 400 {
            assert_eq!(
                content_type, "application/problem+json",
                "errors are problem+json"
            );
        }
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_admin_api_needs_the_token_and_validates_plans() {
        let faults = Faults::none();
        let app = admin_router(faults.clone(), Some("s3cret".into()));
        assert_eq!(call(&app, "GET", None, "").await.0, 401);
        assert_eq!(call(&app, "GET", Some("wrong"), "").await.0, 401);
        let (status, body) = call(
            &app,
            "PUT",
            Some("s3cret"),
            r#"{"seed":1,"http_error_rate":0.25}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            faults.plan().http_error_rate,
            0.25,
            "the live handle sees the new plan"
        );
        assert_eq!(
            call(&app, "PUT", Some("s3cret"), r#"{"http_error_rate":2}"#)
                .await
                .0,
            422
        );
        assert_eq!(call(&app, "PUT", Some("s3cret"), "not json").await.0, 400);
        assert_eq!(
            faults.plan().http_error_rate,
            0.25,
            "a refused plan changes nothing"
        );
        assert_eq!(call(&app, "DELETE", Some("s3cret"), "").await.0, 204);
        assert_eq!(faults.plan(), FaultPlan::default());
    }

    #[tokio::test]
    async fn without_a_token_the_admin_api_is_disabled() {
        let app = admin_router(Faults::none(), None);
        assert_eq!(call(&app, "GET", Some(""), "").await.0, 403);
    }

    #[tokio::test]
    async fn http_faults_fail_business_routes_but_never_health_or_admin() {
        let faults = Faults::new(plan(r#"{"http_error_rate":1.0}"#)).unwrap();
        let app = Router::new()
            .route("/orders", get(|| async { "ok" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(faults, inject_http_faults));
        let status = |path: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(http::Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(status("/orders").await, 500);
        assert_eq!(status("/healthz").await, 200);
    }
}
