//! Files that survive a crash or a power cut: written to a temporary
//! sibling, flushed to the disk (`fsync`), renamed over their place, and the
//! rename flushed with the folder. A reader finds the old file or the new
//! one, never half of one or one of zero length; after a power cut, what
//! was renamed into place is on the disk.
//!
//! Checkpoints are folders ([`sync_folder`]): their files are flushed, then
//! the folder, before it is renamed into place.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// The temporary sibling [`replace_file`] writes `path` through: hidden,
/// and named after the whole file name (`x.json` and `x.jsonl` differ).
pub fn temporary_for(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` through its temporary sibling
/// ([`temporary_for`]), flushed to the disk before it replaces `path`. A
/// write that fails (a full disk) leaves neither the new file nor the
/// temporary one.
///
/// # Errors
/// The I/O error of the write, flush or rename.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = &temporary_for(path);
    let written = File::create(tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::rename(tmp, path)?;
    sync_parent(path);
    Ok(())
}

/// Flushes every file directly inside folder `dir`, then the folder itself
/// (its entries), so that renaming it afterwards publishes only what is on
/// the disk.
///
/// # Errors
/// The I/O error of a file's flush.
pub fn sync_folder(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Flushes the folder holding `path` (a rename or new entry in it).
pub fn sync_parent(path: &Path) {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Flushes folder `dir`'s entries. Best effort: some file systems refuse to
/// flush a folder (`EINVAL`), and their renames are as durable as they get.
fn sync_dir(dir: &Path) {
    if let Ok(folder) = File::open(dir) {
        let _ = folder.sync_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{replace_file, sync_folder, temporary_for};

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_no_temporary_stays() {
        let dir = std::env::temp_dir().join(format!("saferc-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.json");
        replace_file(&path, b"old").unwrap();
        replace_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temporary_for(&path).exists());
        assert_ne!(temporary_for(&path), temporary_for(&dir.join("a.jsonl")));
        // A file whose folder is gone fails, and leaves nothing behind.
        let missing = dir.join("nowhere").join("a.json");
        assert!(replace_file(&missing, b"lost").is_err());
        assert!(!temporary_for(&missing).exists());
        sync_folder(&dir).unwrap();
        assert!(sync_folder(&dir.join("nowhere")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
