//! The keyword lists of the pest grammar (the source of truth), of the
//! TextMate grammar and of the tree-sitter grammar agree.

#![allow(clippy::panic)]

use safer_tests::repo_root;
use std::collections::BTreeSet;

/// The quoted words of one pest rule (`name = ... { "a" | "b" ... }`).
fn pest_words(grammar: &str, rule: &str) -> BTreeSet<String> {
    let start = grammar
        .lines()
        .position(|l| {
            l.trim_start().starts_with(&format!("{rule} "))
                || l.trim_start().starts_with(&format!("{rule}="))
        })
        .unwrap_or_else(|| panic!("no rule {rule}"));
    let mut text = String::new();
    for line in grammar.lines().skip(start) {
        text.push_str(line);
        text.push('\n');
        if line.trim_end().ends_with('}') {
            break;
        }
    }
    text.split('"')
        .enumerate()
        .filter(|(i, w)| {
            i % 2 == 1 && w.chars().all(|c| c.is_ascii_alphabetic() || c == '_') && !w.is_empty()
        })
        .map(|(_, w)| w.to_string())
        .collect()
}

/// Every word in a `(a|b|c)` alternation of the TextMate grammar.
fn textmate_words(json: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for group in json.split('(').skip(1) {
        let Some(body) = group.split(')').next() else {
            continue;
        };
        if body.contains('|') {
            for w in body.split('|') {
                if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
                    out.insert(w.to_string());
                }
            }
        } else if body.chars().all(|c| c.is_ascii_alphabetic()) && !body.is_empty() {
            out.insert(body.to_string());
        }
    }
    out
}

#[test]
fn pest_and_textmate_keywords_agree() {
    let root = repo_root();
    let pest = std::fs::read_to_string(root.join("grammar/safer.pest")).unwrap_or_default();
    let tm = std::fs::read_to_string(root.join("grammar/textmate/safer.tmLanguage.json"))
        .unwrap_or_default();
    let tm_words = textmate_words(&tm);
    let mut keywords = BTreeSet::new();
    for rule in ["decl_kind", "reserved", "unit", "boolean"] {
        keywords.extend(pest_words(&pest, rule));
    }
    for line in pest.lines().filter(|l| {
        l.starts_with("kw_")
            || l.starts_with("op_and")
            || l.starts_with("op_or")
            || l.starts_with("op_not ")
            || l.starts_with("op_in")
    }) {
        let name = line.split_whitespace().next().unwrap_or("");
        keywords.extend(pest_words(&pest, name));
    }
    assert!(
        keywords.len() >= 30,
        "too few keywords read from the pest grammar: {keywords:?}"
    );
    let missing: Vec<&String> = keywords.iter().filter(|k| !tm_words.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "keywords of safer.pest missing from the TextMate grammar: {missing:?}"
    );
    // The declaration keywords are exactly the parser's.
    let decl = pest_words(&pest, "decl_kind");
    let group = tm
        .split('(')
        .filter_map(|g| g.split(')').next())
        .find(|g| g.starts_with("model|"))
        .unwrap_or_else(|| panic!("no declaration alternation in the TextMate grammar"));
    let tm_decl: BTreeSet<String> = group.split('|').map(str::to_string).collect();
    assert_eq!(
        tm_decl, decl,
        "declaration keywords differ between safer.pest and the TextMate grammar"
    );
}

/// The quoted words of the JavaScript call or array that starts at `anchor`.
fn js_words(js: &str, anchor: &str) -> BTreeSet<String> {
    let start = js
        .find(anchor)
        .unwrap_or_else(|| panic!("no `{anchor}` in grammar.js"));
    let rest = &js[start + anchor.len()..];
    let end = rest.find(['\n']).unwrap_or(rest.len());
    rest[..end]
        .split('\'')
        .enumerate()
        .filter(|(i, w)| {
            i % 2 == 1 && !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
        })
        .map(|(_, w)| w.to_string())
        .collect()
}

#[test]
fn pest_and_tree_sitter_keywords_agree() {
    let root = repo_root();
    let pest = std::fs::read_to_string(root.join("grammar/safer.pest")).unwrap_or_default();
    let js = std::fs::read_to_string(root.join("grammar/tree-sitter-safer/grammar.js"))
        .unwrap_or_default();
    assert_eq!(
        js_words(&js, "declaration_keyword: (_) => choice("),
        pest_words(&pest, "decl_kind"),
        "declaration keywords"
    );
    // Units: the tree-sitter quantity regex lists them.
    let units = pest_words(&pest, "unit");
    let quantity = js
        .lines()
        .find(|l| l.contains("quantity: (_) =>"))
        .unwrap_or_default();
    for u in &units {
        assert!(
            quantity.contains(&format!("|{u}|"))
                || quantity.contains(&format!("({u}|"))
                || quantity.contains(&format!("|{u})")),
            "unit `{u}` missing from the tree-sitter quantity token"
        );
    }
    // Statement keywords, operators and literals appear as tokens.
    let mut words = BTreeSet::new();
    for rule in ["reserved", "boolean"] {
        words.extend(pest_words(&pest, rule));
    }
    for line in pest.lines().filter(|l| l.starts_with("kw_")) {
        words.extend(pest_words(
            &pest,
            line.split_whitespace().next().unwrap_or(""),
        ));
    }
    for w in words {
        assert!(
            js.contains(&format!("'{w}'")),
            "keyword `{w}` of safer.pest missing from grammar.js"
        );
    }
}
