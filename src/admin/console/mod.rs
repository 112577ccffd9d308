//! The operator console: server-rendered pages behind a session cookie.

use std::time::Duration;

use axum::Router;

use super::AdminState;

/// How long a console session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The console's routes.
pub fn routes() -> Router<AdminState> {
    Router::new()
}
