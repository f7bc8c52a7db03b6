//! Reading source files for the CLI and printing diagnostics.

use super::Format;
use crate::diagnostic::render::{self, RenderOptions};
use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::source::SourceMap;
use crate::span::SourceId;
use std::io::{IsTerminal, Read};
use std::path::Path;

/// The path whose project a command's input belongs to: `-` (standard
/// input) counts as a file of the current folder.
pub fn project_path(path: &Path) -> std::path::PathBuf {
    match path.as_os_str() == "-" {
        true => Path::new(".").join("-"),
        false => path.to_path_buf(),
    }
}

/// Analyzes `path`, or standard input for `-` (as a file of the current
/// folder, its imports resolved from there).
///
/// # Errors
/// Standard input that cannot be read (E0111, E0100, E0106).
pub fn analyze(
    sources: &mut SourceMap,
    path: &Path,
    options: crate::semantic::loader::LoadOptions,
) -> Result<crate::semantic::Analysis, Box<Diagnostic>> {
    if path.as_os_str() != "-" {
        return Ok(crate::semantic::analyze_file(sources, path, options));
    }
    let id = read(sources, path)?;
    let text = sources.get(id).map(|f| f.text.clone()).unwrap_or_default();
    Ok(crate::semantic::analyze_text(
        sources,
        "-",
        &text,
        Some(Path::new(".")),
        options,
    ))
}

/// Reads a file (or stdin for `-`) into the source map.
///
/// # Errors
/// As [`SourceMap::load_bytes`], plus E0111 when the file cannot be read.
pub fn read(sources: &mut SourceMap, path: &Path) -> Result<SourceId, Box<Diagnostic>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        // One byte past the limit at most, as for files (E0106).
        let limit = crate::syntax::lexer::MAX_SOURCE_BYTES as u64 + 1;
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| {
                Box::new(Diagnostic::error(
                    Code::E0111,
                    format!("cannot read standard input: {e}"),
                ))
            })?;
        return sources.load_bytes("-", None, &buf);
    }
    sources.load(path)
}

/// Writes a source file through a temporary file and a rename, so a crash
/// never leaves it half-written; the file keeps its permissions. A
/// symbolic link is written through (its target changes, the link stays),
/// and a file this user may not write is left alone, as an editor would
/// leave it: the rename alone would replace it whatever its permissions.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if path.exists() {
        std::fs::OpenOptions::new().append(true).open(path)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".saferc.tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)
}

/// Prints diagnostics in the chosen format. A reader that goes away
/// (`saferc check ... | head`) ends the output, not the program: the exit
/// code still says whether there were errors.
pub fn emit(diags: &[Diagnostic], sources: &SourceMap, format: Format) {
    use std::io::Write;
    match format {
        Format::Human => {
            let options = RenderOptions {
                color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                width: terminal_width(),
            };
            let mut err = std::io::stderr().lock();
            let secrets = render::all_secrets(diags);
            for d in diags {
                let report = render::render_hiding(d, sources, options, &secrets);
                if writeln!(err, "{report}").is_err() {
                    return;
                }
            }
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let warnings = diags.len() - errors;
            if errors + warnings > 0 {
                let _ = writeln!(err, "{}", summary(errors, warnings));
            }
        }
        Format::Json => {
            let list: Vec<serde_json::Value> =
                diags.iter().map(|d| render::to_json(d, sources)).collect();
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let doc = serde_json::json!({
                "diagnostics": list,
                "errors": errors,
                "warnings": diags.len() - errors,
            });
            let _ = writeln!(std::io::stdout().lock(), "{doc}");
        }
    }
}

fn summary(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, w: &str| {
        if n == 1 {
            format!("{n} {w}")
        } else {
            format!("{n} {w}s")
        }
    };
    match (errors, warnings) {
        (0, w) => plural(w, "warning"),
        (e, 0) => plural(e, "error"),
        (e, w) => format!("{} and {}", plural(e, "error"), plural(w, "warning")),
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}
