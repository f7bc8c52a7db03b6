//! End-to-end runs of `saferc run` on the case folders of
//! `tests/cases/run/`: each holds `pipeline.safer`, tiny data and
//! `expect.json` (exit code, stderr lines, values in `summary.json` by JSON
//! pointer, pairs of summary values that must be equal, per-group sample
//! counts, metric values, a judge server to start, a SIGKILL-and-resume
//! check). The policy is a fresh `tiny_vlm`
//! (`saferc init-model --size tiny --seed 0`) made in the case's copy.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/run")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies case `name` (and the shared images) into a temporary folder and
/// makes its model; returns the case's copy.
fn prepare(name: &str, dest: &str) -> PathBuf {
    let root = common::temp_dir(&format!("run-{dest}"));
    copy_dir(&cases_dir().join("images"), &root.join("images"));
    let case = root.join(name);
    copy_dir(&cases_dir().join(name), &case);
    let model = case.join("model");
    let out = common::saferc(&[
        "init-model",
        model.to_str().unwrap(),
        "--size",
        "tiny",
        "--seed",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    case
}

fn run_command(case: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_saferc"));
    cmd.arg("run")
        .arg(case.join("pipeline.safer"))
        .arg("--no-progress")
        .args(extra)
        .env("NO_COLOR", "1")
        .env("SAFERC_JUDGE_BACKOFF_MS", "20");
    cmd
}

fn run(case: &Path, out: &Path) -> Output {
    run_command(case, &["--out", out.to_str().unwrap()])
        .output()
        .unwrap()
}

/// A loopback server speaking the OpenAI chat-completions wire format:
/// `429_then_200` answers 429 to the first request and a score after;
/// `slow` waits longer than any test timeout before answering.
fn start_server(mode: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mode = mode.to_string();
    std::thread::spawn(move || {
        let mut count = 0usize;
        for stream in listener.incoming().flatten() {
            count += 1;
            let first = count == 1;
            let mode = mode.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                assert_eq!(request["model"], "grader");
                assert!(request["messages"].as_array().is_some_and(|m| m.len() == 2));
                let mut stream = stream;
                let (status, answer) = match mode.as_str() {
                    "429_then_200" if first => ("429 Too Many Requests", "{\"error\": \"slow down\"}".to_string()),
                    "slow" => {
                        std::thread::sleep(Duration::from_secs(4));
                        ("200 OK", String::new())
                    }
                    _ => ("200 OK", serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "0.75"}, "finish_reason": "stop"}]}).to_string()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    port
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_case(name: &str) {
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(cases_dir().join(name).join("expect.json")).unwrap(),
    )
    .unwrap();
    let case = prepare(name, name);
    if let Some(mode) = expect["server"].as_str() {
        let port = start_server(mode);
        let pipeline = case.join("pipeline.safer");
        let text = std::fs::read_to_string(&pipeline).unwrap();
        std::fs::write(&pipeline, text.replace("{PORT}", &port.to_string())).unwrap();
    }
    if expect["resume_after_kill"].as_bool() == Some(true) {
        return resume_after_kill(&case);
    }
    let out_dir = case.join("run");
    let out = run(&case, &out_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        expect["exit"].as_i64().map(|c| c as i32),
        "{name}: stderr:\n{stderr}"
    );
    for line in expect["stderr"].as_array().into_iter().flatten() {
        let line = line.as_str().unwrap();
        assert!(
            stderr.contains(line),
            "{name}: stderr lacks {line:?}:\n{stderr}"
        );
    }
    if let Some(checks) = expect["summary"].as_object() {
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
                .unwrap();
        for (pointer, want) in checks {
            assert_eq!(
                summary.pointer(pointer),
                Some(want),
                "{name}: summary{pointer}"
            );
        }
    }
    // Pairs of summary values that must be equal (a later stage starting where an earlier one ended).
    for pair in expect["same"].as_array().into_iter().flatten() {
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
                .unwrap();
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        assert!(summary.pointer(a).is_some(), "{name}: summary{a} missing");
        assert_eq!(
            summary.pointer(a),
            summary.pointer(b),
            "{name}: summary{a} != summary{b}"
        );
    }
    if let Some(s) = expect["samples"].as_object() {
        let samples = read_jsonl(&out_dir.join("samples.jsonl"));
        assert!(!samples.is_empty(), "{name}: no samples");
        let mut groups: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for row in &samples {
            for key in [
                "step",
                "group",
                "reward",
                "advantage",
                "reflection",
                "text",
                "safety",
                "form",
            ] {
                assert!(
                    row.get(key).is_some(),
                    "{name}: sample lacks `{key}`: {row}"
                );
            }
            let e = groups
                .entry(row["group"].as_str().unwrap().to_string())
                .or_default();
            e.0 += 1;
            let reflected = row["reflection"] == Value::Bool(true);
            e.1 += usize::from(reflected);
            // A correction carries the scores of the completion it corrects.
            assert_eq!(
                row.get("before").is_some(),
                reflected,
                "{name}: `before` on {row}"
            );
            if reflected {
                assert!(
                    row["before"]["reward"].is_number() && row["before"]["safety"].is_number(),
                    "{name}: {row}"
                );
            }
        }
        for (group, (n, reflected)) in groups {
            assert_eq!(
                Some(n as u64),
                s["per_group"].as_u64(),
                "{name}: group {group} size"
            );
            assert_eq!(
                Some(reflected as u64),
                s["reflected_per_group"].as_u64(),
                "{name}: group {group} corrections"
            );
        }
    }
    if let Some(checks) = expect["metrics"].as_object() {
        let metrics = read_jsonl(&out_dir.join("metrics.jsonl"));
        assert!(!metrics.is_empty());
        for line in &metrics {
            for (pointer, want) in checks {
                assert_eq!(
                    line.pointer(pointer),
                    Some(want),
                    "{name}: metrics{pointer}"
                );
            }
        }
    }
}

/// Runs the case once uninterrupted and once killed with SIGKILL after its
/// first checkpoint and resumed; the final weights must be identical.
fn resume_after_kill(case: &Path) {
    let full = case.join("full");
    let out = run(case, &full);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights = |dir: &Path| std::fs::read(dir.join("models/t/model.safetensors")).unwrap();
    let reference = weights(&full);
    let mut killed_once = false;
    for attempt in 0..3 {
        let dir = case.join(format!("killed-{attempt}"));
        let mut child = run_command(case, &["--out", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let first = dir.join("checkpoints/t/step-000002/state.json");
        let deadline = Instant::now() + Duration::from_secs(600);
        while !first.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            continue; // finished before the kill landed; try again
        }
        killed_once = true;
        assert!(!dir.join("models/t/model.safetensors").exists());
        let resumed = run_command(case, &["--resume", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming from"));
        assert!(
            reference == weights(&dir),
            "resumed weights differ from the uninterrupted run"
        );
        break;
    }
    assert!(killed_once, "the run always finished before SIGKILL");
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check_case(stringify!($name)); })*

        #[test]
        fn every_case_folder_has_a_test() {
            let mut folders: Vec<String> = std::fs::read_dir(cases_dir())
                .unwrap()
                .flatten()
                .filter(|e| e.path().join("expect.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            folders.sort();
            let mut named = vec![$(stringify!($name).to_string()),*];
            named.sort();
            assert_eq!(folders, named);
        }
    };
}

cases!(
    bad_rows_skip,
    bad_rows_fail,
    reflection_replace,
    reflection_append,
    curation_keep,
    curation_drop,
    resume,
    judge_retry,
    judge_timeout,
    judge_model_fallback,
    judge_model_no_score,
    two_stages,
);

#[test]
fn resume_refuses_a_changed_pipeline_unless_forced() {
    let case = prepare("resume", "resume-changed");
    let dir = case.join("out");
    assert!(run(&case, &dir).status.success());
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, text.replace("1e-3", "2e-3")).unwrap();
    let refused = run_command(&case, &["--resume", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("the pipeline changed since this run started"));
    let forced = run_command(&case, &["--resume", dir.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let again = run(&case, &dir);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second run into the same folder is refused"
    );
}

/// The executor on wgpu (CI runs it on Mesa's software Vulkan driver): an
/// SFT stage then a GRPO stage; the SFT loss matches the CPU run's.
#[cfg(feature = "wgpu")]
#[test]
fn two_stages_run_on_wgpu_as_on_the_cpu() {
    let case = prepare("two_stages", "two-stages-wgpu");
    let summary = |device: &str| -> Value {
        let dir = case.join(format!("run-{device}"));
        let out = run_command(&case, &["--out", dir.to_str().unwrap(), "--device", device])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    let (gpu, cpu) = (summary("wgpu"), summary("cpu"));
    assert_eq!(gpu["device"], "wgpu");
    assert_eq!(gpu["stages"][1]["training"]["algorithm"], "grpo");
    let loss = |s: &Value| s["stages"][0]["training"]["final_loss"].as_f64().unwrap();
    println!(
        "SFT loss after 2 steps: wgpu {}, cpu {}",
        loss(&gpu),
        loss(&cpu)
    );
    assert!((loss(&gpu) - loss(&cpu)).abs() < 1e-4);
}
