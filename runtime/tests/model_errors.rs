//! A broken model directory gives an error naming the file (and tensor),
//! never a panic.

#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation
use std::path::{Path, PathBuf};

use safer_runtime::model::weights::{WeightReader, WeightWriter};
use safer_runtime::model::Model;
use safer_runtime::text::TextTokenizer;
use safer_runtime::CpuBackend;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2-untied-mqa")
}

/// A copy of the fixture model in a fresh temporary directory.
fn copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saferc-broken-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture().join(file), dir.join(file)).expect("copy");
    }
    dir
}

fn load_error(dir: &Path) -> String {
    let err = Model::<CpuBackend>::load(dir, &Default::default()).expect_err("must fail");
    let text = err.to_string();
    let _ = std::fs::remove_dir_all(dir);
    text
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(&path, v.to_string()).expect("write");
}

#[test]
fn missing_config() {
    let dir = copy("no-config");
    std::fs::remove_file(dir.join("config.json")).expect("rm");
    let err = load_error(&dir);
    assert!(err.contains("has no `config.json`"), "{err}");
    // A file, or a folder that is not there, is said to be so.
    let file = copy("config-file").join("config.json");
    let err = Model::<CpuBackend>::load(&file, &Default::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("is a file; a model is the folder"), "{err}");
    let err = Model::<CpuBackend>::load(&file.with_file_name("nowhere"), &Default::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn missing_weights() {
    let dir = copy("no-weights");
    std::fs::remove_file(dir.join("model.safetensors")).expect("rm");
    let err = load_error(&dir);
    assert!(err.contains("has no `model.safetensors`"), "{err}");
    // A folder of PyTorch pickles says so, and how to convert them.
    let dir = copy("pickled");
    std::fs::rename(dir.join("model.safetensors"), dir.join("pytorch_model.bin")).expect("mv");
    let err = load_error(&dir);
    assert!(
        err.contains("has no `model.safetensors` (it holds PyTorch pickles")
            && err.contains("safe_serialization=True"),
        "{err}"
    );
}

#[test]
fn unknown_architecture() {
    let dir = copy("arch");
    edit_config(&dir, |v| v["model_type"] = "mamba".into());
    let err = load_error(&dir);
    assert!(
        err.contains("config.json") && err.contains("unknown architecture `mamba`"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_file_and_tensor() {
    let dir = copy("shape");
    edit_config(&dir, |v| v["intermediate_size"] = 100.into());
    let err = load_error(&dir);
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight"), "{err}");
    assert!(
        err.contains("model.safetensors") && err.contains("[96, 48]") && err.contains("[100, 48]"),
        "{err}"
    );
}

#[test]
fn corrupt_and_truncated_files() {
    let dir = copy("corrupt");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = load_error(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );

    let dir = copy("junk");
    std::fs::write(
        dir.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xffjunk",
    )
    .expect("write");
    let err = load_error(&dir);
    assert!(err.contains("not a valid safetensors file"), "{err}");
}

/// Weights holding NaN or an infinity (a diverged run's, a damaged file)
/// are refused when they load, naming the file and the tensor, where every
/// output would otherwise be NaN.
#[test]
fn non_finite_weights_name_file_and_tensor() {
    for (tag, value) in [("nan", f32::NAN), ("inf", f32::NEG_INFINITY)] {
        let dir = copy(tag);
        let path = dir.join("model.safetensors");
        let mut bytes = std::fs::read(&path).expect("read");
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header: serde_json::Value =
            serde_json::from_slice(&bytes[8..8 + header_len]).expect("header");
        let start = header["model.norm.weight"]["data_offsets"][0]
            .as_u64()
            .expect("offsets") as usize;
        let at = 8 + header_len + start + 4 * 3;
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        std::fs::write(&path, bytes).expect("write");
        let err = load_error(&dir);
        assert!(
            err.contains("tensor `model.norm.weight`")
                && err.contains("model.safetensors")
                && err.contains(&format!("holds {value} (at index 3)")),
            "{err}"
        );
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy("missing-tensor");
    let path = dir.join("model.safetensors");
    let reader = WeightReader::open_file(&path).expect("open");
    let mut writer = WeightWriter::new();
    for name in ["model.embed_tokens.weight", "model.norm.weight"] {
        let shape = if name.contains("embed") {
            vec![512, 48]
        } else {
            vec![48]
        };
        writer.add_values(
            name,
            shape.clone(),
            &reader.values(name, &shape).expect("values"),
        );
    }
    writer.write(&path, None).expect("write");
    let err = load_error(&dir);
    assert!(
        err.contains("tensor `model.layers.0.self_attn.q_proj.weight` is missing"),
        "{err}"
    );
}

/// A field that is there but of the wrong type or sign is an error naming
/// it, never silently its default.
#[test]
fn config_fields_of_the_wrong_type_are_errors() {
    for (field, value, wanted) in [
        (
            "rope_theta",
            serde_json::json!("abc"),
            "`rope_theta` is \"abc\", not a positive number",
        ),
        (
            "hidden_size",
            serde_json::json!(-128),
            "`hidden_size` is -128, not a positive integer",
        ),
        (
            "rms_norm_eps",
            serde_json::json!(0.0),
            "`rms_norm_eps` is 0.0, not a positive number",
        ),
        (
            "max_position_embeddings",
            serde_json::json!(0),
            "`max_position_embeddings` is 0",
        ),
        (
            "tie_word_embeddings",
            serde_json::json!("yes"),
            "`tie_word_embeddings` is \"yes\"",
        ),
    ] {
        let dir = copy(&format!("type-{field}"));
        edit_config(&dir, |v| v[field] = value);
        let err = load_error(&dir);
        assert!(
            err.contains("config.json") && err.contains(wanted),
            "{field}: {err}"
        );
    }
}

#[test]
fn invalid_sizes_and_json() {
    let dir = copy("heads");
    edit_config(&dir, |v| v["num_key_value_heads"] = 4.into());
    let err = load_error(&dir);
    assert!(err.contains("multiple of `num_key_value_heads`"), "{err}");

    let dir = copy("notjson");
    std::fs::write(dir.join("config.json"), "{ nope").expect("write");
    let err = load_error(&dir);
    assert!(
        err.contains("config.json") && err.contains("not JSON"),
        "{err}"
    );

    // Saved with a byte-order mark (as some Windows editors save): said so,
    // not "expected value at line 1 column 1".
    let dir = copy("bom");
    let text = std::fs::read_to_string(dir.join("config.json")).expect("read");
    std::fs::write(dir.join("config.json"), format!("\u{feff}{text}")).expect("write");
    let err = load_error(&dir);
    assert!(
        err.contains("config.json`: starts with a byte-order mark"),
        "{err}"
    );
}

#[test]
fn missing_or_broken_tokenizer() {
    let dir = copy("tokenizer");
    std::fs::remove_file(dir.join("tokenizer.json")).expect("rm");
    let err = TextTokenizer::load(&dir).expect_err("fails").to_string();
    assert!(err.contains("has no `tokenizer.json`"), "{err}");
    std::fs::write(dir.join("tokenizer.json"), "{}").expect("write");
    let err = TextTokenizer::load(&dir).expect_err("fails").to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `saferc run` checks before it makes a run directory: weight files
/// present and whole, read by their headers alone.
#[test]
fn weight_files_are_checked_by_their_headers() {
    use safer_runtime::model::weights::check_files;
    let dir = copy("check-files");
    check_files(&dir).expect("a whole model passes");
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).expect("read");
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).expect("write");
    let err = check_files(&dir).expect_err("a cut file fails").to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    // A header that is JSON but misses a tensor's `dtype` (same length,
    // so the offsets still fit the file).
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).expect("text");
    let damaged = header.replacen("\"dtype\"", "\"dtipe\"", 1);
    assert_ne!(damaged, header);
    let mut edited = bytes.clone();
    edited[8..8 + header_len].copy_from_slice(damaged.as_bytes());
    std::fs::write(&weights, &edited).expect("write");
    let err = check_files(&dir)
        .expect_err("a header without dtype")
        .to_string();
    assert!(
        err.contains("its header does not describe its tensors") && err.contains("dtype"),
        "{err}"
    );
    std::fs::write(&weights, &bytes[..4]).expect("write");
    let err = check_files(&dir).expect_err("no header").to_string();
    assert!(err.contains("shorter than a safetensors header"), "{err}");
    std::fs::remove_file(&weights).expect("remove");
    assert!(check_files(&dir).is_err(), "no weight file");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each tensor's name and shape in the header of `dir/model.safetensors`, sorted.
fn stored_tensors(dir: &Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).expect("header");
    let mut stored: Vec<(String, Vec<usize>)> = header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let shape = serde_json::from_value(info["shape"].clone()).expect("shape");
            (name, shape)
        })
        .collect();
    stored.sort();
    stored
}

/// The tensors `saferc run` expects of a model before it starts (from its
/// `config.json` alone) are exactly those transformers saved in each
/// fixture, and those saferc saves: the list follows the loaders.
#[test]
fn the_tensors_a_config_implies_are_those_the_models_hold() {
    use safer_runtime::model::expected::expected_tensors;
    use safer_runtime::model::weights::check_tensors;
    use safer_runtime::model::ModelConfig;
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fresh = std::env::temp_dir().join(format!("saferc-fresh-tiny-vlm-{}", std::process::id()));
    let config =
        ModelConfig::read(&manifest.join("../examples/models/tiny-safety")).expect("config");
    Model::<CpuBackend>::init(config, &Default::default())
        .save(&fresh)
        .expect("save");
    let mut dirs: Vec<PathBuf> = ["qwen2-tied", "qwen2-untied-mqa", "qwen2-bf16", "qwen2_5_vl"]
        .iter()
        .map(|name| manifest.join("fixtures/models").join(name))
        .collect();
    dirs.extend([
        manifest.join("../examples/models/tiny-safety"),
        fresh.clone(),
    ]);
    for dir in &dirs {
        let config = ModelConfig::read(dir).expect("config");
        let mut expected: Vec<(String, Vec<usize>)> = expected_tensors(&config)
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        expected.sort();
        assert_eq!(expected, stored_tensors(dir), "{}", dir.display());
        let unused = check_tensors(dir, &config).expect("a whole model passes");
        assert!(unused.is_empty(), "{}: {unused:?}", dir.display());
    }
    let _ = std::fs::remove_dir_all(&fresh);
}

/// What loading a model would find, [`check_tensors`] finds from the
/// headers: a tensor of the wrong shape, a missing one, one stored in a
/// dtype saferc does not read, each named with its file.
#[test]
fn the_tensors_are_checked_by_their_headers_as_loading_checks_them() {
    use safer_runtime::model::weights::check_tensors;
    use safer_runtime::model::ModelConfig;
    let checked = |dir: &Path| {
        let config = ModelConfig::read(dir).expect("config");
        check_tensors(dir, &config)
            .expect_err("must fail")
            .to_string()
    };
    let dir = copy("check-shape");
    edit_config(&dir, |v| v["intermediate_size"] = 100.into());
    let err = checked(&dir);
    assert_eq!(err, load_error(&dir));
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("[100, 48]"),
        "{err}"
    );

    let dir = copy("check-untied");
    edit_config(&dir, |v| v["tie_word_embeddings"] = true.into());
    let config = ModelConfig::read(&dir).expect("config");
    let unused = check_tensors(&dir, &config).expect("an unused lm_head is no error");
    assert!(
        unused.is_empty(),
        "a tied model's lm_head is not listed: {unused:?}"
    );
    // Loading it refuses the stored head, which differs from the
    // embeddings: transformers 5 would use it, untied.
    let err = Model::<CpuBackend>::load(&dir, &Default::default())
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("`tie_word_embeddings` is true, and the weights also hold `lm_head.weight`, which differs from the embeddings"),
        "{err}"
    );
    // A tied model saved with a copy of its embeddings as its head loads.
    let tied = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2-tied");
    let copied = std::env::temp_dir().join(format!("saferc-tied-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copied);
    std::fs::create_dir_all(&copied).expect("dir");
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tied.join(file), copied.join(file)).expect("copy");
    }
    let bytes = std::fs::read(tied.join("model.safetensors")).expect("read");
    let stored = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = stored.tensors();
    let embed = stored
        .tensor("model.embed_tokens.weight")
        .expect("embeddings");
    tensors.push(("lm_head.weight".into(), embed));
    safetensors::serialize_to_file(tensors, None, &copied.join("model.safetensors"))
        .expect("write");
    assert!(Model::<CpuBackend>::load(&copied, &Default::default()).is_ok());
    let _ = std::fs::remove_dir_all(&copied);
    // Weights of a layer `config.json` leaves out load without it: listed.
    edit_config(&dir, |v| v["num_hidden_layers"] = 1.into());
    let config = ModelConfig::read(&dir).expect("config");
    let unused = check_tensors(&dir, &config).expect("a config of fewer layers loads");
    assert!(
        !unused.is_empty()
            && unused
                .iter()
                .all(|n| n.starts_with("model.layers.1.") || n.starts_with("model.layers.2.")),
        "{unused:?}"
    );
    let note = safer_runtime::model::weights::unused_tensors_note(&dir, &unused);
    assert!(
        note.contains(&format!("hold {} tensors", unused.len()))
            && note.contains("`model.layers.1."),
        "{note}"
    );
    edit_config(&dir, |v| v["num_hidden_layers"] = 4.into());
    let err = checked(&dir);
    assert_eq!(err, load_error(&dir));
    assert!(
        err.contains("tensor `model.layers.3.self_attn.q_proj.weight` is missing"),
        "{err}"
    );

    // `I32` is as long as `F32`: the offsets still fit the file.
    let dir = copy("check-dtype");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).expect("text");
    let edited_header = header.replace("\"F32\"", "\"I32\"");
    let mut edited = bytes.clone();
    edited[8..8 + header_len].copy_from_slice(edited_header.as_bytes());
    std::fs::write(&path, &edited).expect("write");
    let err = checked(&dir);
    assert_eq!(err, load_error(&dir));
    assert!(err.contains("is stored as I32"), "{err}");
}

/// A copy of the Qwen2.5-VL fixture (config, weights, processor settings).
fn copy_qwen2_5_vl(tag: &str) -> PathBuf {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2_5_vl");
    let dir = std::env::temp_dir().join(format!("saferc-broken-vl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for file in ["config.json", "model.safetensors", "processor_config.json"] {
        std::fs::copy(from.join(file), dir.join(file)).expect("copy");
    }
    dir
}

#[test]
fn qwen2_5_vl_errors_name_the_file_and_setting() {
    let dir = copy_qwen2_5_vl("no-processor");
    std::fs::remove_file(dir.join("processor_config.json")).expect("rm");
    let err = load_error(&dir);
    assert!(err.contains("preprocessor_config.json"), "{err}");
    // A `processor_config.json` laid out otherwise (flat, as a
    // `preprocessor_config.json` is) is named as the file that lacks it.
    let dir = copy_qwen2_5_vl("flat-processor");
    std::fs::write(dir.join("processor_config.json"), r#"{"min_pixels": 3136}"#).expect("write");
    let err = load_error(&dir);
    assert!(
        err.contains("processor_config.json`: holds no `image_processor` object"),
        "{err}"
    );

    let dir = copy_qwen2_5_vl("sections");
    edit_config(&dir, |v| {
        v["text_config"]["rope_parameters"]["mrope_section"] = serde_json::json!([4, 4, 4]);
    });
    let err = load_error(&dir);
    assert!(
        err.contains("`mrope_section` [4, 4, 4] must sum to half the head width (8)"),
        "{err}"
    );

    let dir = copy_qwen2_5_vl("window");
    edit_config(&dir, |v| {
        v["vision_config"]["window_size"] = serde_json::json!(20)
    });
    let err = load_error(&dir);
    assert!(
        err.contains("`vision_config.window_size` (20) must be at least `spatial_merge_size · patch_size` (28)"),
        "{err}"
    );

    let dir = copy_qwen2_5_vl("min-pixels");
    let processor = dir.join("processor_config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&processor).expect("read")).expect("json");
    value["image_processor"]["size"]["shortest_edge"] = serde_json::json!(0);
    std::fs::write(&processor, value.to_string()).expect("write");
    let err = load_error(&dir);
    assert!(
        err.contains("processor_config.json")
            && err.contains("`min_pixels` (`size.shortest_edge`) must be at least 1"),
        "{err}"
    );

    let dir = copy_qwen2_5_vl("patch");
    edit_config(&dir, |v| {
        v["vision_config"]["patch_size"] = serde_json::json!(16);
        v["vision_config"]["window_size"] = serde_json::json!(64);
    });
    let err = load_error(&dir);
    assert!(
        err.contains("`patch_size` is 14, but the model's `vision_config` says 16"),
        "{err}"
    );

    let dir = copy_qwen2_5_vl("width");
    edit_config(&dir, |v| {
        v["vision_config"]["out_hidden_size"] = serde_json::json!(32)
    });
    let err = load_error(&dir);
    assert!(
        err.contains("`vision_config.out_hidden_size` (32) must equal"),
        "{err}"
    );

    let dir = copy_qwen2_5_vl("shape");
    edit_config(&dir, |v| {
        v["vision_config"]["intermediate_size"] = serde_json::json!(40)
    });
    let err = load_error(&dir);
    assert!(
        err.contains("visual.blocks.0.mlp.gate_proj.weight"),
        "{err}"
    );
}

/// What `check_tokenizer_against_config` says of a copy of the Qwen2.5-VL
/// fixture, tokenizer included, whose `config.json` sets `key` to `id`
/// (empty when it passes).
fn tokenizer_check_with(key: &str, id: u64) -> String {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2_5_vl");
    let dir = copy_qwen2_5_vl(&format!("{key}-{id}"));
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(from.join(file), dir.join(file)).expect("copy");
    }
    edit_config(&dir, |v| v[key] = serde_json::json!(id));
    let model = Model::<CpuBackend>::load(&dir, &Default::default()).expect("model");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    let result = safer_runtime::generate::prompt::check_tokenizer_against_config(
        &tokenizer,
        &model.config,
        &dir,
    );
    let _ = std::fs::remove_dir_all(&dir);
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

/// `image_token_id` must be the tokenizer's `<|image_pad|>` and inside the
/// vocabulary: otherwise placeholders go unfilled or another token gets
/// image features.
#[test]
fn an_image_token_id_the_tokenizer_does_not_share_is_refused() {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2_5_vl");
    let check = |id: u64| tokenizer_check_with("image_token_id", id);
    let pad = TextTokenizer::load(&from)
        .expect("tokenizer")
        .token_id("<|image_pad|>")
        .expect("pad");
    assert_eq!(check(u64::from(pad)), "");
    let err = check(3);
    assert!(
        err.contains("config.json")
            && err.contains(&format!(
                "`image_token_id` is 3, but the tokenizer's `<|image_pad|>` is {pad}"
            )),
        "{err}"
    );
    let err = check(9999);
    assert!(
        err.contains("`image_token_id` 9999 is outside the vocabulary"),
        "{err}"
    );
}

/// A Qwen2.5-VL model's `vision_start_token_id` and `vision_end_token_id`
/// must be its tokenizer's `<|vision_start|>` and `<|vision_end|>`:
/// transformers finds each image after `vision_start_token_id`, so another
/// id would place a trained model's positions otherwise than saferc did
/// (the ids were stored and written back, never checked).
#[test]
fn vision_token_ids_the_tokenizer_does_not_share_are_refused() {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2_5_vl");
    let check = tokenizer_check_with;
    let tokenizer = TextTokenizer::load(&from).expect("tokenizer");
    for (key, text) in [
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ] {
        let id = tokenizer.token_id(text).expect("token");
        assert_eq!(check(key, u64::from(id)), "");
        let err = check(key, 7);
        assert!(
            err.contains("config.json")
                && err.contains(&format!(
                    "`{key}` is 7, but the tokenizer's `{text}` is {id}"
                )),
            "{err}"
        );
    }
}

/// End-of-sequence ids outside the vocabulary, or that are not ids, are
/// refused naming the file that holds them.
#[test]
fn end_of_sequence_ids_outside_the_vocabulary_name_their_file() {
    let check = |tag: &str, file: &str, eos: serde_json::Value| -> String {
        let dir = copy(tag);
        let path = dir.join(file);
        let mut v: serde_json::Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        v["eos_token_id"] = eos;
        std::fs::write(&path, v.to_string()).expect("write");
        let outcome = Model::<CpuBackend>::load(&dir, &Default::default())
            .map_err(|e| e.to_string())
            .and_then(|model| {
                let tokenizer = TextTokenizer::load(&dir).map_err(|e| e.to_string())?;
                safer_runtime::generate::prompt::check_tokenizer_against_config(
                    &tokenizer,
                    &model.config,
                    &dir,
                )
                .map_err(|e| e.to_string())
            });
        let _ = std::fs::remove_dir_all(&dir);
        outcome.err().unwrap_or_default()
    };
    let err = check("eos-config", "config.json", serde_json::json!(99_999));
    assert!(
        err.contains("config.json") && err.contains("`eos_token_id` 99999 is outside"),
        "{err}"
    );
    let err = check(
        "eos-generation",
        "generation_config.json",
        serde_json::json!([1, 99_999]),
    );
    assert!(
        err.contains("generation_config.json") && err.contains("99999"),
        "{err}"
    );
    let err = check("eos-text", "generation_config.json", serde_json::json!("x"));
    assert!(
        err.contains("generation_config.json") && err.contains("not a token id"),
        "{err}"
    );
}
