//! Parse errors at a number with something glued to it: `16prompts` (a
//! unit without its space), `30s` (a duration: numbers of seconds are
//! plain), `2k` (a magnitude), `90%` (a percentage: fractions are written
//! `0.9`). Each gets its own message and, where the meaning is certain, a
//! fix.

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

/// The error for `found`, a number with letters glued to it, or for a
/// `%` after a number: `percent` is the `%` and `number` the token before
/// it; `key` is the setting's key.
pub(super) fn glued_to_number(
    source: SourceId,
    text: &str,
    found: &Token,
    percent: Option<(&Token, &Token)>,
    key: &str,
) -> Option<Diagnostic> {
    if let Some((number, percent)) = percent {
        if percent.text == "%" && is_number(&number.text) {
            return Some(percentage(source, text, number, percent));
        }
    }
    let rest = text.get(found.start..).unwrap_or("");
    let (digits, suffix) = split_number(rest)?;
    let wrote = &rest[..digits.len() + suffix.len()];
    let span = Span::new(source, found.start, found.start + wrote.len());
    let value: f64 = digits.replace('_', "").parse().ok()?;
    let not_a_number = format!("`{wrote}` is not a number");
    if let Some(unit) = unit_meant(suffix) {
        let fixed = format!("{digits} {unit}");
        return Some(
            Diagnostic::error(
                Code::E0101,
                format!("{not_a_number}: a unit is written after a space"),
            )
            .with_primary(span, "a number with a unit glued to it")
            .with_help(format!("write `{fixed}`"))
            .with_fix(span, wrote, &fixed),
        );
    }
    let timeout = key.contains("timeout");
    if let Some((_, seconds)) = DURATIONS
        .iter()
        .chain(timeout.then_some(&("m", 60.0)))
        .find(|(s, _)| *s == suffix)
    {
        let fixed = format_number(value * seconds);
        let diag = Diagnostic::error(
            Code::E0101,
            format!("{not_a_number}: durations are plain numbers of seconds"),
        )
        .with_primary(span, "a duration with a suffix");
        return Some(match timeout {
            true => diag
                .with_help(format!("write `{key} = {fixed}`"))
                .with_fix(span, wrote, &fixed),
            false => diag.with_help(format!("write the seconds alone: `{fixed}`")),
        });
    }
    if let Some((_, factor)) = MAGNITUDES.iter().find(|(s, _)| *s == suffix) {
        let fixed = format_number(value * factor);
        return Some(
            Diagnostic::error(Code::E0101, format!("{not_a_number}: write it in full"))
                .with_primary(span, "a number with a magnitude suffix")
                .with_help(format!("write `{fixed}`"))
                .with_fix(span, wrote, &fixed),
        );
    }
    Some(
        Diagnostic::error(Code::E0101, not_a_number)
            .with_primary(span, format!("`{suffix}` is glued to the number"))
            .with_help(
                "a number is written alone (`16`, `0.2`, `1e-6`) or with a unit after a space: `prompts`, `completions`, `tokens`, `steps` or `epochs`",
            ),
    )
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

/// `90%`: fractions are written `0.9`.
fn percentage(source: SourceId, text: &str, number: &Token, percent: &Token) -> Diagnostic {
    let span = Span::new(source, number.start, percent.end);
    let wrote = text.get(number.start..percent.end).unwrap_or("");
    let value: f64 = number.text.replace('_', "").parse().unwrap_or(f64::NAN);
    let fraction = format_number((value / 100.0 * 1e12).round() / 1e12);
    let diag = Diagnostic::error(
        Code::E0101,
        format!("`{wrote}` is not a number: `%` is the remainder"),
    )
    .with_primary(span, "a percentage")
    .with_help(format!(
        "fractions are written between 0 and 1: `{fraction}`"
    ));
    match value.is_finite() {
        true => diag.with_fix(span, wrote, &fraction),
        false => diag,
    }
}

/// Whether `text` is a number literal (`16`, `0.2`, `1e-6`, `1_000`).
fn is_number(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_digit()) && text.replace('_', "").parse::<f64>().is_ok()
}

/// The number and the letters glued to it at the start of `text`: `30s`
/// as `("30", "s")`, `1e-4x` as `("1e-4", "x")`; `None` unless `text`
/// starts with a number followed by letters.
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
    (!suffix.is_empty() && is_number(digits)).then_some((digits, suffix))
}

#[cfg(test)]
mod tests {
    use super::{split_number, unit_meant};

    #[test]
    fn numbers_split_from_their_suffixes() {
        assert_eq!(split_number("30s }"), Some(("30", "s")));
        assert_eq!(split_number("1.5e3ms"), Some(("1.5e3", "ms")));
        assert_eq!(split_number("1e-4x\n"), Some(("1e-4", "x")));
        assert_eq!(split_number("16prompts,"), Some(("16", "prompts")));
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
}
