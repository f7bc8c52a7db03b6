//! Chat templates: the Jinja template a model ships in `chat_template.jinja`
//! or `tokenizer_config.json`, rendered with minijinja the way transformers'
//! `apply_chat_template` renders it.
//!
//! transformers renders with `trim_blocks` and `lstrip_blocks`, loop controls,
//! a `tojson` that keeps non-ASCII text and Python's `", "` / `": "`
//! separators, `raise_exception(msg)` and `strftime_now(fmt)`, and passes the
//! special tokens (`bos_token`, `eos_token`, ...) as variables. Python string
//! methods (`.strip()`, `.split()`, `.startswith()`, ...) come from
//! minijinja-contrib's pycompat layer. transformers' `{% generation %}`
//! block, which marks the assistant's text for `return_assistant_tokens_mask`
//! and renders its body unchanged, is read as a block that renders its
//! body ([`without_generation_blocks`]). `runtime/tests/chat_template.rs`
//! compares the result with strings transformers rendered.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::Value as Json;

use crate::model::ModelError;

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

/// What to render: the conversation and the switches transformers passes.
pub struct ChatRequest<'a> {
    /// `[{"role": ..., "content": ...}, ...]`; content may be a string or a
    /// list of parts (`{"type": "image"}`, `{"type": "text", "text": ...}`).
    pub messages: &'a Json,
    /// Tool schemas (`tools=` in transformers), if any.
    pub tools: Option<&'a Json>,
    /// Append the assistant turn's opening.
    pub add_generation_prompt: bool,
    /// Extra variables (`bos_token`, `eos_token`, `add_vision_id`, ...).
    pub extra: &'a [(&'a str, Json)],
}

/// Steps (minijinja's instructions) one rendering may take: Qwen's
/// templates take a few hundred per message, and a template that loops
/// without end stops here instead of filling the memory.
const TEMPLATE_FUEL: u64 = 20_000_000;

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", without_generation_blocks(source))
            .map_err(|e| ModelError::Template {
                reason: describe(&e),
            })?;
        Ok(Self { env })
    }

    /// Renders one conversation.
    pub fn render(&self, request: &ChatRequest<'_>) -> Result<String, ModelError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ModelError::Template {
                reason: describe(&e),
            })?;
        let mut context = serde_json::Map::new();
        context.insert("messages".into(), request.messages.clone());
        context.insert(
            "add_generation_prompt".into(),
            Json::Bool(request.add_generation_prompt),
        );
        if let Some(tools) = request.tools {
            context.insert("tools".into(), tools.clone());
        }
        for (name, value) in request.extra {
            context.insert((*name).to_string(), value.clone());
        }
        template
            .render(Value::from_serialize(&context))
            .map_err(|e| ModelError::Template {
                reason: describe(&e),
            })
    }
}

/// `source` with transformers' `{% generation %}` … `{% endgeneration %}`
/// written as `{% if true %}` … `{% endif %}`, whitespace control kept:
/// the same text, in a tag minijinja knows.
fn without_generation_blocks(source: &str) -> String {
    use std::sync::OnceLock;
    static TAGS: OnceLock<Option<(regex::Regex, regex::Regex)>> = OnceLock::new();
    let Some((open, close)) = TAGS.get_or_init(|| {
        Some((
            regex::Regex::new(r"\{%([-+]?)\s*generation\s*(-?)%\}").ok()?,
            regex::Regex::new(r"\{%([-+]?)\s*endgeneration\s*(-?)%\}").ok()?,
        ))
    }) else {
        return source.to_string();
    };
    let opened = open.replace_all(source, "{%${1} if true ${2}%}");
    close
        .replace_all(&opened, "{%${1} endif ${2}%}")
        .into_owned()
}

fn describe(e: &Error) -> String {
    if e.kind() == ErrorKind::OutOfFuel {
        return format!(
            "the template ran more than {TEMPLATE_FUEL} steps for one prompt (a loop that does not end, or one far too long)"
        );
    }
    match e.line() {
        Some(line) => format!("{e} (template line {line})"),
        None => e.to_string(),
    }
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False,
/// indent=indent, separators=separators, sort_keys=sort_keys)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let json: Json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let json = if sort_keys.unwrap_or(false) {
        sorted(json)
    } else {
        json
    };
    let mut out = String::new();
    write_python_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn sorted(json: Json) -> Json {
    match json {
        Json::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Python's `json.dumps` layout: `", "` and `": "` without indent, newlines
/// and `","` with one.
fn write_python_json(json: &Json, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match json {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Json::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&Json::String(key.clone()).to_string());
                out.push_str(": ");
                write_python_json(value, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        Json::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e16 {
                out.push_str(&format!("{f:.1}"));
            } else {
                out.push_str(&n.to_string());
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(fmt)`: the current UTC date for the formats templates use
/// (`%d %b %Y`, `%Y-%m-%d`, and their parts).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const FULL: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = (m as usize).saturating_sub(1).min(11);
    format
        .replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", FULL[month])
        .replace("%b", MONTHS[month])
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// A template that would loop for 10^8 steps stops with a message
    /// instead of filling the memory; a real one renders within the fuel.
    #[test]
    fn a_template_that_runs_too_long_is_stopped() {
        let bomb = ChatTemplate::new(
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        )
        .expect("compiles");
        let messages = serde_json::json!([{"role": "user", "content": "hi"}]);
        let request = ChatRequest {
            messages: &messages,
            tools: None,
            add_generation_prompt: true,
            extra: &[],
        };
        let err = bomb.render(&request).expect_err("stopped");
        assert!(err.to_string().contains("ran more than"), "{err}");
        let chatml = ChatTemplate::new(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        )
        .expect("compiles");
        assert!(chatml.render(&request).is_ok());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }

    #[test]
    fn python_json_layout() {
        let v: Json = serde_json::json!({"b": [1, 2.0, "ü"], "a": {}});
        let mut out = String::new();
        write_python_json(&v, None, 0, &mut out);
        assert_eq!(out, r#"{"b": [1, 2.0, "ü"], "a": {}}"#);
        let mut out = String::new();
        write_python_json(&v, Some(2), 0, &mut out);
        assert_eq!(
            out,
            "{\n  \"b\": [\n    1,\n    2.0,\n    \"ü\"\n  ],\n  \"a\": {}\n}"
        );
    }
}
