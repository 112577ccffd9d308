//! Everything about IOTPay's wire format: parameters, sign, notifications, queries (v3, v2, v1).

pub mod notification;
pub mod params;
pub mod query;
pub mod query_v1;
pub mod sign;
pub mod v1;

pub use notification::{detect_version, mask_card_numbers, Notification, NotificationError};
pub use params::{ParamValue, Params, ParamsError};
