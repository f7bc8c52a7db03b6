//! `saferc check`: load, parse and analyze pipelines, lower the clean ones
//! to their dataflow graph; report every diagnostic. With `--fix`, the
//! diagnostics' fixes are written into the files first ([`super::fix`]).

use super::{fix, input, Format, ImportArgs};
use crate::diagnostic::Diagnostic;
use crate::source::SourceMap;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Rounds of fixing: a fixed name can uncover a misspelling behind it.
const FIX_ROUNDS: usize = 4;

pub(super) fn run(files: &[PathBuf], format: Format, fix: bool, imports: &ImportArgs) -> i32 {
    if fix && files.iter().any(|p| p.as_os_str() == "-") {
        eprintln!("error: `--fix` writes files, and standard input is not one: give the path");
        return 2;
    }
    let (mut sources, mut diags) = analyze(files, imports);
    let mut fixed_in: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut left_in: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut failure = None;
    // Each file's text before its first fix: fixes that undo each other
    // leave it as it was, and nothing is said to be fixed in it.
    let mut before: BTreeMap<PathBuf, String> = BTreeMap::new();
    for _ in 0..FIX_ROUNDS {
        if !fix {
            break;
        }
        for (_, file) in sources.iter() {
            if let Some(path) = &file.path {
                before
                    .entry(path.clone())
                    .or_insert_with(|| file.text.clone());
            }
        }
        let (mut fixed, mut left) = (Vec::new(), Vec::new());
        let result = fix::apply(&diags, &sources, files, &mut fixed, &mut left);
        let any = !fixed.is_empty();
        for f in fixed {
            *fixed_in.entry(f.path).or_default() += f.count;
        }
        // As the last round found them.
        left_in = left.into_iter().map(|f| (f.path, f.count)).collect();
        if let Err(e) = result {
            failure = Some(e);
            break;
        }
        if !any {
            break;
        }
        (sources, diags) = analyze(files, imports);
    }
    fixed_in.retain(|path, _| {
        let unchanged = before.get(path).is_some_and(|was| {
            std::fs::read_to_string(path).is_ok_and(|now| now.trim_start_matches('\u{feff}') == was)
        });
        !unchanged
    });
    // What was written is said even when a later file could not be; a
    // path under the current folder is shown from it, however it was
    // reached (named, or imported by an absolute path).
    let here = std::env::current_dir().ok();
    let shown = |path: &std::path::Path| -> String {
        here.as_ref()
            .and_then(|here| path.strip_prefix(here).ok())
            .unwrap_or(path)
            .display()
            .to_string()
    };
    for (path, count) in fixed_in {
        let plural = if count == 1 { "" } else { "s" };
        eprintln!("fixed {count} problem{plural} in {}", shown(&path));
    }
    for (path, count) in left_in {
        let (plural, them) = if count == 1 {
            ("", "it")
        } else {
            ("s", "them")
        };
        let path = shown(&path);
        eprintln!(
            "not fixed: {count} problem{plural} in {path}, which the checked files import (name it to fix {them}: `saferc check --fix {path}`)"
        );
    }
    if let Some(e) = failure {
        eprintln!("error: {e}");
        return 1;
    }
    input::emit(&diags, &sources, format);
    i32::from(diags.iter().any(Diagnostic::is_error))
}

/// Every file's diagnostics, with the sources they point into.
fn analyze(files: &[PathBuf], imports: &ImportArgs) -> (SourceMap, Vec<Diagnostic>) {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    for path in files {
        let options = imports.options_for(&input::project_path(path), &mut sources, &mut diags);
        let analysis = match input::analyze(&mut sources, path, options) {
            Ok(analysis) => analysis,
            Err(d) => {
                diags.push(*d);
                continue;
            }
        };
        let clean = !analysis.diagnostics.iter().any(Diagnostic::is_error);
        diags.extend(analysis.diagnostics);
        // What only the dataflow graph shows (stages ordered in a cycle,
        // E04xx), as `graph` and `run` report it.
        if let (true, Some(program)) = (clean, analysis.program) {
            if let Err(graph_diags) = crate::graph::lower(&program) {
                diags.extend(graph_diags);
            }
        }
    }
    let diags = each_once(diags, &sources);
    (sources, diags)
}

/// `diags` without repeats: files checked together that import the same
/// file, or share a `safer.toml`, report its problems once (each analysis
/// loads it again, so the same problem comes with another source id).
fn each_once(diags: Vec<Diagnostic>, sources: &SourceMap) -> Vec<Diagnostic> {
    let place = |l: &crate::diagnostic::Label| {
        let file = sources.get(l.span.source).map(|f| match &f.path {
            Some(path) => path.display().to_string(),
            None => f.name.clone(),
        });
        (file, l.span.start, l.span.end, l.message.clone(), l.primary)
    };
    let mut seen = std::collections::HashSet::new();
    diags
        .into_iter()
        .filter(|d| {
            let labels: Vec<_> = d.labels.iter().map(place).collect();
            seen.insert((
                d.is_error(),
                d.code.as_str(),
                d.message.clone(),
                labels,
                d.help.clone(),
            ))
        })
        .collect()
}
