//! Hiding secrets in text meant for people: URLs may carry a password in their user-info.

/// `url` with its user-info (`user:password@`) replaced by `***@`; other text unchanged.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Serializes a URL field with its user-info masked (every `--json` output goes through this).
pub fn serialize_masked_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url(url))
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn user_info_is_masked() {
        assert_eq!(mask_url("https://u:p%40ss@h.example/hook?q=1"), "https://***@h.example/hook?q=1");
        assert_eq!(mask_url("postgres://postgres:pw@127.0.0.1:5432/db"), "postgres://***@127.0.0.1:5432/db");
        assert_eq!(mask_url("http://token@h/x"), "http://***@h/x");
        assert_eq!(mask_url("http://h/x@y"), "http://h/x@y", "an @ in the path is not user-info");
        assert_eq!(mask_url("http://h:8080/x"), "http://h:8080/x");
        assert_eq!(mask_url("not a url"), "not a url");
    }
}
