//! The loader reads every layout and float type `save_pretrained` writes:
//! one file or shards under `model.safetensors.index.json`; F32, F16, BF16
//! (the `qwen2-bf16` fixture) and F64. Each is written here from the
//! `qwen2-untied-mqa` fixture and must give the same logits as the weights
//! it holds in f32; a tensor of integers is refused naming file and tensor.

#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation
use std::path::{Path, PathBuf};

use safer_runtime::model::{Layout, Model, ModelInput};
use safer_runtime::CpuBackend;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2-untied-mqa")
}

/// The fixture's tensors: name, shape, f32 values.
fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture().join("model.safetensors")).expect("weights");
    let file = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32);
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A model directory holding the fixture's configuration and tokenizer.
fn model_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saferc-weights-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture().join(file), dir.join(file)).expect("copy");
    }
    dir
}

/// Writes `tensors` to `path`, each value encoded by `encode` as `dtype`.
fn write(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: Dtype,
    encode: fn(f32) -> Vec<u8>,
) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|&x| encode(x)).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                name.clone(),
                TensorView::new(dtype, shape.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write");
}

fn f32_bytes(x: f32) -> Vec<u8> {
    x.to_le_bytes().to_vec()
}

/// The logits of a fixed prompt under the model in `dir`.
fn logits(dir: &Path) -> Vec<f32> {
    let model = Model::<CpuBackend>::load(dir, &Default::default()).expect("load");
    let tokens = vec![1u32, 5, 9, 20, 3, 77];
    let len = tokens.len();
    model
        .forward(
            &ModelInput {
                tokens,
                layout: Layout::dense(1, len, true),
                images: None,
            },
            None,
        )
        .expect("forward")
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32")
}

#[test]
fn sharded_weights_load_as_one_file() {
    let all = tensors();
    let dir = model_dir("sharded");
    let (first, second) = all.split_at(all.len() / 2);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write(&dir.join(names[0]), first, Dtype::F32, f32_bytes);
    write(&dir.join(names[1]), second, Dtype::F32, f32_bytes);
    let weight_map: serde_json::Map<String, serde_json::Value> = first
        .iter()
        .map(|t| (t.0.clone(), names[0].into()))
        .chain(second.iter().map(|t| (t.0.clone(), names[1].into())))
        .collect();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map}).to_string(),
    )
    .expect("index");
    assert_eq!(logits(&dir), logits(&fixture()));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn f64_weights_load_as_their_f32_values() {
    let dir = model_dir("f64");
    write(
        &dir.join("model.safetensors"),
        &tensors(),
        Dtype::F64,
        |x| f64::from(x).to_le_bytes().to_vec(),
    );
    assert_eq!(logits(&dir), logits(&fixture()));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn f16_weights_load_as_the_f32_values_they_round_to() {
    let all = tensors();
    let dir = model_dir("f16");
    write(&dir.join("model.safetensors"), &all, Dtype::F16, |x| {
        half::f16::from_f32(x).to_le_bytes().to_vec()
    });
    // The same rounding, stored as f32.
    let rounded: Vec<_> = all
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
            )
        })
        .collect();
    let reference = model_dir("f16-as-f32");
    write(
        &reference.join("model.safetensors"),
        &rounded,
        Dtype::F32,
        f32_bytes,
    );
    let (ours, want) = (logits(&dir), logits(&reference));
    assert_eq!(ours, want);
    assert_ne!(
        ours,
        logits(&fixture()),
        "f16 rounding changes the logits a little"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
    std::fs::remove_dir_all(&reference).expect("clean up");
}

#[test]
fn integer_weights_are_refused_naming_file_and_tensor() {
    let mut all = tensors();
    let dir = model_dir("i32");
    let victim = all
        .iter()
        .position(|t| t.0.ends_with("input_layernorm.weight"))
        .expect("a norm");
    let (name, shape, values) = all.remove(victim);
    let ints: Vec<u8> = values
        .iter()
        .flat_map(|&x| (x as i32).to_le_bytes())
        .collect();
    let floats: Vec<Vec<u8>> = all
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = all
        .iter()
        .zip(&floats)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    views.push((
        name.clone(),
        TensorView::new(Dtype::I32, shape, &ints).expect("view"),
    ));
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).expect("write");
    let err = Model::<CpuBackend>::load(&dir, &Default::default())
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains(&name) && err.contains("I32"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
