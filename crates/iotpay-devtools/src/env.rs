//! The service's settings the tools read too, parsed by the service's own parsers so a value
//! means the same to both.

use anyhow::Context;

use crate::iotpay::Merchants;

/// `IOTPAY_MERCHANTS`, as the service reads it; `None` when unset or blank.
pub fn merchants() -> anyhow::Result<Option<Merchants>> {
    match std::env::var("IOTPAY_MERCHANTS") {
        Ok(listed) if !listed.trim().is_empty() => {
            Merchants::parse(&listed).map(Some).map_err(anyhow::Error::msg).context("IOTPAY_MERCHANTS")
        }
        _ => Ok(None),
    }
}
