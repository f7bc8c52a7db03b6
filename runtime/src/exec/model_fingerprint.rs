//! What a run records of each declared model's folder, so that a resumed
//! run says when one changed: a stage resumed from its checkpoint still
//! reads the folder for its reference model, its tokenizer and its chat
//! template, and a stage not yet started loads it whole, so a folder
//! replaced between the interruption and the resume changes what the run
//! trains without a word.
//!
//! A fingerprint is the SHA-256 over the folder's files (those of the
//! tokenizer's folder too, when it is another), sorted by name: the
//! content of each file up to [`CONTENT_LIMIT`] (`config.json`, the
//! tokenizer, the chat template, ...), and the size and modification time
//! of larger ones (the weights), which a model of billions of parameters
//! would take most of a minute to read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use safer_ir::plan::Plan;
use sha2::{Digest, Sha256};

/// Files up to this size are fingerprinted by their content.
pub const CONTENT_LIMIT: u64 = 16 << 20;

/// The fingerprint of each declared model whose folder can be read.
pub fn fingerprints(plan: &Plan) -> BTreeMap<String, String> {
    plan.models
        .iter()
        .filter_map(|(name, spec)| {
            let weights = PathBuf::from(&spec.weights);
            let mut dirs = vec![weights.clone()];
            if let Some(dir) = spec
                .tokenizer
                .as_deref()
                .map(super::session::tokenizer_folder)
            {
                if dir != weights {
                    dirs.push(dir);
                }
            }
            Some((name.clone(), fingerprint(&dirs)?))
        })
        .collect()
}

/// The fingerprint of the files of `dirs` (`None` when one cannot be listed).
fn fingerprint(dirs: &[PathBuf]) -> Option<String> {
    let mut hasher = Sha256::new();
    for dir in dirs {
        let mut files: Vec<(String, std::fs::Metadata, PathBuf)> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                let meta = std::fs::metadata(&path).ok()?;
                meta.is_file()
                    .then(|| (entry.file_name().to_string_lossy().into_owned(), meta, path))
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, meta, path) in files {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            if meta.len() <= CONTENT_LIMIT {
                hasher.update(super::checkpoint::sha256_of(&path).ok()?.as_bytes());
            } else {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                hasher.update(format!("size {} modified {modified}", meta.len()).as_bytes());
            }
            hasher.update([0]);
        }
    }
    Some(format!(
        "sha256:{}",
        super::checkpoint::hex(&hasher.finalize())
    ))
}

/// The models whose folder's fingerprint differs from the one `recorded`
/// (a run's manifest's `models`), in name order.
pub fn changed(plan: &Plan, recorded: &serde_json::Value) -> Vec<String> {
    let now = fingerprints(plan);
    let Some(then) = recorded.as_object() else {
        return Vec::new();
    };
    then.iter()
        .filter(|(name, hash)| {
            now.get(name.as_str())
                .is_some_and(|h| Some(h.as_str()) != hash.as_str())
        })
        .map(|(name, _)| name.clone())
        .collect()
}
