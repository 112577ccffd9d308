//! Forwarding confirmed events to internal endpoints (Standard Webhooks).

pub mod body;
pub mod settings;
pub mod signature;
pub mod worker;

pub use settings::ForwardSettings;
pub use signature::ForwardSecret;
pub use worker::Forwarder;
