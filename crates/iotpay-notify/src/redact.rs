//! Hiding secrets in text meant for people: URLs may carry a password in their user-info or a
//! token in their query string (`FORWARD_URLS` entries such as `https://u:pw@h/x?token=...`).
//! Operators then name an endpoint by what they were shown; [`resolve_endpoint`] maps that back.

/// `url` with its user-info (`user:password@`) replaced by `***@` and every query value by
/// `***` (`?token=***&v=***`); other text unchanged. Every value is masked, not only those with
/// secret-looking names: a receiver may take its key under any name (`?k=`, `?code=`).
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    format!("{}://{authority}{}", &url[..scheme_end], mask_query(tail))
}

/// `path?query#fragment` with each query value replaced by `***`.
fn mask_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else { return tail.to_owned() };
    let (path, after) = tail.split_at(q + 1);
    let (query, fragment) = match after.find('#') {
        Some(h) => after.split_at(h),
        None => (after, ""),
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if pair.is_empty() => String::new(),
            // A bare `?token` is as secret as a value.
            None => "***".to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", masked.join("&"))
}

/// Serializes a URL field with its user-info masked (every `--json` output goes through this).
pub fn serialize_masked_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url(url))
}

/// Why a name given by an operator does not designate one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The masked form or label fits several stored endpoints.
    #[error("`{given}` matches {count} stored endpoints (they differ only in masked parts): give the exact URL")]
    Ambiguous {
        /// What the operator gave (already masked: it is a masked form or a label).
        given: String,
        /// How many endpoints it matches.
        count: usize,
    },
}

/// The endpoint of `known` that `given` names: the exact URL, else its masked form
/// ([`mask_url`]) or its label (scheme, host, port, path: what logs and tables show), when exactly
/// one endpoint has it. `None` when nothing matches (the caller decides whether that is an error).
pub fn resolve_endpoint<'a>(given: &str, known: &'a [String]) -> Result<Option<&'a str>, ResolveError> {
    let given = given.trim();
    if let Some(exact) = known.iter().find(|k| k.as_str() == given) {
        return Ok(Some(exact));
    }
    let matches: Vec<&String> =
        known.iter().filter(|k| mask_url(k) == given || crate::forward::worker::endpoint_label(k) == given).collect();
    match matches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.as_str())),
        many => Err(ResolveError::Ambiguous { given: mask_url(given), count: many.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_masked() {
        assert_eq!(mask_url("https://u:p%40ss@h.example/hook"), "https://***@h.example/hook");
        assert_eq!(mask_url("postgres://postgres:pw@127.0.0.1:5432/db"), "postgres://***@127.0.0.1:5432/db");
        assert_eq!(mask_url("http://token@h/x"), "http://***@h/x");
        assert_eq!(mask_url("http://h/x@y"), "http://h/x@y", "an @ in the path is not user-info");
        assert_eq!(mask_url("http://h:8080/x"), "http://h:8080/x");
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn query_values_are_masked() {
        assert_eq!(mask_url("https://h/hook?password=hunter2"), "https://h/hook?password=***");
        assert_eq!(
            mask_url("https://u:pw@h/hook?token=abc&v=2#frag"),
            "https://***@h/hook?token=***&v=***#frag",
            "user-info, every value, the fragment kept"
        );
        assert_eq!(mask_url("https://h?k=secret"), "https://h?k=***");
        assert_eq!(mask_url("https://h/x?secrettoken"), "https://h/x?***");
        assert_eq!(
            mask_url("postgres://u@h/db?password=pw&sslmode=require"),
            "postgres://***@h/db?password=***&sslmode=***"
        );
        for secret in ["hunter2", "abc", "secret", "pw"] {
            for url in ["https://h/hook?password=hunter2", "https://h?k=secret", "https://u:pw@h/x?token=abc"] {
                assert!(!mask_url(url).contains(&format!("={secret}")), "{url}");
            }
        }
    }

    #[test]
    fn endpoints_are_found_by_exact_url_masked_form_or_label_unless_ambiguous() {
        let known: Vec<String> = [
            "https://u:pw@erp.example/hook",
            "https://ledger.example/in?token=t1",
            "https://a.example/x?token=1",
            "https://a.example/x?token=2",
        ]
        .map(String::from)
        .to_vec();
        let r = |g: &str| resolve_endpoint(g, &known);
        assert_eq!(r("https://u:pw@erp.example/hook"), Ok(Some("https://u:pw@erp.example/hook")));
        assert_eq!(r("https://***@erp.example/hook"), Ok(Some("https://u:pw@erp.example/hook")), "masked");
        assert_eq!(r("https://erp.example/hook"), Ok(Some("https://u:pw@erp.example/hook")), "label");
        assert_eq!(r("https://ledger.example/in?token=***"), Ok(Some("https://ledger.example/in?token=t1")));
        assert_eq!(r("https://a.example/x?token=2"), Ok(Some("https://a.example/x?token=2")), "exact wins");
        assert!(matches!(r("https://a.example/x?token=***"), Err(ResolveError::Ambiguous { count: 2, .. })));
        assert!(matches!(r("https://a.example/x"), Err(ResolveError::Ambiguous { count: 2, .. })));
        assert_eq!(r("https://nowhere.example/"), Ok(None));
    }
}
