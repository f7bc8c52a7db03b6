//! The settings reference (`docs/reference/settings.md`), generated from the
//! schema table so that docs and checker cannot disagree. A test fails when
//! the committed page differs; regenerate with
//! `SAFERC_BLESS=1 cargo test -p safer-tests --test settings_reference`.

use super::schema::{self, Block};
use std::fmt::Write;

/// The whole page.
pub fn markdown() -> String {
    let mut s = String::from(
        "# Settings reference\n\n<!-- Generated from compiler/src/semantic/schema.rs; do not edit. -->\n\n\
         Every block and key the compiler knows, with its type, default and allowed range.\n\
         Keys spelled as in TRL, verl or EasyR1 are recognised and answered with the saferc name (E0206).\n",
    );
    for (kind, block) in schema::all_decl_blocks() {
        section(&mut s, kind.keyword(), block, 2);
    }
    s
}

fn section(s: &mut String, path: &str, block: &'static Block, level: usize) {
    let _ = writeln!(s, "\n{} `{path}`\n\n{}\n", "#".repeat(level), block.doc);
    if !block.keys.is_empty() {
        s.push_str("| key | type | default | range | meaning |\n| --- | --- | --- | --- | --- |\n");
        for k in block.keys {
            let range = k.range.map(schema::describe_range).unwrap_or_default();
            let mut doc = k.doc.replace('|', "\\|");
            if let Some(new) = k.deprecated {
                doc = format!("**Deprecated**: use `{new}`. {doc}");
            }
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} |",
                k.name,
                schema::describe(k.ty).replace('|', "\\|"),
                schema::describe_default(k.default).replace('|', "\\|"),
                range,
                doc
            );
        }
    }
    if let Some(ty) = block.open {
        let _ = writeln!(
            s,
            "Any name may be a key here; each value is {}.",
            schema::describe(ty)
        );
    }
    if !block.forms.is_empty() {
        let forms: Vec<&str> = block
            .forms
            .iter()
            .map(|f| match f {
                schema::Form::Filter => "`filter`",
                schema::Form::Criterion => "`criterion`",
                schema::Form::Penalty => "`penalty`",
                schema::Form::Format => "`format`",
            })
            .collect();
        let _ = writeln!(s, "\nStatements: {}.", forms.join(", "));
    }
    if !block.renamed.is_empty() {
        let names: Vec<String> = block
            .renamed
            .iter()
            .map(|r| format!("`{}` → `{}`", r.old, r.new))
            .collect();
        let _ = writeln!(s, "\nOther spellings recognised: {}.", names.join(", "));
    }
    for nested in block.blocks {
        section(s, &format!("{path}.{}", nested.name), nested, level + 1);
    }
}
