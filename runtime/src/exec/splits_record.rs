//! `splits.json` in the run directory: the rows each dataset's splits held,
//! as lines of its source file in the order saferc dealt them, with the
//! file's SHA-256. The trainer scripts `saferc emit` writes read it
//! (`SAFER_SPLITS`) to train on exactly these rows: curated, balanced and
//! de-duplicated as this run made them, not dealt again by Python.
//!
//! ```json
//! {"qi_safe": {"source": "data/qi-safe-mini.jsonl", "source_sha256": "…",
//!              "settings": {"filters": […], "splits": […], "seed": 7, …},
//!              "rows": [3, 1, …], "splits": {"train": [3, …], "eval": [1, …]}}}
//! ```
//!
//! A row balancing repeats is listed as often as the split holds it. The
//! digest is of the bytes the rows were read from, and `settings`
//! ([`DatasetSpec::row_settings`]) lets a script refuse the record of
//! another pipeline.

use std::collections::BTreeMap;
use std::path::Path;

use safer_ir::plan::DatasetSpec;
use serde_json::{json, Map, Value};

use super::data::Row;
use super::run_dir::write_atomically;
use super::ExecError;

/// The line of its source file a row came from (its origin's `:line`).
fn line_of(row: &Row) -> Option<u64> {
    row.origin.rsplit_once(':')?.1.parse().ok()
}

/// The lines of `rows`, in order; `None` if an origin has no line.
fn lines(rows: &[Row]) -> Option<Vec<u64>> {
    rows.iter().map(line_of).collect()
}

/// Adds dataset `name`'s rows (`all`) and splits, read from bytes whose
/// SHA-256 is `sha256`, to the record at `path` (other datasets' entries
/// are kept; the file is replaced atomically). A resume whose data changed
/// keeps the entry the run started with, as `images.json` does, and says
/// so: its finished stages trained on those rows.
///
/// # Errors
/// Writing the record.
pub fn record(
    path: &Path,
    name: &str,
    spec: &DatasetSpec,
    sha256: &str,
    all: &[Row],
    splits: &BTreeMap<String, Vec<Row>>,
) -> Result<(), ExecError> {
    let (Some(rows), Some(split_lines)) = (
        lines(all),
        splits
            .iter()
            .map(|(split, rows)| Some((split.clone(), json!(lines(rows)?))))
            .collect::<Option<Map<String, Value>>>(),
    ) else {
        crate::stderr_line!("warning: dataset `{name}`: a row without a line number; splits.json does not record it");
        return Ok(());
    };
    let mut record = super::records::read_record(
        path,
        "the splits record the rows as they are now, not as the run started with them",
    );
    let entry = json!({
        "source": spec.source_written,
        "source_sha256": sha256,
        "settings": spec.row_settings(),
        "rows": rows,
        "splits": split_lines,
    });
    match record.get(name) {
        Some(then) if *then == entry => return Ok(()),
        Some(then) if then["source_sha256"] != entry["source_sha256"] => {
            crate::stderr_line!(
                "warning: dataset `{name}`: its file changed since this run started; splits.json keeps the rows the run started with"
            );
            return Ok(());
        }
        _ => {}
    }
    record.insert(name.to_string(), entry);
    write_atomically(path, Value::Object(record).to_string().as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_recorded_as_lines_in_order_beside_other_datasets() {
        let dir = std::env::temp_dir().join(format!("saferc-splits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("rows.jsonl");
        let spec = DatasetSpec {
            source_written: "data/rows.jsonl".into(),
            ..crate::exec::data::source_spec(&source, &dir)
        };
        let path = dir.join("splits.json");
        std::fs::write(&path, r#"{"other": {"rows": [1]}}"#).unwrap();
        let all = [Row::at("data/rows.jsonl:3"), Row::at("data/rows.jsonl:1")];
        let splits = BTreeMap::from([
            ("train".to_string(), vec![all[0].clone(), all[0].clone()]),
            ("eval".to_string(), vec![all[1].clone()]),
        ]);
        record(&path, "d", &spec, "abc", &all, &splits).unwrap();
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["other"], json!({"rows": [1]}));
        assert_eq!(written["d"]["rows"], json!([3, 1]));
        assert_eq!(
            written["d"]["splits"],
            json!({"train": [3, 3], "eval": [1]})
        );
        assert_eq!(written["d"]["source"], json!("data/rows.jsonl"));
        assert_eq!(written["d"]["source_sha256"], json!("abc"));
        assert_eq!(written["d"]["settings"], spec.row_settings());
        // Resumed on changed data: the entry the run started with stays.
        record(&path, "d", &spec, "def", &all[..1], &BTreeMap::new()).unwrap();
        let kept: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(kept, written);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
