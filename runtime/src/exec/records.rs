//! A run's record files (`images.json`, `splits.json`): one JSON object
//! of an entry per dataset, which a resume compares with the data as it
//! is now.

use serde_json::{Map, Value};
use std::path::Path;

/// The record at `path`, empty when the file is not there yet. A file that
/// cannot be read or does not hold one JSON object (damaged) is warned
/// about, naming what is `lost`: its entries are made again from the files
/// as they are now.
pub fn read_record(path: &Path, lost: &str) -> Map<String, Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Map::new(),
        Err(e) => {
            crate::stderr_line!(
                "warning: {} cannot be read ({e}); it is made again from the files as they are now, so {lost}",
                path.display()
            );
            return Map::new();
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(record)) => record,
        _ => {
            crate::stderr_line!(
                "warning: {} does not read as JSON (damaged?); it is made again from the files as they are now, so {lost}",
                path.display()
            );
            Map::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::read_record;

    /// A record that is not there is empty; one that does not hold a JSON
    /// object reads as empty (with a warning), as does one that is not text.
    #[test]
    fn a_damaged_record_reads_as_empty() {
        let dir = std::env::temp_dir().join(format!("saferc-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("images.json");
        assert!(read_record(&path, "x").is_empty());
        std::fs::write(&path, r#"{"d": "sha256:0"}"#).unwrap();
        assert_eq!(read_record(&path, "x").len(), 1);
        for damaged in [&b"{\"d\": "[..], b"[1]", b"\xff\xfe"] {
            std::fs::write(&path, damaged).unwrap();
            assert!(read_record(&path, "x").is_empty());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
