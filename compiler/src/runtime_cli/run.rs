//! `saferc run FILE [--out RUN_DIR] [--device D] [--resume RUN_DIR [--force]]`:
//! compile a pipeline and execute it (`safer_runtime::exec`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use safer_runtime::device::DeviceChoice;
use safer_runtime::exec::{self, ExecError, RunOptions};
use saferc::cli::{compile_plan, run_defaults, ImportArgs};

/// Arguments of `saferc run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline.
    pub file: PathBuf,
    /// The run directory (default: `runs/<pipeline>-<time>` in the current folder, or in the project's `[paths] runs`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// With `--resume`: continue even though the pipeline changed since the run started.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// `auto`, `cpu`, `wgpu` or `cuda` (`auto`: the models' `device`, else the project's `[run] device`, else the best built in).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// No progress output (a live bar on a terminal; where stderr is not one, a plain line at a stage's first and last step and at most one every 10 s between).
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub imports: ImportArgs,
}

/// Runs the pipeline; exit code 0 done, 1 failed, 2 bad request, 130 interrupted.
pub fn run(args: RunArgs) -> i32 {
    if args.force && args.resume.is_none() {
        safer_runtime::stderr_line!("error: `--force` continues a run whose pipeline changed, so it goes with `--resume RUN_DIR`");
        return 2;
    }
    let Some(plan) = compile_plan(&args.file, &args.imports) else {
        return 1;
    };
    let defaults = run_defaults(&args.file);
    let project_device = match defaults.device.as_deref().map(str::parse::<DeviceChoice>) {
        Some(Ok(d)) => Some(d),
        Some(Err(message)) => {
            safer_runtime::stderr_line!("error: safer.toml [run] device: {message}");
            return 2;
        }
        None => None,
    };
    let device = match run_device(&plan, args.device, project_device) {
        Ok(d) => d,
        Err(message) => {
            safer_runtime::stderr_line!("error: {message}");
            return 2;
        }
    };
    if let Some(reason) = safer_runtime::device::not_built(device) {
        safer_runtime::stderr_line!("error: {reason}");
        return 2;
    }
    let (out, resume) = match (&args.resume, &args.out) {
        (Some(dir), _) => (dir.clone(), true),
        (None, Some(dir)) => (dir.clone(), false),
        (None, None) => {
            let stem = args
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            let runs = defaults
                .runs
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs"));
            (claim_run_folder(&runs, &stem), false)
        }
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            safer_runtime::stderr_line!("\nsecond interrupt: stopping without a checkpoint");
            std::process::exit(130);
        }
        // ctrlc's `termination` feature: SIGINT, SIGTERM and SIGHUP.
        safer_runtime::stderr_line!("\ninterrupted (Ctrl+C, SIGTERM or SIGHUP): stopping after this training step, with a checkpoint, or after this batch outside training (interrupt again to stop at once)");
    }) {
        safer_runtime::stderr_line!(
            "warning: Ctrl+C and termination signals will not save a checkpoint: {e}"
        );
    }
    let options = RunOptions {
        out: out.clone(),
        resume,
        force: args.force,
        device,
        source: args.file.display().to_string(),
        progress: !args.no_progress,
        interrupt,
    };
    // The command that continues this run, for the messages of an
    // interrupted one.
    // A forced resume that stopped may not have replaced the manifest yet:
    // the command keeps `--force`.
    let continue_with = format!(
        "continue with `saferc run {} --resume {}{}`",
        args.file.display(),
        out.display(),
        if args.force { " --force" } else { "" }
    );
    // The runtime names the run directory once it exists.
    let result = exec::run(&plan, &options);
    if result.is_err() && args.out.is_none() && !resume {
        // The folder claimed above, when the run stopped before writing
        // into it (`remove_dir` takes only an empty folder).
        if std::fs::remove_dir(&out).is_ok() {
            if let Some(runs) = out.parent() {
                let _ = std::fs::remove_dir(runs);
            }
        }
    }
    match result {
        Ok(summary) => {
            print!("{}", summary_table(&summary));
            print!("{}", evals_table(&summary));
            println!("run directory: {}", out.display());
            0
        }
        Err(e @ (ExecError::Interrupted { .. } | ExecError::Stopped { .. })) => {
            safer_runtime::stderr_line!("{e}; {continue_with}");
            130
        }
        // A failure the interrupt caused (a judge whose retry it cut short).
        Err(e) if options.interrupt.load(std::sync::atomic::Ordering::SeqCst) => {
            safer_runtime::stderr_line!(
                "interrupted: {e} (training checkpoints are kept; {continue_with})"
            );
            130
        }
        Err(e @ ExecError::Usage(_)) => {
            safer_runtime::stderr_line!("error: {e}");
            2
        }
        // A file that could not be written (a full disk, a lost mount; a
        // trained model's folder too): the checkpoints written before it
        // are intact.
        Err(
            e @ (ExecError::Io { .. }
            | ExecError::Model(safer_runtime::model::ModelError::Io { .. })),
        ) if out.join("manifest.json").is_file() => {
            let kept = match latest_checkpoint(&out) {
                Some((stage, step)) => format!(
                    "the run's checkpoints are kept (the latest: stage `{stage}`, step {step})"
                ),
                None => {
                    "no checkpoint was written yet, so the resumed run starts its first stage again"
                        .into()
                }
            };
            safer_runtime::stderr_line!(
                "error: {e}\nhelp: {kept}; once the cause is fixed, {continue_with}"
            );
            1
        }
        Err(e) => {
            safer_runtime::stderr_line!("error: {e}");
            1
        }
    }
}

/// The newest checkpoint in run folder `out`: its stage's folder name and
/// step (the last stage to hold one, by the newest file).
fn latest_checkpoint(out: &Path) -> Option<(String, u64)> {
    let stages = std::fs::read_dir(out.join("checkpoints")).ok()?;
    stages
        .flatten()
        .filter_map(|stage| {
            let (step, dir) = safer_runtime::exec::run_dir::list_checkpoints(&stage.path())
                .into_iter()
                .max_by_key(|(step, _)| *step)?;
            let when = std::fs::metadata(&dir).and_then(|m| m.modified()).ok()?;
            Some((when, stage.file_name().to_string_lossy().into_owned(), step))
        })
        .max()
        .map(|(_, stage, step)| (stage, step))
}

/// A new folder `runs/STEM-SECS` for a run without `--out`, created here
/// so that it is this run's: two runs started in the same second get
/// `-2`, `-3`, ... (creating a folder succeeds for one of them only).
fn claim_run_folder(runs: &Path, stem: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let _ = std::fs::create_dir_all(runs);
    let first = runs.join(format!("{stem}-{secs}"));
    std::iter::once(first.clone())
        .chain((2..1000).map(|n| runs.join(format!("{stem}-{secs}-{n}"))))
        .find(|p| match std::fs::create_dir(p) {
            Err(e) => e.kind() != std::io::ErrorKind::AlreadyExists,
            Ok(()) => true,
        })
        .unwrap_or(first)
}

/// The one device of the run: `--device`, or the device the models name
/// (`device = cuda` in a `model` block) when `--device` is `auto`, or the
/// project's `[run] device` when neither names one.
fn run_device(
    plan: &safer_ir::plan::Plan,
    flag: DeviceChoice,
    project: Option<DeviceChoice>,
) -> Result<DeviceChoice, String> {
    let mut named: Vec<(String, DeviceChoice)> = Vec::new();
    for (name, spec) in &plan.models {
        let d: DeviceChoice = spec.device.parse()?;
        if d != DeviceChoice::Auto {
            named.push((name.clone(), d));
        }
    }
    let conflict = |(a, da): &(String, DeviceChoice), other: String| {
        format!("model `{a}` asks for device `{da}` but {other}; `saferc run` places every model on one device")
    };
    if flag != DeviceChoice::Auto {
        if let Some(m) = named.iter().find(|(_, d)| *d != flag) {
            return Err(conflict(m, format!("the run is on `{flag}` (--device)")));
        }
        return Ok(flag);
    }
    match named.as_slice() {
        [] => Ok(project.unwrap_or(DeviceChoice::Auto)),
        [first, rest @ ..] => match rest.iter().find(|(_, d)| *d != first.1) {
            Some((b, db)) => Err(conflict(first, format!("model `{b}` asks for `{db}`"))),
            None => Ok(first.1),
        },
    }
}

/// The held-out table printed at the end of a run: each criterion, the
/// reward, and each criterion per `label` value, before and after
/// training; empty without both evaluations.
fn summary_table(summary: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let eval = &summary["eval"];
    let (Some(before), Some(after)) = (eval["before"].as_object(), eval["after"].as_object())
    else {
        return out;
    };
    let _ = writeln!(
        out,
        "\n{:<20} {:>8} {:>8} {:>8}",
        "held-out", "before", "after", "change"
    );
    for (k, b) in before {
        if k == "count" {
            continue;
        }
        // A criterion without a mean on one side (over no rows: `null`)
        // shows `-` there.
        let (b, a) = (b.as_f64(), after.get(k).and_then(|v| v.as_f64()));
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let change = match (b, a) {
            (Some(b), Some(a)) => format!("{:+.3}", a - b),
            _ => "-".to_string(),
        };
        let _ = writeln!(out, "{k:<20} {:>8} {:>8} {change:>8}", cell(b), cell(a));
    }
    if let (Some(bl), Some(al)) = (
        eval["before_by_label"].as_object(),
        eval["after_by_label"].as_object(),
    ) {
        // Each criterion per `label` value (the reward and counts are above).
        let criteria: Vec<&String> = before
            .keys()
            .filter(|k| !matches!(k.as_str(), "count" | "reward"))
            .collect();
        for (label, b) in bl {
            let Some(a) = al.get(label) else {
                continue; // a label only the first stage's held-out split has
            };
            for key in &criteria {
                if let (Some(x), Some(y)) = (b[key.as_str()].as_f64(), a[key.as_str()].as_f64()) {
                    let _ = writeln!(
                        out,
                        "{:<20} {x:>8.3} {y:>8.3} {:>+8.3}",
                        labelled(key, label),
                        y - x
                    );
                }
            }
        }
    }
    out
}

/// A criterion's name with a `label` value, `safety (unsafe)`; the rows
/// without a label's key is in brackets already: `safety (no label)`.
fn labelled(criterion: &str, label: &str) -> String {
    match label.starts_with('(') {
        true => format!("{criterion} {label}"),
        false => format!("{criterion} ({label})"),
    }
}

/// The results of the pipeline's `eval` declarations, printed after the
/// held-out table: each criterion's mean and the reward, then each
/// criterion per `label` value; empty without evaluations.
fn evals_table(summary: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let Some(evals) = summary["evals"].as_object() else {
        return out;
    };
    let cell = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |v| format!("{v:.3}"));
    for (name, result) in evals {
        let Some(means) = result["means"].as_object() else {
            continue;
        };
        let count = means
            .get("count")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let mut lines = vec![(format!("eval {name}"), format!("n = {count}"))];
        for (k, v) in means.iter().filter(|(k, _)| *k != "count") {
            lines.push((k.clone(), cell(v)));
        }
        for (label, by) in result["by_label"].as_object().into_iter().flatten() {
            for (k, v) in by.as_object().into_iter().flatten() {
                if !matches!(k.as_str(), "count" | "reward") {
                    lines.push((labelled(k, label), cell(v)));
                }
            }
        }
        // Names as wide as the widest, at least 20 columns.
        let width = lines
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0)
            .max(20);
        let _ = writeln!(out);
        for (k, v) in lines {
            let _ = writeln!(out, "{k:<width$} {v:>8}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{evals_table, summary_table};
    use serde_json::json;

    #[test]
    fn eval_results_are_printed() {
        let summary = json!({"evals": {"e": {
            "means": {"safety": 0.25, "reward": 0.5, "count": 4},
            "by_label": {"unsafe": {"safety": 0.0, "reward": 0.1, "count": 2},
                         "(no label)": {"safety": 1.0, "reward": 1.0, "count": 1}},
        }}});
        let table = evals_table(&summary);
        assert!(table.contains("safety (no label)       1.000"), "{table}");
        assert!(table.contains("eval e                  n = 4"), "{table}");
        assert!(table.contains("safety                  0.250"), "{table}");
        assert!(table.contains("reward                  0.500"), "{table}");
        assert!(table.contains("safety (unsafe)         0.000"), "{table}");
        assert!(
            !table.contains("count") && !table.contains("reward (unsafe)"),
            "{table}"
        );
        assert_eq!(evals_table(&json!({"evals": {}})), "");
    }

    #[test]
    fn the_table_survives_stages_with_different_rubrics_and_labels() {
        // The first stage's rubric has `safety`, the last's only `helpful`;
        // the label `benign` is only in the first stage's held-out split.
        let summary = json!({"eval": {
            "before": {"safety": 0.5, "reward": 0.5, "count": 4},
            "after": {"helpful": 1.0, "reward": 1.0, "count": 4},
            "before_by_label": {"benign": {"safety": 1.0}, "unsafe": {"safety": 0.0}},
            "after_by_label": {"unsafe": {"helpful": 1.0}},
        }});
        let table = summary_table(&summary);
        assert!(
            table.contains("safety                  0.500        -        -"),
            "{table}"
        );
        assert!(
            table.contains("reward                  0.500    1.000   +0.500"),
            "{table}"
        );
        assert!(
            !table.contains("benign") && !table.contains("count"),
            "{table}"
        );
        assert_eq!(summary_table(&json!({"eval": {"before": null}})), "");
    }
}
