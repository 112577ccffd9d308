//! Everything about IOTPay's wire format: parameters, sign, notifications.

pub mod notification;
pub mod params;
pub mod query;
pub mod sign;

pub use notification::{detect_version, mask_card_numbers, Notification, NotificationError};
pub use params::{ParamValue, Params, ParamsError};
