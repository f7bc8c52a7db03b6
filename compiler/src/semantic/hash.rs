//! Pass 5: content hashes.
//!
//! A hash covers the resolved meaning of declarations, not their layout:
//! spans and comments are not part of the HIR, declaration references are
//! replaced by qualified names (indices depend on load order), and resolved
//! absolute paths are left out (a checkout's location must not change the
//! hash); object keys are sorted. The encoding is versioned by [`HASH_VERSION`] and does not include
//! the compiler version, so a rubric's pin survives compiler upgrades.

use super::hir::{Decl, Program};
use super::Analyzer;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// The version of the canonical encoding; bump it only with a migration.
pub const HASH_VERSION: &str = "saferc-hash-v1";

/// The canonical JSON of a declaration.
pub fn canonical(decl: &Decl, decls: &[Decl]) -> Json {
    let mut v = serde_json::to_value(decl).unwrap_or(Json::Null);
    if let Json::Object(map) = &mut v {
        map.remove("hash");
        map.remove("docs");
        map.remove("module");
    }
    normalise(&mut v, decls);
    v
}

pub(crate) fn normalise(v: &mut Json, decls: &[Decl]) {
    match v {
        Json::Object(map) => {
            if map.len() == 1 {
                if let Some(Json::Number(n)) = map.get("decl") {
                    let name = n
                        .as_u64()
                        .and_then(|i| decls.get(i as usize))
                        .map(|d| d.qualified.clone())
                        .unwrap_or_default();
                    *v = Json::String(name);
                    return;
                }
            }
            map.remove("resolved");
            for value in map.values_mut() {
                normalise(value, decls);
            }
            // Keys in sorted order, whether or not serde_json preserves
            // insertion order in this build (the runtime turns that on).
            let mut entries: Vec<(String, Json)> = std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            map.extend(entries);
        }
        Json::Array(items) => items.iter_mut().for_each(|i| normalise(i, decls)),
        _ => {}
    }
}

/// The names of the functions `v` (a canonical declaration) calls.
fn called_functions(v: &Json, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Json::Object(map) => {
            if let Some(Json::String(f)) = map.get("func") {
                out.insert(f.clone());
            }
            map.values().for_each(|x| called_functions(x, out));
        }
        Json::Array(items) => items.iter().for_each(|x| called_functions(x, out)),
        _ => {}
    }
}

/// `sha256:` followed by the hex digest of the versioned encoding.
pub fn digest(parts: &[&Json]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(HASH_VERSION.as_bytes());
    for part in parts {
        hasher.update(b"\n");
        hasher.update(part.to_string().as_bytes());
    }
    let bytes = hasher.finalize();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl<'a> Analyzer<'a> {
    /// Moves the declarations into a program. Hashes are not computed here
    /// (`saferc check` does not need them); [`Program::hashed`] fills them.
    pub(crate) fn finish_program(&mut self) -> Program {
        let modules = self
            .loaded
            .modules
            .iter()
            .map(|module| super::hir::ModuleInfo {
                name: module.name.clone(),
                hash: String::new(),
            })
            .collect();
        Program {
            hash: String::new(),
            modules,
            decls: std::mem::take(&mut self.decls),
        }
    }
}

impl Program {
    /// True once [`Program::hashed`] has filled the hashes.
    pub fn is_hashed(&self) -> bool {
        !self.hash.is_empty()
    }

    /// Fills the content hashes of declarations, modules and the program.
    /// Modules and the program hash the hashes of their declarations.
    #[must_use]
    pub fn hashed(mut self) -> Program {
        let canon: Vec<Json> = self
            .decls
            .iter()
            .map(|d| canonical(d, &self.decls))
            .collect();
        // A rubric's hash (what a pin compares) covers the bodies of the
        // scorers it calls: a changed body changes what the rubric rewards.
        let bodies: Vec<Vec<usize>> = self
            .decls
            .iter()
            .zip(&canon)
            .map(|(d, c)| {
                if d.kind != crate::syntax::ast::DeclKind::Rubric {
                    return Vec::new();
                }
                let mut called = std::collections::BTreeSet::new();
                called_functions(c, &mut called);
                self.decls
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| {
                        s.kind == crate::syntax::ast::DeclKind::Scorer
                            && matches!(s.value, Some(super::hir::Value::Expr(_)))
                            && called.contains(&s.qualified)
                    })
                    .map(|(j, _)| j)
                    .collect()
            })
            .collect();
        for ((d, c), called) in self.decls.iter_mut().zip(&canon).zip(&bodies) {
            let mut parts = vec![c];
            parts.extend(called.iter().map(|&j| &canon[j]));
            d.hash = digest(&parts);
        }
        let hashes = |module: Option<usize>| -> Vec<Json> {
            self.decls
                .iter()
                .filter(|d| module.is_none_or(|m| d.module == m))
                .map(|d| Json::String(d.hash.clone()))
                .collect()
        };
        let module_hashes: Vec<String> = (0..self.modules.len())
            .map(|m| digest(&hashes(Some(m)).iter().collect::<Vec<_>>()))
            .collect();
        self.hash = digest(&hashes(None).iter().collect::<Vec<_>>());
        for (m, h) in self.modules.iter_mut().zip(module_hashes) {
            m.hash = h;
        }
        self
    }
}
