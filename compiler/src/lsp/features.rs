//! What the server answers, computed from one analysis of the document.

use crate::diagnostic::{Diagnostic, Severity};
use crate::project;
use crate::semantic::hir::{Criterion, Decl};
use crate::semantic::schema::{self, Block};
use crate::semantic::{self, loader::LoadOptions, Analysis};
use crate::source::{SourceFile, SourceMap};
use crate::span::{SourceId, Span};
use crate::syntax::ast::{self, DeclBody, DeclKind, StmtKind};
use crate::{fmt, stdlib};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod completion;
mod hover;
mod named;
mod quick_fixes;
#[cfg(test)]
mod tests;

pub use completion::completion;
pub use hover::hover;
use named::Named;

pub use quick_fixes::code_actions;

/// A document and its analysis.
pub struct Document {
    text: String,
    /// The document's URI as the editor sent it.
    uri: String,
    sources: SourceMap,
    analysis: Analysis,
    ast: Option<ast::Module>,
    id: SourceId,
    /// Whether the editor's text starts with a byte-order mark (`text`
    /// holds a space in its place).
    byte_order_mark: bool,
    /// The project's import roots (`[imports] roots` of `safer.toml`),
    /// searched for a `use` path after the document's folder.
    import_roots: Vec<PathBuf>,
    /// While this text does not parse: the analysis of the document's last
    /// text that did, whose declarations still hover (and, for those of
    /// imported files, still go to their place) while the user types.
    last_parsed: Option<Box<Document>>,
}

/// Whether `offset` is inside a comment or a string (plain, or `"""`
/// text; one not yet closed runs to the end of its line, or of the file),
/// where words are prose, not names: a linear scan from the start, which
/// works while the text does not parse.
pub(super) fn in_prose(text: &str, offset: usize) -> bool {
    let bytes = text.as_bytes();
    let line_end = |from: usize| crate::syntax::lexer::line_end(bytes, from);
    let mut i = 0;
    while i < offset.min(bytes.len()) {
        match bytes[i] {
            b'#' => {
                let end = line_end(i);
                if offset <= end {
                    return true;
                }
                i = end;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                let close = bytes[i + 3..]
                    .windows(3)
                    .position(|w| w == b"\"\"\"")
                    .map(|p| i + 3 + p);
                match close {
                    Some(c) if offset >= c + 3 => i = c + 3,
                    _ => return true,
                }
            }
            b'"' => {
                let mut j = i + 1;
                while j < bytes.len() && !matches!(bytes[j], b'"' | b'\n' | b'\r') {
                    // An escape takes the character after the `\`, not a
                    // line's end (the lexer ends the string there).
                    let escaped = bytes[j] == b'\\'
                        && bytes
                            .get(j + 1)
                            .is_some_and(|b| !matches!(b, b'\n' | b'\r'));
                    j += if escaped { 2 } else { 1 };
                }
                if offset <= j {
                    return true;
                }
                // After the closing quote, or at the end of the line of
                // one never closed.
                i = if bytes.get(j) == Some(&b'"') {
                    j + 1
                } else {
                    j
                };
            }
            _ => i += 1,
        }
    }
    false
}

/// `file:///a%20b/c.safer` → `/a b/c.safer`; `None` for another scheme or
/// a URI that does not parse.
pub(super) fn uri_to_path(uri: &str) -> Option<PathBuf> {
    url::Url::parse(uri).ok()?.to_file_path().ok()
}

/// `/a b/c.safer` → `file:///a%20b/c.safer` (a relative path has no URI).
fn path_to_uri(path: &Path) -> Option<String> {
    url::Url::from_file_path(path).ok().map(String::from)
}

impl Document {
    /// Analyzes `text` as the file behind `uri` (imports resolve from its
    /// folder, the project from the nearest `safer.toml`).
    pub fn analyze(uri: &str, text: &str) -> Document {
        Self::analyze_among(uri, text, &BTreeMap::new())
    }

    /// As [`Self::analyze`], with the texts of the documents open in the
    /// editor (by canonical path): an import of one reads its unsaved text
    /// (this document's own entry, if there, is left out).
    pub fn analyze_among(uri: &str, text: &str, open: &BTreeMap<PathBuf, String>) -> Document {
        // A byte-order mark is no part of the program (as `saferc check`
        // reads files); a space in its place keeps every line and UTF-16
        // column the editor counts (both are one unit wide).
        let byte_order_mark = text.starts_with('\u{feff}');
        let text: &str = &match text.strip_prefix('\u{feff}') {
            Some(rest) => format!(" {rest}"),
            None => text.to_string(),
        };
        let path = uri_to_path(uri);
        let dir = path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let name = path.as_ref().and_then(|p| p.file_name()).map_or_else(
            || "untitled.safer".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut sources = SourceMap::new();
        let mut early = Vec::new();
        let mut options = match dir.as_deref() {
            Some(d) => project::options_around(&mut sources, d, false, &mut early).0,
            None => LoadOptions::default(),
        };
        options.open_buffers = open.clone();
        if let Some(own) = path.as_deref().map(crate::semantic::loader::canonical_path) {
            options.open_buffers.remove(&own);
        }
        let first = SourceId(u32::try_from(sources.iter().count()).unwrap_or(0));
        let import_roots = options.search.clone();
        let mut analysis =
            semantic::analyze_text(&mut sources, &name, text, dir.as_deref(), options);
        analysis.diagnostics.splice(0..0, early);
        // What only the dataflow graph shows (E04xx), as `saferc check` does.
        if !analysis.diagnostics.iter().any(Diagnostic::is_error) {
            if let Some(Err(graph_diags)) = analysis.program.as_ref().map(crate::graph::lower) {
                analysis.diagnostics.extend(graph_diags);
            }
        }
        let ast = analysis.entry.take();
        Document {
            text: text.to_string(),
            uri: uri.to_string(),
            sources,
            analysis,
            ast,
            id: first,
            byte_order_mark,
            import_roots,
            last_parsed: None,
        }
    }

    /// Whether the text parses (the other features read its tree).
    pub fn parses(&self) -> bool {
        self.ast.is_some()
    }

    /// The analysis of the last text of this document that parsed, while
    /// this one does not.
    pub(super) fn last_parsed(&self) -> Option<&Document> {
        self.last_parsed.as_deref()
    }

    /// This document, which does not parse, with `previous`: the analysis
    /// of the last text of it that did (ignored when this one parses).
    pub fn with_last_parsed(mut self, previous: Document) -> Document {
        if !self.parses() && previous.parses() {
            self.last_parsed = Some(Box::new(previous));
        }
        self
    }

    /// What this document's analysis read besides its own text: the
    /// canonical paths of the files it imports (directly or not) and of
    /// `safer.toml`, and whether an import named a file it could not find
    /// (which a file opened or saved later may resolve).
    pub fn dependencies(&self) -> (std::collections::BTreeSet<PathBuf>, bool) {
        let files = self
            .sources
            .iter()
            .filter(|(id, _)| *id != self.id)
            .filter_map(|(_, f)| f.path.as_deref())
            .map(crate::semantic::loader::canonical_path)
            .collect();
        let unresolved = self
            .analysis
            .diagnostics
            .iter()
            .any(|d| d.code == crate::diagnostic::Code::E0200);
        (files, unresolved)
    }

    /// The file a `use` path of this document names, found as the loader
    /// finds it: beside the document, else under the project's import
    /// roots, in order (canonical, to compare with a loaded file's path).
    fn imported_file(&self, use_path: &str) -> Option<PathBuf> {
        let dir = uri_to_path(&self.uri)?.parent()?.to_path_buf();
        std::iter::once(dir)
            .chain(self.import_roots.iter().cloned())
            .map(|folder| folder.join(use_path))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
    }

    fn file(&self, id: SourceId) -> Option<&SourceFile> {
        self.sources.get(id)
    }

    fn range(&self, span: Span) -> Value {
        let Some(f) = self.file(span.source) else {
            return json!({ "start": { "line": 0, "character": 0 }, "end": { "line": 0, "character": 0 } });
        };
        let pos = |o: usize| json!({ "line": f.location(o).line, "character": f.utf16_column(o) });
        json!({ "start": pos(span.start as usize), "end": pos(span.end as usize) })
    }

    fn offset(&self, params: &Value) -> usize {
        let line = params["position"]["line"].as_u64().unwrap_or(0) as usize;
        let character = params["position"]["character"].as_u64().unwrap_or(0) as usize;
        self.file(self.id)
            .map_or(0, |f| f.offset_of_utf16(line, character))
    }

    fn uri_of(&self, id: SourceId) -> Option<String> {
        let f = self.file(id)?;
        if id == self.id {
            return Some(self.uri.clone());
        }
        match &f.path {
            Some(p) => path_to_uri(p),
            None => materialize_std(&f.name).and_then(|p| path_to_uri(&p)),
        }
    }

    /// The diagnostics of this document as LSP `Diagnostic`s, the same as
    /// `saferc check` gives: one in a file this document imports (or in
    /// `safer.toml`) is shown on the `use` line that imports the file (at
    /// the top when the import is indirect), named, with its own place as
    /// related information.
    pub fn diagnostics(&self) -> Vec<Value> {
        self.analysis
            .diagnostics
            .iter()
            .map(|d| match d.primary_span() {
                Some(span) if span.source != self.id => self.elsewhere(d, span),
                _ => self.lsp_diagnostic(d),
            })
            .collect()
    }

    /// A diagnostic whose place is in another file, anchored in this one.
    fn elsewhere(&self, d: &Diagnostic, span: Span) -> Value {
        let mut v = self.lsp_diagnostic(d);
        let name = self
            .file(span.source)
            .map_or("another file", |f| f.name.as_str());
        let at = self.import_of(span.source).map_or_else(
            || json!({ "start": { "line": 0, "character": 0 }, "end": { "line": 0, "character": 0 } }),
            |s| self.range(s),
        );
        v["range"] = at;
        v["message"] = json!(format!(
            "in `{name}`: {}",
            v["message"].as_str().unwrap_or_default()
        ));
        if let (Some(uri), Some(related)) = (
            self.uri_of(span.source),
            v["relatedInformation"].as_array_mut(),
        ) {
            related.insert(
                0,
                json!({ "location": { "uri": uri, "range": self.range(span) }, "message": d.message.clone() }),
            );
        }
        v
    }

    /// The `use` item of this document that imports file `source` directly.
    fn import_of(&self, source: SourceId) -> Option<Span> {
        let target = self.file(source)?.path.as_ref()?;
        let target = std::fs::canonicalize(target).ok()?;
        self.ast
            .as_ref()?
            .items
            .iter()
            .find_map(|item| match &item.kind {
                ast::ItemKind::Use(u) => (self.imported_file(&u.path.value).as_ref()
                    == Some(&target))
                .then_some(item.span),
                _ => None,
            })
    }

    fn lsp_diagnostic(&self, d: &Diagnostic) -> Value {
        let span = d.primary_span().unwrap_or_default();
        let related: Vec<Value> = d
            .labels
            .iter()
            .filter(|l| !l.primary)
            .filter_map(|l| {
                Some(json!({
                    "location": { "uri": self.uri_of(l.span.source)?, "range": self.range(l.span) },
                    "message": l.message.clone().unwrap_or_default(),
                }))
            })
            .collect();
        let mut message = d.message.clone();
        if let Some(h) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(h);
        }
        json!({
            "range": self.range(span),
            "severity": if d.severity == Severity::Error { 1 } else { 2 },
            "code": d.code.as_str(),
            "codeDescription": { "href": d.code.url() },
            "source": "saferc",
            "message": message,
            "relatedInformation": related,
        })
    }

    /// The word under `offset`, and the word before a `.` in front of it.
    fn word_at(&self, offset: usize) -> Option<(String, Option<String>, Span)> {
        // Words in comments and strings are prose, not names.
        if in_prose(&self.text, offset) {
            return None;
        }
        let bytes = self.text.as_bytes();
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut start = offset.min(bytes.len());
        while start > 0 && is_word(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = offset.min(bytes.len());
        while end < bytes.len() && is_word(bytes[end]) {
            end += 1;
        }
        if start == end {
            return None;
        }
        let word = self.text[start..end].to_string();
        let qualifier = (start > 1 && bytes[start - 1] == b'.').then(|| {
            let q_end = start - 1;
            let mut q_start = q_end;
            while q_start > 0 && is_word(bytes[q_start - 1]) {
                q_start -= 1;
            }
            self.text[q_start..q_end].to_string()
        });
        Some((word, qualifier, Span::new(self.id, start, end)))
    }

    /// The declaration a name refers to (entry module first, then imports;
    /// `alias.name` looks in the aliased module).
    fn decl_named(&self, word: &str, qualifier: Option<&str>) -> Option<&Decl> {
        let program = self.analysis.program.as_ref()?;
        if let Some(d) = qualifier
            .and_then(|q| self.aliased_decls(q))
            .and_then(|decls| decls.into_iter().find(|d| d.name == word))
        {
            return Some(d);
        }
        program
            .decls
            .iter()
            .filter(|d| d.name == word)
            .min_by_key(|d| (d.module != 0, d.module))
    }

    /// The rubric criterion a word names: `rubric.criterion` (`qualifier`
    /// a rubric), a bare criterion name inside the rubric of this
    /// document that declares it (its penalties, `total`, statements), or
    /// the value of a setting that names a criterion of its stage's rubric.
    fn criterion_named(
        &self,
        word: &str,
        qualifier: Option<&str>,
        offset: usize,
    ) -> Option<(&Decl, &Criterion)> {
        let rubric = match qualifier {
            Some(q) => self.decl_named(q, None)?,
            None => match self.decl_around(offset) {
                Some(d) if d.kind == DeclKind::Rubric => {
                    self.analysis.program.as_ref()?.decls.iter().find(|r| {
                        r.module == 0 && r.kind == DeclKind::Rubric && r.name == d.name.name
                    })?
                }
                // A setting that names a criterion of its stage's rubric
                // (`cost { criterion = harm }`).
                _ => self.stage_rubric_at(offset)?,
            },
        };
        let criterion = rubric
            .rubric
            .as_ref()?
            .criteria
            .iter()
            .find(|c| c.name == word)?;
        Some((rubric, criterion))
    }

    /// The declarations of the module a `use ... as alias` of this document
    /// imports, if `alias` is one.
    fn aliased_decls(&self, alias: &str) -> Option<Vec<&Decl>> {
        let path = &self.alias_named(alias)?.path.value;
        self.imported_decls(path)
    }

    /// The declarations of the module `use "path"` imports.
    fn imported_decls(&self, path: &str) -> Option<Vec<&Decl>> {
        let program = self.analysis.program.as_ref()?;
        // The module's name ends with the `use` path's components (after
        // its leading `./` and `../`), whole components: `a.safer` is not
        // `ba.safer`.
        let wanted: Vec<&str> = path
            .split('/')
            .skip_while(|c| *c == "." || *c == "..")
            .collect();
        let is_module = |name: &str| {
            let parts: Vec<&str> = name.split('/').collect();
            !wanted.is_empty() && parts.ends_with(&wanted)
        };
        // A file on disk is the one the path names, as the loader finds it
        // (`lib/a.safer` is not `a.safer`); the standard library's by name.
        // Each loaded file's path is resolved once, not once per declaration.
        let target = self.imported_file(path);
        let target_sources: Vec<SourceId> = self
            .sources
            .iter()
            .filter(|(_, f)| {
                let file = f.path.as_ref().and_then(|p| std::fs::canonicalize(p).ok());
                target.is_some() && file == target
            })
            .map(|(id, _)| id)
            .collect();
        let declared_in_target =
            |d: &&Decl| match self.file(d.span.source).and_then(|f| f.path.as_ref()) {
                Some(_) => target_sources.contains(&d.span.source),
                None => program
                    .modules
                    .get(d.module)
                    .is_some_and(|m| is_module(&m.name)),
            };
        Some(program.decls.iter().filter(declared_in_target).collect())
    }

    /// The key of the setting whose value is under `offset`.
    fn key_of_value_at(&self, offset: usize) -> Option<String> {
        match &self.stmt_at(offset)?.kind {
            StmtKind::Assign { key, value } if (value.span.start as usize) <= offset => {
                Some(key.name.clone())
            }
            _ => None,
        }
    }

    /// The innermost statement of a declaration's block around `offset`.
    fn stmt_at(&self, offset: usize) -> Option<&ast::Stmt> {
        fn find(stmts: &[ast::Stmt], offset: usize) -> Option<&ast::Stmt> {
            let stmt = stmts.iter().find(|stmt| {
                (stmt.span.start as usize) <= offset && offset <= stmt.span.end as usize
            })?;
            let inner = match &stmt.kind {
                StmtKind::Block { body, .. }
                | StmtKind::Criterion {
                    body: Some(body), ..
                } => find(&body.stmts, offset),
                _ => None,
            };
            inner.or(Some(stmt))
        }
        self.ast
            .as_ref()?
            .items
            .iter()
            .find_map(|item| match &item.kind {
                ast::ItemKind::Decl(ast::Decl {
                    body: DeclBody::Block(b),
                    ..
                }) => find(&b.stmts, offset),
                _ => None,
            })
    }

    /// This document's declaration around `offset` (its head or its body).
    fn decl_around(&self, offset: usize) -> Option<&ast::Decl> {
        self.ast
            .as_ref()?
            .items
            .iter()
            .find_map(|item| match &item.kind {
                ast::ItemKind::Decl(d)
                    if (item.span.start as usize) <= offset && offset <= item.span.end as usize =>
                {
                    Some(d)
                }
                _ => None,
            })
    }

    /// The path of the `use` item whose string is under `offset`.
    fn use_path_at(&self, offset: usize) -> Option<String> {
        self.ast
            .as_ref()?
            .items
            .iter()
            .find_map(|item| match &item.kind {
                ast::ItemKind::Use(u)
                    if (u.path.span.start as usize) <= offset
                        && offset < u.path.span.end as usize =>
                {
                    Some(u.path.value.clone())
                }
                _ => None,
            })
    }

    /// The declarations this document can name, each as it names them:
    /// its own and those of the files it imports by name, those of a
    /// `use ... as alias` as `alias.name` (not the prelude's, not those of
    /// files its imports import).
    fn written_names(&self) -> Vec<(String, &Decl)> {
        let Some(program) = self.analysis.program.as_ref() else {
            return Vec::new();
        };
        let mut names: Vec<(String, &Decl)> = program
            .decls
            .iter()
            .filter(|d| d.module == 0)
            .map(|d| (d.name.clone(), d))
            .collect();
        let uses = self
            .ast
            .iter()
            .flat_map(|m| m.items.iter())
            .filter_map(|i| match &i.kind {
                ast::ItemKind::Use(u) => Some(u),
                _ => None,
            });
        for u in uses {
            for d in self.imported_decls(&u.path.value).unwrap_or_default() {
                let name = match &u.alias {
                    Some(alias) => format!("{}.{}", alias.name, d.name),
                    None => d.name.clone(),
                };
                names.push((name, d));
            }
        }
        names
    }

    /// What may follow `name.`: an import alias's declarations, a
    /// rubric's criteria, a dataset's splits; nothing for another name.
    fn members_of(&self, name: &str) -> Vec<Value> {
        if let Some(decls) = self.aliased_decls(name) {
            return decls.into_iter().map(declaration_item).collect();
        }
        match self.decl_named(name, None) {
            Some(d) if d.kind == DeclKind::Rubric => d
                .rubric
                .iter()
                .flat_map(|r| r.criteria.iter())
                .map(|c| json!({ "label": c.name, "kind": 5, "detail": format!("criterion of `{name}`") }))
                .collect(),
            Some(d) if d.kind == DeclKind::Dataset => d
                .settings
                .block("split")
                .into_iter()
                .flat_map(|split| split.0.keys())
                .map(|split| json!({ "label": split, "kind": 5, "detail": format!("split of `{name}`") }))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The `##` documentation of the setting, block or criterion whose
    /// name is under `offset`.
    fn statement_docs_at(&self, offset: usize) -> Vec<String> {
        let Some(stmt) = self.stmt_at(offset) else {
            return Vec::new();
        };
        let name = match &stmt.kind {
            StmtKind::Assign { key, .. } | StmtKind::Block { key, .. } => key,
            StmtKind::Criterion { name, .. }
            | StmtKind::Penalty { name, .. }
            | StmtKind::Format { name, .. } => name,
            StmtKind::Filter { .. } => return Vec::new(),
        };
        match (name.span.start as usize) <= offset && offset <= name.span.end as usize {
            true => stmt.docs.clone(),
            false => Vec::new(),
        }
    }

    /// The schema block enclosing `offset`, its path, and the key under it.
    fn block_at(&self, offset: usize) -> Option<(&'static Block, String, Option<String>)> {
        let module = self.ast.as_ref()?;
        for item in &module.items {
            let ast::ItemKind::Decl(d) = &item.kind else {
                continue;
            };
            if !(item.span.start as usize <= offset && offset <= item.span.end as usize) {
                continue;
            }
            let DeclBody::Block(block) = &d.body else {
                return None;
            };
            let mut schema = schema::for_decl(d.kind)?;
            let mut path = d.kind.keyword().to_string();
            let mut current = block;
            'descend: loop {
                for stmt in &current.stmts {
                    let inside =
                        stmt.span.start as usize <= offset && offset <= stmt.span.end as usize;
                    if !inside {
                        continue;
                    }
                    match &stmt.kind {
                        StmtKind::Assign { key, .. } => {
                            let on_key = key.span.start as usize <= offset
                                && offset <= key.span.end as usize;
                            return Some((schema, path, on_key.then(|| key.name.clone())));
                        }
                        StmtKind::Block { key, body } => {
                            if key.span.start as usize <= offset && offset <= key.span.end as usize
                            {
                                return Some((schema, path, Some(key.name.clone())));
                            }
                            let Some(nested) = schema.block(&key.name) else {
                                return Some((schema, path, None));
                            };
                            schema = nested;
                            path = format!("{path}.{}", key.name);
                            current = body;
                            continue 'descend;
                        }
                        StmtKind::Criterion {
                            body: Some(body), ..
                        } if body.span.start as usize <= offset => {
                            schema = schema.block("criterion")?;
                            path = format!("{path}.criterion");
                            current = body;
                            continue 'descend;
                        }
                        _ => return Some((schema, path, None)),
                    }
                }
                return Some((schema, path, None));
            }
        }
        None
    }

    /// The schema block around `offset` and its path: from the tree, or
    /// from the braces while the text does not parse.
    fn block_around(&self, offset: usize) -> Option<(&'static Block, String)> {
        match self.ast {
            Some(_) => self.block_at(offset).map(|(block, path, _)| (block, path)),
            None => self.block_by_braces(offset),
        }
    }

    /// The schema block around `offset` read from the braces of the text
    /// alone, for a document that does not parse (a key half typed, a
    /// block not closed yet), where [`Document::block_at`] has no tree.
    fn block_by_braces(&self, offset: usize) -> Option<(&'static Block, String)> {
        let heads = open_block_heads(self.text.get(..offset)?);
        let mut words = heads
            .iter()
            .map(|h| h.split_whitespace().next().unwrap_or(""));
        let kind = DeclKind::from_keyword(words.next()?)?;
        let mut schema = schema::for_decl(kind)?;
        let mut path = kind.keyword().to_string();
        for word in words {
            schema = schema.block(word)?;
            path = format!("{path}.{word}");
        }
        Some((schema, path))
    }
}

/// The heads (`train t`, `grpo`, `criterion safety weight 1`) of the blocks
/// still open at the end of `text`, outermost first; strings and comments
/// are skipped.
fn open_block_heads(text: &str) -> Vec<String> {
    let mut heads: Vec<String> = Vec::new();
    let mut head = String::new();
    // Inside `(...)` or `[...]` a `,` or `=` belongs to the head's
    // arguments (`rubric graded(judge = grader) {`).
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                head.clear();
            }
            '"' => {
                // A string (triple-quoted ones end at the next `"""`).
                let triple = chars.peek() == Some(&'"') && {
                    let mut look = chars.clone();
                    look.next();
                    look.peek() == Some(&'"')
                };
                if triple {
                    chars.next();
                    chars.next();
                    let mut quotes = 0;
                    for c in chars.by_ref() {
                        quotes = if c == '"' { quotes + 1 } else { 0 };
                        if quotes == 3 {
                            break;
                        }
                    }
                } else {
                    let mut escaped = false;
                    for c in chars.by_ref() {
                        match (escaped, c) {
                            (false, '\\') => escaped = true,
                            (false, '"') | (_, '\n') => break,
                            _ => escaped = false,
                        }
                    }
                }
                head.push_str("\"\"");
            }
            '{' => {
                heads.push(head.trim().to_string());
                head.clear();
                depth = 0;
            }
            '}' => {
                heads.pop();
                head.clear();
                depth = 0;
            }
            '(' | '[' => {
                depth += 1;
                head.push(c);
            }
            ')' | ']' => {
                depth = depth.saturating_sub(1);
                head.push(c);
            }
            '\n' | ',' | '=' if depth == 0 => head.clear(),
            _ => head.push(c),
        }
    }
    heads
}

/// A completion item for a declared name.
pub(super) fn declaration_item(d: &Decl) -> Value {
    json!({ "label": d.name, "kind": 6, "detail": d.kind.keyword(), "documentation": d.docs.join("\n") })
}

/// `textDocument/definition`.
pub fn definition(doc: &Document, params: &Value) -> Value {
    let offset = doc.offset(params);
    // On a `use` path: the file it imports.
    if let Some(path) = doc.use_path_at(offset) {
        return doc.imported_file_location(&path);
    }
    let Some((word, qualifier, span)) = doc.word_at(offset) else {
        return Value::Null;
    };
    // While the text does not parse: a declaration of this document whose
    // head begins a line.
    if doc.ast.is_none() {
        let heads = declaration_heads(&doc.text, usize::from(doc.byte_order_mark));
        return match heads.iter().find(|h| h.2 == word && qualifier.is_none()) {
            Some(&(_, _, ref name, at)) => {
                json!({ "uri": doc.uri, "range": doc.range(Span::new(doc.id, at, at + name.len())) })
            }
            // A declaration of an imported file, as the last text that
            // parsed imported it (those of this file have moved since).
            None => doc
                .last_parsed()
                .and_then(|previous| {
                    let d = previous.decl_named(&word, qualifier.as_deref())?;
                    let uri = previous.uri_of(d.span.source).filter(|_| d.module != 0)?;
                    Some(json!({ "uri": uri, "range": previous.range(d.span) }))
                })
                .unwrap_or(Value::Null),
        };
    }
    let target = match doc.named(&word, qualifier.as_deref(), span) {
        Some(Named::Alias { item }) => return doc.imported_file_location(&item.path.value),
        Some(Named::Param { param, .. }) => param.name.span,
        Some(Named::Split {
            statement: Some((at, _)),
            ..
        }) => at,
        Some(Named::Split { dataset, .. }) => dataset.span,
        Some(Named::Argument {
            callee: Some(callee),
            param: Some(_),
        }) => callee.span,
        Some(Named::Argument { .. }) => return Value::Null,
        None => match doc.criterion_named(&word, qualifier.as_deref(), offset) {
            Some((_, c)) => c.name_span,
            None => match doc.decl_named(&word, qualifier.as_deref()) {
                Some(d) => d.span,
                None => return Value::Null,
            },
        },
    };
    match doc.uri_of(target.source) {
        Some(uri) => json!({ "uri": uri, "range": doc.range(target) }),
        None => Value::Null,
    }
}

impl Document {
    /// The start of the file `use "path"` imports, as a location.
    fn imported_file_location(&self, path: &str) -> Value {
        let file = match path.starts_with("std/") {
            true => stdlib::file(path).and(materialize_std(path)),
            false => self.imported_file(path),
        };
        let start = json!({ "line": 0, "character": 0 });
        match file.as_deref().and_then(path_to_uri) {
            Some(uri) => json!({ "uri": uri, "range": { "start": start, "end": start } }),
            None => Value::Null,
        }
    }
}

/// `textDocument/formatting`: one edit replacing the document (none when
/// it is formatted or does not parse), the text `saferc fmt` writes: the
/// byte-order mark and the line ends kept.
pub fn formatting(doc: &Document, _params: &Value) -> Value {
    // The analysed text holds a space in the mark's place.
    let (mark, body) = match doc.byte_order_mark {
        true => ("\u{feff}", doc.text.get(1..).unwrap_or("")),
        false => ("", doc.text.as_str()),
    };
    match fmt::format_source(body) {
        Ok(formatted) => {
            let formatted = fmt::FileStyle::of(body, doc.byte_order_mark).apply(&formatted);
            if formatted == format!("{mark}{body}") {
                return json!([]);
            }
            // The whole document, up to the end of its last line.
            let whole = Span::new(doc.id, 0, doc.text.len());
            json!([{ "range": doc.range(whole), "newText": formatted }])
        }
        Err(_) => json!([]),
    }
}

/// `textDocument/documentSymbol`: the declarations; while the document
/// does not parse, those whose heads begin a line (`rubric r {`), each
/// up to the next.
pub fn symbols(doc: &Document, _params: &Value) -> Value {
    let symbol = |kind: DeclKind, name: &str, range: Span, selection: Span| {
        json!({
            "name": name,
            "detail": kind.keyword(),
            "kind": match kind { DeclKind::Model | DeclKind::Judge => 5, DeclKind::Dataset => 18, DeclKind::Rubric | DeclKind::Scorer => 12, DeclKind::Prompt => 15, _ => 2 },
            "range": doc.range(range),
            "selectionRange": doc.range(selection),
        })
    };
    let Some(module) = &doc.ast else {
        let heads = declaration_heads(&doc.text, usize::from(doc.byte_order_mark));
        let ends = heads.iter().skip(1).map(|h| h.0).chain([doc.text.len()]);
        let symbols: Vec<Value> = heads
            .iter()
            .zip(ends)
            .map(|(&(start, kind, ref name, name_start), end)| {
                let range = Span::new(doc.id, start, doc.text[..end].trim_end().len().max(start));
                let selection = Span::new(doc.id, name_start, name_start + name.len());
                symbol(kind, name, range, selection)
            })
            .collect();
        return json!(symbols);
    };
    let symbols: Vec<Value> = module
        .items
        .iter()
        .filter_map(|item| match &item.kind {
            ast::ItemKind::Decl(d) => Some(symbol(d.kind, &d.name.name, item.span, d.name.span)),
            ast::ItemKind::Use(_) => None,
        })
        .collect();
    json!(symbols)
}

/// Declarations whose keyword begins a line, followed by a name, outside
/// triple-quoted strings: each one's start, keyword, name and the name's
/// offset. The text's first `skip` bytes (a byte-order mark's stand-in)
/// are not read.
fn declaration_heads(text: &str, skip: usize) -> Vec<(usize, DeclKind, String, usize)> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut heads = Vec::new();
    let mut start = skip.min(text.len());
    let mut in_triple = false;
    for line in text[start..].split_inclusive('\n') {
        let keyword_end = line.find(|c: char| !is_word(c)).unwrap_or(line.len());
        let rest = &line[keyword_end..];
        let name_at = keyword_end + (rest.len() - rest.trim_start_matches([' ', '\t']).len());
        let name_len = line[name_at..]
            .find(|c: char| !is_word(c))
            .unwrap_or(line.len() - name_at);
        let head = (name_at > keyword_end && name_len > 0)
            .then(|| DeclKind::from_keyword(&line[..keyword_end]))
            .flatten();
        if let (Some(kind), false) = (head, in_triple) {
            let name = line[name_at..name_at + name_len].to_string();
            heads.push((start, kind, name, start + name_at));
        }
        if !line.matches("\"\"\"").count().is_multiple_of(2) {
            in_triple = !in_triple;
        }
        start += line.len();
    }
    heads
}

/// Writes an embedded standard-library file to a cache folder (once) so an
/// editor can open it; returns its path.
fn materialize_std(name: &str) -> Option<PathBuf> {
    let text = stdlib::file(name)?;
    // The user's own cache (`$XDG_CACHE_HOME`, `~/.cache`), not a shared
    // temporary folder another user could prepare.
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let dir = cache.join(format!("saferc-{}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(path.parent()?).ok()?;
        // A fresh file renamed into place: a link at `path` is replaced,
        // never written through.
        let fresh = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&fresh)
            .ok()?;
        std::io::Write::write_all(&mut file, text.as_bytes()).ok()?;
        std::fs::rename(&fresh, &path).ok()?;
    }
    Some(path)
}
