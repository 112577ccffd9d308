//! iotpay-notify: receives IOTPay notifications, verifies their sign, stores them idempotently,
//! confirms them with IOTPay's query API and publishes normalized events.
//!
//! The modules follow the flow: [`ingest`] (receive, verify via [`iotpay`]) → [`store`].

#![warn(missing_docs)]

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod confirm;
pub mod demo;
pub mod domain;
pub mod forward;
pub mod health;
pub mod ingest;
pub mod iotpay;
pub mod ops;
pub mod ops_orphans;
pub mod pgcluster;
pub mod pressure;
pub mod redact;
pub mod sandbox;
pub mod serve;
pub mod service;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod testing;
