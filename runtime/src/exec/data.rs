//! Dataset ops: `Source` (JSONL rows with images, the bad-row policy),
//! `Filter`, `Balance`, `Dedup` and `Split`. Curation, which needs a model,
//! is in [`super::curate`].
//!
//! A row's prompt is its `question` field (or `prompt`); its images are the
//! `image` field (a path) or `images` (a list of paths), relative to the
//! dataset's `images` folder. Nested objects are flattened to dotted names
//! (`meta.source`) for filters and scorers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safer_ir::plan::{eval, DatasetSpec, Env, Val};
use serde_json::Value;

use super::ExecError;

/// One dataset row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Its `id` field, or `file:line`.
    pub id: String,
    /// The file it came from and its 1-based line (for messages).
    pub origin: String,
    /// Its fields, objects flattened to dotted names.
    pub fields: BTreeMap<String, Val>,
    /// The prompt text.
    pub prompt: String,
    /// Image paths, resolved.
    pub images: Vec<PathBuf>,
}

impl Row {
    /// A field as text (`None` when missing or not a string/number).
    pub fn text(&self, field: &str) -> Option<String> {
        match self.fields.get(field)? {
            Val::Str(s) => Some(s.clone()),
            Val::Num(n) => Some(n.to_string()),
            Val::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl Env for Row {
    fn var(&self, name: &str) -> Option<Val> {
        Some(self.fields.get(name).cloned().unwrap_or(Val::Null))
    }
}

/// A row that could not be used.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRow {
    /// `file:line`.
    pub origin: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// Checks that dataset `name`'s source is a file that can be opened: run
/// before a run makes its folder, and again when the rows are read.
///
/// # Errors
/// The source is missing, not a file, or cannot be opened, with the path it
/// was looked for at.
pub fn source_readable(name: &str, spec: &DatasetSpec) -> Result<(), ExecError> {
    let path = Path::new(&spec.source);
    if let Some(kind) = crate::images::not_a_file(path) {
        return Err(ExecError::Data {
            dataset: name.to_string(),
            message: format!(
                "`{}` is {kind}, not a file: saferc reads a dataset more than once (to hash it and to load it)",
                spec.source_written
            ),
        });
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| unreadable(name, spec, &e))
}

/// Source `spec` of dataset `name` cannot be read: `e`, with the path it
/// was looked for at (relative paths are the `.safer` file's).
fn unreadable(name: &str, spec: &DatasetSpec, e: &std::io::Error) -> ExecError {
    let at = match spec.source == spec.source_written {
        true => String::new(),
        false => format!(
            " (looked for at {}: a path is relative to the file that declares it)",
            spec.source
        ),
    };
    ExecError::Data {
        dataset: name.to_string(),
        message: format!("cannot read `{}`{at}: {e}", spec.source_written),
    }
}

/// The rows of a source and the rows skipped.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Usable rows in file order.
    pub rows: Vec<Row>,
    /// Bad rows (those the file cannot give), in file order: the caller
    /// applies the dataset's policy ([`apply_bad_row_policy`]).
    pub bad: Vec<BadRow>,
    /// The SHA-256 of the bytes the rows were read from, in hex.
    pub sha256: String,
}

/// Reads a dataset's JSONL source: its usable rows and its bad rows (the
/// caller applies `on_bad_row`, once, to these and to the rows a filter
/// cannot be evaluated on: [`apply_bad_row_policy`]).
///
/// # Errors
/// An unreadable file, an images folder that is not there.
pub fn load_source(name: &str, spec: &DatasetSpec) -> Result<Loaded, ExecError> {
    source_readable(name, spec)?;
    let path = Path::new(&spec.source);
    let text = std::fs::read(path).map_err(|e| unreadable(name, spec, &e))?;
    // A JSON array (what `json.dump` of a list writes) is not JSON Lines:
    // one error, not one bad row per line. An array on a first line of its
    // own (a header row) is one bad row, as any line that is no object.
    let body = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
    let first_line = body
        .split(|b| *b == b'\n')
        .find(|l| !l.trim_ascii().is_empty());
    let opens_an_array = first_line.is_some_and(|l| l.trim_ascii_start().starts_with(b"["));
    let array_across_lines =
        opens_an_array && first_line.is_some_and(|l| serde_json::from_slice::<Value>(l).is_err());
    let whole_array = || matches!(serde_json::from_slice::<Value>(body), Ok(Value::Array(_)));
    if array_across_lines || (opens_an_array && whole_array()) {
        return Err(ExecError::Data {
            dataset: name.to_string(),
            message: format!(
                "`{}` holds a JSON array; saferc reads JSON Lines, one object per line (convert it with `jq -c '.[]' FILE`, or in Python write each row with `json.dumps(row)` on its own line)",
                spec.source_written
            ),
        });
    }
    // UTF-16 or UTF-32 (what PowerShell 5's `>` writes is UTF-16) reads as
    // one bad row per line, each "not valid JSON": one error that names
    // the encoding. Without a byte-order mark such text holds NUL bytes,
    // which JSON text in UTF-8 never does.
    let encoding = if text.starts_with(b"\xFF\xFE\x00\x00") || text.starts_with(b"\x00\x00\xFE\xFF")
    {
        Some("UTF-32 (it starts with a UTF-32 byte-order mark)")
    } else if text.starts_with(b"\xFF\xFE") || text.starts_with(b"\xFE\xFF") {
        Some("UTF-16 (it starts with a UTF-16 byte-order mark)")
    } else if first_line.is_some_and(|l| l.contains(&0)) {
        Some("not UTF-8 text (its first line holds NUL bytes: UTF-16 or UTF-32 without a byte-order mark?)")
    } else {
        None
    };
    if let Some(encoding) = encoding {
        return Err(ExecError::Data {
            dataset: name.to_string(),
            message: format!(
                "`{}` is {encoding}; saferc reads JSON Lines in UTF-8 (convert it with `iconv -t UTF-8`, naming its encoding with `-f`, or save it as UTF-8)",
                spec.source_written
            ),
        });
    }
    // An object printed over several lines (`json.dumps(row, indent=2)`):
    // its first line is a lone `{`, which no JSON Lines row is, and so is
    // its second (a key, not an object). A stray `{` before rows is one
    // bad row.
    let second_line = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .nth(1);
    let printed_over_lines = first_line.is_some_and(|l| l.trim_ascii() == b"{")
        && second_line.is_some_and(|l| !l.trim_ascii_start().starts_with(b"{"));
    if printed_over_lines {
        return Err(ExecError::Data {
            dataset: name.to_string(),
            message: format!(
                "`{}` holds JSON printed over several lines (its first row opens with a lone `{{`); saferc reads JSON Lines, one object per line (convert it with `jq -c . FILE`, or in Python write each row with `json.dumps(row)`, without `indent`)",
                spec.source_written
            ),
        });
    }
    let images = Path::new(&spec.images);
    // Lines as `str::lines` cuts them (a `\r` before the `\n` dropped), with
    // a UTF-8 byte-order mark at the start of the file skipped; a line that
    // is not UTF-8 is a bad row, not one read with replacement characters.
    let lines: Vec<(usize, Result<&str, usize>)> = text
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, raw)| {
            let raw = match i {
                0 => raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw),
                _ => raw,
            };
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            (i + 1, std::str::from_utf8(raw).map_err(|e| e.valid_up_to()))
        })
        .filter(|(_, l)| !matches!(l, Ok(l) if l.trim().is_empty()))
        .take(spec.limit.unwrap_or(usize::MAX))
        .collect();
    let parsed: Vec<Result<Row, BadRow>> = lines
        .par_iter()
        .map(|(line, l)| match l {
            Ok(l) => parse_row(&spec.source_written, *line, l, images),
            Err(valid) => Err(BadRow {
                origin: format!("{}:{line}", spec.source_written),
                reason: format!(
                    "not valid UTF-8 (at byte {} of the line; the file must be saved as UTF-8)",
                    valid + 1
                ),
            }),
        })
        .collect();
    // A missing images folder is one mistake, not one bad row per image;
    // a dataset whose rows name no image needs none.
    let names_an_image = |r: &Result<Row, BadRow>| match r {
        Ok(row) => !row.images.is_empty(),
        Err(bad) => bad.reason.starts_with("image `"),
    };
    if !images.is_dir() && parsed.iter().any(names_an_image) {
        let what = match images.exists() {
            true => "is not a folder",
            false => "does not exist",
        };
        return Err(ExecError::Data {
            dataset: name.to_string(),
            message: format!(
                "the images folder `{}` {what}; set the dataset's `images` to the folder its rows' image paths are relative to",
                images.display()
            ),
        });
    }
    let mut loaded = Loaded {
        sha256: {
            use sha2::{Digest, Sha256};
            super::checkpoint::hex(&Sha256::digest(&text))
        },
        ..Loaded::default()
    };
    for r in parsed {
        match r {
            Ok(row) => loaded.rows.push(row),
            Err(bad) => loaded.bad.push(bad),
        }
    }
    Ok(loaded)
}

/// Applies dataset `name`'s `on_bad_row` to its bad rows (those of the
/// source and those of its filters): sorts them in file order and, under
/// `fail`, stops at the first. The one place that policy is decided.
///
/// # Errors
/// Under `on_bad_row = fail`, the first bad row in the file.
pub fn apply_bad_row_policy(
    name: &str,
    spec: &DatasetSpec,
    bad: &mut [BadRow],
) -> Result<(), ExecError> {
    in_file_order(bad);
    match (bad.first(), spec.on_bad_row.as_str()) {
        (Some(first), "fail") => Err(failed_at(name, first)),
        _ => Ok(()),
    }
}

/// The error that stops a run at bad row `bad` of dataset `name` under
/// `on_bad_row = fail`.
fn failed_at(name: &str, bad: &BadRow) -> ExecError {
    ExecError::Data {
        dataset: name.to_string(),
        message: format!(
            "bad row at {bad} (the dataset says `on_bad_row = fail`; `skip` counts and skips such rows)"
        ),
    }
}

/// Sorts bad rows by their place in the file (`file:line`, the line as a
/// number), keeping the order of those on one line.
fn in_file_order(bad: &mut [BadRow]) {
    fn place(b: &BadRow) -> (&str, u64) {
        let (file, line) = b.origin.rsplit_once(':').unwrap_or((b.origin.as_str(), ""));
        (file, line.parse().unwrap_or(u64::MAX))
    }
    // A stable sort on borrowed keys: no string copied per comparison.
    bad.sort_by(|a, b| place(a).cmp(&place(b)));
}

fn parse_row(file: &str, line: usize, text: &str, images: &Path) -> Result<Row, BadRow> {
    let origin = format!("{file}:{line}");
    let bad = |reason: String| BadRow {
        origin: origin.clone(),
        reason,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let Value::Object(map) = &value else {
        return Err(bad("a row must be a JSON object".into()));
    };
    let mut fields = BTreeMap::new();
    flatten("", &value, &mut fields);
    let prompt = match ["question", "prompt"]
        .iter()
        .find_map(|k| map.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
    {
        Some((_, Value::String(text))) => text.clone(),
        Some((key, other)) => {
            return Err(bad(format!(
                "`{key}` must be text (the prompt), found {}",
                json_kind(other)
            )))
        }
        None => {
            return Err(bad(
                "missing field `question` (the prompt text; `prompt` also works)".into(),
            ))
        }
    };
    let mut paths = Vec::new();
    match (map.get("image"), map.get("images")) {
        (Some(Value::String(_)), Some(images)) if !images.is_null() => return Err(bad(
            "the row has both `image` and `images`; give one path as `image` or a list as `images`"
                .into(),
        )),
        (Some(Value::String(p)), _) => paths.push(p.clone()),
        (Some(Value::Null) | None, Some(Value::Array(items))) => {
            for item in items {
                match item.as_str() {
                    Some(p) => paths.push(p.to_string()),
                    None => return Err(bad("`images` must be a list of paths".into())),
                }
            }
        }
        (Some(Value::Null) | None, None | Some(Value::Null)) => {}
        (Some(Value::Null) | None, Some(other)) => {
            return Err(bad(format!(
                "`images` must be a list of paths, found {} (one path goes in `image`)",
                json_kind(other)
            )))
        }
        (Some(other), _) => {
            return Err(bad(format!(
                "`image` must be a path, found {} (several go in `images`, a list)",
                json_kind(other)
            )))
        }
    }
    let mut resolved = Vec::new();
    for p in paths {
        if p.trim().is_empty() {
            return Err(bad("an image path is empty".into()));
        }
        let full = images.join(&p);
        if let Some(kind) = crate::images::not_a_file(&full) {
            return Err(bad(format!("image `{p}` is {kind}, not an image file")));
        }
        // Where it was looked for, when that is not the path as written.
        let at = match full.as_path() == Path::new(&p) {
            true => String::new(),
            false => format!(" (at {})", full.display()),
        };
        let bytes = std::fs::read(&full)
            .map_err(|e| bad(format!("image `{p}` cannot be opened{at}: {e}")))?;
        if bytes.is_empty() {
            return Err(bad(format!("image `{p}` is an empty file{at}")));
        }
        let open = || {
            image::ImageReader::new(std::io::Cursor::new(&bytes))
                .with_guessed_format()
                .map_err(|e| bad(format!("image `{p}` cannot be read: {e}")))
        };
        // The size from the header first: a small file can hold an image
        // too large to decode in the memory there is.
        let (width, height) = open()?.into_dimensions().map_err(|e| {
            bad(format!(
                "image `{p}` cannot be decoded: {}",
                e.to_string().trim_end()
            ))
        })?;
        if let Some(over) = crate::images::over_the_pixel_limit(width, height) {
            return Err(bad(format!("image `{p}` {over}; shrink the file")));
        }
        open()?.decode().map_err(|e| match e {
            image::ImageError::Limits(_) => {
                let size = open()
                    .ok()
                    .and_then(|r| r.into_dimensions().ok())
                    .map_or_else(String::new, |(w, h)| format!(" ({w}×{h} pixels)"));
                bad(format!(
                    "image `{p}` is too large to decode{size}: {e}; shrink the file"
                ))
            }
            e => bad(format!(
                "image `{p}` cannot be decoded: {}",
                e.to_string().trim_end()
            )),
        })?;
        if let Some(reason) = crate::images::cut_short(&bytes) {
            return Err(bad(format!("image `{p}` {reason}")));
        }
        resolved.push(full);
    }
    if prompt.trim().is_empty() && resolved.is_empty() {
        return Err(bad(
            "the prompt is empty and the row has no image: the model would be asked nothing".into(),
        ));
    }
    // A row without an `id` (or with `"id": null`) is named by its line.
    let id = map
        .get("id")
        .filter(|v| !v.is_null())
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| origin.clone());
    Ok(Row {
        id,
        origin,
        fields,
        prompt,
        images: resolved,
    })
}

/// What kind of JSON value `v` is, for messages: "a number", "a list", ...
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Val>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), Val::from_json(other));
        }
    }
}

/// The fields the filters read that no row has (none for no rows).
fn fields_no_row_has<'s>(rows: &[Row], spec: &'s DatasetSpec) -> Vec<&'s str> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut read = BTreeSet::new();
    for f in &spec.filters {
        f.for_each_var(&mut |name| {
            read.insert(name);
        });
    }
    read.into_iter()
        .filter(|field| !rows.iter().any(|r| r.fields.contains_key(*field)))
        .collect()
}

/// A warning for each field the filters read that no row has: it reads as
/// null in every row, so a misspelt field (`lable`) would keep or drop
/// every row without a word.
fn warn_of_fields_no_row_has(dataset: &str, rows: &[Row], spec: &DatasetSpec) {
    for field in fields_no_row_has(rows, spec) {
        let present: BTreeSet<&str> = rows
            .iter()
            .flat_map(|r| r.fields.keys().map(String::as_str))
            .collect();
        let shown: Vec<String> = present.iter().take(12).map(|f| format!("`{f}`")).collect();
        crate::stderr_line!(
            "warning: dataset `{dataset}`: a filter reads `{field}`, which no row has, so it is null in every row (a misspelt field?); the rows have {}{}",
            shown.join(", "),
            if present.len() > 12 { ", ..." } else { "" }
        );
    }
}

/// Keeps the rows that meet every filter; returns them with the rows a
/// filter cannot be evaluated on (a field of another type than it
/// expects), which are bad rows (the caller applies `on_bad_row`:
/// [`apply_bad_row_policy`]).
pub fn filter(name: &str, rows: Vec<Row>, spec: &DatasetSpec) -> (Vec<Row>, Vec<BadRow>) {
    if spec.filters.is_empty() {
        return (rows, Vec::new());
    }
    warn_of_fields_no_row_has(name, &rows, spec);
    // Per row: kept, or why a filter cannot be evaluated on it.
    let keep: Vec<Result<bool, String>> = rows
        .par_iter()
        .map(|row| {
            for f in &spec.filters {
                // `objects == "pills"` on a list field: false for every
                // row, silently; a bad row that says to write `in`.
                if let Some(why) = safer_ir::plan::expr::list_against_value(f, row) {
                    return Err(why);
                }
                let v = eval(f, row).map_err(|e| e.to_string())?;
                if !v.truth("a filter").map_err(|e| e.to_string())? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for (row, k) in rows.into_iter().zip(keep) {
        match k {
            Ok(true) => out.push(row),
            Ok(false) => {}
            Err(why) => bad.push(BadRow {
                origin: row.origin,
                reason: format!("a filter cannot be evaluated on it: {why}"),
            }),
        }
    }
    (out, bad)
}

/// Resamples so that every value of `field` is as frequent as the most
/// frequent one (rows of smaller classes are repeated, drawn with `seed`).
/// Rows without a text, number or boolean `field` (missing, null, a list,
/// an object) belong to no class: they are kept once, first, and their
/// origins returned, for a warning.
pub fn balance(rows: Vec<Row>, field: &str, seed: u64) -> (Vec<Row>, Vec<String>) {
    let mut classes: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut unclassed = Vec::new();
    for row in rows {
        match row.text(field) {
            Some(value) => classes.entry(value).or_default().push(row),
            None => unclassed.push(row),
        }
    }
    let lacking: Vec<String> = unclassed.iter().map(|r| r.origin.clone()).collect();
    let target = classes.values().map(Vec::len).max().unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0ba1_aace);
    let mut out = unclassed;
    for (_, class) in classes {
        let mut extra = Vec::new();
        while class.len() + extra.len() < target {
            let mut pool = class.clone();
            pool.shuffle(&mut rng);
            extra.extend(pool.into_iter().take(target - class.len() - extra.len()));
        }
        out.extend(class);
        out.extend(extra);
    }
    (out, lacking)
}

/// Gives every split in `trained` at least one row of each value of
/// `field` that the dataset has, where another split can spare one: a row
/// of the missing value moves in (from a split not trained on, or one with
/// two or more of it), and a row of the split's most frequent value moves
/// out in exchange, so sizes stay. With few rows a stratified split can
/// still leave a value out of training (1 benign row in 6, halved), and
/// balancing cannot make a row that is not there. Returns a note per move.
pub fn give_every_value(
    splits: &mut BTreeMap<String, Vec<Row>>,
    trained: &BTreeSet<String>,
    field: &str,
) -> Vec<String> {
    let mut notes = Vec::new();
    let values: BTreeSet<String> = splits
        .values()
        .flatten()
        .filter_map(|r| r.text(field))
        .collect();
    let names: Vec<String> = splits.keys().cloned().collect();
    for into in names.iter().filter(|n| trained.contains(*n)) {
        for value in &values {
            let has = |rows: &[Row]| {
                rows.iter()
                    .filter(|r| r.text(field).as_deref() == Some(value))
                    .count()
            };
            if has(&splits[into]) > 0 {
                continue;
            }
            let donor = names.iter().filter(|n| *n != into).find(|n| {
                let count = has(&splits[*n]);
                count > 1 || (count == 1 && !trained.contains(*n))
            });
            let Some(from) = donor.cloned() else {
                continue;
            };
            // The split's most frequent value goes the other way.
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for r in &splits[into] {
                *counts.entry(r.text(field).unwrap_or_default()).or_default() += 1;
            }
            let Some((common, _)) = counts.into_iter().max_by_key(|(_, n)| *n) else {
                continue;
            };
            let (Some(give), Some(take)) = (
                splits[into]
                    .iter()
                    .position(|r| r.text(field).unwrap_or_default() == common),
                splits[&from]
                    .iter()
                    .position(|r| r.text(field).as_deref() == Some(value)),
            ) else {
                continue;
            };
            let out = splits.get_mut(into).map(|s| s.remove(give));
            let moved = splits.get_mut(&from).map(|s| s.remove(take));
            if let (Some(out), Some(moved)) = (out, moved) {
                notes.push(format!(
                    "`{into}` had no row with `{field} = {value}`: {} moved in from `{from}`, and {} went the other way",
                    moved.origin, out.origin
                ));
                if let Some(s) = splits.get_mut(into) {
                    s.push(moved);
                }
                if let Some(s) = splits.get_mut(&from) {
                    s.push(out);
                }
            }
        }
    }
    notes
}

/// The warning for the rows `balance = field` left out of its classes
/// (`lacking`, of `total` rows in dataset `dataset`); none when every row
/// has a value.
pub fn balance_warning(
    dataset: &str,
    field: &str,
    lacking: &[String],
    total: usize,
) -> Option<String> {
    let first = lacking.first()?;
    Some(if lacking.len() == total {
        format!(
            "warning: dataset `{dataset}`: `balance = {field}`: no row has a text, number or boolean `{field}`, so nothing is balanced (a misspelt field?)"
        )
    } else {
        format!(
            "warning: dataset `{dataset}`: `balance = {field}`: {} row(s) of what is balanced have no text, number or boolean `{field}` (the first: {first}); they are kept once, outside the balancing",
            lacking.len()
        )
    })
}

/// A question as two rows are compared: trimmed, and in Unicode's
/// canonical caseless form (NFD, full case folding, NFD again), so that
/// "STRASSE" is "Straße" and a composed "café" its decomposed spelling.
fn caseless_question(text: &str) -> String {
    use caseless::Caseless;
    use unicode_normalization::UnicodeNormalization;
    text.trim().nfd().default_case_fold().nfd().collect()
}

/// A row's prompt as [`dedup`] and [`prompts_in_two_splits`] compare it:
/// the question ([`caseless_question`]) and its images by content.
fn prompt_key(r: &Row) -> (String, Vec<u64>) {
    with_images(caseless_question(&r.prompt), r)
}

/// [`prompt_key`] of row `r` whose question is already `question`.
fn with_images(question: String, r: &Row) -> (String, Vec<u64>) {
    (question, r.images.iter().map(|p| image_key(p)).collect())
}

/// Drops rows whose prompt (and images) also appear in `others`: the
/// question compared trimmed and case-folded, the images by content, so the
/// same picture reached through another `images` folder or file name still
/// counts as seen.
pub fn dedup(rows: Vec<Row>, others: &[Row]) -> (Vec<Row>, usize) {
    let seen: HashSet<(String, Vec<u64>)> = others.par_iter().map(prompt_key).collect();
    let before = rows.len();
    let keep: Vec<bool> = rows
        .par_iter()
        .map(|r| !seen.contains(&prompt_key(r)))
        .collect();
    let kept: Vec<Row> = rows
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

/// Pairs of splits `(a, b)` that share prompts, compared as [`dedup`]
/// compares them (the question trimmed and case-folded, the images by
/// content): the number of `b`'s distinct prompts also in `a`, and one
/// example as `line and line`. A prompt repeated on two lines of the source
/// is two rows, which the seeded split may deal to two splits; balance
/// copies are one row and stay in one. Images are read only for questions
/// found in two splits.
pub fn prompts_in_two_splits(
    splits: &BTreeMap<String, Vec<Row>>,
) -> Vec<(String, String, usize, String)> {
    // Each row's question, compared once.
    let questions: Vec<Vec<String>> = splits
        .values()
        .map(|rows| rows.iter().map(|r| caseless_question(&r.prompt)).collect())
        .collect();
    let mut in_splits: HashMap<&str, BTreeSet<&String>> = HashMap::new();
    for (name, qs) in splits.keys().zip(&questions) {
        for q in qs {
            in_splits.entry(q).or_default().insert(name);
        }
    }
    let shared_questions: HashSet<&str> = in_splits
        .into_iter()
        .filter_map(|(q, names)| (names.len() > 1).then_some(q))
        .collect();
    // Each split's distinct prompts among those, with the first line
    // holding each.
    type FirstLines<'r> = HashMap<(String, Vec<u64>), &'r str>;
    let firsts: Vec<(&String, FirstLines<'_>)> = splits
        .iter()
        .zip(&questions)
        .map(|((name, rows), qs)| {
            let mut first = HashMap::new();
            for (r, q) in rows.iter().zip(qs) {
                if shared_questions.contains(q.as_str()) {
                    first
                        .entry(with_images(q.clone(), r))
                        .or_insert(r.origin.as_str());
                }
            }
            (name, first)
        })
        .collect();
    let mut out = Vec::new();
    for (i, (a, in_a)) in firsts.iter().enumerate() {
        for (b, in_b) in &firsts[i + 1..] {
            let mut shared: Vec<(&str, &str)> = in_b
                .iter()
                .filter_map(|(k, origin_b)| in_a.get(k).map(|origin_a| (*origin_a, *origin_b)))
                .collect();
            if shared.is_empty() {
                continue;
            }
            shared.sort_unstable();
            let (first_a, first_b) = shared[0];
            out.push((
                (*a).clone(),
                (*b).clone(),
                shared.len(),
                format!("{first_a} and {first_b}"),
            ));
        }
    }
    out
}

/// One digest of every image `rows` show (each file's path under `folder`,
/// the dataset's `images`, and its SHA-256, in path order), `sha256:` and
/// hex, or `None` when no row has an image: the run directory keeps it, so
/// that a resume says when the images changed (the manifest's hash covers
/// the JSONL file alone). Paths are taken under `folder`, so a moved
/// project keeps its digest.
pub fn images_digest(rows: &[Row], folder: &Path) -> Option<String> {
    use super::checkpoint::{hex, sha256_of};
    use sha2::{Digest, Sha256};
    let paths: BTreeSet<&Path> = rows
        .iter()
        .flat_map(|r| r.images.iter().map(PathBuf::as_path))
        .collect();
    if paths.is_empty() {
        return None;
    }
    let mut digest = Sha256::new();
    for path in paths {
        let name = path.strip_prefix(folder).unwrap_or(path);
        digest.update(name.to_string_lossy().as_bytes());
        digest.update([0]);
        let file = sha256_of(path).unwrap_or_else(|_| "unreadable".into());
        digest.update(file.as_bytes());
    }
    Some(format!("sha256:{}", hex(&digest.finalize())))
}

/// An image file's identity for [`dedup`]: a hash of its bytes (SipHash
/// with fixed keys), or of its path if it cannot be read.
fn image_key(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::read(path) {
        Ok(bytes) => bytes.hash(&mut h),
        Err(_) => path.hash(&mut h),
    }
    h.finish()
}

/// How many of `n` rows each split gets: `fraction · n` rounded by largest
/// remainder (each floor, then one more row to the splits with the largest
/// remainders, the earlier split first on a tie), so every split is within
/// one row of its share and the sizes add up to `n`.
fn split_sizes(n: usize, splits: &[(String, f64)]) -> Vec<usize> {
    let shares: Vec<f64> = splits.iter().map(|(_, f)| f.max(0.0) * n as f64).collect();
    let mut sizes: Vec<usize> = shares.iter().map(|s| s.floor() as usize).collect();
    let mut order: Vec<usize> = (0..splits.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (shares[a] - shares[a].floor(), shares[b] - shares[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let left = n.saturating_sub(sizes.iter().sum());
    for &i in order.iter().cycle().take(left) {
        sizes[i] += 1;
    }
    sizes
}

/// Assigns rows to named splits: a seeded shuffle, then consecutive runs of
/// the fractions' sizes ([`split_sizes`]). Repeated rows stay in one split,
/// so no prompt is in two splits. With `stratify` (the field `balance`
/// names), every value of the field is spread evenly along the shuffled
/// order, so each split gets about its fraction of every class (a class
/// smaller than the number of splits cannot reach them all:
/// [`give_every_value`]).
pub fn split(
    rows: &[Row],
    splits: &[(String, f64)],
    seed: u64,
    stratify: Option<&str>,
) -> BTreeMap<String, Vec<Row>> {
    let mut out = BTreeMap::new();
    if splits.is_empty() {
        return out;
    }
    // Distinct rows by origin, shuffled; copies follow their original.
    let mut distinct: Vec<&Row> = Vec::new();
    let mut seen = HashSet::new();
    for r in rows {
        if seen.insert(r.origin.as_str()) {
            distinct.push(r);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    distinct.shuffle(&mut rng);
    if let Some(field) = stratify {
        // The k-th of a class of m rows sits at (k + 1/2) / m along the
        // order; the sort is stable, so ties keep the shuffled order.
        let mut class_sizes: HashMap<Option<String>, usize> = HashMap::new();
        for r in &distinct {
            *class_sizes.entry(r.text(field)).or_default() += 1;
        }
        let mut seen_of_class: HashMap<Option<String>, usize> = HashMap::new();
        let mut placed: Vec<(f64, &Row)> = distinct
            .iter()
            .map(|r| {
                let class = r.text(field);
                let m = class_sizes.get(&class).copied().unwrap_or(1) as f64;
                let k = seen_of_class.entry(class).or_default();
                let at = (*k as f64 + 0.5) / m;
                *k += 1;
                (at, *r)
            })
            .collect();
        placed.sort_by(|a, b| a.0.total_cmp(&b.0));
        distinct = placed.into_iter().map(|(_, r)| r).collect();
    }
    let distinct: Vec<&str> = distinct.iter().map(|r| r.origin.as_str()).collect();
    let n = distinct.len();
    let sizes = split_sizes(n, splits);
    let mut assignment: BTreeMap<&str, usize> = BTreeMap::new();
    let mut start = 0usize;
    for (i, size) in sizes.iter().enumerate() {
        let end = (start + size).min(n);
        for origin in &distinct[start..end] {
            assignment.insert(origin, i);
        }
        start = end;
    }
    for (name, _) in splits {
        out.insert(name.clone(), Vec::new());
    }
    for r in rows {
        if let Some(&i) = assignment.get(r.origin.as_str()) {
            if let Some(v) = out.get_mut(&splits[i].0) {
                v.push(r.clone());
            }
        }
    }
    out
}

/// A dataset reading `file` (shown as `rows.jsonl`) with images in `dir`,
/// skipping bad rows: the tests' dataset.
#[cfg(test)]
pub(crate) fn source_spec(file: &std::path::Path, dir: &std::path::Path) -> DatasetSpec {
    DatasetSpec {
        source: file.to_string_lossy().into_owned(),
        source_written: "rows.jsonl".into(),
        images: dir.to_string_lossy().into_owned(),
        on_bad_row: "skip".into(),
        filters: Vec::new(),
        curate: None,
        balance: None,
        dedup: Vec::new(),
        limit: None,
        splits: Vec::new(),
        seed: 0,
    }
}

#[cfg(test)]
impl Row {
    /// A row of no fields, its origin also its id: the tests' row.
    pub(crate) fn at(origin: &str) -> Row {
        Row {
            id: origin.into(),
            origin: origin.into(),
            fields: BTreeMap::new(),
            prompt: String::new(),
            images: Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::*;

    fn row(origin: &str, category: &str) -> Row {
        Row {
            id: origin.into(),
            origin: origin.into(),
            fields: BTreeMap::from([("category".into(), Val::Str(category.into()))]),
            prompt: format!("q {origin}"),
            images: Vec::new(),
        }
    }

    /// A row's `id` names it in the samples: text as it is, a number as
    /// written; without one, or with `"id": null`, its `file:line`.
    #[test]
    fn a_row_is_named_by_its_id_or_its_line() {
        let dir = std::env::temp_dir();
        let id = |text: &str| parse_row("rows.jsonl", 4, text, &dir).map(|r| r.id).ok();
        assert_eq!(
            id(r#"{"question": "q", "id": "a-1"}"#).as_deref(),
            Some("a-1")
        );
        assert_eq!(id(r#"{"question": "q", "id": 7}"#).as_deref(), Some("7"));
        assert_eq!(id(r#"{"question": "q"}"#).as_deref(), Some("rows.jsonl:4"));
        assert_eq!(
            id(r#"{"question": "q", "id": null}"#).as_deref(),
            Some("rows.jsonl:4")
        );
    }

    /// A filter's field that no row has (`lable` for `label`) is found for
    /// the warning; one that some row has is not.
    #[test]
    fn a_filter_field_no_row_has_is_found() {
        use safer_ir::plan::expr::Binary;
        use safer_ir::plan::Expr;
        let rows = vec![row("a", "x"), row("b", "y")];
        let dir = std::env::temp_dir();
        let mut spec = source_spec(&dir.join("rows.jsonl"), &dir);
        let reads = |field: &str| Expr::Binary {
            op: Binary::Ne,
            lhs: Box::new(Expr::Var { name: field.into() }),
            rhs: Box::new(Expr::Const {
                value: Val::Str("unsafe".into()),
            }),
        };
        spec.filters = vec![reads("lable"), reads("category")];
        assert_eq!(fields_no_row_has(&rows, &spec), ["lable"]);
        assert!(fields_no_row_has(&[], &spec).is_empty());
        spec.filters = vec![reads("category")];
        assert!(fields_no_row_has(&rows, &spec).is_empty());
    }

    /// A row the filter cannot be evaluated on (`score < 3` where `score`
    /// is text) is a bad row: skipped and named under `skip`, the end of
    /// the run under `fail`.
    #[test]
    fn rows_a_filter_cannot_read_are_bad_rows() {
        use safer_ir::plan::expr::Binary;
        use safer_ir::plan::Expr;
        let mut rows = vec![row("a", "x"), row("b", "x")];
        rows[0].fields.insert("score".into(), Val::Num(1.0));
        rows[1]
            .fields
            .insert("score".into(), Val::Str("high".into()));
        let dir = std::env::temp_dir();
        let mut spec = source_spec(&dir.join("rows.jsonl"), &dir);
        spec.filters = vec![Expr::Binary {
            op: Binary::Lt,
            lhs: Box::new(Expr::Var {
                name: "score".into(),
            }),
            rhs: Box::new(Expr::Const {
                value: Val::Num(3.0),
            }),
        }];
        let (kept, mut bad) = filter("d", rows, &spec);
        assert_eq!(kept.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].origin, "b", "{bad:?}");
        assert!(apply_bad_row_policy("d", &spec, &mut bad).is_ok());
        spec.on_bad_row = "fail".into();
        let err = apply_bad_row_policy("d", &spec, &mut bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("bad row at b: a filter cannot be evaluated on it"),
            "{err}"
        );
        assert!(err.contains("on_bad_row = fail"), "{err}");
    }

    #[test]
    fn bad_rows_name_their_line() {
        let (dir, file) = rows_file("rows");
        // A whole image, and one cut after its header: its size reads, its pixels do not.
        image::RgbImage::new(4, 4).save(dir.join("ok.png")).unwrap();
        let whole = std::fs::read(dir.join("ok.png")).unwrap();
        std::fs::write(dir.join("cut.png"), &whole[..40]).unwrap();
        std::fs::write(
            &file,
            concat!(
                "{\"question\": \"ok\"}\n{broken\n{\"label\": \"x\"}\n{\"question\": \"q\", \"image\": \"missing.png\"}\n",
                "{\"question\": \"two\", \"images\": [\"ok.png\", \"ok.png\"]}\n",
                "{\"question\": \"q\", \"image\": \"cut.png\"}\n",
                "{\"question\": \"q\", \"image\": \"ok.png\", \"images\": [\"ok.png\"]}\n",
                "{\"question\": 42}\n",
                "{\"question\": \"q\", \"images\": \"ok.png\"}\n",
                "{\"question\": \"q\", \"image\": [\"ok.png\"]}\n",
                "{\"question\": \"q\", \"image\": \"empty.png\"}\n",
            ),
        )
        .ok();
        std::fs::write(dir.join("empty.png"), b"").unwrap();
        let spec = source_spec(&file, &dir);
        let loaded = load_source("d", &spec).ok().unwrap_or_default();
        assert_eq!(loaded.rows.len(), 2);
        assert_eq!(
            loaded.rows[1].images,
            vec![dir.join("ok.png"), dir.join("ok.png")]
        );
        let bad: Vec<String> = loaded.bad.iter().map(ToString::to_string).collect();
        let want = [
            "rows.jsonl:2: not valid JSON",
            "rows.jsonl:3: missing field `question`",
            "rows.jsonl:4: image `missing.png` cannot be opened",
            "rows.jsonl:6: image `cut.png` cannot be decoded",
            "rows.jsonl:7: the row has both `image` and `images`",
            "rows.jsonl:8: `question` must be text (the prompt), found a number",
            "rows.jsonl:9: `images` must be a list of paths, found text (one path goes in `image`)",
            "rows.jsonl:10: `image` must be a path, found a list (several go in `images`, a list)",
            "rows.jsonl:11: image `empty.png` is an empty file (at ",
        ];
        // A reason is one line: no decoder's trailing newline.
        assert!(bad.iter().all(|b| !b.ends_with('\n')), "{bad:?}");
        assert_eq!(bad.len(), want.len());
        for (got, want) in bad.iter().zip(want) {
            assert!(got.starts_with(want), "{bad:?}");
        }
        let fail = DatasetSpec {
            on_bad_row: "fail".into(),
            ..spec
        };
        let mut loaded = load_source("d", &fail).unwrap();
        let err = apply_bad_row_policy("d", &fail, &mut loaded.bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("rows.jsonl:2"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A fresh folder for test `tag` and the path of its `rows.jsonl`.
    fn rows_file(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("saferc-data-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let file = dir.join("rows.jsonl");
        (dir, file)
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_a_line_not_in_utf8_is_a_bad_row() {
        let (dir, file) = rows_file("bom");
        let mut bytes = b"\xEF\xBB\xBF{\"question\": \"first\"}\r\n".to_vec();
        bytes
            .extend_from_slice(b"{\"question\": \"caf\xE9?\"}\n{\"question\": \"caf\xC3\xA9?\"}\n");
        std::fs::write(&file, bytes).unwrap();
        let spec = source_spec(&file, &dir);
        let loaded = load_source("d", &spec).unwrap();
        let prompts: Vec<&str> = loaded.rows.iter().map(|r| r.prompt.as_str()).collect();
        assert_eq!(prompts, ["first", "café?"]);
        let bad: Vec<String> = loaded.bad.iter().map(ToString::to_string).collect();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with("rows.jsonl:2: not valid UTF-8 (at byte 18"),
            "{bad:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A file holding a JSON array is one error that says it is not JSON
    /// Lines, not one bad row per line.
    #[test]
    fn a_json_array_is_one_error() {
        let (dir, file) = rows_file("array");
        std::fs::write(
            &file,
            "\u{feff}[\n  {\"question\": \"q\"},\n  {\"question\": \"r\"}\n]\n",
        )
        .unwrap();
        let err = load_source("d", &source_spec(&file, &dir))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`rows.jsonl` holds a JSON array; saferc reads JSON Lines"),
            "{err}"
        );
        // The whole array on one line too.
        std::fs::write(&file, "[{\"question\": \"q\"}, {\"question\": \"r\"}]\n").unwrap();
        assert!(load_source("d", &source_spec(&file, &dir)).is_err());
        // A header row that is an array is one bad row; the rows load.
        std::fs::write(&file, "[\"question\", \"answer\"]\n{\"question\": \"q\"}\n").unwrap();
        let loaded = load_source("d", &source_spec(&file, &dir)).unwrap();
        assert_eq!((loaded.rows.len(), loaded.bad.len()), (1, 1));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A UTF-16 file and objects printed over several lines are one error
    /// that names what the file is, not one bad row per line.
    #[test]
    fn a_utf16_file_or_indented_json_is_one_error() {
        let (dir, file) = rows_file("utf16");
        let row = "{\"question\": \"q\"}\n";
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend(row.encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(&file, utf16).unwrap();
        let err = load_source("d", &source_spec(&file, &dir))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`rows.jsonl` is UTF-16"), "{err}");
        std::fs::write(
            &file,
            "{\n  \"question\": \"q\"\n}\n{\n  \"question\": \"r\"\n}\n",
        )
        .unwrap();
        let err = load_source("d", &source_spec(&file, &dir))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("holds JSON printed over several lines"),
            "{err}"
        );
        // A lone `{` after the first row, or before rows, is a bad row.
        for text in ["{\"question\": \"q\"}\n{\n", "{\n{\"question\": \"q\"}\n"] {
            std::fs::write(&file, text).unwrap();
            let loaded = load_source("d", &source_spec(&file, &dir)).unwrap();
            assert_eq!((loaded.rows.len(), loaded.bad.len()), (1, 1), "{text:?}");
        }
        // UTF-32 is named as such, and UTF-16 without a byte-order mark by
        // its NUL bytes.
        let mut utf32 = vec![0xFF, 0xFE, 0, 0];
        utf32.extend(row.chars().flat_map(|c| u32::from(c).to_le_bytes()));
        std::fs::write(&file, utf32).unwrap();
        let err = load_source("d", &source_spec(&file, &dir))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("is UTF-32"), "{err}");
        let bare: Vec<u8> = row.encode_utf16().flat_map(u16::to_be_bytes).collect();
        std::fs::write(&file, bare).unwrap();
        let err = load_source("d", &source_spec(&file, &dir))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("holds NUL bytes"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A filter comparing a list field with `==` to a text makes each row
    /// where the field is a list a bad row that says to write `in`; a row
    /// where the field is text is filtered as before.
    #[test]
    fn a_filter_comparing_a_list_with_a_text_is_a_bad_row() {
        use safer_ir::plan::expr::Binary;
        use safer_ir::plan::Expr;
        let (dir, file) = rows_file("list");
        std::fs::write(
            &file,
            "{\"question\": \"a\", \"objects\": [\"pills\"]}\n{\"question\": \"b\", \"objects\": \"pills\"}\n",
        )
        .unwrap();
        let mut spec = source_spec(&file, &dir);
        spec.filters = vec![Expr::Binary {
            op: Binary::Eq,
            lhs: Box::new(Expr::Var {
                name: "objects".into(),
            }),
            rhs: Box::new(Expr::Const {
                value: Val::Str("pills".into()),
            }),
        }];
        let loaded = load_source("d", &spec).unwrap();
        let (kept, bad) = filter("d", loaded.rows, &spec);
        assert_eq!(
            kept.iter().map(|r| r.prompt.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].origin == "rows.jsonl:1" && bad[0].reason.contains("write `\"pills\" in ...`"),
            "{bad:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// An empty prompt without an image, and an image over the pixel limit
    /// (read from its header, not decoded), are bad rows.
    #[test]
    fn an_empty_prompt_and_a_huge_image_are_bad_rows() {
        let (dir, file) = rows_file("huge");
        std::fs::write(
            dir.join("huge.png"),
            crate::images::png_claiming(20_000, 20_000),
        )
        .unwrap();
        std::fs::write(
            &file,
            "{\"question\": \"  \"}\n{\"question\": \"q\", \"image\": \"huge.png\"}\n{\"question\": \"fine\"}\n",
        )
        .unwrap();
        let loaded = load_source("d", &source_spec(&file, &dir)).unwrap();
        assert_eq!(loaded.rows.len(), 1);
        let bad: Vec<String> = loaded.bad.iter().map(ToString::to_string).collect();
        assert!(
            bad[0].contains("rows.jsonl:1: the prompt is empty"),
            "{bad:?}"
        );
        assert!(
            bad[1].contains("rows.jsonl:2: image `huge.png` is 20000×20000 pixels, over the limit"),
            "{bad:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A missing or misnamed `images` folder is one error naming the
    /// folder, not one bad row per image.
    #[test]
    fn a_missing_images_folder_is_one_error() {
        let (dir, file) = rows_file("noimg");
        std::fs::write(&file, "{\"question\": \"q\", \"image\": \"a.png\"}\n").unwrap();
        // Rows that name no image need no folder.
        let text_only = dir.join("text.jsonl");
        std::fs::write(&text_only, "{\"question\": \"q\"}\n").unwrap();
        assert!(load_source("d", &source_spec(&text_only, &dir.join("imgs"))).is_ok());
        for (folder, what) in [
            (dir.join("imgs"), "does not exist"),
            (file.clone(), "is not a folder"),
        ] {
            let spec = source_spec(&file, &folder);
            let err = load_source("d", &spec)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains(&format!("the images folder `{}` {what}", folder.display())),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn dedup_drops_prompts_seen_elsewhere() {
        let rows = vec![row("a", "x"), row("b", "x"), row("c", "y")];
        let mut held_out = row("z", "x");
        held_out.prompt = "Q B".into(); // same question as `b`, up to case
        let (kept, dropped) = dedup(rows, &[held_out]);
        assert_eq!(dropped, 1);
        assert_eq!(
            kept.iter().map(|r| r.origin.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
    }

    #[test]
    fn dedup_compares_images_by_content() {
        let dir = std::env::temp_dir().join(format!("saferc-dedup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("other")).unwrap();
        image::RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]))
            .save(dir.join("a.png"))
            .unwrap();
        std::fs::copy(dir.join("a.png"), dir.join("other/same.png")).unwrap();
        image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]))
            .save(dir.join("b.png"))
            .unwrap();
        let with = |origin: &str, image: &str| {
            let mut r = row(origin, "x");
            r.prompt = "What is this?".into();
            r.images = vec![dir.join(image)];
            r
        };
        let rows = vec![with("a", "a.png"), with("b", "b.png")];
        // The held-out row shows `a.png`'s picture under another name and folder.
        let (kept, dropped) = dedup(rows, &[with("z", "other/same.png")]);
        assert_eq!(dropped, 1);
        assert_eq!(
            kept.iter().map(|r| r.origin.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_sizes_round_by_largest_remainder() {
        let three = [
            ("eval".to_string(), 0.33),
            ("test".to_string(), 0.33),
            ("train".to_string(), 0.34),
        ];
        // The last split took every rounding error: train got 0 of 2 rows.
        assert_eq!(split_sizes(2, &three), [1, 0, 1]);
        assert_eq!(split_sizes(5, &three), [2, 1, 2]);
        assert_eq!(split_sizes(20, &three), [7, 6, 7]);
        let halves = [("eval".to_string(), 0.5), ("train".to_string(), 0.5)];
        assert_eq!(split_sizes(3, &halves), [2, 1]);
        let quarter = [("eval".to_string(), 0.25), ("train".to_string(), 0.75)];
        for n in 0..50 {
            let sizes = split_sizes(n, &quarter);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            // Two splits: as `round` gave the first (half away from zero).
            assert_eq!(sizes[0], (0.25 * n as f64).round() as usize, "n = {n}");
        }
    }

    #[test]
    fn balance_keeps_rows_without_the_field_once() {
        let mut rows = vec![row("a", "x"), row("b", "x"), row("c", "y")];
        let mut unlabelled = row("d", "x");
        unlabelled.fields.remove("category");
        rows.push(unlabelled);
        let (balanced, lacking) = balance(rows, "category", 1);
        assert_eq!(lacking, ["d"]);
        assert_eq!(balanced.iter().filter(|r| r.origin == "d").count(), 1);
        assert_eq!(balanced.len(), 5);
        assert!(balance_warning("ds", "category", &lacking, 5)
            .is_some_and(|w| w.contains("1 row(s) of what is balanced have no")));
        let (_, all) = balance(vec![row("a", "x")], "lable", 1);
        assert!(balance_warning("ds", "lable", &all, 1)
            .is_some_and(|w| w.contains("nothing is balanced")));
        assert_eq!(balance_warning("ds", "category", &[], 4), None);
    }

    #[test]
    fn balance_equalises_and_split_keeps_copies_together() {
        let rows = vec![row("a", "x"), row("b", "x"), row("c", "x"), row("d", "y")];
        let (balanced, lacking) = balance(rows, "category", 1);
        assert!(lacking.is_empty());
        assert_eq!(balanced.len(), 6);
        assert_eq!(balanced.iter().filter(|r| r.origin == "d").count(), 3);
        let splits = split(
            &balanced,
            &[("eval".into(), 0.5), ("train".into(), 0.5)],
            3,
            None,
        );
        let eval: HashSet<&str> = splits["eval"].iter().map(|r| r.origin.as_str()).collect();
        let train: HashSet<&str> = splits["train"].iter().map(|r| r.origin.as_str()).collect();
        assert!(eval.is_disjoint(&train));
        assert_eq!(eval.len() + train.len(), 4);
        assert_eq!(splits["eval"].len() + splits["train"].len(), 6);
    }

    /// A value with one row, split away from training, is brought in (and
    /// a row of the most frequent value goes out): sizes stay.
    #[test]
    fn every_trained_split_gets_a_row_of_every_value() {
        let mut splits = BTreeMap::from([
            (
                "eval".to_string(),
                vec![row("u1", "u"), row("s1", "s"), row("u2", "u")],
            ),
            (
                "train".to_string(),
                vec![row("u3", "u"), row("u4", "u"), row("u5", "u")],
            ),
        ]);
        let trained = BTreeSet::from(["train".to_string()]);
        let notes = give_every_value(&mut splits, &trained, "category");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("`train` had no row with `category = s`: s1 moved in from `eval`"),
            "{notes:?}"
        );
        assert_eq!((splits["eval"].len(), splits["train"].len()), (3, 3));
        assert!(splits["train"].iter().any(|r| r.origin == "s1"));
        // Nothing to spare: the only row of a value stays in the other
        // trained split.
        let mut both = BTreeMap::from([
            ("a".to_string(), vec![row("s1", "s"), row("u1", "u")]),
            ("b".to_string(), vec![row("u2", "u"), row("u3", "u")]),
        ]);
        let all = BTreeSet::from(["a".to_string(), "b".to_string()]);
        assert!(give_every_value(&mut both, &all, "category").is_empty());
    }

    /// Stratified by a field, every split gets its share of each class:
    /// 5 of one label and 1 of another, halved, leave no split without the
    /// larger class and sizes within one row of the fractions, for every
    /// seed; 40 of one and 20 of another at 3:1 give 30/10 and 15/5.
    #[test]
    fn a_stratified_split_gives_each_split_its_share_of_every_class() {
        let labelled = |counts: &[(&str, usize)]| -> Vec<Row> {
            counts
                .iter()
                .flat_map(|(label, n)| (0..*n).map(move |i| row(&format!("{label}{i}"), label)))
                .collect()
        };
        let count = |rows: &[Row], label: &str| {
            rows.iter()
                .filter(|r| r.text("category").as_deref() == Some(label))
                .count()
        };
        let halves = [("eval".to_string(), 0.5), ("train".to_string(), 0.5)];
        for seed in 0..20 {
            let s = split(
                &labelled(&[("u", 5), ("s", 1)]),
                &halves,
                seed,
                Some("category"),
            );
            assert_eq!((s["eval"].len(), s["train"].len()), (3, 3), "seed {seed}");
            assert!(
                count(&s["eval"], "u") >= 2 && count(&s["train"], "u") >= 2,
                "seed {seed}"
            );
            let s = split(
                &labelled(&[("u", 40), ("s", 20)]),
                &[("eval".to_string(), 0.25), ("train".to_string(), 0.75)],
                seed,
                Some("category"),
            );
            assert_eq!(
                (count(&s["train"], "u"), count(&s["train"], "s")),
                (30, 15),
                "seed {seed}"
            );
            assert_eq!(
                (count(&s["eval"], "u"), count(&s["eval"], "s")),
                (10, 5),
                "seed {seed}"
            );
        }
    }

    /// A prompt on two lines of the source, dealt to two splits, is found
    /// (its case and spaces aside, its images the same); balance copies
    /// (one origin) and one split's own repeats are not.
    #[test]
    fn prompts_dealt_to_two_splits_are_found() {
        let with = |origin: &str, prompt: &str, image: &str| Row {
            prompt: prompt.into(),
            images: vec![PathBuf::from(image)],
            ..Row::at(origin)
        };
        let splits = BTreeMap::from([
            (
                "eval".to_string(),
                vec![
                    with("d.jsonl:2", "Is this safe?", "a.png"),
                    with("d.jsonl:5", "Other?", "a.png"),
                ],
            ),
            (
                "train".to_string(),
                vec![
                    with("d.jsonl:7", " is this SAFE? ", "a.png"),
                    with("d.jsonl:8", "Is this safe?", "b.png"),
                    with("d.jsonl:9", "Other?", "b.png"),
                    with("d.jsonl:9", "Other?", "b.png"),
                ],
            ),
        ]);
        assert_eq!(
            prompts_in_two_splits(&splits),
            vec![(
                "eval".to_string(),
                "train".to_string(),
                1,
                "d.jsonl:2 and d.jsonl:7".to_string()
            )]
        );
        let apart = BTreeMap::from([("eval".to_string(), splits["eval"].clone())]);
        assert!(prompts_in_two_splits(&apart).is_empty());
    }

    /// Questions compare in Unicode's canonical caseless form, and images by
    /// content, in both `dedup` and the two-splits warning.
    #[test]
    fn prompts_compare_caseless_and_images_by_content() {
        assert_eq!(
            caseless_question("Straße sign"),
            caseless_question(" STRASSE SIGN")
        );
        assert_eq!(
            caseless_question("caf\u{e9} menu"),
            caseless_question("cafe\u{301} menu")
        );
        assert_ne!(
            caseless_question("cafe menu"),
            caseless_question("caf\u{e9} menu")
        );
        let dir = std::env::temp_dir().join(format!("saferc-two-splits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        image::RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]))
            .save(dir.join("red.png"))
            .unwrap();
        std::fs::copy(dir.join("red.png"), dir.join("red2.png")).unwrap();
        let with = |origin: &str, prompt: &str, image: &str| Row {
            prompt: prompt.into(),
            images: vec![dir.join(image)],
            ..Row::at(origin)
        };
        let splits = BTreeMap::from([
            (
                "eval".to_string(),
                vec![with("d.jsonl:11", "Same Q", "red.png")],
            ),
            (
                "train".to_string(),
                vec![with("d.jsonl:12", "same q ", "red2.png")],
            ),
        ]);
        assert_eq!(
            prompts_in_two_splits(&splits),
            vec![(
                "eval".to_string(),
                "train".to_string(),
                1,
                "d.jsonl:11 and d.jsonl:12".to_string()
            )]
        );
        let (kept, dropped) = dedup(
            vec![with("d.jsonl:8", "STRASSE SIGN", "red2.png")],
            &[with("e.jsonl:3", "Straße sign", "red.png")],
        );
        assert_eq!((kept.len(), dropped), (0, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
