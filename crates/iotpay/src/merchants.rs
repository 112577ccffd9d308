//! The merchants a deployment accepts and their keys.

use std::collections::HashMap;

use crate::domain::{MchId, MerchantKey};

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
            let id = MchId::parse(id.trim()).map_err(|e| format!("entry {}: {e}", i + 1))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("entry {} has an empty key", i + 1));
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
