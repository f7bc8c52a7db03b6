//! The `Checkpoint` op: a training stage's complete state, written
//! atomically so that a run killed at any moment resumes from the last
//! complete checkpoint with the same result as an uninterrupted run.
//!
//! A checkpoint is a folder `step-NNNNNN/` under the stage's checkpoint
//! folder holding the policy as a model directory (`config.json` +
//! `model.safetensors`, f32, what users load), burn's record of the same
//! module (`model.bin`: the weights with their parameter ids, which the
//! optimiser's state is keyed by; a model loaded from safetensors gets fresh
//! ids and would silently lose its Adam moments), the optimiser's moments
//! (`optimizer.bin`, full precision), and `state.json` (step, data cursor,
//! RNG state, running statistics), with `checksums.json` (the SHA-256 of
//! each of the other files, `state.json` included; a checkpoint without it
//! is not resumed from). It is written as `step-NNNNNN.partial/` and
//! renamed when complete and flushed to the disk ([`crate::durable`]);
//! `state.json` is written last, so a folder without it is never read.
//! Only the newest `keep` checkpoints stay. A resumed run takes the newest
//! checkpoint whose files match their checksums and load; one that does not
//! (a disk that filled up, a file damaged later) is reported and the one
//! before it taken.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rollout::Cursor;
use super::run_dir::{list_checkpoints, make_run_folder, write_atomically};
use super::session::copy_tokenizer;
use super::ExecError;
use crate::adamw::{AdamWSettings, FusedAdamW};
use crate::model::Model;

/// The non-tensor state of a training stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    /// The data cursor.
    pub cursor: Cursor,
    /// The sampling RNG.
    pub rng: ChaCha8Rng,
    /// Stage-specific running values (health-check windows, ...).
    pub extra: Value,
}

fn io(path: &Path, e: impl ToString) -> ExecError {
    ExecError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The folder name of the checkpoint at `step`.
fn step_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// As [`save`], unless a complete checkpoint of `state.step` is there
/// already (a periodic one, the one resumed from): it holds this very state
/// and is not rewritten (a rewrite would leave a moment with none).
///
/// # Errors
/// I/O and recorder errors.
pub fn save_unless_there<B, O>(
    root: &Path,
    tokenizer_dir: &Path,
    model: &Model<B>,
    optim: &O,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf, ExecError>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B>,
    Model<B>: AutodiffModule<B>,
{
    let there = root.join(step_name(state.step));
    if there.join("state.json").is_file() && verify_checksums(&there).is_ok() {
        return Ok(there);
    }
    save(root, tokenizer_dir, model, optim, state, keep)
}

/// Whether `run`, the run folder a checkpoint goes in (none for a folder
/// outside a run), still holds its `run.lock`: a folder removed or moved
/// while the run went on stops it.
fn still_there(run: Option<&Path>) -> Result<(), ExecError> {
    match run {
        Some(run) if !run.join("run.lock").exists() => Err(io(
            run,
            "was removed while the run went on (its `run.lock` is gone): the run stops, since what it wrote there is lost; start it again",
        )),
        _ => Ok(()),
    }
}

/// Writes a checkpoint of `model`, `optim` and `state` under `root`, then
/// removes all but the newest `keep`.
///
/// # Errors
/// I/O and recorder errors.
pub fn save<B, O>(
    root: &Path,
    tokenizer_dir: &Path,
    model: &Model<B>,
    optim: &O,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf, ExecError>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B>,
    Model<B>: AutodiffModule<B>,
{
    // `root` is RUN/checkpoints/STAGE: a run folder without its lock was
    // removed under the run, and is not made again here.
    let run = root
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "checkpoints"))
        .and_then(Path::parent);
    still_there(run)?;
    let name = step_name(state.step);
    let final_dir = root.join(&name);
    let partial = root.join(format!("{name}.{PARTIAL}"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
    }
    make_run_folder(&partial)?;
    model.save(&partial)?;
    copy_tokenizer(tokenizer_dir, &partial)?;
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    recorder
        .record(model.clone().into_record(), partial.join("model"))
        .map_err(|e| {
            io(
                &partial.join("model.bin"),
                format!("cannot be written: {}", recorder_reason(&e)),
            )
        })?;
    recorder
        .record(optim.to_record(), partial.join("optimizer"))
        .map_err(|e| {
            io(
                &partial.join("optimizer.bin"),
                format!("cannot be written: {}", recorder_reason(&e)),
            )
        })?;
    let state_json = serde_json::to_vec_pretty(state).map_err(|e| io(&partial, e))?;
    write_checksums(&partial, &state_json)?;
    write_atomically(&partial.join("state.json"), &state_json)?;
    // On the disk before it is published: after a power cut, the newest
    // checkpoint is whole (the older ones may already be deleted).
    crate::durable::sync_folder(&partial).map_err(|e| io(&partial, e))?;
    // Again before the checkpoint is complete: a folder moved while it was
    // written leaves this one made again by its writers, not a checkpoint.
    still_there(run)?;
    // A folder of this step already there (one a resume could not read)
    // is moved aside, the new one put in its place, and only then the old
    // one deleted: a failed rename puts it back.
    let replaced = match final_dir.exists() {
        true => Some(move_aside(&final_dir).map_err(|e| io(&final_dir, e))?),
        false => None,
    };
    if let Err(e) = std::fs::rename(&partial, &final_dir) {
        if let Some(aside) = &replaced {
            let _ = std::fs::rename(aside, &final_dir);
        }
        return Err(io(&final_dir, e));
    }
    crate::durable::sync_parent(&final_dir);
    if let Some(aside) = replaced {
        delete_or_warn(&aside);
    }
    let all = list_checkpoints(root);
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            // The new checkpoint is written: an old one that cannot be
            // removed costs disk space, not the run.
            match move_aside(old) {
                Ok(aside) => delete_or_warn(&aside),
                Err(e) => crate::stderr_line!(
                    "warning: cannot remove the old checkpoint {} ({e}); it is kept beyond `checkpoint.keep`",
                    old.display()
                ),
            }
        }
    }
    sweep_leftovers(root);
    Ok(final_dir)
}

/// The suffix of a checkpoint folder being removed.
const REMOVING: &str = "removing";

/// The suffix of a checkpoint folder being written.
const PARTIAL: &str = "partial";

/// Renames checkpoint folder `dir` out of the checkpoints' names
/// (`step-N.removing`) before it is deleted: a process killed while
/// deleting it leaves a folder [`sweep_leftovers`] finishes, never a
/// `step-N` with some of its files gone, which no later count of `keep`
/// saw (it has no `state.json`) and which stayed for good. Returns the new
/// path.
fn move_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let aside = dir.with_extension(REMOVING);
    if aside.exists() {
        std::fs::remove_dir_all(&aside)?;
    }
    std::fs::rename(dir, &aside)?;
    Ok(aside)
}

/// Deletes a folder [`move_aside`] moved, saying so when it cannot.
fn delete_or_warn(aside: &Path) {
    if let Err(e) = std::fs::remove_dir_all(aside) {
        crate::stderr_line!(
            "warning: cannot delete {} ({e}), an old checkpoint; it takes disk space until it is deleted",
            aside.display()
        );
    }
}

/// Deletes what killed processes left under `root`: checkpoints moved
/// aside for removal, and checkpoints never finished (`step-N.partial`).
/// Called when a stage starts or resumes and after each checkpoint, while
/// the run's lock keeps any other saferc out of the folder.
fn sweep_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let leftover = path
            .extension()
            .is_some_and(|x| x == REMOVING || x == PARTIAL)
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"));
        if leftover && path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The newest usable checkpoint under `root`, restored: the model, the
/// optimiser (loaded into `optim`) and the state. A checkpoint whose files
/// do not match their checksums or do not load is reported and skipped for
/// the one before it.
///
/// # Errors
/// When there are checkpoints but none can be read (the newest one's
/// reason).
pub fn restore<B, O>(
    root: &Path,
    optim: O,
    device: &B::Device,
) -> Result<Option<(Model<B>, O, TrainState)>, ExecError>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B> + Clone,
    Model<B>: AutodiffModule<B>,
{
    let mut newest_failure = None;
    let mut damaged: Vec<PathBuf> = Vec::new();
    for (_, dir) in list_checkpoints(root).iter().rev() {
        match restore_from::<B, O>(dir, optim.clone(), device) {
            Ok((model, optim, state)) => {
                crate::stderr_line!("resuming from {} (step {})", dir.display(), state.step);
                // The unusable newer ones are kept for inspection under
                // another name, out of the count of `keep` (which would
                // otherwise delete good older checkpoints first) and out of
                // the way of the steps that are trained again.
                for bad in &damaged {
                    let aside = bad.with_extension("damaged");
                    let _ = std::fs::remove_dir_all(&aside);
                    if std::fs::rename(bad, &aside).is_ok() {
                        crate::stderr_line!(
                            "note: moved the unusable checkpoint to {}",
                            aside.display()
                        );
                    }
                }
                return Ok(Some((model, optim, state)));
            }
            Err(e) => {
                crate::stderr_line!(
                    "warning: checkpoint {} cannot be resumed from ({e}); trying the one before it",
                    dir.display()
                );
                newest_failure.get_or_insert(e);
                damaged.push(dir.clone());
            }
        }
    }
    match newest_failure {
        Some(e) => Err(ExecError::Usage(format!(
            "no checkpoint under {} can be resumed from; the newest: {e}",
            root.display()
        ))),
        None => Ok(None),
    }
}

/// The checkpoint in `dir`, checked against its checksums and loaded.
fn restore_from<B, O>(
    dir: &Path,
    optim: O,
    device: &B::Device,
) -> Result<(Model<B>, O, TrainState), ExecError>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B>,
    Model<B>: AutodiffModule<B>,
{
    verify_checksums(dir)?;
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let module_record = recorder.load(dir.join("model"), device).map_err(|e| {
        io(
            &dir.join("model.bin"),
            format!("cannot be read: {}", recorder_reason(&e)),
        )
    })?;
    // The weights with the ids the optimiser state refers to.
    let model = Model::<B>::load(dir, device)?.load_record(module_record);
    let record = recorder.load(dir.join("optimizer"), device).map_err(|e| {
        io(
            &dir.join("optimizer.bin"),
            format!("cannot be read: {}", recorder_reason(&e)),
        )
    })?;
    let optim = optim.load_record(record);
    let text = std::fs::read_to_string(dir.join("state.json"))
        .map_err(|e| io(&dir.join("state.json"), e))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| io(&dir.join("state.json"), e))?;
    let named = dir
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("step-")?.parse::<u64>().ok());
    if named != Some(state.step) {
        return Err(io(
            &dir.join("state.json"),
            format!(
                "holds step {}, not the step its folder is named for",
                state.step
            ),
        ));
    }
    Ok((model, optim, state))
}

/// What went wrong in a burn recorder's error, in words: burn shows its
/// errors as their `Debug` form (`Unknown("Io { inner: Os { code: 28, kind:
/// StorageFull, message: \"No space left on device\" }, ... }")`), from
/// which the system's message is taken when there is one.
fn recorder_reason(e: &burn::record::RecorderError) -> String {
    use burn::record::RecorderError;
    let inner = match e {
        RecorderError::FileNotFound(s) => return format!("not found ({s})"),
        RecorderError::DeserializeError(s) | RecorderError::Unknown(s) => s,
    };
    inner
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| inner.clone(), |(message, _)| message.to_string())
}

/// The files of a checkpoint that `checksums.json` covers.
const CHECKED_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "model.bin",
    "optimizer.bin",
];

/// The SHA-256 of a file, in hex.
///
/// # Errors
/// A path that cannot be read, or that is not a regular file (a pipe
/// would be waited on forever).
pub(crate) fn sha256_of(path: &Path) -> Result<String, ExecError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    if let Some(kind) = crate::images::not_a_file(path) {
        return Err(io(path, format!("is {kind}, not a file")));
    }
    let mut file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// `bytes` in lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `checksums.json` for the files of the checkpoint in `dir` and
/// for `state`, the `state.json` written after it.
fn write_checksums(dir: &Path, state: &[u8]) -> Result<(), ExecError> {
    use sha2::{Digest, Sha256};
    let mut sums = serde_json::Map::new();
    for name in CHECKED_FILES {
        sums.insert(
            (*name).to_string(),
            Value::String(sha256_of(&dir.join(name))?),
        );
    }
    sums.insert(
        "state.json".into(),
        Value::String(hex(&Sha256::digest(state))),
    );
    let text = serde_json::to_vec_pretty(&Value::Object(sums)).map_err(|e| io(dir, e))?;
    write_atomically(&dir.join("checksums.json"), &text)
}

/// Checks the files of the checkpoint in `dir` against `checksums.json`,
/// which must cover every file the checkpoint is read from (`state.json`
/// too, but for a checkpoint of a saferc from before it was covered).
fn verify_checksums(dir: &Path) -> Result<(), ExecError> {
    let path = dir.join("checksums.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        io(
            &path,
            format!("cannot be read ({e}): without it the checkpoint's files cannot be trusted"),
        )
    })?;
    let sums: serde_json::Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| io(&path, e))?;
    if let Some(missing) = CHECKED_FILES.iter().find(|name| !sums.contains_key(**name)) {
        return Err(io(&path, format!("does not cover `{missing}`")));
    }
    for (name, want) in &sums {
        let got = sha256_of(&dir.join(name))?;
        if want.as_str() != Some(got.as_str()) {
            return Err(io(
                &dir.join(name),
                "does not match the checksum written with it (damaged since)",
            ));
        }
    }
    Ok(())
}

/// Writes a checkpoint when one is due (every `every` steps, at the last
/// step, or after Ctrl+C); after Ctrl+C, returns
/// [`ExecError::Interrupted`] naming it.
///
/// # Errors
/// I/O errors, or the interruption.
#[allow(clippy::too_many_arguments)]
pub fn at_step_end<B, O>(
    root: &Path,
    tokenizer_dir: &Path,
    model: &Model<B>,
    optim: &O,
    state: &TrainState,
    (every, last, keep): (u64, u64, usize),
    interrupt: &std::sync::atomic::AtomicBool,
) -> Result<(), ExecError>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B>,
    Model<B>: AutodiffModule<B>,
{
    let interrupted = || interrupt.load(std::sync::atomic::Ordering::SeqCst);
    if state.step.is_multiple_of(every) || state.step == last || interrupted() {
        let dir = save(root, tokenizer_dir, model, optim, state, keep)?;
        // Asked again after the save: an interrupt that came while the
        // checkpoint was written (which takes long on a large model) stops
        // at the checkpoint just written, not after one more step.
        if interrupted() {
            return Err(ExecError::Interrupted { checkpoint: dir });
        }
    }
    Ok(())
}

/// Called before each training step: an interrupt that came since the
/// last step's end (during the stage's evaluation before training, between
/// two phases, or after that step's check) stops the stage here, before new
/// work, with a checkpoint of the state reached (unless it is there
/// already), or, before the stage's first step, with nothing to save. The
/// stage went on to train a whole step, and checkpointed it, before.
///
/// # Errors
/// [`ExecError::Interrupted`] or [`ExecError::Stopped`] when interrupted;
/// I/O errors of the checkpoint.
pub fn at_step_start<B, O>(
    root: &Path,
    tokenizer_dir: &Path,
    (model, optim): (&Model<B>, &O),
    state: &TrainState,
    (stage, keep): (&str, usize),
    interrupt: &std::sync::atomic::AtomicBool,
) -> Result<(), ExecError>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B>,
    Model<B>: AutodiffModule<B>,
{
    if !interrupt.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    if state.step == 0 {
        return Err(ExecError::Stopped {
            during: format!("starting stage `{stage}`"),
        });
    }
    let checkpoint = save_unless_there(root, tokenizer_dir, model, optim, state, keep)?;
    Err(ExecError::Interrupted { checkpoint })
}

/// Refuses a resumed stage whose checkpoint is past its `steps` (lowered
/// since, under `--force`): its weights hold steps the pipeline no longer
/// asks for, which no summary could report honestly.
///
/// # Errors
/// [`ExecError::Usage`] when `at > steps`.
pub fn within_steps(stage: &str, at: u64, steps: u64) -> Result<(), ExecError> {
    if at > steps {
        return Err(ExecError::Usage(format!(
            "stage `{stage}`: its checkpoint is at step {at}, past the pipeline's `steps = {steps}`; resume with `steps` of at least {at}, or start a new run"
        )));
    }
    Ok(())
}

/// A stage's starting point: `policy` with a fresh AdamW (`adam`) and state seeded
/// with `seed`, or, when `resume` is set and `root` holds a checkpoint, the
/// checkpoint's policy, optimiser and state.
///
/// # Errors
/// A checkpoint that cannot be read.
pub fn start_or_resume<B>(
    root: &Path,
    policy: Model<B>,
    adam: AdamWSettings,
    seed: u64,
    resume: bool,
    device: &B::Device,
) -> Result<(Model<B>, impl Optimizer<Model<B>, B>, TrainState), ExecError>
where
    B: AutodiffBackend,
    Model<B>: AutodiffModule<B>,
{
    let optim: OptimizerAdaptor<FusedAdamW, Model<B>, B> = FusedAdamW::new(adam).into();
    let fresh = TrainState {
        step: 0,
        cursor: Cursor::default(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        extra: Value::Null,
    };
    sweep_leftovers(root);
    if resume {
        if let Some(mut restored) = restore::<B, _>(root, optim.clone(), device)? {
            // The context the stage holds its rows to (a declared `context`
            // below `config.json`'s) and a frozen vision tower outlive the
            // reload.
            restored.0.config.context_limit = policy.config.context_limit;
            restored.0 = restored.0.for_training(policy.vision_frozen());
            return Ok(restored);
        }
        // The stage had trained (its folder holds more than the scores
        // before training, and those of other settings kept beside them)
        // and left nothing to resume from: say so rather than train from
        // the start unseen.
        let trained = std::fs::read_dir(root).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !(name.starts_with("eval_before.") && name.ends_with(".json"))
            })
        });
        if trained {
            crate::stderr_line!(
                "warning: {} holds no checkpoint; the stage starts again from step 0",
                root.display()
            );
        }
    }
    Ok((policy, optim, fresh))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use burn::backend::Autodiff;
    use safer_ir::plan::AdamSpec;

    use super::{recorder_reason, save, start_or_resume};
    use crate::adamw::AdamWSettings;
    use crate::model::tiny_vlm::{create, Preset};
    use crate::model::Model;
    use crate::CpuBackend;

    /// A full disk reads as the system says it, not as burn's `Debug`.
    #[test]
    fn a_recorder_error_reads_as_the_system_s_message() {
        use burn::record::RecorderError;
        let full = RecorderError::Unknown(
            "Io { inner: Os { code: 28, kind: StorageFull, message: \"No space left on device\" }, index: 995501 }".into(),
        );
        assert_eq!(recorder_reason(&full), "No space left on device");
        let other = RecorderError::DeserializeError("unexpected end of input".into());
        assert_eq!(recorder_reason(&other), "unexpected end of input");
    }

    /// A checkpoint's state is JSON: numbers in it (the cost constraint's
    /// multiplier, health statistics) must read back to the last bit, or a
    /// resumed run drifts from an uninterrupted one (serde_json's
    /// `float_roundtrip`; without it this value came back one ulp off).
    #[test]
    fn state_numbers_read_back_exactly() {
        for x in [
            0.729_636_820_342_601_8_f64,
            0.235_294_117_647_058_82,
            1.0 / 3.0,
            1e-300,
            6.02e23,
        ] {
            let text = serde_json::to_string(&serde_json::json!({ "x": x })).unwrap();
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                back["x"].as_f64().map(f64::to_bits),
                Some(x.to_bits()),
                "{text}"
            );
        }
    }

    type B = Autodiff<CpuBackend>;

    /// A fresh temporary folder with a tiny model in `model/`: the folder
    /// and the model's. The folder is a run's (it holds a `run.lock`), where
    /// checkpoints make their folders.
    fn tiny_model(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("saferc-ck-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let model_dir = dir.join("model");
        create::<CpuBackend>(&model_dir, Preset::Tiny, 0, &Default::default()).unwrap();
        std::fs::write(dir.join("run.lock"), std::process::id().to_string()).unwrap();
        (dir, model_dir)
    }

    /// A model's declared `context` below its file's caps the stage's
    /// model; the model a resumed stage reloads from its checkpoint keeps
    /// that cap instead of the file's, and a frozen vision tower stays
    /// frozen (`freeze_vision`).
    #[test]
    fn a_resumed_model_keeps_the_declared_context_and_frozen_tower() {
        let (dir, model_dir) = tiny_model("context");
        let device = Default::default();
        let capped = || {
            let mut m = Model::<B>::load(&model_dir, &device).unwrap();
            assert_eq!(m.config.context(), 1024);
            m.config.context_limit = Some(96);
            m.for_training(true)
        };
        let adam = AdamWSettings::of(&AdamSpec::default(), 0.0);
        let root = dir.join("checkpoints");
        let (policy, optim, mut state) =
            start_or_resume::<B>(&root, capped(), adam, 1, false, &device).unwrap();
        state.step = 1;
        save(&root, &model_dir, &policy, &optim, &state, 2).unwrap();
        let (restored, _, state) =
            start_or_resume::<B>(&root, capped(), adam, 1, true, &device).unwrap();
        assert_eq!(state.step, 1, "resumed from the checkpoint");
        assert_eq!(restored.config.context(), 96);
        assert!(restored.vision_frozen());
        // The checkpoint's `config.json` keeps the file's context: a model
        // trained under a declared one is not limited to it elsewhere.
        let saved = crate::model::config::ModelConfig::read(&root.join("step-000001")).unwrap();
        assert_eq!(saved.context(), 1024);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A checkpoint is resumed from only when `checksums.json` covers its
    /// files, `state.json` included, and they match: an edited state, a
    /// removed or emptied `checksums.json`, and a state whose step is not
    /// its folder's are refused, each with the reason.
    #[test]
    fn a_checkpoint_without_matching_checksums_is_not_resumed_from() {
        let (dir, model_dir) = tiny_model("sums");
        let device = Default::default();
        let fresh = || {
            Model::<B>::load(&model_dir, &device)
                .unwrap()
                .for_training(false)
        };
        let adam = AdamWSettings::of(&AdamSpec::default(), 0.0);
        let root = dir.join("checkpoints");
        let (policy, optim, mut state) =
            start_or_resume::<B>(&root, fresh(), adam, 1, false, &device).unwrap();
        state.step = 3;
        save(&root, &model_dir, &policy, &optim, &state, 2).unwrap();
        let step = root.join("step-000003");
        let refusal = || match start_or_resume::<B>(&root, fresh(), adam, 1, true, &device) {
            Ok(_) => panic!("resumed from a checkpoint that cannot be trusted"),
            Err(e) => e.to_string(),
        };
        let state_json = std::fs::read_to_string(step.join("state.json")).unwrap();
        let sums = std::fs::read_to_string(step.join("checksums.json")).unwrap();
        assert!(sums.contains("\"state.json\""), "{sums}");

        let edited = state_json.replacen("\"step\": 3", "\"step\": 30", 1);
        assert_ne!(edited, state_json);
        std::fs::write(step.join("state.json"), &edited).unwrap();
        assert!(refusal().contains("does not match the checksum"));

        // Without the checksum of the state, the step is still checked.
        let without_state: serde_json::Value = serde_json::from_str(&sums).unwrap();
        let mut without_state = without_state.as_object().unwrap().clone();
        without_state.remove("state.json");
        std::fs::write(
            step.join("checksums.json"),
            serde_json::to_string(&without_state).unwrap(),
        )
        .unwrap();
        assert!(refusal().contains("not the step its folder is named for"));

        std::fs::write(step.join("state.json"), &state_json).unwrap();
        std::fs::write(step.join("checksums.json"), "{}").unwrap();
        assert!(refusal().contains("does not cover"));
        std::fs::remove_file(step.join("checksums.json")).unwrap();
        assert!(refusal().contains("cannot be trusted"));
        std::fs::write(step.join("checksums.json"), &sums).unwrap();
        let (_, _, resumed) = start_or_resume::<B>(&root, fresh(), adam, 1, true, &device).unwrap();
        assert_eq!(resumed.step, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stage started fresh from the model in `model_dir`, its
    /// checkpoints under `root`: the policy, its optimiser and state.
    fn fresh_stage(
        model_dir: &std::path::Path,
        root: &std::path::Path,
    ) -> (
        Model<B>,
        impl burn::optim::Optimizer<Model<B>, B>,
        super::TrainState,
    ) {
        let device = Default::default();
        let fresh = Model::<B>::load(model_dir, &device)
            .unwrap()
            .for_training(false);
        let adam = AdamWSettings::of(&AdamSpec::default(), 0.0);
        start_or_resume::<B>(root, fresh, adam, 1, false, &device).unwrap()
    }

    /// Old checkpoints are removed beyond `keep` by moving them aside
    /// first; a removal a killed process left (`step-N.removing`) is
    /// finished by the next save, and an unfinished checkpoint
    /// (`step-N.partial`) when a stage starts.
    #[test]
    fn old_checkpoints_are_removed_aside_and_leftovers_swept() {
        let (dir, model_dir) = tiny_model("prune");
        let root = dir.join("checkpoints");
        let (policy, optim, mut state) = fresh_stage(&model_dir, &root);
        let names = || {
            let mut names: Vec<String> = std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        for step in 1..=2 {
            state.step = step;
            save(&root, &model_dir, &policy, &optim, &state, 1).unwrap();
        }
        assert_eq!(names(), ["step-000002"]);
        // What a kill during a removal leaves.
        let leftover = root.join("step-000001.removing");
        std::fs::create_dir_all(&leftover).unwrap();
        std::fs::write(leftover.join("optimizer.bin"), b"half").unwrap();
        state.step = 3;
        save(&root, &model_dir, &policy, &optim, &state, 1).unwrap();
        assert_eq!(names(), ["step-000003"]);
        // What a kill during a write, or during the last checkpoint's
        // removals, leaves: gone when the stage starts again.
        for leftover in ["step-000004.partial", "step-000002.removing"] {
            std::fs::create_dir_all(root.join(leftover)).unwrap();
        }
        fresh_stage(&model_dir, &root);
        assert_eq!(names(), ["step-000003"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An interrupt found before a step stops the stage there: before its
    /// first step with nothing to save, later with a checkpoint of the
    /// state reached (the one already there is not rewritten); without one
    /// the step goes on.
    #[test]
    fn an_interrupt_before_a_step_stops_the_stage_there() {
        use super::{at_step_start, ExecError};
        use std::sync::atomic::AtomicBool;
        let (dir, model_dir) = tiny_model("start");
        let root = dir.join("checkpoints");
        let (policy, optim, mut state) = fresh_stage(&model_dir, &root);
        let at_start = |state: &super::TrainState, flag: bool| {
            at_step_start(
                &root,
                &model_dir,
                (&policy, &optim),
                state,
                ("t", 2),
                &AtomicBool::new(flag),
            )
        };
        assert!(at_start(&state, false).is_ok());
        match at_start(&state, true) {
            Err(ExecError::Stopped { during }) => assert_eq!(during, "starting stage `t`"),
            other => panic!("{other:?}"),
        }
        assert!(!root.join("step-000000").exists());
        state.step = 2;
        match at_start(&state, true) {
            Err(ExecError::Interrupted { checkpoint }) => {
                assert_eq!(checkpoint, root.join("step-000002"));
                assert!(checkpoint.join("state.json").is_file());
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A pipe is refused, not read: reading it would wait for a writer
    /// forever (a dataset source is hashed before it is loaded).
    #[test]
    fn a_pipe_is_not_hashed() {
        let dir = std::env::temp_dir().join(format!("saferc-ck-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("rows.jsonl");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "mkfifo (coreutils) makes the pipe"
        );
        let err = super::sha256_of(&fifo).unwrap_err().to_string();
        assert!(err.contains("a pipe, socket or device"), "{err}");
        assert!(super::sha256_of(&dir)
            .unwrap_err()
            .to_string()
            .contains("a folder"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
