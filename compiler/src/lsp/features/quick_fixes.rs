//! `textDocument/codeAction`: the quick fixes of this document's
//! diagnostics (a misspelt key, name, value or unit replaced by the one it
//! was meant to be; a renamed or deprecated key by its saferc name), each
//! a code action whose edit is the diagnostic's [`Fix`].

use super::Document;
use crate::diagnostic::{Diagnostic, Fix};
use crate::span::Span;
use serde_json::{json, Value};

/// The quick fixes whose replaced text meets the requested range (a
/// cursor inside or at either end of it counts), unless the request's
/// `context.only` leaves out `quickfix` actions.
pub fn code_actions(doc: &Document, params: &Value) -> Value {
    if !quick_fixes_wanted(&params["context"]["only"]) {
        return json!([]);
    }
    let Some(file) = doc.file(doc.id) else {
        return json!([]);
    };
    let position = |p: &Value| {
        let line = p["line"].as_u64().unwrap_or(0) as usize;
        let character = p["character"].as_u64().unwrap_or(0) as usize;
        file.offset_of_utf16(line, character)
    };
    let start = position(&params["range"]["start"]);
    let end = position(&params["range"]["end"]).max(start);
    let actions: Vec<Value> = doc
        .analysis
        .diagnostics
        .iter()
        .flat_map(|d| d.fixes.iter().map(move |fix| (d, fix)))
        .filter(|(_, fix)| fix.span.source == doc.id && fix.applies_to(&doc.text))
        .filter(|(_, fix)| meets(fix.span, start, end))
        .map(|(d, fix)| action(doc, d, fix))
        .collect();
    json!(actions)
}

/// Whether a request's `only` kinds take quick fixes (no `only` takes all;
/// `quickfix` or a kind it refines, such as `""`, takes them).
fn quick_fixes_wanted(only: &Value) -> bool {
    match only.as_array() {
        None => true,
        Some(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .any(|kind| "quickfix".starts_with(kind)),
    }
}

/// Whether `span` and the byte range `start..=end` touch.
fn meets(span: Span, start: usize, end: usize) -> bool {
    span.start as usize <= end && start <= span.end as usize
}

fn action(doc: &Document, diagnostic: &Diagnostic, fix: &Fix) -> Value {
    let edit = json!({ "range": doc.range(fix.span), "newText": fix.replacement });
    json!({
        "title": fix.title,
        "kind": "quickfix",
        "diagnostics": [doc.lsp_diagnostic(diagnostic)],
        "isPreferred": diagnostic.fixes.len() == 1,
        "edit": { "changes": { doc.uri.clone(): [edit] } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equally close names give one action each, none preferred: the
    /// editor must not apply either unasked.
    #[test]
    fn equally_close_names_are_offered_as_a_choice() {
        let text = "model policy { arch = tiny_vlm, weights = \"w\" }\ndataset d { source = jsonl(\"d.jsonl\") }\ntrain stage1 { policy = policy, data = d, sft { lr = 1e-4 } }\ntrain stage2 { policy = policy, data = d, sft { lr = 1e-4 } }\ntrain last { after = stage3, policy = policy, data = d, sft { lr = 1e-4 } }\n";
        let doc = Document::analyze("file:///tmp/choice.safer", text);
        let at = json!({ "line": 4, "character": 22 });
        let params =
            json!({ "range": { "start": at, "end": at }, "context": { "diagnostics": [] } });
        let actions = code_actions(&doc, &params);
        let offered: Vec<(&str, bool)> = actions
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| (a["title"].as_str().unwrap_or(""), a["isPreferred"] == true))
            .collect();
        assert_eq!(
            offered,
            [
                ("Replace `stage3` with `stage1`", false),
                ("Replace `stage3` with `stage2`", false)
            ],
            "{actions}"
        );
    }
}
