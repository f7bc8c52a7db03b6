//! The run directory: `manifest.json` (program and rubric hashes, seeds,
//! versions of saferc, burn and rustc, device), `metrics.jsonl` (one line
//! per step), `samples.jsonl` (one line per completion), `checkpoints/`
//! (model directories written atomically, with the training state),
//! `models/` (each stage's final policy), `summary.json` and `reward.svg`,
//! `images.json` (each dataset's images' digest) and `splits.json` (the
//! rows each split held, for the emitted trainer scripts).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use safer_ir::plan::Plan;
use serde::Serialize;
use serde_json::{json, Value};

use super::ExecError;

/// The burn release the runtime is built with, as the workspace's
/// `Cargo.lock` names it (read by `build.rs`; a test checks it).
pub const BURN_VERSION: &str = env!("SAFERC_BURN_VERSION");

/// An open run directory.
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
    metrics: BufWriter<File>,
    samples: BufWriter<File>,
    /// The manifest a forced resume writes once its checks pass
    /// ([`RunDir::commit_forced`]).
    forced_manifest: Option<Value>,
    _lock: RunLock,
}

/// The lock file of a run that is open ([`RunLock`]).
const LOCK_FILE: &str = "run.lock";

/// `run.lock` in a run directory: a file the saferc process that has the
/// run open holds an OS lock on (`flock`), with that process's id inside
/// for the message. A second `saferc run` on the same folder (a `--resume`
/// while the run still goes) is refused instead of interleaving its lines
/// and checkpoints with the first's. The file goes when the run ends; the
/// lock of a killed process is released by the kernel with the process, so
/// the file it leaves is taken over, and two processes that find it at the
/// same moment cannot both take it.
struct RunLock {
    path: PathBuf,
    /// The open file the lock is held on (released when it closes).
    _file: File,
    /// Its device and inode: a `run.lock` at `path` that is another file
    /// (or none) means the folder was removed or replaced under the run.
    id: (u64, u64),
}

/// The refusal of a folder another run holds; `holder` its process id.
fn in_use(dir: &Path, holder: &str) -> ExecError {
    let holder = match holder {
        "" => String::new(),
        pid => format!(" (process {pid})"),
    };
    ExecError::Usage(format!(
        "`{}` is in use by another saferc run{holder}; let it finish or stop it (Ctrl+C saves a checkpoint) first, or pick another `--out`",
        dir.display()
    ))
}

impl RunLock {
    /// The "in use" refusal [`RunLock::acquire`] gives while another run
    /// holds `dir`, found without creating or writing the lock file (a
    /// finished run's folder may be read-only); anything else is no refusal.
    fn refuse_if_held(dir: &Path) -> Result<(), ExecError> {
        let path = dir.join(LOCK_FILE);
        let Ok(file) = std::fs::File::open(&path) else {
            return Ok(());
        };
        match file.try_lock_shared() {
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(in_use(dir, holder.trim()))
            }
            _ => Ok(()),
        }
    }

    fn acquire(dir: &Path) -> Result<Self, ExecError> {
        use std::io::{Seek, Write};
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(LOCK_FILE);
        // A folder (or a pipe) there would fail to open with the OS's bare
        // words, or wait forever.
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(ExecError::Usage(format!(
                "`{}` is not a file: saferc keeps the lock of the run in this folder there; remove it, or choose another folder",
                path.display()
            )));
        }
        for _ in 0..3 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(in_use(dir, holder.trim()));
                }
                // A filesystem without file locks (some network ones):
                // the run goes on, unguarded, and says so.
                Err(std::fs::TryLockError::Error(e))
                    if e.kind() == std::io::ErrorKind::Unsupported =>
                {
                    crate::stderr_line!(
                        "warning: `{}` is on a filesystem without file locks: a second saferc run on this folder would not be refused",
                        dir.display()
                    );
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&path, e)),
            }
            // The run that held the file before may have removed it between
            // this open and this lock: then the lock is on a file no one
            // else finds, and the lock is taken again on the one there now.
            let locked = file.metadata().map_err(|e| io(&path, e))?;
            let current = std::fs::metadata(&path).ok();
            if current.is_none_or(|m| (m.dev(), m.ino()) != (locked.dev(), locked.ino())) {
                continue;
            }
            file.set_len(0).map_err(|e| io(&path, e))?;
            file.rewind().map_err(|e| io(&path, e))?;
            file.write_all(std::process::id().to_string().as_bytes())
                .map_err(|e| io(&path, e))?;
            return Ok(RunLock {
                path,
                _file: file,
                id: (locked.dev(), locked.ino()),
            });
        }
        Err(ExecError::Usage(format!(
            "`{}` is being opened by another saferc run at the same moment",
            dir.display()
        )))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked: a process waiting on this file finds
        // it gone and locks a new one (see `acquire`). Only this run's own
        // file: one there now that is another's (the folder removed and
        // made again by another run) stays.
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The SHA-256 of each dataset's source file (those that can be read), for
/// the manifest: a resumed run says when its data changed.
fn data_hashes(plan: &Plan) -> std::collections::BTreeMap<String, String> {
    plan.datasets
        .iter()
        .filter_map(|(name, d)| {
            let hash = super::checkpoint::sha256_of(Path::new(&d.source)).ok()?;
            Some((name.clone(), format!("sha256:{hash}")))
        })
        .collect()
}

/// `plan` as the manifest records it: a password in a judge's endpoint URL
/// (`https://user:secret@host/v1`) masked, as API keys are never written.
fn shown_plan(plan: &Plan) -> Plan {
    let mut shown = plan.clone();
    for judge in shown.judges.values_mut() {
        if let Some(endpoint) = &mut judge.endpoint {
            *endpoint = safer_ir::masked_url(endpoint);
        }
    }
    shown
}

/// Whether folder `dir` holds the `run.lock` of this process's run: the
/// file [`RunLock::acquire`] wrote this process's id into.
fn holds_this_process_s_lock(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(LOCK_FILE))
        .is_ok_and(|holder| holder.trim() == std::process::id().to_string())
}

fn io(path: &Path, e: std::io::Error) -> ExecError {
    ExecError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Makes folder `dir` and the folders above it that are missing, inside a
/// run's folder only: the nearest folder above it that exists must be in a
/// folder holding this process's `run.lock`. A run whose folder was
/// removed or moved while it went on stops there, rather than make the
/// folder again without its manifest, lock and metrics (nothing could
/// resume it); another run's lock further up (a run folder made inside
/// another's, or a lock a killed run left) is not this run's.
///
/// # Errors
/// No run's folder above `dir`, or I/O errors.
pub fn make_run_folder(dir: &Path) -> Result<(), ExecError> {
    if dir.is_dir() {
        return Ok(());
    }
    let existing = dir
        .ancestors()
        .skip(1)
        .find(|a| a.as_os_str().is_empty() || a.is_dir());
    let in_a_run = existing.is_some_and(|e| e.ancestors().any(holds_this_process_s_lock));
    if !in_a_run {
        return Err(ExecError::Io {
            path: dir.to_path_buf(),
            message: "is in a run folder that was removed or moved while the run went on (no `run.lock` of this run above it): the run stops rather than make the folder again, since what it wrote there is lost; start it again".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    // Each folder made is an entry of the one above it: flushed, so that
    // after a power cut a checkpoint is not lost with its folder.
    for made in dir.ancestors().take_while(|a| Some(*a) != existing) {
        crate::durable::sync_parent(made);
    }
    Ok(())
}

/// Writes `bytes` to `path` through a flushed temporary file and a rename
/// ([`crate::durable::replace_file`]); its folder is made first, inside a
/// run's folder ([`make_run_folder`]).
///
/// # Errors
/// I/O errors naming the path.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExecError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        make_run_folder(dir)?;
    }
    // A write that fails (a full disk) leaves neither the file nor half of
    // it; one that succeeds is on the disk before it replaces the old one.
    crate::durable::replace_file(path, bytes).map_err(|e| io(path, e))
}

/// Whether folder `path` holds files a run did not leave. What a run
/// killed before its manifest was written leaves (its lock and a
/// half-written manifest) does not count.
fn holds_other_files(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            // `manifest.tmp`: the name earlier builds gave the temporary.
            name != LOCK_FILE && name != ".manifest.json.tmp" && name != "manifest.tmp"
        })
    })
}

impl RunDir {
    /// Creates `path` for a new run (it must be empty or absent) and writes
    /// the manifest, with the `warnings` the checks before the run gave.
    ///
    /// # Errors
    /// A run already there (continue it with `--resume`), a file or a
    /// folder holding other files at `path` (a run never writes among
    /// files it did not make), or I/O errors.
    pub fn create(
        path: &Path,
        plan: &Plan,
        device: &str,
        source: &str,
        warnings: &[String],
    ) -> Result<Self, ExecError> {
        if path.join("manifest.json").exists() {
            // A run still going there is refused as in use (its lock), not
            // offered for resuming.
            RunLock::refuse_if_held(path)?;
            let worked = ["checkpoints", "models", "summary.json", "curation"]
                .iter()
                .any(|p| path.join(p).exists());
            let started = match worked {
                true => "",
                // A run that stopped in its first phase (a dataset file
                // missing, weights that do not load) has nothing to lose.
                false => {
                    " that stopped before it made anything (remove the folder to start afresh)"
                }
            };
            return Err(ExecError::Usage(format!(
                "`{}` already holds a run{started}; continue it with `saferc run {source} --resume {}` or pick another `--out`",
                path.display(),
                path.display()
            )));
        }
        if path.exists() && !path.is_dir() {
            return Err(ExecError::Usage(format!(
                "`{}` is a file; `--out` names the folder a new run goes into",
                path.display()
            )));
        }
        if !path.exists() && path.symlink_metadata().is_ok() {
            let target = std::fs::read_link(path).unwrap_or_default();
            return Err(ExecError::Usage(format!(
                "`{}` is a symbolic link to `{}`, which does not exist; create that folder, or name another `--out`",
                path.display(),
                target.display()
            )));
        }
        if holds_other_files(path) {
            return Err(ExecError::Usage(format!(
                "`{}` holds files and no run; a new run goes into an empty or new folder, so pick another `--out`",
                path.display()
            )));
        }
        std::fs::create_dir_all(path).map_err(|e| {
            ExecError::Usage(format!(
                "cannot make the run folder `{}` ({e}); name a folder that can be written with `--out`",
                path.display()
            ))
        })?;
        crate::durable::sync_parent(path);
        let lock = RunLock::acquire(path)?;
        let manifest = json!({
            "saferc": env!("CARGO_PKG_VERSION"),
            "versions": {
                "saferc": env!("CARGO_PKG_VERSION"),
                "burn": BURN_VERSION,
                "rustc": env!("SAFERC_RUSTC_VERSION"),
            },
            "pipeline": source,
            "program_hash": plan.program_hash,
            "rubric_hashes": plan.rubric_hashes,
            // Every seed the run draws from: each stage's (sampling, data
            // order) and each dataset's (its split and curation).
            "seeds": {
                "stages": plan.stages.iter().map(|s| (s.name.clone(), s.seed)).collect::<std::collections::BTreeMap<_, _>>(),
                "datasets": plan.datasets.iter().map(|(name, d)| (name.clone(), d.seed)).collect::<std::collections::BTreeMap<_, _>>(),
            },
            "device": device,
            "threads": rayon::current_num_threads(),
            "data": data_hashes(plan),
            "models": super::model_fingerprint::fingerprints(plan),
            "plan": shown_plan(plan),
            "warnings": warnings,
        });
        write_atomically(
            &path.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Self::open(path, lock)
    }

    /// Opens an existing run to continue it: the manifest's program hash
    /// must equal `plan`'s unless `force`.
    ///
    /// # Errors
    /// No manifest, a different pipeline without `force`, I/O errors.
    pub fn resume(path: &Path, plan: &Plan, force: bool, source: &str) -> Result<Self, ExecError> {
        let manifest_path = path.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).map_err(|_| {
            let shown = path.display();
            ExecError::Usage(if !path.exists() {
                format!("`{shown}` does not exist, so there is no run to resume; start one with `--out {shown}`")
            } else if !path.is_dir() {
                format!("`{shown}` is a file, not a run directory; `--resume` takes the folder an earlier run wrote (its `--out`)")
            } else if holds_other_files(path) {
                format!("`{shown}` is not a run directory (no manifest.json) and holds other files; `--resume` takes the folder of an earlier run's `--out`, and a new run goes into an empty or new folder")
            } else {
                format!("`{shown}` is not a run directory (no manifest.json): a run killed before writing it has nothing to resume; start it again with `--out {shown}`")
            })
        })?;
        let manifest: Value = serde_json::from_str(&text).map_err(|e| {
            ExecError::Usage(format!(
                "`{}` is not valid JSON: {e}",
                manifest_path.display()
            ))
        })?;
        let Some(recorded) = manifest["program_hash"].as_str() else {
            return Err(ExecError::Usage(format!(
                "`{}` has no `program_hash`: it is not the manifest a `saferc run` wrote (edited or damaged?), so nothing says which pipeline the run was",
                manifest_path.display()
            )));
        };
        let lock = RunLock::acquire(path)?;
        if recorded != plan.program_hash && !force {
            return Err(ExecError::Usage(format!(
                "the pipeline changed since this run started (run {recorded}, now {}); resuming would mix two pipelines in one run. Start a new run, or pass `--force` to continue anyway",
                plan.program_hash
            )));
        }
        // The data cursor of a checkpoint counts rows of the data the run
        // started with.
        let now = data_hashes(plan);
        if let Some(then) = manifest["data"].as_object() {
            for (dataset, hash) in then {
                if now
                    .get(dataset)
                    .is_some_and(|h| Some(h.as_str()) != hash.as_str())
                {
                    let source = plan
                        .datasets
                        .get(dataset)
                        .map_or("?", |d| d.source_written.as_str());
                    crate::stderr_line!(
                        "warning: dataset `{dataset}`: its source {source} changed since this run started; the resumed stages draw from the new rows where the old ones left off (a curated dataset whose curation is reused keeps the rows it kept)"
                    );
                }
            }
        }
        // A stage resumed from its checkpoint reads its model's folder for
        // the reference, the tokenizer and the chat template.
        for model in super::model_fingerprint::changed(plan, &manifest["models"]) {
            let folder = plan
                .models
                .get(&model)
                .map_or("?", |m| m.weights_written.as_str());
            crate::stderr_line!(
                "warning: model `{model}`: its folder {folder} changed since this run started (its config, tokenizer, chat template or weights); the resumed stages read the new files: a reference model taken from it, its tokenizer and chat template, and any stage that starts from it"
            );
        }
        // Continued under `--force`: the manifest describes the pipeline the
        // run goes on with, and keeps the hashes it had before; first the
        // checkpoints must be within the new `steps` (a refused resume
        // leaves the manifest as it was).
        if recorded != plan.program_hash {
            for stage in &plan.stages {
                if let (Some(steps), Some((at, _))) = (
                    stage.steps,
                    list_checkpoints(&path.join("checkpoints").join(file_name(&stage.name))).pop(),
                ) {
                    super::checkpoint::within_steps(&stage.name, at, steps)?;
                }
            }
            let mut updated = manifest.clone();
            let mut before: Vec<Value> = manifest["forced_from"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            before.push(Value::String(recorded.to_string()));
            updated["forced_from"] = Value::Array(before);
            updated["program_hash"] = json!(plan.program_hash);
            updated["pipeline"] = json!(source);
            updated["rubric_hashes"] = json!(plan.rubric_hashes);
            updated["plan"] = json!(shown_plan(plan));
            let mut run = Self::open(path, lock)?;
            run.forced_manifest = Some(updated);
            return Ok(run);
        }
        Self::open(path, lock)
    }

    /// Writes the manifest of a forced resume ([`RunDir::resume`]), once:
    /// called when the new pipeline's checks have passed and it is about to
    /// train or write its results. A forced resume that fails before (its
    /// data unreadable, a stage's checks) leaves the manifest as it was,
    /// and the run resumable with its own pipeline: the curation records
    /// and held-out scores it replaced were kept beside them and are put
    /// back ([`super::kept_records`]), and its split records are made
    /// again by that pipeline, from the same rows.
    ///
    /// # Errors
    /// I/O errors.
    pub fn commit_forced(&mut self) -> Result<(), ExecError> {
        let Some(updated) = self.forced_manifest.take() else {
            return Ok(());
        };
        self.ensure_present()?;
        write_atomically(
            &self.path.join("manifest.json"),
            serde_json::to_string_pretty(&updated)
                .unwrap_or_default()
                .as_bytes(),
        )
    }

    fn open(path: &Path, lock: RunLock) -> Result<Self, ExecError> {
        let (metrics, samples) = Self::writers(path)?;
        Ok(RunDir {
            path: path.to_path_buf(),
            metrics,
            samples,
            forced_manifest: None,
            _lock: lock,
        })
    }

    /// `metrics.jsonl` and `samples.jsonl`, opened to append.
    fn writers(path: &Path) -> Result<(BufWriter<File>, BufWriter<File>), ExecError> {
        let append = |name: &str| -> Result<BufWriter<File>, ExecError> {
            let p = path.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map(BufWriter::new)
                .map_err(|e| io(&p, e))
        };
        Ok((append("metrics.jsonl")?, append("samples.jsonl")?))
    }

    /// Makes `metrics.jsonl` and `samples.jsonl` agree with a stage resumed
    /// after `completed` steps: the stage's lines of later steps (written
    /// after the checkpoint it resumes from, before the run was killed) are
    /// dropped, as is a last line cut short by the kill, so that the
    /// resumed run writes each step once. Other stages' lines are kept.
    /// The returned note names the steps dropped: a run killed after step 8
    /// with its checkpoint at 5 runs steps 6-8 again (from step 1 where the
    /// stage had no checkpoint). Lines of steps up to the checkpoint's that
    /// are missing (a file cut short by a power loss, deleted or edited) are
    /// not written again: the returned warning names those steps, for
    /// `metrics.jsonl` and, where the stage writes samples (`with_samples`:
    /// GRPO), `samples.jsonl`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn rewind(
        &mut self,
        stage: &str,
        completed: u64,
        with_samples: bool,
    ) -> Result<Option<String>, ExecError> {
        let (mut warnings, mut notes) = (Vec::new(), Vec::new());
        use std::io::{BufRead, BufReader};
        for name in ["metrics.jsonl", "samples.jsonl"] {
            let p = self.path.join(name);
            let checked = name == "metrics.jsonl" || with_samples;
            let file = match File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if checked && completed > 0 {
                        let all: Vec<u64> = (1..=completed).collect();
                        warnings.push(missing_steps_warning(&p, stage, completed, &all, true));
                    }
                    continue;
                }
                Err(e) => return Err(io(&p, e)),
            };
            // Line by line into a temporary file: samples can be large.
            let tmp = p.with_extension("rewind");
            let mut out = BufWriter::new(File::create(&tmp).map_err(|e| io(&tmp, e))?);
            let mut reader = BufReader::new(file);
            let (mut line, mut dropped, mut saw_a_line) = (Vec::new(), false, false);
            let (mut kept_steps, mut later_steps) = (BTreeSet::new(), BTreeSet::new());
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).map_err(|e| io(&p, e))? == 0 {
                    break;
                }
                saw_a_line = true;
                let keep = line.ends_with(b"\n")
                    && serde_json::from_slice::<Value>(&line).is_ok_and(|v| {
                        let ours = v["stage"].as_str() == Some(stage);
                        let step = v["step"].as_u64();
                        let keep = !ours || step.is_some_and(|s| s <= completed);
                        if ours && keep {
                            kept_steps.extend(step);
                        } else if ours && name == "metrics.jsonl" {
                            later_steps.extend(step);
                        }
                        keep
                    });
                if keep {
                    out.write_all(&line).map_err(|e| io(&tmp, e))?;
                } else {
                    dropped = true;
                }
            }
            out.flush().map_err(|e| io(&tmp, e))?;
            drop(out);
            if !later_steps.is_empty() {
                notes.push(steps_again_note(stage, completed, &later_steps));
            }
            let missing: Vec<u64> = (1..=completed)
                .filter(|s| !kept_steps.contains(s))
                .collect();
            if checked && !missing.is_empty() {
                // A file that held no line at all was deleted (or made
                // again empty by the run's opening).
                let gone = !saw_a_line;
                warnings.push(missing_steps_warning(&p, stage, completed, &missing, gone));
            }
            if dropped {
                std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))?;
            } else {
                std::fs::remove_file(&tmp).map_err(|e| io(&tmp, e))?;
            }
        }
        (self.metrics, self.samples) = Self::writers(&self.path)?;
        notes.extend(warnings);
        Ok((!notes.is_empty()).then(|| notes.join("\n")))
    }

    /// Stops the run when its folder was removed or replaced while it went
    /// on: its `run.lock` is gone or another file. Writing on would make
    /// the folder again without its manifest, metrics and lock, with work
    /// that could not be resumed, and let a second run in beside it.
    ///
    /// # Errors
    /// The folder is not the one the run opened.
    pub fn ensure_present(&self) -> Result<(), ExecError> {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::metadata(&self._lock.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now == Some(self._lock.id) {
            return Ok(());
        }
        Err(ExecError::Io {
            path: self.path.clone(),
            message: "was removed or replaced while the run went on (its `run.lock` is gone): the run stops, since what it wrote there is lost and what it would write could not be resumed; start it again".into(),
        })
    }

    /// Appends one metrics line.
    ///
    /// # Errors
    /// I/O errors.
    pub fn metric(&mut self, line: &impl Serialize) -> Result<(), ExecError> {
        self.ensure_present()?;
        let p = self.path.join("metrics.jsonl");
        let text = serde_json::to_string(line).unwrap_or_default();
        writeln!(self.metrics, "{text}").map_err(|e| io(&p, e))?;
        self.metrics.flush().map_err(|e| io(&p, e))
    }

    /// Appends sample lines.
    ///
    /// # Errors
    /// I/O errors.
    pub fn samples(&mut self, lines: &[Value]) -> Result<(), ExecError> {
        self.ensure_present()?;
        let p = self.path.join("samples.jsonl");
        for l in lines {
            writeln!(self.samples, "{l}").map_err(|e| io(&p, e))?;
        }
        self.samples.flush().map_err(|e| io(&p, e))
    }

    /// Writes `summary.json`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn summary(&self, summary: &Value) -> Result<(), ExecError> {
        self.ensure_present()?;
        write_atomically(
            &self.path.join("summary.json"),
            serde_json::to_string_pretty(summary)
                .unwrap_or_default()
                .as_bytes(),
        )
    }

    /// The checkpoint folder of a stage.
    pub fn checkpoints(&self, stage: &str) -> PathBuf {
        self.path.join("checkpoints").join(file_name(stage))
    }

    /// Where a dataset's curation result is kept (for a resume to reuse).
    pub fn curation(&self, dataset: &str) -> PathBuf {
        self.path
            .join("curation")
            .join(format!("{}.json", file_name(dataset)))
    }

    /// The digest of each dataset's images when the run started
    /// (`images.json`; see [`super::data::images_digest`]).
    pub fn images_record(&self) -> PathBuf {
        self.path.join("images.json")
    }

    /// `bad_rows.jsonl`: every bad row of every dataset (`dataset`, `row`
    /// as `file:line`, `reason`), written when there is one.
    pub fn bad_rows_record(&self) -> PathBuf {
        self.path.join("bad_rows.jsonl")
    }

    /// Where the rows of each dataset's splits are recorded
    /// ([`super::splits_record`]).
    pub fn splits_record(&self) -> PathBuf {
        self.path.join("splits.json")
    }

    /// Where a stage's final policy is written.
    pub fn model_dir(&self, stage: &str) -> PathBuf {
        self.path.join("models").join(file_name(stage))
    }
}

/// The warning for a log file `path` that lacks stage `stage`'s lines of
/// the `missing` steps when it resumes after step `completed`; `gone`: the
/// file held no line at all (deleted).
fn missing_steps_warning(
    path: &Path,
    stage: &str,
    completed: u64,
    missing: &[u64],
    gone: bool,
) -> String {
    let cause = if gone {
        " (the file was deleted or emptied since)"
    } else if missing == [completed] {
        " (cut short when the run stopped?)"
    } else {
        " (the file was cut short or edited since)"
    };
    format!(
        "warning: {} holds no whole line for stage {stage}'s step{} {}, which its checkpoint holds{cause}; the run goes on from step {}, so {} stay missing from the log",
        path.display(),
        if missing.len() == 1 { "" } else { "s" },
        step_runs(missing.iter().copied()),
        completed + 1,
        if missing.len() == 1 { "that step's lines" } else { "those steps' lines" },
    )
}

/// The note for stage `stage`'s logged steps `later`, past the `completed`
/// its checkpoint holds, which a resume runs again.
fn steps_again_note(stage: &str, completed: u64, later: &BTreeSet<u64>) -> String {
    let from = match completed {
        0 => "it had no checkpoint yet, so it starts again from step 1".to_string(),
        n => format!("its newest checkpoint holds step {n}"),
    };
    format!(
        "note: stage {stage} logged step{} {} before the run stopped, but {from}: {} again, and {} replaced",
        if later.len() == 1 { "" } else { "s" },
        step_runs(later.iter().copied()),
        if later.len() == 1 { "that step runs" } else { "those steps run" },
        if later.len() == 1 { "its lines are" } else { "their lines are" },
    )
}

/// Steps in increasing order as runs of consecutive ones: `1-6, 9`.
fn step_runs(steps: impl Iterator<Item = u64>) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in steps {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => runs.push((s, s)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .map(|&(a, b)| match a == b {
            true => a.to_string(),
            false => format!("{a}-{b}"),
        })
        .collect();
    shown.join(", ")
}

/// A declaration name as a folder name (`std/x::y` → `std_x__y`).
pub fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The checkpoints of a stage, oldest first (`step-000050`, ...), complete
/// ones only (a `state.json` is written last).
pub fn list_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::{RunDir, BURN_VERSION};

    #[test]
    fn the_recorded_burn_version_is_the_locked_one() {
        let lock = include_str!("../../../Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"burn\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"'));
        assert_eq!(locked, Some(BURN_VERSION));
        assert!(env!("SAFERC_RUSTC_VERSION").starts_with("rustc "));
    }

    #[test]
    fn a_new_run_goes_only_into_a_new_or_empty_folder() {
        let root = std::env::temp_dir().join(format!("saferc-create-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(root.join("occupied")).unwrap();
        std::fs::write(root.join("occupied/notes.txt"), "mine").unwrap();
        std::fs::write(root.join("a-file"), "mine").unwrap();
        let plan = safer_ir::plan::Plan::default();
        let create =
            |name: &str| RunDir::create(&root.join(name), &plan, "cpu", "", &[]).map(|_| ());
        let refusal = |name: &str| match create(name) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("a run was made in `{name}`"),
        };
        assert!(refusal("occupied").contains("holds files and no run"));
        // A folder that cannot be made says it was the run's.
        assert!(refusal("a-file/run").contains("cannot make the run folder"));
        // Resuming it, or a folder that is not there, does not suggest
        // `--out` of a folder a new run would refuse.
        let resume_error = |name: &str| {
            RunDir::resume(&root.join(name), &plan, false, "p.safer")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(resume_error("occupied").contains("holds other files"));
        assert!(!resume_error("occupied").contains("start it again"));
        assert!(resume_error("absent").contains("does not exist"));
        // A manifest that is JSON but not a run's.
        std::fs::create_dir_all(root.join("not-a-manifest")).unwrap();
        std::fs::write(root.join("not-a-manifest/manifest.json"), "[]").unwrap();
        assert!(resume_error("not-a-manifest").contains("has no `program_hash`"));
        assert_eq!(
            std::fs::read_to_string(root.join("occupied/notes.txt")).unwrap(),
            "mine"
        );
        assert!(!root.join("occupied/manifest.json").exists());
        assert!(refusal("a-file").contains("is a file"));
        create("empty").unwrap();
        create("new/nested").unwrap();
        assert!(root.join("new/nested/manifest.json").exists());
        assert!(refusal("empty").contains("already holds a run"));
        // It never reached a checkpoint: it may as well be removed.
        assert!(refusal("empty").contains("stopped before it made anything"));
        // While a run holds the folder, a new one is refused as in use,
        // not offered `--resume`.
        let running = RunDir::resume(&root.join("empty"), &plan, false, "p.safer").unwrap();
        assert!(refusal("empty").contains("in use by another saferc run"));
        drop(running);
        // `--resume` of a file says it is one.
        assert!(resume_error("a-file").contains("is a file, not a run directory"));
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        assert!(refusal("dangling").contains("is a symbolic link to"));
        // A run killed before its manifest was written left its lock and a
        // half-written manifest: the folder takes a new run, and a resume
        // says how to start it again.
        std::fs::create_dir_all(root.join("killed-early")).unwrap();
        std::fs::write(root.join("killed-early/run.lock"), "4242").unwrap();
        std::fs::write(root.join("killed-early/.manifest.json.tmp"), "{\"sa").unwrap();
        let resumed = RunDir::resume(&root.join("killed-early"), &plan, false, "p.safer");
        assert!(resumed.is_err_and(|e| e.to_string().contains("start it again with `--out")));
        create("killed-early").unwrap();
        assert!(root.join("killed-early/manifest.json").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_run_whose_folder_is_removed_stops_and_does_not_make_it_again() {
        let root = std::env::temp_dir().join(format!("saferc-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("run");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = super::RunLock::acquire(&dir).unwrap();
        let mut run = super::RunDir::open(&dir, lock).unwrap();
        run.metric(&serde_json::json!({"step": 1})).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let stopped = run
            .metric(&serde_json::json!({"step": 2}))
            .err()
            .map(|e| e.to_string());
        assert!(
            stopped
                .as_ref()
                .is_some_and(|m| m.contains("was removed or replaced while the run went on")),
            "{stopped:?}"
        );
        assert!(run.summary(&serde_json::json!({})).is_err());
        // Nor do the records, curation, checkpoints and models written
        // through their paths make it again.
        for path in [
            run.images_record(),
            run.curation("d"),
            run.checkpoints("t").join("eval_before.json"),
            run.model_dir("t").join("stage.json"),
        ] {
            let refused = super::write_atomically(&path, b"{}")
                .err()
                .map(|e| e.to_string());
            assert!(
                refused
                    .as_ref()
                    .is_some_and(|m| m.contains("removed or moved while the run went on")),
                "{}: {refused:?}",
                path.display()
            );
        }
        assert!(super::make_run_folder(&run.checkpoints("t").join("step-000001.partial")).is_err());
        assert!(!dir.exists(), "the folder is not made again");
        // Nor by another run's lock in a folder above it (a run folder made
        // inside another's), nor by a lock a killed run left there.
        for holder in ["1", "4242", ""] {
            std::fs::write(root.join("run.lock"), holder).unwrap();
            assert!(
                super::write_atomically(&run.curation("d"), b"{}").is_err(),
                "{holder:?}"
            );
            assert!(!dir.exists(), "{holder:?}: the folder is not made again");
        }
        std::fs::remove_file(root.join("run.lock")).unwrap();
        // Replaced by another folder of the same name (another run's).
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("run.lock"), "1").unwrap();
        assert!(run.ensure_present().is_err());
        drop(run);
        assert!(dir.join("run.lock").exists(), "another run's lock stays");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_run_in_use_is_refused_and_a_stale_lock_taken_over() {
        let dir = std::env::temp_dir().join(format!("saferc-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("run.lock");
        // Held (an OS lock on its own open file, as another process holds it).
        let held = super::RunLock::acquire(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap(),
            std::process::id().to_string()
        );
        let refused = super::RunLock::acquire(&dir).err().map(|e| e.to_string());
        assert!(
            refused.as_ref().is_some_and(|m| m.contains(&format!(
                "in use by another saferc run (process {})",
                std::process::id()
            ))),
            "{refused:?}"
        );
        drop(held);
        assert!(!lock.exists(), "the lock goes with the run");
        // Left by a process that is gone (killed: its file stays, its OS
        // lock went with it): taken over.
        std::fs::write(&lock, "4294967295").unwrap();
        let taken = super::RunLock::acquire(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap(),
            std::process::id().to_string()
        );
        drop(taken);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert!(left.is_empty(), "no file stays: {left:?}");
        // A folder where the lock goes: refused by name, not "Is a directory".
        std::fs::create_dir(&lock).unwrap();
        let refused = super::RunLock::acquire(&dir).err().map(|e| e.to_string());
        assert!(
            refused
                .as_ref()
                .is_some_and(|m| m.contains("run.lock` is not a file") && m.contains("remove it")),
            "{refused:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rewind_drops_the_stage_s_later_steps_and_a_cut_line() {
        let dir = std::env::temp_dir().join(format!("saferc-rewind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("metrics.jsonl"),
            concat!(
                "{\"stage\":\"a\",\"step\":1}\n",
                "{\"stage\":\"a\",\"step\":2}\n",
                "{\"stage\":\"b\",\"step\":1}\n",
                "{\"stage\":\"b\",\"step\":2}\n",
                "{\"stage\":\"b\",\"step\":3}\n",
                "{\"stage\":\"b\",\"st",
            ),
        )
        .unwrap();
        let mut run = RunDir::open(&dir, super::RunLock::acquire(&dir).unwrap()).unwrap();
        let said = run.rewind("b", 1, false).unwrap().unwrap_or_default();
        assert_eq!(
            said,
            "note: stage b logged steps 2-3 before the run stopped, but its newest checkpoint holds step 1: those steps run again, and their lines are replaced"
        );
        run.metric(&serde_json::json!({"stage": "b", "step": 2}))
            .unwrap();
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        assert_eq!(
            text,
            concat!(
                "{\"stage\":\"a\",\"step\":1}\n",
                "{\"stage\":\"a\",\"step\":2}\n",
                "{\"stage\":\"b\",\"step\":1}\n",
                "{\"stage\":\"b\",\"step\":2}\n",
            )
        );
        // A resume from step 3, whose line was cut: said, not invented.
        let said = run.rewind("a", 3, false).unwrap().unwrap_or_default();
        assert!(
            said.contains("no whole line for stage a's step 3,"),
            "{said}"
        );
        // Lines missing further back, in both logs of a GRPO stage: each
        // missing step is named.
        let said = run.rewind("b", 4, true).unwrap().unwrap_or_default();
        assert!(
            said.contains("metrics.jsonl holds no whole line for stage b's steps 3-4,"),
            "{said}"
        );
        assert!(
            said.contains("samples.jsonl holds no whole line for stage b's steps 1-4,")
                && said.contains("deleted or emptied"),
            "{said}"
        );
        // No samples were written: the file is created empty, not invented.
        assert_eq!(
            std::fs::read_to_string(dir.join("samples.jsonl")).unwrap(),
            ""
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
