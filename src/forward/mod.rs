//! Forwarding confirmed events to internal endpoints (Standard Webhooks).

pub mod signature;
