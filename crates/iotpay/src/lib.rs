//! IOTPay's wire protocol, free of any server, database or configuration: parameters, the MD5
//! sign, notifications (v3, v2, v1), merchant keys and the query clients. A merchant's own Rust code
//! can use it as it is.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod domain;
pub mod merchants;
pub mod notification;
pub mod params;
pub mod query;
pub mod sign;
pub mod v1;

/// An IANA time zone: IOTPay's card APIs send `paySuccTime` without one.
pub use jiff::tz::TimeZone;
pub use merchants::Merchants;
pub use notification::{detect_version, mask_card_numbers, Notification, NotificationError};
pub use params::{ParamValue, Params, ParamsError};
