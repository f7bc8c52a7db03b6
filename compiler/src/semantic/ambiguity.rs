//! Pass 4b: plain names two imports declare differently (E0213).
//!
//! A module sees the declarations of every module it imports without an
//! alias; when two of them declare one name, the plain name would mean the
//! first import's, and swapping two `use` lines would silently change which
//! model, judge or rubric a pipeline runs. Such a name is an error where it
//! is used (unused, it does no harm). Declarations that mean the same (the
//! standard rubrics' identical `judge rules`) are not ambiguous: their
//! content is compared, paths by where they resolve and references by what
//! they name.

use super::hir::DeclRef;
use super::Analyzer;
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast;
use serde_json::Value as Json;
use std::collections::BTreeSet;

/// How many references deep two declarations are compared.
const REFERENCE_DEPTH: usize = 4;

impl Analyzer<'_> {
    /// Reports each plain name used in a module that two of its imports
    /// without an alias declare differently, at its first use there.
    pub(crate) fn check_ambiguous_uses(&mut self) {
        let uses = std::mem::take(&mut self.glob_uses);
        let mut reported = BTreeSet::new();
        for (module, name, span) in uses {
            if !reported.insert((module, name.clone())) {
                continue;
            }
            let found = self.scopes.glob_declarations(module, &name);
            let Some((first, others)) = found.split_first() else {
                continue;
            };
            let first_meaning = self.meaning(*first, REFERENCE_DEPTH);
            let Some(other) = others
                .iter()
                .find(|r| self.meaning(**r, REFERENCE_DEPTH) != first_meaning)
            else {
                continue;
            };
            let file = |r: DeclRef| {
                self.loaded
                    .modules
                    .get(self.info[r.0].module)
                    .map_or_else(String::new, |m| m.name.clone())
            };
            let (a, b) = (file(*first), file(*other));
            let alias = self.import_path(module, self.info[other.0].module).map_or_else(
                || format!("give the import of `{b}` a name (`use \"...\" as alias`) and write `alias.{name}`"),
                |path| {
                    let alias = alias_for(&path);
                    format!("give one import a name, `use \"{path}\" as {alias}`, and write `{alias}.{name}` for its `{name}`")
                },
            );
            self.diags.push(
                Diagnostic::error(
                    Code::E0213,
                    format!("`{name}` is declared by both `{a}` and `{b}`, which this file imports without an alias"),
                )
                .with_primary(span, format!("`{a}`'s or `{b}`'s?"))
                .with_secondary(self.decls[first.0].span, format!("`{name}` in `{a}`"))
                .with_secondary(self.decls[other.0].span, format!("`{name}` in `{b}`"))
                .with_help(format!("{alias}, or declare `{name}` in this file")),
            );
        }
    }

    /// What declaration `r` means, to compare with another module's of the
    /// same name: its content without where it is (its module, qualified
    /// name, documentation, hash); a path by where it resolves, not as
    /// written (`models/m` in two folders is two folders); a reference by
    /// what the declaration it names means, `depth` references deep, then
    /// by its qualified name (two files' `judge j { model = m }` are the
    /// same when their `m`s are).
    fn meaning(&self, r: DeclRef, depth: usize) -> Json {
        let mut v = self
            .decls
            .get(r.0)
            .and_then(|d| serde_json::to_value(d).ok())
            .unwrap_or(Json::Null);
        if let Json::Object(map) = &mut v {
            for key in ["hash", "docs", "module", "qualified"] {
                map.remove(key);
            }
        }
        self.resolve(&mut v, depth);
        v
    }

    fn resolve(&self, v: &mut Json, depth: usize) {
        match v {
            Json::Object(map) => {
                if let (1, Some(n)) = (map.len(), map.get("decl").and_then(Json::as_u64)) {
                    let target = DeclRef(n as usize);
                    *v = match depth {
                        0 => self
                            .decls
                            .get(target.0)
                            .map_or(Json::Null, |d| Json::String(d.qualified.clone())),
                        _ => self.meaning(target, depth - 1),
                    };
                    return;
                }
                if map.contains_key("resolved") {
                    map.remove("written");
                }
                map.values_mut().for_each(|x| self.resolve(x, depth));
            }
            Json::Array(items) => items.iter_mut().for_each(|x| self.resolve(x, depth)),
            _ => {}
        }
    }

    /// The path `module`'s `use` item names for module `imported`.
    fn import_path(&self, module: usize, imported: usize) -> Option<String> {
        let m = self.loaded.modules.get(module)?;
        let import = m.imports.iter().find(|i| i.module == imported)?;
        m.ast.items.iter().find_map(|item| match &item.kind {
            ast::ItemKind::Use(u) if item.span == import.span || u.path.span == import.span => {
                Some(u.path.value.clone())
            }
            _ => None,
        })
    }
}

/// A name for an import alias from its path: `rubrics/guard.safer` →
/// `guard` (words only; `m` when nothing is left).
fn alias_for(path: &str) -> String {
    let stem = path.rsplit('/').next().unwrap_or(path);
    let stem = stem.strip_suffix(".safer").unwrap_or(stem);
    let word: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match word.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => word,
        _ => "m".to_string(),
    }
}
