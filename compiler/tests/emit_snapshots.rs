//! `saferc emit`'s trainer files, pinned: the TRL script and the verl
//! config of the quickstart (reflection, curation, dynamic sampling and KL
//! in the loss: several notes), of the two-stage run case (a GRPO stage
//! after an SFT warm-up) and of the `qwen2_5_vl` run case (the rows'
//! images passed to TRL and verl), with absolute paths shown as `<repo>`; and the
//! errors emit gives instead of files.

#![allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation

use saferc::emit::{emit, Emitted, Target};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap()
}

fn plan(file: &str) -> safer_ir::plan::Plan {
    saferc::cli::compile_plan(&repo().join(file), &saferc::cli::ImportArgs::default())
        .unwrap_or_else(|| panic!("{file} compiles"))
}

/// The trainer files and notes, paths redacted (the reward module and
/// spec are checked by `emit_parity`).
fn shown(emitted: &Emitted) -> String {
    let repo = repo().display().to_string();
    let mut out = String::new();
    for (name, text) in &emitted.files {
        if name == "safer_reward.py" || name == "reward_spec.json" {
            continue;
        }
        out.push_str(&format!(
            "===== {name}\n{}\n",
            text.replace(&repo, "<repo>")
        ));
    }
    out.push_str("===== notes\n");
    for note in &emitted.notes {
        out.push_str(&format!("- {}\n", note.replace(&repo, "<repo>")));
    }
    out
}

#[test]
fn quickstart_for_trl() {
    let emitted = emit(
        &plan("examples/quickstart.safer"),
        Target::Trl,
        None,
        "examples/quickstart.safer",
    )
    .unwrap();
    insta::assert_snapshot!(shown(&emitted));
}

#[test]
fn quickstart_for_verl() {
    let emitted = emit(
        &plan("examples/quickstart.safer"),
        Target::Verl,
        None,
        "examples/quickstart.safer",
    )
    .unwrap();
    insta::assert_snapshot!(shown(&emitted));
}

#[test]
fn a_stage_after_a_warm_up_for_verl() {
    let emitted = emit(
        &plan("tests/cases/run/two_stages/pipeline.safer"),
        Target::Verl,
        Some("tune"),
        "pipeline.safer",
    )
    .unwrap();
    insta::assert_snapshot!(shown(&emitted));
}

#[test]
fn a_qwen2_5_vl_stage_for_trl() {
    let emitted = emit(
        &plan("tests/cases/run/qwen2_5_vl/pipeline.safer"),
        Target::Trl,
        Some("tune"),
        "pipeline.safer",
    )
    .unwrap();
    insta::assert_snapshot!(shown(&emitted));
}

#[test]
fn a_qwen2_5_vl_stage_for_verl() {
    let emitted = emit(
        &plan("tests/cases/run/qwen2_5_vl/pipeline.safer"),
        Target::Verl,
        Some("tune"),
        "pipeline.safer",
    )
    .unwrap();
    insta::assert_snapshot!(shown(&emitted));
}

#[test]
fn emit_names_what_it_cannot_write() {
    let two = plan("tests/cases/run/two_stages/pipeline.safer");
    let error =
        |plan: &safer_ir::plan::Plan, stage| emit(plan, Target::Trl, stage, "p").unwrap_err();
    assert_eq!(
        error(&two, Some("warm")),
        "stage `warm` is not a GRPO stage; emit writes GRPO stages (this pipeline's: `tune`)"
    );
    assert_eq!(
        error(&two, Some("nope")),
        "there is no stage `nope`; the GRPO stages are `tune`"
    );
    // The HTTP judge case with its judge made a local model.
    let mut judged = plan("tests/cases/emit/http_judge/pipeline.safer");
    judged.judges.get_mut("grader").unwrap().kind = "model".into();
    let message = error(&judged, None);
    assert!(
        message.contains("a local model (`kind = model`)") && message.contains("kind = http"),
        "{message}"
    );
    // An SFT stage of a pipeline with no GRPO stage.
    let mut warm_only = two.clone();
    warm_only.stages.retain(|s| s.name == "warm");
    assert_eq!(
        error(&warm_only, Some("warm")),
        "stage `warm` is not a GRPO stage, and the pipeline has none; emit writes GRPO stages"
    );
    // TRL samples at least two completions per prompt; verl takes one.
    let mut single = plan("examples/quickstart.safer");
    for rollout in single.rollouts.values_mut() {
        rollout.group = 1;
    }
    assert_eq!(
        error(&single, None),
        "stage `safer_grpo` samples one completion per prompt (`group = 1`), and TRL's GRPOTrainer needs at least 2 (`num_generations`): give its rollout `group = 2` or more, or emit it for verl"
    );
    assert!(emit(&single, Target::Verl, None, "p").is_ok());
    let mut several = plan("examples/quickstart.safer");
    let mut copy = several.stages[0].clone();
    copy.name = "again".into();
    several.stages.push(copy);
    assert_eq!(
        error(&several, None),
        "the pipeline has several GRPO stages (`safer_grpo`, `again`); name one with --stage"
    );
}

#[test]
fn a_judge_endpoint_s_credential_is_named_masked_in_a_note() {
    let mut judged = plan("tests/cases/emit/http_judge/pipeline.safer");
    judged.judges.get_mut("grader").unwrap().endpoint =
        Some("https://user:s3cret@judge.example/v1".into());
    let emitted = emit(&judged, Target::Verl, None, "p").unwrap();
    let note = emitted
        .notes
        .iter()
        .find(|n| n.contains("holds a credential"))
        .unwrap_or_else(|| panic!("{:?}", emitted.notes));
    assert!(!note.contains("s3cret"), "{note}");
    // The module needs it to ask the judge.
    let spec = &emitted.files[1];
    assert_eq!(spec.0, "reward_spec.json");
    assert!(spec.1.contains("user:s3cret@judge.example"));
}

/// The pipeline's file name is written into the scripts' docstring and the
/// config's comment as a quoted string: a Windows-style `\U`, quotes or a
/// newline in it leave the Python valid and the YAML one comment.
#[test]
fn the_pipeline_s_name_is_quoted_in_the_files() {
    let name = "C:\\Users\\q\"\"\"\n.safer";
    let quickstart = plan("examples/quickstart.safer");
    let trl = emit(&quickstart, Target::Trl, None, name).unwrap();
    let script = &trl
        .files
        .iter()
        .find(|(n, _)| n == "train_trl.py")
        .unwrap()
        .1;
    let first = script.lines().next().unwrap();
    assert_eq!(
        first,
        "\"\"\"Stage `safer_grpo` of \"C:\\\\Users\\\\q\\\"\\\"\\\"\\n.safer\" on TRL's GRPOTrainer (written by `saferc emit --target trl`)."
    );
    let verl = emit(&quickstart, Target::Verl, None, name).unwrap();
    let config = &verl
        .files
        .iter()
        .find(|(n, _)| n == "verl_grpo.yaml")
        .unwrap()
        .1;
    assert!(config
        .lines()
        .next()
        .unwrap()
        .ends_with("(written by `saferc emit --target verl`)."));
    assert!(config.lines().nth(1).unwrap().starts_with("# Run:"));
}

/// verl's `data.seed` shuffles the training rows: the stage's seed. Without
/// `steps`, the held-out split is still scored after training (verl scores
/// it at its last step when `test_freq` is positive).
#[test]
fn verl_takes_the_stage_s_seed_and_scores_after_training_without_steps() {
    let mut quickstart = plan("examples/quickstart.safer");
    quickstart.stages[0].seed = 11;
    quickstart.stages[0].steps = None;
    assert!(quickstart.stages[0].eval_data.is_some());
    let verl = emit(&quickstart, Target::Verl, None, "p").unwrap();
    let config = &verl
        .files
        .iter()
        .find(|(n, _)| n == "verl_grpo.yaml")
        .unwrap()
        .1;
    assert!(config.contains("\n  seed: 11\n"), "{config}");
    let freq = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("test_freq: "))
        .unwrap();
    assert!(freq.parse::<i64>().unwrap() > 0, "{freq}");
    assert!(config.contains("val_before_train: true"));
}

/// A tokenizer folder apart from the weights reaches TRL's trainer (and is
/// named in a note for verl, which reads it from the weights' folder); a
/// judge's `ca_file` reaches the reward module.
#[test]
fn a_separate_tokenizer_and_a_judge_s_ca_file_carry_over() {
    let mut judged = plan("tests/cases/emit/http_judge/pipeline.safer");
    judged.models.get_mut("policy").unwrap().tokenizer = Some("/models/tok".into());
    judged.judges.get_mut("grader").unwrap().ca_file = Some("/certs/ca.pem".into());
    let trl = emit(&judged, Target::Trl, None, "p").unwrap();
    let file = |emitted: &Emitted, name: &str| {
        emitted
            .files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
            .clone()
    };
    let script = file(&trl, "train_trl.py");
    assert!(
        script.contains("TOKENIZER = sys.argv[2] if len(sys.argv) > 2 else \"/models/tok\"")
            && script.contains("processing_class=processing_class(),"),
        "{script}"
    );
    let spec: serde_json::Value = serde_json::from_str(&file(&trl, "reward_spec.json")).unwrap();
    assert_eq!(spec["judges"]["grader"]["ca_file"], "/certs/ca.pem");
    let verl = emit(&judged, Target::Verl, None, "p").unwrap();
    assert!(
        verl.notes
            .iter()
            .any(|n| n.contains("keeps its tokenizer in \"/models/tok\"")),
        "{:?}",
        verl.notes
    );
    // Without one, TRL loads the model folder's own.
    let plain = emit(
        &plan("tests/cases/emit/http_judge/pipeline.safer"),
        Target::Trl,
        None,
        "p",
    )
    .unwrap();
    assert!(file(&plain, "train_trl.py")
        .contains("TOKENIZER = sys.argv[2] if len(sys.argv) > 2 else None"));
}

/// Regex patterns that Python's `re` reads otherwise are named in a note
/// wherever they reach `regex(...)`: written in the call, or through a
/// user scorer's parameter (its default, or a call's argument).
#[test]
fn regex_notes_follow_patterns_through_scorer_parameters() {
    let dir = std::env::temp_dir().join(format!("saferc-emit-regex-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("d.jsonl"), "{\"question\": \"q\"}\n").unwrap();
    std::fs::write(
        dir.join("p.safer"),
        r#"
model policy { arch = qwen2, weights = "w" }
scorer ends(p: string = "done$") = regex(p)
scorer spaced(n: number) = regex("ha{1, 2}!") * n
rubric r {
  criterion a weight 1 { scorer = ends() }
  criterion b weight 1 { scorer = ends("(?x)[a b]c") }
  criterion c weight 1 { scorer = spaced(1) }
  criterion d weight 1 { scorer = regex("plain") }
}
dataset d { source = jsonl("d.jsonl") }
rollout ro { group = 2, max_tokens = 8 tokens }
train t {
  policy = policy
  data = d
  rollout = ro
  reward = r
  grpo { batch = 2 prompts }
  steps = 1 step
}
"#,
    )
    .unwrap();
    let plan = saferc::cli::compile_plan(&dir.join("p.safer"), &saferc::cli::ImportArgs::default())
        .unwrap_or_else(|| panic!("the regex pipeline compiles"));
    let notes = emit(&plan, Target::Trl, None, "p").unwrap().notes;
    let regex_notes: Vec<&String> = notes.iter().filter(|n| n.starts_with("regex ")).collect();
    for pattern in ["\"done$\"", "\"(?x)[a b]c\"", "\"ha{1, 2}!\""] {
        assert!(
            regex_notes
                .iter()
                .any(|n| n.starts_with(&format!("regex {pattern} "))),
            "{pattern}: {regex_notes:?}"
        );
    }
    assert_eq!(regex_notes.len(), 3, "{regex_notes:?}");
    std::fs::remove_dir_all(&dir).ok();
}
