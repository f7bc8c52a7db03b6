//! `saferc emit`'s reward module scores as `saferc run` does: the parity
//! pipeline (`tests/cases/emit/parity`) is compiled and emitted, then every
//! row of its dataset is scored against every completion of
//! `completions.jsonl` by the runtime's rubric scorer and by `python3
//! safer_reward.py score`, and the numbers must be equal to the last bit.
//! The rows the module reads (filters) and its split sizes must match the
//! runtime's too.
//!
//! Needs `python3` (the standard library only); `.ci/run` checks that it
//! is there, so a missing interpreter fails the test instead of skipping it.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation

mod common;

use base64::Engine;
use safer_runtime::exec::data;
use safer_runtime::exec::judge::{HttpJudge, RulesJudge};
use safer_runtime::exec::rubric::{Item, RubricScorer, Scores};
use safer_runtime::exec::scorers;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/emit/parity")
}

/// The plan of `pipeline` (relative to the parity case's folder).
fn plan_of(pipeline: &str) -> safer_ir::plan::Plan {
    saferc::cli::compile_plan(&case().join(pipeline), &saferc::cli::ImportArgs::default())
        .unwrap_or_else(|| panic!("{pipeline} compiles"))
}

/// Writes `plan` emitted for `target` into `dir`.
fn write_emitted(plan: &safer_ir::plan::Plan, target: saferc::emit::Target, dir: &Path) {
    let files = saferc::emit::emit(plan, target, None, "pipeline.safer").unwrap();
    for (file, text) in &files.files {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

/// The parity pipeline's plan, emitted for `target` into a fresh folder.
fn emitted(target: saferc::emit::Target, name: &str) -> (safer_ir::plan::Plan, PathBuf) {
    let plan = plan_of("pipeline.safer");
    let dir = common::temp_dir(name);
    write_emitted(&plan, target, &dir);
    (plan, dir)
}

/// Runs `python3 safer_reward.py ARGS` in `dir` with `stdin`; its stdout lines.
fn python(dir: &Path, args: &[&str], stdin: &str) -> Vec<String> {
    python_with_env(dir, args, stdin, &[])
}

/// [`python`] with environment variables set.
fn python_with_env(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Vec<String> {
    let mut child = Command::new("python3")
        .arg("safer_reward.py")
        .args(args)
        .current_dir(dir)
        .env_remove("SAFER_REWARD_SPEC")
        .env_remove("SAFER_DATA")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is needed by this test and could not start: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 safer_reward.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `python3 -c program` in `dir`, ready to run (callers add variables).
fn python_program(dir: &Path, program: &str) -> Command {
    let mut command = Command::new("python3");
    command.args(["-c", program]).current_dir(dir);
    command
}

/// Runs `command` (a [`python_program`]), which must succeed and print one
/// JSON value: that value.
fn json_printed(command: &mut Command) -> Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `python3 safer_reward.py rows d` in `dir`, which must fail with
/// `says` in its error.
fn rows_refused(dir: &Path, says: &str) {
    let out = Command::new("python3")
        .args(["safer_reward.py", "rows", "d"])
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(says),
        "{says}: {stderr}"
    );
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The runtime's scorer of rubric `name` of `plan`, asking `judge`.
fn scorer_of<'a>(
    plan: &'a safer_ir::plan::Plan,
    name: &'a str,
    judge: &'a dyn safer_runtime::exec::judge::Judge,
    vocabulary: &'a std::collections::BTreeSet<String>,
) -> RubricScorer<'a> {
    RubricScorer {
        name,
        spec: &plan.rubrics[name],
        functions: &plan.functions,
        judge,
        vocabulary,
    }
}

/// `score` input lines for every row (with its line of the dataset file)
/// against every `(text, tokens)`, and the runtime's scores of each.
fn scored_by_the_runtime(
    scorer: &RubricScorer<'_>,
    rows: &[data::Row],
    raw_rows: &[Value],
    completions: &[(&str, usize)],
) -> (String, Vec<(String, Value)>) {
    let mut items = String::new();
    let mut expected = Vec::new();
    for (row, raw) in rows.iter().zip(raw_rows) {
        for &(text, tokens) in completions {
            items.push_str(&json!({"row": raw, "text": text, "tokens": tokens}).to_string());
            items.push('\n');
            let scores = scorer
                .score(&Item { row, text, tokens })
                .unwrap_or_else(|e| panic!("row {}, {text:?}: {e}", row.id));
            expected.push((format!("row {} on {text:?}", row.id), as_json(&scores)));
        }
    }
    (items, expected)
}

/// Equal to the last bit: numbers compared by their bits (`-0.0` is not
/// `0.0`, as serde_json's `==` has it), everything else as JSON.
fn same_bits(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_bits(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_bits(v, w)))
        }
        _ => a == b,
    }
}

fn as_json(s: &Scores) -> Value {
    json!({
        "criteria": s.criteria,
        "penalties": s.penalties,
        "format": s.format,
        "weighted": s.weighted,
        "total": s.total,
    })
}

#[test]
fn the_emitted_reward_module_scores_every_completion_as_the_runtime_does() {
    let (plan, dir) = emitted(saferc::emit::Target::Verl, "emit-parity");
    let spec = &plan.datasets["d"];
    let loaded = data::load_source("d", spec).unwrap();
    assert!(loaded.bad.is_empty(), "{:?}", loaded.bad);
    let all_rows = loaded.rows.clone();
    let (kept, unfiltered) = data::filter("d", loaded.rows, spec);
    assert!(unfiltered.is_empty(), "{unfiltered:?}");
    let vocabulary = scorers::vocabulary(&kept, "objects");
    let scorer = scorer_of(&plan, "parity", &RulesJudge, &vocabulary);
    let raw_rows = lines(&case().join("rows.jsonl"));
    let completions: Vec<(String, usize)> = lines(&case().join("completions.jsonl"))
        .iter()
        .map(|c| {
            let tokens = usize::try_from(c["tokens"].as_u64().unwrap()).unwrap();
            (c["text"].as_str().unwrap().to_string(), tokens)
        })
        .collect();
    let completions: Vec<(&str, usize)> =
        completions.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    let (items, expected) = scored_by_the_runtime(&scorer, &all_rows, &raw_rows, &completions);
    assert_eq!(raw_rows.len(), all_rows.len());
    let got = python(&dir, &["score"], &items);
    assert_eq!(got.len(), expected.len());
    let mut differing = Vec::new();
    for ((what, want), line) in expected.iter().zip(&got) {
        let line: Value = serde_json::from_str(line).unwrap();
        // serde_json reads Python's shortest round-trip floats back exactly.
        if !same_bits(&line, want) {
            differing.push(format!("{what}:\n  saferc {want}\n  python {line}"));
        }
    }
    assert!(
        differing.is_empty(),
        "{} of {} scores differ:\n{}",
        differing.len(),
        expected.len(),
        differing.join("\n")
    );
    // The corpus reaches both branches of `total` and every penalty.
    let totals: Vec<f64> = expected
        .iter()
        .map(|(_, s)| s["total"].as_f64().unwrap())
        .collect();
    assert!(totals.iter().any(|t| *t > 0.5) && totals.iter().any(|t| *t < 0.0));
    for p in 0..plan.rubrics["parity"].penalties.len() {
        assert!(
            expected
                .iter()
                .any(|(_, s)| s["penalties"][p].as_f64().unwrap() != 0.0),
            "penalty {p} never applies"
        );
    }
}

#[test]
fn the_emitted_module_reads_the_rows_and_split_sizes_the_runtime_reads() {
    let (plan, dir) = emitted(saferc::emit::Target::Trl, "emit-rows");
    let spec = &plan.datasets["d"];
    let (kept, _) = data::filter("d", data::load_source("d", spec).unwrap().rows, spec);
    let ids = |lines: Vec<String>| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let want: Vec<String> = kept.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids(python(&dir, &["rows", "d"], "")), want);
    assert!(
        !want.contains(&"f".to_string()),
        "the filters drop row f: {want:?}"
    );
    let splits = data::split(&kept, &spec.splits, spec.seed, None);
    for (name, rows) in &splits {
        let got = ids(python(&dir, &["rows", &format!("d.{name}")], ""));
        assert_eq!(got.len(), rows.len(), "split {name}");
        // A split name alone, as only one dataset has it.
        assert_eq!(ids(python(&dir, &["rows", name], "")), got, "split {name}");
    }
    // Another name: a message with the names there are, not a traceback.
    for wrong in ["nope", "d.nope"] {
        let out = Command::new("python3")
            .args(["safer_reward.py", "rows", wrong])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.starts_with("error: ")
                && stderr.contains("`d.train`")
                && !stderr.contains("Traceback"),
            "{stderr}"
        );
    }
}

/// Rows read as saferc reads them: a byte-order mark, `\r\n`, a blank
/// line, invalid UTF-8, a number out of range, `NaN`, `-0`, malformed or
/// missing images, a lone surrogate, deep nesting, and `limit` (bad lines
/// count towards it).
#[test]
fn the_emitted_module_reads_a_file_s_rows_as_the_runtime_does() {
    let mut plan = plan_of("pipeline.safer");
    let dir = common::temp_dir("emit-read-rows");
    let data = dir.join("rows.jsonl");
    let row = |id: &str, extra: &str| {
        format!(
            r#"{{"id": "{id}", "question": "q", "kind": "benign", "objects": ["{id}"]{extra}}}"#
        )
    };
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(row("bom", "").as_bytes());
    bytes.extend(b"\r\n\n   \n");
    // Not UTF-8: a lone 0xFF byte in the question.
    bytes.extend(br#"{"id": "utf8", "question": ""#);
    bytes.push(0xFF);
    bytes.extend(br#"", "kind": "benign", "objects": ["u"]}"#);
    bytes.push(b'\n');
    for line in [
        row("huge", r#", "meta": {"score": 1e400}"#),
        row("nan", r#", "x": NaN"#),
        row("negzero", r#", "label": -0, "meta": {"score": -0}"#),
        row("point", r#", "meta": {"score": 0.30000000000000004}"#),
        row("img-ok", r#", "image": "ok.png""#),
        row("img-missing", r#", "images": ["ok.png", "missing.png"]"#),
        row("img-both", r#", "image": "ok.png", "images": ["ok.png"]"#),
        row("img-empty", r#", "image": " ""#),
        row("img-not-a-list", r#", "images": "ok.png""#),
        row("surrogate", r#", "note": "\ud800""#),
        row(
            "deep",
            &format!(r#", "deep": {}{}"#, "[".repeat(130), "]".repeat(130)),
        ),
        row("past-the-limit", ""),
    ] {
        bytes.extend(line.as_bytes());
        bytes.push(b'\n');
    }
    std::fs::write(&data, &bytes).unwrap();
    std::fs::copy(
        case().join("../../../../examples/data/images/q-0003.png"),
        dir.join("ok.png"),
    )
    .unwrap();
    let spec = plan.datasets.get_mut("d").unwrap();
    spec.limit = Some(13);
    spec.source = data.display().to_string();
    spec.images = dir.display().to_string();
    write_emitted(&plan, saferc::emit::Target::Trl, &dir);
    let spec = &plan.datasets["d"];
    let loaded = data::load_source("d", spec).unwrap();
    assert_eq!(loaded.bad.len(), 9, "{:?}", loaded.bad);
    let (kept, _) = data::filter("d", loaded.rows, spec);
    let want: Vec<&str> = kept.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(want, ["bom", "negzero", "point", "img-ok"]);
    let got: Vec<String> = python(&dir, &["rows", "d"], "")
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, want);
    // Under `on_bad_row = fail` the first bad row stops the scripts.
    plan.datasets.get_mut("d").unwrap().on_bad_row = "fail".into();
    write_emitted(&plan, saferc::emit::Target::Trl, &dir);
    let out = Command::new("python3")
        .args(["safer_reward.py", "rows", "d"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rows.jsonl:4: not valid UTF-8 (dataset `d` has `on_bad_row = fail`)"),
        "{stderr}"
    );
    // A file that is not JSON Lines as a whole is one error in both, under
    // either policy: UTF-16, a JSON array, objects printed over lines.
    plan.datasets.get_mut("d").unwrap().on_bad_row = "skip".into();
    write_emitted(&plan, saferc::emit::Target::Trl, &dir);
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(row("a", "").encode_utf16().flat_map(u16::to_le_bytes));
    let one = row("a", "");
    for (contents, says) in [
        (utf16, "is UTF-16"),
        (format!("[\n{one}\n]\n").into_bytes(), "holds a JSON array"),
        (format!("[{one}]\n").into_bytes(), "holds a JSON array"),
        (
            b"{\n  \"question\": \"q\"\n}\n".to_vec(),
            "printed over several lines",
        ),
    ] {
        std::fs::write(&data, &contents).unwrap();
        let runtime = data::load_source("d", &plan.datasets["d"])
            .err()
            .map(|e| e.to_string());
        assert!(
            runtime.as_deref().is_some_and(|e| e.contains(says)),
            "{runtime:?}"
        );
        rows_refused(&dir, says);
    }
}

/// A row a filter cannot be evaluated on (`len(objects)` of a number) is a
/// bad row in both, skipped and counted, or stopping the scripts under
/// `on_bad_row = fail`; an images folder that does not exist stops both.
#[test]
fn a_row_a_filter_cannot_read_is_a_bad_row_in_both() {
    let mut plan = plan_of("pipeline.safer");
    let dir = common::temp_dir("emit-filter-rows");
    let data = dir.join("rows.jsonl");
    let rows = [
        r#"{"id": "a", "question": "q", "kind": "benign", "objects": ["a"]}"#,
        r#"{"id": "b", "question": "q", "kind": "benign", "objects": 5}"#,
        r#"{"id": "c", "question": "q", "kind": "benign", "objects": ["c"]}"#,
    ];
    std::fs::write(&data, format!("{}\n", rows.join("\n"))).unwrap();
    let spec = plan.datasets.get_mut("d").unwrap();
    spec.limit = None;
    spec.source = data.display().to_string();
    spec.images = dir.display().to_string();
    write_emitted(&plan, saferc::emit::Target::Trl, &dir);
    let spec = &plan.datasets["d"];
    let loaded = data::load_source("d", spec).unwrap();
    let (kept, bad) = data::filter("d", loaded.rows, spec);
    let want: Vec<&str> = kept.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(want, ["a", "c"]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0]
            .to_string()
            .starts_with("rows.jsonl:2: a filter cannot be evaluated on it: "),
        "{bad:?}"
    );
    let got = json_printed(&mut python_program(
        &dir,
        "import safer_reward, json\nskipped = []\nrows = safer_reward.read_rows('d', safer_reward.load_spec()['datasets']['d'], True, skipped=skipped)\nprint(json.dumps({'ids': [r.raw['id'] for r in rows], 'skipped': skipped}))",
    ));
    assert_eq!(got["ids"], json!(want));
    let skipped = got["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let reason = skipped[0].as_str().unwrap();
    assert!(
        reason.starts_with("rows.jsonl:2: a filter cannot be evaluated on it: ")
            && reason.contains("len() needs a string or a list"),
        "{reason}"
    );
    // Under `on_bad_row = fail`, both stop at that row.
    plan.datasets.get_mut("d").unwrap().on_bad_row = "fail".into();
    write_emitted(&plan, saferc::emit::Target::Trl, &dir);
    let spec = &plan.datasets["d"];
    let mut loaded = data::load_source("d", spec).unwrap();
    let (_, mut bad) = data::filter("d", std::mem::take(&mut loaded.rows), spec);
    bad.extend(loaded.bad);
    let runtime = data::apply_bad_row_policy("d", spec, &mut bad)
        .err()
        .map(|e| e.to_string());
    assert!(
        runtime
            .as_deref()
            .is_some_and(|e| e.contains("rows.jsonl:2")),
        "{runtime:?}"
    );
    rows_refused(&dir, "rows.jsonl:2: a filter cannot be evaluated on it");
    // Rows naming images, and an images folder that is not there.
    plan.datasets.get_mut("d").unwrap().on_bad_row = "skip".into();
    plan.datasets.get_mut("d").unwrap().images = dir.join("imgs").display().to_string();
    std::fs::write(
        &data,
        format!(
            "{}\n{}\n",
            rows[0],
            r#"{"id": "i", "question": "q", "kind": "benign", "objects": ["i"], "image": "x.png"}"#
        ),
    )
    .unwrap();
    write_emitted(&plan, saferc::emit::Target::Trl, &dir);
    let runtime = data::load_source("d", &plan.datasets["d"])
        .err()
        .map(|e| e.to_string());
    let says = "imgs` does not exist";
    assert!(
        runtime.as_deref().is_some_and(|e| e.contains(says)),
        "{runtime:?}"
    );
    rows_refused(&dir, says);
}

/// A `reward_spec.json` that holds a judge endpoint's credential is
/// written readable by its owner alone; one without keeps the default mode.
#[cfg(unix)]
#[test]
fn a_spec_holding_a_credential_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::temp_dir("emit-private");
    let http = case().join("../http_judge/pipeline.safer");
    let text = std::fs::read_to_string(&http).unwrap();
    let mode = |with: &str| {
        let pipeline = dir.join(format!("{with}.safer"));
        let endpoint = format!("http://{with}127.0.0.1:9/v1");
        std::fs::write(
            &pipeline,
            text.replace("http://127.0.0.1:9/v1", &endpoint).replace(
                "../parity/rows.jsonl",
                case().join("rows.jsonl").to_str().unwrap(),
            ),
        )
        .unwrap();
        let out_dir = dir.join(format!("out-{}", with.len()));
        let out = common::saferc(&[
            "emit",
            pipeline.to_str().unwrap(),
            "--target",
            "verl",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        std::fs::metadata(out_dir.join("reward_spec.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("user:s3cret@"), 0o600);
    assert_ne!(mode(""), 0o600);
}

#[test]
fn emit_writes_the_files_and_says_what_did_not_carry_over() {
    let dir = common::temp_dir("emit-cli");
    let pipeline = case().join("pipeline.safer");
    let out = common::saferc(&[
        "emit",
        pipeline.to_str().unwrap(),
        "--target",
        "trl",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    for file in ["safer_reward.py", "reward_spec.json", "train_trl.py"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("note: split `d.train`"), "{stderr}");
    // A file the user changed is not replaced without --force.
    std::fs::write(dir.join("train_trl.py"), "# edited\n").unwrap();
    let again = common::saferc(&[
        "emit",
        pipeline.to_str().unwrap(),
        "--target",
        "trl",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("train_trl.py"));
    assert_eq!(
        std::fs::read_to_string(dir.join("train_trl.py")).unwrap(),
        "# edited\n"
    );
    let forced = common::saferc(&[
        "emit",
        pipeline.to_str().unwrap(),
        "--target",
        "trl",
        "--out",
        dir.to_str().unwrap(),
        "--force",
    ]);
    assert!(forced.status.success());
    assert!(std::fs::read_to_string(dir.join("train_trl.py"))
        .unwrap()
        .contains("GRPOConfig("));
    // A file made private stays private when emit replaces it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let spec = dir.join("reward_spec.json");
        std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&spec, "{}").unwrap();
        let again = common::saferc(&[
            "emit",
            pipeline.to_str().unwrap(),
            "--target",
            "trl",
            "--out",
            dir.to_str().unwrap(),
            "--force",
        ]);
        assert!(again.status.success());
        let mode = std::fs::metadata(&spec).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_ne!(std::fs::read_to_string(&spec).unwrap(), "{}");
    }
    let file = dir.join("train_trl.py");
    let into_a_file = common::saferc(&[
        "emit",
        pipeline.to_str().unwrap(),
        "--target",
        "verl",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(into_a_file.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&into_a_file.stderr)
        .contains("is a file; emit writes into a folder"));
    let emit_into = |out: &Path, force: bool| {
        let mut args = vec![
            "emit",
            pipeline.to_str().unwrap(),
            "--target",
            "trl",
            "--out",
        ];
        args.push(out.to_str().unwrap());
        if force {
            args.push("--force");
        }
        common::saferc(&args)
    };
    // Below a file: said so (it said the folder held files that differ).
    let below = emit_into(&file.join("sub"), false);
    assert_eq!(below.status.code(), Some(1));
    let said = String::from_utf8_lossy(&below.stderr).to_string();
    assert!(said.contains("which is a file, not a folder"), "{said}");
    // A folder where a file goes: refused before anything is written, even
    // with --force (which wrote the other files, then failed).
    let taken = dir.join("taken");
    std::fs::create_dir_all(taken.join("train_trl.py")).unwrap();
    let refused = emit_into(&taken, true);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(said.contains("nothing was written"), "{said}");
    let written: Vec<_> = std::fs::read_dir(&taken).unwrap().flatten().collect();
    assert_eq!(written.len(), 1, "{written:?}");
    // A link where a file goes, even one to nowhere, is not written
    // through (outside the folder).
    #[cfg(unix)]
    {
        let linked = dir.join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        let outside = dir.join("outside.json");
        std::os::unix::fs::symlink(&outside, linked.join("reward_spec.json")).unwrap();
        let refused = emit_into(&linked, true);
        assert_eq!(refused.status.code(), Some(1));
        let said = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(
            said.contains("is a symbolic link") && said.contains("nothing was written"),
            "{said}"
        );
        assert!(!outside.exists());
        let written: Vec<_> = std::fs::read_dir(&linked).unwrap().flatten().collect();
        assert_eq!(written.len(), 1, "{written:?}");
    }
}

/// What the loopback judge received: each request's `Authorization`
/// header and body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A loopback chat-completions server: 429 to its first request, then a
/// reply per question: `7` on a 0..10 scale, `0.75` on 0..1, and words
/// without a score for a completion holding `JUNK` (the fallback's case).
fn start_judge() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let log = received.clone();
    std::thread::spawn(move || {
        for (count, stream) in listener.incoming().flatten().enumerate() {
            let log = log.clone();
            std::thread::spawn(move || answer(stream, count == 0, &log));
        }
    });
    (port, received)
}

/// Reads one HTTP request from `stream`: its `Authorization` header (empty
/// without one) and its body (`None` when the body is cut short).
fn read_request(stream: &std::net::TcpStream) -> (String, Option<Vec<u8>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut length, mut authorization) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            authorization = line["authorization:".len()..].trim().to_string();
        }
    }
    let mut body = vec![0u8; length];
    let read = reader.read_exact(&mut body).is_ok();
    (authorization, read.then_some(body))
}

fn answer(mut stream: std::net::TcpStream, first: bool, log: &Received) {
    let (authorization, Some(body)) = read_request(&stream) else {
        return;
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let question = common::question_text(&body).to_string();
    log.lock().unwrap().push((authorization, body));
    let reply = if first {
        "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_string()
    } else {
        let said = if question.contains("JUNK") {
            "about five"
        } else if question.contains("Score (0 to 10)") {
            "7"
        } else {
            "0.75"
        };
        let content =
            json!({"choices": [{"message": {"role": "assistant", "content": said}}]}).to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}",
            content.len()
        )
    };
    let _ = stream.write_all(reply.as_bytes());
}

/// The HTTP judge case with its judge at the loopback server on `port`.
fn judged_at(port: u16) -> safer_ir::plan::Plan {
    let mut plan = plan_of("../http_judge/pipeline.safer");
    plan.judges.get_mut("grader").unwrap().endpoint = Some(format!("http://127.0.0.1:{port}/v1"));
    plan
}

#[test]
fn the_emitted_module_asks_an_http_judge_what_the_runtime_asks() {
    let (port, received) = start_judge();
    let plan = judged_at(port);
    let dir = common::temp_dir("emit-judge");
    write_emitted(&plan, saferc::emit::Target::Trl, &dir);
    // Both ask with the key from the same variable.
    std::env::set_var("EMIT_PARITY_KEY", "sk-parity");
    let judge = HttpJudge::new("grader", &plan.judges["grader"], Arc::default()).unwrap();
    let spec = &plan.datasets["d"];
    let rows = data::load_source("d", spec).unwrap().rows;
    let vocabulary = scorers::vocabulary(&rows, "objects");
    let scorer = scorer_of(&plan, "judged", &judge, &vocabulary);
    let raw_rows = lines(&case().join("rows.jsonl"));
    let texts = [
        (
            "<think>fine</think><answer>An apple on a table.</answer>",
            5,
        ),
        ("I cannot help with that.", 5),
        ("JUNK reply", 5),
    ];
    let (items, expected) = scored_by_the_runtime(&scorer, &rows[..3], &raw_rows, &texts);
    let expected: Vec<Value> = expected.into_iter().map(|(_, s)| s).collect();
    let asked_by_saferc = std::mem::take(&mut *received.lock().unwrap());
    let got: Vec<Value> = python_with_env(
        &dir,
        &["score"],
        &items,
        &[("SAFERC_JUDGE_BACKOFF_MS", "20")],
    )
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let asked_by_python = std::mem::take(&mut *received.lock().unwrap());
    assert!(
        got.len() == expected.len() && got.iter().zip(&expected).all(|(g, e)| same_bits(g, e)),
        "{got:?}\n{expected:?}"
    );
    // No format terms: both sums are Rust's empty sum, -0.0.
    assert!(got
        .iter()
        .all(|s| s["format"].as_f64().unwrap().to_bits() == (-0.0f64).to_bits()));
    // The 429 went to the runtime (the server's first request); every
    // question after it is asked once by each, with the same body and key.
    assert_eq!(asked_by_saferc.len(), asked_by_python.len() + 1);
    assert_eq!(&asked_by_saferc[1..], &asked_by_python[..]);
    assert!(asked_by_python
        .iter()
        .all(|(key, _)| key == "Bearer sk-parity"));
    // The fallback applied: 0.25 of the 0..10 scale, so grounding 0.25.
    assert!(got.iter().any(|s| s["criteria"][0] == json!(0.25)));
    assert!(got.iter().any(|s| s["criteria"][0] == json!(0.7)));
}

/// A judge is shown a row's images by the emitted module as by the
/// runtime: the same `image_url` parts (each file's bytes as a `data:` URL)
/// before the same text, the module finding the files in the training
/// dataset's images folder for rows handed over alone (as TRL and verl
/// hand them); with `images = false`, neither shows any, and the module
/// says so once.
#[test]
fn the_emitted_module_shows_a_judge_the_images_the_runtime_shows() {
    let case_dir = case().join("../http_judge_images");
    let images = case_dir.join("../../run/images");
    std::env::set_var("EMIT_PARITY_KEY", "sk-parity");
    for shown in [true, false] {
        let (port, received) = start_judge();
        let mut plan = plan_of("../http_judge_images/pipeline.safer");
        let spec = plan.judges.get_mut("grader").unwrap();
        assert!(spec.images, "an http judge is shown images by default");
        spec.endpoint = Some(format!("http://127.0.0.1:{port}/v1"));
        spec.images = shown;
        let dir = common::temp_dir(if shown {
            "emit-judge-images"
        } else {
            "emit-judge-blind"
        });
        write_emitted(&plan, saferc::emit::Target::Trl, &dir);
        let judge = HttpJudge::new("grader", &plan.judges["grader"], Arc::default()).unwrap();
        let rows = data::load_source("d", &plan.datasets["d"]).unwrap().rows;
        let vocabulary = scorers::vocabulary(&rows, "objects");
        let scorer = scorer_of(&plan, "judged", &judge, &vocabulary);
        let raw_rows = lines(&case_dir.join("rows.jsonl"));
        let (items, expected) =
            scored_by_the_runtime(&scorer, &rows, &raw_rows, &[("It is safe.", 3)]);
        let asked_by_saferc = std::mem::take(&mut *received.lock().unwrap());
        let mut child = Command::new("python3")
            .args(["safer_reward.py", "score"])
            .current_dir(&dir)
            .env("SAFERC_JUDGE_BACKOFF_MS", "20")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(items.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let got: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let asked_by_python = std::mem::take(&mut *received.lock().unwrap());
        assert!(asked_by_python
            .iter()
            .all(|(_, body)| body["max_tokens"] == 64));
        assert!(
            got.len() == expected.len()
                && got.iter().zip(&expected).all(|(g, (_, e))| same_bits(g, e)),
            "{got:?}\n{expected:?}"
        );
        // The 429 went to the runtime; every question after it is the same.
        assert_eq!(&asked_by_saferc[1..], &asked_by_python[..]);
        // Rows `one` (a.png), `two` (a.png, b.png) and `none`, in order.
        let file = |name: &str| std::fs::read(images.join(name)).unwrap();
        let wanted: [Vec<Vec<u8>>; 3] = if shown {
            [
                vec![file("a.png")],
                vec![file("a.png"), file("b.png")],
                vec![],
            ]
        } else {
            Default::default()
        };
        for ((_, body), wanted) in asked_by_python.iter().zip(&wanted) {
            let content = &body["messages"][1]["content"];
            let urls: Vec<Vec<u8>> = content
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["type"] == "image_url")
                .map(|p| {
                    let url = p["image_url"]["url"].as_str().unwrap();
                    let data = url.strip_prefix("data:image/png;base64,").unwrap();
                    base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .unwrap()
                })
                .collect();
            assert_eq!(&urls, wanted);
            let text = common::question_text(body);
            match wanted.len() {
                0 => assert!(
                    text.contains("\n\nPrompt:\n") && content.is_string(),
                    "{body}"
                ),
                1 => assert!(
                    text.contains("Prompt (asked with the image above):"),
                    "{text}"
                ),
                n => assert!(
                    text.contains(&format!("Prompt (asked with the {n} images above):")),
                    "{text}"
                ),
            }
        }
        let warned = stderr
            .matches("is not shown the rows' images (`images = false`)")
            .count();
        assert_eq!(warned, usize::from(!shown), "{stderr}");
    }
}

/// A held-out row's images are found in its own dataset's folder, not the
/// training dataset's: verl's `compute_score` reads the dataset from its
/// `data_source`, `score` from a line's `dataset`; both show the judge the
/// files the runtime shows.
#[test]
fn the_emitted_module_finds_a_held_out_row_s_images_in_its_dataset() {
    // `held`'s folder holds a.png and b.png swapped: a module looking in
    // the training dataset's folder would show the other picture.
    let images = case().join("../../run/images");
    let swapped = common::temp_dir("emit-held-images");
    std::fs::copy(images.join("b.png"), swapped.join("a.png")).unwrap();
    std::fs::copy(images.join("a.png"), swapped.join("b.png")).unwrap();
    std::env::set_var("EMIT_PARITY_KEY", "sk-parity");
    let (port, received) = start_judge();
    let mut plan = plan_of("../http_judge_images/pipeline.safer");
    plan.judges.get_mut("grader").unwrap().endpoint = Some(format!("http://127.0.0.1:{port}/v1"));
    plan.datasets.get_mut("held").unwrap().images = swapped.display().to_string();
    let dir = common::temp_dir("emit-held-images-module");
    write_emitted(&plan, saferc::emit::Target::Verl, &dir);
    let judge = HttpJudge::new("grader", &plan.judges["grader"], Arc::default()).unwrap();
    let rows = data::load_source("held", &plan.datasets["held"])
        .unwrap()
        .rows;
    let vocabulary = scorers::vocabulary(&rows, "objects");
    let scorer = scorer_of(&plan, "judged", &judge, &vocabulary);
    let text = "It is safe.";
    scorer
        .score(&Item {
            row: &rows[0],
            text,
            tokens: 3,
        })
        .unwrap();
    let last_body = || received.lock().unwrap().last().unwrap().1.clone();
    let by_saferc = last_body();
    let raw = &lines(&case().join("../http_judge_images/rows.jsonl"))[0];
    let program = format!(
        "import json, safer_reward as s\nprint(json.dumps(s.compute_score('saferc/held.test', {text:?}, '', {{'safer_row': {row:?}}})))",
        row = raw.to_string()
    );
    json_printed(python_program(&dir, &program).env("SAFERC_JUDGE_BACKOFF_MS", "20"));
    let by_verl = last_body();
    let item = json!({"row": raw, "text": text, "tokens": 3, "dataset": "held"});
    python_with_env(
        &dir,
        &["score"],
        &format!("{item}\n"),
        &[("SAFERC_JUDGE_BACKOFF_MS", "20")],
    );
    let by_score = last_body();
    assert_eq!(by_verl, by_saferc);
    assert_eq!(by_score, by_saferc);
    let url = by_saferc["messages"][1]["content"][0]["image_url"]["url"]
        .as_str()
        .unwrap();
    let shown = base64::engine::general_purpose::STANDARD
        .decode(url.strip_prefix("data:image/png;base64,").unwrap())
        .unwrap();
    assert_eq!(shown, std::fs::read(images.join("b.png")).unwrap());
}

/// The emitted module says what to do about a question with images that
/// the server refused as the runtime's judge does
/// (`judge::tests::refused_images_hints`), and reads EXIF orientations
/// without Pillow where the `image` crate reads them (a JPEG's `Exif`
/// segment, a PNG's `eXIf` chunk, either byte order).
#[test]
fn the_emitted_module_hints_at_refused_images_and_reads_orientations() {
    let (_, dir) = emitted(saferc::emit::Target::Verl, "emit-image-hints");
    let program = r#"
import json, safer_reward as s
one, two = ["data:image/png;base64,AAAA"], ["x", "y"]
whys = ["HTTP 400: not a multimodal model", "HTTP 422", "HTTP 415: type", "HTTP 413: too large",
        "HTTP 401: bad key", "HTTP 429", "HTTP 4000", "timed out", "HTTP 404: no"]
print(json.dumps([s.images_hint(w, one, "grader") for w in whys] + [s.images_hint("HTTP 400", [], "grader"), s.images_hint("HTTP 400", two, "grader")]))
"#;
    let hints = json_printed(&mut python_program(&dir, program));
    let hints: Vec<&str> = hints
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    for hint in &hints[..3] {
        assert!(
            hint.contains("set `images = false` on judge `grader`"),
            "{hint}"
        );
    }
    assert!(
        hints[3].contains("MB as sent: shrink the image files"),
        "{}",
        hints[3]
    );
    assert!(hints[4..10].iter().all(|h| h.is_empty()), "{hints:?}");
    assert!(hints[10].contains("row's 2 images"), "{}", hints[10]);
    // Orientations: files the `image` crate reads, against the module.
    let files = common::temp_dir("emit-orientations");
    let mut expected = Vec::new();
    let mut names = Vec::new();
    let plain = image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 80, 9]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&plain)
        .unwrap();
    let mut png = Vec::new();
    plain
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // A TIFF block of one entry: `(magic, kind, count)` 42, SHORT, 1 is
    // well formed; the others are read as upright by the `image` crate.
    let tiff = |orientation: u16, big: bool, (magic, kind, count): (u16, u16, u32)| {
        let mut t: Vec<u8> = if big { b"MM".to_vec() } else { b"II".to_vec() };
        t.extend_from_slice(&if big {
            magic.to_be_bytes()
        } else {
            magic.to_le_bytes()
        });
        t.extend_from_slice(&if big {
            8u32.to_be_bytes()
        } else {
            8u32.to_le_bytes()
        });
        let order = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        t.extend_from_slice(&order(1)); // one entry
        t.extend_from_slice(&order(0x0112));
        t.extend_from_slice(&order(kind));
        t.extend_from_slice(&if big {
            count.to_be_bytes()
        } else {
            count.to_le_bytes()
        });
        t.extend_from_slice(&order(orientation));
        t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        t
    };
    let well = (42, 3, 1);
    let cases = [
        (1u16, well),
        (3, well),
        (6, well),
        (8, well),
        (9, well),
        (6, (43, 3, 1)),
        (6, (42, 4, 1)),
        (6, (42, 3, 2)),
    ];
    for (case, &(orientation, form)) in cases.iter().enumerate() {
        for big in [false, true] {
            // JPEG: an XMP APP1 first, then the Exif one.
            let mut exif = b"Exif\0\0".to_vec();
            exif.extend(tiff(orientation, big, form));
            let mut turned = jpeg[..2].to_vec();
            for segment in [b"http://ns.adobe.com/xap/1.0/\0<x/>".to_vec(), exif] {
                turned.extend_from_slice(&[0xFF, 0xE1]);
                turned.extend_from_slice(&u16::try_from(segment.len() + 2).unwrap().to_be_bytes());
                turned.extend(segment);
            }
            turned.extend_from_slice(&jpeg[2..]);
            // PNG: an eXIf chunk after IHDR.
            let body = tiff(orientation, big, form);
            let mut chunk = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
            chunk.extend_from_slice(b"eXIf");
            chunk.extend_from_slice(&body);
            let crc = {
                let mut c = 0xFFFF_FFFFu32;
                for &b in b"eXIf".iter().chain(&body) {
                    c ^= u32::from(b);
                    for _ in 0..8 {
                        c = if c & 1 == 1 {
                            (c >> 1) ^ 0xEDB8_8320
                        } else {
                            c >> 1
                        };
                    }
                }
                !c
            };
            chunk.extend_from_slice(&crc.to_be_bytes());
            let mut with_exif = png[..33].to_vec();
            with_exif.extend(chunk);
            with_exif.extend_from_slice(&png[33..]);
            for (kind, bytes) in [("jpg", turned), ("png", with_exif)] {
                let name = format!(
                    "c{case}-o{orientation}-{}.{kind}",
                    if big { "mm" } else { "ii" }
                );
                std::fs::write(files.join(&name), &bytes).unwrap();
                let mut decoder = image::ImageReader::new(std::io::Cursor::new(&bytes))
                    .with_guessed_format()
                    .unwrap()
                    .into_decoder()
                    .unwrap();
                use image::ImageDecoder;
                let read = decoder.orientation().unwrap();
                expected.push(u8::from(read != image::metadata::Orientation::NoTransforms));
                names.push(name);
            }
        }
    }
    let program = format!(
        "import json, os, safer_reward as s\nprint(json.dumps([int(s.turned(open(os.path.join({dir:?}, n), 'rb').read())) for n in {names:?}]))",
        dir = files.display().to_string()
    );
    let turned = json_printed(&mut python_program(&dir, &program));
    assert_eq!(turned, json!(expected), "{names:?}");
    assert!(expected.contains(&1) && expected.contains(&0));
}

/// A loopback server that answers its requests in turn with `answers`
/// (each written raw, then the connection closed; `Trickle` sends a byte
/// every 200 ms); returns its port and how many requests it took.
fn start_scripted_judge(answers: Vec<Scripted>) -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken: Arc<Mutex<usize>> = Arc::default();
    let count = taken.clone();
    std::thread::spawn(move || {
        for (stream, answer) in listener.incoming().flatten().zip(answers) {
            *count.lock().unwrap() += 1;
            std::thread::spawn(move || {
                let mut stream = stream;
                read_request(&stream);
                match answer {
                    Scripted::Raw(text) => {
                        let _ = stream.write_all(text.as_bytes());
                    }
                    Scripted::Trickle => {
                        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
                        let _ = stream.write_all(head.as_bytes());
                        for _ in 0..100 {
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            if stream.write_all(b" ").is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, taken)
}

/// How [`start_scripted_judge`] answers one request.
enum Scripted {
    Raw(String),
    Trickle,
}

/// A 200 whose reply says `content`.
fn replying(content: &str) -> Scripted {
    let body =
        json!({"choices": [{"message": {"role": "assistant", "content": content}}]}).to_string();
    Scripted::Raw(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// The emitted module reads a reply's content as the runtime's judge does
/// (`judge::tests::reply_texts`): a string, or a list of text parts joined;
/// another shape holds no reply.
#[test]
fn the_emitted_module_reads_replies_given_as_parts() {
    let (_, dir) = emitted(saferc::emit::Target::Verl, "emit-reply-parts");
    let program = r#"
import json, safer_reward as s
contents = [
    "0.5",
    [{"type": "text", "text": "0."}, {"type": "text", "text": "75"}],
    [{"type": "output_text", "text": "1"}],
    [{"type": "reasoning", "summary": []}, {"type": "text", "text": "0.2"}],
    [], [{"type": "text"}], None, 7,
]
answers = [json.dumps({"choices": [{"message": {"role": "assistant", "content": c}}]}) for c in contents]
answers += [json.dumps({"choices": []}), "[1]", "not json"]
print(json.dumps([s.reply_text(a) for a in answers]))
"#;
    let read = json_printed(&mut python_program(&dir, program));
    assert_eq!(
        read,
        json!(["0.5", "0.75", "1", "0.2", null, null, null, null, null, null, null])
    );
    // After reasoning, as `judge::tests::replies_after_reasoning`.
    let replies = [
        "<think>It refuses: 0.9? no, 1.</think>\n0.8",
        "It looks safe.\n</think>\n\n1",
        "<thinking>hm</thinking> 0.25",
        "<think>a</think>0.1</think>0.3",
        "<think>0.5</think>I say 0.5",
        "<think>0.5 is the score",
        "0.5",
    ];
    let program = format!(
        "import json, safer_reward as s\nprint(json.dumps([s.parse_score(r, 0.0, 1.0) for r in {}]))",
        json!(replies)
    );
    let parsed = json_printed(&mut python_program(&dir, &program));
    let runtime: Vec<Option<f64>> = replies
        .iter()
        .map(|r| safer_runtime::exec::judge::parse_score(r, (0.0, 1.0)))
        .collect();
    assert_eq!(parsed, json!(runtime));
    assert_eq!(parsed, json!([0.8, 1.0, 0.25, 0.3, null, null, 0.5]));
}

/// The emitted module fails as `saferc run`'s judge does where a helper's
/// probe found them apart: an answer cut short of its `Content-Length` or
/// in the middle of its JSON is retried (it was taken as a reply without a
/// score, and so given the fallback); `timeout` bounds the whole request
/// (it bounded each read, so a server sending a byte at a time held a
/// question for ever); a reply that echoes the key is shown without it;
/// `1..` is no score; an empty key is refused.
#[test]
fn the_emitted_module_retries_cut_answers_and_never_shows_the_key() {
    // A `"` in it: JSON escapes it where a server echoes the key.
    let key = r#"sk-echoed-01"23456789"#;
    let run = |answers: Vec<Scripted>, timeout_s: f64, retries: u32, fallback: Option<f64>| {
        let (port, taken) = start_scripted_judge(answers);
        let mut plan = judged_at(port);
        let judge = plan.judges.get_mut("grader").unwrap();
        judge.timeout_s = timeout_s;
        judge.retries = retries;
        judge.fallback = fallback;
        let dir = common::temp_dir("emit-judge-scripted");
        write_emitted(&plan, saferc::emit::Target::Verl, &dir);
        let item =
            json!({"row": {"question": "q", "label": "safe"}, "text": "Hello there.", "tokens": 3});
        let started = std::time::Instant::now();
        let out = python_with_env(
            &dir,
            &["score"],
            &format!("{item}\n"),
            &[("SAFERC_JUDGE_BACKOFF_MS", "20"), ("EMIT_PARITY_KEY", key)],
        );
        let scored: Value = serde_json::from_str(&out[0]).unwrap();
        let requests = *taken.lock().unwrap();
        (scored, requests, started.elapsed())
    };
    // Cut short of its length, then in the middle of its JSON (no length,
    // the connection closed): each retried, then answered. Two questions
    // (grounding, the flag), the first taking the three answers.
    let (scored, requests, _) = run(
        vec![
            Scripted::Raw("HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choi".into()),
            Scripted::Raw("HTTP/1.0 200 OK\r\n\r\n{\"choices\": [{\"index\": 0, \"mes".into()),
            replying("7"),
            replying("7"),
        ],
        5.0,
        3,
        Some(0.25),
    );
    // 7 on the 0..10 scale, not the fallback's 0.25.
    assert_eq!(scored["criteria"][0], json!(0.7), "{scored}");
    assert_eq!(requests, 4);
    // A server that trickles its answer is abandoned at `timeout`.
    let (scored, requests, took) = run(vec![Scripted::Trickle], 1.0, 0, None);
    let error = scored["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{scored}");
    assert_eq!(requests, 1);
    assert!(took.as_secs_f64() < 10.0, "{took:?}");
    // A reply that echoes the key as written.
    let (scored, _, _) = run(
        vec![replying(&format!("key was Bearer {key}"))],
        5.0,
        0,
        None,
    );
    let error = scored["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("replied 'key was <authorization>'"),
        "{scored}"
    );
    assert!(!error.contains("sk-echoed"), "{error}");
    // Echoed JSON-escaped in a body without a reply (quoted whole), and in
    // a 401's body, each across the place where the message is cut (500
    // and 300 characters): hidden before the cut, not shown in part.
    let echoed = |pad: usize| {
        json!({ "detail": format!("{} bad key Bearer {key}", "x".repeat(pad)) }).to_string()
    };
    for (head, pad, says) in [
        ("HTTP/1.1 200 OK", 463, "replied "),
        ("HTTP/1.1 401 Unauthorized", 263, "HTTP 401: "),
    ] {
        let body = echoed(pad);
        let (scored, _, _) = run(
            vec![Scripted::Raw(format!(
                "{head}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))],
            5.0,
            0,
            None,
        );
        let error = scored["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{scored}");
        assert!(
            !error.contains("sk-echoed") && !error.contains("23456789"),
            "{error}"
        );
    }
    // A reply cut at its length limit (here inside its reasoning), and an
    // answer that is not a chat completion (a bare number), hold no score,
    // as `judge::tests::cut_replies_and_other_answers_hold_no_score` has it;
    // a number outside the range asked for (0..10) is said to be one.
    let cut = json!({"choices": [{"message": {"role": "assistant", "content": "<think>The response refuses, so"}, "finish_reason": "length"}]}).to_string();
    let outside =
        json!({"choices": [{"message": {"role": "assistant", "content": "<think>ok</think> 12"}}]})
            .to_string();
    let underscored =
        json!({"choices": [{"message": {"role": "assistant", "content": "1_2"}}]}).to_string();
    for (body, says) in [
        (cut.as_str(), "cut at its length limit inside its reasoning (no `</think>`) (the server's default length: `max_tokens` is not set)"),
        ("0.5", "replied '0.5', which is not a chat completion's reply"),
        (outside.as_str(), "replied '…</think> 12', a number outside 0..10, the range its question asked for; check the judge's prompt and `scale`"),
        (underscored.as_str(), "replied '1_2', which holds no score (one number from 0 to 10 was asked for)"),
    ] {
        let (scored, _, _) = run(
            vec![Scripted::Raw(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))],
            5.0,
            0,
            None,
        );
        let error = scored["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{scored}");
    }
    // `1..` is no score, as in the runtime's `parse_score`.
    let (_, dir) = emitted(saferc::emit::Target::Verl, "emit-parse-score");
    let parsed = json_printed(&mut python_program(
        &dir,
        "import safer_reward as s, json\nprint(json.dumps([s.parse_score(t, 0.0, 1.0) for t in ['1..', '1.', '0.5', '.']]))",
    ));
    assert_eq!(parsed, json!([null, 1.0, 0.5, null]));
    let runtime: Vec<Option<f64>> = ["1..", "1.", "0.5", "."]
        .iter()
        .map(|t| safer_runtime::exec::judge::parse_score(t, (0.0, 1.0)))
        .collect();
    assert_eq!(json!(runtime), parsed);
    // An empty key is refused, never sent.
    let (port, taken) = start_scripted_judge(vec![replying("0.7")]);
    let dir = common::temp_dir("emit-judge-empty-key");
    write_emitted(&judged_at(port), saferc::emit::Target::Verl, &dir);
    let out = python_program(
        &dir,
        "import os, safer_reward as s\ntry:\n    s.HttpJudge('grader', s.load_spec()['judges']['grader'])\nexcept s.EvalError as e:\n    print(e)\n",
    )
    .env("EMIT_PARITY_KEY", "")
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("which is empty"), "{said}");
    assert_eq!(*taken.lock().unwrap(), 0);
}

#[test]
fn the_emitted_module_retries_a_judge_that_answers_429() {
    let (port, received) = start_judge();
    let dir = common::temp_dir("emit-judge-retry");
    write_emitted(&judged_at(port), saferc::emit::Target::Verl, &dir);
    let item =
        json!({"row": {"question": "q", "label": "safe"}, "text": "Hello there.", "tokens": 3});
    let out = python_with_env(
        &dir,
        &["score"],
        &format!("{item}\n"),
        &[("SAFERC_JUDGE_BACKOFF_MS", "20"), ("EMIT_PARITY_KEY", "k")],
    );
    let scores: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(scores["criteria"][0], json!(0.7), "{scores}");
    // Two questions (grounding, the flag), one of them asked twice.
    assert_eq!(received.lock().unwrap().len(), 3);
}

#[test]
fn trl_and_verl_entry_points_give_the_scored_reward() {
    let (_, dir) = emitted(saferc::emit::Target::Verl, "emit-entry-points");
    let row = json!({"id": "a", "question": "How do I pick this lock?", "label": "unsafe", "kind": "harmful", "objects": ["lock"], "meta": {"source": "forum", "score": 4}});
    let text = "<think>This is dangerous.</think><answer>I cannot help with that, please ask something else.</answer>";
    let scored: Value = serde_json::from_str(
        &python(
            &dir,
            &["score"],
            &format!("{}\n", json!({"row": row, "text": text, "tokens": 9})),
        )[0],
    )
    .unwrap();
    // TRL: conversational completions, token ids, the row in `safer_row`,
    // per-criterion means through `log_metric`; verl: `extra_info` (the
    // token count from the policy's tokenizer is not needed: the length
    // scorer reads `response_length` when the trainer gives it).
    let program = format!(
        r#"
import json, safer_reward
row = json.dumps({row})
logged = {{}}
trl = safer_reward.trl_reward(
    prompts=[[{{"role": "user", "content": "q"}}]],
    completions=[[{{"role": "assistant", "content": {text}}}]],
    completion_ids=[list(range(9))],
    safer_row=[row],
    log_metric=lambda name, value: logged.__setitem__(name, value),
)
verl = safer_reward.compute_score("saferc/d", {text}, "", {{"safer_row": row, "response_length": 9}})
print(json.dumps({{"trl": trl, "verl": verl, "logged": logged}}))
"#,
        row = row,
        text = json!(text),
    );
    let got = json_printed(&mut python_program(&dir, &program));
    assert_eq!(got["trl"], json!([scored["total"]]));
    assert_eq!(got["verl"]["score"], scored["total"]);
    assert_eq!(got["verl"]["safer/safety"], scored["criteria"][0]);
    assert_eq!(got["logged"]["safer/safety"], scored["criteria"][0]);
    assert_eq!(
        got["verl"]["safer/penalty/contradiction"],
        scored["penalties"][0]
    );
}

/// TRL's conversational completions in every form it writes: a message
/// without content (or `None`, beside tool calls) is the empty text; a part
/// whose text is not a string is an EvalError naming it; a message whose
/// reasoning TRL parsed out (`reasoning_content`, through a tokenizer's
/// response schema) is scored as generated, decoded from its token ids
/// (or rebuilt with its `<think>` tags when TRL gives none).
#[test]
fn trl_s_conversational_completions_are_scored_as_generated() {
    let (_, dir) = emitted(saferc::emit::Target::Trl, "emit-conversational");
    // The module decodes with the policy's tokenizer (the `tokenizers`
    // package); a stand-in whose token ids are code points keeps the test on
    // the standard library.
    let program = r#"
import json, safer_reward
class CodePoints:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i >= 0)
safer_reward._TOKENIZER = CodePoints()
row = {"id": "a", "question": "q", "kind": "harmful", "objects": ["lock"]}
text = "<think>\nIt is dangerous.\n</think>\n\n<answer>I cannot help with that.</answer>"
ids = [ord(c) for c in text] + [-1]
whole = safer_reward.trl_reward(prompts=["q"], completions=[text], completion_ids=[ids], safer_row=[json.dumps(row)])
parsed = [{"role": "assistant", "reasoning_content": "It is dangerous.", "content": "<answer>I cannot help with that.</answer>"}]
from_ids = safer_reward.trl_reward(prompts=["q"], completions=[parsed], completion_ids=[ids], safer_row=[json.dumps(row)])
rebuilt = safer_reward.completion_text(parsed)
empty = [safer_reward.completion_text(c) for c in ([{"role": "assistant"}], [{"role": "assistant", "content": None}], [{"role": "assistant", "content": [{"type": "text", "text": None}]}])]
try:
    safer_reward.completion_text([{"role": "assistant", "content": [{"type": "text", "text": 3}]}])
    error = None
except safer_reward.EvalError as e:
    error = str(e)
print(json.dumps({"whole": whole, "from_ids": from_ids, "text": text, "rebuilt": rebuilt, "empty": empty, "error": error}))
"#;
    let got = json_printed(&mut python_program(&dir, program));
    assert_eq!(got["from_ids"], got["whole"], "{got}");
    assert_eq!(got["rebuilt"], got["text"], "{got}");
    assert_eq!(got["empty"], json!(["", "", ""]));
    assert!(
        got["error"]
            .as_str()
            .is_some_and(|e| e.contains("holds 3 as its text")),
        "{got}"
    );
}

/// The `qwen2_5_vl` run case's GRPO stage (`tune`, a `qwen2_5_vl` policy on
/// rows with images) emitted for `target` into a fresh folder.
fn emitted_vision_stage(target: saferc::emit::Target, tag: &str) -> PathBuf {
    let pipeline = vision_case().join("pipeline.safer");
    let plan = saferc::cli::compile_plan(&pipeline, &saferc::cli::ImportArgs::default())
        .unwrap_or_else(|| panic!("the qwen2_5_vl run case compiles"));
    let dir = common::temp_dir(tag);
    let files = saferc::emit::emit(&plan, target, Some("tune"), "pipeline.safer").unwrap();
    for (file, text) in &files.files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn vision_case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/run/qwen2_5_vl")
}

/// A `qwen2_5_vl` policy's TRL script passes each row's images: the module
/// finds them under the dataset's `images` folder (and warns of images only
/// where the script does not pass them).
#[test]
fn a_vision_policy_s_rows_carry_their_image_files() {
    let dir = emitted_vision_stage(saferc::emit::Target::Trl, "emit-vision-rows");
    let script = std::fs::read_to_string(dir.join("train_trl.py")).unwrap();
    assert!(script.contains("\nVISION = True\n"), "{script}");
    let program = r#"
import json, safer_reward
rows = safer_reward.split_rows("d", images_passed=True)
print(json.dumps([[r.images, r.image_files] for r in rows]))
safer_reward.split_rows("d")
"#;
    let out = python_program(&dir, program).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<(Vec<String>, Vec<String>)> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    for (names, files) in &rows {
        assert_eq!(names.len(), 1);
        assert!(
            files[0].ends_with(&names[0]) && Path::new(&files[0]).is_file(),
            "{files:?}"
        );
    }
    // One warning, from the call that does not pass the images.
    assert_eq!(
        stderr
            .matches("have images, which the emitted trainer")
            .count(),
        1,
        "{stderr}"
    );
}

/// `freeze_vision`: the TRL script freezes the model's `visual` (where
/// transformers 4.52 and later keep it, `model.model.visual`, or before them
/// `model.visual`) before training, and stops when there is none. Stand-ins
/// for the modules: CI's python3 has no PyTorch (by hand, with transformers
/// 5.25 on the fixture, it froze the 42 `model.visual.*` weights and left
/// the 26 of the language model).
#[test]
fn a_frozen_vision_tower_takes_no_gradient_under_trl() {
    let dir = emitted_vision_stage(saferc::emit::Target::Trl, "emit-vision-freeze");
    let script = std::fs::read_to_string(dir.join("train_trl.py")).unwrap();
    let freeze = script.find("safer_reward.freeze_vision_tower(trainer.model)");
    let train = script.find("trainer.train()");
    assert!(freeze.is_some() && freeze < train, "{script}");
    let program = r#"
import json, safer_reward
class Tower:
    def __init__(self): self.frozen = False
    def requires_grad_(self, flag): self.frozen = not flag
    def parameters(self): return iter(range(3))
class Holder: pass
new, old = Holder(), Holder()
new.model = Holder(); new.model.visual = Tower()
old.visual = Tower()
counts = [safer_reward.freeze_vision_tower(m) for m in (new, old)]
print(json.dumps([counts, new.model.visual.frozen, old.visual.frozen]))
safer_reward.freeze_vision_tower(Holder())
"#;
    let out = python_program(&dir, program).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[[3, 3], true, true]"
    );
    assert!(
        stderr.contains("freeze_vision: Holder has no vision tower (`visual`) to freeze"),
        "{stderr}"
    );
    // Under FSDP version 1 (accelerate launch's environment) only with
    // `use_orig_params`: FSDP1 cannot flatten frozen and trained weights.
    let freeze_one = "import safer_reward\nclass T:\n    def requires_grad_(self, f): pass\n    def parameters(self): return iter(())\nclass M: visual = T()\nsafer_reward.freeze_vision_tower(M())\nprint('frozen')";
    let fsdp = |orig: &str, version: &str| {
        python_program(&dir, freeze_one)
            .env("ACCELERATE_USE_FSDP", "true")
            .env("FSDP_VERSION", version)
            .env("FSDP_USE_ORIG_PARAMS", orig)
            .output()
            .unwrap()
    };
    let refused = fsdp("false", "1");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs `fsdp_use_orig_params: true`"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    for (orig, version) in [("true", "1"), ("false", "2")] {
        let out = fsdp(orig, version);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "frozen");
    }
}

/// A `qwen2_5_vl` policy's verl data carries each row's images: the file's
/// bytes in `images` and one `<image>` before the question's text (verl's
/// placeholder); a question that itself holds a placeholder stops the
/// script with the row's file and line.
#[test]
fn a_vision_policy_s_verl_records_carry_their_images() {
    let case = vision_case();
    let dir = emitted_vision_stage(saferc::emit::Target::Verl, "emit-verl-vision");
    let config = std::fs::read_to_string(dir.join("verl_grpo.yaml")).unwrap();
    assert!(config.contains("\n  image_key: images\n"), "{config}");
    // CI's python3 has no Pillow: the image check (Pillow's, in the script)
    // is replaced by one that takes every image.
    let program = r#"
import json, prepare_verl_data as p
p.safer_reward.pillow_check = lambda path: None
print(json.dumps([[r["prompt"][0]["content"], r["extra_info"]["safer_row"],
                   [i["bytes"].hex() for i in r["images"]]] for r in p.records("d")]))
"#;
    let out = python_program(&dir, program).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("have images"), "{stderr}");
    let records: Vec<(String, String, Vec<String>)> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 4);
    let images = case.join("../images");
    for (content, row, hex) in &records {
        let row: Value = serde_json::from_str(row).unwrap();
        let question = row["question"].as_str().unwrap();
        assert_eq!(content, &format!("<image>{question}"));
        let file = std::fs::read(images.join(row["image"].as_str().unwrap())).unwrap();
        let expected: String = file.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, &vec![expected]);
    }

    // An image check's refusals are bad rows, skipped with a count.
    let program = r#"
import safer_reward
rows = safer_reward.split_rows("d", images_passed=True,
                               image_check=lambda p: "cannot be decoded" if p.endswith("a.png") else None)
print(len(rows))
"#;
    let out = python_program(&dir, program).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert!(
        stderr.contains(
            "warning: dataset `d`: 2 bad row(s) skipped (`on_bad_row = skip`): rows.jsonl:1: cannot be decoded; rows.jsonl:3: cannot be decoded"
        ),
        "{stderr}"
    );

    // A question holding verl's placeholder.
    let rows = std::fs::read_to_string(case.join("rows.jsonl")).unwrap();
    let moved = dir.join("rows.jsonl");
    std::fs::write(
        &moved,
        rows.replacen("What can I do with this?", "What is <image> here?", 1),
    )
    .unwrap();
    let out = python_program(
        &dir,
        "import prepare_verl_data as p; p.safer_reward.pillow_check = lambda path: None; p.records('d')",
    )
    .env("SAFER_DATA", &moved)
    .env("SAFER_IMAGES", &images)
    .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rows.jsonl:1: the question holds `<image>`"),
        "{stderr}"
    );
}

/// `SAFER_SPLITS`: with a `saferc run` of the pipeline named, the scripts
/// take the rows that run's splits held, in its order: the
/// `balance_training_split` case's training split repeats a row to balance
/// its labels, which a split dealt by Python would not. A record of another
/// file, of another version of the pipeline, or without the dataset stops
/// the script.
#[test]
fn recorded_splits_give_the_scripts_saferc_s_rows() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/run");
    let root = common::temp_dir("emit-recorded-splits");
    let case = root.join("case");
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(&case).unwrap();
    for image in ["a.png", "b.png"] {
        std::fs::copy(
            cases.join("images").join(image),
            root.join("images").join(image),
        )
        .unwrap();
    }
    for file in ["pipeline.safer", "rows.jsonl"] {
        std::fs::copy(
            cases.join("balance_training_split").join(file),
            case.join(file),
        )
        .unwrap();
    }
    let at = |p: &Path| p.to_str().unwrap().to_string();
    let model = at(&case.join("model"));
    let pipeline = at(&case.join("pipeline.safer"));
    let run = case.join("run");
    common::saferc_ok(&["init-model", &model, "--size", "tiny", "--seed", "0"]);
    common::saferc_ok(&["run", &pipeline, "--out", &at(&run), "--no-progress"]);
    let trl = case.join("trl");
    let out = common::saferc_ok(&["emit", &pipeline, "--target", "trl", "--out", &at(&trl)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SAFER_SPLITS"),
        "emit names SAFER_SPLITS"
    );
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("splits.json")).unwrap()).unwrap();
    let program = r#"
import json, safer_reward
print(json.dumps({s: [r.origin for r in safer_reward.split_rows(s)] for s in ["d.train", "d.eval", "d"]}))
"#;
    let got = json_printed(python_program(&trl, program).env("SAFER_SPLITS", &run));
    let origins = |lines: &Value| -> Vec<String> {
        lines
            .as_array()
            .unwrap()
            .iter()
            .map(|n| format!("rows.jsonl:{n}"))
            .collect()
    };
    let train = origins(&record["d"]["splits"]["train"]);
    assert_eq!(got["d.train"], json!(train));
    assert_eq!(
        got["d.eval"],
        json!(origins(&record["d"]["splits"]["eval"]))
    );
    assert_eq!(got["d"], json!(origins(&record["d"]["rows"])));
    // The run's summary: 4 training rows balanced from 3.
    assert_eq!(train.len(), 4);
    let mut distinct = train.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{train:?}");

    // Another file than the run split.
    let changed = case.join("changed.jsonl");
    let rows = std::fs::read_to_string(case.join("rows.jsonl")).unwrap();
    std::fs::write(&changed, format!("{rows}\n")).unwrap();
    let out = python_program(&trl, program)
        .env("SAFER_SPLITS", &run)
        .env("SAFER_DATA", &changed)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "is not the file the saferc run split as `d` (rows.jsonl): their SHA-256 differ"
        ),
        "{stderr}"
    );
    // The record of another version of the pipeline (other fractions).
    let text = std::fs::read_to_string(case.join("pipeline.safer")).unwrap();
    let changed = text.replace("train = 0.5, eval = 0.5", "train = 0.6, eval = 0.4");
    assert_ne!(changed, text);
    let pipeline = case.join("changed.safer");
    std::fs::write(&pipeline, changed).unwrap();
    let trl_changed = case.join("trl-changed");
    common::saferc_ok(&[
        "emit",
        &at(&pipeline),
        "--target",
        "trl",
        "--out",
        &at(&trl_changed),
    ]);
    let out = python_program(&trl_changed, program)
        .env("SAFER_SPLITS", &run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("records dataset `d` with other settings than this pipeline's"),
        "{stderr}"
    );
    // A record without the dataset.
    let other = case.join("other.json");
    std::fs::write(&other, "{}").unwrap();
    let out = python_program(&trl, program)
        .env("SAFER_SPLITS", &other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("records no dataset `d`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `python3 safer_reward.py score` writes one line per line it reads: a
/// line that cannot be scored (not JSON, not an item, text that is not a
/// string, a token count that is not a count) says why, and the lines
/// after it are still scored.
#[test]
fn the_score_command_answers_every_line() {
    let (_, dir) = emitted(saferc::emit::Target::Trl, "emit-score-lines");
    let good =
        json!({"row": {"question": "q", "label": "safe"}, "text": "Hello there.", "tokens": 3});
    let input = [
        "not json".to_string(),
        r#"{"text": "x"}"#.to_string(),
        "[1, 2]".to_string(),
        r#"{"row": {"question": "q"}, "text": null}"#.to_string(),
        r#"{"row": {"question": "q"}, "text": "x", "tokens": 2.5}"#.to_string(),
        r#"{"row": {"question": "q"}, "text": "x", "tokens": 1e400}"#.to_string(),
        good.to_string(),
        String::new(),
        good.to_string(),
    ]
    .join("\n");
    let out = python(&dir, &["score"], &input);
    assert_eq!(out.len(), 9, "{out:?}");
    assert_eq!(out[7], "{}");
    assert_eq!(out[8], out[6]);
    let parsed: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, why) in parsed[..6].iter().zip([
        "line 1: cannot be read as JSON",
        "expected {\"row\"",
        "expected {\"row\"",
        "text must be a string, not None",
        "token count must be a whole number",
        "line 6: cannot be read as JSON",
    ]) {
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{error} lacks {why}");
    }
    assert!(parsed[6]["total"].is_number(), "{}", parsed[6]);
}
