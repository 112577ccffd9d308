//! IOTPay's general API (v1: WeChat Pay, Alipay, UnionPay): what tells its notifications apart
//! and the fields only it carries (docs/iotpay/V1.md).

use super::params::Params;
use crate::domain::InvalidValue;

/// The answer IOTPay's v1 platform waits for (the card APIs want `SUCCESS`).
pub const ACK: &str = "success";

/// Fields only a v1 notification carries: the channel (documented `channelId`, sent as
/// `channeId`), the wallet's own transaction number, and the notify type. The card APIs have
/// none of them (v3's channel field is `channel`).
pub const MARKERS: [&str; 4] = ["channelId", "channeId", "channelOrderNo", "backType"];

/// Longest `paySuccTime` accepted: milliseconds since the epoch have 13 digits until 2286.
const MAX_MILLIS_DIGITS: usize = 14;

/// True when a v1-only field is present with a value (an empty value is not signed, so it proves nothing).
pub fn has_marker(params: &Params) -> bool {
    MARKERS.iter().any(|f| params.text(f).is_some())
}

/// The channel (`WX_JSAPI`, `ALIPAY_WAP`, ...) from `channelId` or IOTPay's `channeId` spelling;
/// both present with different values is refused, since which one is meant is unknowable.
pub fn channel(params: &Params) -> Result<Option<&str>, InvalidValue> {
    match (params.text("channelId"), params.text("channeId")) {
        (Some(a), Some(b)) if a != b => Err(InvalidValue(format!("channelId `{a}` and channeId `{b}` differ"))),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// Checks a v1 `paySuccTime`: whole milliseconds since the Unix epoch.
pub fn check_millis(raw: &str) -> Result<i64, InvalidValue> {
    if raw.is_empty() || raw.len() > MAX_MILLIS_DIGITS || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidValue("not whole milliseconds since the epoch".into()));
    }
    let ms: i64 = raw.parse().map_err(|_| InvalidValue("out of range".into()))?;
    jiff::Timestamp::from_millisecond(ms).map_err(|_| InvalidValue("out of range".into()))?;
    Ok(ms)
}

/// A checked `paySuccTime` as RFC 3339 UTC (`None` when it is not one).
pub fn millis_to_rfc3339(raw: &str) -> Option<String> {
    let ms = check_millis(raw).ok()?;
    jiff::Timestamp::from_millisecond(ms).ok().map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> Params {
        Params::from_form(s.as_bytes()).unwrap()
    }

    #[test]
    fn markers_count_only_with_a_value() {
        assert!(has_marker(&form("channeId=WX_JSAPI")));
        assert!(has_marker(&form("channelId=ALIPAY_WAP")));
        assert!(has_marker(&form("channelOrderNo=4200000")));
        assert!(has_marker(&form("backType=2")));
        assert!(!has_marker(&form("channelId=&channeId=&backType=")));
        assert!(!has_marker(&form("channel=PF_CC&payType=pay")));
    }

    #[test]
    fn channel_comes_from_either_spelling() {
        assert_eq!(channel(&form("channeId=WX_JSAPI")).unwrap(), Some("WX_JSAPI"));
        assert_eq!(channel(&form("channelId=WX_NATIVE")).unwrap(), Some("WX_NATIVE"));
        assert_eq!(channel(&form("channelId=WX_NATIVE&channeId=WX_NATIVE")).unwrap(), Some("WX_NATIVE"));
        assert_eq!(channel(&form("channelId=&channeId=WX_JSAPI")).unwrap(), Some("WX_JSAPI"));
        assert_eq!(channel(&form("amount=1")).unwrap(), None);
        assert!(channel(&form("channelId=WX_NATIVE&channeId=ALIPAY_WAP")).is_err());
    }

    #[test]
    fn pay_time_is_milliseconds_since_the_epoch() {
        assert_eq!(millis_to_rfc3339("1601352239000").as_deref(), Some("2020-09-29T04:03:59Z"));
        assert_eq!(millis_to_rfc3339("1601352239123").as_deref(), Some("2020-09-29T04:03:59.123Z"));
        assert_eq!(millis_to_rfc3339("0").as_deref(), Some("1970-01-01T00:00:00Z"));
        for bad in ["", "2020-09-29 04:03:59", "-1", "+1601352239000", "1601352239.5", "1e12", "999999999999999"] {
            assert!(check_millis(bad).is_err(), "{bad}");
            assert_eq!(millis_to_rfc3339(bad), None, "{bad}");
        }
    }
}
