//! Turning pest failures into coded, human diagnostics.
//!
//! The message names what was expected in words ("expected a value after
//! `=`, found `}`"), never grammar rules. A few frequent situations get
//! their own code and a targeted fix: an unknown declaration keyword (with
//! "did you mean"), an `if` without `else`, a setting without `=`.

use super::ast::{Comment, DeclKind};
use super::expectations::{self, describe, Expectation};
use super::grammar::Rule;
use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::span::{SourceId, Span};
use pest::error::{Error, ErrorVariant, InputLocation};

mod glued;

/// Converts a pest error at the furthest failure position.
pub fn from_pest(
    source: SourceId,
    text: &str,
    err: &Error<Rule>,
    comments: &[Comment],
) -> Diagnostic {
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let rules: Vec<Rule> = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let found = Token::at(text, skip_trivia(text, pos, comments));
    let mut expected = expectations::from_rules(&rules, found.is_punctuation());
    let prev = Token::before(text, pos, comments);
    // After `and`, `or`, `not` or `in` (reserved words, never a key), a
    // value: the parser also tried the word as the key of a new setting,
    // and the message offered `=` or `{`.
    if prev
        .as_ref()
        .is_some_and(|p| matches!(p.text.as_str(), "and" | "or" | "not" | "in"))
    {
        expected = vec![Expectation::Value];
    }
    let span = Span::new(source, found.start, found.end);

    // An unknown word where a declaration should start.
    if expected.contains(&Expectation::Declaration) && found.is_word() {
        return unknown_declaration(span, &found.text, text, found.end);
    }
    // `if` without `else`.
    if expected.contains(&Expectation::Token("else")) {
        return Diagnostic::error(
            Code::E0112,
            format!("expected `else`, found {}", found.describe()),
        )
        .with_primary(span, "the `if` expression needs an `else` branch here")
        .with_help("an expression always has a value: add `else { ... }` after the `if` branch");
    }
    // `30s`, `16prompts`, `2k`, `3and`, `90%`.
    let key = statement_head(text, found.start);
    if let Some(diag) = glued::glued_to_number(source, text, &found, comments, key) {
        return diag;
    }
    // Inside a `penalty`, `criterion` or `format` statement: its form.
    if let Some(prev) = &prev {
        let head = statement_head(text, prev.start);
        let shape = super::ast::statement_form(head);
        let form = match head {
            "penalty" => shape.map(|s| format!("a penalty is written `{s}`")),
            "criterion" => {
                shape.map(|s| format!("a criterion is written `{s}`, its name unquoted"))
            }
            "format" => shape.map(|s| format!("a format term is written `{s}`")),
            _ => None,
        };
        // `penalty NAME VALUE`: the `=` after the name.
        let missing_equals_after = |word: bool| {
            word && expected.first() == Some(&Expectation::Token("=")) && found.starts_value()
        };
        if let (Some(form), "penalty") = (&form, head) {
            if missing_equals_after(statement_prefix(text, prev.start).trim() == head) {
                return missing_equals(source, text, prev, &found, form, "penalty ");
            }
        }
        // Past the head word, or a quoted name right after it (a bare
        // `criterion x` elsewhere is a key missing its `=`).
        let in_form = head != prev.text || found.text.starts_with('"');
        if let (Some(form), true) = (form, in_form) {
            return Diagnostic::error(
                Code::E0101,
                format!(
                    "this `{head}` statement cannot be read at {}",
                    found.describe()
                ),
            )
            .with_primary(span, format!("expected {} here", describe(&expected)))
            .with_help(form);
        }
        // `key value` without `=`, the key first in its statement.
        if missing_equals_after(prev.is_word() && head == prev.text) {
            // A word alone on its line: what follows is the next
            // statement, not its value (the help gave `arch = dtype = f32`).
            let between = text.get(prev.end..found.start).unwrap_or("");
            if between.contains(['\n', '\r']) {
                return word_alone_on_its_line(source, text, prev, comments);
            }
            let form = "settings are written `key = value`";
            return missing_equals(source, text, prev, &found, form, "");
        }
    }

    // `16 promts`: a misspelt unit reads as the key of a new setting.
    if let Some(prev) = &prev {
        if let Some(diag) = misspelt_unit(source, text, prev, &found) {
            return diag;
        }
        // `timeout = 30 s`: a duration's unit, likewise.
        let number = Token::before(text, prev.start, comments);
        let key = statement_head(text, prev.start);
        if let Some(diag) = number.and_then(|n| glued::spaced_duration(source, text, &n, prev, key))
        {
            return diag;
        }
    }

    // `// ...` or `/* ... */`: comments start with `#`.
    let at_found = text.get(found.start..).unwrap_or("");
    if at_found.starts_with("//") || at_found.starts_with("/*") {
        let diag = Diagnostic::error(Code::E0101, "comments start with `#`".to_string())
            .with_primary(span, "not a comment in this language")
            .with_help(
                "write `# ...` (a line of its own or after code); `##` documents what follows",
            );
        return match at_found.starts_with("//") {
            true => diag.with_fix(Span::new(source, found.start, found.start + 2), "//", "#"),
            false => diag,
        };
    }
    let what = describe(&expected);
    let message = match &prev {
        Some(prev) if prev.text.chars().count() <= 24 => {
            format!(
                "expected {what} after {}, found {}",
                prev.quoted(),
                found.describe()
            )
        }
        _ => format!("expected {what}, found {}", found.describe()),
    };
    let mut diag =
        Diagnostic::error(Code::E0101, message).with_primary(span, format!("expected {what}"));
    if let Some(help) = help_for(&expected, &found) {
        diag = diag.with_help(help);
    }
    diag
}

/// E0113: `=` missing between the word `prev` and the value `found`; the
/// help gives `form` and the line as it should read (`lead` before the word,
/// `penalty ` for a penalty's name).
fn missing_equals(
    source: SourceId,
    text: &str,
    prev: &Token,
    found: &Token,
    form: &str,
    lead: &str,
) -> Diagnostic {
    Diagnostic::error(
        Code::E0113,
        format!(
            "expected `=` after `{}`, found {}",
            prev.text,
            found.describe()
        ),
    )
    .with_primary(Span::new(source, prev.end, prev.end), "missing `=`")
    .with_secondary(Span::new(source, found.start, found.end), "the value")
    .with_help(format!(
        "{form}: `{lead}{} = {}`",
        prev.text,
        rest_of_line(text, found.start)
    ))
}

/// E0113 for a word alone on its line inside a block, where a setting
/// belongs: a key whose `= value` is missing, or a unit that went to the
/// line after its number (`steps = 200` then `steps`).
fn word_alone_on_its_line(
    source: SourceId,
    text: &str,
    word: &Token,
    comments: &[Comment],
) -> Diagnostic {
    let span = Span::new(source, word.start, word.end);
    // A unit's word (`steps`, `token`) after a number; any other word is
    // a key (`group = 6` then `temperature`).
    let is_unit = glued::UNITS.contains(&word.text.as_str());
    let number =
        Token::before(text, word.start, comments).filter(|t| is_unit && glued::is_number(&t.text));
    match number {
        Some(n) => Diagnostic::error(
            Code::E0113,
            format!("`{}` stands alone on its line", word.text),
        )
        .with_primary(span, "a unit goes on the line of its number")
        .with_secondary(Span::new(source, n.start, n.end), "its number")
        .with_help(format!(
            "write the unit after its number on one line: `{} {}`",
            n.text, word.text
        )),
        None => Diagnostic::error(Code::E0113, format!("`{}` has no value", word.text))
            .with_primary(span, "a setting needs `= value` on its line")
            .with_help(format!(
                "settings are written `key = value` on one line: `{} = ...`, or remove the line",
                word.text
            )),
    }
}

/// The text of the statement holding byte `at` up to `at`: what follows
/// the last line break, `{` or `,` before it.
fn statement_prefix(text: &str, at: usize) -> &str {
    let before = text.get(..at).unwrap_or("");
    let start = before.rfind(['\n', '{', ',']).map_or(0, |i| i + 1);
    &before[start..]
}

/// The first word of the statement holding byte `at`.
fn statement_head(text: &str, at: usize) -> &str {
    let before = text.get(..at).unwrap_or("");
    let start = before.len() - statement_prefix(text, at).len();
    let rest = text.get(start..).unwrap_or("").trim_start();
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

fn help_for(expected: &[Expectation], found: &Token) -> Option<String> {
    if found.text == "="
        && (expected.contains(&Expectation::Value) || expected.contains(&Expectation::Operator))
    {
        return Some("compare with `==`; `=` only assigns a setting".into());
    }
    if found.text == ":" && expected.contains(&Expectation::Token("=")) {
        return Some("settings use `=`, not `:`".into());
    }
    if found.text == ";" {
        return Some("statements need no terminator; separate them with new lines or `,`".into());
    }
    if (found.text == "&&" || found.text == "&") && expected.contains(&Expectation::Setting) {
        return Some("use `and` to combine conditions".into());
    }
    if found.text == "||" || found.text == "|" {
        return Some("use `or` to combine conditions".into());
    }
    if found.text == "!" {
        return Some("use `not` to negate a condition".into());
    }
    if found.text == "'" {
        return Some("strings use double quotes: `\"text\"`".into());
    }
    // Typographic quotes, as a word processor or a chat window writes them.
    if found.text.starts_with([
        '\u{201c}', '\u{201d}', '\u{201e}', '\u{201f}', '\u{2018}', '\u{2019}', '\u{201a}',
        '\u{201b}', '\u{00ab}', '\u{00bb}', '\u{2033}', '\u{ff02}',
    ]) {
        return Some(
            "strings use straight double quotes (`\"`, U+0022): the text has typographic quotes, as an editor or a chat window writes them".into(),
        );
    }
    if let Some(c) = found
        .text
        .chars()
        .next()
        .filter(|c| !c.is_ascii() || c.is_ascii_control())
    {
        if c.is_alphabetic() {
            return Some(format!(
                "names are written in ASCII letters, digits and `_`: `{c}` (U+{:04X}) cannot be part of one",
                c as u32
            ));
        }
        if super::lexer::invisible(c) {
            return Some(format!(
                "an invisible character, U+{:04X}, is here (pasted text often holds one): delete it, or put a plain space in its place",
                c as u32
            ));
        }
    }
    if found.is_reserved() && expected.contains(&Expectation::Name) {
        return Some(format!(
            "`{}` is a reserved word; pick another name, e.g. `{}_`",
            found.text, found.text
        ));
    }
    if found.is_eof() && expected.contains(&Expectation::Value) {
        return Some("the file ends in the middle of a setting: give it a value".into());
    }
    None
}

fn rest_of_line(text: &str, from: usize) -> &str {
    let rest = text.get(from..).unwrap_or("");
    rest[..rest.find('\n').unwrap_or(rest.len())].trim_end()
}

fn misspelt_unit(source: SourceId, text: &str, prev: &Token, found: &Token) -> Option<Diagnostic> {
    if !prev.is_word() {
        return None;
    }
    let line_head = text.get(..prev.start)?;
    let line_head = &line_head[line_head.rfind('\n').map_or(0, |i| i + 1)..];
    let before = line_head.trim_end();
    if before.len() == line_head.len() || !before.ends_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if glued::UNITS.contains(&prev.text.as_str()) {
        // A unit's word is no misspelt unit: with `=` after it, it is the
        // key of a second setting on the line (`seed = 7 steps = 20 steps`)
        // that read as the first one's unit.
        let number_end = prev.start - (line_head.len() - before.len());
        return (found.text == "=").then(|| {
            two_settings_unseparated(source, &line_head[before.len()..], number_end, prev)
        });
    }
    let best = did_you_mean(&prev.text, glued::UNITS.iter().copied())?;
    Some(
        Diagnostic::error(Code::E0101, format!("unknown unit `{}`", prev.text))
            .with_primary(Span::new(source, prev.start, prev.end), "not a unit")
            .with_help(format!(
                "{} Units are `prompts`, `completions`, `tokens`, `steps` and `epochs`",
                best.help(str::to_string)
            ))
            .with_suggested_fixes(
                Span::new(source, prev.start, prev.end),
                &prev.text,
                &best,
                str::to_string,
            ),
    )
}

/// E0101 for `seed = 7 steps = 20 steps`: the second setting's key, a
/// unit's word, read as the unit of the first one's number, which ends at
/// `number_end` with `gap` (spaces) after it; the fix writes `, ` there.
fn two_settings_unseparated(
    source: SourceId,
    gap: &str,
    number_end: usize,
    key: &Token,
) -> Diagnostic {
    Diagnostic::error(
        Code::E0101,
        format!("`{}` reads as the unit of the number before it", key.text),
    )
    .with_primary(
        Span::new(source, key.start, key.end),
        "followed by `=`: the key of a second setting",
    )
    .with_help(format!(
        "separate two settings on one line with `,` (or put the second on its own line): `..., {} = ...`",
        key.text
    ))
    .with_fix(Span::new(source, number_end, key.start), gap, ", ")
}

fn unknown_declaration(span: Span, word: &str, text: &str, after: usize) -> Diagnostic {
    let mut keywords: Vec<&str> = DeclKind::ALL.iter().map(|k| k.keyword()).collect();
    keywords.push("use");
    let rest = text.get(after..).unwrap_or("").trim_start();
    let mut diag = Diagnostic::error(Code::E0109, format!("unknown declaration keyword `{word}`"))
        .with_primary(span, "not a declaration");
    diag = if let Some(best) = did_you_mean(word, keywords.iter().copied()) {
        diag.with_suggestion(span, word, &best)
    } else if rest.starts_with('=') || rest.starts_with('{') {
        diag.with_help(format!(
            "settings belong inside a declaration, e.g. `train stage {{ {word} = ... }}`"
        ))
    } else {
        diag.with_help(format!(
            "a file is a list of declarations: {}",
            crate::diagnostic::one_of(&keywords)
        ))
    };
    diag
}

/// Moves `pos` forward over whitespace and comments.
fn skip_trivia(text: &str, mut pos: usize, comments: &[Comment]) -> usize {
    let bytes = text.as_bytes();
    loop {
        while pos < bytes.len() && super::lexer::is_blank(bytes[pos]) {
            pos += 1;
        }
        match comments.iter().find(|c| c.span.start as usize == pos) {
            Some(c) => pos = c.span.end as usize,
            None => return pos,
        }
    }
}

/// A token of the source, found by looking at characters (the parser gave
/// only a position).
#[derive(Debug, Clone)]
struct Token {
    text: String,
    start: usize,
    end: usize,
    eof: bool,
}

const TWO_CHAR: &[&str] = &["==", "!=", "<=", ">=", "..", "&&", "||"];

impl Token {
    fn at(text: &str, pos: usize) -> Token {
        let rest = text.get(pos..).unwrap_or("");
        let Some(first) = rest.chars().next() else {
            return Token {
                text: String::new(),
                start: text.len(),
                end: text.len(),
                eof: true,
            };
        };
        let len = if first.is_ascii_alphanumeric() || first == '_' {
            rest.find(|c: char| {
                !(c.is_ascii_alphanumeric() || c == '_' || c == '.' && first.is_ascii_digit())
            })
            .unwrap_or(rest.len())
        } else if first == '"' {
            rest[1..]
                .find(['"', '\n'])
                .map_or(rest.len(), |i| (i + 2).min(rest.len()))
        } else if TWO_CHAR.iter().any(|t| rest.starts_with(t)) {
            2
        } else {
            first.len_utf8()
        };
        let len = len.clamp(1, 64);
        let mut end = pos + len;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Token {
            text: text[pos..end].to_string(),
            start: pos,
            end,
            eof: false,
        }
    }

    /// The token that ends right before `pos` (skipping whitespace and
    /// comments), if any.
    fn before(text: &str, pos: usize, comments: &[Comment]) -> Option<Token> {
        let bytes = text.as_bytes();
        let mut end = pos.min(bytes.len());
        loop {
            while end > 0 && super::lexer::is_blank(bytes[end - 1]) {
                end -= 1;
            }
            match comments
                .iter()
                .find(|c| (c.span.start as usize) < end && end <= c.span.end as usize)
            {
                Some(c) => end = c.span.start as usize,
                None => break,
            }
        }
        if end == 0 {
            return None;
        }
        let head = &text[..end];
        let last = head.chars().next_back()?;
        let start = if last.is_ascii_alphanumeric() || last == '_' {
            head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .map_or(0, |i| i + 1)
        } else if last == '"' {
            head[..end - 1].rfind(['"', '\n']).unwrap_or(end - 1)
        } else if TWO_CHAR.iter().any(|t| head.ends_with(t)) {
            end - 2
        } else {
            end - last.len_utf8()
        };
        let mut start = start;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Some(Token {
            text: text[start..end].to_string(),
            start,
            end,
            eof: false,
        })
    }

    fn is_eof(&self) -> bool {
        self.eof
    }

    fn is_word(&self) -> bool {
        self.text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    }

    fn is_punctuation(&self) -> bool {
        !self.eof
            && self
                .text
                .chars()
                .next()
                .is_some_and(|c| !(c.is_alphanumeric() || c == '_' || c == '"' || c.is_control()))
    }

    fn is_reserved(&self) -> bool {
        matches!(
            self.text.as_str(),
            "and" | "or" | "not" | "in" | "if" | "else" | "true" | "false"
        )
    }

    fn starts_value(&self) -> bool {
        self.text.chars().next().is_some_and(|c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '"' || c == '[' || c == '-'
        })
    }

    fn quoted(&self) -> String {
        if self.text.starts_with('"') {
            if self.text.chars().count() <= 16 {
                format!("`{}`", self.text)
            } else {
                "a string".to_string()
            }
        } else {
            format!("`{}`", self.text)
        }
    }

    fn describe(&self) -> String {
        if self.eof {
            "the end of the file".to_string()
        } else if self.text.starts_with('"') {
            "a string".to_string()
        } else if self
            .text
            .chars()
            .next()
            .is_some_and(super::lexer::invisible)
        {
            format!(
                "the invisible character U+{:04X}",
                self.text.chars().next().map_or(0, |c| c as u32)
            )
        } else if self.text.chars().next().is_some_and(|c| c.is_control()) {
            format!(
                "the control character U+{:04X}",
                self.text.chars().next().map_or(0, |c| c as u32)
            )
        } else {
            format!("`{}`", self.text)
        }
    }
}
