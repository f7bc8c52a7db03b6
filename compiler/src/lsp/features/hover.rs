//! `textDocument/hover`: a key's schema text (and its `##` lines), a
//! declaration keyword's, a name's declaration, a criterion (where it is
//! declared or referred to: its rubric, weight, scoring, `##` lines), an
//! enum value (its key's text), a parameter, a split, an import alias.

use super::named::Named;
use super::Document;
use crate::semantic::hir::{Criterion, Decl};
use crate::semantic::schema;
use crate::syntax::ast::{self, DeclKind};
use serde_json::{json, Value};

pub(super) fn key_markdown(path: &str, k: &schema::Key) -> String {
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

/// A criterion: its statement, its rubric, how it is scored, its `##`
/// lines where the rubric is this document's.
fn criterion_markdown(doc: &Document, rubric: &Decl, c: &Criterion) -> String {
    let mut value = format!(
        "```safer\ncriterion {} weight {}\n```\nof rubric `{}`",
        c.name,
        schema::format_number(c.weight),
        rubric.name
    );
    let how = match (&c.scorer, &c.description) {
        (Some(_), _) => "scored by its `scorer`".to_string(),
        (None, Some(d)) => format!("asked of the rubric's judge: \"{d}\""),
        (None, None) => "asked of the rubric's judge".to_string(),
    };
    value.push_str(&format!("; {how}"));
    if c.scale != (0.0, 1.0) {
        value.push_str(&format!(
            "; raw scores {}..{}, normalised to 0..1",
            schema::format_number(c.scale.0),
            schema::format_number(c.scale.1)
        ));
    }
    if c.name_span.source == doc.id {
        let docs = doc.statement_docs_at(c.name_span.start as usize);
        if !docs.is_empty() {
            value.push_str("\n\n");
            value.push_str(&docs.join("\n"));
        }
    }
    value
}

/// A declared parameter as a signature shows it: `max: number = 4096`.
fn param_text(doc: &Document, p: &crate::semantic::hir::Param) -> String {
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
}

/// A parameter (as its head writes it), a split (its statement), an
/// import alias (its `use` and the names it gives), the called
/// declaration's parameter a named argument sets (none when it has no
/// parameter of that name).
fn named_markdown(doc: &Document, named: &Named) -> Option<String> {
    Some(match named {
        Named::Argument { callee, param } => {
            let (callee, param) = (callee.as_ref()?, param.as_ref()?);
            format!(
                "```safer\n{}\n```\nparameter of {} `{}`",
                param_text(doc, param),
                callee.kind.keyword(),
                callee.name
            )
        }
        Named::Param { decl, param } => {
            let written = doc
                .text
                .get(param.span.start as usize..param.span.end as usize)
                .unwrap_or(&param.name.name);
            format!(
                "```safer\n{written}\n```\nparameter of {} `{}`",
                decl.kind.keyword(),
                decl.name.name
            )
        }
        Named::Split {
            dataset,
            split,
            statement,
        } => {
            let written = match (statement, &doc.analysis.program) {
                (Some((_, text)), _) => text.clone(),
                (None, Some(program)) => dataset
                    .settings
                    .block("split")
                    .and_then(|s| s.get(split))
                    .map_or_else(
                        || split.clone(),
                        |v| format!("{split} = {}", crate::semantic::display::value(v, program)),
                    ),
                (None, None) => split.clone(),
            };
            format!(
                "```safer\n{written}\n```\nsplit of dataset `{}`",
                dataset.name
            )
        }
        Named::Alias { item } => {
            let alias = item.alias.as_ref().map_or("", |a| a.name.as_str());
            let mut value = format!("```safer\nuse \"{}\" as {alias}\n```\n", item.path.value);
            let names: Vec<String> = doc
                .imported_decls(&item.path.value)
                .unwrap_or_default()
                .iter()
                .map(|d| format!("`{alias}.{}` ({})", d.name, d.kind.keyword()))
                .collect();
            match names.is_empty() {
                true => value.push_str("an import"),
                false => value.push_str(&format!("an import: {}", names.join(", "))),
            }
            value
        }
    })
}

/// A block's hover: its path and its text.
fn block_markdown(path: &str, b: &schema::Block) -> String {
    format!("**`{path}.{}`** block\n\n{}", b.name, b.doc)
}

/// `k3` of `estimator`: the value, and its key's text (which says what
/// each value means).
fn enum_value_markdown(word: &str, path: &str, k: &schema::Key) -> String {
    format!("**`{word}`**, a value of {}", key_markdown(path, k))
}

/// Hover on a key (`kind` before `=` or `{`) or an enum value (`http`
/// after `kind = `) of the block the braces around `span` open, in a
/// document that does not parse.
fn unparsed_key_or_value(doc: &Document, word: &str, span: crate::span::Span) -> Option<Value> {
    let (start, end) = (span.start as usize, span.end as usize);
    let (block, path) = doc.block_by_braces(start)?;
    let before = &doc.text[..start];
    let statement = &before[before.rfind(['\n', '{', ',']).map_or(0, |i| i + 1)..];
    let after = doc.text[end..].trim_start_matches([' ', '\t']);
    let range = doc.range(span);
    // A key starts a statement, or follows a complete setting and a space
    // (settings may be separated by spaces alone: `dtype = f32 arch = ...`).
    let prior = statement.trim();
    let starts_a_setting = prior.is_empty()
        || (prior.contains('=') && !prior.ends_with('=') && statement.ends_with([' ', '\t']));
    if starts_a_setting && (after.starts_with('=') || after.starts_with('{')) {
        if let Some(k) = block.key(word) {
            return Some(
                json!({ "contents": { "kind": "markdown", "value": key_markdown(&path, k) }, "range": range }),
            );
        }
        let b = block.block(word)?;
        return Some(
            json!({ "contents": { "kind": "markdown", "value": block_markdown(&path, b) }, "range": range }),
        );
    }
    // The value of the setting written last on the line: its key is the
    // word before the last `=`.
    let (key, value) = statement.rsplit_once('=')?;
    let key = key.split_whitespace().last()?;
    let k = block.key(key).filter(|_| value.trim().is_empty())?;
    match k.ty {
        schema::Ty::Enum(values) if values.contains(&word) => {
            let value = enum_value_markdown(word, &path, k);
            Some(json!({ "contents": { "kind": "markdown", "value": value }, "range": range }))
        }
        _ => None,
    }
}

/// A declaration's hover: its keyword and name (a scorer's signature),
/// the module declaring it and its `##` lines.
fn declaration_markdown(doc: &Document, d: &Decl) -> String {
    let module = doc
        .analysis
        .program
        .as_ref()
        .and_then(|p| p.modules.get(d.module))
        .map_or(String::new(), |m| m.name.clone());
    // A scorer's signature: its parameters, their types and defaults.
    let params = if d.kind == DeclKind::Scorer {
        let shown: Vec<String> = d.params.iter().map(|p| param_text(doc, p)).collect();
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
    value
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
            return json!({ "contents": { "kind": "markdown", "value": block_markdown(&path, b) } });
        }
    }
    let Some((word, qualifier, span)) = doc.word_at(offset) else {
        return Value::Null;
    };
    // While the text does not parse: a key, or an enum value, read from
    // the braces and the line around the word.
    if doc.ast.is_none() {
        if let Some(found) = unparsed_key_or_value(doc, &word, span) {
            return found;
        }
    }
    // A value of a key that takes one of a few names (`k3` of
    // `estimator`): the key's text, which says what each one means.
    if let Some((block, path, None)) = doc.block_at(offset) {
        let key = doc.key_of_value_at(offset);
        if let Some(k) = key.as_deref().and_then(|key| block.key(key)) {
            if matches!(k.ty, schema::Ty::Enum(values) if values.contains(&word.as_str())) {
                let value = enum_value_markdown(&word, &path, k);
                return json!({ "contents": { "kind": "markdown", "value": value }, "range": doc.range(span) });
            }
        }
    }
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
    if let Some(named) = doc.named(&word, qualifier.as_deref(), span) {
        return match named_markdown(doc, &named) {
            Some(value) => {
                json!({ "contents": { "kind": "markdown", "value": value }, "range": doc.range(span) })
            }
            None => Value::Null,
        };
    }
    if let Some((rubric, c)) = doc.criterion_named(&word, qualifier.as_deref(), offset) {
        return json!({ "contents": { "kind": "markdown", "value": criterion_markdown(doc, rubric, c) }, "range": doc.range(span) });
    }
    match doc.decl_named(&word, qualifier.as_deref()) {
        Some(d) => {
            let value = declaration_markdown(doc, d);
            json!({ "contents": { "kind": "markdown", "value": value }, "range": doc.range(span) })
        }
        // While the text does not parse: a declaration as the last text
        // that parsed declared it (or imported it).
        None if !doc.parses() => {
            let Some(previous) = doc.last_parsed() else {
                return Value::Null;
            };
            match previous.decl_named(&word, qualifier.as_deref()) {
                Some(d) => {
                    let value = format!(
                        "{}\n\n---\n\n*as the file read when it last parsed*",
                        declaration_markdown(previous, d)
                    );
                    json!({ "contents": { "kind": "markdown", "value": value }, "range": doc.range(span) })
                }
                None => Value::Null,
            }
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
