//! The execution plan: what `saferc run` executes, typed.
//!
//! The [`crate::Graph`] says which operations run and how data flows; the
//! plan carries what each operation needs, in types the runtime reads
//! without a parser: resolved paths, numbers without units, enums as
//! strings checked by the compiler, and expressions as [`Expr`] trees that
//! [`expr::eval`] evaluates. The compiler writes it (`saferc::plan::lower`)
//! from the checked program; every value in it has passed the schema table,
//! so the runtime only meets values the language allows.

pub mod expr;

pub use expr::{eval, Env, EvalError, Expr, Val};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A compiled pipeline ready to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// Content hash of the program (the run manifest records it; `--resume`
    /// compares it).
    pub program_hash: String,
    /// Content hashes of the rubrics, by name.
    pub rubric_hashes: BTreeMap<String, String>,
    /// Models by name.
    pub models: BTreeMap<String, ModelSpec>,
    /// Judges by name.
    pub judges: BTreeMap<String, JudgeSpec>,
    /// Rubrics by name.
    pub rubrics: BTreeMap<String, RubricSpec>,
    /// User-defined scorers (`scorer f(x) = expr`) by name.
    pub functions: BTreeMap<String, Function>,
    /// Datasets by name.
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// Rollout settings by name.
    pub rollouts: BTreeMap<String, RolloutSpec>,
    /// Reflection settings by name.
    pub reflections: BTreeMap<String, ReflectionSpec>,
    /// Training stages in the order they run.
    pub stages: Vec<StageSpec>,
    /// Evaluations, run after the stages.
    pub evals: Vec<EvalSpec>,
}

impl Plan {
    /// The rollout named `name`, or [`RolloutSpec::unnamed`] where none is
    /// named (or the name is not in the plan).
    pub fn rollout(&self, name: Option<&String>) -> RolloutSpec {
        name.and_then(|n| self.rollouts.get(n))
            .cloned()
            .unwrap_or_else(RolloutSpec::unnamed)
    }
}

/// The fields of a `samples.jsonl` row besides its criteria's scores
/// (written under their names) and penalties (`penalty.NAME`): a
/// criterion cannot take one of these names.
pub const SAMPLE_FIELDS: &[&str] = &[
    "stage",
    "step",
    "group",
    "row",
    "reward",
    "shaped_reward",
    "overlong",
    "kl_reward_penalty",
    "advantage",
    "reflection",
    "before",
    "text",
];

/// The most new tokens of a scoring pass (an `eval`, a stage's `eval_data`)
/// that names no rollout.
pub const SCORING_MAX_TOKENS: usize = 128;

/// A model to load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSpec {
    /// `tiny_vlm`, `qwen2`, ...
    pub arch: String,
    /// The model directory (absolute).
    pub weights: String,
    /// The model directory as written (for messages).
    pub weights_written: String,
    /// `auto`, `cpu`, `wgpu` or `cuda`.
    pub device: String,
    /// `f32`, `bf16` or `f16`: the dtype a model trained from this one is saved in (the runtime computes in f32 and reads weight files of any float dtype).
    pub dtype: String,
    /// The tokenizer's directory when it is not the weights directory (absolute).
    pub tokenizer: Option<String>,
    /// The declared `context` in tokens, prompt and completion together
    /// (`None`: `config.json`'s `max_position_embeddings`). At most the
    /// file's; a smaller one bounds every prompt and completion of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
}

/// Whether a model of architecture `arch` reads text only, with no vision
/// tower to be shown images or frozen: `qwen2`.
pub fn arch_reads_text_only(arch: &str) -> bool {
    arch == "qwen2"
}

/// A judge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeSpec {
    /// `rules`, `model` or `http`.
    pub kind: String,
    /// The local judge model (`model`).
    pub model: Option<String>,
    /// The `safer.toml` endpoint it names (`named = "..."`); filled in by `saferc run`.
    pub named: Option<String>,
    /// Base URL (`http`), e.g. `http://127.0.0.1:8000/v1`.
    pub endpoint: Option<String>,
    /// Model name sent to the endpoint.
    pub model_name: Option<String>,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// PEM file of the certificate authorities an `https` endpoint's
    /// certificate must chain to (absolute); `None`: the bundled Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Attempts after the first on errors, 429 and timeouts.
    pub retries: u32,
    /// Seconds before a request times out.
    pub timeout_s: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Sampling temperature of the judge.
    pub temperature: f64,
    /// The score of a reply that holds none (`None`: such a reply is an error).
    pub fallback: Option<f64>,
    /// Whether each question shows the judge the row's images (`http`:
    /// `image_url` parts; `model`: in its prompt). Resolved by the compiler:
    /// `images` where written, else `true` for `http` judges and for
    /// `model` judges whose model takes images.
    #[serde(default)]
    pub images: bool,
    /// The longest reply in tokens (`max_tokens`): sent to an `http`
    /// endpoint (unset: the server's default), a `model` judge's limit
    /// (unset: 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
}

/// A rubric: criteria, penalties, format terms and the total.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RubricSpec {
    /// The judge that scores criteria without a scorer.
    pub judge: Option<String>,
    /// Weighted criteria.
    pub criteria: Vec<CriterionSpec>,
    /// Penalties.
    pub penalties: Vec<PenaltySpec>,
    /// Format terms.
    pub formats: Vec<FormatSpec>,
    /// The reward.
    pub total: Expr,
}

impl RubricSpec {
    /// Every expression of the rubric: criteria's scorers, penalties'
    /// amounts and conditions, and the total.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.criteria
            .iter()
            .filter_map(|c| c.scorer.as_ref())
            .chain(
                self.penalties
                    .iter()
                    .flat_map(|p| std::iter::once(&p.value).chain(p.when.as_ref())),
            )
            .chain(std::iter::once(&self.total))
    }
}

/// One criterion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CriterionSpec {
    /// Its name.
    pub name: String,
    /// Its weight in `weighted`.
    pub weight: f64,
    /// What a judge is asked about.
    pub description: Option<String>,
    /// The scorer expression; `None`: ask the judge.
    pub scorer: Option<Expr>,
    /// Raw score range, normalised to 0..1.
    pub scale: (f64, f64),
}

/// One penalty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PenaltySpec {
    /// Its name.
    pub name: String,
    /// The amount.
    pub value: Expr,
    /// When it applies (always when `None`).
    pub when: Option<Expr>,
}

/// One format term.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FormatSpec {
    /// `think_answer`, `answer_only` or `plain`.
    pub format: String,
    /// Its weight.
    pub weight: f64,
}

/// A user-defined scorer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Function {
    /// Parameters with their defaults.
    pub params: Vec<(String, Option<Val>)>,
    /// The body.
    pub body: Expr,
}

/// A dataset: source, filters, curation, balance, de-duplication, splits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetSpec {
    /// The JSONL file (absolute).
    pub source: String,
    /// The file as written.
    pub source_written: String,
    /// Folder image paths are relative to (absolute).
    pub images: String,
    /// `skip` or `fail`.
    pub on_bad_row: String,
    /// Conditions a row must meet, in order.
    pub filters: Vec<Expr>,
    /// Rollout-based curation.
    pub curate: Option<CurateSpec>,
    /// Field to balance on.
    pub balance: Option<String>,
    /// Splits whose rows (the same question and images) are removed from this dataset (`dataset.split`).
    pub dedup: Vec<(String, Option<String>)>,
    /// Read at most this many rows.
    pub limit: Option<usize>,
    /// Named splits and their fractions, in name order (rows are dealt to
    /// them in this order after the seeded shuffle).
    pub splits: Vec<(String, f64)>,
    /// Seed of shuffling, balancing and splitting.
    pub seed: u64,
}

impl DatasetSpec {
    /// The settings that decide which rows the dataset's splits hold
    /// (filters, limit, bad-row policy, curation, balance, dedup, splits,
    /// seed, the file as written), without its machine's paths: what a
    /// run's `splits.json` records and the emitted scripts compare with
    /// theirs, so that a record of another pipeline is refused.
    pub fn row_settings(&self) -> serde_json::Value {
        let mut settings = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(fields) = settings.as_object_mut() {
            fields.remove("source");
            fields.remove("images");
        }
        settings
    }
}

/// QI-Box curation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurateSpec {
    /// The model that rolls out.
    pub policy: String,
    /// Rollouts per prompt (K).
    pub rollouts: usize,
    /// The rubric scoring them.
    pub rubric: String,
    /// Sampling settings (`None`: the defaults).
    pub rollout: Option<String>,
    /// Which prompts to keep, over `mean`, `std`, `min`, `max`.
    pub keep: Expr,
}

/// Sampling settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutSpec {
    /// Completions per prompt (G).
    pub group: usize,
    /// Temperature (0: greedy).
    pub temperature: f64,
    /// Nucleus sampling.
    pub top_p: f64,
    /// Top-k (0: off).
    pub top_k: usize,
    /// Longest completion in tokens.
    pub max_tokens: usize,
    /// End-of-sequence suppressed until this many tokens.
    pub min_tokens: usize,
    /// `think_answer`, `answer_only` or `plain`.
    pub format: String,
    /// Stop strings.
    pub stop: Vec<String>,
}

impl RolloutSpec {
    /// The rollout used where none is named: 4 samples of up to 128 tokens.
    pub fn unnamed() -> Self {
        RolloutSpec {
            group: 4,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 128,
            min_tokens: 0,
            format: "think_answer".into(),
            stop: Vec::new(),
        }
    }
}

/// Reflection on unsafe completions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReflectionSpec {
    /// Which completions are reflected on.
    pub when: Expr,
    /// The prompt; `{completion}` stands for the completion.
    pub prompt: String,
    /// Rounds per completion.
    pub rounds: usize,
    /// `replace` or `append`.
    pub keep: String,
}

/// One training stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageSpec {
    /// Its name.
    pub name: String,
    /// The model trained (its starting weights when `after` is unset).
    pub policy: String,
    /// The stage whose result this stage starts from.
    pub after: Option<String>,
    /// The frozen reference model, if any.
    pub reference: Option<String>,
    /// The training split.
    pub data: SplitRef,
    /// A held-out split scored before and after.
    pub eval_data: Option<SplitRef>,
    /// Sampling settings (GRPO).
    pub rollout: Option<String>,
    /// Reflection (GRPO).
    pub reflection: Option<String>,
    /// The reward rubric (GRPO; also scores `eval_data`).
    pub reward: Option<String>,
    /// Optimiser steps (`None`: one epoch of the data).
    pub steps: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub checkpoint_keep: usize,
    /// The policy's vision tower takes no gradient (`freeze_vision`).
    #[serde(default)]
    pub freeze_vision: bool,
    /// The algorithm.
    pub algorithm: Algorithm,
}

/// A dataset split (`None`: all rows).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitRef {
    /// The dataset.
    pub dataset: String,
    /// The split.
    pub split: Option<String>,
}

/// As written in a file: `dataset.split`, or `dataset` for all its rows.
impl std::fmt::Display for SplitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.split {
            Some(split) => write!(f, "{}.{split}", self.dataset),
            None => write!(f, "{}", self.dataset),
        }
    }
}

/// The algorithm of a stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Algorithm {
    /// Supervised fine-tuning on reference answers.
    Sft(SftSpec),
    /// GRPO.
    Grpo(Box<GrpoSpec>),
}

/// SFT settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SftSpec {
    /// Learning rate.
    pub lr: f64,
    /// Examples per step.
    pub batch: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Truncation length (`None`: the model's context).
    pub max_tokens: Option<usize>,
    /// The row field holding the reference completion.
    pub field: String,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW's β₁, β₂ and ε.
    #[serde(flatten)]
    pub adam: AdamSpec,
    /// Gradient-norm clip.
    pub max_grad_norm: f64,
    /// Warm-up steps.
    pub warmup: u64,
    /// `constant`, `linear` or `cosine`.
    pub schedule: String,
}

/// GRPO settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrpoSpec {
    /// Learning rate.
    pub lr: f64,
    /// Prompts per step.
    pub batch_prompts: usize,
    /// Completions per forward/backward pass (`None`: all).
    pub micro_batch: Option<usize>,
    /// Updates per batch (μ).
    pub iterations: usize,
    /// ε_low.
    pub clip_low: f64,
    /// ε_high.
    pub clip_high: f64,
    /// Dual-clip constant.
    pub dual_clip: Option<f64>,
    /// `group_std`, `group_mean` or `batch_std`.
    pub advantage: String,
    /// Added to the std.
    pub eps: f64,
    /// `sum_then_normalize` or `normalize_then_sum`.
    pub multi_objective: String,
    /// Aggregation.
    pub loss: String,
    /// `token` or `sequence`.
    pub importance: String,
    /// Mask truncated completions.
    pub mask_truncated: bool,
    /// Entropy bonus.
    pub entropy_coef: f64,
    /// Gradient-norm clip.
    pub max_grad_norm: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW's β₁, β₂ and ε.
    #[serde(flatten)]
    pub adam: AdamSpec,
    /// Warm-up steps.
    pub warmup: u64,
    /// LR schedule.
    pub schedule: String,
    /// KL settings.
    pub kl: KlSpec,
    /// Dynamic sampling.
    pub dynamic_sampling: Option<DynamicSamplingSpec>,
    /// DAPO overlong reward shaping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlong: Option<OverlongSpec>,
    /// The cost constraint (Safe RLHF's Lagrangian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostSpec>,
}

/// DAPO overlong reward shaping: a linear penalty over the last `cache`
/// tokens before `max`, the full penalty beyond.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OverlongSpec {
    /// L_max, in tokens.
    pub max: usize,
    /// L_cache, the soft zone before `max`, in tokens.
    pub cache: usize,
    /// Scale of the penalty.
    pub factor: f64,
}

/// A Safe RLHF-style cost constraint: the mean of a cost criterion must stay
/// below `threshold`; a learned multiplier λ weighs it against the reward.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CostSpec {
    /// The criterion of the stage's rubric used as the cost.
    pub criterion: String,
    /// The bound d on the mean cost.
    pub threshold: f64,
    /// λ at the start.
    pub lambda_init: f64,
    /// Learning rate of log λ.
    pub lambda_lr: f64,
    /// Upper bound of λ.
    pub lambda_max: f64,
    /// Completions in the moving average of the cost.
    pub window: usize,
    /// Steps before λ moves.
    pub delay: u64,
}

/// KL settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KlSpec {
    /// `k1`, `k2`, `k3` or `k3_corrected`.
    pub estimator: String,
    /// `loss` or `reward`.
    pub placement: String,
    /// β.
    pub beta: f64,
}

/// Dynamic sampling.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DynamicSamplingSpec {
    /// The rubric and criterion filtered on.
    pub rubric: String,
    /// The criterion (`None`: the total).
    pub criterion: Option<String>,
    /// Keep groups whose mean lies inside this range, instead of varying groups.
    pub band: Option<(f64, f64)>,
    /// Extra batches drawn at most per step.
    pub max_resample: usize,
}

/// An evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalSpec {
    /// Its name.
    pub name: String,
    /// The model.
    pub model: String,
    /// The split.
    pub data: SplitRef,
    /// The rubric.
    pub rubric: String,
    /// Sampling (`None`: greedy).
    pub rollout: Option<String>,
}

/// AdamW's moment decay rates and ε as an `sft` or `grpo` block sets them
/// (flattened into the block's spec: `adam_beta1`, `adam_beta2`,
/// `adam_epsilon`). A plan written before they existed reads the defaults,
/// ε 1e-8, although saferc ran those plans with burn's ε of 1e-5.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct AdamSpec {
    /// β₁: decay of the gradient's running mean.
    #[serde(default = "default_adam_beta1")]
    pub adam_beta1: f64,
    /// β₂: decay of the squared gradient's running mean.
    #[serde(default = "default_adam_beta2")]
    pub adam_beta2: f64,
    /// ε: added to the root of the squared gradient's mean.
    #[serde(default = "default_adam_epsilon")]
    pub adam_epsilon: f64,
}

impl Default for AdamSpec {
    /// PyTorch's (and TRL's) defaults: β = (0.9, 0.999), ε = 1e-8.
    fn default() -> Self {
        Self {
            adam_beta1: default_adam_beta1(),
            adam_beta2: default_adam_beta2(),
            adam_epsilon: default_adam_epsilon(),
        }
    }
}

fn default_adam_beta1() -> f64 {
    0.9
}

fn default_adam_beta2() -> f64 {
    0.999
}

fn default_adam_epsilon() -> f64 {
    1e-8
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{AdamSpec, Algorithm, SftSpec};

    #[test]
    fn adam_settings_sit_in_the_block_and_default_where_an_older_plan_has_none() {
        let spec = SftSpec {
            lr: 1e-4,
            batch: 8,
            epochs: 1,
            max_tokens: None,
            field: "response".into(),
            weight_decay: 0.0,
            adam: AdamSpec {
                adam_beta1: 0.8,
                adam_beta2: 0.95,
                adam_epsilon: 1e-6,
            },
            max_grad_norm: 1.0,
            warmup: 0,
            schedule: "constant".into(),
        };
        // Inside the `kind`-tagged algorithm, as stages hold it.
        let algorithm = Algorithm::Sft(spec.clone());
        let tagged = serde_json::to_value(&algorithm).unwrap();
        assert_eq!(tagged["adam_epsilon"], 1e-6);
        assert_eq!(
            serde_json::from_value::<Algorithm>(tagged).unwrap(),
            algorithm
        );
        let mut json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["adam_beta2"], 0.95);
        assert_eq!(
            serde_json::from_value::<SftSpec>(json.clone()).unwrap(),
            spec
        );
        let object = json.as_object_mut().unwrap();
        for key in ["adam_beta1", "adam_beta2", "adam_epsilon"] {
            object.remove(key);
        }
        let older: SftSpec = serde_json::from_value(json).unwrap();
        assert_eq!(older.adam, AdamSpec::default());
        assert_eq!(older.adam.adam_epsilon, 1e-8);
    }
}
