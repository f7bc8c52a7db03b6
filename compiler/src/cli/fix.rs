//! `saferc check --fix`: writes the diagnostics' fixes into the files they
//! are for, as the editor's quick fixes do: a misspelt key, name, value or
//! unit replaced by the one it was meant to be, a renamed or deprecated key
//! by its saferc name.
//!
//! Only a diagnostic with a single fix is fixed, only in the files the
//! command names (not in the files they import), and only where its file
//! on disk still holds what the fix replaces; the standard library and
//! standard input are never written. Files are replaced atomically, and a
//! byte-order mark the file starts with is kept.

use super::input::write_atomically;
use crate::diagnostic::fix::{single_fixes, with_fixes};
use crate::diagnostic::Diagnostic;
use crate::source::SourceMap;
use std::path::PathBuf;

/// A file the fixes were written into, and how many.
pub(super) struct Fixed {
    pub path: PathBuf,
    pub count: usize,
}

/// Writes each diagnostic's single fix into its file, if that file is one
/// of `named` (the files the command names), adding the files changed to
/// `fixed` (those written before an error included) and the other files
/// with fixes (those the named files import) to `left`.
///
/// # Errors
/// A file that cannot be read back or written, with its path.
pub(super) fn apply(
    diags: &[Diagnostic],
    sources: &SourceMap,
    named: &[PathBuf],
    fixed: &mut Vec<Fixed>,
    left: &mut Vec<Fixed>,
) -> Result<(), String> {
    let named: Vec<PathBuf> = named
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    for (id, file) in sources.iter() {
        let fixes = single_fixes(diags, id);
        if fixes.is_empty() {
            continue;
        }
        let Some(path) = file.path.as_ref().filter(|p| p.as_os_str() != "-") else {
            continue;
        };
        // A file the named ones import (a shared rubric) is not changed
        // unasked.
        if !std::fs::canonicalize(path).is_ok_and(|p| named.contains(&p)) {
            left.push(Fixed {
                path: path.clone(),
                count: fixes.len(),
            });
            continue;
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let (bom, on_disk) = match bytes.strip_prefix("\u{feff}".as_bytes()) {
            Some(rest) => ("\u{feff}", rest),
            None => ("", bytes.as_slice()),
        };
        // Changed since it was checked: its spans no longer point where they did.
        if on_disk != file.text.as_bytes() {
            continue;
        }
        let (text, count) = with_fixes(&file.text, fixes);
        if count == 0 {
            continue;
        }
        write_atomically(path, &format!("{bom}{text}"))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
        fixed.push(Fixed {
            path: path.clone(),
            count,
        });
    }
    Ok(())
}
