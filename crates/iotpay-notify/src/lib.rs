//! iotpay-notify: receives IOTPay notifications, verifies their sign, stores them idempotently,
//! confirms them with IOTPay's query API and publishes normalized events.
//!
//! The modules follow the flow: [`ingest`] (receive, verify via [`iotpay`]) → [`store`] →
//! [`confirm`] → [`forward`]. The wire protocol itself is the [`iotpay`] crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use iotpay;
pub use iotpay::domain;

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod confirm;
pub mod duration;
pub mod env;
#[cfg(all(feature = "fault-injection", unix))]
pub mod fault;
pub mod forward;
pub mod health;
pub mod healthcheck;
pub mod ingest;
pub mod ops;
pub mod pressure;
pub mod readiness;
pub mod reconcile;
pub mod redact;
pub mod serve;
pub mod service;
pub mod store;
pub mod telemetry;
