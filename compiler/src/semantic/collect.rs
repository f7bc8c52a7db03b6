//! Pass 2: declaration skeletons and name tables.

use super::hir::{Decl, DeclRef, Settings};
use super::{Analyzer, DeclInfo};
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::{self, DeclBody, DeclKind, StmtKind};

impl<'a> Analyzer<'a> {
    /// Creates one skeleton per declaration and fills the name tables.
    pub(crate) fn collect(&mut self) {
        for (m, module) in self.loaded.modules.iter().enumerate() {
            for item in &module.ast.items {
                let ast::ItemKind::Decl(decl) = &item.kind else {
                    continue;
                };
                let name = decl.name.name.clone();
                if let Some(prev) = self.scopes.modules[m].local.get(&name).copied() {
                    let prev_span = self.decls[prev.0].span;
                    self.diags.push(
                        Diagnostic::error(Code::E0204, format!("`{name}` is declared twice"))
                            .with_primary(decl.name.span, "declared again here")
                            .with_secondary(prev_span, "first declared here")
                            .with_help(
                                "rename one of them; names are shared by every kind of declaration",
                            ),
                    );
                    continue;
                }
                let r = DeclRef(self.decls.len());
                self.scopes.modules[m].local.insert(name.clone(), r);
                let qualified = if m == 0 {
                    name.clone()
                } else {
                    format!("{}::{}", module_stem(&module.name), name)
                };
                self.decls.push(Decl {
                    kind: decl.kind,
                    name,
                    qualified,
                    module: m,
                    settings: Settings::default(),
                    filters: Vec::new(),
                    rubric: None,
                    value: None,
                    params: Vec::new(),
                    hash: String::new(),
                    docs: item.docs.clone(),
                    span: decl.name.span,
                });
                self.info.push(DeclInfo {
                    ast: decl,
                    module: m,
                    splits: split_names(decl),
                    criteria: criterion_names(decl),
                });
            }
        }
        self.check_aliases();
    }

    /// E0204 for an alias given to two imports (the later one won, so
    /// swapping the `use` lines changed what `alias.name` meant) or taken
    /// by a declaration of the module (which hid the alias).
    fn check_aliases(&mut self) {
        for (m, module) in self.loaded.modules.iter().enumerate() {
            let mut seen: std::collections::HashMap<&str, crate::span::Span> =
                std::collections::HashMap::new();
            for import in &module.imports {
                let Some(alias) = import.alias.as_deref() else {
                    continue;
                };
                if let Some(first) = seen.insert(alias, import.span) {
                    self.diags.push(
                        Diagnostic::error(Code::E0204, format!("alias `{alias}` is given twice"))
                            .with_primary(import.span, "given again here")
                            .with_secondary(first, "first given here")
                            .with_help("give each import its own alias"),
                    );
                } else if let Some(local) = self.scopes.modules[m].local.get(alias) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0204,
                            format!("alias `{alias}` is also the name of a declaration"),
                        )
                        .with_primary(import.span, "the alias")
                        .with_secondary(self.decls[local.0].span, "declared here")
                        .with_help("rename the alias or the declaration: the declaration would hide the alias"),
                    );
                }
            }
        }
    }
}

/// `std/rubrics/safety.safer` → `std/rubrics/safety`.
pub(crate) fn module_stem(name: &str) -> String {
    name.strip_suffix(".safer").unwrap_or(name).to_string()
}

fn body(decl: &ast::Decl) -> &[ast::Stmt] {
    match &decl.body {
        DeclBody::Block(b) => &b.stmts,
        DeclBody::Value(_) => &[],
    }
}

fn split_names(decl: &ast::Decl) -> Vec<String> {
    if decl.kind != DeclKind::Dataset {
        return Vec::new();
    }
    body(decl)
        .iter()
        .filter_map(|s| match &s.kind {
            StmtKind::Block { key, body } if key.name == "split" => Some(body),
            _ => None,
        })
        .flat_map(|b| {
            b.stmts.iter().filter_map(|s| match &s.kind {
                StmtKind::Assign { key, .. } => Some(key.name.clone()),
                _ => None,
            })
        })
        .collect()
}

fn criterion_names(decl: &ast::Decl) -> Vec<String> {
    if decl.kind != DeclKind::Rubric {
        return Vec::new();
    }
    body(decl)
        .iter()
        .filter_map(|s| match &s.kind {
            StmtKind::Criterion { name, .. } => Some(name.name.clone()),
            _ => None,
        })
        .collect()
}
