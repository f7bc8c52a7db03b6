//! `textDocument/completion`: the keys of the block under the cursor,
//! declaration keywords outside blocks, declared names, and after
//! `name.` what the name holds.

use super::hover::key_markdown;
use super::{declaration_item, Document};
use crate::semantic::schema;
use crate::syntax::ast::DeclKind;
use serde_json::{json, Value};

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
            items.push(declaration_item(d));
        }
    }
    json!({ "isIncomplete": false, "items": items })
}
