//! Helpers shared by the cross-crate tests: the repository layout, the
//! shipped `.safer` files, deterministic diagnostic rendering, and AST
//! comparison without spans.

use saferc::diagnostic::render::{render, RenderOptions};
use saferc::syntax::ast::Module;
use saferc::{Diagnostic, SourceMap};
use std::path::{Path, PathBuf};

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Every `.safer` file below `dir`, sorted.
pub fn safer_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name != "target" && name != "node_modules" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "safer") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `.safer` files the project ships to users: examples, the standard
/// library and the pipelines.
pub fn shipped_safer_files() -> Vec<PathBuf> {
    let root = repo_root();
    ["examples", "stdlib", "pipelines"]
        .iter()
        .flat_map(|d| safer_files_under(&root.join(d)))
        .collect()
}

/// Every `.safer` file that must parse: shipped files plus the good corpus
/// cases (not the `errors/` cases).
pub fn all_valid_safer_files() -> Vec<PathBuf> {
    let mut files = shipped_safer_files();
    let corpus = repo_root().join("tests/cases");
    files.extend(
        safer_files_under(&corpus)
            .into_iter()
            .filter(|p| !p.components().any(|c| c.as_os_str() == "errors")),
    );
    files
}

/// A path relative to the repository root, with `/` separators.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Renders diagnostics without colour at a fixed width.
pub fn render_plain(diags: &[Diagnostic], sources: &SourceMap) -> String {
    diags
        .iter()
        .map(|d| render(d, sources, RenderOptions::plain()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Gleam-style framing of a failing input and its diagnostics.
pub fn source_and_error(source: &str, rendered: &str) -> String {
    format!("----- SOURCE CODE\n{source}\n----- ERROR\n{rendered}")
}

/// The AST as JSON with every `span` field removed, for comparing trees
/// that differ only in layout.
pub fn without_spans(module: &Module) -> serde_json::Value {
    let mut value = serde_json::to_value(module).unwrap_or(serde_json::Value::Null);
    strip(&mut value);
    value
}

fn strip(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("span");
            map.remove("kind_span");
            for v in map.values_mut() {
                strip(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}
