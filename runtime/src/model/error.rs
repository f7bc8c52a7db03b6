//! Errors of the model core: every one names the file (and the tensor) it is about.

use std::fmt;
use std::path::PathBuf;

/// What went wrong while loading, saving or running a model, a tokenizer or an image.
///
/// Fields: `path` is the file concerned, `dir` the model directory, `name`
/// the tensor, `reason` the explanation shown to the user.
#[allow(missing_docs)] // the fields are described above, once for all variants
#[derive(Debug)]
pub enum ModelError {
    /// A file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file the model directory must contain is absent.
    MissingFile {
        dir: PathBuf,
        file: &'static str,
        hint: &'static str,
    },
    /// `config.json` (or another JSON file) does not parse or lacks a field.
    Config { path: PathBuf, reason: String },
    /// `config.json` names an architecture saferc does not implement.
    UnknownArchitecture { path: PathBuf, found: String },
    /// A safetensors file is corrupt or truncated.
    Corrupt { path: PathBuf, reason: String },
    /// A tensor the architecture needs is not in any weight file.
    MissingTensor { dir: PathBuf, name: String },
    /// A tensor has a different shape than the configuration implies.
    WrongShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype saferc cannot convert to f32.
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// A tensor holds NaN or an infinity (a diverged run's weights saved,
    /// a file damaged): every output of the model would be NaN.
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
    /// `tokenizer.json` or the chat template is unusable.
    Tokenizer { path: PathBuf, reason: String },
    /// The chat template failed to render.
    Template { reason: String },
    /// An image could not be read or decoded.
    Image { path: PathBuf, reason: String },
    /// A request the model cannot serve (too long, no images for a text model, ...).
    Request { reason: String },
    /// The model path is not a folder (missing, or a file).
    NotAFolder { reason: String },
    /// Text that cannot go into a prompt as it is (it holds the image
    /// placeholder token): a property of that text, not of the model.
    PromptText { reason: String },
    /// The requested device is not compiled into this build or not present.
    Device { reason: String },
    /// The logits the model gave for a next token are all NaN (or
    /// infinite): no token can be sampled, and every score of its
    /// completions would be made up. `model` describes the model, where
    /// the caller knows it ([`ModelError::of_model`]).
    NonFiniteLogits { model: Option<String> },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "cannot access `{}`: {source}", path.display()),
            Self::MissingFile { dir, file, hint } => {
                write!(f, "model directory `{}` has no `{file}` ({hint})", dir.display())
            }
            Self::Config { path, reason } => write!(f, "`{}`: {reason}", path.display()),
            Self::UnknownArchitecture { path, found } => write!(
                f,
                "`{}`: unknown architecture `{found}`; saferc runs `qwen2` (Qwen2, Qwen2.5 text), `qwen2_5_vl` (Qwen2.5-VL) and `tiny_vlm`",
                path.display()
            ),
            Self::Corrupt { path, reason } => {
                write!(f, "`{}` is not a valid safetensors file: {reason}", path.display())
            }
            Self::MissingTensor { dir, name } => {
                write!(f, "tensor `{name}` is missing from the weights in `{}`", dir.display())
            }
            Self::WrongShape { path, name, expected, found } => write!(
                f,
                "tensor `{name}` in `{}` has shape {found:?}, but config.json implies {expected:?}",
                path.display()
            ),
            Self::UnsupportedDtype { path, name, dtype } => write!(
                f,
                "tensor `{name}` in `{}` is stored as {dtype}; saferc reads F32, F16, BF16 and F64",
                path.display()
            ),
            Self::NonFinite { path, name, index, value } => write!(
                f,
                "tensor `{name}` in `{}` holds {value} (at index {index}): the weights are damaged or come from a run that diverged, and every output would be NaN; load the last good checkpoint instead",
                path.display()
            ),
            Self::Tokenizer { path, reason } => write!(f, "`{}`: {reason}", path.display()),
            Self::Template { reason } => write!(f, "chat template: {reason}"),
            Self::Image { path, reason } => write!(f, "image `{}`: {reason}", path.display()),
            Self::Request { reason } | Self::PromptText { reason } | Self::NotAFolder { reason } => {
                write!(f, "{reason}")
            }
            Self::Device { reason } => write!(f, "{reason}"),
            Self::NonFiniteLogits { model } => write!(
                f,
                "{}: its logits are NaN or infinite, so no token can be sampled: its weights hold values so large that the arithmetic overflows (as a run that diverged leaves them), a setting of its config.json breaks the arithmetic, or the temperature is too small",
                model.as_deref().unwrap_or("the model")
            ),
        }
    }
}

impl ModelError {
    /// This error, said of `model` (`the model in `DIR``) where it names
    /// no model yet.
    pub fn of_model(self, model: impl FnOnce() -> String) -> Self {
        match self {
            Self::NonFiniteLogits { model: None } => Self::NonFiniteLogits {
                model: Some(model()),
            },
            e => e,
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The JSON in `text`, read from `path` (a model folder's `config.json`,
/// `tokenizer_config.json`, ...); a file that does not parse is a
/// [`ModelError::Config`] naming it, and one saved with a byte-order mark,
/// which JSON does not allow (Python's `json` refuses it too), says so.
pub(crate) fn parse_json(
    path: &std::path::Path,
    text: &str,
) -> Result<serde_json::Value, ModelError> {
    if text.starts_with('\u{feff}') {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            reason: "starts with a byte-order mark (U+FEFF), which JSON does not allow; save it as UTF-8 without one".into(),
        });
    }
    serde_json::from_str(text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })
}

/// Shorthand for a [`ModelError::Io`] on `path`.
pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |source| ModelError::Io { path, source }
}
