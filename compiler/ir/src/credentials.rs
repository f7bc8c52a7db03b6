//! Credentials written into a judge's endpoint URL
//! (`https://user:secret@host/v1`): everything that prints a URL (graphs,
//! the HIR, diagnostics, the run's manifest, judge messages) shows it masked.

/// `url` with its password shown as `***`; `url` unchanged when it has none
/// or is not a URL.
pub fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// `value` with every string in it that is a URL holding a password masked
/// (for JSON dumps of a program or plan).
pub fn mask_urls_in(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('@') => {
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
        assert_eq!(masked_url("https://me@h/v1"), "https://me@h/v1");
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
