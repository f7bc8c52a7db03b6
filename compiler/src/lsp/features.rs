//! What the server answers, computed from one analysis of the document.

use crate::diagnostic::{Diagnostic, Severity};
use crate::project;
use crate::semantic::hir::Decl;
use crate::semantic::schema::{self, Block};
use crate::semantic::{self, loader::LoadOptions, Analysis};
use crate::source::{SourceFile, SourceMap};
use crate::span::{SourceId, Span};
use crate::syntax::ast::{self, DeclBody, DeclKind, StmtKind};
use crate::{fmt, stdlib};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

mod quick_fixes;

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
}

/// `file:///a%20b/c.safer` → `/a b/c.safer`; `None` for another scheme or
/// a URI that does not parse.
fn uri_to_path(uri: &str) -> Option<PathBuf> {
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
        let options = match dir.as_deref() {
            Some(d) => project::options_around(&mut sources, d, false, &mut early).0,
            None => LoadOptions::default(),
        };
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
        }
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
        // Words in comments are prose, not names.
        let in_comment = self.ast.as_ref().is_some_and(|m| {
            m.comments
                .iter()
                .any(|c| (c.span.start as usize) <= offset && offset < c.span.end as usize)
        });
        if in_comment {
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

    /// The declarations of the module a `use ... as alias` of this document
    /// imports, if `alias` is one.
    fn aliased_decls(&self, alias: &str) -> Option<Vec<&Decl>> {
        let program = self.analysis.program.as_ref()?;
        let path = self
            .ast
            .as_ref()?
            .items
            .iter()
            .find_map(|i| match &i.kind {
                ast::ItemKind::Use(u) if u.alias.as_ref().is_some_and(|a| a.name == alias) => {
                    Some(u.path.value.clone())
                }
                _ => None,
            })?;
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
        let target = self.imported_file(&path);
        let declared_in_target =
            |d: &&Decl| match self.file(d.span.source).and_then(|f| f.path.as_ref()) {
                Some(file) => target
                    .as_ref()
                    .is_some_and(|t| std::fs::canonicalize(file).ok().as_ref() == Some(t)),
                None => program
                    .modules
                    .get(d.module)
                    .is_some_and(|m| is_module(&m.name)),
            };
        Some(program.decls.iter().filter(declared_in_target).collect())
    }

    /// What may follow `name.`: an import alias's declarations, a
    /// rubric's criteria, a dataset's splits; nothing for another name.
    fn members_of(&self, name: &str) -> Vec<Value> {
        if let Some(decls) = self.aliased_decls(name) {
            return decls
                .into_iter()
                .map(|d| json!({ "label": d.name, "kind": 6, "detail": d.kind.keyword(), "documentation": d.docs.join("\n") }))
                .collect();
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
        fn find(stmts: &[ast::Stmt], offset: usize) -> Option<&ast::Stmt> {
            stmts.iter().find_map(|stmt| {
                let name = match &stmt.kind {
                    ast::StmtKind::Assign { key, .. } | ast::StmtKind::Block { key, .. } => key,
                    ast::StmtKind::Criterion { name, .. }
                    | ast::StmtKind::Penalty { name, .. }
                    | ast::StmtKind::Format { name, .. } => name,
                    ast::StmtKind::Filter { .. } => return None,
                };
                let on_name =
                    (name.span.start as usize) <= offset && offset <= name.span.end as usize;
                if on_name {
                    return Some(stmt);
                }
                match &stmt.kind {
                    ast::StmtKind::Block { body, .. }
                    | ast::StmtKind::Criterion {
                        body: Some(body), ..
                    } => find(&body.stmts, offset),
                    _ => None,
                }
            })
        }
        let Some(module) = &self.ast else {
            return Vec::new();
        };
        module
            .items
            .iter()
            .find_map(|item| match &item.kind {
                ast::ItemKind::Decl(ast::Decl {
                    body: ast::DeclBody::Block(b),
                    ..
                }) => find(&b.stmts, offset),
                _ => None,
            })
            .map(|stmt| stmt.docs.clone())
            .unwrap_or_default()
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

fn key_markdown(path: &str, k: &schema::Key) -> String {
    let mut s = format!(
        "**`{path}.{}`**: {}\n\ndefault: {}",
        k.name,
        schema::describe(k.ty),
        schema::describe_default(k.default)
    );
    if let Some(r) = k.range {
        s.push_str(&format!("; allowed: {}", schema::describe_range(r)));
    }
    if let Some(new) = k.deprecated {
        s.push_str(&format!("\n\n**Deprecated**: use `{new}`."));
    }
    s.push_str("\n\n");
    s.push_str(k.doc);
    s
}

/// `textDocument/hover`.
pub fn hover(doc: &Document, params: &Value) -> Value {
    let offset = doc.offset(params);
    if let Some((block, path, Some(key))) = doc.block_at(offset) {
        if let Some(k) = block.key(&key) {
            let mut value = key_markdown(&path, k);
            // The setting's own `##` lines, above the schema's text.
            let docs = doc.statement_docs_at(offset);
            if !docs.is_empty() {
                value = format!("{}\n\n---\n\n{value}", docs.join("\n"));
            }
            return json!({ "contents": { "kind": "markdown", "value": value } });
        }
        if let Some(b) = block.block(&key) {
            return json!({ "contents": { "kind": "markdown", "value": format!("**`{path}.{}`** block\n\n{}", b.name, b.doc) } });
        }
    }
    let Some((word, qualifier, span)) = doc.word_at(offset) else {
        return Value::Null;
    };
    // A declaration's keyword, where it starts one (`train` in `d.train`
    // is a split, `model` in `kind = model` a judge kind).
    let heads_a_declaration = match &doc.ast {
        Some(module) => module.items.iter().any(
            |item| matches!(&item.kind, ast::ItemKind::Decl(d) if d.kind_span.start == span.start),
        ),
        None => {
            let line_start = doc.text[..span.start as usize]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            qualifier.is_none() && doc.text[line_start..span.start as usize].trim().is_empty()
        }
    };
    if let Some(kind) = DeclKind::from_keyword(&word).filter(|_| heads_a_declaration) {
        if let Some(block) = schema::for_decl(kind) {
            return json!({ "contents": { "kind": "markdown", "value": format!("**`{word}`**\n\n{}", block.doc) }, "range": doc.range(span) });
        }
    }
    // `think.length`, `answer.verdict`: the completion's parts.
    if let Some(part) = qualifier
        .as_deref()
        .filter(|q| *q == "think" || *q == "answer")
    {
        let what = match word.as_str() {
            "text" if part == "think" => "the reasoning inside `<think>...</think>` (empty without one)",
            "text" => "the answer: inside `<answer>...</answer>`, else after `</think>`, else the whole completion",
            "length" => "its number of words",
            "verdict" if part == "think" => "`\"unsafe\"` when the reasoning names a risk, else `\"safe\"` (empty without reasoning)",
            "verdict" => "`\"unsafe\"` when the answer refuses, else `\"safe\"`",
            _ => return Value::Null,
        };
        let value = format!(
            "**`{part}.{word}`** ({})\n\n{what}",
            if word == "length" { "number" } else { "string" }
        );
        return json!({ "contents": { "kind": "markdown", "value": value }, "range": doc.range(span) });
    }
    match doc.decl_named(&word, qualifier.as_deref()) {
        Some(d) => {
            let module = doc
                .analysis
                .program
                .as_ref()
                .and_then(|p| p.modules.get(d.module))
                .map_or(String::new(), |m| m.name.clone());
            // A scorer's signature: its parameters, their types and defaults.
            let params = if d.kind == DeclKind::Scorer {
                let shown: Vec<String> = d
                    .params
                    .iter()
                    .map(|p| {
                        let mut s = p.name.clone();
                        if let Some(t) = &p.ty {
                            s.push_str(&format!(": {t}"));
                        }
                        if let (Some(v), Some(program)) = (&p.default, &doc.analysis.program) {
                            s.push_str(&format!(
                                " = {}",
                                crate::semantic::display::value(v, program)
                            ));
                        }
                        s
                    })
                    .collect();
                format!("({})", shown.join(", "))
            } else {
                String::new()
            };
            let mut value = format!(
                "```safer\n{} {}{params}\n```\ndeclared in `{module}`",
                d.kind.keyword(),
                d.name
            );
            if !d.docs.is_empty() {
                value.push_str("\n\n");
                value.push_str(&d.docs.join("\n"));
            }
            json!({ "contents": { "kind": "markdown", "value": value }, "range": doc.range(span) })
        }
        // A criterion's (or penalty's) name: its `##` lines.
        None => match doc.statement_docs_at(offset) {
            docs if docs.is_empty() => Value::Null,
            docs => {
                json!({ "contents": { "kind": "markdown", "value": docs.join("\n") }, "range": doc.range(span) })
            }
        },
    }
}

/// `textDocument/completion`.
pub fn completion(doc: &Document, params: &Value) -> Value {
    let offset = doc.offset(params);
    // After `think.` or `answer.` (and part of a field name): the fields.
    let before = doc.text.get(..offset).unwrap_or("");
    let typed = before.trim_end_matches(|c: char| c.is_alphanumeric() || c == '_');
    if let Some(part) = ["think.", "answer."].iter().find(|p| {
        typed.ends_with(*p)
            && !typed[..typed.len() - p.len()]
                .ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.')
    }) {
        let fields = [
            ("text", "string", "the text of the part"),
            ("length", "number", "its number of words"),
            (
                "verdict",
                "string",
                "`\"unsafe\"` or `\"safe\"` (empty without reasoning)",
            ),
        ];
        let items: Vec<Value> = fields
            .iter()
            .map(|(name, ty, what)| {
                json!({ "label": name, "kind": 5, "detail": format!("{}{name}: {ty}", part), "documentation": what })
            })
            .collect();
        return json!({ "isIncomplete": false, "items": items });
    }
    // After `name.`: what the name holds (the block's keys and every
    // declared name were offered, and a key accepted gave `name.key = `).
    if let Some(head) = typed.strip_suffix('.') {
        let name_start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let name = &head[name_start..];
        if !name.is_empty() && !head[..name_start].ends_with('.') {
            // While `name.` is being typed the text does not parse: the
            // text without it tells what the names are.
            let repaired;
            let source = match &doc.ast {
                Some(_) => doc,
                None => {
                    let mut text = doc.text.clone();
                    text.replace_range(head.len()..offset, "");
                    repaired = Document::analyze(&doc.uri, &text);
                    &repaired
                }
            };
            return json!({ "isIncomplete": false, "items": source.members_of(name) });
        }
        // After a string, a number (`0.`) or a range's `..`: nothing.
        return json!({ "isIncomplete": false, "items": [] });
    }
    let mut items = Vec::new();
    let around = match doc.ast {
        Some(_) => doc.block_at(offset).map(|(block, path, _)| (block, path)),
        None => doc.block_by_braces(offset),
    };
    match around {
        Some((block, path)) => {
            for k in block.keys.iter().filter(|k| k.deprecated.is_none()) {
                items.push(json!({
                    "label": k.name,
                    "kind": 10,
                    "detail": schema::describe(k.ty),
                    "documentation": { "kind": "markdown", "value": key_markdown(&path, k) },
                    "insertText": format!("{} = ", k.name),
                }));
            }
            for b in block.blocks {
                items.push(json!({ "label": b.name, "kind": 9, "detail": "block", "documentation": b.doc, "insertText": format!("{} {{ }}", b.name) }));
            }
        }
        None => {
            for kind in DeclKind::ALL {
                items.push(json!({ "label": kind.keyword(), "kind": 14, "detail": "declaration" }));
            }
            items.push(json!({ "label": "use", "kind": 14, "detail": "import" }));
        }
    }
    if let Some(program) = &doc.analysis.program {
        for d in program.decls.iter().filter(|d| {
            d.module == 0
                || program
                    .modules
                    .get(d.module)
                    .is_some_and(|m| !m.name.starts_with("std/std"))
        }) {
            items.push(json!({ "label": d.name, "kind": 6, "detail": d.kind.keyword(), "documentation": d.docs.join("\n") }));
        }
    }
    json!({ "isIncomplete": false, "items": items })
}

/// `textDocument/definition`.
pub fn definition(doc: &Document, params: &Value) -> Value {
    let offset = doc.offset(params);
    let Some((word, qualifier, _)) = doc.word_at(offset) else {
        return Value::Null;
    };
    let Some(d) = doc.decl_named(&word, qualifier.as_deref()) else {
        return Value::Null;
    };
    match doc.uri_of(d.span.source) {
        Some(uri) => json!({ "uri": uri, "range": doc.range(d.span) }),
        None => Value::Null,
    }
}

/// `textDocument/formatting`: one edit replacing the document (none when
/// it is formatted or does not parse).
pub fn formatting(doc: &Document, _params: &Value) -> Value {
    // A byte-order mark stays, as `saferc fmt` keeps it (the analysed
    // text holds a space in its place).
    let (mark, body) = match doc.byte_order_mark {
        true => ("\u{feff}", doc.text.get(1..).unwrap_or("")),
        false => ("", doc.text.as_str()),
    };
    match fmt::format_source(body) {
        Ok(formatted) if formatted != body => {
            let f = doc.file(doc.id);
            let end_line = f.map_or(0, |f| f.line_count());
            json!([{ "range": { "start": { "line": 0, "character": 0 }, "end": { "line": end_line, "character": 0 } }, "newText": format!("{mark}{formatted}") }])
        }
        _ => json!([]),
    }
}

/// `textDocument/documentSymbol`.
pub fn symbols(doc: &Document, _params: &Value) -> Value {
    let Some(module) = &doc.ast else {
        return json!([]);
    };
    let symbols: Vec<Value> = module
        .items
        .iter()
        .filter_map(|item| match &item.kind {
            ast::ItemKind::Decl(d) => Some(json!({
                "name": d.name.name,
                "detail": d.kind.keyword(),
                "kind": match d.kind { DeclKind::Model | DeclKind::Judge => 5, DeclKind::Dataset => 18, DeclKind::Rubric | DeclKind::Scorer => 12, DeclKind::Prompt => 15, _ => 2 },
                "range": doc.range(item.span),
                "selectionRange": doc.range(d.name.span),
            })),
            ast::ItemKind::Use(_) => None,
        })
        .collect();
    json!(symbols)
}

/// Writes an embedded standard-library file to a cache folder (once) so an
/// editor can open it; returns its path.
fn materialize_std(name: &str) -> Option<PathBuf> {
    let text = stdlib::file(name)?;
    let dir = std::env::temp_dir().join(format!("saferc-{}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(path.parent()?).ok()?;
        std::fs::write(&path, text).ok()?;
    }
    Some(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::{completion, definition, formatting, hover, uri_to_path, Document};
    use serde_json::{json, Value};

    #[test]
    fn uris_decode_and_odd_escapes_do_not_panic() {
        assert_eq!(
            uri_to_path("file:///a%20b/c.safer").unwrap().to_str(),
            Some("/a b/c.safer")
        );
        // A `%` before a multi-byte character used to slice inside it.
        let _ = uri_to_path("file:///tmp/x%a\u{e9}.safer");
        assert!(uri_to_path("untitled:Untitled-1").is_none());
        let doc = Document::analyze("file:///tmp/x%a\u{e9}.safer", "model m {}\n");
        assert!(!doc.diagnostics().is_empty());
    }

    /// Completion in a document that does not parse (a key half typed, a
    /// block not closed yet) offers the keys of the block the braces say the
    /// cursor is in, not the declaration keywords.
    #[test]
    fn completion_reads_open_blocks_when_the_text_does_not_parse() {
        use super::completion;
        let labels = |text: &str, line: u64, character: u64| -> Vec<String> {
            let doc = Document::analyze("untitled:c.safer", text);
            let c = completion(
                &doc,
                &json!({ "position": { "line": line, "character": character } }),
            );
            c["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["label"].as_str().map(str::to_string))
                .collect()
        };
        let half_typed = labels("train t {\n  grpo {\n    l\n  }\n}\n", 2, 5);
        assert!(
            half_typed.iter().any(|l| l == "lr") && half_typed.iter().any(|l| l == "kl"),
            "{half_typed:?}"
        );
        assert!(!half_typed.iter().any(|l| l == "model"), "{half_typed:?}");
        let unclosed = labels("# a { in a comment\nrubric graded(judge = j) {\n  total = \"}\"\n  criterion c weight 1 {\n    ", 4, 4);
        assert!(unclosed.iter().any(|l| l == "scale"), "{unclosed:?}");
        let top = labels("model m {\n}\nmod", 2, 3);
        assert!(top.iter().any(|l| l == "model"), "{top:?}");
    }

    /// A byte-order mark at the start of the editor's text is ignored, as
    /// the CLI ignores it, and positions after it stay where the editor has
    /// them.
    #[test]
    fn a_byte_order_mark_is_no_error() {
        let doc = Document::analyze(
            "untitled:b.safer",
            "\u{feff}rollout r {\n  temprature = 1\n  max_tokens = 8 tokens\n}\n",
        );
        let diags = doc.diagnostics();
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0]["code"], "E0205");
        assert_eq!(
            diags[0]["range"]["start"],
            json!({ "line": 1, "character": 2 })
        );
        let on = hover(&doc, &json!({ "position": { "line": 0, "character": 2 } }));
        assert!(on.to_string().contains("rollout"), "{on}");
    }

    /// A column past a line's end is the end of that line, not the start
    /// of the next one.
    #[test]
    fn a_position_past_the_line_end_stays_on_its_line() {
        let text = "model policy { arch = tiny_vlm, weights = \"w\" }\nrollout r {\n  max_tokens = 64 tokens\n}\n";
        let doc = Document::analyze("untitled:x.safer", text);
        let past = hover(
            &doc,
            &json!({ "position": { "line": 0, "character": 200 } }),
        );
        assert!(!past.to_string().contains("rollout"), "{past}");
        let on = hover(&doc, &json!({ "position": { "line": 1, "character": 2 } }));
        assert!(on.to_string().contains("rollout"), "{on}");
        // A name in a comment is prose: no hover.
        let doc = Document::analyze("untitled:y.safer", &format!("# the policy\n{text}"));
        let prose = hover(&doc, &json!({ "position": { "line": 0, "character": 7 } }));
        assert!(prose.is_null(), "{prose}");
    }

    /// `y.brief` with `use "a.safer" as y` is `a.safer`'s, not that of
    /// `ba.safer`, whose name also ends with `a`.
    #[test]
    fn a_qualified_name_resolves_in_its_own_module() {
        let dir = std::env::temp_dir().join(format!("saferc-lsp-alias-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ba.safer"), "prompt brief = \"BA\"\n").unwrap();
        std::fs::write(dir.join("a.safer"), "prompt brief = \"A\"\n").unwrap();
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(dir.join("lib/a.safer"), "prompt brief = \"LIB\"\n").unwrap();
        let text = "use \"lib/a.safer\" as z\nuse \"ba.safer\" as x\nuse \"a.safer\" as y\nprompt p = y.brief\n";
        let uri = url::Url::from_file_path(dir.join("m.safer"))
            .unwrap()
            .to_string();
        let doc = Document::analyze(&uri, text);
        let def = definition(&doc, &json!({ "position": { "line": 3, "character": 14 } }));
        let target = def["uri"].as_str().unwrap_or_default();
        let expected = url::Url::from_file_path(dir.join("a.safer"))
            .unwrap()
            .to_string();
        assert_eq!(target, expected, "{def}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An error in an imported file shows on the `use` line that imports
    /// it, as `saferc check` fails on it too.
    #[test]
    fn an_error_in_an_imported_file_shows_on_its_use_line() {
        let dir = std::env::temp_dir().join(format!("saferc-lsp-import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bad.safer"),
            "rubric broken {\n  criterion a weight\n}\n",
        )
        .unwrap();
        let uri = url::Url::from_file_path(dir.join("m.safer"))
            .unwrap()
            .to_string();
        let doc = Document::analyze(&uri, "prompt p = \"x\"\nuse \"bad.safer\"\n");
        let diags = doc.diagnostics();
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!(d["code"], "E0101");
        assert_eq!(d["range"]["start"], json!({ "line": 1, "character": 0 }));
        assert!(
            d["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("in `"),
            "{d}"
        );
        let related = &d["relatedInformation"][0];
        assert!(related["location"]["uri"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/bad.safer"));
        assert_eq!(related["location"]["range"]["start"]["line"], 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A project's `[imports] roots` (the layout `saferc new` makes): an
    /// error in a file found there shows on its `use` line (it was at
    /// 0:0), and `alias.name` goes to that file's declaration, not to a
    /// same-named one of the document.
    #[test]
    fn imports_through_the_project_s_roots_are_found() {
        let dir = std::env::temp_dir().join(format!("saferc-lsp-roots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rubrics")).unwrap();
        std::fs::write(
            dir.join("safer.toml"),
            "[project]\nname = \"p\"\n\n[imports]\nroots = [\"rubrics\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("rubrics/house.safer"),
            "rubric house_rubric {\n  criterion safety weight 1 \"Safe.\"\n}\n",
        )
        .unwrap();
        let uri = url::Url::from_file_path(dir.join("p.safer"))
            .unwrap()
            .to_string();
        let text = "use \"house.safer\" as h\n\nrubric house_rubric {\n  criterion other weight 1 \"x\"\n}\n\neval e {\n  model = m\n  data = d\n  rubric = h.house_rubric\n}\n";
        let doc = Document::analyze(&uri, text);
        let at =
            json!({ "textDocument": { "uri": uri }, "position": { "line": 9, "character": 15 } });
        let target = definition(&doc, &at);
        assert!(
            target["uri"]
                .as_str()
                .unwrap_or_default()
                .ends_with("rubrics/house.safer"),
            "{target}"
        );
        std::fs::write(
            dir.join("rubrics/house.safer"),
            "rubric house_rubric {\n  criterion safety weight x\n}\n",
        )
        .unwrap();
        let doc = Document::analyze(&uri, text);
        let diags = doc.diagnostics();
        let elsewhere: Vec<&Value> = diags
            .iter()
            .filter(|d| {
                d["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("in `")
            })
            .collect();
        assert!(!elsewhere.is_empty(), "{diags:?}");
        assert_eq!(
            elsewhere[0]["range"]["start"],
            json!({ "line": 0, "character": 0 })
        );
        assert_eq!(
            elsewhere[0]["range"]["end"],
            json!({ "line": 0, "character": 22 })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A declaration keyword's text is the hover of a declaration's head
    /// only: `train` in `d.train` is a split, `model` in `kind = model` a
    /// judge kind.
    #[test]
    fn a_keyword_s_hover_is_for_a_declaration_s_head_only() {
        let text = "judge j { kind = model }\ntrain t {\n  data = d.train\n}\n";
        let doc = Document::analyze("untitled:k.safer", text);
        let hover_at = |line: u32, character: u32| {
            hover(
                &doc,
                &json!({ "position": { "line": line, "character": character } }),
            )
        };
        assert!(hover_at(1, 2).to_string().contains("train"), "the head");
        let declaration_text = hover_at(1, 2)["contents"]["value"].clone();
        assert_ne!(hover_at(2, 12)["contents"]["value"], declaration_text);
        assert!(
            !hover_at(0, 19).to_string().contains("**`model`**"),
            "{}",
            hover_at(0, 19)
        );
    }

    /// A setting's `##` lines show on hover, above the schema's text, and a
    /// criterion's on its name.
    #[test]
    fn a_setting_s_documentation_shows_on_hover() {
        let text = "rollout r {\n  ## Eight completions per prompt.\n  group = 8\n  max_tokens = 8 tokens\n}\n\nrubric q {\n  ## Refuses harm.\n  criterion safety weight 1 \"Safe.\"\n}\n";
        let doc = Document::analyze("untitled:h.safer", text);
        let on_group = hover(&doc, &json!({ "position": { "line": 2, "character": 3 } }));
        let shown = on_group["contents"]["value"].as_str().unwrap_or_default();
        assert!(
            shown.starts_with("Eight completions per prompt."),
            "{on_group}"
        );
        assert!(shown.contains("group"), "{on_group}");
        let on_criterion = hover(&doc, &json!({ "position": { "line": 8, "character": 14 } }));
        assert_eq!(
            on_criterion["contents"]["value"], "Refuses harm.",
            "{on_criterion}"
        );
    }

    /// Formatting keeps a byte-order mark, as `saferc fmt` does, and a
    /// formatted file with one gets no edit (the mark was dropped and the
    /// whole document rewritten).
    #[test]
    fn formatting_keeps_a_byte_order_mark() {
        let formatted =
            Document::analyze("untitled:f.safer", "\u{feff}model m { arch = tiny_vlm }\n");
        assert_eq!(formatting(&formatted, &json!({})), json!([]));
        let messy = Document::analyze("untitled:f.safer", "\u{feff}model m{arch=tiny_vlm}\n");
        let edits = formatting(&messy, &json!({}));
        assert_eq!(edits[0]["newText"], "\u{feff}model m { arch = tiny_vlm }\n");
    }

    /// A lone `\r` ends a line, as the protocol counts lines: positions
    /// after one are on the next line, and a formatting edit covers the
    /// whole document.
    #[test]
    fn a_lone_carriage_return_ends_a_line() {
        let text = "model policy { arch = tiny_vlm, weights = \"w\" }\r\rrollout r { temprature = 1.0, max_tokens = 8 tokens }\r";
        let doc = Document::analyze("untitled:cr.safer", text);
        let diags = doc.diagnostics();
        assert_eq!(
            diags[0]["range"]["start"],
            json!({ "line": 2, "character": 12 }),
            "{diags:?}"
        );
        let edits = formatting(&doc, &json!({}));
        // Past the last line (3, empty), which an editor clamps to the end.
        assert_eq!(edits[0]["range"]["end"]["line"], 4, "{edits}");
    }

    /// After `name.`, completion offers what the name holds: an import
    /// alias's declarations, a rubric's criteria, a dataset's splits, and
    /// nothing after another name (it offered the block's keys, and
    /// accepting one wrote `reflect.when = `).
    #[test]
    fn completion_after_a_dot_offers_what_the_name_holds() {
        let text = "use \"std/prompts/reflect.safer\" as reflect\n\nrubric r {\n  criterion safety weight 1 \"Safe.\"\n}\n\ndataset d {\n  source = jsonl(\"d.jsonl\")\n  split { train = 0.8, eval = 0.2 }\n}\n\nreflection x {\n  when   = r.safety < 0.5\n  prompt = reflect.brief\n}\n\nprompt p = \"🙂\".x\n";
        let doc = Document::analyze("untitled:c.safer", text);
        let labels = |line: u32, character: u32| -> Vec<String> {
            let items = completion(
                &doc,
                &json!({ "position": { "line": line, "character": character } }),
            );
            items["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["label"].as_str().map(str::to_string))
                .collect()
        };
        let after_alias = labels(13, 19);
        assert!(
            after_alias.contains(&"brief".to_string()),
            "{after_alias:?}"
        );
        assert!(
            !after_alias.contains(&"when".to_string()),
            "{after_alias:?}"
        );
        assert_eq!(labels(12, 13), ["safety"]);
        // While typed, `d.` does not parse: the splits still come.
        let typing = text.replace("  when   = r.safety < 0.5\n", "  data = d.\n");
        let doc = Document::analyze("untitled:c.safer", &typing);
        let items = completion(
            &doc,
            &json!({ "position": { "line": 12, "character": 11 } }),
        );
        let mut splits: Vec<&str> = items["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["label"].as_str())
            .collect();
        splits.sort_unstable();
        assert_eq!(splits, ["eval", "train"]);
        // A dot after a string holding an emoji: nothing, and no panic.
        assert!(labels(16, 17).is_empty());
    }
}
