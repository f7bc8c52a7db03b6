//! Projects: a folder with a `safer.toml` manifest.
//!
//! Like `Cargo.toml` for a crate, the manifest makes a folder a saferc
//! project: its name and version, where imports may come from, where models,
//! data and runs live, the default device, named judge endpoints (so that a
//! URL or API key never has to be written into a shared rubric), and pins of
//! imported rubrics (content hashes, checked at compile time).
//!
//! Commands find the nearest `safer.toml` above the file they are given (or
//! the current directory); without one, a single `.safer` file still works
//! with defaults.

pub mod manifest;
pub mod new;
pub mod pins;
pub mod secrets;

pub use manifest::{JudgeEndpoint, Manifest};

use crate::diagnostic::Diagnostic;
use crate::source::SourceMap;
use std::path::{Path, PathBuf};

/// The manifest's file name.
pub const MANIFEST: &str = "safer.toml";

/// A loaded project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The folder that holds `safer.toml`.
    pub root: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
}

/// The nearest folder at or above `start` that holds a `safer.toml`.
pub fn discover(start: &Path) -> Option<PathBuf> {
    // A path that is no file (`./-`, standard input as a file of the
    // current folder) is made absolute, so that the root is too: import
    // roots such as `../shared` resolve from it.
    let start = std::fs::canonicalize(start).unwrap_or_else(|_| {
        std::env::current_dir()
            .ok()
            .and_then(|here| std::fs::canonicalize(here).ok())
            .map_or_else(|| start.to_path_buf(), |here| here.join(start))
    });
    let mut dir = if start.is_file() {
        start.parent()?.to_path_buf()
    } else {
        start
    };
    loop {
        if dir.join(MANIFEST).is_file() {
            return Some(dir);
        }
        dir = dir.parent()?.to_path_buf();
    }
}

/// Finds and loads the project around `start`, if there is one.
///
/// # Errors
/// The manifest's diagnostics (syntax, unknown keys, wrong types, endpoints
/// that are not URLs, import roots outside the project).
pub fn load_around(
    sources: &mut SourceMap,
    start: &Path,
) -> Result<Option<Project>, Vec<Diagnostic>> {
    let Some(root) = discover(start) else {
        return Ok(None);
    };
    let manifest = manifest::load(sources, &root)?;
    Ok(Some(Project { root, manifest }))
}

/// The import options for checking a file at or under `start`: its
/// project's, or defaults outside a project; and the project. A manifest
/// that does not load adds its diagnostics to `diags` and gives defaults
/// marked [`LoadOptions::manifest_unreadable`], so that checks needing the
/// project do not also report it missing.
///
/// [`LoadOptions::manifest_unreadable`]: crate::semantic::loader::LoadOptions::manifest_unreadable
pub fn options_around(
    sources: &mut SourceMap,
    start: &Path,
    allow_outside_cli: bool,
    diags: &mut Vec<Diagnostic>,
) -> (crate::semantic::loader::LoadOptions, Option<Project>) {
    use crate::semantic::loader::LoadOptions;
    match load_around(sources, start) {
        Ok(Some(project)) => (project.load_options(allow_outside_cli), Some(project)),
        Ok(None) => {
            let options = LoadOptions {
                allow_outside_root: allow_outside_cli,
                ..LoadOptions::default()
            };
            (options, None)
        }
        Err(mut more) => {
            diags.append(&mut more);
            let mut options = LoadOptions {
                allow_outside_root: allow_outside_cli,
                manifest_unreadable: true,
                ..LoadOptions::default()
            };
            // Imports still resolve as the project declares them, so that
            // one mistake in `safer.toml` does not also make every import
            // through its roots "not found".
            if let Some(root) = discover(start) {
                let (search, allow_outside) = declared_import_roots(&root);
                options.allow_outside_root |= allow_outside;
                options.search = search;
                options.root = Some(root);
            }
            (options, None)
        }
    }
}

/// The `[imports]` of the manifest in `root`, read loosely from a file
/// that has errors elsewhere: its roots (resolved) and `allow_outside`;
/// none when neither the file nor its `[imports]` table alone is TOML.
fn declared_import_roots(root: &Path) -> (Vec<PathBuf>, bool) {
    let text = std::fs::read_to_string(root.join(MANIFEST)).unwrap_or_default();
    let table = text
        .parse::<toml::Table>()
        .ok()
        .or_else(|| imports_table_alone(&text));
    let imports = table.as_ref().and_then(|t| t.get("imports"));
    let roots = imports
        .and_then(|i| i.get("roots"))
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str)
        .map(|r| crate::semantic::loader::normalize(&root.join(r)))
        .collect();
    let allow_outside = imports
        .and_then(|i| i.get("allow_outside"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    (roots, allow_outside)
}

/// The `[imports]` table of a manifest that is not TOML as a whole (a
/// syntax error elsewhere in it): the lines from its header to the next
/// table's, parsed alone.
fn imports_table_alone(text: &str) -> Option<toml::Table> {
    let is_header = |line: &str| line.trim_start().starts_with('[');
    let is_imports = |line: &str| {
        let line = line.trim();
        let line = line.split('#').next().unwrap_or(line).trim_end();
        line == "[imports]"
    };
    let mut lines = text.lines().skip_while(|line| !is_imports(line));
    let header = lines.next()?;
    let body: Vec<&str> = lines.take_while(|line| !is_header(line)).collect();
    format!("{header}\n{}\n", body.join("\n")).parse().ok()
}

impl Project {
    /// The import options this project implies (root, roots, leaving).
    pub fn load_options(&self, allow_outside_cli: bool) -> crate::semantic::loader::LoadOptions {
        crate::semantic::loader::LoadOptions {
            root: Some(self.root.clone()),
            names_from: Some(self.root.clone()),
            allow_outside_root: allow_outside_cli || self.manifest.imports.allow_outside,
            search: self
                .manifest
                .imports
                .roots
                .iter()
                .map(|r| crate::semantic::loader::normalize(&self.root.join(r.get_ref())))
                .collect(),
            endpoints: Some(self.manifest.judges.keys().cloned().collect()),
            manifest_unreadable: false,
            pins: self
                .manifest
                .pins
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
            open_buffers: std::collections::BTreeMap::new(),
        }
    }
}
