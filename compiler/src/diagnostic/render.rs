//! Rendering diagnostics at the edge: miette reports for terminals and
//! snapshots, JSON for tools and editors.
//!
//! Labels whose span lies in another file than the primary label become
//! related reports with their own snippet, so a diagnostic can point into an
//! imported rubric and the importing pipeline at once.

use super::{Diagnostic, Severity};
use crate::source::SourceMap;
use crate::span::{SourceId, Span};
use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    NamedSource, SourceCode, SourceSpan, SpanContents,
};
use serde_json::{json, Value};
use std::fmt;
use std::ops::Range;

/// How to draw a report.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// ANSI colours (terminals only).
    pub color: bool,
    /// Wrap width in columns.
    pub width: usize,
}

impl RenderOptions {
    /// Deterministic output for snapshots and pipes: no colour, fixed width.
    pub fn plain() -> Self {
        RenderOptions {
            color: false,
            width: 100,
        }
    }
}

/// The part of a file a report draws, as miette reads it: the lines
/// around its labels, not the whole text (miette finds a span's line by
/// scanning from the start of what it is given, and a copy of the whole
/// text per report made 8,000 diagnostics of one file take 12 s to print).
/// Spans, line numbers and miette's running line count are those of the
/// whole file. The column of the header (`file:line:column`) counts
/// characters, as the JSON diagnostics and the LSP do; miette counts bytes,
/// so `é` or `→` before a span shifted it.
struct CharColumns {
    /// The lines drawn, starting at a line's start.
    window: NamedSource<String>,
    /// Where `window` starts in the file, in bytes.
    base: usize,
    /// The 0-based line `window` starts on.
    base_line: usize,
}

/// Lines of context the window keeps around the labels: more than the
/// report handler's (1).
const WINDOW_CONTEXT_LINES: usize = 3;

impl CharColumns {
    /// The lines of `file` around bytes `start..end` (every label of the
    /// report in this file lies within), with the bytes of `hidden` drawn
    /// as `*`.
    fn new(
        file: &crate::source::SourceFile,
        start: usize,
        end: usize,
        hidden: &[Range<usize>],
    ) -> Self {
        let first = file
            .location(start)
            .line
            .saturating_sub(WINDOW_CONTEXT_LINES);
        let last = file.location(end).line + WINDOW_CONTEXT_LINES + 1;
        let (base, stop) = (file.line_start(first), file.line_start(last));
        // A character that reorders the display (E0114) would reorder the
        // snippet on the terminal: U+FFFD, as long in UTF-8, in its place.
        // A lone `\r` ends a line for saferc, not for miette, which then
        // numbered the snippet's lines apart from the header's: `\n`, as
        // long, in its place.
        let text = &file.text[base..stop];
        let passwords = url_passwords(text, base);
        let hidden: Vec<Range<usize>> = hidden.iter().cloned().chain(passwords).collect();
        let mut shown = String::with_capacity(text.len());
        for (at, c) in text.char_indices() {
            match c {
                '\r' if !text[at + 1..].starts_with('\n') => shown.push('\n'),
                '\r' | '\n' => shown.push(c),
                // As many `*` as the character has bytes: every offset
                // after it stays where the spans say.
                _ if hidden.iter().any(|r| r.contains(&(base + at))) => {
                    shown.extend(std::iter::repeat_n('*', c.len_utf8()));
                }
                c if crate::syntax::text_direction::reorders(c) => shown.push('\u{fffd}'),
                c => shown.push(c),
            }
        }
        CharColumns {
            window: NamedSource::new(&file.name, shown),
            base,
            base_line: first,
        }
    }
}

impl SourceCode for CharColumns {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let local_start = span
            .offset()
            .checked_sub(self.base)
            .ok_or(MietteError::OutOfBounds)?;
        let local = SourceSpan::new(local_start.into(), span.len());
        let contents = self
            .window
            .read_span(&local, context_lines_before, context_lines_after)?;
        let text = self.window.inner().as_str();
        let start = contents.span().offset();
        // Only a span read without lines before it starts mid-line; the
        // window starts at a line's start, so its column is the file's.
        let column = match contents.column() {
            0 => 0,
            _ => text.get(..start).map_or(contents.column(), |before| {
                let line_start = before.rfind(['\n', '\r']).map_or(0, |i| i + 1);
                before[line_start..].chars().count()
            }),
        };
        Ok(Box::new(MietteSpanContents::new_named(
            contents.name().unwrap_or_default().to_string(),
            contents.data(),
            SourceSpan::new((start + self.base).into(), contents.span().len()),
            contents.line() + self.base_line,
            column,
            contents.line_count() + self.base_line,
        )))
    }
}

/// The byte ranges (offset by `base`) of the passwords of URLs in `text`
/// (`scheme://user:password@host`): a judge endpoint may carry one, which
/// `graph` and messages mask, and a snippet showing its line draws as `*`.
fn url_passwords(text: &str, base: usize) -> Vec<Range<usize>> {
    static URL_PASSWORD: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let Some(pattern) = URL_PASSWORD.get_or_init(|| {
        regex::Regex::new(r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:"]*:([^\s/@"]+)@"#).ok()
    }) else {
        return Vec::new();
    };
    pattern
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .map(|m| base + m.start()..base + m.end())
        .collect()
}

/// The byte ranges of file `id` that `secrets` hide: a quoted value's
/// text without its quotes, so the report still shows a string.
fn hidden_in(sources: &SourceMap, id: SourceId, secrets: &[Span]) -> Vec<Range<usize>> {
    let Some(file) = sources.get(id) else {
        return Vec::new();
    };
    secrets
        .iter()
        .filter(|s| s.source == id)
        .map(|s| {
            let (start, end) = (s.start as usize, s.end as usize);
            match file.text.get(start..end) {
                Some(t) if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') => {
                    start + 1..end - 1
                }
                _ => start..end,
            }
        })
        .collect()
}

/// A miette view of one diagnostic (one file's worth of labels).
struct Report {
    message: String,
    code: Option<String>,
    severity: miette::Severity,
    help: Option<String>,
    source: Option<CharColumns>,
    labels: Vec<LabeledSpan>,
    related: Vec<Report>,
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.code
            .as_ref()
            .map(|c| Box::new(c.clone()) as Box<dyn fmt::Display>)
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(
                self.related.iter().map(|r| r as &dyn miette::Diagnostic),
            ))
        }
    }
}

fn build_report(diag: &Diagnostic, sources: &SourceMap, secrets: &[Span]) -> Report {
    let severity = match diag.severity {
        Severity::Error => miette::Severity::Error,
        Severity::Warning => miette::Severity::Warning,
    };
    let home: Option<SourceId> = diag
        .primary_span()
        .or_else(|| diag.labels.first().map(|l| l.span))
        .map(|s| s.source);
    let mut help = diag.help.clone();
    for note in &diag.notes {
        help = Some(match help {
            Some(h) => format!("{h}\nnote: {note}"),
            None => format!("note: {note}"),
        });
    }
    let mut report = Report {
        message: diag.message.clone(),
        code: Some(diag.code.as_str().to_string()),
        severity,
        help,
        source: None,
        labels: Vec::new(),
        related: Vec::new(),
    };
    let Some(home) = home else {
        return report;
    };
    if let Some(place) = too_wide_to_show(diag, sources) {
        // miette pads the underline to the label's column with a format
        // width, which cannot pass u16::MAX: name the place instead of
        // drawing the line.
        let note = format!("at {place} (the line is too long to show)");
        report.help = Some(match report.help.take() {
            Some(h) => format!("{h}\nnote: {note}"),
            None => format!("note: {note}"),
        });
        return report;
    }
    if let Some(file) = sources.get(home) {
        let spans = diag
            .labels
            .iter()
            .map(|l| l.span)
            .filter(|s| s.source == home);
        let start = spans.clone().map(|s| s.start as usize).min().unwrap_or(0);
        let end = spans.map(|s| s.end as usize).max().unwrap_or(0);
        report.source = Some(CharColumns::new(
            file,
            start,
            end,
            &hidden_in(sources, home, secrets),
        ));
    }
    for label in &diag.labels {
        let text_len = sources.get(label.span.source).map_or(0, |f| f.text.len());
        let start = (label.span.start as usize).min(text_len);
        let len = label.span.len().min(text_len - start);
        let span = (start, len);
        let labeled = if label.primary {
            LabeledSpan::new_primary_with_span(label.message.clone(), span)
        } else {
            LabeledSpan::new_with_span(label.message.clone(), span)
        };
        if label.span.source == home {
            report.labels.push(labeled);
        } else if let Some(file) = sources.get(label.span.source) {
            report.related.push(Report {
                message: label
                    .message
                    .clone()
                    .unwrap_or_else(|| "related location".to_string()),
                code: None,
                severity: miette::Severity::Advice,
                help: None,
                source: Some(CharColumns::new(
                    file,
                    start,
                    start + len,
                    &hidden_in(sources, label.span.source, secrets),
                )),
                labels: vec![LabeledSpan::new_with_span(None, span)],
                related: Vec::new(),
            });
        }
    }
    report
}

/// Labels further right than this many bytes into their line are not drawn.
const WIDEST_DRAWN_COLUMN: usize = 60_000;

/// `file:line:column` of the first label whose span ends further right than
/// [`WIDEST_DRAWN_COLUMN`] in its line, if any.
fn too_wide_to_show(diag: &Diagnostic, sources: &SourceMap) -> Option<String> {
    diag.labels.iter().find_map(|label| {
        let file = sources.get(label.span.source)?;
        let text = file.text.as_str();
        let start = (label.span.start as usize).min(text.len());
        let end = (start + label.span.len()).min(text.len());
        let (before, after) = (text.get(..start)?, text.get(start..)?);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = after.find('\n').map_or(text.len(), |i| start + i);
        let drawn =
            |from: usize, to: usize| drawn_width(text.get(from..to.max(from)).unwrap_or(""));
        if drawn(line_start, end.min(line_end)) <= WIDEST_DRAWN_COLUMN
            && drawn(line_start, line_end) <= WIDEST_DRAWN_COLUMN
        {
            return None;
        }
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        Some(format!("{}:{line}:{column}", file.name))
    })
}

/// At least the columns miette draws `s` across: a tab takes 4, every
/// other character at most as many columns (1, or 2 when wide) as it has
/// bytes in UTF-8.
fn drawn_width(s: &str) -> usize {
    s.len() + 3 * s.matches('\t').count()
}

/// Renders one diagnostic as a miette graphical report; the text of its
/// [`Diagnostic::secrets`] is drawn as `*`.
pub fn render(diag: &Diagnostic, sources: &SourceMap, options: RenderOptions) -> String {
    render_hiding(diag, sources, options, &diag.secrets)
}

/// As [`render`], drawing the text of `secrets` as `*` wherever the report
/// shows it: a printer of several diagnostics passes all of theirs, since
/// one diagnostic's snippet can show the line another one hides.
pub fn render_hiding(
    diag: &Diagnostic,
    sources: &SourceMap,
    options: RenderOptions,
    secrets: &[Span],
) -> String {
    let theme = if options.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(options.width)
        .with_links(false)
        .with_urls(false);
    let report = build_report(diag, sources, secrets);
    let mut out = String::new();
    if handler.render_report(&mut out, &report).is_err() {
        // The handler only fails on a broken fmt::Write, which String is not;
        // fall back to the headline so nothing is ever lost.
        out = format!("{}[{}]: {}\n", severity_word(diag), diag.code, diag.message);
    }
    out
}

/// Renders several diagnostics, separated by blank lines.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap, options: RenderOptions) -> String {
    let secrets = all_secrets(diags);
    diags
        .iter()
        .map(|d| render_hiding(d, sources, options, &secrets))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every span that any of `diags` hides.
pub fn all_secrets(diags: &[Diagnostic]) -> Vec<Span> {
    diags
        .iter()
        .flat_map(|d| d.secrets.iter().copied())
        .collect()
}

fn severity_word(diag: &Diagnostic) -> &'static str {
    match diag.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// The JSON form of a diagnostic, for `--format json` and editors.
///
/// Locations are 0-based lines and columns (characters), plus byte offsets
/// (counted after a byte-order mark, which is no part of the program).
pub fn to_json(diag: &Diagnostic, sources: &SourceMap) -> Value {
    let labels: Vec<Value> = diag
        .labels
        .iter()
        .map(|label| {
            let file = sources.get(label.span.source);
            let start = file.map(|f| f.location(label.span.start as usize));
            let end = file.map(|f| f.location(label.span.end as usize));
            json!({
                "file": file.map(|f| f.name.clone()),
                "primary": label.primary,
                "message": label.message,
                "byte_start": label.span.start,
                "byte_end": label.span.end,
                "start": start,
                "end": end,
            })
        })
        .collect();
    let fixes: Vec<Value> = diag
        .fixes
        .iter()
        .filter(|fix| {
            sources
                .get(fix.span.source)
                .is_some_and(|f| fix.applies_to(&f.text))
        })
        .map(|fix| {
            let file = sources.get(fix.span.source);
            json!({
                "title": fix.title,
                "file": file.map(|f| f.name.clone()),
                "byte_start": fix.span.start,
                "byte_end": fix.span.end,
                "start": file.map(|f| f.location(fix.span.start as usize)),
                "end": file.map(|f| f.location(fix.span.end as usize)),
                "replacement": fix.replacement,
            })
        })
        .collect();
    json!({
        "severity": severity_word(diag),
        "code": diag.code.as_str(),
        "message": diag.message,
        "labels": labels,
        "help": diag.help,
        "notes": diag.notes,
        "fixes": fixes,
        "url": diag.code.url(),
    })
}
