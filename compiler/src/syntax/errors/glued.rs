//! Parse errors at a number with something glued to it: `16prompts` (a
//! unit without its space), `30s` (a duration: numbers of seconds are
//! plain), `2k` (a magnitude), `3and` (a keyword without its space),
//! `90%` (a percentage: fractions are written `0.9`). Each gets its own
//! message and, where the meaning is certain, a fix.

use super::Token;
use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::semantic::schema::format_number;
use crate::span::{SourceId, Span};

/// The units, plural and singular.
pub(super) const UNITS: &[&str] = &[
    "prompts",
    "prompt",
    "completions",
    "completion",
    "tokens",
    "token",
    "steps",
    "step",
    "epochs",
    "epoch",
];

/// Seconds per duration suffix.
const DURATIONS: &[(&str, f64)] = &[
    ("ms", 0.001),
    ("s", 1.0),
    ("sec", 1.0),
    ("secs", 1.0),
    ("second", 1.0),
    ("seconds", 1.0),
    ("min", 60.0),
    ("mins", 60.0),
    ("minute", 60.0),
    ("minutes", 60.0),
    ("h", 3600.0),
    ("hr", 3600.0),
    ("hrs", 3600.0),
    ("hour", 3600.0),
    ("hours", 3600.0),
];

/// Magnitude suffixes (`m` is left out: minutes or millions).
const MAGNITUDES: &[(&str, f64)] = &[("k", 1e3), ("K", 1e3), ("M", 1e6), ("B", 1e9), ("G", 1e9)];

/// Words that follow a number in an expression or statement.
const KEYWORDS: &[&str] = &["and", "or", "in", "not", "if", "else", "when", "weight"];

/// The error for the number with letters glued to it that starts at
/// `found`, or for a percentage (`90%`) in the statement the parser
/// failed in; `key` is the setting's key. `None` for anything else.
pub(super) fn glued_to_number(
    source: SourceId,
    text: &str,
    found: &Token,
    comments: &[crate::syntax::ast::Comment],
    key: &str,
) -> Option<Diagnostic> {
    if let Some(diag) = percentage(source, text, found.start, comments) {
        return Some(diag);
    }
    let rest = text.get(found.start..).unwrap_or("");
    let (digits, suffix) = split_number(rest)?;
    let number = digits.trim_end_matches('_');
    let value: f64 = number
        .replace('_', "")
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())?;
    let read = digits.len() + suffix.len();
    // `1h30m`, `2k2`: more follows; no reading of it is certain, so the
    // message names it all and no fix is offered.
    let glued_on = rest[read..]
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len() - read);
    let whole = glued_on == 0;
    let wrote = &rest[..read + glued_on];
    let span = Span::new(source, found.start, found.start + wrote.len());
    let not_a_number = format!("`{wrote}` is not a number");
    let fix = |diag: Diagnostic, fixed: &str| match whole {
        true => diag.with_fix(span, wrote, fixed),
        false => diag,
    };
    let write = |fixed: &str| match whole {
        true => format!("write `{fixed}`"),
        false => "write the number alone, in full".to_string(),
    };
    if KEYWORDS.contains(&suffix) {
        let fixed = format!("{number} {suffix}");
        let diag = Diagnostic::error(
            Code::E0101,
            format!("{not_a_number}: `{suffix}` needs a space before it"),
        )
        .with_primary(span, format!("`{suffix}` glued to the number"))
        .with_help(write(&fixed));
        return Some(fix(diag, &fixed));
    }
    // `2kprompts`: a magnitude, then a unit.
    let magnitude = MAGNITUDES
        .iter()
        .find_map(|(m, factor)| Some((*factor, suffix.strip_prefix(m)?)))
        .filter(|(_, unit)| UNITS.contains(unit));
    let (value, unit) = match magnitude {
        Some((factor, unit)) => (value * factor, Some(unit)),
        None => (value, unit_meant(suffix)),
    };
    // Scaled past what a number holds: the parser's own message.
    let scaled_fits = |factor: f64| (value * factor).is_finite();
    if let Some(unit) = unit.filter(|_| value.is_finite()) {
        let shown = match magnitude {
            Some(_) => format_number(value),
            None => number.to_string(),
        };
        let fixed = format!("{shown} {unit}");
        let diag = Diagnostic::error(
            Code::E0101,
            format!("{not_a_number}: a unit is written after a space"),
        )
        .with_primary(span, "a number with a unit glued to it")
        .with_help(write(&fixed));
        return Some(fix(diag, &fixed));
    }
    let timeout = key.contains("timeout");
    if let Some((_, seconds)) = DURATIONS
        .iter()
        .chain(timeout.then_some(&("m", 60.0)))
        .find(|(s, _)| *s == suffix)
        .filter(|(_, seconds)| scaled_fits(*seconds))
    {
        let fixed = format_number(value * seconds);
        let diag = Diagnostic::error(
            Code::E0101,
            format!("{not_a_number}: durations are plain numbers of seconds"),
        )
        .with_primary(span, "a duration with a suffix");
        return Some(match (timeout, whole) {
            (true, true) => fix(diag.with_help(format!("write `{key} = {fixed}`")), &fixed),
            (false, true) => diag.with_help(format!("write the seconds alone: `{fixed}`")),
            (_, false) => diag.with_help("write the number of seconds alone, e.g. `timeout = 90`"),
        });
    }
    if let Some((_, factor)) = MAGNITUDES.iter().find(|(s, _)| *s == suffix) {
        if !scaled_fits(*factor) {
            return None;
        }
        let fixed = format_number(value * factor);
        let diag = Diagnostic::error(Code::E0101, format!("{not_a_number}: write it in full"))
            .with_primary(span, "a number with a magnitude suffix")
            .with_help(write(&fixed));
        return Some(fix(diag, &fixed));
    }
    Some(
        Diagnostic::error(Code::E0101, not_a_number)
            .with_primary(span, format!("`{suffix}` is glued to the number"))
            .with_help(
                "a number is written alone (`16`, `0.2`, `1e-6`) or with a unit after a space: `prompts`, `completions`, `tokens`, `steps` or `epochs`",
            ),
    )
}

/// E0101 for a duration written with its unit after a space (`timeout =
/// 30 s`), which reads as the number and then a new setting `s`: numbers
/// of seconds are plain; under a `timeout` the fix writes the seconds.
pub(super) fn spaced_duration(
    source: SourceId,
    text: &str,
    number: &Token,
    unit: &Token,
    key: &str,
) -> Option<Diagnostic> {
    let (_, seconds) = DURATIONS.iter().find(|(s, _)| *s == unit.text)?;
    let between = text.get(number.end..unit.start)?;
    if !is_number(&number.text)
        || between.is_empty()
        || !between.chars().all(|c| c == ' ' || c == '\t')
    {
        return None;
    }
    let value: f64 = number.text.replace('_', "").parse().ok()?;
    let fixed = Some(value * seconds)
        .filter(|v| v.is_finite())
        .map(format_number)?;
    let span = Span::new(source, number.start, unit.end);
    let wrote = &text[number.start..unit.end];
    let diag = Diagnostic::error(
        Code::E0101,
        format!("`{wrote}` is not a number: durations are plain numbers of seconds"),
    )
    .with_primary(span, "a duration with a unit");
    Some(match key.contains("timeout") {
        true => diag
            .with_help(format!("write `{key} = {fixed}`"))
            .with_fix(span, wrote, &fixed),
        false => diag.with_help(format!("write the seconds alone: `{fixed}`")),
    })
}

/// The unit `suffix` stands for: itself, a near spelling (`promts`), or
/// the plural it begins (`tok`); durations (`s`) are not units.
fn unit_meant(suffix: &str) -> Option<&'static str> {
    if let Some(unit) = UNITS.iter().find(|u| **u == suffix) {
        return Some(unit);
    }
    if DURATIONS.iter().any(|(s, _)| *s == suffix) {
        return None;
    }
    let best = did_you_mean(suffix, UNITS.iter().copied());
    if let Some(name) = best.as_ref().and_then(|b| match b.names() {
        [one] => Some(one.to_string()),
        _ => None,
    }) {
        return UNITS.iter().find(|u| **u == name).copied();
    }
    let plurals: Vec<&&str> = UNITS
        .iter()
        .filter(|u| u.ends_with('s') && suffix.len() >= 3 && u.starts_with(suffix))
        .collect();
    match plurals.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// E0101 for a percentage (`90%`, `%` glued to its number and not to what
/// follows) before `error` in the statement the parser failed in, or the
/// line before it (`c < 50%` on one line reads on into the next as a
/// remainder). Fractions are written `0.9`.
fn percentage(
    source: SourceId,
    text: &str,
    error: usize,
    comments: &[crate::syntax::ast::Comment],
) -> Option<Diagnostic> {
    let before = text.get(..error)?;
    let from = before.trim_end().rfind('\n').map_or(0, |i| i + 1);
    let from = text[..from].trim_end().rfind('\n').map_or(0, |i| i + 1);
    let bytes = text.as_bytes();
    let in_comment = |at: usize| {
        comments
            .iter()
            .any(|c| (c.span.start as usize) <= at && at < c.span.end as usize)
    };
    let (start, end) = (from..error.min(bytes.len()))
        .rev()
        .filter(|&at| bytes[at] == b'%')
        .filter(|&at| !in_comment(at))
        // Outside strings: an even number of quotes before it on its line.
        .filter(|&at| {
            let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
            text[line..at].matches('"').count().is_multiple_of(2)
        })
        .find_map(|at| {
            let start = literal_start(text, at)?;
            let next = text[at + 1..].chars().next();
            let glued_after = next
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '(' | '%' | '-' | '"'));
            (!glued_after).then_some((start, at + 1))
        })?;
    let span = Span::new(source, start, end);
    let wrote = &text[start..end];
    let literal = &wrote[..wrote.len() - 1];
    let fraction = hundredth(literal)?;
    Some(
        Diagnostic::error(
            Code::E0101,
            format!("`{wrote}` is not a number: `%` is the remainder"),
        )
        .with_primary(span, "a percentage")
        .with_help(format!(
            "fractions are written between 0 and 1: `{fraction}`"
        ))
        .with_fix(span, wrote, &fraction),
    )
}

/// Where the number literal that ends right before byte `end` starts
/// (`1e-3` whole, not its `3`); `None` unless one ends there.
fn literal_start(text: &str, end: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let is_part = |b: u8| b.is_ascii_digit() || b == b'.' || b == b'_';
    let mut start = end;
    // Back to the literal's first byte, not past a range's `..`.
    while start > 0
        && is_part(bytes[start - 1])
        && !(start >= 2 && &bytes[start - 2..start] == b"..")
    {
        start -= 1;
    }
    // An exponent's `e` and optional sign, then the mantissa: `1e-3`, `2e5`.
    let sign = usize::from(start >= 1 && matches!(bytes[start - 1], b'-' | b'+'));
    if start > sign && matches!(bytes[start - sign - 1], b'e' | b'E') {
        let e_at = start - sign - 1;
        let mut mantissa = e_at;
        while mantissa > 0 && is_part(bytes[mantissa - 1]) {
            mantissa -= 1;
        }
        if mantissa < e_at {
            start = mantissa;
        }
    }
    let whole =
        start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
    (start < end && whole && is_number(&text[start..end])).then_some(start)
}

/// `literal` divided by 100, written as a number: the decimal point moved
/// two places for plain literals (`12.5` → `0.125`, exact), the value
/// otherwise (`1e2` → `1`); `None` when it does not fit.
fn hundredth(literal: &str) -> Option<String> {
    let plain = literal.replace('_', "");
    if plain.bytes().all(|b| b.is_ascii_digit() || b == b'.') && plain.matches('.').count() <= 1 {
        let (whole, fraction) = plain.split_once('.').unwrap_or((&plain, ""));
        let whole = format!("{whole:0>3}");
        let (int, moved) = whole.split_at(whole.len() - 2);
        let int = int.trim_start_matches('0');
        let decimals = format!("{moved}{fraction}");
        let decimals = decimals.trim_end_matches('0');
        let fraction: String = match (int.is_empty(), decimals.is_empty()) {
            (true, true) => "0".into(),
            (true, false) => format!("0.{decimals}"),
            (false, true) => int.into(),
            (false, false) => format!("{int}.{decimals}"),
        };
        // A literal that does not fit is E0108, fixed or not.
        let fits = fraction.parse::<f64>().is_ok_and(f64::is_finite);
        return fits.then_some(fraction);
    }
    let value: f64 = plain.parse().ok()?;
    (value.is_finite()).then(|| format_number(value / 100.0))
}

/// Whether `text` is a number literal (`16`, `0.2`, `1e-6`, `1_000`).
pub(super) fn is_number(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_digit()) && text.replace('_', "").parse::<f64>().is_ok()
}

/// The number and the letters glued to it at the start of `text`: `30s`
/// as `("30", "s")`, `1e-4x` as `("1e-4", "x")`, `16_prompts` as
/// `("16_", "prompts")`; `None` unless `text` starts with a number
/// followed by letters.
fn split_number(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let bytes = text.as_bytes();
    let digits_from = |mut end: usize| {
        while end < bytes.len()
            && (bytes[end].is_ascii_digit() || bytes[end] == b'.' || bytes[end] == b'_')
        {
            end += 1;
        }
        end
    };
    let mut end = digits_from(0);
    // An exponent: `e`, an optional sign, digits.
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'-' | b'+')));
        if bytes.get(end + 1 + sign).is_some_and(u8::is_ascii_digit) {
            end = digits_from(end + 1 + sign);
        }
    }
    let letters = text[end..]
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(text.len() - end);
    let (digits, rest) = text.split_at(end);
    let suffix = &rest[..letters];
    (!suffix.is_empty() && is_number(digits.trim_end_matches('_'))).then_some((digits, suffix))
}

#[cfg(test)]
mod tests {
    use super::{glued_to_number, hundredth, literal_start, split_number, unit_meant, Token};
    use crate::span::SourceId;
    use crate::syntax::ast::Comment;

    /// The fix for the parse error at the first `@` of `text` (taken
    /// out): what it replaces and with what; `None` without one.
    fn fix_at(text: &str) -> Option<(String, String)> {
        let at = text.find('@').unwrap_or(0);
        let text = text.replacen('@', "", 1);
        let found = Token::at(&text, at);
        let key = super::super::statement_head(&text, at);
        // The comment a line starting with `#` holds, as the lexer finds it.
        let comments: Vec<Comment> = text
            .match_indices('#')
            .map(|(start, _)| {
                let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                Comment {
                    text: text[start..end].to_string(),
                    doc: false,
                    span: crate::span::Span::new(SourceId(0), start, end),
                }
            })
            .collect();
        let diag = glued_to_number(SourceId(0), &text, &found, &comments, key)?;
        let fix = diag.fixes.first()?;
        Some((fix.wrote.clone(), fix.replacement.clone()))
    }

    fn pair(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.to_string(), b.to_string()))
    }

    #[test]
    fn fixes_are_offered_only_where_the_meaning_is_certain() {
        assert_eq!(fix_at("timeout = @30s\n"), pair("30s", "30"));
        assert_eq!(fix_at("x = @30s\n"), None);
        // Compound and resistor-style numbers: no reading is certain.
        assert_eq!(fix_at("timeout = @1h30m\n"), None);
        assert_eq!(fix_at("x = @2k2\n"), None);
        // A magnitude before a unit keeps its meaning.
        assert_eq!(
            fix_at("batch = @2kprompts\n"),
            pair("2kprompts", "2000 prompts")
        );
        assert_eq!(
            fix_at("batch = @16_prompts\n"),
            pair("16_prompts", "16 prompts")
        );
        assert_eq!(fix_at("total = if c < @3and x {\n"), pair("3and", "3 and"));
        // A percentage: the whole literal, once.
        assert_eq!(fix_at("x = 1e-3%@\n"), pair("1e-3%", "1e-5"));
        assert_eq!(fix_at("x = if c in 0.2..80% @{\n"), pair("80%", "0.8"));
        assert_eq!(fix_at("x = 90%@%\n"), None);
        // One that the next line reads on from, as a remainder.
        assert_eq!(
            fix_at("  penalty x = -3 when c < 50%\n  penalty @y = -1\n"),
            pair("50%", "0.5")
        );
        // A `%` in a comment or a string is prose.
        assert_eq!(fix_at("# 50% of rows\nx = @?\n"), None);
        assert_eq!(fix_at("x = \"50% \" @?\n"), None);
        // Numbers too large for the fix to write.
        assert_eq!(fix_at("x = @1e308k\n"), None);
    }

    #[test]
    fn a_duration_s_unit_after_a_space_is_read_with_its_number() {
        let text = "  timeout = 1.5 min\n}\n";
        let number = Token::at(text, 12);
        let unit = Token::at(text, 16);
        let diag = super::spaced_duration(SourceId(0), text, &number, &unit, "timeout");
        let fix = diag.as_ref().and_then(|d| d.fixes.first());
        assert_eq!(
            fix.map(|f| (f.wrote.as_str(), f.replacement.as_str())),
            Some(("1.5 min", "90"))
        );
        // Not a duration, or not after a number: not this error.
        let text = "  timeout = 30 x\n";
        let other = super::spaced_duration(
            SourceId(0),
            text,
            &Token::at(text, 12),
            &Token::at(text, 15),
            "timeout",
        );
        assert!(other.is_none());
    }

    #[test]
    fn numbers_split_from_their_suffixes() {
        assert_eq!(split_number("30s }"), Some(("30", "s")));
        assert_eq!(split_number("1.5e3ms"), Some(("1.5e3", "ms")));
        assert_eq!(split_number("1e-4x\n"), Some(("1e-4", "x")));
        assert_eq!(split_number("16prompts,"), Some(("16", "prompts")));
        assert_eq!(split_number("16_prompts"), Some(("16_", "prompts")));
        assert_eq!(split_number("1h30m"), Some(("1", "h")));
        assert_eq!(split_number("2e"), Some(("2", "e")));
        assert_eq!(split_number("16 prompts"), None);
        assert_eq!(split_number("s30"), None);
    }

    #[test]
    fn units_are_recognised_written_whole_misspelt_or_begun() {
        assert_eq!(unit_meant("prompts"), Some("prompts"));
        assert_eq!(unit_meant("step"), Some("step"));
        assert_eq!(unit_meant("promts"), Some("prompts"));
        assert_eq!(unit_meant("tok"), Some("tokens"));
        assert_eq!(unit_meant("s"), None);
        assert_eq!(unit_meant("x"), None);
    }

    #[test]
    fn percentages_become_exact_fractions() {
        assert_eq!(hundredth("90").as_deref(), Some("0.9"));
        assert_eq!(hundredth("12.5").as_deref(), Some("0.125"));
        assert_eq!(hundredth("150").as_deref(), Some("1.5"));
        assert_eq!(hundredth("100").as_deref(), Some("1"));
        assert_eq!(hundredth("0").as_deref(), Some("0"));
        assert_eq!(hundredth("1_000").as_deref(), Some("10"));
        let tiny = format!("0.{}1", "0".repeat(400));
        assert_eq!(hundredth(&tiny), Some(format!("0.{}1", "0".repeat(402))));
        assert_eq!(hundredth("1e2").as_deref(), Some("1"));
        assert_eq!(hundredth(&"9".repeat(400)), None);
        assert_eq!(hundredth("1e400"), None);
    }

    #[test]
    fn a_literal_is_found_whole_before_its_percent() {
        let text = "x = 1e-3% + 50% + a5%";
        assert_eq!(literal_start(text, 8), Some(4));
        assert_eq!(literal_start(text, 14), Some(12));
        assert_eq!(literal_start(text, 20), None);
    }
}
