//! Scripted answers: what a test tells the sink to answer instead of its own 200.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An answer the sink gives a correctly signed event instead of its own, when scripted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// Response headers besides the body's type and length (e.g. `retry-after`).
    pub headers: HeaderMap,
    /// The response body.
    pub body: String,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    /// `status` with `body`, at once.
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self { status, headers: HeaderMap::new(), body: body.into(), delay: Duration::ZERO }
    }

    /// The same with one more response header; panics on a name or value HTTP does not allow
    /// (a mistake in the script, not in what the sink receives).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::try_from(name).expect("a valid header name");
        self.headers.append(name, HeaderValue::try_from(value).expect("a valid header value"));
        self
    }

    /// The same, given after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, self.headers, self.body).into_response()
    }
}

/// What a test told the sink to answer.
#[derive(Default)]
pub(super) struct Answers {
    /// Per path, the answers for the next correctly signed events, in order.
    pub(super) scripts: HashMap<String, VecDeque<Answer>>,
    /// Per path, the answer once its script is used up.
    pub(super) defaults: HashMap<String, Answer>,
    /// For paths with neither; `None`: the sink's own 200.
    pub(super) fallback: Option<Answer>,
    /// Added before every answer.
    pub(super) delay: Duration,
}

impl Answers {
    pub(super) fn next(&mut self, path: &str) -> Option<Answer> {
        let scripted = self.scripts.get_mut(path).and_then(VecDeque::pop_front);
        scripted.or_else(|| self.defaults.get(path).cloned()).or_else(|| self.fallback.clone())
    }
}
