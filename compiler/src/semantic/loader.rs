//! Loading a pipeline and everything it `use`s.
//!
//! Paths resolve from the file that names them (never from the working
//! directory); `std/...` paths come from the embedded standard library.
//! A file outside the project root is refused unless the caller allows it;
//! an import cycle is reported with the whole cycle.

use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::source::{SourceFile, SourceMap};
use crate::span::{SourceId, Span};
use crate::stdlib;
use crate::syntax::{self, ast};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The embedded standard library (`std/...`).
    Std(String),
    /// A file on disk (canonical path).
    File(PathBuf),
    /// Text given directly (tests, the editor's unsaved buffer).
    Text(String),
}

/// One parsed module and its resolved imports.
#[derive(Debug)]
pub struct LoadedModule {
    /// Its source.
    pub source: SourceId,
    /// Where it came from.
    pub origin: Origin,
    /// Its display name.
    pub name: String,
    /// The syntax tree.
    pub ast: ast::Module,
    /// Its `use` items, resolved.
    pub imports: Vec<Import>,
    /// Its `use` items that did not resolve (their errors are reported):
    /// each one's `as` name, if any. A name this module does not find may
    /// be declared in one of them, so it is not also reported unknown.
    pub failed_uses: Vec<Option<String>>,
}

/// A resolved `use`.
#[derive(Debug, Clone)]
pub struct Import {
    /// The target module (index into [`Loaded::modules`]).
    pub module: usize,
    /// `as name`, when given.
    pub alias: Option<String>,
    /// The `use` item.
    pub span: Span,
}

/// The entry module (index 0), its imports, and the prelude.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every module; the entry is first.
    pub modules: Vec<LoadedModule>,
    /// Index of the prelude (`std/std.safer`), when it loaded.
    pub prelude: Option<usize>,
    /// The options it was loaded with.
    pub options: LoadOptions,
}

/// Options of the loader (and of the checks that depend on the project).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The project root; files outside it are refused. Defaults to the
    /// entry file's folder.
    pub root: Option<PathBuf>,
    /// The folder modules are named from (their pin keys and content
    /// hashes): the project's, so that `--root` moving the root elsewhere
    /// keeps the names `saferc pin` wrote. Defaults to the root.
    pub names_from: Option<PathBuf>,
    /// Allow imports outside the root (`--allow-outside-root`).
    pub allow_outside_root: bool,
    /// Folders searched for `use` paths after the importing file's folder
    /// (`[imports] roots` of `safer.toml`).
    pub search: Vec<PathBuf>,
    /// Names of the judge endpoints of `safer.toml` (`None`: no project).
    pub endpoints: Option<Vec<String>>,
    /// A `safer.toml` was found but did not load (its errors are reported
    /// already): the checks that need it say nothing more.
    pub manifest_unreadable: bool,
    /// Pinned rubric hashes (`[pins]` of `safer.toml`).
    pub pins: std::collections::BTreeMap<String, String>,
    /// The texts of files open in an editor, by canonical path: an import
    /// of one reads its text there, unsaved changes included, instead of
    /// the file on disk.
    pub open_buffers: std::collections::BTreeMap<PathBuf, String>,
}

struct Loader<'s> {
    sources: &'s mut SourceMap,
    options: LoadOptions,
    root: Option<PathBuf>,
    loaded: Loaded,
    by_origin: HashMap<Origin, usize>,
    stack: Vec<usize>,
    visited: Vec<usize>,
    diags: Vec<Diagnostic>,
}

/// Loads the entry file from disk and everything it imports.
pub fn load_file(
    sources: &mut SourceMap,
    path: &Path,
    options: LoadOptions,
) -> (Loaded, Vec<Diagnostic>) {
    let id = match sources.load(path) {
        Ok(id) => id,
        Err(d) => return (Loaded::default(), vec![*d]),
    };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let root = options
        .root
        .clone()
        .or_else(|| canonical.parent().map(Path::to_path_buf));
    load_entry(sources, id, Origin::File(canonical), root, options)
}

/// Loads an entry given as text (relative imports resolve from `base_dir`).
pub fn load_text(
    sources: &mut SourceMap,
    name: &str,
    text: &str,
    base_dir: Option<&Path>,
    options: LoadOptions,
) -> (Loaded, Vec<Diagnostic>) {
    let path = base_dir.map(|d| d.join(name));
    let id = sources.add(SourceFile::new(name, path, text.to_string()));
    let root = options
        .root
        .clone()
        .or_else(|| base_dir.map(Path::to_path_buf));
    // Imports resolve from the folder's canonical path, as a file's do, so
    // that they compare with the (canonical) root: standard input's `.`, an
    // editor's path through a symbolic link.
    let origin = match base_dir {
        Some(d) => Origin::File(
            std::fs::canonicalize(d)
                .unwrap_or_else(|_| d.to_path_buf())
                .join(name),
        ),
        None => Origin::Text(name.to_string()),
    };
    load_entry(sources, id, origin, root, options)
}

fn load_entry(
    sources: &mut SourceMap,
    id: SourceId,
    origin: Origin,
    root: Option<PathBuf>,
    options: LoadOptions,
) -> (Loaded, Vec<Diagnostic>) {
    // The files' paths are canonical, so the root is too: `--root rt`
    // from the folder above `rt` is that folder, wherever it is named from.
    let root = root.map(|r| {
        std::fs::canonicalize(&r)
            .or_else(|_| std::path::absolute(&r).map(|a| normalize(&a)))
            .unwrap_or(r)
    });
    let mut loader = Loader {
        sources,
        options,
        root,
        loaded: Loaded::default(),
        by_origin: HashMap::new(),
        stack: Vec::new(),
        visited: Vec::new(),
        diags: Vec::new(),
    };
    let name = loader
        .sources
        .get(id)
        .map(|f| f.name.clone())
        .unwrap_or_default();
    if let Some(entry) = loader.parse_and_add(id, origin, name) {
        loader.visit(entry);
    }
    if !loader.loaded.modules.is_empty() {
        let prelude = loader.load_std(stdlib::PRELUDE, Span::default());
        loader.loaded.prelude = prelude;
        if let Some(p) = prelude {
            loader.visit(p);
        }
    }
    loader.loaded.options = loader.options.clone();
    (loader.loaded, loader.diags)
}

impl Loader<'_> {
    fn parse_and_add(&mut self, id: SourceId, origin: Origin, name: String) -> Option<usize> {
        let text = self
            .sources
            .get(id)
            .map(|f| f.text.clone())
            .unwrap_or_default();
        match syntax::parse(id, &text) {
            Ok(ast) => {
                self.diags
                    .extend(syntax::text_direction::warnings(id, &text));
                let index = self.loaded.modules.len();
                self.loaded.modules.push(LoadedModule {
                    source: id,
                    origin: origin.clone(),
                    name,
                    ast,
                    imports: Vec::new(),
                    failed_uses: Vec::new(),
                });
                self.by_origin.insert(origin, index);
                Some(index)
            }
            Err(d) => {
                self.diags.push(*d);
                None
            }
        }
    }

    /// Resolves the imports of `module`, depth first.
    fn visit(&mut self, module: usize) {
        self.stack.push(module);
        let uses: Vec<(String, Option<String>, Span, Span)> = self.loaded.modules[module]
            .ast
            .items
            .iter()
            .filter_map(|item| match &item.kind {
                ast::ItemKind::Use(u) => Some((
                    u.path.value.clone(),
                    u.alias.as_ref().map(|a| a.name.clone()),
                    item.span,
                    u.path.span,
                )),
                ast::ItemKind::Decl(_) => None,
            })
            .collect();
        for (path, alias, span, path_span) in uses {
            let target = if path.starts_with("std/") {
                self.load_std(&path, path_span)
            } else {
                self.load_relative(module, &path, path_span)
            };
            let Some(target) = target else {
                self.loaded.modules[module].failed_uses.push(alias);
                continue;
            };
            if let Some(pos) = self.stack.iter().position(|&m| m == target) {
                let mut names: Vec<String> = self.stack[pos..]
                    .iter()
                    .map(|&m| self.loaded.modules[m].name.clone())
                    .collect();
                names.push(self.loaded.modules[target].name.clone());
                self.diags.push(
                    Diagnostic::error(Code::E0201, "import cycle")
                        .with_primary(span, "this `use` closes the cycle")
                        .with_note(format!("the cycle: {}", names.join(" → ")))
                        .with_help("move the shared declarations into a file that both import"),
                );
                continue;
            }
            self.loaded.modules[module].imports.push(Import {
                module: target,
                alias,
                span,
            });
            if !self.is_visited(target) {
                self.visit(target);
            }
        }
        self.stack.pop();
        self.mark_visited(module);
    }

    fn is_visited(&self, module: usize) -> bool {
        self.visited.contains(&module)
    }

    fn mark_visited(&mut self, module: usize) {
        self.visited.push(module);
    }

    fn load_std(&mut self, path: &str, span: Span) -> Option<usize> {
        let origin = Origin::Std(path.to_string());
        if let Some(&i) = self.by_origin.get(&origin) {
            return Some(i);
        }
        let Some(text) = stdlib::file(path) else {
            let mut d =
                Diagnostic::error(Code::E0200, format!("no standard library module `{path}`"))
                    .with_primary(span, "not in the standard library");
            d = match did_you_mean(path, stdlib::paths()) {
                Some(best) => d.with_help(best.help(str::to_string)).with_suggested_fixes(
                    span,
                    &format!("\"{path}\""),
                    &best,
                    |n| format!("\"{n}\""),
                ),
                None => d.with_help(format!(
                    "the standard library has {}",
                    crate::diagnostic::one_of(&stdlib::paths().collect::<Vec<_>>())
                )),
            };
            self.diags.push(d);
            return None;
        };
        let id = self
            .sources
            .add(SourceFile::new(path, None, text.to_string()));
        self.parse_and_add(id, origin, path.to_string())
    }

    fn load_relative(&mut self, from: usize, path: &str, span: Span) -> Option<usize> {
        if path.trim().is_empty() {
            self.diags.push(
                Diagnostic::error(Code::E0200, "`use` with an empty path")
                    .with_primary(span, "no file named")
                    .with_help("name a `.safer` file: `use \"rubrics/house.safer\"`"),
            );
            return None;
        }
        let base = match &self.loaded.modules[from].origin {
            Origin::File(p) => p.parent().map(Path::to_path_buf),
            Origin::Std(_) => {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0200,
                        format!("the standard library cannot import `{path}`"),
                    )
                    .with_primary(span, "not a `std/` path"),
                );
                return None;
            }
            Origin::Text(_) => std::env::current_dir().ok(),
        };
        let joined = base.unwrap_or_default().join(path);
        let mut normal = normalize(&joined);
        // Diagnostics name the file as the user finds it from where they
        // ran the command: beside its importer (as that one is named).
        let importer = &self.loaded.modules[from];
        let mut shown = match &importer.origin {
            Origin::File(_) => self.sources.get(importer.source).map(|f| {
                let folder = Path::new(&f.name).parent().unwrap_or(Path::new(""));
                lexically_joined(folder, Path::new(path))
            }),
            _ => None,
        };
        if !normal.is_file() {
            // Then the project's import roots, in order.
            if let Some(found) = self
                .options
                .search
                .iter()
                .map(|root| normalize(&root.join(path)))
                .find(|p| p.is_file())
            {
                normal = found;
                shown = None;
            }
        }
        if let Some(root) = &self.root {
            let root = normalize(root);
            // A symbolic link inside the root can point out of it: the
            // file it reaches counts.
            let linked_out = match (std::fs::canonicalize(&normal), std::fs::canonicalize(&root)) {
                (Ok(real), Ok(real_root)) if !real.starts_with(&real_root) => Some(real),
                _ => None,
            };
            let outside = !normal.starts_with(&root) || linked_out.is_some();
            if outside && !self.options.allow_outside_root {
                let reached = match &linked_out {
                    Some(real) if normal.starts_with(&root) => {
                        format!("resolves through a symbolic link to {}", real.display())
                    }
                    _ => format!("resolves to {}", normal.display()),
                };
                self.diags.push(
                    Diagnostic::error(
                        Code::E0202,
                        format!("`{path}` is outside the project root"),
                    )
                    .with_primary(span, reached)
                    .with_note(format!("the project root is {}", root.display()))
                    .with_help("move the file into the project, or allow it with `--allow-outside-root`"),
                );
                return None;
            }
        }
        let canonical = canonical_path(&normal);
        let origin = Origin::File(canonical.clone());
        if let Some(&i) = self.by_origin.get(&origin) {
            return Some(i);
        }
        // A pipe or a device would be waited on forever; a folder fails
        // with a less clear message.
        if std::fs::metadata(&canonical).is_ok_and(|m| !m.is_file()) {
            self.diags.push(
                Diagnostic::error(Code::E0200, format!("`{path}` is not a file"))
                    .with_primary(
                        span,
                        format!("{} is a folder, a pipe or a device", normal.display()),
                    )
                    .with_help("`use` takes a `.safer` file"),
            );
            return None;
        }
        let read = match self.options.open_buffers.get(&canonical) {
            Some(text) => Ok(text.clone().into_bytes()),
            None => std::fs::read(&canonical),
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                let mut d = Diagnostic::error(Code::E0200, format!("cannot find `{path}`"))
                    .with_primary(span, format!("{}: {e}", normal.display()))
                    .with_help("paths in `use` are relative to the file that contains the `use`");
                if !path.ends_with(".safer") {
                    // Offered only where that file is there (`use "std"`
                    // was told of a `std.safer` that does not exist).
                    let mut with_extension = normal.clone().into_os_string();
                    with_extension.push(".safer");
                    if Path::new(&with_extension).is_file() {
                        d = d.with_help(format!("did you mean `{path}.safer`?"));
                        let (wrote, fixed) = (format!("\"{path}\""), format!("\"{path}.safer\""));
                        d = d.with_fix(span, &wrote, &fixed);
                    }
                }
                if path == "std" || path.starts_with("std.") {
                    d = d.with_help("the standard library's files are named `std/...` (`std/rubrics/safety.safer`, `std/rollouts.safer`); its prelude, `std/std.safer`, is always imported");
                }
                if self.options.manifest_unreadable && self.options.search.is_empty() {
                    d = d.with_note("`safer.toml` has errors (reported with it), so the import roots it may declare were not searched");
                }
                self.diags.push(d);
                return None;
            }
        };
        let names_from = self.options.names_from.as_deref().or(self.root.as_deref());
        let name = display_name(&canonical, names_from);
        let shown = shown.unwrap_or_else(|| match std::env::current_dir() {
            Ok(here) => display_name(&canonical, Some(&here)),
            Err(_) => canonical.display().to_string(),
        });
        match self.sources.load_bytes(shown, Some(canonical), &bytes) {
            Ok(id) => self.parse_and_add(id, origin, name),
            Err(d) => {
                self.diags.push(*d);
                None
            }
        }
    }
}

/// Removes `.` and `..` components without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `folder` joined with the relative `path`, `.` and `..` resolved
/// lexically (a `..` beyond `folder`'s start is kept).
fn lexically_joined(folder: &Path, path: &Path) -> String {
    let mut out = PathBuf::new();
    for c in folder.components().chain(path.components()) {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out.display().to_string()
}

/// A module's name: its path relative to the project root (with `..` for
/// a file outside it, so that names, pin keys and hashes do not depend on
/// where the tree lies), or its absolute path outside a project.
fn display_name(path: &Path, root: Option<&Path>) -> String {
    let Some(root) = root else {
        return path.display().to_string();
    };
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| normalize(root));
    if let Ok(inside) = path.strip_prefix(&root) {
        return inside.display().to_string();
    }
    let (mut from, mut to) = (root.components().peekable(), path.components().peekable());
    while let (Some(a), Some(b)) = (from.peek(), to.peek()) {
        if a != b {
            break;
        }
        from.next();
        to.next();
    }
    let mut relative = PathBuf::new();
    for _ in from {
        relative.push("..");
    }
    relative.extend(to);
    relative.display().to_string()
}

/// `path` with its links resolved: canonical where it exists; for a file
/// not on disk (yet: one an editor has open but not saved), its folder's
/// canonical path joined with its name; else `path` as given. Open
/// buffers are keyed and looked up by it.
pub fn canonical_path(path: &Path) -> PathBuf {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return canonical;
    }
    match (path.parent(), path.file_name()) {
        (Some(folder), Some(name)) => std::fs::canonicalize(folder)
            .map_or_else(|_| path.to_path_buf(), |folder| folder.join(name)),
        _ => path.to_path_buf(),
    }
}
