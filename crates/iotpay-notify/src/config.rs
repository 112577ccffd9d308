//! Configuration from the environment (and `.env`), validated once at start.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::env::ConfigError;
use crate::env::{invalid, number};
// The types of `Config`'s fields, where its users find them; each lives with what it configures.
pub use crate::forward::ForwardSecret;
pub use crate::iotpay::Merchants;
pub use crate::telemetry::LogFormat;

/// Everything the service reads from its environment. Its `Debug` masks the user-info
/// (password) of every URL it holds.
#[derive(Clone)]
pub struct Config {
    /// Postgres URL (may hold a password: never logged).
    pub database_url: String,
    /// Most database connections per process.
    pub database_max_connections: u32,
    /// HTTP bind address.
    pub listen_addr: SocketAddr,
    /// Bind address of the admin listener (API and console).
    pub admin_listen_addr: SocketAddr,
    /// Admin bearer tokens; `None`: the admin listener does not start.
    pub admin_tokens: Option<crate::admin::auth::AdminTokens>,
    /// Accepted merchants and keys.
    pub merchants: Merchants,
    /// Base of the v3 API.
    pub v3_api_url: String,
    /// Base of the v2 API.
    pub v2_api_url: String,
    /// Base of the v1 (general: WeChat Pay, Alipay, UnionPay) API.
    pub v1_api_url: String,
    /// Internal endpoints receiving confirmed events.
    pub forward_urls: Vec<String>,
    /// Secret signing forwarded events; set whenever `forward_urls` is not empty.
    pub forward_secret: Option<ForwardSecret>,
    /// Retry schedule, timeout and concurrency of forwarding (`FORWARD_*`).
    pub forward: crate::forward::ForwardSettings,
    /// Zone of IOTPay's zone-less `paySuccTime`.
    pub iotpay_time_zone: crate::iotpay::TimeZone,
    /// Longest time a notification may wait for its database commit before answering 503.
    pub store_timeout: Duration,
    /// Allowlist, trusted proxies and failure budget of the notify route.
    pub guard: crate::ingest::guard::GuardSettings,
    /// Longest a notify request may take, body upload included (slow senders get 408).
    pub request_timeout: Duration,
    /// Most notify requests in progress at once; more are shed with 503 (IOTPay re-sends).
    pub max_concurrent_requests: usize,
    /// Header-read timeout and connection caps of the HTTP listener (`HTTP_*`).
    pub connections: crate::serve::ConnectionLimits,
    /// Group commit of notifications.
    pub ingest_batch: crate::ingest::settings::BatchSettings,
    /// Log format.
    pub log_format: LogFormat,
    /// Knobs of the confirmation worker.
    pub confirm: crate::confirm::ConfirmSettings,
    /// Knobs of reconciliation of expected orders.
    pub reconcile: crate::reconcile::ReconcileSettings,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let forward_urls: Vec<String> = self.forward_urls.iter().map(|u| crate::redact::mask_url(u)).collect();
        f.debug_struct("Config")
            .field("database_url", &crate::redact::mask_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("listen_addr", &self.listen_addr)
            .field("merchants", &self.merchants.ids().collect::<Vec<_>>())
            .field("v3_api_url", &crate::redact::mask_url(&self.v3_api_url))
            .field("v2_api_url", &crate::redact::mask_url(&self.v2_api_url))
            .field("forward_urls", &forward_urls)
            .field("forward_secret", &self.forward_secret)
            .field("forward", &self.forward)
            .field("iotpay_time_zone", &self.iotpay_time_zone.iana_name())
            .field("store_timeout", &self.store_timeout)
            .field("guard", &self.guard)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("connections", &self.connections)
            .field("ingest_batch", &self.ingest_batch)
            .field("log_format", &self.log_format)
            .field("confirm", &self.confirm)
            .field("reconcile", &self.reconcile)
            .finish()
    }
}

/// Defaults named in CONTRACT.md.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8080";
/// Default admin bind address: loopback only, never the public port.
pub const DEFAULT_ADMIN_LISTEN_ADDR: &str = "127.0.0.1:8081";
/// Default v3 API base.
pub const DEFAULT_V3_API_URL: &str = "https://ccapi.iotpaycloud.com/v3";
/// Default v2 API base.
pub const DEFAULT_V2_API_URL: &str = "https://api.iotpaycloud.com/v2";
/// Default v1 API base.
pub const DEFAULT_V1_API_URL: &str = "https://api.iotpaycloud.com/v1";
/// Default zone of `paySuccTime`: IOTPay is a Canadian gateway based in Ontario.
pub const DEFAULT_TIME_ZONE: &str = "America/Toronto";

impl Config {
    /// The client for IOTPay's query APIs (v3, v2, v1), as the confirmation worker and the
    /// reconciler both use it: one place that knows which settings make it.
    pub fn query_client(&self) -> Result<crate::iotpay::query::QueryClient, reqwest::Error> {
        crate::iotpay::query::QueryClient::new(
            &self.v3_api_url,
            &self.v2_api_url,
            &self.v1_api_url,
            std::sync::Arc::new(self.merchants.clone()),
            self.confirm.timeouts(),
        )
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let database_url = var("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL"))?;
        check_database_url(&database_url)?;
        let listen_addr: SocketAddr = var("LISTEN_ADDR")
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.into())
            .parse()
            .map_err(|_| invalid("LISTEN_ADDR", "expected HOST:PORT, e.g. 0.0.0.0:8080"))?;
        let admin_listen_addr: SocketAddr = var("ADMIN_LISTEN_ADDR")
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN_ADDR.into())
            .parse()
            .map_err(|_| invalid("ADMIN_LISTEN_ADDR", "expected HOST:PORT, e.g. 127.0.0.1:8081"))?;
        if admin_listen_addr.port() != 0 && admin_listen_addr.port() == listen_addr.port() {
            return Err(invalid("ADMIN_LISTEN_ADDR", "must not use the port of LISTEN_ADDR (the public listener)"));
        }
        let admin_tokens = var("ADMIN_TOKENS")
            .map(|s| crate::admin::auth::AdminTokens::parse(&s).map_err(|r| invalid("ADMIN_TOKENS", r)))
            .transpose()?;
        let merchants = Merchants::parse(&var("IOTPAY_MERCHANTS").ok_or(ConfigError::Missing("IOTPAY_MERCHANTS"))?)
            .map_err(|r| invalid("IOTPAY_MERCHANTS", r))?;
        let v3_api_url = http_url("IOTPAY_V3_API_URL", var("IOTPAY_V3_API_URL"), DEFAULT_V3_API_URL)?;
        let v2_api_url = http_url("IOTPAY_V2_API_URL", var("IOTPAY_V2_API_URL"), DEFAULT_V2_API_URL)?;
        let v1_api_url = http_url("IOTPAY_V1_API_URL", var("IOTPAY_V1_API_URL"), DEFAULT_V1_API_URL)?;
        let forward_urls = var("FORWARD_URLS")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|u| http_url("FORWARD_URLS", Some(u.to_owned()), ""))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let forward_secret = var("FORWARD_SECRET")
            .map(|s| ForwardSecret::parse(&s).map_err(|r| invalid("FORWARD_SECRET", r)))
            .transpose()?;
        if !forward_urls.is_empty() && forward_secret.is_none() {
            return Err(ConfigError::Missing("FORWARD_SECRET"));
        }
        // Parsed once here: the rest of the service holds the zone, never its name.
        let zone_name = var("IOTPAY_TIME_ZONE").unwrap_or_else(|| DEFAULT_TIME_ZONE.into());
        let iotpay_time_zone = crate::iotpay::TimeZone::get(&zone_name)
            .map_err(|_| invalid("IOTPAY_TIME_ZONE", "unknown IANA time zone"))?;
        let log_format = LogFormat::from_vars(&var)?;
        let guard = crate::ingest::guard::GuardSettings::from_vars(&var)?;
        let connections = crate::serve::ConnectionLimits::from_vars(&var, &guard.allowed, &guard.trusted_proxies)?;
        Ok(Config {
            database_url,
            database_max_connections: number(&var, "DATABASE_MAX_CONNECTIONS", 10)?,
            listen_addr,
            admin_listen_addr,
            admin_tokens,
            merchants,
            v3_api_url,
            v2_api_url,
            v1_api_url,
            forward_urls,
            forward_secret,
            forward: crate::forward::ForwardSettings::from_lookup(&var)?,
            iotpay_time_zone,
            store_timeout: Duration::from_millis(number(&var, "STORE_TIMEOUT_MS", 4000)?),
            guard,
            request_timeout: Duration::from_millis(number(&var, "NOTIFY_REQUEST_TIMEOUT_MS", 10_000)?),
            max_concurrent_requests: number(&var, "NOTIFY_MAX_CONCURRENT_REQUESTS", 1024)?,
            connections,
            ingest_batch: crate::ingest::settings::settings_from_vars(&var)?,
            log_format,
            confirm: crate::confirm::ConfirmSettings::from_vars(&var)?,
            reconcile: crate::reconcile::ReconcileSettings::from_vars(&var)?,
        })
    }
}

/// A Postgres URL naming its host and its database: without them libpq's defaults apply (the
/// Unix socket, a database named after the OS user), which is never what a deployment meant.
/// The URL is never echoed: it may hold a password.
fn check_database_url(url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid("DATABASE_URL", "must start with postgres:// or postgresql://"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid("DATABASE_URL", "is not a URL"))?;
    let query = |name: &str| parsed.query_pairs().find(|(k, v)| k == name && !v.is_empty()).is_some();
    if parsed.host_str().is_none_or(str::is_empty) && !query("host") {
        return Err(invalid("DATABASE_URL", "names no host, e.g. postgres://user:password@db.internal:5432/iotpay"));
    }
    if parsed.path().trim_start_matches('/').is_empty() && !query("dbname") {
        return Err(invalid("DATABASE_URL", "names no database, e.g. postgres://user:password@host:5432/iotpay"));
    }
    Ok(())
}

/// `host:port/database` of a Postgres URL, for logs (never the user or password).
pub fn database_target(url: &str) -> String {
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(o) => format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or("")),
        Err(_) => "<unparsable DATABASE_URL>".to_owned(),
    }
}

fn http_url(var: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let url = value.unwrap_or_else(|| default.to_owned());
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(invalid(var, "expected an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::MchId;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const K1: &str = "7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D";
    const K2: &str = "NEWKEY00000000000000000000000001";
    const K3: &str = "OTHERKEY0000000000000000000000FF";
    const BASE: [(&str, &str); 2] = [
        ("DATABASE_URL", "postgres://u:pw@h/db"),
        (
            "IOTPAY_MERCHANTS",
            "100:7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D,100:NEWKEY00000000000000000000000001,200:OTHERKEY0000000000000000000000FF",
        ),
    ];

    #[test]
    fn defaults_apply() {
        let c = from(&BASE).unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.v3_api_url, DEFAULT_V3_API_URL);
        assert_eq!(c.v2_api_url, DEFAULT_V2_API_URL);
        assert_eq!(c.v1_api_url, DEFAULT_V1_API_URL);
        assert!(c.forward_urls.is_empty());
        assert_eq!(c.merchants.keys("100").unwrap().len(), 2);
        assert_eq!(c.merchants.signing_key(&MchId::parse("100").unwrap()).unwrap().expose(), K1);
        assert_eq!(c.merchants.keys("200").unwrap()[0].expose(), K3);
        assert_eq!(c.merchants.keys("100").unwrap()[1].expose(), K2);
        assert!(c.merchants.keys("300").is_none());
        assert_eq!(c.admin_listen_addr.to_string(), "127.0.0.1:8081");
        assert!(c.admin_tokens.is_none(), "no ADMIN_TOKENS: no admin listener");
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        assert_eq!(from(&[]).unwrap_err(), ConfigError::Missing("DATABASE_URL"));
        assert_eq!(from(&BASE[..1]).unwrap_err(), ConfigError::Missing("IOTPAY_MERCHANTS"));
        let bad = |k: &'static str, v: &str| {
            let mut p = BASE.to_vec();
            p.push((k, v));
            from(&p).unwrap_err()
        };
        assert!(matches!(bad("IOTPAY_MERCHANTS", "nocolon"), ConfigError::Invalid { var: "IOTPAY_MERCHANTS", .. }));
        assert!(matches!(bad("LISTEN_ADDR", "nope"), ConfigError::Invalid { var: "LISTEN_ADDR", .. }));
        assert!(matches!(bad("IOTPAY_V3_API_URL", "ftp://x"), ConfigError::Invalid { var: "IOTPAY_V3_API_URL", .. }));
        assert!(matches!(bad("IOTPAY_V1_API_URL", "nope"), ConfigError::Invalid { var: "IOTPAY_V1_API_URL", .. }));
        assert_eq!(bad("FORWARD_URLS", "http://a/hook"), ConfigError::Missing("FORWARD_SECRET"));
        assert!(matches!(bad("FORWARD_SECRET", "abc"), ConfigError::Invalid { var: "FORWARD_SECRET", .. }));
        assert!(matches!(bad("IOTPAY_TIME_ZONE", "Mars/Base"), ConfigError::Invalid { var: "IOTPAY_TIME_ZONE", .. }));
        assert!(matches!(
            bad("NOTIFY_ALLOWED_CIDRS", "10.0.0.0/33"),
            ConfigError::Invalid { var: "NOTIFY_ALLOWED_CIDRS", .. }
        ));
        assert!(matches!(bad("INGEST_BATCH_MAX", "0"), ConfigError::Invalid { var: "INGEST_BATCH_MAX", .. }));
        assert!(matches!(bad("ADMIN_LISTEN_ADDR", "nope"), ConfigError::Invalid { var: "ADMIN_LISTEN_ADDR", .. }));
        assert!(matches!(
            bad("ADMIN_LISTEN_ADDR", "127.0.0.1:8080"),
            ConfigError::Invalid { var: "ADMIN_LISTEN_ADDR", .. }
        ));
        let short = bad("ADMIN_TOKENS", "too-short-secret");
        assert!(matches!(short, ConfigError::Invalid { var: "ADMIN_TOKENS", .. }));
        assert!(!short.to_string().contains("too-short-secret"), "{short}");
    }

    #[test]
    fn errors_never_echo_secrets() {
        let mut p = BASE.to_vec();
        p.push(("FORWARD_SECRET", "whsec_!!notbase64SECRET"));
        let msg = from(&p).unwrap_err().to_string();
        assert!(!msg.contains("SECRET") || !msg.contains("notbase64"), "{msg}");
        let msg = from(&[("DATABASE_URL", "mysql://u:pw@h"), BASE[1]]).unwrap_err().to_string();
        assert!(!msg.contains("pw"), "{msg}");
    }

    fn merchants_error(value: &str) -> String {
        match from(&[BASE[0], ("IOTPAY_MERCHANTS", value)]) {
            Err(e @ ConfigError::Invalid { var: "IOTPAY_MERCHANTS", .. }) => e.to_string(),
            other => panic!("{value} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn merchant_ids_are_digits_and_keys_are_32_letters_and_digits() {
        // The pair swapped: refused, says so, and never echoes the key.
        let msg = merchants_error("supersecretkey123:10000701");
        assert!(msg.contains("IOTPAY_MERCHANTS") && msg.contains("swapped"), "{msg}");
        assert!(!msg.contains("supersecretkey123"), "{msg}");
        let msg = merchants_error(&format!("{K1}:10000701"));
        assert!(msg.contains("digits") && !msg.contains(K1), "{msg}");
        // The placeholder of .env.example and docker-compose.yml.
        let msg = merchants_error("10000701:replace-with-your-merchant-key");
        assert!(msg.contains("merchant 10000701") && msg.contains("32 letters and digits"), "{msg}");
        for key in
            [&K1[..31], &format!("{K1}0")[..], "7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9!", "7C1B0D3E5F8A2C4E 6B9D0F1A3C5E7B9"]
        {
            let msg = merchants_error(&format!("10000701:{key}"));
            assert!(!msg.contains(key), "{msg}");
        }
        // A bad entry after a good one is named by its position.
        let msg = merchants_error(&format!("10000701:{K1},20000002:short"));
        assert!(msg.contains("entry 2"), "{msg}");
        for id in ["M100", "-100", "1e5", "１００"] {
            merchants_error(&format!("{id}:{K1}"));
        }
        // Lower-case keys and several merchants pass.
        let ok = from(&[BASE[0], ("IOTPAY_MERCHANTS", &format!("10000701:{},20000002:{K3}", K1.to_lowercase()))]);
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn database_url_must_name_host_and_database() {
        let db = |url: &str| from(&[("DATABASE_URL", url), BASE[1]]);
        for url in
            ["postgres://", "postgres://u:pw@/db", "postgres://u:pw@h", "postgres://u:pw@h/", "postgresql://h:5432"]
        {
            let err = db(url).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { var: "DATABASE_URL", .. }), "{url}: {err:?}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        for url in [
            "postgres://u:pw@h/db",
            "postgresql://h:5432/db?sslmode=require",
            "postgres:///db?host=/var/run/postgresql",
        ] {
            assert!(db(url).is_ok(), "{url}");
        }
        assert_eq!(database_target("postgres://u:secret@db.internal:6543/iotpay"), "db.internal:6543/iotpay");
        assert_eq!(database_target("postgres://u:secret@h/db"), "h:5432/db");
    }

    #[test]
    fn connection_caps_accept_zero_where_it_means_off() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut p = BASE.to_vec();
            p.extend_from_slice(pairs);
            from(&p)
        };
        let c = with(&[("HTTP_MAX_CONNECTIONS_PER_ADDRESS", "0"), ("HTTP_MAX_UNLISTED_CONNECTIONS", "0")]).unwrap();
        assert_eq!(c.connections.max_connections_per_address, 0);
        assert_eq!(c.connections.max_unlisted_connections, 0);
        let d = with(&[]).unwrap().connections;
        assert_eq!((d.max_connections, d.max_connections_per_address, d.max_unlisted_connections), (4096, 256, 64));
        assert_eq!(with(&[("HTTP_MAX_CONNECTIONS", "10")]).unwrap().connections.max_unlisted_connections, 5);
        for (k, v) in [
            ("HTTP_MAX_CONNECTIONS_PER_ADDRESS", "-1"),
            ("HTTP_MAX_CONNECTIONS_PER_ADDRESS", "many"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_UNLISTED_CONNECTIONS", "4096"),
        ] {
            assert!(matches!(with(&[(k, v)]), Err(ConfigError::Invalid { var, .. }) if var == k), "{k}={v}");
        }
    }
}
