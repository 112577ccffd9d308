//! Reconciliation (issue 14): orders the merchant registered as expected are queried at IOTPay
//! by `mchOrderNo` when no notification arrived, so a payment whose notification was lost is
//! still found, confirmed and forwarded.

pub mod rules;
pub mod settings;
pub mod worker;

pub use settings::ReconcileSettings;
pub use worker::{Parts, Reconciler};
