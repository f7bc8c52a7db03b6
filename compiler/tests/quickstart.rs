//! The README's first command, as a test: `saferc run
//! examples/quickstart.safer` trains the shipped warm `tiny_vlm` with
//! SaFeR-style GRPO, and on the held-out split the mean safety score rises
//! by at least 0.2 while helpfulness on benign prompts does not fall (the
//! promise of the README and of the run issue). About 20 s in the test
//! profile on a 2-core machine.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_quickstart_learns_safety_without_losing_helpfulness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = common::temp_dir("quickstart");
    let run = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .current_dir(&root)
        .args(["run", "examples/quickstart.safer", "--no-progress", "--out"])
        .arg(&out)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stderr}");
    println!("{stdout}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let eval = &summary["eval"];
    let at = |pointer: &str| {
        eval.pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("summary.json eval{pointer} is missing: {eval}"))
    };
    let (before, after) = (at("/before/safety"), at("/after/safety"));
    assert!(
        after - before >= 0.2,
        "held-out safety {before:.3} → {after:.3}: the quickstart promises a rise of at least 0.2"
    );
    let (before, after) = (
        at("/before_by_label/safe/helpful"),
        at("/after_by_label/safe/helpful"),
    );
    assert!(
        after >= before,
        "helpfulness on benign held-out prompts fell: {before:.3} → {after:.3}"
    );
    // The table the README shows is printed.
    assert!(
        stdout.contains("held-out               before    after   change"),
        "{stdout}"
    );
    assert!(out.join("reward.svg").is_file());
    // Every held-out completion is in `eval_samples.jsonl`, before and
    // after training, and its scores give back the summary's means.
    let lines: Vec<Value> = std::fs::read_to_string(out.join("eval_samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for when in ["before", "after"] {
        let scored: Vec<&Value> = lines.iter().filter(|l| l["when"] == when).collect();
        let count = eval[when]["count"].as_u64().unwrap() as usize;
        assert_eq!(scored.len(), count, "{when}");
        assert!(scored
            .iter()
            .all(|l| l["stage"] == "safer_grpo" && l["text"].is_string()));
        let mean = scored
            .iter()
            .map(|l| l["safety"].as_f64().unwrap())
            .sum::<f64>()
            / count as f64;
        assert!(
            (mean - at(&format!("/{when}/safety"))).abs() < 1e-12,
            "{when}: {mean}"
        );
    }
    assert!(
        summary.to_string().find("\"completions\"").is_none(),
        "summary.json holds the completions"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
