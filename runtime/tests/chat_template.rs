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
    assert_eq!(
        cases()["qwen2.5"]["cases"].as_array().map(Vec::len),
        Some(4)
    );
    check_qwen25_cases(&tokenizer);
}

#[test]
fn qwen2_vl_template_matches_transformers() {
    let all = cases();
    let template = ChatTemplate::new(all["qwen2-vl"]["template"].as_str().expect("template"))
        .expect("compile");
    assert_renders(&all["qwen2-vl"]["cases"], |case| {
        template.render(&ChatRequest {
            messages: &case["messages"],
            tools: None,
            add_generation_prompt: generation_prompt(case),
            extra: &[],
        })
    });
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

/// A template that is there but unusable is an error naming its file, not
/// a silent fall back to raw prompts.
#[test]
fn an_unusable_template_is_an_error_naming_its_file() {
    let dir = std::env::temp_dir().join(format!("saferc-bad-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(
        fixtures().join("tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .expect("copy");
    // Not UTF-8.
    std::fs::write(dir.join("chat_template.jinja"), b"{{ caf\xe9 }}").expect("write");
    let err = TextTokenizer::load(&dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("chat_template.jinja"), "{err}");
    // A syntax error, named with the file.
    std::fs::write(dir.join("chat_template.jinja"), "{% for %}").expect("write");
    let err = TextTokenizer::load(&dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("chat_template.jinja"), "{err}");
    // A `chat_template` of the wrong type in tokenizer_config.json.
    std::fs::remove_file(dir.join("chat_template.jinja")).expect("remove");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": 123}"#,
    )
    .expect("write");
    let err = TextTokenizer::load(&dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("chat_template"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Each of `cases` rendered by `render` equals the string transformers
/// rendered (`expected`).
fn assert_renders<E: std::fmt::Debug>(cases: &Value, render: impl Fn(&Value) -> Result<String, E>) {
    for case in cases.as_array().expect("cases") {
        let rendered = render(case).expect("render");
        assert_eq!(
            rendered,
            case["expected"].as_str().expect("expected"),
            "case {case}"
        );
    }
}

fn generation_prompt(case: &Value) -> bool {
    case["add_generation_prompt"].as_bool().unwrap_or(false)
}

/// The Qwen2.5 cases rendered through `tokenizer`.
fn check_qwen25_cases(tokenizer: &TextTokenizer) {
    assert_renders(&cases()["qwen2.5"]["cases"], |case| {
        tokenizer.apply_chat_template(
            &case["messages"],
            case.get("tools"),
            generation_prompt(case),
        )
    });
}

/// Older model directories keep the template in `tokenizer_config.json`
/// (`chat_template`: a string, or a list of named templates of which
/// `default` is used) instead of `chat_template.jinja`; it renders the same.
#[test]
fn a_template_in_tokenizer_config_json_renders_as_transformers_renders_it() {
    let source = fixtures().join("tokenizer");
    let template = std::fs::read_to_string(source.join("chat_template.jinja")).expect("template");
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(source.join("tokenizer_config.json")).expect("config"),
    )
    .expect("json");
    let forms = [
        Value::String(template.clone()),
        serde_json::json!([
            {"name": "tool_use", "template": "{{ 'not this one' }}"},
            {"name": "default", "template": template},
        ]),
    ];
    for (i, form) in forms.into_iter().enumerate() {
        let dir = std::env::temp_dir().join(format!("saferc-template-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::copy(source.join("tokenizer.json"), dir.join("tokenizer.json")).expect("copy");
        let mut config = config.clone();
        config["chat_template"] = form;
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write");
        assert!(!dir.join("chat_template.jinja").exists());
        let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
        assert!(tokenizer.has_chat_template());
        check_qwen25_cases(&tokenizer);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}

/// Qwen2-VL and Qwen2.5-VL checkpoints ship the processor's template as
/// `chat_template.json` (`{"chat_template": "..."}`); it is read before
/// `tokenizer_config.json`'s, and an unusable one names its file.
#[test]
fn a_processor_s_chat_template_json_is_read() {
    let source = fixtures().join("tokenizer");
    let template = std::fs::read_to_string(source.join("chat_template.jinja")).expect("template");
    let dir = std::env::temp_dir().join(format!("saferc-template-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(source.join("tokenizer.json"), dir.join("tokenizer.json")).expect("copy");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(source.join("tokenizer_config.json")).expect("config"),
    )
    .expect("json");
    config["chat_template"] = Value::String("{{ 'not this one' }}".into());
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write");
    let processor = serde_json::json!({ "chat_template": template });
    std::fs::write(dir.join("chat_template.json"), processor.to_string()).expect("write");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    check_qwen25_cases(&tokenizer);
    std::fs::write(dir.join("chat_template.json"), r#"{"chat_template": 3}"#).expect("write");
    let err = TextTokenizer::load(&dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("chat_template.json"), "{err}");
    // One without a `chat_template` key holds no template: the tokenizer's
    // is read, as transformers reads it.
    config["chat_template"] = Value::String(template);
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write");
    std::fs::write(dir.join("chat_template.json"), r#"{"other": 1}"#).expect("write");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    check_qwen25_cases(&tokenizer);
    // Nor does one whose `chat_template` is null.
    std::fs::write(dir.join("chat_template.json"), r#"{"chat_template": null}"#).expect("write");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    check_qwen25_cases(&tokenizer);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A special token written out in a user's text is found, so that a prompt
/// or a training target holding `<|im_end|>` is refused instead of read as
/// that control token; ordinary text and look-alikes are not.
#[test]
fn special_tokens_in_text_are_found() {
    let tokenizer = TextTokenizer::load(&fixtures().join("tokenizer")).expect("tokenizer");
    assert_eq!(
        tokenizer.special_token_in("hi <|im_end|>"),
        Some("<|im_end|>")
    );
    assert_eq!(
        tokenizer.special_token_in("<|image_pad|>"),
        Some("<|image_pad|>")
    );
    assert_eq!(tokenizer.special_token_in("a < b and |x| > c"), None);
    assert_eq!(tokenizer.special_token_in("<|im_end"), None);
}

/// A copy of the fixture tokenizer with `tokenizer_config.json`'s
/// `chat_template` set to `template` (no `chat_template.jinja`).
fn tokenizer_with_template(tag: &str, template: Value) -> Result<TextTokenizer, String> {
    let source = fixtures().join("tokenizer");
    let dir = std::env::temp_dir().join(format!("saferc-template-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(source.join("tokenizer.json"), dir.join("tokenizer.json")).expect("copy");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(source.join("tokenizer_config.json")).expect("config"),
    )
    .expect("json");
    config["chat_template"] = template;
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write");
    TextTokenizer::load(&dir).map_err(|e| e.to_string())
}

/// A list of templates without one named `default` is refused, as
/// transformers refuses it (the first one was taken, silently).
#[test]
fn a_template_list_without_a_default_is_refused() {
    let err = tokenizer_with_template(
        "no-default",
        serde_json::json!([
            {"name": "tool_use", "template": "TOOLS {{ messages[0].content }}"},
            {"name": "rag", "template": "RAG"},
        ]),
    )
    .expect_err("refused");
    assert!(
        err.contains("tokenizer_config.json")
            && err.contains("(`tool_use`, `rag`) without one named `default`"),
        "{err}"
    );
}

/// Failures while a template renders name its file, as its syntax errors
/// do; a template that renders nothing says so (the model was asked an
/// empty prompt).
#[test]
fn render_failures_and_empty_renders_name_the_template_s_file() {
    let messages = serde_json::json!([{"role": "system", "content": "be brief"}]);
    let raising = tokenizer_with_template(
        "raising",
        Value::String("{{ raise_exception('System role not supported') }}".into()),
    )
    .expect("loads");
    let err = raising
        .apply_chat_template(&messages, None, true)
        .expect_err("raises")
        .to_string();
    assert!(
        err.contains("tokenizer_config.json`: chat template: ")
            && err.contains("System role not supported"),
        "{err}"
    );
    let empty =
        tokenizer_with_template("empty", Value::String("{# nothing #}".into())).expect("loads");
    let err = empty
        .apply_chat_template(&messages, None, true)
        .expect_err("empty")
        .to_string();
    assert!(
        err.contains("tokenizer_config.json`")
            && err.contains("renders the conversation as empty text"),
        "{err}"
    );
}

/// transformers' `{% generation %}` block (for assistant masks) renders its
/// body unchanged, whitespace control included: the same text as the
/// template without the tags.
#[test]
fn a_generation_block_renders_its_body() {
    let with = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
                {% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}\
                {% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}\
                {%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let without = with
        .replace("{% generation %}", "")
        .replace("{% endgeneration %}", "");
    let messages = serde_json::json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]);
    let render = |source: &str| {
        ChatTemplate::new(source)
            .expect("compiles")
            .render(&ChatRequest {
                messages: &messages,
                tools: None,
                add_generation_prompt: true,
                extra: &[],
            })
            .expect("renders")
    };
    // transformers 5.25 (`_compile_jinja_template(...).render(...)`) gives
    // these same strings.
    assert_eq!(render(with), render(&without));
    assert_eq!(
        render(with),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n\
         <|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n"
    );
    let trimmed = "{%- for m in messages %}{%- generation -%}\n  {{ m.content }}\n{%- endgeneration -%}{% endfor %}";
    assert_eq!(render(trimmed), "hihellobye");
}
