//! The admin API of the fault plan: read, replace or clear it at run time, behind a bearer token,
//! and the rule that decides at start whether a token may be used on the address the service
//! listens on ([`admin_access`]).
//!
//! # Why a token can be refused
//! The fault plan decides whether orders fail, so whoever holds the token can break the shop. The
//! workshop's token ([`WORKSHOP_ADMIN_TOKEN`]) is printed in the README and used by every attendee:
//! fine on a laptop where the shop listens on loopback only, a published password anywhere else. So a
//! service listening beyond loopback refuses to start with it, or with any token shorter than
//! [`MIN_TOKEN_CHARS_BEYOND_LOOPBACK`], instead of running changeable by anyone who read the docs.
//! Unset (or blank), the admin API is off, which is always safe.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::live::Faults;
use super::plan::FaultPlan;
use crate::problem::Problem;

/// The workshop's admin token, published in the README and the workshop scripts: accepted only on a
/// service that listens on loopback ([`admin_access`]).
pub const WORKSHOP_ADMIN_TOKEN: &str = "pizza-workshop";

/// The fewest characters of an admin token on a service that listens beyond loopback: a short token
/// is guessed as easily as a published one is read. `openssl rand -hex 16` gives 32.
pub const MIN_TOKEN_CHARS_BEYOND_LOOPBACK: usize = 12;

/// The configured admin token, if it is one: a blank value (empty or only whitespace, as an unset
/// `${PIZZA_ADMIN_TOKEN:-}` gives) counts as unset.
pub fn configured_token(token: Option<&str>) -> Option<&str> {
    token.filter(|t| !t.trim().is_empty())
}

/// Whether the fault admin API is on, as [`admin_access`] decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAccess {
    /// No token: the admin API answers 403 to everyone.
    Off,
    /// A token the listen address allows: the admin API answers whoever presents it.
    On,
}

impl fmt::Display for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::On => "on",
        })
    }
}

/// Why a service refuses to start with its admin token. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    /// The workshop's published token, on an address reachable beyond loopback.
    #[error(
        "PIZZA_ADMIN_TOKEN is the workshop's published token and the service listens on {addr}, \
         beyond loopback, where anyone who read the docs could change its fault plan: choose a token \
         of your own, the same for order, kitchen and delivery (PIZZA_ADMIN_TOKEN=$(openssl rand -hex 16)), \
         or unset PIZZA_ADMIN_TOKEN to turn the fault admin API off"
    )]
    Published {
        /// The listen address.
        addr: SocketAddr,
    },
    /// A token too short to resist guessing, on an address reachable beyond loopback.
    #[error(
        "PIZZA_ADMIN_TOKEN has {chars} characters and the service listens on {addr}, beyond loopback, \
         where a token that short can be guessed: use at least {min}, the same for order, kitchen and \
         delivery (PIZZA_ADMIN_TOKEN=$(openssl rand -hex 16)), or unset PIZZA_ADMIN_TOKEN to turn the \
         fault admin API off",
        min = MIN_TOKEN_CHARS_BEYOND_LOOPBACK
    )]
    TooShort {
        /// The listen address.
        addr: SocketAddr,
        /// How many characters the token has.
        chars: usize,
    },
}

/// Decides at start whether the admin API may run with `token` on a service listening on `addr`.
///
/// Unset or blank: off. On loopback (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`), any token: only
/// this machine can reach it, and the workshop's one line keeps working. Anywhere else (`0.0.0.0`
/// and `::` included: they are every interface), the workshop's published token and tokens shorter
/// than [`MIN_TOKEN_CHARS_BEYOND_LOOPBACK`] are refused.
pub fn admin_access(token: Option<&str>, addr: SocketAddr) -> Result<AdminAccess, AdminTokenError> {
    let Some(token) = configured_token(token) else {
        return Ok(AdminAccess::Off);
    };
    if addr.ip().to_canonical().is_loopback() {
        return Ok(AdminAccess::On);
    }
    if token == WORKSHOP_ADMIN_TOKEN {
        return Err(AdminTokenError::Published { addr });
    }
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS_BEYOND_LOOPBACK {
        return Err(AdminTokenError::TooShort { addr, chars });
    }
    Ok(AdminAccess::On)
}

#[derive(Clone)]
struct AdminState {
    faults: Faults,
    token: Option<Arc<str>>,
}

/// The admin API: `GET`, `PUT` and `DELETE` on `/admin/faults`, each requiring
/// `Authorization: Bearer <token>`. Without a configured token (unset or blank, see
/// [`configured_token`]) the API answers 403 to everyone.
pub fn admin_router(faults: Faults, token: Option<String>) -> Router {
    let state = AdminState {
        faults,
        token: configured_token(token.as_deref()).map(Arc::from),
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
    async fn a_blank_token_disables_the_admin_api_like_an_unset_one() {
        for blank in ["", "  ", "\t"] {
            let app = admin_router(Faults::none(), Some(blank.into()));
            assert_eq!(call(&app, "GET", Some(blank), "").await.0, 403, "{blank:?}");
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const OWN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn on_loopback_any_token_is_accepted_the_workshop_one_too() {
        for a in [
            "127.0.0.1:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            for token in [WORKSHOP_ADMIN_TOKEN, "short", OWN] {
                assert_eq!(
                    admin_access(Some(token), addr(a)),
                    Ok(AdminAccess::On),
                    "{a} {token}"
                );
            }
        }
    }

    #[test]
    fn beyond_loopback_the_workshop_token_is_refused() {
        for a in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.168.1.20:8080",
            "[fe80::1]:8080",
            "[::ffff:10.0.0.1]:8080",
        ] {
            assert_eq!(
                admin_access(Some(WORKSHOP_ADMIN_TOKEN), addr(a)),
                Err(AdminTokenError::Published { addr: addr(a) }),
                "{a}"
            );
        }
    }

    #[test]
    fn beyond_loopback_a_short_token_is_refused_and_a_long_one_accepted() {
        let lan = addr("10.1.2.3:8081");
        let short = "a".repeat(MIN_TOKEN_CHARS_BEYOND_LOOPBACK - 1);
        assert_eq!(
            admin_access(Some(&short), lan),
            Err(AdminTokenError::TooShort {
                addr: lan,
                chars: MIN_TOKEN_CHARS_BEYOND_LOOPBACK - 1
            })
        );
        // Characters, not bytes: eleven two-byte letters are still too short.
        assert!(admin_access(Some(&"é".repeat(MIN_TOKEN_CHARS_BEYOND_LOOPBACK - 1)), lan).is_err());
        let just_enough = "a".repeat(MIN_TOKEN_CHARS_BEYOND_LOOPBACK);
        assert_eq!(admin_access(Some(&just_enough), lan), Ok(AdminAccess::On));
        assert_eq!(admin_access(Some(OWN), addr("0.0.0.0:8080")), Ok(AdminAccess::On));
    }

    #[test]
    fn unset_or_blank_is_off_wherever_the_service_listens() {
        for a in ["127.0.0.1:8080", "0.0.0.0:8080", "[::]:8080", "192.168.1.20:8080"] {
            for token in [None, Some(""), Some("   ")] {
                assert_eq!(
                    admin_access(token, addr(a)),
                    Ok(AdminAccess::Off),
                    "{a} {token:?}"
                );
            }
        }
    }

    #[test]
    fn the_refusal_names_the_variable_and_a_way_out_but_never_the_token() {
        let lan = addr("0.0.0.0:8080");
        let secret = "s3cret";
        for error in [
            admin_access(Some(WORKSHOP_ADMIN_TOKEN), lan).unwrap_err(),
            admin_access(Some(secret), lan).unwrap_err(),
        ] {
            let message = error.to_string();
            assert!(message.contains("PIZZA_ADMIN_TOKEN="), "{message}");
            assert!(message.contains("0.0.0.0:8080"), "{message}");
            assert!(!message.contains(WORKSHOP_ADMIN_TOKEN), "{message}");
            assert!(!message.contains(secret), "{message}");
        }
    }
}
