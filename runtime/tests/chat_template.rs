//! Chat templates render exactly as transformers renders them.
//!
//! `runtime/fixtures/models/chat_templates.json` holds conversations and the
//! strings `apply_chat_template(..., tokenize=False)` produced for the
//! Qwen2.5 template (tools, tool calls, tool responses, multi-turn) and the
//! Qwen2-VL template (image parts, `namespace`). Made by `make_fixtures.py`.

#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation
use std::path::PathBuf;

use safer_runtime::text::{ChatRequest, ChatTemplate, TextTokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

fn cases() -> Value {
    let text = std::fs::read_to_string(fixtures().join("chat_templates.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn qwen25_template_through_the_tokenizer_matches_transformers() {
    let tokenizer = TextTokenizer::load(&fixtures().join("tokenizer")).expect("tokenizer");
    let all = cases();
    let cases = all["qwen2.5"]["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let rendered = tokenizer
            .apply_chat_template(
                &case["messages"],
                case.get("tools"),
                case["add_generation_prompt"].as_bool().unwrap_or(false),
            )
            .expect("render");
        assert_eq!(
            rendered,
            case["expected"].as_str().expect("expected"),
            "case {case}"
        );
    }
}

#[test]
fn qwen2_vl_template_matches_transformers() {
    let all = cases();
    let template = ChatTemplate::new(all["qwen2-vl"]["template"].as_str().expect("template"))
        .expect("compile");
    for case in all["qwen2-vl"]["cases"].as_array().expect("cases") {
        let rendered = template
            .render(&ChatRequest {
                messages: &case["messages"],
                tools: None,
                add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
                extra: &[],
            })
            .expect("render");
        assert_eq!(
            rendered,
            case["expected"].as_str().expect("expected"),
            "case {case}"
        );
    }
}

#[test]
fn template_errors_are_reported_not_panicked() {
    let broken = ChatTemplate::new("{% for m in messages %}{{ m.content }");
    assert!(broken.is_err());
    let raising =
        ChatTemplate::new("{{ raise_exception('roles must alternate') }}").expect("compiles");
    let err = raising
        .render(&ChatRequest {
            messages: &Value::Array(vec![]),
            tools: None,
            add_generation_prompt: false,
            extra: &[],
        })
        .expect_err("error");
    assert!(err.to_string().contains("roles must alternate"), "{err}");
}

#[test]
fn tokenizer_without_template_says_so() {
    let dir = std::env::temp_dir().join(format!("saferc-no-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(
        fixtures().join("tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .expect("copy");
    let tokenizer = TextTokenizer::load(&dir).expect("loads without config");
    let err = tokenizer
        .apply_chat_template(&serde_json::json!([]), None, true)
        .expect_err("error");
    assert!(err.to_string().contains("no chat template"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
