//! `safer.toml`: serde types, parsed with the `toml` crate, and its
//! diagnostics (pointing at the TOML span).

use super::secrets;
use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::source::SourceMap;
use crate::span::{SourceId, Span};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// The whole manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `[project]`.
    pub project: ProjectSection,
    /// `[imports]`.
    #[serde(default)]
    pub imports: Imports,
    /// `[paths]`.
    #[serde(default)]
    pub paths: Paths,
    /// `[run]`: defaults of `saferc run` (absent: none).
    #[serde(default)]
    pub run: Option<Run>,
    /// `[judges.NAME]`: named judge endpoints.
    #[serde(default)]
    pub judges: BTreeMap<String, JudgeEndpoint>,
    /// `[pins]`: rubric (qualified name) → content hash.
    #[serde(default)]
    pub pins: BTreeMap<String, Spanned<String>>,
}

/// `[project]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    /// The project's name.
    pub name: String,
    /// Its version.
    #[serde(default = "default_version")]
    pub version: String,
}

fn default_version() -> String {
    "0.1.0".into()
}

/// `[imports]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Imports {
    /// Folders searched (after the importing file's folder) for `use` paths,
    /// relative to the project root.
    #[serde(default)]
    pub roots: Vec<Spanned<String>>,
    /// Whether `use` may reach files outside the project.
    #[serde(default)]
    pub allow_outside: bool,
}

/// `[paths]`: where things live by default, relative to the project root.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Model directories.
    #[serde(default = "default_models")]
    pub models: String,
    /// Data files.
    #[serde(default = "default_data")]
    pub data: String,
    /// Run directories.
    #[serde(default = "default_runs")]
    pub runs: String,
}

fn default_models() -> String {
    "models".into()
}
fn default_data() -> String {
    "data".into()
}
fn default_runs() -> String {
    "runs".into()
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            models: default_models(),
            data: default_data(),
            runs: default_runs(),
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// The default device.
    #[serde(default = "default_device")]
    pub device: Device,
}

fn default_device() -> Device {
    Device::Cpu
}

impl Default for Run {
    fn default() -> Self {
        Run {
            device: Device::Cpu,
        }
    }
}

/// Devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU (burn's flex backend).
    Cpu,
    /// wgpu (Vulkan, Metal, ...).
    Wgpu,
    /// CUDA.
    Cuda,
}

/// `[judges.NAME]`: an OpenAI-compatible endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeEndpoint {
    /// Base URL, e.g. `http://localhost:8000/v1`.
    pub endpoint: Spanned<String>,
    /// The model name sent with each request.
    pub model: String,
    /// The *name* of the environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<Spanned<String>>,
    /// PEM file of the certificate authorities the endpoint's certificate
    /// must chain to (a private CA), relative to the project's folder.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// Requests in flight at once (unset: the judge's own `concurrency`).
    #[serde(default)]
    pub concurrency: Option<Spanned<i64>>,
    /// Seconds before a request is abandoned (unset: the judge's own `timeout`).
    #[serde(default)]
    pub timeout: Option<Spanned<f64>>,
    /// Whether the endpoint is shown the rows' images (`false` for a
    /// server whose model reads text only; unset: the judge's own `images`).
    #[serde(default)]
    pub images: Option<bool>,
    /// The longest reply in tokens, e.g. room for a reasoning model's
    /// thinking (unset: the judge's own `max_tokens`).
    #[serde(default)]
    pub max_tokens: Option<Spanned<i64>>,
}

const TOP_KEYS: &[&str] = &["project", "imports", "paths", "run", "judges", "pins"];

/// Reads and checks `root/safer.toml`.
///
/// # Errors
/// E0220 (TOML syntax), E0221 (unknown key), E0222 (wrong type or value),
/// E0223 (endpoint not a URL), E0224 (import root outside the project).
pub fn load(sources: &mut SourceMap, root: &Path) -> Result<Manifest, Vec<Diagnostic>> {
    let path = root.join(super::MANIFEST);
    let id = sources.load(&path).map_err(|d| vec![*d])?;
    let text = sources.get(id).map(|f| f.text.clone()).unwrap_or_default();
    parse(id, &text, root)
}

/// Parses manifest text (for tests and the editor).
///
/// # Errors
/// As [`load`].
pub fn parse(id: SourceId, text: &str, root: &Path) -> Result<Manifest, Vec<Diagnostic>> {
    parse_showing_secrets(id, text, root).map_err(|diags| {
        // No report shows a credential written in the file, whatever it
        // is about (a syntax error on its line, a key written twice).
        let hidden = secrets::secret_values(text);
        diags
            .into_iter()
            .map(|d| hidden.iter().fold(d, |d, r| d.hiding(span(id, r.clone()))))
            .collect()
    })
}

/// [`parse`], whose reports may show a credential's text.
fn parse_showing_secrets(
    id: SourceId,
    text: &str,
    root: &Path,
) -> Result<Manifest, Vec<Diagnostic>> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| every_error(id, text, &e))?;
    let mut diags = Vec::new();
    for (name, judge) in &manifest.judges {
        let most = crate::semantic::schema::MAX_CONCURRENCY as i64;
        if let Some(c) = judge
            .concurrency
            .as_ref()
            .filter(|c| !(1..=most).contains(c.get_ref()))
        {
            diags.push(
                Diagnostic::error(
                    Code::E0222,
                    format!(
                        "`safer.toml`: judge endpoint `{name}` has `concurrency = {}`",
                        c.get_ref()
                    ),
                )
                .with_primary(span(id, c.span()), format!("from 1 to {most}"))
                .with_help(format!("the number of requests in flight at once, each on a thread of its own: 1 to {most} (4 if unset)")),
            );
        }
        if let Some(t) = judge
            .timeout
            .as_ref()
            .filter(|t| !(t.get_ref().is_finite() && *t.get_ref() > 0.0))
        {
            diags.push(
                Diagnostic::error(
                    Code::E0222,
                    format!(
                        "`safer.toml`: judge endpoint `{name}` has `timeout = {}`",
                        t.get_ref()
                    ),
                )
                .with_primary(span(id, t.span()), "a number of seconds greater than 0")
                .with_help(
                    "seconds before a request is abandoned and retried, e.g. `timeout = 60`",
                ),
            );
        }
        if let Some(n) = judge.max_tokens.as_ref().filter(|n| *n.get_ref() < 1) {
            diags.push(
                Diagnostic::error(
                    Code::E0222,
                    format!(
                        "`safer.toml`: judge endpoint `{name}` has `max_tokens = {}`",
                        n.get_ref()
                    ),
                )
                .with_primary(span(id, n.span()), "a number of tokens, at least 1")
                .with_help("the longest reply, e.g. `max_tokens = 1024` for a model that reasons before its score"),
            );
        }
        if let Some(var) = judge
            .api_key_env
            .as_ref()
            .filter(|v| !crate::semantic::checks::is_variable_name(v.get_ref()))
        {
            diags.push(
                Diagnostic::error(
                    Code::E0222,
                    format!("`safer.toml`: judge endpoint `{name}`'s `api_key_env` is not the name of an environment variable"),
                )
                .with_primary(span(id, var.span()), "a variable's name: letters, digits and `_`, not starting with a digit")
                .hiding(span(id, var.span()))
                .with_note("if this is the key itself, it is now in the file: take it out and revoke it (this report does not show it)")
                .with_help("put the key in an environment variable and name that variable: `api_key_env = \"JUDGE_API_KEY\"`"),
            );
        }
        // A CA file that is a folder (or no name at all): `saferc run`
        // would stop on it with the OS's bare words.
        if let Some(file) = judge
            .ca_file
            .as_ref()
            .filter(|f| f.get_ref().is_empty() || root.join(f.get_ref()).is_dir())
        {
            let what = match file.get_ref().is_empty() {
                true => "is empty".to_string(),
                false => format!("names a folder, `{}`", file.get_ref()),
            };
            diags.push(
                Diagnostic::error(
                    Code::E0222,
                    format!("`safer.toml`: judge endpoint `{name}`'s `ca_file` {what}: it takes a file"),
                )
                .with_primary(span(id, file.span()), "a PEM file, relative to the project's folder")
                .with_help("name the PEM file of the certificate authority itself, e.g. `ca_file = \"certs/private-ca.pem\"`"),
            );
        }
        let url = judge.endpoint.get_ref();
        if !crate::semantic::checks::is_http_url(url) {
            diags.push(
                Diagnostic::error(Code::E0223, format!("judge endpoint `{name}` is not an http(s) URL: `{url}`"))
                    .with_primary(span(id, judge.endpoint.span()), "expected a URL")
                    .with_help("write the base URL of an OpenAI-compatible server, e.g. `http://localhost:8000/v1`"),
            );
        }
    }
    if !manifest.imports.allow_outside {
        let root_n = crate::semantic::loader::normalize(root);
        for r in &manifest.imports.roots {
            let full = crate::semantic::loader::normalize(&root.join(r.get_ref()));
            if !full.starts_with(&root_n) {
                diags.push(
                    Diagnostic::error(Code::E0224, format!("import root `{}` is outside the project", r.get_ref()))
                        .with_primary(span(id, r.span()), "leaves the project folder")
                        .with_help("set `allow_outside = true` in `[imports]` to share files from outside the project"),
                );
            }
        }
    }
    if diags.is_empty() {
        Ok(manifest)
    } else {
        Err(diags)
    }
}

/// The diagnostics of a manifest that did not deserialize: serde stops at
/// the first mistake (`first`), so each table (`[project]`, each
/// `[judges.NAME]`, ...) is read again key by key ([`table_errors`]) and
/// every mistake reported; a syntax error is reported alone.
fn every_error(id: SourceId, text: &str, first: &toml::de::Error) -> Vec<Diagnostic> {
    use serde::de::DeserializeOwned;
    use toml::de::{DeTable, DeValue, ValueDeserializer};
    let Ok(root) = DeTable::parse(text) else {
        return vec![from_toml(id, text, first)];
    };
    let mut errors = vec![from_toml(id, text, first)];
    let mut check = |value: &Spanned<DeValue<'_>>,
                     read: fn(ValueDeserializer<'_>) -> Option<toml::de::Error>,
                     required: &[&str]| {
        for e in table_errors(value, read) {
            errors.push(from_toml(id, text, &e));
        }
        for key in missing_keys(value, required) {
            errors.push(missing_key(id, text, key, value.span()));
        }
    };
    fn read<T: DeserializeOwned>(de: ValueDeserializer<'_>) -> Option<toml::de::Error> {
        T::deserialize(de).err()
    }
    for (key, value) in root.get_ref() {
        match key.get_ref().as_ref() {
            "project" => check(value, read::<ProjectSection>, PROJECT_REQUIRED),
            "imports" => check(value, read::<Imports>, &[]),
            "paths" => check(value, read::<Paths>, &[]),
            "run" => check(value, read::<Run>, &[]),
            "pins" => check(value, read::<BTreeMap<String, Spanned<String>>>, &[]),
            "judges" => match value.get_ref() {
                DeValue::Table(judges) => {
                    for judge in judges.values() {
                        check(judge, read::<JudgeEndpoint>, JUDGE_REQUIRED);
                    }
                }
                _ => check(value, read::<BTreeMap<String, JudgeEndpoint>>, &[]),
            },
            _ => {}
        }
    }
    // The first mistake was found again by its table's own reading.
    let mut seen = Vec::new();
    errors.retain(|d| {
        let key = (d.message.clone(), d.labels.first().map(|l| l.span));
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    errors.sort_by_key(|d| d.labels.first().map_or(0, |l| l.span.start));
    errors
}

/// The keys `[project]` must hold (the fields of [`ProjectSection`] without
/// a default; a test keeps the list equal to serde's).
const PROJECT_REQUIRED: &[&str] = &["name"];
/// The keys each `[judges.NAME]` must hold ([`JudgeEndpoint`]'s).
const JUDGE_REQUIRED: &[&str] = &["endpoint", "model"];

/// The `required` keys a table lacks (none for a value that is not a
/// table: reading it says what it should be). serde names only the first
/// missing field, and none while another key's value is wrong.
fn missing_keys<'r>(value: &Spanned<toml::de::DeValue<'_>>, required: &[&'r str]) -> Vec<&'r str> {
    let toml::de::DeValue::Table(table) = value.get_ref() else {
        return Vec::new();
    };
    required
        .iter()
        .copied()
        .filter(|key| !table.keys().any(|k| k.get_ref() == key))
        .collect()
}

/// The diagnostic of a required key a table lacks, on the table's span, as
/// serde's "missing field" reads.
fn missing_key(id: SourceId, text: &str, key: &str, at: std::ops::Range<usize>) -> Diagnostic {
    let header = text
        .get(at.clone())
        .unwrap_or("")
        .trim()
        .lines()
        .next()
        .unwrap_or("");
    wrong_value(id, &format!("missing field `{key}`"), at, header)
}

/// An E0222 diagnostic: `message` about the value (or table) `shown` at
/// `at`.
fn wrong_value(id: SourceId, message: &str, at: std::ops::Range<usize>, shown: &str) -> Diagnostic {
    let label = match shown.trim() {
        "" => "here".to_string(),
        shown => format!("`{shown}`"),
    };
    Diagnostic::error(Code::E0222, format!("`safer.toml`: {message}"))
        .with_primary(span(id, at), label)
        .with_help("docs/guide/projects.md shows every key of `safer.toml` with an example value")
}

/// Every mistake of one table but its missing keys ([`missing_keys`]),
/// where serde reports its first: each key is read in a table of its own
/// (a wrong type or an unknown key). A value that is not a table is read
/// as it is.
fn table_errors<'i>(
    value: &toml::Spanned<toml::de::DeValue<'i>>,
    read: fn(toml::de::ValueDeserializer<'i>) -> Option<toml::de::Error>,
) -> Vec<toml::de::Error> {
    use toml::de::{DeTable, DeValue, ValueDeserializer};
    let DeValue::Table(table) = value.get_ref() else {
        return read(ValueDeserializer::from(value.clone()))
            .into_iter()
            .collect();
    };
    let as_value = |t: DeTable<'i>| Spanned::new(value.span(), DeValue::Table(t));
    let is_missing = |e: &toml::de::Error| e.message().starts_with("missing field");
    table
        .iter()
        .filter_map(|(key, field)| {
            let mut alone = DeTable::new();
            alone.insert(key.clone(), field.clone());
            read(ValueDeserializer::from(as_value(alone))).filter(|e| !is_missing(e))
        })
        .collect()
}

fn span(id: SourceId, r: std::ops::Range<usize>) -> Span {
    Span::new(id, r.start, r.end)
}

/// Where the value of the key ending at `key_end` starts: after its `=`
/// (`key_end` itself when none follows).
fn after_eq(text: &str, key_end: usize) -> usize {
    let rest = text.get(key_end..).unwrap_or("");
    let trimmed = rest.trim_start_matches([' ', '\t']);
    match trimmed.strip_prefix('=') {
        Some(_) => key_end + (rest.len() - trimmed.len()) + 1,
        None => key_end,
    }
}

/// Whether a line of `text` sets key `key` or opens a table named `key`
/// (`key = ...`, `[key]`, `[a.key]`).
fn writes_key(text: &str, key: &str) -> bool {
    text.lines().map(str::trim_start).any(|line| {
        let sets = line
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        let opens = line.starts_with('[')
            && line
                .trim_start_matches('[')
                .split(']')
                .next()
                .is_some_and(|name| name.split('.').any(|part| part.trim() == key));
        sets || opens
    })
}

/// A deserializer's message with Rust's type names (`expected i64`) in
/// words (`expected an integer`).
fn in_plain_types(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("i64", "an integer"),
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("usize", "a whole number"),
        ("f64", "a number"),
        ("a sequence", "an array"),
        ("a map", "a table"),
    ];
    // `expected struct JudgeEndpoint`: a table.
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("struct ") {
        let name_len = rest[at + 7..]
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(rest.len() - at - 7);
        out.push_str(&rest[..at]);
        out.push_str("a table");
        rest = &rest[at + 7 + name_len..];
    }
    out.push_str(rest);
    for (rust, plain) in WORDS {
        for lead in ["expected ", "invalid type: "] {
            out = out.replace(&format!("{lead}{rust}"), &format!("{lead}{plain}"));
        }
    }
    out
}

fn from_toml(id: SourceId, text: &str, e: &toml::de::Error) -> Diagnostic {
    let message = e.message().to_string();
    let range = e.span().unwrap_or(0..0);
    let at = span(id, range.clone());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or("");
        let expected: Vec<String> = message
            .split("expected ")
            .nth(1)
            .map(|s| {
                s.split('`')
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1)
                    .map(|(_, w)| w.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let candidates: Vec<&str> = if expected.is_empty() {
            TOP_KEYS.to_vec()
        } else {
            expected.iter().map(String::as_str).collect()
        };
        let mut d = Diagnostic::error(
            Code::E0221,
            format!("unknown key `{field}` in `safer.toml`"),
        )
        .with_primary(at, "unknown key");
        // `api_key = "sk-..."` is likely the key itself (no report shows
        // it: `parse` hides every credential), and renaming the key would
        // keep it in the file as a variable's name; a misspelt
        // `api_key_env` naming a variable is only misspelt.
        let value = secrets::value_from(text, after_eq(text, range.end))
            .and_then(|r| text.get(r))
            .unwrap_or("");
        let names_variable =
            crate::semantic::checks::is_variable_name(value.trim_matches(['"', '\'']));
        if secrets::holds_a_secret(field) && !names_variable {
            return d
                .with_note("if this is the key itself, it is now in the file: take it out and revoke it (this report does not show it)")
                .with_help("put the key in an environment variable and name that variable: `api_key_env = \"JUDGE_API_KEY\"`");
        }
        d = match did_you_mean(field, candidates.iter().copied()) {
            // Renaming into a key the file already writes (anywhere: this
            // looks at the text, not the tables) would make it invalid TOML.
            Some(best) if best.names().iter().any(|n| writes_key(text, n)) => {
                d.with_help(best.help(str::to_string))
            }
            Some(best) => d.with_suggestion(at, field, &best),
            None => d.with_help(format!(
                "expected {}",
                crate::diagnostic::one_of(&candidates)
            )),
        };
        return d;
    }
    // `device = 1`: toml reads an enum from a string or a table.
    let message = message.replace("wanted string or table", "expected a string");
    if message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("missing field")
        || message.starts_with("unknown variant")
        || message.starts_with("expected a string")
    {
        let shown = text.get(range.clone()).unwrap_or("");
        return wrong_value(id, &in_plain_types(&message), range, shown);
    }
    Diagnostic::error(
        Code::E0220,
        format!("`safer.toml` is not valid TOML: {message}"),
    )
    .with_primary(at, "here")
    .with_help("see https://toml.io for the syntax")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The required-key lists are serde's: a table lacking one of them is
    /// refused naming it, and one holding just them is read.
    #[test]
    fn the_required_keys_are_those_serde_requires() {
        fn check<T: serde::de::DeserializeOwned>(required: &[&str]) {
            let with = |keys: &[&str]| -> String {
                keys.iter()
                    .map(|k| format!("{k} = \"http://x/v1\"\n"))
                    .collect()
            };
            assert!(toml::from_str::<T>(&with(required)).is_ok(), "{required:?}");
            for left_out in required {
                let keys: Vec<&str> = required.iter().copied().filter(|k| k != left_out).collect();
                let err = toml::from_str::<T>(&with(&keys))
                    .err()
                    .map(|e| e.message().to_string());
                assert_eq!(err, Some(format!("missing field `{left_out}`")));
            }
        }
        check::<ProjectSection>(PROJECT_REQUIRED);
        check::<JudgeEndpoint>(JUDGE_REQUIRED);
    }
}
