//! `textDocument/completion`: the keys of the block under the cursor,
//! declaration keywords outside blocks, declared names, after `name.`
//! what the name holds, and after `key = ` the values the key takes.

use super::hover::key_markdown;
use super::{declaration_item, Document};
use crate::semantic::hir::Decl;
use crate::semantic::schema::{self, Ty};
use crate::syntax::ast::DeclKind;
use serde_json::{json, Value};

/// `textDocument/completion`.
pub fn completion(doc: &Document, params: &Value) -> Value {
    let offset = doc.offset(params);
    // In a comment or a string, nothing (a key accepted there was written
    // into the text).
    if super::in_prose(&doc.text, offset) {
        return json!({ "isIncomplete": false, "items": [] });
    }
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
            // text with a value in its place tells what the names are.
            let repaired;
            let source = match &doc.ast {
                Some(_) => doc,
                None => {
                    repaired = for_names(doc, head.len(), offset, "");
                    &repaired
                }
            };
            // After `key = alias.`: only what the key may name.
            let members = source.members_of(name);
            let wanted = value_position(&before[..head.len() - name.len()])
                .and_then(|(key, _)| around_key(doc, offset, key));
            let members = match wanted.and_then(reference_kinds) {
                Some(kinds) => members
                    .into_iter()
                    .filter(|m| {
                        m["detail"].as_str().is_none_or(|d| {
                            kinds.iter().any(|k| k.keyword() == d)
                                || !DeclKind::ALL.iter().any(|k| k.keyword() == d)
                        })
                    })
                    .collect(),
                None => members,
            };
            return json!({ "isIncomplete": false, "items": members });
        }
        // After a string, a number (`0.`) or a range's `..`: nothing.
        return json!({ "isIncomplete": false, "items": [] });
    }
    let around = doc.block_around(offset);
    // After `key = `: the values the key takes.
    if let Some((key, typed_from)) = value_position(before) {
        if let Some(k) = around.as_ref().and_then(|(block, _)| block.key(key)) {
            let mut items = values_for(doc, k.ty, typed_from, offset);
            items.extend(default_value_item(k));
            return json!({ "isIncomplete": false, "items": items });
        }
    }
    let mut items = Vec::new();
    match around {
        Some((block, path)) => {
            // A key accepted replaces the word under the cursor, and where
            // its `=` (a block's `{`) already follows, only the name is
            // written (`temp| = 0.7` gave `temperature =  = 0.7`).
            let word_end = offset
                + doc.text[offset..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(doc.text.len() - offset);
            let word = doc.range(crate::span::Span::new(doc.id, typed.len(), word_end));
            let after = doc.text[word_end..].trim_start_matches([' ', '\t']);
            let has_value = after.starts_with('=') && !after.starts_with("==");
            let has_body = after.starts_with('{');
            let edit = |text: String| json!({ "range": word, "newText": text });
            for k in block.keys.iter().filter(|k| k.deprecated.is_none()) {
                let text = match has_value {
                    true => k.name.to_string(),
                    false => format!("{} = ", k.name),
                };
                items.push(json!({
                    "label": k.name,
                    "kind": 10,
                    "detail": schema::describe(k.ty),
                    "documentation": { "kind": "markdown", "value": key_markdown(&path, k) },
                    "textEdit": edit(text),
                }));
            }
            for b in block.blocks {
                let text = match has_body {
                    true => b.name.to_string(),
                    false => format!("{} {{ }}", b.name),
                };
                items.push(json!({ "label": b.name, "kind": 9, "detail": "block", "documentation": b.doc, "textEdit": edit(text) }));
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

/// `key` when the text before the cursor ends a statement's `key = ` and
/// part of a value (a word, or nothing yet), with the offset where that
/// statement starts.
fn value_position(before: &str) -> Option<(&str, usize)> {
    // Not inside a string (an odd number of quotes on the line so far).
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    if !line.matches('"').count().is_multiple_of(2) {
        return None;
    }
    let start = before.rfind(['\n', '{', ',']).map_or(0, |i| i + 1);
    let statement = &before[start..];
    let (key, value) = statement.split_once('=')?;
    let key = key.trim();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let value = value.trim_start();
    let single_key = !key.is_empty() && key.chars().all(is_word);
    (single_key && value.chars().all(is_word)).then_some((key, start))
}

/// Completion items for a value of type `ty`: an enum's names, `true` and
/// `false`, declarations of the kind a reference takes (a dataset's splits
/// for a split, a rubric's criteria for a criterion), each named as this
/// document writes it (`alias.name` for a `use ... as alias`); for a
/// criterion's bare name, those of the stage's rubric.
fn values_for(doc: &Document, ty: Ty, statement_start: usize, offset: usize) -> Vec<Value> {
    let item = |label: &str, kind: u8, detail: &str| json!({ "label": label, "kind": kind, "detail": detail });
    // While the value is half typed the text may not parse: the text with
    // a value in its place tells what is declared.
    let repaired;
    let source = match &doc.analysis.program {
        Some(_) => doc,
        None => {
            let value_start = doc.text[statement_start..offset]
                .find('=')
                .map_or(offset, |i| statement_start + i + 1);
            repaired = for_names(doc, value_start, offset, " 0");
            &repaired
        }
    };
    // The declaration being written is not a value of its own settings
    // (`after = t` in `train t`, `dedup` of its own dataset).
    let enclosing = source.decl_around(offset).map(|d| d.name.name.clone());
    let declared = |kind: DeclKind| -> Vec<(String, &Decl)> {
        source
            .written_names()
            .into_iter()
            .filter(|(name, d)| d.kind == kind && Some(name) != enclosing.as_ref())
            .collect()
    };
    let with_members = |kind: DeclKind, members: &dyn Fn(&Decl) -> Vec<String>| -> Vec<String> {
        declared(kind)
            .into_iter()
            .flat_map(|(name, d)| members(d).into_iter().map(move |m| format!("{name}.{m}")))
            .collect()
    };
    match ty {
        Ty::Enum(values) => values.iter().map(|v| item(v, 20, "value")).collect(),
        Ty::Bool => ["true", "false"]
            .iter()
            .map(|v| item(v, 21, "bool"))
            .collect(),
        Ty::Ref(kind) => declared(kind)
            .iter()
            .map(|(name, d)| item(name, 6, d.kind.keyword()))
            .collect(),
        Ty::PromptText => declared(DeclKind::Prompt)
            .iter()
            .map(|(name, _)| item(name, 6, "prompt"))
            .collect(),
        Ty::SplitRef | Ty::SplitList => {
            let whole = declared(DeclKind::Dataset)
                .into_iter()
                .map(|(name, _)| name);
            let splits = with_members(DeclKind::Dataset, &|d| {
                d.settings
                    .block("split")
                    .into_iter()
                    .flat_map(|s| s.0.keys().cloned())
                    .collect()
            });
            whole
                .chain(splits)
                .map(|label| item(&label, 5, "dataset split"))
                .collect()
        }
        Ty::CriterionRef => with_members(DeclKind::Rubric, &|r| {
            r.rubric
                .iter()
                .flat_map(|rubric| rubric.criteria.iter().map(|c| c.name.clone()))
                .collect()
        })
        .iter()
        .map(|label| item(label, 5, "criterion"))
        .collect(),
        // A criterion of the stage's rubric (`cost { criterion = ... }`).
        Ty::CriterionName => source
            .stage_rubric(statement_start)
            .and_then(|r| r.rubric.as_ref())
            .into_iter()
            .flat_map(|rubric| rubric.criteria.iter())
            .map(|c| item(&c.name, 5, "criterion of the stage's rubric"))
            .collect(),
        _ => Vec::new(),
    }
}

/// For a key whose default is a number, a quantity or a range, that
/// default as it is written (`0.7`, `50 steps`, `0.3..0.9`), with the
/// allowed range beside it: a starting point for a value the names and
/// enum values above do not cover.
fn default_value_item(key: &schema::Key) -> Option<Value> {
    use schema::Default;
    let text = match key.default {
        Default::Number(_) | Default::Quantity(..) | Default::Range(..) => {
            schema::describe_default(key.default)
        }
        _ => return None,
    };
    let detail = match key.range {
        Some(range) => format!("default; {}", schema::describe_range(range)),
        None => "default".to_string(),
    };
    Some(json!({
        "label": text,
        "kind": 12,
        "detail": detail,
        "documentation": key.doc,
        "sortText": "~default",
    }))
}

/// The type of key `key` of the block around `offset`.
fn around_key(doc: &Document, offset: usize, key: &str) -> Option<Ty> {
    doc.block_around(offset)?.0.key(key).map(|k| k.ty)
}

/// The kinds of declaration a value of type `ty` names, when it names one.
fn reference_kinds(ty: Ty) -> Option<Vec<DeclKind>> {
    match ty {
        Ty::Ref(kind) => Some(vec![kind]),
        Ty::PromptText => Some(vec![DeclKind::Prompt]),
        Ty::SplitRef | Ty::SplitList => Some(vec![DeclKind::Dataset]),
        Ty::CriterionRef => Some(vec![DeclKind::Rubric]),
        _ => None,
    }
}

/// The document analysed again for the names it declares: the text from
/// `start` to the end of the word at `offset` (what is being typed)
/// becomes `placeholder`, and every other half-written setting (`key =`
/// with nothing after it on its line) gets a placeholder value and a
/// dangling `name.` loses its dot, so that the text parses around them.
fn for_names(doc: &Document, start: usize, offset: usize, placeholder: &str) -> Document {
    let text = &doc.text;
    let word_end = text[offset..]
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .map_or(text.len(), |i| offset + i);
    let repaired = format!("{}{placeholder}{}", &text[..start], &text[word_end..]);
    let lines: Vec<String> = repaired
        .split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches(['\n', '\r']).trim_end();
            let newline = &line[line.trim_end_matches(['\n', '\r']).len()..];
            if body.ends_with('=') && !body.ends_with("==") {
                format!("{body} 0{newline}")
            } else if body.ends_with('.') && !body.ends_with("..") {
                // `rollout = rollouts.`, being typed elsewhere.
                format!("{}{newline}", &body[..body.len() - 1])
            } else {
                line.to_string()
            }
        })
        .collect();
    Document::analyze(&doc.uri, &lines.concat())
}
