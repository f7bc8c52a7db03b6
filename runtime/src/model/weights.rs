//! Reading and writing weights in the Hugging Face safetensors layout.
//!
//! [`WeightReader`] opens a model directory (`model.safetensors`, a sharded
//! `model.safetensors.index.json`, or any `*.safetensors` files), checks each
//! file's header with the `safetensors` crate, and hands out tensors by name
//! with the shape the configuration implies, converting F16/BF16/F64 to f32.
//! [`WeightWriter`] collects named tensors and writes one file atomically
//! (temporary file, fsync, rename), so a crash never leaves a half-written
//! checkpoint: in f32, or in the BF16 or F16 a model declares for its
//! trained copy ([`SaveDtype`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorView};

use super::config::ModelConfig;
use super::error::{io_error, ModelError};
use super::expected::expected_tensors;

/// One weight file held in memory with its parsed header.
struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
    header_len: usize,
    metadata: Metadata,
}

/// The weights of one model directory, by tensor name.
pub struct WeightReader {
    dir: PathBuf,
    files: Vec<WeightFile>,
    /// Loading name ([`loading_name`]) → index into `files` and the name
    /// the file stores the tensor under.
    index: HashMap<String, (usize, String)>,
    /// Whether the files use transformers 5's layout ([`RENAMED_PREFIXES`]).
    renamed: bool,
}

/// transformers 5 (and the releases from 4.52 on, in memory) holds
/// Qwen2.5-VL's decoder under `model.language_model.` and its vision tower
/// under `model.visual.`, and saves them so; transformers 4 saves, and the
/// Hub's checkpoints hold, `model.` and `visual.`: the names saferc loads
/// by. Each pair is (transformers 5's prefix, the loading prefix).
const RENAMED_PREFIXES: [(&str, &str); 2] = [
    ("model.language_model.", "model."),
    ("model.visual.", "visual."),
];

/// The name a stored tensor is loaded by: its own, or, in transformers 5's
/// layout, the transformers 4 name ([`RENAMED_PREFIXES`]).
fn loading_name(stored: &str) -> String {
    for (renamed, loading) in RENAMED_PREFIXES {
        if let Some(rest) = stored.strip_prefix(renamed) {
            return format!("{loading}{rest}");
        }
    }
    stored.to_string()
}

/// Whether a file holding these tensor names uses transformers 5's layout.
fn is_renamed<'a>(mut stored: impl Iterator<Item = &'a str>) -> bool {
    stored.any(|name| RENAMED_PREFIXES.iter().any(|(p, _)| name.starts_with(p)))
}

/// The name a missing tensor would have in the files' layout, for the
/// message that says it is missing.
fn stored_name(loading: &str, renamed: bool) -> String {
    if renamed {
        for (stored, loading_prefix) in RENAMED_PREFIXES {
            if let Some(rest) = loading.strip_prefix(loading_prefix) {
                return format!("{stored}{rest}");
            }
        }
    }
    loading.to_string()
}

impl WeightReader {
    /// Opens every weight file of `dir` and checks its header.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        Self::from_files(dir, weight_files(dir)?)
    }

    /// Opens one safetensors file.
    pub fn open_file(path: &Path) -> Result<Self, ModelError> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::from_files(&dir, vec![path.to_path_buf()])
    }

    fn from_files(dir: &Path, paths: Vec<PathBuf>) -> Result<Self, ModelError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let bytes = fs::read(&path).map_err(io_error(&path))?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&bytes).map_err(|e| ModelError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            for name in metadata.offset_keys() {
                index.insert(loading_name(&name), (files.len(), name));
            }
            files.push(WeightFile {
                path,
                bytes,
                header_len,
                metadata,
            });
        }
        let renamed = is_renamed(index.values().map(|(_, stored)| stored.as_str()));
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            index,
            renamed,
        })
    }

    /// Whether a tensor of this (loading) name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Refuses a stored `lm_head.weight` that differs from the embeddings
    /// of a model whose `config.json` ties them (`[vocab, hidden]` each):
    /// transformers 5 then keeps the stored head and unties the two, where
    /// loading the head from the embeddings would give other logits without
    /// a word. An equal copy (as some tools save a tied model) is fine.
    ///
    /// # Errors
    /// The two differ, or either cannot be read.
    pub fn check_tied_head(&self, vocab: usize, hidden: usize) -> Result<(), ModelError> {
        if !self.contains("lm_head.weight") {
            return Ok(());
        }
        // The stored bytes first: equal ones (a tied model saved with its
        // head) need no decoding, which for a large vocabulary is gigabytes.
        let same_bytes = match (
            self.raw("lm_head.weight"),
            self.raw("model.embed_tokens.weight"),
        ) {
            (Some(head), Some(embed)) => head == embed,
            _ => false,
        };
        if same_bytes {
            return Ok(());
        }
        let shape = [vocab, hidden];
        let head = self.values("lm_head.weight", &shape)?;
        if head == self.values("model.embed_tokens.weight", &shape)? {
            return Ok(());
        }
        Err(ModelError::Config {
            path: self.dir.join("config.json"),
            reason: format!(
                "`tie_word_embeddings` is true, and the weights also hold `{}`, which differs from the embeddings (transformers 5 keeps such a stored head and unties the two): set `tie_word_embeddings` to false to use it, or remove it from the weights to tie the head to the embeddings",
                stored_name("lm_head.weight", self.renamed)
            ),
        })
    }

    /// The stored dtype, shape and bytes of tensor `name` (a loading name),
    /// when the files hold it within their bounds.
    fn raw(&self, name: &str) -> Option<(String, Vec<usize>, &[u8])> {
        let (i, stored) = self.index.get(name)?;
        let file = self.files.get(*i)?;
        let info = file.metadata.info(stored)?;
        let (start, end) = info.data_offsets;
        let base = 8 + file.header_len;
        let bytes = file.bytes.get(base + start..base + end)?;
        Some((format!("{:?}", info.dtype), info.shape.clone(), bytes))
    }

    /// The tensor `name` as f32 values, checked against `expected` (its
    /// shape) and for NaN and infinities.
    /// `name` is the loading name; errors name the tensor as its file
    /// stores it.
    pub fn values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
        let missing = || ModelError::MissingTensor {
            dir: self.dir.clone(),
            name: stored_name(name, self.renamed),
        };
        let (file, name) = self
            .index
            .get(name)
            .and_then(|(i, stored)| Some((self.files.get(*i)?, stored.as_str())))
            .ok_or_else(missing)?;
        let info = file.metadata.info(name).ok_or_else(missing)?;
        if info.shape != expected {
            return Err(ModelError::WrongShape {
                path: file.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let (start, end) = info.data_offsets;
        let base = 8 + file.header_len;
        let raw = file
            .bytes
            .get(base + start..base + end)
            .ok_or_else(|| ModelError::Corrupt {
                path: file.path.clone(),
                reason: format!("the data of `{name}` lies outside the file"),
            })?;
        let values = decode(raw, info.dtype).ok_or_else(|| ModelError::UnsupportedDtype {
            path: file.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", info.dtype),
        })?;
        match first_non_finite(&values) {
            Some(index) => Err(ModelError::NonFinite {
                path: file.path.clone(),
                name: name.to_string(),
                index,
                value: values[index],
            }),
            None => Ok(values),
        }
    }

    /// The tensor `name` on `device`, checked against `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }
}

/// Checks, without reading the tensors, that every weight file of `dir` is
/// there, has a safetensors header that parses, and is as long as its
/// header says: what a run checks before it starts.
///
/// # Errors
/// A missing, truncated or unreadable weight file, named.
pub fn check_files(dir: &Path) -> Result<(), ModelError> {
    read_headers(dir).map(|_| ())
}

/// Checks, from the weight files' headers alone, that `dir` holds every
/// tensor a model of `config` loads, in the shape `config.json` implies and
/// in a dtype saferc reads ([`check_files`] first): what `saferc run` checks
/// of each model before it makes a run directory.
///
/// Returns the tensors the files hold that a model of `config` does not
/// load (as the files name them, sorted): weights of layers past
/// `num_hidden_layers`, say, which loading leaves out without a word. A
/// stored `lm_head` of a model whose embeddings are tied (equal to them:
/// loading refuses one that differs), and rotary
/// tables (`rotary_emb.inv_freq`, the vision tower's
/// `rotary_pos_emb.inv_freq`), which transformers ignores too, are not
/// listed.
///
/// # Errors
/// The first missing tensor, wrong shape or unreadable dtype, named with its
/// file; or what [`check_files`] finds.
pub fn check_tensors(dir: &Path, config: &ModelConfig) -> Result<Vec<String>, ModelError> {
    let headers = read_headers(dir)?;
    // Loading name → its file, stored name and header entry (of the last
    // file that names it, as loading takes it).
    let mut stored = HashMap::new();
    for (path, metadata) in &headers {
        for (name, info) in metadata.tensors() {
            stored.insert(loading_name(&name), (path, name, info));
        }
    }
    let renamed = is_renamed(stored.values().map(|(_, name, _)| name.as_str()));
    let expected = expected_tensors(config);
    let loaded: std::collections::HashSet<&str> =
        expected.iter().map(|t| t.name.as_str()).collect();
    let mut unused: Vec<String> = stored
        .iter()
        .filter(|(loading, _)| !loaded.contains(loading.as_str()))
        .filter(|(loading, _)| {
            !(loading.as_str() == "lm_head.weight" && config.text.tie_word_embeddings)
        })
        .filter(|(loading, _)| !loading.ends_with(".inv_freq"))
        .map(|(_, (_, name, _))| name.clone())
        .collect();
    unused.sort();
    for tensor in expected {
        let Some((path, name, info)) = stored.get(&tensor.name) else {
            return Err(ModelError::MissingTensor {
                dir: dir.to_path_buf(),
                name: stored_name(&tensor.name, renamed),
            });
        };
        if info.shape != tensor.shape {
            return Err(ModelError::WrongShape {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: tensor.shape,
                found: info.shape.clone(),
            });
        }
        if !readable(info.dtype) {
            return Err(ModelError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: format!("{:?}", info.dtype),
            });
        }
    }
    Ok(unused)
}

/// What to say of the tensors [`check_tensors`] found unused in `dir`:
/// their number and the first few names, and what to check.
pub fn unused_tensors_note(dir: &Path, unused: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut names: Vec<String> = unused
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect();
    if unused.len() > SHOWN {
        names.push(format!("{} more", unused.len() - SHOWN));
    }
    format!(
        "the weights in `{}` hold {} tensor{} that its `config.json` does not use ({}): they are ignored, and a model saferc trains from it leaves them out; check that `config.json` belongs to these weights (`num_hidden_layers` and the other sizes)",
        dir.display(),
        unused.len(),
        if unused.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

/// The dtype a model's weights are saved in: f32, what training computes
/// (checkpoints always, and a trained model by default), or the BF16 or F16
/// a model declares with `dtype` (rounded to the nearest value, ties to
/// even, as torch's `.to()` does; half the size of f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaveDtype {
    /// 32-bit floats: the weights exactly as trained.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl SaveDtype {
    /// The dtype a model declared with `dtype = NAME` (`f32`, `bf16` or
    /// `f16`) is saved in; anything else is f32.
    pub fn declared(name: &str) -> Self {
        match name {
            "bf16" => Self::Bf16,
            "f16" => Self::F16,
            _ => Self::F32,
        }
    }

    /// The safetensors dtype.
    fn stored(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::Bf16 => Dtype::BF16,
            Self::F16 => Dtype::F16,
        }
    }
}

/// Each weight file of `dir` with its parsed header, checked to be as long
/// as the header says.
fn read_headers(dir: &Path) -> Result<Vec<(PathBuf, Metadata)>, ModelError> {
    use std::io::Read;
    let mut headers = Vec::new();
    for path in weight_files(dir)? {
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut file = fs::File::open(&path).map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n)
            .map_err(|_| corrupt("shorter than a safetensors header".into()))?;
        let header_len = u64::from_le_bytes(n);
        if header_len > len.saturating_sub(8) || header_len > 100 << 20 {
            return Err(corrupt(format!(
                "its header claims {header_len} bytes, more than the file holds"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| corrupt(format!("cannot read its header: {e}")))?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| corrupt(format!("its header is not valid JSON: {e}")))?;
        // Each tensor's dtype, shape and offsets, as loading reads them
        // (a header missing a `dtype` loaded no further than here).
        let metadata: Metadata = serde_json::from_value(header)
            .map_err(|e| corrupt(format!("its header does not describe its tensors: {e}")))?;
        let data_end = metadata
            .tensors()
            .values()
            .map(|t| t.data_offsets.1 as u64)
            .max()
            .unwrap_or(0);
        if 8 + header_len + data_end > len {
            return Err(corrupt(format!(
                "truncated: its tensors end at byte {}, the file has {len}",
                8 + header_len + data_end
            )));
        }
        headers.push((path, metadata));
    }
    Ok(headers)
}

/// The safetensors files of a model directory, in a stable order.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let text = fs::read_to_string(&index_path).map_err(io_error(&index_path))?;
        let index = super::error::parse_json(&index_path, &text)?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Config {
                path: index_path.clone(),
                reason: "no `weight_map` object".into(),
            })?;
        let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        return Ok(names.into_iter().map(|n| dir.join(n)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let entries = fs::read_dir(dir).map_err(io_error(dir))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        // PyTorch's pickles (`pytorch_model.bin`, its shards) are named, as
        // the reason the folder has no weights saferc reads.
        let pickled = fs::read_dir(dir)
            .map_err(io_error(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .any(|p| {
                p.extension()
                    .is_some_and(|x| x == "bin" || x == "pt" || x == "pth")
            });
        return Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            file: "model.safetensors",
            hint: if pickled {
                "it holds PyTorch pickles (`.bin`, `.pt`), which saferc does not read: convert them with transformers, `AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`"
            } else {
                "the weights, as saved by `save_pretrained(safe_serialization=True)`"
            },
        });
    }
    Ok(found)
}

/// The index of the first NaN or infinity in `values`: tested a block at a
/// time without a branch per value (every start of a model reads all its
/// weights; 3.8M values take about 1.2 ms this way, 2.2 ms one by one).
fn first_non_finite(values: &[f32]) -> Option<usize> {
    const BLOCK: usize = 256;
    values.chunks(BLOCK).enumerate().find_map(|(b, block)| {
        let any = block.iter().fold(false, |acc, v| acc | !v.is_finite());
        any.then(|| b * BLOCK + block.iter().position(|v| !v.is_finite()).unwrap_or(0))
    })
}

/// Little-endian bytes of `dtype` to f32 values; `None` for dtypes that are not floats.
/// Whether [`decode`] reads tensors stored as `dtype`.
fn readable(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

fn decode(raw: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(values)
}

/// Named f32 tensors to be written as one safetensors file.
#[derive(Default)]
pub struct WeightWriter {
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

impl WeightWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tensor` under `name` (stored as F32).
    pub fn add<B: Backend, const D: usize>(
        &mut self,
        name: impl Into<String>,
        tensor: Tensor<B, D>,
    ) {
        let shape = tensor.dims().to_vec();
        let values: Vec<f32> = tensor
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        self.add_values(name, shape, &values);
    }

    /// Adds raw f32 values with their shape.
    pub fn add_values(&mut self, name: impl Into<String>, shape: Vec<usize>, values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.insert(name.into(), (shape, bytes));
    }

    /// Names and shapes added so far, sorted by name.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|(name, (shape, _))| (name.clone(), shape.clone()))
            .collect()
    }

    /// The names added so far, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Writes the file in f32 atomically: a temporary sibling, fsync, then
    /// rename.
    pub fn write(
        &self,
        path: &Path,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<(), ModelError> {
        self.write_as(path, metadata, SaveDtype::F32).map(|_| ())
    }

    /// Writes the file atomically with its tensors in `dtype`; returns the
    /// names of those kept in f32 because a finite weight would overflow
    /// `dtype` (an F16 weight past 65504).
    pub fn write_as(
        &self,
        path: &Path,
        metadata: Option<HashMap<String, String>>,
        dtype: SaveDtype,
    ) -> Result<Vec<String>, ModelError> {
        // Each tensor's dtype and bytes, in the writer's (name) order.
        let encoded: Vec<_> = self
            .tensors
            .values()
            .map(|(_, bytes)| encode(bytes, dtype.stored()))
            .collect();
        let kept_f32: Vec<String> = self
            .tensors
            .keys()
            .zip(&encoded)
            .filter(|(_, (stored, _))| *stored != dtype.stored())
            .map(|(name, _)| name.clone())
            .collect();
        let views = self
            .tensors
            .iter()
            .zip(&encoded)
            .map(|((name, (shape, _)), (dtype, bytes))| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|view| (name.as_str(), view))
                    .map_err(|e| ModelError::Corrupt {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let buffer =
            safetensors::tensor::serialize(views, metadata).map_err(|e| ModelError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        write_atomically(path, &buffer)?;
        Ok(kept_f32)
    }
}

/// A float's two bytes in a half-width dtype, and whether they are finite.
type HalfEncoder = fn(f32) -> ([u8; 2], bool);

/// Little-endian f32 bytes as `dtype` (F16 or BF16; rounded to the nearest
/// value, ties to even), with the dtype they are in: f32, as they are, for
/// any other dtype or where a finite value would overflow `dtype` (an F16
/// weight past 65504), so that saving never turns a weight into an
/// infinity.
fn encode(f32_bytes: &[u8], dtype: Dtype) -> (Dtype, std::borrow::Cow<'_, [u8]>) {
    let values = || {
        f32_bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    };
    let convert: Option<HalfEncoder> = match dtype {
        Dtype::F16 => Some(|v| {
            let h = half::f16::from_f32(v);
            (h.to_le_bytes(), h.is_finite())
        }),
        Dtype::BF16 => Some(|v| {
            let h = half::bf16::from_f32(v);
            (h.to_le_bytes(), h.is_finite())
        }),
        _ => None,
    };
    let encoded: Option<Vec<[u8; 2]>> = convert.and_then(|convert| {
        values()
            .map(|v| {
                let (bytes, finite) = convert(v);
                (finite || !v.is_finite()).then_some(bytes)
            })
            .collect()
    });
    match encoded {
        Some(pairs) => (dtype, std::borrow::Cow::Owned(pairs.concat())),
        None => (Dtype::F32, std::borrow::Cow::Borrowed(f32_bytes)),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// flushed to the disk ([`crate::durable::replace_file`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    crate::durable::replace_file(path, bytes).map_err(io_error(path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The first bad value is found wherever it lies among the blocks.
    #[test]
    fn the_first_non_finite_value_is_found_in_any_block() {
        let mut values = vec![0.5f32; 1000];
        assert_eq!(first_non_finite(&values), None);
        assert_eq!(first_non_finite(&[]), None);
        for at in [999, 256, 255, 0] {
            values[at] = if at % 2 == 0 { f32::NAN } else { f32::INFINITY };
            assert_eq!(first_non_finite(&values), Some(at));
        }
    }

    /// Saving in BF16 or F16 rounds each f32 to the nearest value (ties to
    /// even) and reads back as that value; a tensor holding a weight past
    /// F16's 65504 stays f32 and is named.
    #[test]
    fn weights_are_written_in_the_dtype_asked_for() {
        let dir = std::env::temp_dir().join(format!("saferc-dtypes-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        // 1 + 2^-8 lies halfway between two BF16 values: ties to even gives 1.
        let values = [1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.1, 65504.0 * 4.0];
        let mut writer = WeightWriter::new();
        writer.add_values("a", vec![2, 2], &values);
        writer.add_values("b", vec![3], &values[..3]);
        let stored = |path: &Path| -> Vec<Dtype> {
            let bytes = fs::read(path).unwrap();
            let file = SafeTensors::deserialize(&bytes).unwrap();
            ["a", "b"].map(|n| file.tensor(n).unwrap().dtype()).to_vec()
        };

        let kept = writer.write_as(&path, None, SaveDtype::Bf16).unwrap();
        assert!(kept.is_empty());
        assert_eq!(stored(&path), [Dtype::BF16, Dtype::BF16]);
        let bf16: Vec<f32> = values
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        assert_eq!(bf16[..2], [1.0, 1.0 + 4.0 / 256.0]);
        let read = WeightReader::open_file(&path).unwrap();
        assert_eq!(read.values("a", &[2, 2]).unwrap(), bf16);

        let kept = writer.write_as(&path, None, SaveDtype::F16).unwrap();
        assert_eq!(kept, ["a"]);
        assert_eq!(stored(&path), [Dtype::F32, Dtype::F16]);
        let read = WeightReader::open_file(&path).unwrap();
        assert_eq!(read.values("a", &[2, 2]).unwrap(), values);
        let f16: Vec<f32> = values[..3]
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        assert_eq!(read.values("b", &[3]).unwrap(), f16);

        writer.write(&path, None).unwrap();
        assert_eq!(stored(&path), [Dtype::F32, Dtype::F32]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
