//! Name tables: what each module can see.
//!
//! A module sees its own declarations, the declarations of modules it
//! imports without an alias, the modules it imports with an alias (as
//! `alias.name`), and the prelude (`std/std.safer`).

use super::hir::DeclRef;
use super::loader::Loaded;
use crate::syntax::ast::DeclKind;
use std::collections::BTreeMap;

/// What one module sees.
#[derive(Debug, Default, Clone)]
pub struct ModuleScope {
    /// Its own declarations.
    pub local: BTreeMap<String, DeclRef>,
    /// Modules imported without an alias.
    pub globs: Vec<usize>,
    /// Modules imported with an alias.
    pub aliases: BTreeMap<String, usize>,
}

/// The name tables of a program.
#[derive(Debug, Default)]
pub struct Scopes {
    /// One per module, same order as [`Loaded::modules`].
    pub modules: Vec<ModuleScope>,
    /// The prelude module.
    pub prelude: Option<usize>,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A declaration.
    Decl(DeclRef),
    /// A module alias.
    Module(usize),
}

impl Scopes {
    /// Builds the import part of the tables; `local` is filled by the caller.
    pub fn new(loaded: &Loaded) -> Self {
        let modules = loaded
            .modules
            .iter()
            .map(|m| {
                let mut scope = ModuleScope::default();
                for import in &m.imports {
                    match &import.alias {
                        Some(alias) => {
                            scope.aliases.insert(alias.clone(), import.module);
                        }
                        None => scope.globs.push(import.module),
                    }
                }
                scope
            })
            .collect();
        Scopes {
            modules,
            prelude: loaded.prelude,
        }
    }

    /// Looks a plain name up from `module`.
    pub fn lookup(&self, module: usize, name: &str) -> Option<Found> {
        let scope = self.modules.get(module)?;
        if let Some(r) = scope.local.get(name) {
            return Some(Found::Decl(*r));
        }
        for &g in &scope.globs {
            if let Some(r) = self.modules.get(g).and_then(|s| s.local.get(name)) {
                return Some(Found::Decl(*r));
            }
        }
        if let Some(&m) = scope.aliases.get(name) {
            return Some(Found::Module(m));
        }
        let prelude = self.prelude?;
        self.modules
            .get(prelude)
            .and_then(|s| s.local.get(name))
            .map(|r| Found::Decl(*r))
    }

    /// The declarations of `name` in the modules `module` imports without
    /// an alias, in import order (empty when `module` declares it itself).
    pub fn glob_declarations(&self, module: usize, name: &str) -> Vec<DeclRef> {
        let Some(scope) = self.modules.get(module) else {
            return Vec::new();
        };
        if scope.local.contains_key(name) {
            return Vec::new();
        }
        let mut found: Vec<DeclRef> = scope
            .globs
            .iter()
            .filter_map(|&g| self.modules.get(g)?.local.get(name).copied())
            .collect();
        found.dedup();
        found
    }

    /// Looks `name` up inside module `target` (after `alias.`).
    pub fn lookup_in(&self, target: usize, name: &str) -> Option<DeclRef> {
        self.modules.get(target)?.local.get(name).copied()
    }

    /// Every name visible from `module` whose declaration has one of `kinds`
    /// (for "did you mean"); `kind_of` tells a reference's kind.
    pub fn visible_names(
        &self,
        module: usize,
        kind_of: &dyn Fn(DeclRef) -> DeclKind,
        kinds: &[DeclKind],
    ) -> Vec<String> {
        let mut out = Vec::new();
        let Some(scope) = self.modules.get(module) else {
            return out;
        };
        let mut add = |table: &BTreeMap<String, DeclRef>| {
            for (name, r) in table {
                if kinds.is_empty() || kinds.contains(&kind_of(*r)) {
                    out.push(name.clone());
                }
            }
        };
        add(&scope.local);
        for &g in &scope.globs {
            if let Some(s) = self.modules.get(g) {
                add(&s.local);
            }
        }
        if let Some(p) = self.prelude {
            if let Some(s) = self.modules.get(p) {
                add(&s.local);
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
