//! Credentials written into a judge's endpoint URL
//! (`https://user:secret@host/v1`, `https://token@host/v1`,
//! `?api-key=...`): everything that prints a URL (graphs, the HIR,
//! diagnostics, the run's manifest, judge messages) shows them masked.

/// Query parameters that carry a credential (compared case-insensitively,
/// `-` and `_` alike).
const SECRET_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "secret",
    "password",
    "sig",
    "signature",
];

/// `url` with its password (or a user name alone, a token) shown as `***`,
/// and the values of query parameters that carry a credential; `url`
/// unchanged when it has none or is not a URL.
pub fn masked_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let mut changed = false;
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
        changed = true;
    } else if !u.username().is_empty() {
        let _ = u.set_username("***");
        changed = true;
    }
    let secret =
        |k: &str| SECRET_PARAMS.contains(&k.to_ascii_lowercase().replace('-', "_").as_str());
    if u.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        url.to_string()
    }
}

/// `value` with every string in it that is a URL holding a password masked
/// (for JSON dumps of a program or plan).
pub fn mask_urls_in(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('@') || s.contains('?') => {
            let masked = masked_url(s);
            if masked != *s {
                *s = masked;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_urls_in),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(mask_urls_in),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::{mask_urls_in, masked_url};

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        assert_eq!(masked_url("https://me:secret@h/v1"), "https://me:***@h/v1");
        // A user name alone is a token; credential query values too.
        assert_eq!(masked_url("https://tok123@h/v1"), "https://***@h/v1");
        assert_eq!(
            masked_url("https://h/v1?api-version=2024-06-01&api-key=s3cret"),
            "https://h/v1?api-version=2024-06-01&api-key=***"
        );
        assert_eq!(
            masked_url("https://h/v1?Token=abc"),
            "https://h/v1?Token=***"
        );
        assert_eq!(masked_url("https://h/v1"), "https://h/v1");
        assert_eq!(masked_url("not a url: a@b"), "not a url: a@b");
        let mut v = serde_json::json!({
            "a": ["http://u:p@h:8000/v1", "x@y"],
            "b": {"c": "http://h/v1"}
        });
        mask_urls_in(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["http://u:***@h:8000/v1", "x@y"], "b": {"c": "http://h/v1"}})
        );
    }
}
