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
//! tokenizer, the chat template, ...), and of larger ones (the weights,
//! which for a model of billions of parameters would take most of a minute
//! to read) the size and a sample of the content ([`sampled_digest`]): its
//! first and last MiB, which hold a safetensors file's header, and
//! [`SAMPLES`] blocks spread evenly between them. Training changes every
//! weight, so another checkpoint of the same shapes trained further
//! differs in the samples, and a copy of the folder that does not keep
//! file times (`cp` without `-p`, a download) is the same folder (with
//! modification times, each such copy was called changed). A file of the
//! same size changed only in a few tensors (one layer, the output head)
//! may be missed.
//!
//! Fingerprints are written with the scheme's prefix ([`SCHEME`]); one
//! recorded by an earlier scheme (`sha256:`, which counted modification
//! times) is not compared, so a resume of an older run does not call every
//! folder changed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use safer_ir::plan::Plan;
use sha2::{Digest, Sha256};

/// The prefix of this scheme's fingerprints.
const SCHEME: &str = "sampled-sha256:";

/// Files up to this size are fingerprinted by their content.
pub const CONTENT_LIMIT: u64 = 16 << 20;

/// The blocks of a larger file read between its first and last MiB.
const SAMPLES: u64 = 64;

/// The length of each of those blocks.
const SAMPLE_LEN: usize = 64 << 10;

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
                let sampled = sampled_digest(&path, meta.len()).ok()?;
                hasher.update(format!("size {} sampled {sampled}", meta.len()).as_bytes());
            }
            hasher.update([0]);
        }
    }
    Some(format!(
        "{SCHEME}{}",
        super::checkpoint::hex(&hasher.finalize())
    ))
}

/// The SHA-256 of a large file's first and last MiB and of [`SAMPLES`]
/// blocks of [`SAMPLE_LEN`] bytes at even steps between them: about 6 MiB
/// read, whatever the file's size.
fn sampled_digest(path: &std::path::Path, len: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const EDGE: usize = 1 << 20;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut read_at = |offset: u64, size: usize, hasher: &mut Sha256| -> std::io::Result<()> {
        let mut block = vec![0u8; size];
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut block)?;
        hasher.update(&block);
        Ok(())
    };
    let edge = EDGE as u64;
    read_at(0, EDGE, &mut hasher)?;
    let middle = len.saturating_sub(2 * edge);
    let step = middle / SAMPLES;
    if step >= SAMPLE_LEN as u64 {
        for i in 0..SAMPLES {
            read_at(edge + i * step, SAMPLE_LEN, &mut hasher)?;
        }
    }
    read_at(len.saturating_sub(edge), EDGE, &mut hasher)?;
    Ok(super::checkpoint::hex(&hasher.finalize()))
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
            let recorded = hash.as_str().filter(|h| h.starts_with(SCHEME));
            now.get(name.as_str())
                .is_some_and(|h| recorded.is_some_and(|r| r != h))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A large file is the same file after a copy that gives it a new
    /// modification time, and another one where a sampled block or its
    /// size changed; small files count by their whole content.
    #[test]
    fn large_files_count_by_size_and_sampled_content_not_by_time() {
        let dir = std::env::temp_dir().join(format!("saferc-fingerprint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let weights = dir.join("model.safetensors");
        let len = CONTENT_LIMIT as usize + (3 << 20);
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&weights, &bytes).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let dirs = [dir.clone()];
        let first = fingerprint(&dirs).unwrap();

        // Rewritten with the same bytes a second later: a copy without times.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(&weights, &bytes).unwrap();
        assert_eq!(fingerprint(&dirs).unwrap(), first);

        // A byte of a sampled block between the edges.
        let middle = (len as u64 - (2 << 20)) / SAMPLES;
        let mut edited = bytes.clone();
        edited[(1 << 20) + 5 * middle as usize + 7] ^= 1;
        std::fs::write(&weights, &edited).unwrap();
        assert_ne!(fingerprint(&dirs).unwrap(), first);
        // The header's MiB, the last MiB, the size.
        for at in [3, len - 2] {
            let mut edited = bytes.clone();
            edited[at] ^= 1;
            std::fs::write(&weights, &edited).unwrap();
            assert_ne!(fingerprint(&dirs).unwrap(), first, "{at}");
        }
        std::fs::write(&weights, &bytes[..len - 1]).unwrap();
        assert_ne!(fingerprint(&dirs).unwrap(), first);
        // A small file's content anywhere.
        std::fs::write(&weights, &bytes).unwrap();
        std::fs::write(dir.join("config.json"), "{ }").unwrap();
        assert_ne!(fingerprint(&dirs).unwrap(), first);
        // A fingerprint of the earlier scheme is not compared.
        assert!(first.starts_with(SCHEME));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
