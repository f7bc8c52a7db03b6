//! `saferc new` and `saferc pin`.

use super::{input, Format};
use crate::project::{self, pins};
use crate::semantic;
use crate::source::SourceMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(super) fn new(path: &Path) -> i32 {
    match project::new::create(path) {
        Ok(()) => {
            println!("created project `{}`", path.display());
            // Quoted for the shell: a name with spaces or quotes works pasted.
            let shown = path.display().to_string();
            let quoted = shlex::try_quote(&shown).map_or(shown.clone(), |q| q.into_owned());
            println!("next: cd {quoted} && saferc check pipeline.safer");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub(super) fn pin(files: &[PathBuf]) -> i32 {
    let start = files
        .first()
        .cloned()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let mut sources = SourceMap::new();
    let found = match project::load_around(&mut sources, &start) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!(
                "error: no `safer.toml` at or above `{}`: pins live in a project (`saferc new`)",
                start.display()
            );
            return 1;
        }
        Err(diags) => {
            input::emit(&diags, &sources, Format::Human);
            return 1;
        }
    };
    let targets: Vec<PathBuf> = if files.is_empty() {
        project_files(&found.root)
    } else {
        files.to_vec()
    };
    // Each project keeps its own pins: a file of another project (or of
    // none) would have its rubrics written into this one's manifest.
    for file in &targets {
        let same = project::discover(file).is_some_and(|root| root == found.root);
        if !same {
            eprintln!(
                "error: `{}` is not in the project of `{}`: pin each project on its own (`saferc pin` in its folder)",
                file.display(),
                found.root.join(project::MANIFEST).display()
            );
            return 2;
        }
    }
    let mut options = found.load_options(false);
    options.pins.clear();
    let mut new_pins = BTreeMap::new();
    let mut pinned_files = BTreeMap::new();
    let mut diags = Vec::new();
    for file in &targets {
        let analysis = semantic::analyze_file(&mut sources, file, options.clone());
        let failed = analysis.has_errors();
        diags.extend(analysis.diagnostics);
        if let (Some(program), false) = (analysis.program, failed) {
            let program = program.hashed();
            diags.extend(pins::add_pinned_files(&program, &mut pinned_files));
            new_pins.extend(pins::imported_rubrics(&program));
        }
    }
    if diags.iter().any(|d| d.is_error()) {
        input::emit(&diags, &sources, Format::Human);
        eprintln!("error: nothing pinned: fix the errors first");
        return 1;
    }
    let old: BTreeMap<String, String> = found
        .manifest
        .pins
        .iter()
        .map(|(k, v)| (k.clone(), v.get_ref().clone()))
        .collect();
    // Named files update their own rubrics' pins and keep the others';
    // the whole project's pins are what its files import now.
    let pinned = match files.is_empty() {
        true => new_pins.clone(),
        false => {
            let mut all = old.clone();
            all.extend(new_pins.clone());
            all
        }
    };
    let manifest_path = found.root.join(project::MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).unwrap_or_default();
    let updated = match pins::rewrite(&text, &pinned) {
        Ok(updated) => updated,
        Err(e) => {
            eprintln!(
                "error: `{}` is no TOML document: {e}",
                manifest_path.display()
            );
            return 1;
        }
    };
    // Written as `check --fix` writes: through a symbolic link, keeping
    // the file's permissions, and not over a file this user may not write.
    if updated != text {
        if let Err(e) = input::write_atomically(&manifest_path, &updated) {
            eprintln!("error: cannot write `{}`: {e}", manifest_path.display());
            return 1;
        }
    }
    for (k, v) in &new_pins {
        let what = match old.get(k) {
            None => "pinned",
            Some(prev) if prev == v => "unchanged",
            Some(_) => "updated",
        };
        println!("{what:>9} {k} {v}");
    }
    for (k, v) in old.iter().filter(|(k, _)| !pinned.contains_key(*k)) {
        println!(
            "{:>9} {k} {v} (no file of the project imports it now)",
            "removed"
        );
    }
    println!(
        "{} rubric(s) pinned in {}",
        pinned.len(),
        manifest_path.display()
    );
    0
}

/// Every `.safer` file of a project (not under `runs/`, `target/`, hidden
/// folders or a nested project's folder).
fn project_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                // A folder with its own `safer.toml` is another project,
                // which pins its own rubrics.
                let nested = path.join(project::MANIFEST).is_file();
                if !name.starts_with('.') && name != "runs" && name != "target" && !nested {
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
