//! Unit tests of the language server's answers, on documents analysed in
//! memory (the JSON-RPC session is tested in `compiler/tests/lsp.rs`).

#![allow(clippy::unwrap_used, clippy::panic)]

use super::{completion, definition, formatting, hover, uri_to_path, Document};
use serde_json::{json, Value};

/// The labels `completion` offers at a position of `doc`.
fn completion_labels(doc: &Document, line: u64, character: u64) -> Vec<String> {
    let c = completion(
        doc,
        &json!({ "position": { "line": line, "character": character } }),
    );
    c["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["label"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn uris_decode_and_odd_escapes_do_not_panic() {
    assert_eq!(
        uri_to_path("file:///a%20b/c.safer").unwrap().to_str(),
        Some("/a b/c.safer")
    );
    // A `%` before a multi-byte character used to slice inside it.
    let _ = uri_to_path("file:///tmp/x%a\u{e9}.safer");
    assert!(uri_to_path("untitled:Untitled-1").is_none());
    let doc = Document::analyze("file:///tmp/x%a\u{e9}.safer", "model m {}\n");
    assert!(!doc.diagnostics().is_empty());
}

/// Completion in a document that does not parse (a key half typed, a
/// block not closed yet) offers the keys of the block the braces say the
/// cursor is in, not the declaration keywords.
#[test]
fn completion_reads_open_blocks_when_the_text_does_not_parse() {
    let labels = |text: &str, line: u64, character: u64| {
        completion_labels(
            &Document::analyze("untitled:c.safer", text),
            line,
            character,
        )
    };
    let half_typed = labels("train t {\n  grpo {\n    l\n  }\n}\n", 2, 5);
    assert!(
        half_typed.iter().any(|l| l == "lr") && half_typed.iter().any(|l| l == "kl"),
        "{half_typed:?}"
    );
    assert!(!half_typed.iter().any(|l| l == "model"), "{half_typed:?}");
    let unclosed = labels("# a { in a comment\nrubric graded(judge = j) {\n  total = \"}\"\n  criterion c weight 1 {\n    ", 4, 4);
    assert!(unclosed.iter().any(|l| l == "scale"), "{unclosed:?}");
    let top = labels("model m {\n}\nmod", 2, 3);
    assert!(top.iter().any(|l| l == "model"), "{top:?}");
}

/// A byte-order mark at the start of the editor's text is ignored, as
/// the CLI ignores it, and positions after it stay where the editor has
/// them.
#[test]
fn a_byte_order_mark_is_no_error() {
    let doc = Document::analyze(
        "untitled:b.safer",
        "\u{feff}rollout r {\n  temprature = 1\n  max_tokens = 8 tokens\n}\n",
    );
    let diags = doc.diagnostics();
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0]["code"], "E0205");
    assert_eq!(
        diags[0]["range"]["start"],
        json!({ "line": 1, "character": 2 })
    );
    let on = hover(&doc, &json!({ "position": { "line": 0, "character": 2 } }));
    assert!(on.to_string().contains("rollout"), "{on}");
}

/// A column past a line's end is the end of that line, not the start
/// of the next one.
#[test]
fn a_position_past_the_line_end_stays_on_its_line() {
    let text = "model policy { arch = tiny_vlm, weights = \"w\" }\nrollout r {\n  max_tokens = 64 tokens\n}\n";
    let doc = Document::analyze("untitled:x.safer", text);
    let past = hover(
        &doc,
        &json!({ "position": { "line": 0, "character": 200 } }),
    );
    assert!(!past.to_string().contains("rollout"), "{past}");
    let on = hover(&doc, &json!({ "position": { "line": 1, "character": 2 } }));
    assert!(on.to_string().contains("rollout"), "{on}");
    // A name in a comment is prose: no hover.
    let doc = Document::analyze("untitled:y.safer", &format!("# the policy\n{text}"));
    let prose = hover(&doc, &json!({ "position": { "line": 0, "character": 7 } }));
    assert!(prose.is_null(), "{prose}");
}

/// `y.brief` with `use "a.safer" as y` is `a.safer`'s, not that of
/// `ba.safer`, whose name also ends with `a`.
#[test]
fn a_qualified_name_resolves_in_its_own_module() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-alias-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ba.safer"), "prompt brief = \"BA\"\n").unwrap();
    std::fs::write(dir.join("a.safer"), "prompt brief = \"A\"\n").unwrap();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/a.safer"), "prompt brief = \"LIB\"\n").unwrap();
    let text = "use \"lib/a.safer\" as z\nuse \"ba.safer\" as x\nuse \"a.safer\" as y\nprompt p = y.brief\n";
    let uri = url::Url::from_file_path(dir.join("m.safer"))
        .unwrap()
        .to_string();
    let doc = Document::analyze(&uri, text);
    let def = definition(&doc, &json!({ "position": { "line": 3, "character": 14 } }));
    let target = def["uri"].as_str().unwrap_or_default();
    let expected = url::Url::from_file_path(dir.join("a.safer"))
        .unwrap()
        .to_string();
    assert_eq!(target, expected, "{def}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An error in an imported file shows on the `use` line that imports
/// it, as `saferc check` fails on it too.
#[test]
fn an_error_in_an_imported_file_shows_on_its_use_line() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.safer"),
        "rubric broken {\n  criterion a weight\n}\n",
    )
    .unwrap();
    let uri = url::Url::from_file_path(dir.join("m.safer"))
        .unwrap()
        .to_string();
    let doc = Document::analyze(&uri, "prompt p = \"x\"\nuse \"bad.safer\"\n");
    let diags = doc.diagnostics();
    assert_eq!(diags.len(), 1, "{diags:?}");
    let d = &diags[0];
    assert_eq!(d["code"], "E0101");
    assert_eq!(d["range"]["start"], json!({ "line": 1, "character": 0 }));
    assert!(
        d["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("in `"),
        "{d}"
    );
    let related = &d["relatedInformation"][0];
    assert!(related["location"]["uri"]
        .as_str()
        .unwrap_or_default()
        .ends_with("/bad.safer"));
    assert_eq!(related["location"]["range"]["start"]["line"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A project's `[imports] roots` (the layout `saferc new` makes): an
/// error in a file found there shows on its `use` line (it was at
/// 0:0), and `alias.name` goes to that file's declaration, not to a
/// same-named one of the document.
#[test]
fn imports_through_the_project_s_roots_are_found() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-roots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rubrics")).unwrap();
    std::fs::write(
        dir.join("safer.toml"),
        "[project]\nname = \"p\"\n\n[imports]\nroots = [\"rubrics\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rubrics/house.safer"),
        "rubric house_rubric {\n  criterion safety weight 1 \"Safe.\"\n}\n",
    )
    .unwrap();
    let uri = url::Url::from_file_path(dir.join("p.safer"))
        .unwrap()
        .to_string();
    let text = "use \"house.safer\" as h\n\nrubric house_rubric {\n  criterion other weight 1 \"x\"\n}\n\neval e {\n  model = m\n  data = d\n  rubric = h.house_rubric\n}\n";
    let doc = Document::analyze(&uri, text);
    let at = json!({ "textDocument": { "uri": uri }, "position": { "line": 9, "character": 15 } });
    let target = definition(&doc, &at);
    assert!(
        target["uri"]
            .as_str()
            .unwrap_or_default()
            .ends_with("rubrics/house.safer"),
        "{target}"
    );
    std::fs::write(
        dir.join("rubrics/house.safer"),
        "rubric house_rubric {\n  criterion safety weight x\n}\n",
    )
    .unwrap();
    let doc = Document::analyze(&uri, text);
    let diags = doc.diagnostics();
    let elsewhere: Vec<&Value> = diags
        .iter()
        .filter(|d| {
            d["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("in `")
        })
        .collect();
    assert!(!elsewhere.is_empty(), "{diags:?}");
    assert_eq!(
        elsewhere[0]["range"]["start"],
        json!({ "line": 0, "character": 0 })
    );
    assert_eq!(
        elsewhere[0]["range"]["end"],
        json!({ "line": 0, "character": 22 })
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A declaration keyword's text is the hover of a declaration's head
/// only: `train` in `d.train` is a split, `model` in `kind = model` a
/// judge kind.
#[test]
fn a_keyword_s_hover_is_for_a_declaration_s_head_only() {
    let text = "judge j { kind = model }\ntrain t {\n  data = d.train\n}\n";
    let doc = Document::analyze("untitled:k.safer", text);
    let hover_at = |line: u32, character: u32| {
        hover(
            &doc,
            &json!({ "position": { "line": line, "character": character } }),
        )
    };
    assert!(hover_at(1, 2).to_string().contains("train"), "the head");
    let declaration_text = hover_at(1, 2)["contents"]["value"].clone();
    assert_ne!(hover_at(2, 12)["contents"]["value"], declaration_text);
    // `model` of `kind = model` is a value of the judge's `kind`.
    let value = hover_at(0, 19).to_string();
    assert!(value.contains("a value of **`judge.kind`**"), "{value}");
}

/// A setting's `##` lines show on hover, above the schema's text, and a
/// criterion's on its name.
#[test]
fn a_setting_s_documentation_shows_on_hover() {
    let text = "rollout r {\n  ## Eight completions per prompt.\n  group = 8\n  max_tokens = 8 tokens\n}\n\nrubric q {\n  ## Refuses harm.\n  criterion safety weight 1 \"Safe.\"\n}\n";
    let doc = Document::analyze("untitled:h.safer", text);
    let on_group = hover(&doc, &json!({ "position": { "line": 2, "character": 3 } }));
    let shown = on_group["contents"]["value"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with("Eight completions per prompt."),
        "{on_group}"
    );
    assert!(shown.contains("group"), "{on_group}");
    let on_criterion = hover(&doc, &json!({ "position": { "line": 8, "character": 14 } }));
    let shown = on_criterion["contents"]["value"]
        .as_str()
        .unwrap_or_default();
    assert!(
        shown.contains("criterion safety weight 1"),
        "{on_criterion}"
    );
    assert!(shown.ends_with("\n\nRefuses harm."), "{on_criterion}");
}

/// Formatting keeps a byte-order mark, as `saferc fmt` does, and a
/// formatted file with one gets no edit (the mark was dropped and the
/// whole document rewritten).
#[test]
fn formatting_keeps_a_byte_order_mark() {
    let formatted = Document::analyze("untitled:f.safer", "\u{feff}model m { arch = tiny_vlm }\n");
    assert_eq!(formatting(&formatted, &json!({})), json!([]));
    let messy = Document::analyze("untitled:f.safer", "\u{feff}model m{arch=tiny_vlm}\n");
    let edits = formatting(&messy, &json!({}));
    assert_eq!(edits[0]["newText"], "\u{feff}model m { arch = tiny_vlm }\n");
}

/// A CRLF document is formatted with CRLF line ends (the text `saferc
/// fmt` writes), and a formatted one gets no edit; the edit ends at the
/// end of the last line, not past it.
#[test]
fn formatting_keeps_crlf_line_ends() {
    let formatted = Document::analyze("untitled:f.safer", "model m { arch = tiny_vlm }\r\n");
    assert_eq!(formatting(&formatted, &json!({})), json!([]));
    let messy = Document::analyze(
        "untitled:f.safer",
        "model m{arch=tiny_vlm}\r\nprompt p=\"a\"",
    );
    let edits = formatting(&messy, &json!({}));
    assert_eq!(
        edits[0]["newText"],
        "model m { arch = tiny_vlm }\r\n\r\nprompt p = \"a\"\r\n"
    );
    assert_eq!(
        edits[0]["range"]["end"],
        json!({ "line": 1, "character": 12 }),
        "{edits}"
    );
}

/// A lone `\r` ends a line, as the protocol counts lines: positions
/// after one are on the next line, and a formatting edit covers the
/// whole document.
#[test]
fn a_lone_carriage_return_ends_a_line() {
    let text = "model policy { arch = tiny_vlm, weights = \"w\" }\r\rrollout r { temprature = 1.0, max_tokens = 8 tokens }\r";
    let doc = Document::analyze("untitled:cr.safer", text);
    let diags = doc.diagnostics();
    assert_eq!(
        diags[0]["range"]["start"],
        json!({ "line": 2, "character": 12 }),
        "{diags:?}"
    );
    let edits = formatting(&doc, &json!({}));
    // The end of the last line (3, empty): not past it, which strict
    // clients refuse.
    assert_eq!(
        edits[0]["range"]["end"],
        json!({ "line": 3, "character": 0 }),
        "{edits}"
    );
}

/// After `name.`, completion offers what the name holds: an import
/// alias's declarations, a rubric's criteria, a dataset's splits, and
/// nothing after another name (it offered the block's keys, and
/// accepting one wrote `reflect.when = `).
#[test]
fn completion_after_a_dot_offers_what_the_name_holds() {
    let text = "use \"std/prompts/reflect.safer\" as reflect\n\nrubric r {\n  criterion safety weight 1 \"Safe.\"\n}\n\ndataset d {\n  source = jsonl(\"d.jsonl\")\n  split { train = 0.8, eval = 0.2 }\n}\n\nreflection x {\n  when   = r.safety < 0.5\n  prompt = reflect.brief\n}\n\nprompt p = \"🙂\".x\n";
    let doc = Document::analyze("untitled:c.safer", text);
    let labels = |line: u64, character: u64| completion_labels(&doc, line, character);
    let after_alias = labels(13, 19);
    assert!(
        after_alias.contains(&"brief".to_string()),
        "{after_alias:?}"
    );
    assert!(
        !after_alias.contains(&"when".to_string()),
        "{after_alias:?}"
    );
    assert_eq!(labels(12, 13), ["safety"]);
    // While typed, `d.` does not parse: the splits still come.
    let typing = text.replace("  when   = r.safety < 0.5\n", "  data = d.\n");
    let doc = Document::analyze("untitled:c.safer", &typing);
    let items = completion(
        &doc,
        &json!({ "position": { "line": 12, "character": 11 } }),
    );
    let mut splits: Vec<&str> = items["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["label"].as_str())
        .collect();
    splits.sort_unstable();
    assert_eq!(splits, ["eval", "train"]);
    // A dot after a string holding an emoji: nothing, and no panic.
    assert!(labels(16, 17).is_empty());
}

/// A criterion, where a reflection or a penalty refers to it, hovers with
/// its rubric, weight and scoring and goes to its `criterion` statement;
/// one of an imported rubric goes to the standard library's file.
#[test]
fn criteria_hover_and_go_to_their_statement() {
    let text = [
        "use \"std/rubrics/safety.safer\"",
        "rubric r {",
        "  ## Refuses what is harmful.",
        "  criterion harm weight 2 { scorer = refusal() }",
        "  penalty p = -1 when harm < 0.5",
        "}",
        "reflection fix { when = r.harm < 0.5 and safety_rubric.safety < 0.5, prompt = \"{completion}\", keep = replace }",
    ]
    .join("\n");
    let doc = Document::analyze("untitled:c.safer", &text);
    let at =
        |line: u64, character: u64| json!({ "position": { "line": line, "character": character } });
    // `harm` in the penalty's condition, and in `r.harm`.
    for (line, character) in [(4, 22), (6, 28)] {
        let shown = hover(&doc, &at(line, character)).to_string();
        assert!(shown.contains("criterion harm weight 2"), "{shown}");
        assert!(shown.contains("of rubric `r`"), "{shown}");
        assert!(shown.contains("Refuses what is harmful."), "{shown}");
        let def = definition(&doc, &at(line, character));
        assert_eq!(
            def["range"]["start"],
            json!({ "line": 3, "character": 12 }),
            "{def}"
        );
    }
    // `safety_rubric.safety`: the standard library's criterion.
    let shown = hover(&doc, &at(6, 59)).to_string();
    assert!(shown.contains("criterion safety"), "{shown}");
    let def = definition(&doc, &at(6, 59));
    let uri = def["uri"].as_str().unwrap_or_default();
    assert!(uri.ends_with("std/rubrics/safety.safer"), "{def}");
    // A name that is no criterion of the rubric is not one.
    let doc = Document::analyze(
        "untitled:d.safer",
        "rubric r {\n  criterion harm weight 1\n  total = weighted\n}\n",
    );
    assert!(!hover(&doc, &at(2, 12)).to_string().contains("criterion"));
}

/// While the document does not parse (a block not closed yet), its
/// outline still lists the declarations whose heads begin a line.
#[test]
fn symbols_are_listed_while_the_text_does_not_parse() {
    use super::symbols;
    let text = "model policy { arch = tiny_vlm }\nrubric r {\n  criterion c weight\n\ntrain t {\n  policy = policy\n";
    let doc = Document::analyze("untitled:s.safer", text);
    assert!(!doc.diagnostics().is_empty());
    let listed = symbols(&doc, &json!({}));
    let names: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["policy", "r", "t"], "{listed}");
    // A declaration's words inside a triple-quoted prompt are not one; a
    // byte-order mark does not hide the first declaration.
    let text = "\u{feff}judge j {\n  kind = rules\n}\nprompt p = \"\"\"\nmodel inside_string {\n\"\"\"\ntrain t {\n";
    let marked = Document::analyze("untitled:s2.safer", text);
    let listed_marked = symbols(&marked, &json!({}));
    let marked_names: Vec<&str> = listed_marked
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(marked_names, ["j", "p", "t"], "{listed_marked}");
    assert_eq!(
        listed[1]["selectionRange"]["start"],
        json!({ "line": 1, "character": 7 })
    );
    assert_eq!(
        listed[1]["range"]["end"],
        json!({ "line": 2, "character": 20 })
    );
}

/// After `key = ` completion offers the values the key takes, not keys:
/// an enum's names, the declarations a reference may name (an aliased
/// import's as `alias.name`), a dataset and its splits.
#[test]
fn completion_after_equals_offers_the_key_s_values() {
    let labels = |text: &str, line: u64, character: u64| {
        completion_labels(
            &Document::analyze("untitled:v.safer", text),
            line,
            character,
        )
    };
    let kinds = labels("judge j {\n  kind = \n}\n", 1, 9);
    assert_eq!(kinds, ["rules", "model", "http"], "{kinds:?}");
    let partly = labels("judge j {\n  kind = ht\n}\n", 1, 11);
    assert!(partly.contains(&"http".to_string()), "{partly:?}");
    // One statement half written at a time, as in an editor.
    let with_hole = |hole: &str| {
        let lines = [
            "use \"std/rollouts.safer\" as rollouts",
            "model m { arch = tiny_vlm, weights = \"w\" }",
            "dataset d {",
            "  source = jsonl(\"d.jsonl\")",
            "  split { train = 0.9, eval = 0.1 }",
            "}",
            "train t {",
            "  policy = m",
            "  rollout = rollouts.tiny_cpu",
            "  data = d.train",
            "  sft { lr = 1e-4 }",
            "}",
        ];
        let key = hole.split_whitespace().next().unwrap_or("");
        lines
            .iter()
            .map(|l| match l.trim_start().starts_with(&format!("{key} =")) {
                true => format!("  {hole}"),
                false => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let policies = labels(&with_hole("policy = "), 7, 11);
    assert_eq!(policies, ["m"], "{policies:?}");
    let rollouts = labels(&with_hole("rollout = "), 8, 12);
    assert!(
        rollouts.contains(&"rollouts.tiny_cpu".to_string()),
        "{rollouts:?}"
    );
    assert!(!rollouts.contains(&"tiny_cpu".to_string()), "{rollouts:?}");
    let data = labels(&with_hole("data = "), 9, 9);
    assert_eq!(data, ["d", "d.eval", "d.train"], "{data:?}");
    // Names in a one-line block with nothing typed yet, beside other
    // half-written settings, and not the declaration being written.
    let one_line = labels(
        "model m { arch = tiny_vlm, weights = \"w\" }\ntrain t { policy = }\n",
        1,
        19,
    );
    assert_eq!(one_line, ["m"], "{one_line:?}");
    let others = labels(
        "model m { arch = tiny_vlm, weights = \"w\" }\ntrain t {\n  policy = \n  reward =\n}\n",
        2,
        11,
    );
    assert_eq!(others, ["m"], "{others:?}");
    let after = labels(
        "train s { sft { lr = 1 } }\ntrain t {\n  after = \n}\n",
        2,
        10,
    );
    assert_eq!(after, ["s"], "{after:?}");
    // After `key = alias.`: only what the key may name.
    let members = labels(
        "use \"std/rubrics/safety.safer\" as s\ntrain t {\n  policy = s.\n  reward = s.\n}\n",
        3,
        13,
    );
    assert_eq!(members, ["safety_rubric"], "{members:?}");
    let none = labels(
        "use \"std/rubrics/safety.safer\" as s\ntrain t {\n  policy = s.\n}\n",
        2,
        13,
    );
    assert!(none.is_empty(), "{none:?}");
    // Inside a string: no values.
    let in_string = labels("judge j {\n  model_name = \"a, kind = \n}\n", 1, 26);
    assert!(!in_string.contains(&"http".to_string()), "{in_string:?}");
    // A key of a block inside a one-line block, after `,`.
    let placement = labels("train t {\n  grpo { kl { placement = } }\n}\n", 1, 26);
    assert_eq!(placement, ["loss", "reward"], "{placement:?}");
}

/// A `use` path goes to the file it imports (the standard library's
/// through its cached copy), and an enum value hovers with its key's text.
#[test]
fn use_paths_go_to_their_file_and_enum_values_hover() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-use-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lib.safer"), "prompt p = \"{completion}\"\n").unwrap();
    let text = "use \"std/rubrics/safety.safer\"\nuse \"lib.safer\" as lib\ntrain t {\n  grpo { kl { estimator = k3 } }\n}\n";
    let uri = url::Url::from_file_path(dir.join("m.safer"))
        .unwrap()
        .to_string();
    let doc = Document::analyze(&uri, text);
    let at =
        |line: u64, character: u64| json!({ "position": { "line": line, "character": character } });
    let std_file = definition(&doc, &at(0, 10));
    assert!(
        std_file["uri"]
            .as_str()
            .unwrap_or_default()
            .ends_with("std/rubrics/safety.safer"),
        "{std_file}"
    );
    let lib = definition(&doc, &at(1, 6));
    let expected = url::Url::from_file_path(dir.join("lib.safer"))
        .unwrap()
        .to_string();
    assert_eq!(lib["uri"], expected, "{lib}");
    let value = hover(&doc, &at(3, 27)).to_string();
    assert!(
        value.contains("`k3`") && value.contains("low-variance"),
        "{value}"
    );
    // The key itself still hovers with its own text.
    let key = hover(&doc, &at(3, 16)).to_string();
    assert!(key.contains("train.grpo.kl.estimator"), "{key}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// While the text does not parse, a key and an enum value still hover,
/// read from the braces around them.
#[test]
fn keys_and_values_hover_while_the_text_does_not_parse() {
    let text = "judge j {\n  kind = http\n  endpoint = \n}\ntrain t {\n  grpo {\n    kl { estimator = k3 }\n";
    let doc = Document::analyze("untitled:u.safer", text);
    assert!(!doc.diagnostics().is_empty());
    let at = |line: u64, character: u64| {
        hover(
            &doc,
            &json!({ "position": { "line": line, "character": character } }),
        )
        .to_string()
    };
    assert!(at(1, 3).contains("judge.kind"), "{}", at(1, 3));
    assert!(
        at(1, 10).contains("a value of **`judge.kind`**"),
        "{}",
        at(1, 10)
    );
    assert!(at(6, 6).contains("train.grpo.kl"), "{}", at(6, 6));
    assert!(at(6, 23).contains("`k3`"), "{}", at(6, 23));
    // Settings separated by spaces alone, on one line.
    let text = "model p { dtype = f32 arch = tiny_vlm weights = \"ab\" context = 5 ar";
    let doc = Document::analyze("untitled:v.safer", text);
    let at = |character: u64| {
        hover(
            &doc,
            &json!({ "position": { "line": 0, "character": character } }),
        )
        .to_string()
    };
    assert!(at(23).contains("model.arch"), "{}", at(23));
    assert!(at(31).contains("a value of **`model.arch`**"), "{}", at(31));
    assert!(at(40).contains("model.weights"), "{}", at(40));
    assert!(at(55).contains("model.context"), "{}", at(55));
    assert!(at(11).contains("model.dtype"), "{}", at(11));
}

/// A rubric's parameters, a dataset's splits, an import's alias and a
/// criterion named by `cost { criterion }` hover and go to where they are
/// declared; a declaration is found while the text does not parse.
#[test]
fn parameters_splits_aliases_and_stage_criteria_hover_and_go_to_definition() {
    let text = [
        "use \"std/rollouts.safer\" as rollouts",
        "judge rules { kind = rules }",
        "rubric r(judge = rules, threshold: number = 0.6) {",
        "  criterion harm weight 1 { scorer = refusal() }",
        "  total = if harm < threshold { 0 } else { weighted }",
        "}",
        "model m { arch = tiny_vlm, weights = \"w\" }",
        "dataset d {",
        "  source = jsonl(\"d.jsonl\")",
        "  split { train = 0.8, eval = 0.2 }",
        "}",
        "train t {",
        "  policy = m",
        "  data = d.train",
        "  rollout = rollouts.tiny_cpu",
        "  reward = r",
        "  grpo { batch = 2 prompts, cost { criterion = harm, threshold = 0.1 } }",
        "}",
    ]
    .join("\n");
    let doc = Document::analyze("untitled:n.safer", &text);
    assert!(doc.diagnostics().is_empty(), "{:?}", doc.diagnostics());
    let at =
        |line: u64, character: u64| json!({ "position": { "line": line, "character": character } });
    let start = |v: &Value| v["range"]["start"].clone();
    let place = |line: u64, character: u64| json!({ "line": line, "character": character });
    // `threshold` in `total` and in the head; `judge` in the head.
    for (line, character) in [(4, 22), (2, 26)] {
        let shown = hover(&doc, &at(line, character)).to_string();
        assert!(shown.contains("threshold: number = 0.6"), "{shown}");
        assert!(shown.contains("parameter of rubric `r`"), "{shown}");
        assert_eq!(start(&definition(&doc, &at(line, character))), place(2, 24));
    }
    let shown = hover(&doc, &at(2, 10)).to_string();
    assert!(shown.contains("judge = rules"), "{shown}");
    // `d.train`: the split's statement.
    let shown = hover(&doc, &at(13, 12)).to_string();
    assert!(shown.contains("train = 0.8"), "{shown}");
    assert!(shown.contains("split of dataset `d`"), "{shown}");
    assert_eq!(start(&definition(&doc, &at(13, 12))), place(9, 10));
    // `rollouts.tiny_cpu`'s alias and its `use`: the imported file.
    for (line, character) in [(14, 14), (0, 30)] {
        let shown = hover(&doc, &at(line, character)).to_string();
        assert!(
            shown.contains("use \\\"std/rollouts.safer\\\" as rollouts"),
            "{shown}"
        );
        assert!(shown.contains("`rollouts.tiny_cpu` (rollout)"), "{shown}");
        let def = definition(&doc, &at(line, character));
        let uri = def["uri"].as_str().unwrap_or_default();
        assert!(uri.ends_with("std/rollouts.safer"), "{def}");
    }
    // `cost { criterion = harm }`: the stage's rubric's criterion; the
    // block's own `threshold` is its key, not the rubric's parameter.
    let cost_line = text.lines().nth(16).unwrap();
    let harm = cost_line.find("= harm").unwrap() as u64 + 3;
    let shown = hover(&doc, &at(16, harm)).to_string();
    assert!(shown.contains("criterion harm weight 1"), "{shown}");
    assert_eq!(start(&definition(&doc, &at(16, harm))), place(3, 12));
    let key = cost_line.find("threshold").unwrap() as u64 + 2;
    let shown = hover(&doc, &at(16, key)).to_string();
    assert!(shown.contains("train.grpo.cost.threshold"), "{shown}");
    assert_eq!(definition(&doc, &at(16, key)), Value::Null);
    // Completion of `criterion = ` offers the stage rubric's criteria,
    // also while the value is missing and the text does not parse.
    let open = text.replace("criterion = harm", "criterion = ");
    let column = open.lines().nth(16).unwrap().find("criterion = ").unwrap() as u64 + 12;
    let doc = Document::analyze("untitled:n.safer", &open);
    assert_eq!(completion_labels(&doc, 16, column), ["harm"]);
    // While the text does not parse: a declaration whose head begins a line.
    let doc = Document::analyze(
        "untitled:u.safer",
        "rubric r {\n  criterion c weight 1\n}\ntrain t {\n  reward = r\n  grpo {\n",
    );
    assert_eq!(start(&definition(&doc, &at(4, 11))), place(0, 7));
    assert_eq!(definition(&doc, &at(4, 4)), Value::Null);
}

/// The key of a named argument is the called scorer's parameter, not one
/// of the declaration around it that has the same name (`max` here went
/// to the rubric's `max`); a key the scorer lacks shows nothing.
#[test]
fn a_named_argument_s_key_is_the_called_scorer_s_parameter() {
    let text = [
        "scorer short(max: number = 9) = length(max = max)",
        "rubric r(max: number = 50) {",
        "  criterion brief weight 1 { scorer = length(max = max) }",
        "  criterion other weight 1 { scorer = short(max = 3) }",
        "}",
    ]
    .join("\n");
    let doc = Document::analyze("untitled:a.safer", &text);
    let at =
        |line: u64, character: u64| json!({ "position": { "line": line, "character": character } });
    let line = text.lines().nth(2).unwrap();
    let key = line.find("max =").unwrap() as u64 + 1;
    let shown = hover(&doc, &at(2, key)).to_string();
    assert!(shown.contains("max: number = 4096"), "{shown}");
    assert!(shown.contains("parameter of scorer `length`"), "{shown}");
    let def = definition(&doc, &at(2, key));
    assert!(
        def["uri"]
            .as_str()
            .unwrap_or_default()
            .ends_with("std.safer"),
        "{def}"
    );
    // The value `max` is the rubric's parameter.
    let value = line.find("= max").unwrap() as u64 + 3;
    let shown = hover(&doc, &at(2, value)).to_string();
    assert!(shown.contains("parameter of rubric `r`"), "{shown}");
    // A scorer of this file: its own parameter, and its declaration.
    let line = text.lines().nth(3).unwrap();
    let key = line.find("max =").unwrap() as u64 + 1;
    let shown = hover(&doc, &at(3, key)).to_string();
    assert!(shown.contains("max: number = 9"), "{shown}");
    assert!(shown.contains("parameter of scorer `short`"), "{shown}");
    assert_eq!(
        definition(&doc, &at(3, key))["range"]["start"],
        json!({ "line": 0, "character": 7 })
    );
    // A key the scorer does not have: nothing.
    let doc = Document::analyze(
        "untitled:b.safer",
        &text.replace("short(max = 3)", "short(most = 3)"),
    );
    let key = text.lines().nth(3).unwrap().find("max =").unwrap() as u64 + 1;
    assert_eq!(hover(&doc, &at(3, key)), Value::Null);
}

/// Words in strings and comments are prose: no hover, no definition, no
/// completion there (a declaration's name in a prompt's text went to the
/// declaration, and a key accepted in a string was written into it).
#[test]
fn strings_and_comments_are_prose() {
    let text = "model policy { arch = tiny_vlm, weights = \"policy\" }\nprompt q = \"the policy\"\nprompt t = \"\"\"\nask policy\n\"\"\"\n# policy\nrollout r {\n  max_tokens = 8 tokens # te\n  temperature = 1.0\n}\n";
    let doc = Document::analyze("untitled:p.safer", text);
    let at =
        |line: u64, character: u64| json!({ "position": { "line": line, "character": character } });
    for (line, character) in [(0, 45), (1, 17), (3, 6), (5, 4)] {
        assert_eq!(
            hover(&doc, &at(line, character)),
            Value::Null,
            "{line}:{character}"
        );
        assert_eq!(
            definition(&doc, &at(line, character)),
            Value::Null,
            "{line}:{character}"
        );
    }
    // The name itself still is one.
    assert_ne!(definition(&doc, &at(0, 8)), Value::Null);
    for (line, character) in [(0, 44), (1, 14), (3, 2), (7, 28)] {
        assert!(
            completion_labels(&doc, line, character).is_empty(),
            "{line}:{character}"
        );
    }
    assert!(completion_labels(&doc, 8, 2)
        .iter()
        .any(|l| l == "temperature"));
    // Not yet closed: the string runs to the end of its line.
    let typing = Document::analyze("untitled:p.safer", "model m { weights = \"mo\n");
    assert!(completion_labels(&typing, 0, 23).is_empty());
    assert!(super::in_prose("a = \"x\\\"y\" b", 8));
    assert!(!super::in_prose("a = \"x\\\"y\" b", 11));
    // A `\` at a line's end does not carry the string onto the next line.
    assert!(!super::in_prose("a = \"x\\\nb", 9));
}

/// A key accepted over a word replaces the word, and where the setting's
/// `=` already follows, only the name is written (it gave `temperature =
/// = 0.7`).
#[test]
fn a_key_completed_before_its_value_keeps_one_equals_sign() {
    let doc = Document::analyze("untitled:k.safer", "rollout r {\n  temp = 0.7\n  max\n}\n");
    let item = |line: u64, character: u64, label: &str| {
        let c = completion(
            &doc,
            &json!({ "position": { "line": line, "character": character } }),
        );
        c["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["label"] == label)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let temperature = item(1, 4, "temperature");
    assert_eq!(
        temperature["textEdit"]["newText"], "temperature",
        "{temperature}"
    );
    assert_eq!(
        temperature["textEdit"]["range"],
        json!({ "start": { "line": 1, "character": 2 }, "end": { "line": 1, "character": 6 } })
    );
    let max_tokens = item(2, 5, "max_tokens");
    assert_eq!(
        max_tokens["textEdit"]["newText"], "max_tokens = ",
        "{max_tokens}"
    );
}

/// After `key = ` for a number, a quantity or a range, the key's default is
/// offered as written, with the allowed range; keys without one (or with a
/// name or enum default) offer no number.
#[test]
fn completion_after_equals_offers_a_number_key_s_default() {
    let items = |text: &str, line: u64, character: u64| -> Vec<Value> {
        let doc = Document::analyze("untitled:n.safer", text);
        let c = completion(
            &doc,
            &json!({ "position": { "line": line, "character": character } }),
        );
        c["items"].as_array().cloned().unwrap_or_default()
    };
    let temperature = items("rollout r {\n  temperature = \n}\n", 1, 16);
    assert_eq!(temperature.len(), 1, "{temperature:?}");
    assert_eq!(temperature[0]["label"], "1");
    assert_eq!(temperature[0]["detail"], "default; between 0 and 2");
    let group = items("rollout r {\n  group = \n}\n", 1, 10);
    assert_eq!(group[0]["label"], "8", "{group:?}");
    let max_tokens = items("rollout r {\n  max_tokens = \n}\n", 1, 15);
    assert_eq!(max_tokens, Vec::<Value>::new());
    let kinds = items("judge j {\n  kind = \n}\n", 1, 9);
    assert!(kinds.iter().all(|i| i["detail"] == "value"), "{kinds:?}");
}
