//! Semantic analysis: AST + imported modules → a resolved, typed program.
//!
//! The passes:
//! 1. [`loader`]: read the entry file and everything it `use`s (cycles,
//!    missing files, the project root);
//! 2. [`collect`]: one [`hir::Decl`] skeleton per declaration, the name
//!    tables ([`scope`]), duplicate names;
//! 3. [`settings`]: every block checked against the [`schema`] table
//!    (unknown, renamed, deprecated, duplicate and missing keys), values
//!    checked and converted by [`values`], expressions typed and folded by
//!    [`exprs`];
//! 4. [`checks`]: the cross-field rules (batch arithmetic, clipping, KL,
//!    splits, curation boxes, context lengths, ...); [`ambiguity`]: plain
//!    names two imports declare differently;
//! 5. [`hash`]: content hashes of modules, rubrics and the program.

pub mod ambiguity;
pub mod checks;
pub mod collect;
pub mod display;
pub mod exprs;
pub mod hash;
pub mod hir;
pub mod judge_questions;
pub mod loader;
pub mod patterns;
pub mod reference;
pub mod schema;
pub mod scope;
pub mod settings;
pub mod special_tokens;
pub mod unused;
pub mod values;
pub mod zero_divisors;

use crate::diagnostic::Diagnostic;
use crate::source::SourceMap;
use crate::syntax::ast;
use hir::{Decl, Program};
use loader::Loaded;
use scope::Scopes;
use std::path::Path;

/// What analysis knows about each declaration while it runs.
pub(crate) struct DeclInfo<'a> {
    /// The syntax of the declaration.
    pub ast: &'a ast::Decl,
    /// Its module.
    pub module: usize,
    /// The split names of a dataset.
    pub splits: Vec<String>,
    /// The criterion names of a rubric.
    pub criteria: Vec<String>,
}

/// The analysis state.
pub(crate) struct Analyzer<'a> {
    pub loaded: &'a Loaded,
    pub scopes: Scopes,
    pub decls: Vec<Decl>,
    pub info: Vec<DeclInfo<'a>>,
    pub diags: Vec<Diagnostic>,
    /// Plain names resolved through an import without an alias: module,
    /// name, where (checked for ambiguity once the declarations are known).
    pub glob_uses: Vec<(usize, String, crate::span::Span)>,
    /// Each model declaration's `config.json` and `weights` as written,
    /// read once (`Analyzer::model_config_json`).
    pub model_configs: std::collections::BTreeMap<usize, Option<(serde_json::Value, String)>>,
    /// Each model declaration's special tokens, read once from its
    /// `tokenizer.json` (`Analyzer::model_special_tokens`).
    pub model_special_tokens: std::collections::BTreeMap<usize, Option<Vec<String>>>,
}

/// The result of analysis: the program (when the modules loaded) and every
/// diagnostic (errors and warnings). The program is usable only when no
/// diagnostic is an error.
#[derive(Debug)]
pub struct Analysis {
    /// The resolved program.
    pub program: Option<Program>,
    /// Errors and warnings, in source order per file.
    pub diagnostics: Vec<Diagnostic>,
    /// The syntax tree of the entry file, when it parsed (the editor reuses
    /// it instead of parsing again).
    pub entry: Option<ast::Module>,
}

impl Analysis {
    /// True when an error was reported.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads and analyzes a pipeline file.
pub fn analyze_file(
    sources: &mut SourceMap,
    path: &Path,
    options: loader::LoadOptions,
) -> Analysis {
    let (loaded, mut diags) = loader::load_file(sources, path, options);
    finish(loaded, &mut diags)
}

/// Analyzes text (imports resolve from `base_dir`).
pub fn analyze_text(
    sources: &mut SourceMap,
    name: &str,
    text: &str,
    base_dir: Option<&Path>,
    options: loader::LoadOptions,
) -> Analysis {
    let (loaded, mut diags) = loader::load_text(sources, name, text, base_dir, options);
    finish(loaded, &mut diags)
}

fn finish(loaded: Loaded, diags: &mut Vec<Diagnostic>) -> Analysis {
    if loaded.modules.is_empty() {
        return Analysis {
            program: None,
            diagnostics: std::mem::take(diags),
            entry: None,
        };
    }
    let (mut program, mut more) = analyze(&loaded);
    diags.append(&mut more);
    if !loaded.options.pins.is_empty() && !more_errors(diags) {
        program = program.hashed();
        diags.extend(crate::project::pins::check(&program, &loaded.options.pins));
    }
    sort(diags);
    Analysis {
        program: Some(program),
        diagnostics: std::mem::take(diags),
        entry: loaded.modules.into_iter().next().map(|m| m.ast),
    }
}

/// Analyzes loaded modules.
pub fn analyze(loaded: &Loaded) -> (Program, Vec<Diagnostic>) {
    let mut a = Analyzer {
        loaded,
        scopes: Scopes::new(loaded),
        decls: Vec::new(),
        info: Vec::new(),
        diags: Vec::new(),
        glob_uses: Vec::new(),
        model_configs: std::collections::BTreeMap::new(),
        model_special_tokens: std::collections::BTreeMap::new(),
    };
    a.collect();
    a.check_all_settings();
    a.cross_checks();
    a.check_ambiguous_uses();
    let program = a.finish_program();
    (program, a.diags)
}

fn more_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}

/// Orders diagnostics by file and position (errors of the same place
/// before warnings).
fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| {
        let span = d.primary_span().unwrap_or_default();
        (span.source, span.start, d.severity)
    });
}
