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

/// The file (module name) behind each pin key of the rubrics a program
/// imports, added to `files`; an error for a key that two files would
/// share (`h.safer` and a file named `h`: a key leaves out `.safer`), whose
/// pin could never match both.
pub fn add_pinned_files(
    program: &Program,
    files: &mut BTreeMap<String, String>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for decl in program
        .decls
        .iter()
        .filter(|d| d.kind == DeclKind::Rubric && d.module != 0)
    {
        let file = program
            .modules
            .get(decl.module)
            .map_or_else(String::new, |m| m.name.clone());
        let k = key(program, decl);
        match files.get(&k) {
            Some(other) if *other != file => out.push(
                Diagnostic::error(
                    Code::E0226,
                    format!(
                        "`{file}` and `{other}` would pin rubric `{}` under one key, `{k}`",
                        decl.name
                    ),
                )
                .with_primary(decl.span, format!("defined in {file}"))
                .with_help(
                    "rename one of the files: a pin's key is the file's path without `.safer`",
                ),
            ),
            Some(_) => {}
            None => {
                files.insert(k, file);
            }
        }
    }
    out
}

/// Compares the program's rubrics with the pins (the program must be
/// hashed). A pinned rubric that changed is an error naming the file and
/// both hashes; pins of rubrics this program does not use are ignored.
pub fn check(program: &Program, pins: &BTreeMap<String, String>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for decl in program.decls.iter().filter(|d| d.kind == DeclKind::Rubric) {
        let k = key(program, decl);
        let Some(pinned) = pins.get(&k) else {
            // Not pinned under its own file, but a rubric of this name is
            // pinned from another: a file that now shadows the pinned one
            // (a copy beside the pipeline) would pass unseen.
            let suffix = format!("::{}", decl.name);
            let elsewhere: Vec<&String> = pins.keys().filter(|p| p.ends_with(&suffix)).collect();
            if decl.module != 0 && !elsewhere.is_empty() {
                let file = program
                    .modules
                    .get(decl.module)
                    .map_or("?", |m| m.name.as_str());
                out.push(
                    Diagnostic::error(
                        Code::E0226,
                        format!("rubric `{}` is pinned from another file than the one this pipeline imports", decl.name),
                    )
                    .with_primary(decl.span, format!("imported from {file}"))
                    .with_note(format!("pinned: {}", elsewhere.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")))
                    .with_help("if this file is meant to replace the pinned one, run `saferc pin` to pin it; otherwise import the pinned file"),
                );
            }
            continue;
        };
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

/// Replaces the pins of a manifest's text with `pins`, editing the TOML
/// document (`toml_edit`): every other table, key and comment stays as it
/// was written, a `[pins]` table keeps its place (however its header is
/// spaced, or as an inline `pins = { ... }`), and keys are quoted as TOML
/// quotes them (a path holding `"` or `\`).
///
/// # Errors
/// The text is no TOML document (the manifest's own check reports it).
pub fn rewrite(text: &str, pins: &BTreeMap<String, String>) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    if pins.is_empty() {
        doc.remove("pins");
        return Ok(doc.to_string());
    }
    let mut table = match doc.remove("pins") {
        Some(toml_edit::Item::Table(mut t)) => {
            t.clear();
            t
        }
        _ => toml_edit::Table::new(),
    };
    for (k, v) in pins {
        table.insert(k, toml_edit::value(v.as_str()));
    }
    doc.insert("pins", toml_edit::Item::Table(table));
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::rewrite;
    use std::collections::BTreeMap;

    fn pins(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Comments of the tables around `[pins]` stay, a spaced header or an
    /// inline table is replaced (not added to), and keys holding `"` or
    /// `\` are quoted so that the file reads back.
    #[test]
    fn rewriting_pins_keeps_the_rest_of_the_document() {
        let text = "[project]\nname = \"p\" # the name\n\n[ pins ]\n\"old::r\" = \"sha256:0\"\n\n# the grader we share\n[judges.grm]\nendpoint = \"http://x/v1\"\n";
        let out = rewrite(text, &pins(&[("we\"ird\\x::r", "sha256:1")])).unwrap();
        assert!(
            out.contains("# the name") && out.contains("# the grader we share"),
            "{out}"
        );
        assert!(!out.contains("old::r"), "{out}");
        let doc: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(doc["pins"]["we\"ird\\x::r"].as_str(), Some("sha256:1"));
        assert_eq!(
            doc["judges"]["grm"]["endpoint"].as_str(),
            Some("http://x/v1")
        );

        let inline = "pins = { \"a::r\" = \"sha256:0\" }\n\n[project]\nname = \"p\"\n";
        let out = rewrite(inline, &pins(&[("a::r", "sha256:2")])).unwrap();
        let doc: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(doc["pins"]["a::r"].as_str(), Some("sha256:2"), "{out}");

        let none = rewrite(
            "[project]\nname = \"p\"\n\n[pins]\n\"a::r\" = \"x\"\n",
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(!none.contains("pins"), "{none}");
    }
}
