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
    /// The ids in the order first listed: "the first merchant" means the same on every run.
    listed: Vec<MchId>,
}

impl Merchants {
    /// Parses `MCH_ID:KEY,MCH_ID:KEY`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut merchants = Self::default();
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
            merchants.add(id, MerchantKey::new(key));
        }
        if merchants.keys.is_empty() {
            return Err("no MCH_ID:KEY entries".into());
        }
        Ok(merchants)
    }

    /// Builds from explicit pairs (tests, demo).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut merchants = Self::default();
        for (id, key) in pairs {
            merchants.add(MchId::parse(id).expect("valid mch id"), MerchantKey::new(key));
        }
        merchants
    }

    fn add(&mut self, id: MchId, key: MerchantKey) {
        if !self.keys.contains_key(&id) {
            self.listed.push(id.clone());
        }
        self.keys.entry(id).or_default().push(key);
    }

    /// Every key valid for verifying the merchant's messages; `None` if the merchant is unknown.
    pub fn keys(&self, mch_id: &str) -> Option<&[MerchantKey]> {
        MchId::parse(mch_id).ok().and_then(|id| self.keys.get(&id)).map(Vec::as_slice)
    }

    /// The key that signs outgoing requests: the first one listed.
    pub fn signing_key(&self, mch_id: &MchId) -> Option<&MerchantKey> {
        self.keys.get(mch_id).and_then(|k| k.first())
    }

    /// Configured merchant ids, in the order listed.
    pub fn ids(&self) -> impl Iterator<Item = &MchId> {
        self.listed.iter()
    }

    /// The first merchant listed and its signing key (what the development tools act as).
    pub fn first(&self) -> Option<(&MchId, &MerchantKey)> {
        let id = self.listed.first()?;
        Some((id, self.signing_key(id)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D";
    const K2: &str = "0A1B2C3D4E5F60718293A4B5C6D7E8F9";

    #[test]
    fn the_first_merchant_is_the_first_listed_with_its_first_key() {
        // Enough ids that a hash map's order would not be the listed one by chance.
        let ids: Vec<String> = (0..16).map(|i| format!("{}", 90 - i)).collect();
        let listed: Vec<String> = ids.iter().map(|id| format!("{id}:{K1}")).collect();
        let m = Merchants::parse(&format!("{},{}:{K2}", listed.join(","), ids[0])).unwrap();
        assert_eq!(m.ids().map(MchId::as_str).collect::<Vec<_>>(), ids);
        let (id, key) = m.first().unwrap();
        assert_eq!((id.as_str(), key.expose()), ("90", K1), "the first key signs; the second is a rotation");
        assert!(Merchants::default().first().is_none());
    }
}
