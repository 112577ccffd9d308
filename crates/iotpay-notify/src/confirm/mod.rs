//! Confirmation: every stored event is checked against IOTPay's query API before anyone may
//! trust it. Only an event IOTPay's own answer agrees with becomes `confirmed` (and only those
//! reach the forwarding outbox); a contradiction is `rejected`; an inconclusive answer is asked
//! again with backoff until the give-up window, then `unconfirmed`.
//!
//! The worker wakes on `LISTEN iotpay_events_pending` (a trigger notifies once per statement that
//! inserted new events), sleeps until the next retry is due, and polls only as a fallback. Claims go through
//! [`crate::store::confirm`] with a lease, so any number of replicas can run it.

mod rules;
mod settings;
mod worker;

pub use rules::{backoff, decide, never_confirmable, order_answer, settle_not_found, Decision};
pub use settings::ConfirmSettings;
pub use worker::{Confirmer, SHUTDOWN_GRACE};
