//! Development tools for iotpay-notify. None of them is part of the service: a simulated IOTPay
//! ([`sandbox`]), a webhook receiver ([`sink`]), throwaway PostgreSQL clusters ([`pgcluster`],
//! [`testing`]), load generators ([`bench`]) and the demo ([`demo`]); [`env`](mod@env) reads the service's
//! settings with the service's parsers, and [`os`] holds the few system calls the fault tests
//! need, so that only this crate links `libc`.

#![warn(missing_docs)]

// The service's modules under their own names, so tools read like the service's code.
use iotpay_notify::{config, domain, duration, forward, iotpay, service, store, telemetry};

pub mod bench;
pub mod cli;
pub mod demo;
pub mod env;
pub mod os;
pub mod pgcluster;
pub mod sandbox;
pub mod sink;
pub mod testing;
