//! The merchants a deployment accepts and their keys.

use std::collections::HashMap;

use crate::domain::{MchId, MerchantKey};

/// Length of a merchant key. IOTPay's documents do not pin the key's form (API.md only says it is
/// appended as `&key=<merchant key>`); IOTPay's MD5 sign is WeChat Pay's v2 scheme, whose API key
/// is 32 letters and digits, and the keys IOTPay hands out follow it. Checking that form at start
/// turns a placeholder, a truncated paste or a swapped pair into a configuration error instead
/// of a service that answers 401 to every real notification.
pub const KEY_LEN: usize = 32;

/// True for an IOTPay mchId: ASCII digits (every documented mchId, e.g. `10000701`).
pub fn is_mch_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 30 && s.bytes().all(|b| b.is_ascii_digit())
}

/// True for a merchant key of IOTPay's form: [`KEY_LEN`] ASCII letters and digits.
pub fn is_merchant_key(s: &str) -> bool {
    s.len() == KEY_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The merchants this deployment accepts and their keys (several keys = rotation).
#[derive(Debug, Clone, Default)]
pub struct Merchants {
    keys: HashMap<MchId, Vec<MerchantKey>>,
}

impl Merchants {
    /// Parses `MCH_ID:KEY,MCH_ID:KEY`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut keys: HashMap<MchId, Vec<MerchantKey>> = HashMap::new();
        for (i, pair) in s.split(',').map(str::trim).enumerate() {
            if pair.is_empty() {
                continue;
            }
            let (id, key) = pair.split_once(':').ok_or_else(|| format!("entry {} is not MCH_ID:KEY", i + 1))?;
            let (id, key) = (id.trim(), key.trim());
            if key.is_empty() {
                return Err(format!("entry {} has an empty key", i + 1));
            }
            // Neither part is echoed when the id is wrong: a swapped pair puts the key first.
            if !is_mch_id(id) {
                let hint = if is_mch_id(key) { " (the pair looks swapped)" } else { "" };
                return Err(format!(
                    "entry {}: the merchant id must be IOTPay's mchId, digits only, e.g. 10000701; the form is \
                     MCH_ID:KEY{hint}",
                    i + 1
                ));
            }
            let id = MchId::parse(id).map_err(|e| format!("entry {}: {e}", i + 1))?;
            if !is_merchant_key(key) {
                return Err(format!(
                    "entry {} (merchant {id}): the key must be the {KEY_LEN} letters and digits IOTPay issued \
                     (a placeholder such as replace-with-your-merchant-key is refused)",
                    i + 1
                ));
            }
            keys.entry(id).or_default().push(MerchantKey::new(key));
        }
        if keys.is_empty() {
            return Err("no MCH_ID:KEY entries".into());
        }
        Ok(Self { keys })
    }

    /// Builds from explicit pairs (tests, demo).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut keys: HashMap<MchId, Vec<MerchantKey>> = HashMap::new();
        for (id, key) in pairs {
            keys.entry(MchId::parse(id).expect("valid mch id")).or_default().push(MerchantKey::new(key));
        }
        Self { keys }
    }

    /// Every key valid for verifying the merchant's messages; `None` if the merchant is unknown.
    pub fn keys(&self, mch_id: &str) -> Option<&[MerchantKey]> {
        MchId::parse(mch_id).ok().and_then(|id| self.keys.get(&id)).map(Vec::as_slice)
    }

    /// The key that signs outgoing requests: the first one listed.
    pub fn signing_key(&self, mch_id: &MchId) -> Option<&MerchantKey> {
        self.keys.get(mch_id).and_then(|k| k.first())
    }

    /// Configured merchant ids.
    pub fn ids(&self) -> impl Iterator<Item = &MchId> {
        self.keys.keys()
    }
}
