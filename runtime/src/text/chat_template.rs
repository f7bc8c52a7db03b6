//! Chat templates: the Jinja template a model ships in `chat_template.jinja`
//! or `tokenizer_config.json`, rendered with minijinja the way transformers'
//! `apply_chat_template` renders it.
//!
//! transformers renders with `trim_blocks` and `lstrip_blocks`, loop controls,
//! a `tojson` that keeps non-ASCII text and Python's `", "` / `": "`
//! separators (its `ensure_ascii`, `indent`, `separators` and `sort_keys`
//! taken), `raise_exception(msg)` and `strftime_now(fmt)`, reads `\r\n` as
//! `\n`, and passes the special tokens (`bos_token`, `eos_token`, ...) as
//! variables, and `tools` and `documents` (None when there are none). Python string
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
        // Jinja2 reads `\r\n` and `\r` as `\n` in a template's text and
        // strings (its lexer's `newline_sequence`).
        let source = source.replace("\r\n", "\n").replace('\r', "\n");
        env.add_template_owned("chat", without_generation_blocks(&source))
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
        // transformers always passes `tools` and `documents`, as None when
        // there are none: `tools is not none` is false, `tools is defined`
        // true.
        context.insert("tools".into(), request.tools.cloned().unwrap_or(Json::Null));
        context.insert("documents".into(), Json::Null);
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
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        None => (
            (if indent.is_some() { "," } else { ", " }).to_string(),
            ": ".to_string(),
        ),
        Some([item, key]) => (item.clone(), key.clone()),
        Some(other) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "tojson: `separators` takes two strings, got {}",
                    other.len()
                ),
            ))
        }
    };
    let layout = Layout {
        indent,
        item_sep,
        key_sep,
        ascii: ensure_ascii.unwrap_or(false),
    };
    let json: Json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let json = if sort_keys.unwrap_or(false) {
        sorted(json)
    } else {
        json
    };
    let mut out = String::new();
    write_python_json(&json, &layout, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

/// How `json.dumps` lays out its text: `indent`, `separators` (between
/// items, between a key and its value) and `ensure_ascii`.
struct Layout {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    ascii: bool,
}

/// `s` as a JSON string, every character past ASCII written as `\uXXXX`
/// (a surrogate pair past the first plane) when `ascii`, as Python does.
fn json_string(s: &str, ascii: bool) -> String {
    let quoted = Json::String(s.to_string()).to_string();
    if !ascii || quoted.is_ascii() {
        return quoted;
    }
    let mut out = String::with_capacity(quoted.len());
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
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
fn write_python_json(json: &Json, layout: &Layout, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = layout.indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    let item_sep = layout.item_sep.as_str();
    match json {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_python_json(item, layout, depth + 1, out);
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
                out.push_str(&json_string(key, layout.ascii));
                out.push_str(&layout.key_sep);
                write_python_json(value, layout, depth + 1, out);
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
        Json::String(text) => out.push_str(&json_string(text, layout.ascii)),
        other => out.push_str(&other.to_string()),
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(fmt)`: the current time in UTC (transformers takes the
/// machine's local time, which on a server is usually UTC), formatted as
/// Python's `strftime` formats it.
fn strftime_now(format: String) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    strftime(&format, now.as_secs(), now.subsec_micros())
}

/// `format` for the UTC time `secs` seconds and `micros` microseconds after
/// 1970: `%Y %y %C %G %m %d %e %j %U %W %V %B %b %h %A %a %w %u %H %I %M %S
/// %f %s %p %c %x %X %r %F %D %T %R %%`, glibc's `-` flag (`%-d`), and `%z
/// %Z` as empty (a time without a zone), as Python's `strftime` writes them
/// in the C locale; other codes are left as written.
fn strftime(format: &str, secs: u64, micros: u32) -> String {
    const MONTHS: [&str; 12] = [
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
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let of_day = secs % 86_400;
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    // 1970-01-01 was a Thursday (3 counting from Monday as 0).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let month = MONTHS[(m as usize).saturating_sub(1).min(11)];
    let twelve = if hour % 12 == 0 { 12 } else { hour % 12 };
    // Weeks: `%U` from Sundays, `%W` from Mondays, `%V`/`%G` ISO 8601's.
    let yday = i64::from(ordinal(y, m, d)) - 1;
    let week_from = |first: i64| (yday + 7 - (weekday as i64 + 7 - first) % 7) / 7;
    let (iso_year, iso_week) = iso_week(y, yday, weekday as i64);
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(mut code) = chars.next() else {
            out.push('%');
            break;
        };
        // glibc's `-` flag (`%-d`): the number without its padding.
        let unpadded = code == '-';
        if unpadded {
            let Some(next) = chars.next() else {
                out.push_str("%-");
                break;
            };
            code = next;
        }
        let text = match code {
            'Y' => y.to_string(),
            'y' => format!("{:02}", y.rem_euclid(100)),
            'm' => format!("{m:02}"),
            'd' => format!("{d:02}"),
            'e' => format!("{d:>2}"),
            'j' => format!("{:03}", ordinal(y, m, d)),
            'B' => month.to_string(),
            'b' | 'h' => month[..3].to_string(),
            'A' => DAYS[weekday].to_string(),
            'a' => DAYS[weekday][..3].to_string(),
            'w' => ((weekday + 1) % 7).to_string(),
            'u' => (weekday + 1).to_string(),
            'H' => format!("{hour:02}"),
            'I' => format!("{twelve:02}"),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'C' => format!("{:02}", y.div_euclid(100)),
            'G' => iso_year.to_string(),
            'U' => format!("{:02}", week_from(6)),
            'W' => format!("{:02}", week_from(0)),
            'V' => format!("{iso_week:02}"),
            'f' => format!("{micros:06}"),
            's' => secs.to_string(),
            'c' => format!(
                "{} {} {d:>2} {hour:02}:{minute:02}:{second:02} {y}",
                &DAYS[weekday][..3],
                &month[..3]
            ),
            'x' => format!("{m:02}/{d:02}/{:02}", y.rem_euclid(100)),
            'X' => format!("{hour:02}:{minute:02}:{second:02}"),
            'r' => format!(
                "{twelve:02}:{minute:02}:{second:02} {}",
                if hour < 12 { "AM" } else { "PM" }
            ),
            'F' => format!("{y}-{m:02}-{d:02}"),
            'D' => format!("{m:02}/{d:02}/{:02}", y.rem_euclid(100)),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            'R' => format!("{hour:02}:{minute:02}"),
            '%' => "%".to_string(),
            // transformers' `datetime.now()` has no time zone: empty.
            'z' | 'Z' => String::new(),
            other if unpadded => format!("%-{other}"),
            other => format!("%{other}"),
        };
        let text = if unpadded && text.chars().all(|c| c.is_ascii_digit() || c == ' ') {
            let trimmed = text.trim_start_matches([' ', '0']);
            if trimmed.is_empty() { "0" } else { trimmed }.to_string()
        } else {
            text
        };
        out.push_str(&text);
    }
    out
}

/// ISO 8601's year and week of the day `yday` days after 1 January of
/// `y` (a `weekday` from Monday, 0): weeks start on Mondays, and week 1
/// holds the year's first Thursday.
fn iso_week(y: i64, yday: i64, weekday: i64) -> (i64, i64) {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    // A year has 53 weeks when it starts on a Thursday, or on a Wednesday
    // in a leap year.
    let weeks = |y: i64, jan1: i64| {
        if jan1 == 3 || (jan1 == 2 && leap(y)) {
            53
        } else {
            52
        }
    };
    let jan1 = (weekday - yday).rem_euclid(7);
    let week = (yday - weekday + 10) / 7;
    if week < 1 {
        let days_before = if leap(y - 1) { 366 } else { 365 };
        let previous_jan1 = (jan1 - days_before).rem_euclid(7);
        (y - 1, weeks(y - 1, previous_jan1))
    } else if week > weeks(y, jan1) {
        (y + 1, 1)
    } else {
        (y, week)
    }
}

/// The day of the year (1 for 1 January).
fn ordinal(y: i64, m: u32, d: u32) -> u32 {
    const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month = (m as usize).saturating_sub(1).min(11);
    BEFORE[month] + d + u32::from(leap && m > 2)
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

    /// Python's `strftime` in the C locale, for times `datetime` formatted.
    #[test]
    fn strftime_writes_as_python_does() {
        let format = "%A %a %H:%M:%S %I%p %%Y %y %j %e %w %u %F %D %T %R %B %b %h %Q";
        assert_eq!(
            strftime(format, 1_796_652_309, 0),
            "Monday Mon 14:05:09 02PM %Y 26 341  7 1 1 2026-12-07 12/07/26 14:05:09 14:05 December Dec Dec %Q"
        );
        assert_eq!(
            strftime("%j %A %I %p", 1_709_251_200, 0),
            "061 Friday 12 AM"
        );
        assert_eq!(
            strftime("%-d %-m %-H:%-M %-j [%z%Z] %-I", 1_709_251_200, 0),
            "1 3 0:0 61 [] 12"
        );
        // Weeks (Sunday's, Monday's, ISO's), the C locale's forms, epoch
        // seconds and microseconds, at year ends where ISO weeks change year.
        let weeks = "%U %W %V %G %C %c|%x|%X|%r|%s|%f";
        for (secs, python) in [
            (1_796_652_309, "49 49 50 2026 20 Mon Dec  7 14:05:09 2026|12/07/26|14:05:09|02:05:09 PM|1796652309|000042"),
            (946_684_800, "00 00 52 1999 20 Sat Jan  1 00:00:00 2000|01/01/00|00:00:00|12:00:00 AM|946684800|000042"),
            (1_104_537_600, "00 00 53 2004 20 Sat Jan  1 00:00:00 2005|01/01/05|00:00:00|12:00:00 AM|1104537600|000042"),
            (1_230_768_000, "00 00 01 2009 20 Thu Jan  1 00:00:00 2009|01/01/09|00:00:00|12:00:00 AM|1230768000|000042"),
            (1_262_217_600, "52 52 53 2009 20 Thu Dec 31 00:00:00 2009|12/31/09|00:00:00|12:00:00 AM|1262217600|000042"),
            (1_704_067_199, "53 52 52 2023 20 Sun Dec 31 23:59:59 2023|12/31/23|23:59:59|11:59:59 PM|1704067199|000042"),
            (1_735_603_200, "52 53 01 2025 20 Tue Dec 31 00:00:00 2024|12/31/24|00:00:00|12:00:00 AM|1735603200|000042"),
        ] {
            assert_eq!(strftime(weeks, secs, 42), python, "{secs}");
        }
    }

    fn rendered(source: &str) -> String {
        let messages = serde_json::json!([{"role": "user", "content": "hi"}]);
        let request = ChatRequest {
            messages: &messages,
            tools: None,
            add_generation_prompt: true,
            extra: &[],
        };
        ChatTemplate::new(source)
            .expect("compiles")
            .render(&request)
            .expect("renders")
    }

    /// What transformers' Jinja environment gives: `tools` and `documents`
    /// passed as None, `\r\n` read as `\n`, `tojson`'s `ensure_ascii` and
    /// `separators`.
    #[test]
    fn templates_render_as_jinja2_renders_them() {
        assert_eq!(
            rendered("{% if tools is not none %}T{% endif %}{% if documents is not none %}D{% endif %}{% if tools is defined %}d{% endif %}{{ messages[0].content }}"),
            "dhi"
        );
        assert_eq!(rendered("a\r\n{{ 'b\r\nc' }}\rd\r\n"), "a\nb\nc\nd");
        assert_eq!(
            rendered("{{ {'b': [1, 'ü😀'], 'a': 'x'} | tojson(ensure_ascii=true, separators=[',', ':']) }}"),
            r#"{"b":[1,"\u00fc\ud83d\ude00"],"a":"x"}"#
        );
    }

    #[test]
    fn python_json_layout() {
        let v: Json = serde_json::json!({"b": [1, 2.0, "ü"], "a": {}});
        let layout = |indent: Option<usize>| Layout {
            indent,
            item_sep: (if indent.is_some() { "," } else { ", " }).to_string(),
            key_sep: ": ".to_string(),
            ascii: false,
        };
        let mut out = String::new();
        write_python_json(&v, &layout(None), 0, &mut out);
        assert_eq!(out, r#"{"b": [1, 2.0, "ü"], "a": {}}"#);
        let mut out = String::new();
        write_python_json(&v, &layout(Some(2)), 0, &mut out);
        assert_eq!(
            out,
            "{\n  \"b\": [\n    1,\n    2.0,\n    \"ü\"\n  ],\n  \"a\": {}\n}"
        );
    }
}
