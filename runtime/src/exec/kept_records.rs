//! Records a resume reuses (a dataset's curation, a stage's held-out scores
//! before training), kept per identity: the settings that made them, under
//! one key of the record's JSON object.
//!
//! A forced resume (`--resume --force`) with changed settings makes its own
//! records. One that then fails before its manifest is written leaves the
//! run as it was, and a later resume with the run's own pipeline must find
//! the run's records again, not make them afresh: curation samples and a
//! judge need not answer the same twice, so curating again could keep other
//! rows than those the checkpoints' data cursor indexes. So a record is
//! never overwritten by one of another identity: the one there is first
//! kept beside it as `NAME.IDENTITY-DIGEST.json`, and [`kept_beside`] brings
//! it back when its settings are asked for again.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::run_dir::write_atomically;
use super::ExecError;

/// `value` with every object's keys in sorted order: equal identities (as
/// `==` compares them, whatever their key order) name one file.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&fields[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Where a record of `identity` that `path` no longer holds is kept.
fn beside(path: &Path, identity: &Value) -> PathBuf {
    let digest = super::checkpoint::hex(&Sha256::digest(sorted(identity).to_string()));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.{}.json", &digest[..16]))
}

/// The record at `path`, where it reads as JSON.
fn read(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Writes `record` to `path`. A record there of another identity (its
/// `key` differs from `record`'s) is first kept beside it, for
/// [`kept_beside`].
///
/// # Errors
/// Writing either file.
pub fn replace(path: &Path, key: &str, record: &Value) -> Result<(), ExecError> {
    if let Some(there) = read(path) {
        let identity = &there[key];
        if !identity.is_null() && *identity != record[key] {
            write_atomically(&beside(path, identity), there.to_string().as_bytes())?;
        }
    }
    write_atomically(path, record.to_string().as_bytes())
}

/// The record of `identity` (under `key`) that [`replace`] kept beside
/// `path`, if there is one: it becomes `path`'s record again (the one there
/// is kept beside it in turn).
///
/// # Errors
/// Writing either file.
pub fn kept_beside(path: &Path, key: &str, identity: &Value) -> Result<Option<Value>, ExecError> {
    let kept = beside(path, identity);
    let Some(record) = read(&kept).filter(|r| r[key] == *identity) else {
        return Ok(None);
    };
    replace(path, key, &record)?;
    // Where the folder cannot lose the copy, it stays (it is the same).
    let _ = std::fs::remove_file(&kept);
    Ok(Some(record))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests stop at the first broken expectation
mod tests {
    use serde_json::json;

    use super::{kept_beside, replace};

    #[test]
    fn a_record_of_other_settings_is_kept_beside_and_found_again() {
        let dir = std::env::temp_dir().join(format!("saferc-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("run.lock"), std::process::id().to_string()).unwrap();
        let path = dir.join("curation/d.json");
        let read =
            || serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap()).unwrap();
        let ours = json!({"settings": {"seed": 7}, "kept": [1, 2]});
        let forced = json!({"settings": {"seed": 8}, "kept": [3]});
        replace(&path, "settings", &ours).unwrap();
        // Nothing to find while the record is the one asked for, or for
        // settings never recorded.
        assert_eq!(
            kept_beside(&path, "settings", &json!({"seed": 7})).unwrap(),
            None
        );
        replace(&path, "settings", &forced).unwrap();
        assert_eq!(read(), forced);
        assert_eq!(
            kept_beside(&path, "settings", &json!({"seed": 9})).unwrap(),
            None
        );
        // The run's own settings again: its record comes back, and the
        // forced one is kept beside it in turn.
        let found = kept_beside(&path, "settings", &json!({"seed": 7})).unwrap();
        assert_eq!(found, Some(ours.clone()));
        assert_eq!(read(), ours);
        assert_eq!(
            kept_beside(&path, "settings", &json!({"seed": 8})).unwrap(),
            Some(forced.clone())
        );
        // A record of the same settings replaces the one there outright.
        let again = json!({"settings": {"seed": 8}, "kept": [4]});
        replace(&path, "settings", &again).unwrap();
        assert_eq!(read(), again);
        let files = std::fs::read_dir(dir.join("curation")).unwrap().count();
        assert_eq!(files, 2, "d.json and the run's own record beside it");
        // Found whatever the order of the identity's keys.
        let ordered = json!({"settings": {"a": 1, "b": {"c": 2, "d": 3}}, "kept": [5]});
        replace(&path, "settings", &ordered).unwrap();
        replace(&path, "settings", &ours).unwrap();
        let reordered = json!({"b": {"d": 3, "c": 2}, "a": 1});
        assert_eq!(
            kept_beside(&path, "settings", &reordered).unwrap(),
            Some(ordered)
        );
        // A damaged record in its place does not hide a kept one.
        std::fs::write(&path, "{\"settings\": {\"se").unwrap();
        assert_eq!(
            kept_beside(&path, "settings", &json!({"seed": 7})).unwrap(),
            Some(ours.clone())
        );
        assert_eq!(read(), ours);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
