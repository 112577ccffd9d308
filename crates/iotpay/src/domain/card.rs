//! Card data: full card numbers never leave the receiving process.

/// Masks a full card number (13-19 digits, spaces or dashes allowed) to first 6 / last 4;
/// anything else (already masked, or not a card number) is returned unchanged.
pub fn mask_pan(value: &str) -> std::borrow::Cow<'_, str> {
    let digits: String = value.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let is_pan = (13..=19).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && value.chars().all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    if !is_pan {
        return std::borrow::Cow::Borrowed(value);
    }
    let n = digits.len();
    let mut out = String::with_capacity(n);
    out.push_str(&digits[..6]);
    out.extend(std::iter::repeat_n('*', n - 10));
    out.push_str(&digits[n - 4..]);
    std::borrow::Cow::Owned(out)
}

/// True for parameter names that carry a card number.
pub fn is_card_number_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "pan" || (lower.contains("card") && (lower.contains("num") || lower.contains("no")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_full_pans_only() {
        assert_eq!(mask_pan("4111111111111111"), "411111******1111");
        assert_eq!(mask_pan("4111 1111 1111 1111"), "411111******1111");
        assert_eq!(mask_pan("4111111111111"), "411111***1111");
        assert_eq!(mask_pan("4111111111111111111"), "411111*********1111");
        assert_eq!(mask_pan("432567******2266"), "432567******2266");
        assert_eq!(mask_pan("450116XXXXXX7214"), "450116XXXXXX7214");
        assert_eq!(mask_pan("411111111111"), "411111111111", "12 digits is not a PAN");
        assert_eq!(mask_pan("41111111111111111111"), "41111111111111111111", "20 digits is not a PAN");
        assert_eq!(mask_pan(""), "");
    }

    #[test]
    fn card_fields_are_recognized() {
        for f in ["cardNum", "cardNumber", "card_no", "PAN"] {
            assert!(is_card_number_field(f), "{f}");
        }
        for f in ["payOrderId", "transNum", "cardType", "amount"] {
            assert!(!is_card_number_field(f), "{f}");
        }
    }
}
