//! `saferc init-model` and `saferc generate` through the real binary, on
//! both architectures: a fresh `tiny_vlm` with images, and the Qwen2 parity
//! fixture, whose greedy continuation must equal transformers'.

#![cfg(feature = "runtime")]
#![allow(clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{saferc, temp_dir};
use serde_json::Value;

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "saferc failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/fixtures/models")
        .join(name)
}

fn png(path: &Path) {
    // A 2×2 PNG (red, green, blue, white), written by hand so the test needs no image crate.
    let bytes: [u8; 75] = [
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd,
        0xd4, 0x9a, 0x73, 0x00, 0x00, 0x00, 0x12, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8,
        0xcf, 0xc0, 0xc0, 0x00, 0xc2, 0x0c, 0xff, 0x81, 0x00, 0x00, 0x1f, 0xee, 0x05, 0xfb, 0x0b,
        0xd9, 0x68, 0x8b, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn tiny_vlm_from_init_model_generates_with_images() {
    let dir = temp_dir("tiny");
    let model = dir.join("model");
    let m = model.display().to_string();
    let out = saferc(&["init-model", &m, "--size", "tiny", "--seed", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("parameters"));
    let again = saferc(&["init-model", &m]);
    assert_eq!(again.status.code(), Some(2), "refuses to overwrite a model");

    let image = dir.join("a.png");
    png(&image);
    let img = image.display().to_string();
    let args = [
        "generate",
        "--model",
        &m,
        "--prompt",
        "Is this safe?",
        "--image",
        &img,
        "--image",
        &img,
        "--n",
        "3",
        "--max-tokens",
        "6",
        "--min-tokens",
        "6",
        "--seed",
        "9",
        "--json",
    ];
    let first = json(&saferc(&args));
    let completions = first["completions"]
        .as_array()
        .unwrap_or_else(|| panic!("completions"));
    assert_eq!(completions.len(), 3);
    for c in completions {
        let tokens = c["tokens"].as_array().unwrap_or_else(|| panic!("tokens"));
        assert_eq!(tokens.len(), 6, "--min-tokens 6 with --max-tokens 6");
        assert_eq!(c["logprobs"].as_array().map(Vec::len), Some(6));
        assert!(c["logprobs"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|l| l.as_f64().is_some_and(|l| l <= 0.0)));
        assert!(c["text"].is_string());
    }
    assert_eq!(first["stats"]["architecture"], "tiny_vlm");
    assert_eq!(
        first["completions"],
        json(&saferc(&args))["completions"],
        "same seed, same completions"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qwen2_greedy_matches_transformers_through_the_cli() {
    let dir = fixture("qwen2-tied");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = dir.display().to_string();
    let out = json(&saferc(&[
        "generate",
        "--model",
        &d,
        "--prompt",
        "What does this image show?",
        "--raw",
        "--greedy",
        "--max-tokens",
        "12",
        "--json",
    ]));
    assert_eq!(out["completions"][0]["tokens"], expected["greedy"][0]);
    assert_eq!(out["stats"]["architecture"], "qwen2");
}

#[test]
/// Exit 1 for work that failed (a folder without a model), exit 2 for a
/// request that cannot be carried out (a flag's value out of range, images
/// for a text model, more tokens than the context), as clap's usage errors.
fn bad_requests_are_errors_with_exit_codes() {
    let dir = temp_dir("bad");
    let d = dir.display().to_string();
    let out = saferc(&["generate", "--model", &d, "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no `config.json`"));

    let q = fixture("qwen2-tied").display().to_string();
    let png_path = dir.join("x.png");
    png(&png_path);
    let p = png_path.display().to_string();
    let out = saferc(&["generate", "--model", &q, "--prompt", "hi", "--image", &p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("text only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = saferc(&["generate", "--model", &q, "--prompt", "hi", "--top-p", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("top-p"));

    // A negative number is the flag's value (checked, with the reason), not
    // an unknown argument.
    let out = saferc(&[
        "generate",
        "--model",
        &q,
        "--prompt",
        "hi",
        "--temperature",
        "-1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("temperature must be positive (or 0 for greedy decoding), got -1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `--temperature 0` decodes greedily, as a rollout's `temperature = 0`.
    let text = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            &q,
            "--prompt",
            "hi",
            "--max-tokens",
            "8",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = saferc(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["completions"][0]["tokens"].clone()
    };
    assert_eq!(text(&["--temperature", "0"]), text(&["--greedy"]));
    assert!(text(&["--greedy"])
        .as_array()
        .is_some_and(|t| !t.is_empty()));

    let out = saferc(&[
        "generate", "--model", &q, "--prompt", "hi", "--device", "tpu",
    ]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    // A system message without the template that would render it, and an
    // empty stop string, are usage errors, not silently dropped.
    for extra in [&["--raw", "--system", "be brief"][..], &["--stop", ""][..]] {
        let mut args = vec!["generate", "--model", &q, "--prompt", "hi"];
        args.extend_from_slice(extra);
        let out = saferc(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
    }
    // A GPU backend this build lacks is a refused request too.
    if !cfg!(feature = "cuda") {
        let out = saferc(&[
            "generate", "--model", &q, "--prompt", "hi", "--device", "cuda",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("device `cuda` is not built into this saferc"),
            "{stderr}"
        );
    }

    // Counts near usize::MAX are refused, not overflowed.
    let out = saferc(&[
        "generate",
        "--model",
        &q,
        "--prompt",
        "hi",
        "--n",
        "18446744073709551615",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than one batch"));
    let out = saferc(&[
        "generate",
        "--model",
        &q,
        "--prompt",
        "hi",
        "--max-tokens",
        "18446744073709551615",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeds the model's context"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No tokens asked for is refused, not an empty list of completions.
    let out = saferc(&[
        "generate",
        "--model",
        &q,
        "--prompt",
        "hi",
        "--max-tokens",
        "0",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--max-tokens` must be at least 1"));
    // A folder without a chat template: the prompt is raw text, said so,
    // and a system message it could not render is refused.
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(fixture("qwen2-tied")).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name == "tokenizer_config.json" {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
            let mut config: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            config.as_object_mut().map(|c| c.remove("chat_template"));
            std::fs::write(bare.join(&name), config.to_string()).unwrap_or_else(|e| panic!("{e}"));
        } else if name != "chat_template.jinja" {
            std::fs::copy(&path, bare.join(&name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let b = bare.display().to_string();
    let out = saferc(&[
        "generate",
        "--model",
        &b,
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("has no chat template: the prompt is tokenized as written"),
        "{stderr}"
    );
    let out = saferc(&[
        "generate", "--model", &b, "--prompt", "hi", "--system", "be brief",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`--system` is rendered by the chat template"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `init-model` writes into a folder only when none of its files is there:
/// weights without a `config.json` are not overwritten.
#[test]
fn init_model_never_overwrites_model_files() {
    let dir = temp_dir("init-over");
    let model = dir.join("m");
    std::fs::create_dir_all(&model).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(model.join("model.safetensors"), b"the user's weights")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = saferc(&["init-model", &model.display().to_string(), "--size", "tiny"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("already holds model files (model.safetensors)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap_or_default(),
        b"the user's weights"
    );
    // A sharded model's index and shards left in the folder: refused too
    // (the index would be read instead of the new weights).
    let sharded = dir.join("sharded");
    std::fs::create_dir_all(&sharded).unwrap_or_else(|e| panic!("{e}"));
    for f in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
    ] {
        std::fs::write(sharded.join(f), b"{}").unwrap_or_else(|e| panic!("{e}"));
    }
    let out = saferc(&[
        "init-model",
        &sharded.display().to_string(),
        "--size",
        "tiny",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("(model-00001-of-00002.safetensors, model.safetensors.index.json)"),
        "{stderr}"
    );
    assert!(!sharded.join("config.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model whose weights hold NaN is refused as it loads, naming the file
/// and tensor; one whose finite weights overflow to NaN logits fails when
/// it generates (exit 1 both), instead of printing token 0 with no
/// log-probs.
#[test]
fn a_model_with_nan_weights_is_an_error_not_a_completion() {
    for (tag, value, said) in [
        ("nan", f32::NAN, "holds NaN (at index 0)"),
        ("huge", f32::MAX, "its logits are NaN or infinite"),
    ] {
        let dir = temp_dir(&format!("generate-{tag}"));
        let from = fixture("qwen2-tied");
        for entry in std::fs::read_dir(&from).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(path.file_name().unwrap_or_default()))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        // Every value after the header (all f32 in this fixture) becomes `value`.
        let weights = dir.join("model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap_or_else(|e| panic!("{e}"));
        let header: [u8; 8] = bytes[..8].try_into().unwrap_or_else(|e| panic!("{e}"));
        let start = 8 + u64::from_le_bytes(header) as usize;
        for v in bytes[start..].chunks_exact_mut(4) {
            v.copy_from_slice(&value.to_le_bytes());
        }
        std::fs::write(&weights, bytes).unwrap_or_else(|e| panic!("{e}"));
        let d = dir.display().to_string();
        let out = saferc(&[
            "generate",
            "--model",
            &d,
            "--prompt",
            "Hi",
            "--raw",
            "--greedy",
            "--max-tokens",
            "3",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tag}: {stderr}");
        assert!(stderr.contains(said), "{tag}: {stderr}");
    }
}
