//! Console handlers: read the request, make one store call, render a page or redirect.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;

use super::{pages, Session, SESSION_COOKIE};
use crate::admin::api::input;
use crate::admin::AdminState;
use crate::store::admin::{self as queries, Cursor, EventFilter, Recheck};
use crate::store::ops::{self, RedriveFilter};
use crate::store::EventStatus;

/// Events per console page.
const PAGE: i64 = 50;

/// A database failure as a page: `503` when the database could not be reached (try again),
/// `500` when it refused the statement (trying again will not help).
fn unavailable(e: sqlx::Error) -> Response {
    if crate::admin::error::is_unavailable(&e) {
        tracing::warn!(error = %e, "console: database unavailable");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(pages::message("Database unavailable", "The database did not answer. Try again shortly.")),
        )
            .into_response()
    } else {
        tracing::error!(error = %e, "console: the database refused a statement");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::message("Internal error", "The database refused the request. The service log says why.")),
        )
            .into_response()
    }
}

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Html(pages::message("Bad request", message))).into_response()
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(pages::message(
            "Form expired",
            "This form is not valid for your session. Go back, reload the page and try again.",
        )),
    )
        .into_response()
}

/// `GET /login`.
pub async fn login_form() -> Html<String> {
    Html(pages::login(None))
}

/// The sign-in form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: a valid token opens a session.
pub async fn login(State(state): State<AdminState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let expires = chrono::Utc::now().timestamp() + state.session_ttl.as_secs() as i64;
    let Some(cookie) = state.tokens.open_session(form.token.trim(), expires) else {
        metrics::counter!("iotpay_admin_auth_failures_total", "reason" => "console_sign_in").increment(1);
        return (StatusCode::UNAUTHORIZED, Html(pages::login(Some("That token is not valid.")))).into_response();
    };
    // Secure only behind a TLS-terminating proxy: on plain http the browser would drop it.
    let secure = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let set = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        state.session_ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, set)], Redirect::to("/events")).into_response()
}

/// A form that only carries the CSRF token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /logout`.
pub async fn logout(State(state): State<AdminState>, session: Session, Form(form): Form<CsrfForm>) -> Response {
    if !session.csrf_ok(&state, &form.csrf) {
        return forbidden();
    }
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

/// `GET /`: counts, the last hour, endpoints.
pub async fn overview(State(state): State<AdminState>, session: Session) -> Response {
    match queries::stats(&state.pool).await {
        Ok(stats) => Html(pages::overview(&session, &stats)).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /counts`: events per status, for the live counts.
pub async fn counts(State(state): State<AdminState>, _session: Session) -> Response {
    match queries::status_counts(&state.pool).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => unavailable(e),
    }
}

/// The events page's query.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
}

/// `GET /events`: search by any id, filter by status, newest first.
pub async fn events(
    State(state): State<AdminState>,
    session: Session,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else { return bad("Unknown search parameter.") };
    let q = query.q.trim().to_owned();
    // The API's rule for ids: a NUL or other control character never reaches the database.
    if input::text("q", &q).is_err() {
        return bad("Search for one id: at most 128 printable characters.");
    }
    let status = match query.status.trim() {
        "" => None,
        given => match EventStatus::parse(given) {
            Some(s) => Some(s),
            None => return bad("Unknown status."),
        },
    };
    let cursor: Option<Cursor> = if query.cursor.is_empty() {
        None
    } else {
        match input::decode_cursor("cursor", &query.cursor) {
            Ok(c) => Some(c),
            Err(_) => return bad("Malformed page link."),
        }
    };
    let filter = EventFilter { any_id: (!q.is_empty()).then(|| q.clone()), status, ..Default::default() };
    let (rows, counts) = match tokio::try_join!(
        queries::list_events(&state.pool, &filter, cursor.as_ref(), PAGE),
        queries::status_counts(&state.pool)
    ) {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let mut rows = rows;
    let next = if rows.len() as i64 > PAGE {
        rows.truncate(PAGE as usize);
        rows.last().map(|r| {
            input::encode_cursor(&Cursor { created_at: r.event.created_at, event_id: r.event.event_id.clone() })
        })
    } else {
        None
    };
    Html(pages::events(&session, &q, status, &counts, &rows, next.as_deref())).into_response()
}

/// Notices shown after an action.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    #[serde(default)]
    done: String,
}

/// `GET /events/{event_id}`: the timeline of one event.
pub async fn event(
    State(state): State<AdminState>,
    session: Session,
    Path(event_id): Path<String>,
    notice: Result<Query<Notice>, QueryRejection>,
) -> Response {
    let Ok(event_id) = input::event_id("event_id", &event_id) else { return bad("Malformed event id.") };
    match ops::show_event(&state.pool, &event_id).await {
        Ok(Some(detail)) => {
            let done = notice.map(|Query(n)| n.done).unwrap_or_default();
            Html(pages::event(&session, &detail, &done)).into_response()
        }
        Ok(None) => {
            (StatusCode::NOT_FOUND, Html(pages::message("Not found", &format!("No event {event_id}.")))).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// A Redrive / Retry-now button of one delivery. It names the delivery by id: the endpoint URL
/// may carry a password and never travels through a page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveForm {
    csrf: String,
    delivery: i64,
    #[serde(default)]
    pending: Option<String>,
}

/// `POST /events/{event_id}/redrive`: one delivery (event × endpoint) back in the queue, due now.
pub async fn redrive(
    State(state): State<AdminState>,
    session: Session,
    Path(event_id): Path<String>,
    Form(form): Form<RedriveForm>,
) -> Response {
    if !session.csrf_ok(&state, &form.csrf) {
        return forbidden();
    }
    let Ok(event_id) = input::event_id("event_id", &event_id) else { return bad("Malformed event id.") };
    let filter = RedriveFilter {
        event_id: Some(&event_id),
        delivery_id: Some(form.delivery),
        include_pending: form.pending.is_some(),
        ..Default::default()
    };
    match ops::redrive_with(&state.pool, filter).await {
        Ok(rows) => {
            tracing::info!(event_id, redriven = rows.len(), "console redrive");
            Redirect::to(&format!("/events/{event_id}?done=redriven")).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /events/{event_id}/recheck`.
pub async fn recheck(
    State(state): State<AdminState>,
    session: Session,
    Path(event_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.csrf_ok(&state, &form.csrf) {
        return forbidden();
    }
    let Ok(event_id) = input::event_id("event_id", &event_id) else { return bad("Malformed event id.") };
    match queries::recheck(&state.pool, &event_id).await {
        Ok(Recheck::Queued) => Redirect::to(&format!("/events/{event_id}?done=rechecked")).into_response(),
        Ok(Recheck::Unknown) => {
            (StatusCode::NOT_FOUND, Html(pages::message("Not found", "No such event."))).into_response()
        }
        Ok(Recheck::NotUnconfirmed(s)) => (
            StatusCode::CONFLICT,
            Html(pages::message(
                "Not re-checked",
                &format!("The event is {s}; only unconfirmed events are re-checked."),
            )),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

/// The overview's "Redrive dead" button of one endpoint, named by one of its deliveries (the URL
/// never travels through a page).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointForm {
    csrf: String,
    delivery: i64,
}

/// `POST /endpoints/redrive`: every dead delivery of the endpoint of delivery `delivery`.
pub async fn redrive_endpoint(
    State(state): State<AdminState>,
    session: Session,
    Form(form): Form<EndpointForm>,
) -> Response {
    if !session.csrf_ok(&state, &form.csrf) {
        return forbidden();
    }
    let endpoint = match ops::delivery_endpoint(&state.pool, form.delivery).await {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, Html(pages::message("Not found", "No such delivery."))).into_response()
        }
        Err(e) => return unavailable(e),
    };
    match ops::redrive(&state.pool, Some(&endpoint), None).await {
        Ok(rows) => {
            tracing::info!(endpoint = %crate::forward::worker::endpoint_label(&endpoint), redriven = rows.len(), "console redrive");
            Redirect::to("/").into_response()
        }
        Err(e) => unavailable(e),
    }
}
