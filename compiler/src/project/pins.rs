//! Pins: content hashes of imported rubrics, kept in `[pins]` of
//! `safer.toml` and checked at compile time. `saferc pin` writes them.

use crate::diagnostic::{Code, Diagnostic};
use crate::semantic::collect::module_stem;
use crate::semantic::hir::Program;
use crate::syntax::ast::DeclKind;
use std::collections::BTreeMap;

/// The pin key of a rubric: `module/path::name`, stable across programs
/// (module paths are relative to the project root, or `std/...`).
pub fn key(program: &Program, decl: &crate::semantic::hir::Decl) -> String {
    let module = program
        .modules
        .get(decl.module)
        .map_or("", |m| m.name.as_str());
    format!("{}::{}", module_stem(module), decl.name)
}

/// The rubrics a program imports (not those declared in its entry file),
/// with their pin keys and hashes. The program must be hashed.
pub fn imported_rubrics(program: &Program) -> BTreeMap<String, String> {
    program
        .decls
        .iter()
        .filter(|d| d.kind == DeclKind::Rubric && d.module != 0)
        .map(|d| (key(program, d), d.hash.clone()))
        .collect()
}

/// Compares the program's rubrics with the pins (the program must be
/// hashed). A pinned rubric that changed is an error naming the file and
/// both hashes; pins of rubrics this program does not use are ignored.
pub fn check(program: &Program, pins: &BTreeMap<String, String>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for decl in program.decls.iter().filter(|d| d.kind == DeclKind::Rubric) {
        let k = key(program, decl);
        let Some(pinned) = pins.get(&k) else { continue };
        if *pinned != decl.hash {
            let file = program
                .modules
                .get(decl.module)
                .map_or("?", |m| m.name.as_str());
            out.push(
                Diagnostic::error(Code::E0226, format!("rubric `{}` changed since it was pinned", decl.name))
                    .with_primary(decl.span, format!("defined in {file}"))
                    .with_note(format!("pinned:  {pinned}"))
                    .with_note(format!("now:     {}", decl.hash))
                    .with_help("review the change to the shared rubric; if it is intended, run `saferc pin` to accept it"),
            );
        }
    }
    out
}

/// Replaces the `[pins]` table of a manifest's text with `pins` (other
/// sections, and their comments, are kept as they are).
pub fn rewrite(text: &str, pins: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut in_pins = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_pins = trimmed.starts_with("[pins]");
        }
        if !in_pins {
            out.push_str(line);
            out.push('\n');
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !pins.is_empty() {
        out.push_str("\n[pins]\n");
        for (k, v) in pins {
            out.push_str(&format!("\"{k}\" = \"{v}\"\n"));
        }
    }
    out
}
