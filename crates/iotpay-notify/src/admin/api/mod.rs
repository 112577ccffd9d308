//! The JSON API under `/api/v1`, shared by scripts and the console. Every route is behind the
//! bearer-token middleware of [`crate::admin::auth`]; its errors are [`ApiError`]s.

pub mod deliveries;
pub mod events;
pub mod input;
pub mod openapi;
pub mod orders;
pub mod stats;

use axum::routing::{get, post};
use axum::Router;

#[allow(unused_imports)]
use super::error::ApiError;
use super::AdminState;

/// The `/api` routes (nested under `/api` by the admin router). Add a resource with its own
/// module and one `.route` line here.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{event_id}", get(events::show))
        .route("/v1/events/{event_id}/recheck", post(events::recheck))
        .route("/v1/deliveries/redrive", post(deliveries::redrive))
        .route("/v1/stats", get(stats::stats))
        .route("/v1/orders", post(orders::register))
        .route("/v1/orders/{mch_id}/{mch_order_no}", get(orders::show))
}
