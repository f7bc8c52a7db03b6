//! The executor: runs a compiled [`Plan`] end to end (`saferc run`).
//!
//! One module per op family: [`data`] (`Source`, `Filter`, `Balance`,
//! `Dedup`, `Split`), [`curate`] (`Curate`, the QI-Box), [`rollout`]
//! (`Batch`, `Generate`), [`rubric`] with [`scorers`], [`judge`], [`judge_model`] and [`judge_tls`]
//! (`Judge`, `Score`), [`reflect`] (`Reflect`), [`grpo_stage`] and
//! [`sft_stage`] (`Advantage`, `RefLogprob`, `Update`), [`checkpoint`],
//! [`evaluate`] and [`report`] (`Report`: summary, plot), [`health`]
//! (warnings), [`row_fields`] (rows lacking a field a rubric reads),
//! [`run_dir`] (the run directory, `Metrics`) and [`fault`] (fault
//! injection for tests).
//!
//! Order: before the run directory is made, every model's folder is
//! checked and the HTTP judges are built; then datasets are built first (sources, filters, curation, balance,
//! de-duplication, splits), rows lacking a field their rubric reads are
//! warned about, then the stages in dependency order (each
//! scoring its `eval_data` before and after), then the `eval`
//! declarations. Everything random is seeded from the plan, so a CPU run
//! with the same seed gives the same weights, interrupted or not.

pub mod checkpoint;
pub mod curate;
pub mod data;
pub mod evaluate;
pub mod fault;
pub mod grpo_stage;
pub mod health;
pub mod judge;
pub mod judge_images;
pub mod judge_model;
pub mod judge_tls;
pub mod kept_records;
pub mod model_fingerprint;
pub mod records;
pub mod reflect;
pub mod report;
pub mod rollout;
pub mod row_fields;
pub mod rubric;
pub mod run_dir;
pub mod scorers;
pub mod session;
pub mod sft_held_out;
pub mod sft_stage;
pub mod skipped_rows;
pub mod splits_record;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use safer_ir::plan::Plan;

use crate::device::{dispatch, BackendTask, DeviceChoice};
use crate::grpo::GrpoError;
use crate::model::ModelError;

/// Why a run stopped.
#[derive(Debug)]
pub enum ExecError {
    /// A request that cannot be carried out (bad flags, a taken run directory).
    Usage(String),
    /// A dataset problem.
    Data {
        /// The dataset.
        dataset: String,
        /// What is wrong.
        message: String,
    },
    /// A row that cannot be turned into a prompt.
    Row {
        /// `file:line`.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A model, tokenizer or image problem.
    Model(ModelError),
    /// A row's prompt that the model's chat template or tokenizer failed
    /// to build: not the row's fault, so never skipped as a bad row.
    Prompt {
        /// `file:line` of the row.
        origin: String,
        /// What failed.
        error: ModelError,
    },
    /// A scoring problem (a failing judge, a bad expression).
    Score(String),
    /// A GRPO math error (non-finite values, shapes).
    Grpo(GrpoError),
    /// A file that cannot be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// Interrupted (Ctrl+C) after saving a checkpoint.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
    /// Interrupted (Ctrl+C) outside training (curating, evaluating), where
    /// there is no training state to save.
    Stopped {
        /// What the run was doing.
        during: String,
    },
}

/// Stops a stage at a NaN or infinity in `what` (the loss, the gradient
/// norm) at step index `step`, reported counting from 1 as metrics and
/// warnings do (E0500); the last good checkpoint stays.
///
/// # Errors
/// The non-finite value.
pub fn ensure_finite(value: f64, step: u64, what: &str) -> Result<(), ExecError> {
    if value.is_finite() {
        return Ok(());
    }
    Err(ExecError::Grpo(crate::grpo::GrpoError::NonFinite {
        step: step + 1,
        what: what.into(),
        index: 0,
        value: value as f32,
    }))
}

/// A stage's policy readied for training ([`crate::model::Model::for_training`]):
/// its vision tower frozen where the stage says `freeze_vision`. A policy
/// without a vision tower has nothing to freeze, and the stage says so.
pub fn training_policy<B: burn::tensor::backend::AutodiffBackend>(
    policy: crate::model::Model<B>,
    stage: &safer_ir::plan::StageSpec,
) -> crate::model::Model<B> {
    let has_tower = policy.vision.is_some() || policy.qwen_vision.is_some();
    if stage.freeze_vision && !has_tower {
        crate::stderr_line!(
            "warning: stage {}: `freeze_vision` has no effect: the policy has no vision tower",
            stage.name
        );
    }
    policy.for_training(stage.freeze_vision)
}

/// Stops with [`ExecError::Stopped`] if Ctrl+C was pressed: checked
/// between batches of the work that runs outside training steps.
///
/// # Errors
/// The interruption.
pub fn stop_if_interrupted(
    interrupt: &std::sync::atomic::AtomicBool,
    during: impl FnOnce() -> String,
) -> Result<(), ExecError> {
    if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ExecError::Stopped { during: during() });
    }
    Ok(())
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Usage(m) | ExecError::Score(m) => f.write_str(m),
            ExecError::Data { dataset, message } => write!(f, "dataset `{dataset}`: {message}"),
            ExecError::Row { origin, message } => write!(f, "row {origin}: {message}"),
            ExecError::Model(e) => write!(f, "{e}"),
            ExecError::Prompt { origin, error } => write!(f, "row {origin}: {error}"),
            ExecError::Grpo(e) => write!(f, "{e}"), // carries its code
            ExecError::Io { path, message } => write!(f, "{}: {message}", path.display()),
            ExecError::Interrupted { checkpoint } => write!(
                f,
                "interrupted; checkpoint saved to {}",
                checkpoint.display()
            ),
            ExecError::Stopped { during } => write!(
                f,
                "interrupted while {during}; no training step was under way, so there was nothing to save (training checkpoints are kept)"
            ),
        }
    }
}

impl std::error::Error for ExecError {}

impl From<ModelError> for ExecError {
    fn from(e: ModelError) -> Self {
        ExecError::Model(e)
    }
}

impl From<GrpoError> for ExecError {
    fn from(e: GrpoError) -> Self {
        ExecError::Grpo(e)
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run directory.
    pub out: PathBuf,
    /// Continue the run in `out` from its last checkpoint.
    pub resume: bool,
    /// Resume even if the pipeline changed.
    pub force: bool,
    /// Where tensors live.
    pub device: DeviceChoice,
    /// The pipeline file (for the manifest).
    pub source: String,
    /// Show progress: a bar on a terminal, plain lines every 10 s otherwise.
    pub progress: bool,
    /// Set by Ctrl+C: save a checkpoint and stop after the current step.
    pub interrupt: Arc<AtomicBool>,
}

/// Runs `plan`; returns the summary written to `summary.json`.
///
/// # Errors
/// Any [`ExecError`]; checkpoints written before it stay usable.
pub fn run(plan: &Plan, options: &RunOptions) -> Result<serde_json::Value, ExecError> {
    struct Task<'a> {
        plan: &'a Plan,
        options: &'a RunOptions,
    }
    impl BackendTask for Task<'_> {
        type Output = Result<serde_json::Value, ExecError>;
        fn run<B: burn::tensor::backend::Backend>(
            self,
            device: B::Device,
            name: &'static str,
        ) -> Self::Output {
            session::Session::<B>::start(self.plan, self.options, device, name)?.run()
        }
    }
    dispatch(options.device, Task { plan, options })?
}
