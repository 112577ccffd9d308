//! The operator console: server-rendered pages on the admin listener, signed in with an admin
//! token and kept by an HttpOnly, SameSite=Strict session cookie. Every state-changing form
//! carries the session's CSRF token. Routes and session handling live here, HTML in [`pages`].

mod chart;
mod pages;
mod routes;

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::AdminState;

/// How long a console session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "iotpay_admin_session";

/// The console's routes.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(routes::overview))
        .route("/login", get(routes::login_form).post(routes::login))
        .route("/logout", post(routes::logout))
        .route("/events", get(routes::events))
        .route("/events/{event_id}", get(routes::event))
        .route("/events/{event_id}/redrive", post(routes::redrive))
        .route("/events/{event_id}/recheck", post(routes::recheck))
        .route("/endpoints/redrive", post(routes::redrive_endpoint))
        .route("/counts", get(routes::counts))
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("assets/console.css")) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("assets/console.js")) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// A signed-in operator: the session cookie and the CSRF token of its forms.
pub struct Session {
    /// The cookie's value.
    pub cookie: String,
    /// The CSRF token forms must carry.
    pub csrf: String,
}

impl Session {
    /// True when `presented` is this session's CSRF token.
    pub fn csrf_ok(&self, state: &AdminState, presented: &str) -> bool {
        state.tokens.csrf_valid(&self.cookie, presented)
    }
}

/// The value of the session cookie in `headers`, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

impl FromRequestParts<AdminState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        let now = chrono::Utc::now().timestamp();
        match session_cookie(&parts.headers) {
            Some(cookie) if state.tokens.session_valid(&cookie, now) => {
                let csrf = state.tokens.csrf_for(&cookie);
                Ok(Session { cookie, csrf })
            }
            _ => Err(Redirect::to("/login").into_response()),
        }
    }
}
