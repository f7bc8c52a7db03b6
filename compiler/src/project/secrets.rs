//! Credentials written into `safer.toml`, found so that no report shows
//! them: the value of every key whose name says it holds one (`api_key`,
//! `token`, `password`, an `Authorization` header in an inline table, ...),
//! whatever the error is about (an unknown key, a syntax error on the
//! line, a key written twice) and whether the line parses or not.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// A key before its `=`: at a line's start, or after `{` or `,` in an
/// inline table; bare, quoted, or the last part of a dotted key.
static KEY: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?m)(?:^|[{,])[ \t]*(?:[A-Za-z0-9_"'. -]*\.)?[ \t]*(?:"([^"\n]*)"|'([^'\n]*)'|([A-Za-z0-9_-]+))[ \t]*="#,
    )
    .ok()
});

/// Whether a key's name says its value is a credential (`api_key`,
/// `apiKey`, `token`, `password`, `auth`, `Authorization`, ...).
pub(crate) fn holds_a_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    const WORDS: &[&str] = &[
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "bearer",
        "auth",
        "authorization",
        "credential",
        "credentials",
    ];
    WORDS.iter().any(|word| {
        key.split('_')
            .any(|part| part == *word || part == format!("api{word}"))
    })
}

/// Whether `key = value` names an environment variable rather than
/// holding a credential: `api_key_env = "JUDGE_API_KEY"`, or a misspelt
/// `api_key_evn` (whose report then offers the fix, and shows the name).
fn names_a_variable(key: &str, value: &str) -> bool {
    let unquoted = value.trim_matches(['"', '\'']);
    let key = key.to_ascii_lowercase();
    let like_env = key.ends_with("_env") || strsim::damerau_levenshtein(&key, "api_key_env") <= 2;
    like_env && crate::semantic::checks::is_variable_name(unquoted)
}

/// The byte ranges of `text` that hold credentials (each line of a
/// multi-line string a range of its own, so that a report's lines keep
/// their breaks).
pub(crate) fn secret_values(text: &str) -> Vec<Range<usize>> {
    let Some(key_re) = KEY.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in key_re.captures_iter(text) {
        let Some(key) = m.get(1).or(m.get(2)).or(m.get(3)) else {
            continue;
        };
        if !holds_a_secret(key.as_str()) {
            continue;
        }
        let Some(whole) = m.get(0) else {
            continue;
        };
        let Some(value) = value_from(text, whole.end()) else {
            continue;
        };
        if names_a_variable(key.as_str(), &text[value.clone()]) {
            continue;
        }
        out.extend(by_line(text, value));
    }
    out
}

/// The range of the value that starts after `=` at `start`: a string
/// with its quotes (triple-quoted ones to their closing quotes, over
/// lines), or what is left of the line; `None` for nothing.
pub(crate) fn value_from(text: &str, start: usize) -> Option<Range<usize>> {
    let rest = text.get(start..)?;
    let lead = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    let start = start + lead;
    let value = text.get(start..)?;
    let line_end = value.find(['\n', '\r']).unwrap_or(value.len());
    let len = if let Some(q) = ["\"\"\"", "'''"].into_iter().find(|q| value.starts_with(q)) {
        value[3..].find(q).map_or(value.len(), |i| i + 6)
    } else {
        match value.chars().next() {
            // A quoted string (basic or literal), to its closing quote; an
            // unclosed one to the end of its line.
            Some(q @ ('"' | '\'')) => {
                let mut escaped = false;
                value[1..line_end]
                    .char_indices()
                    .find(|&(_, c)| {
                        let closes = c == q && !escaped;
                        escaped = q == '"' && c == '\\' && !escaped;
                        closes
                    })
                    .map_or(line_end, |(i, _)| i + 2)
            }
            // A bare value (not TOML, but written), to the end of the
            // line, a comment, or the inline table's next key.
            _ => value[..line_end]
                .find(['#', ',', '}'])
                .map_or(line_end, |i| i)
                .min(line_end),
        }
    };
    let len = value[..len].trim_end().len();
    (len > 0).then(|| start..start + len)
}

/// `range` of `text` cut at its line breaks.
fn by_line(text: &str, range: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut from = range.start;
    for (i, c) in text[range.clone()].char_indices() {
        if c == '\n' || c == '\r' {
            if range.start + i > from {
                out.push(from..range.start + i);
            }
            from = range.start + i + 1;
        }
    }
    if range.end > from {
        out.push(from..range.end);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{holds_a_secret, secret_values};

    fn hidden(text: &str) -> Vec<&str> {
        secret_values(text).into_iter().map(|r| &text[r]).collect()
    }

    /// Every form a credential is written in is found, and a variable's
    /// name under `api_key_env` is not one.
    #[test]
    fn credentials_are_found_in_every_form() {
        assert_eq!(hidden("api_key = \"sk-1\"\nx = 1"), ["\"sk-1\""]);
        assert_eq!(hidden("api_key='sk # 2' # c"), ["'sk # 2'"]);
        assert_eq!(hidden("api_key = \"a\\\"b\" "), ["\"a\\\"b\""]);
        assert_eq!(hidden("api_key = \"open\nx = 1"), ["\"open"]);
        assert_eq!(hidden("api_key =   sk-bare  \r\n"), ["sk-bare"]);
        assert_eq!(hidden("api_key = \"\"\"sk-3\"\"\"\n"), ["\"\"\"sk-3\"\"\""]);
        assert_eq!(hidden("token = '''a\nb'''\n"), ["'''a", "b'''"]);
        assert_eq!(
            hidden("headers = { Authorization = \"Bearer sk-4\", x = 1 }"),
            ["\"Bearer sk-4\""]
        );
        assert_eq!(hidden("judges.grm.api_key = \"sk-5\""), ["\"sk-5\""]);
        assert_eq!(hidden("\"api-key\" = \"sk-6\""), ["\"sk-6\""]);
        assert_eq!(hidden("auth = \"Bearer sk-7\""), ["\"Bearer sk-7\""]);
        assert!(hidden("api_key_env = \"JUDGE_KEY\"").is_empty());
        assert!(hidden("api_key_evn = \"JUDGE_KEY\"").is_empty());
        assert!(hidden("apikey_env = \"JUDGE_KEY\"").is_empty());
        assert_eq!(hidden("api_key_env = \"sk-live-1\""), ["\"sk-live-1\""]);
        assert!(hidden("endpoint = \"http://x/v1\"\nmodel = \"m\"").is_empty());
        assert!(hidden("api_key\n= 1").is_empty());
        assert!(holds_a_secret("apiKey") && holds_a_secret("openai-api-key"));
        assert!(!holds_a_secret("keep") && !holds_a_secret("monkey"));
    }
}
