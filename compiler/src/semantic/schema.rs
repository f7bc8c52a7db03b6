//! The schema table: every block and every key of the language, with its
//! type, unit, default, allowed range, documentation and history.
//!
//! One table serves the checker (types, ranges, required keys, unknown and
//! renamed keys), the formatter and the editor (hover and completion read
//! the docs), and the generated reference `docs/reference/settings.md`.

use crate::syntax::ast::{DeclKind, Unit};

/// The type of a setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    /// Any number.
    Number,
    /// A whole number.
    Int,
    /// A number between 0 and 1.
    Fraction,
    /// `true` or `false`.
    Bool,
    /// A string.
    Str,
    /// A path (a string resolved relative to the file that names it).
    Path,
    /// One of a fixed set of names.
    Enum(&'static [&'static str]),
    /// A number with one of these units; a bare number takes the first.
    Quantity(&'static [Unit]),
    /// A range `low..high`.
    Range,
    /// A number or a range `low..high`.
    NumberOrRange,
    /// A reference to a declaration of this kind.
    Ref(DeclKind),
    /// A prompt: a `prompt` declaration or a string.
    PromptText,
    /// A split of a dataset: `data.train`.
    SplitRef,
    /// A list of dataset splits.
    SplitList,
    /// A raw criterion of a rubric: `rubric.safety`.
    CriterionRef,
    /// A criterion name of the stage's rubric (`harm`).
    CriterionName,
    /// A data source call: `jsonl("path")`.
    Source,
    /// A list of strings.
    StrList,
    /// A row field name.
    Field,
    /// A boolean expression over the scope of the block.
    BoolExpr(Scope),
    /// A number expression over the scope of the block.
    NumberExpr(Scope),
    /// A scorer call (`judge.score("grounding")`, `regex("...")`).
    ScorerCall,
}

/// Which names an expression may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Rubric `total` and penalty conditions: criteria, `weighted`,
    /// `penalties`, `format`, `judge`, `think`, `answer`.
    Rubric,
    /// Curation `keep`: `mean`, `std`, `min`, `max` of the rollout scores.
    Curate,
    /// Reflection `when`: `rubric.criterion` scores and `reward`.
    Reflection,
}

/// A default value, as documented and as filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// No default: the key is optional and absent means "off".
    None,
    /// The key must be given.
    Required,
    /// A number.
    Number(f64),
    /// A quantity.
    Quantity(f64, Unit),
    /// A boolean.
    Bool(bool),
    /// An enum value or string.
    Str(&'static str),
    /// A range.
    Range(f64, f64),
    /// Computed from other settings (the text says how).
    Derived(&'static str),
}

/// One key of a block.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key.
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
    /// Its default.
    pub default: Default,
    /// The smallest and largest allowed values, and whether each end is
    /// included (`(0, 1, false, true)` is `(0, 1]`).
    pub range: Option<(f64, f64, bool, bool)>,
    /// What it does.
    pub doc: &'static str,
    /// Set when the key is deprecated: what to use instead.
    pub deprecated: Option<&'static str>,
}

/// A name users may write that the language spells differently (TRL,
/// verl and EasyR1 vocabulary, or an older saferc name).
#[derive(Debug, Clone, Copy)]
pub struct Renamed {
    /// What the user wrote.
    pub old: &'static str,
    /// Where it lives in saferc (`lr`, `kl.beta`, `rollout.group`).
    pub new: &'static str,
    /// Whether the value written for `old` means the same under `new`, so
    /// renaming the key is a fix (`api_key` holds a secret where
    /// `api_key_env` names a variable; `epsilon_high` is one end of `clip`;
    /// verl's `max_num_gen_batches` counts the first batch and takes 0 for
    /// no limit, `max_resample` counts extra batches). A value of another
    /// type is caught apart from this: the fix is offered only when the
    /// value checks under `new`.
    pub keeps_value: bool,
}

/// Statement forms a block accepts besides settings and nested blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `filter condition`.
    Filter,
    /// `criterion ...`.
    Criterion,
    /// `penalty ...`.
    Penalty,
    /// `format ...`.
    Format,
}

/// A block: a declaration body or a nested block.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    /// The block's name (`grpo`, `kl`, or the declaration keyword).
    pub name: &'static str,
    /// What it is.
    pub doc: &'static str,
    /// Its keys.
    pub keys: &'static [Key],
    /// Its nested blocks.
    pub blocks: &'static [&'static Block],
    /// Extra statement forms.
    pub forms: &'static [Form],
    /// Names accepted as keys besides `keys`, with this type (the split
    /// names of `split { train = 0.9, eval = 0.1 }`).
    pub open: Option<Ty>,
    /// Known other spellings.
    pub renamed: &'static [Renamed],
}

impl Block {
    /// Looks a key up.
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// Looks a nested block up.
    pub fn block(&self, name: &str) -> Option<&'static Block> {
        self.blocks.iter().copied().find(|b| b.name == name)
    }

    /// Looks a renamed key up.
    pub fn renamed(&self, name: &str) -> Option<&'static Renamed> {
        self.renamed.iter().find(|r| r.old == name)
    }

    /// Every key and block name, for "did you mean".
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.keys
            .iter()
            .map(|k| k.name)
            .chain(self.blocks.iter().map(|b| b.name))
    }
}

const fn key(name: &'static str, ty: Ty, default: Default, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        default,
        range: None,
        doc,
        deprecated: None,
    }
}

const fn ranged(
    name: &'static str,
    ty: Ty,
    default: Default,
    range: (f64, f64, bool, bool),
    doc: &'static str,
) -> Key {
    Key {
        name,
        ty,
        default,
        range: Some(range),
        doc,
        deprecated: None,
    }
}

const INF: f64 = f64::INFINITY;
/// `[0, inf)`.
const NON_NEGATIVE: (f64, f64, bool, bool) = (0.0, INF, true, false);
/// `(0, inf)`.
const POSITIVE: (f64, f64, bool, bool) = (0.0, INF, false, false);
/// `[1, inf)`.
const AT_LEAST_ONE: (f64, f64, bool, bool) = (1.0, INF, true, false);
/// A count of prompts or completions per step: from 1 to 2^24
/// (16,777,216), so that every product of counts (`batch` times `group`,
/// a step's completions against its micro-batches) is exact and no
/// typo such as `1e308 prompts` reaches the arithmetic as infinity.
const COUNT: (f64, f64, bool, bool) = (1.0, MAX_COUNT, true, true);
/// The largest [`COUNT`].
pub const MAX_COUNT: f64 = 16_777_216.0;
/// A seed: a whole number from 0 up to (not including) 2^53, below which
/// every whole number is exact (numbers are read as `f64`: a larger seed
/// would silently become another, and 2^53 + 1 reads as 2^53).
const SEED: (f64, f64, bool, bool) = (0.0, 9_007_199_254_740_992.0, true, false);
/// Requests a judge keeps in flight (each on a thread of its own).
pub const MAX_CONCURRENCY: f64 = 1024.0;
/// AdamW's β: `[0, 0.9999999]`, so that it stays below 1 as the `f32` the
/// optimiser computes with (at 1 the bias correction divides by zero).
const ADAM_BETA: (f64, f64, bool, bool) = (0.0, 0.9999999, true, true);
/// AdamW's ε: at least 1e-30, so that it stays above 0 as an `f32` (at 0 a
/// weight whose gradient was always 0 becomes 0/0).
const ADAM_EPSILON: (f64, f64, bool, bool) = (1e-30, INF, true, false);

/// AdamW's settings, the same in the `sft` and `grpo` blocks.
const ADAM_BETA1_KEY: Key = ranged(
    "adam_beta1",
    Ty::Number,
    Default::Number(0.9),
    ADAM_BETA,
    "AdamW's β₁ (decay of the gradient's running mean).",
);
const ADAM_BETA2_KEY: Key = ranged(
    "adam_beta2",
    Ty::Number,
    Default::Number(0.999),
    ADAM_BETA,
    "AdamW's β₂ (decay of the squared gradient's running mean).",
);
const ADAM_EPSILON_KEY: Key = ranged(
    "adam_epsilon",
    Ty::Number,
    Default::Number(1e-8),
    ADAM_EPSILON,
    "AdamW's ε, added to the root of the squared gradient's mean; 1e-8 as in PyTorch and TRL.",
);

/// Architectures the runtime knows.
pub const ARCHS: &[&str] = &["tiny_vlm", "qwen2", "qwen2_5_vl"];
/// The context length of each architecture when `context` is not given.
pub fn default_context(arch: &str) -> f64 {
    match arch {
        "tiny_vlm" => 1024.0,
        _ => 32768.0,
    }
}
/// Response formats scored by `format` terms and produced by rollouts.
pub const FORMATS: &[&str] = &["think_answer", "answer_only", "plain"];

const MODEL: Block = Block {
    name: "model",
    doc: "A network: the policy, a frozen reference or a judge. Weights load from a local Hugging Face-style directory.",
    keys: &[
        key("arch", Ty::Enum(ARCHS), Default::Required, "The architecture: `tiny_vlm` (built in), `qwen2` or `qwen2_5_vl`."),
        key("weights", Ty::Path, Default::Required, "Directory with `config.json`, `*.safetensors` and `tokenizer.json`, relative to this file."),
        key("tokenizer", Ty::Path, Default::Derived("the `weights` directory"), "Directory of the tokenizer (`tokenizer.json`, `tokenizer_config.json`), or its `tokenizer.json`, when it is not next to the weights."),
        key("dtype", Ty::Enum(&["f32", "bf16", "f16"]), Default::Str("f32"), "The dtype of a model trained from this one. `saferc run` trains in f32 from weights of any float dtype and saves the trained model in this dtype, each weight rounded to the nearest value (f32: exactly as trained; the scores after training, and a stage after it, read what was saved); checkpoints are f32. Emitted TRL scripts load and train in bf16 where it is `bf16`."),
        key("device", Ty::Enum(&["auto", "cpu", "wgpu", "cuda"]), Default::Str("auto"), "Where the model runs; `auto` takes the run's device."),
        ranged("context", Ty::Quantity(&[Unit::Tokens]), Default::Derived("the model folder's `config.json` `max_position_embeddings`; where the folder is not there yet, `check` assumes 1024 tokens for `tiny_vlm`, 32768 for Qwen"), AT_LEAST_ONE, "The longest sequence the model accepts, prompt and completion together. `saferc run` holds every prompt and completion to it (rows too long for it are bad rows) and refuses a value above `config.json`'s `max_position_embeddings`."),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[
        Renamed { old: "path", new: "weights", keeps_value: true },
        Renamed { old: "model_name_or_path", new: "weights", keeps_value: true },
        Renamed { old: "torch_dtype", new: "dtype", keeps_value: true },
        Renamed { old: "architecture", new: "arch", keeps_value: true },
    ],
};

const JUDGE: Block = Block {
    name: "judge",
    doc: "Something that scores completions: built-in rules, a local model prompted with the rubric, or an OpenAI-compatible HTTP endpoint.",
    keys: &[
        key("kind", Ty::Enum(&["rules", "model", "http"]), Default::Required, "`rules` (built-in scorers), `model` (a local model) or `http` (an OpenAI-compatible `/v1/chat/completions` endpoint)."),
        key("model", Ty::Ref(DeclKind::Model), Default::None, "The local judge model (`kind = model`)."),
        key("named", Ty::Str, Default::None, "The name of a judge endpoint declared in `safer.toml` (`[judges.NAME]`): its URL and model name always come from there; its key variable, CA file, concurrency, timeout, `images` and `max_tokens` where it sets them (the judge's own stay otherwise); so shared files carry no URL or key."),
        key("endpoint", Ty::Str, Default::None, "Base URL of the endpoint, e.g. `http://localhost:8000/v1`; required for `kind = http` without `named` (E0211)."),
        key("model_name", Ty::Str, Default::None, "The model name sent to the endpoint; required for `kind = http` without `named` (E0211)."),
        key("api_key_env", Ty::Str, Default::None, "Name of the environment variable holding the API key; the key itself is never written in a file or logged."),
        key("ca_file", Ty::Path, Default::Derived("the bundled Mozilla roots"), "PEM file of the certificate authorities that an `https` endpoint's certificate must chain to (a private CA), relative to this file; it replaces the bundled Mozilla roots for this judge."),
        ranged("concurrency", Ty::Int, Default::Number(4.0), (1.0, MAX_CONCURRENCY, true, true), "Requests in flight at once (at most 1024)."),
        ranged("timeout", Ty::Number, Default::Number(60.0), POSITIVE, "Seconds before a request is abandoned and retried."),
        ranged("retries", Ty::Int, Default::Number(3.0), (0.0, 100.0, true, true), "Retries with exponential backoff on timeouts, 408, 429 and 5xx answers (at most 100: each wait is capped at 60 s)."),
        ranged("temperature", Ty::Number, Default::Number(0.0), (0.0, 2.0, true, true), "Sampling temperature of the judge."),
        ranged("fallback", Ty::Number, Default::None, (0.0, 1.0, true, true), "The score given when a `model` or `http` judge's reply holds no score; without it such a reply stops the run with the reply in the message."),
        ranged("max_tokens", Ty::Quantity(&[Unit::Tokens]), Default::Derived("the server's default for `http`; 8 tokens for `model`"), AT_LEAST_ONE, "The longest reply: `max_tokens` in each request to an `http` endpoint, the generation limit of a `model` judge. A judge that reasons before its score needs room for it: a reply is read after its last `</think>` (or `</thinking>`), as Qwen3 and generative reward models write it without a server-side reasoning parser."),
        key("images", Ty::Bool, Default::Derived("`true` where the judge can see images: `http` judges, and `model` judges on a vision-language model"), "Whether each question shows the judge the row's images, before its text: as OpenAI `image_url` parts for `http` (base64 `data:` URLs: a PNG or JPEG file as it is; WebP, GIF, BMP, TIFF and transparent PNGs as a PNG of what the policy sees, an EXIF-turned photo as an upright JPEG), in the prompt for `model`. Set `false` for an endpoint that reads text only; a judge that does not see a row's images says so once per run."),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[
        Renamed { old: "url", new: "endpoint", keeps_value: true },
        Renamed { old: "base_url", new: "endpoint", keeps_value: true },
        Renamed { old: "api_key", new: "api_key_env", keeps_value: false },
        Renamed { old: "max_new_tokens", new: "max_tokens", keeps_value: true },
        Renamed { old: "max_completion_tokens", new: "max_tokens", keeps_value: true },
    ],
};

const CURATE: Block = Block {
    name: "curate",
    doc: "Rollout-based curation (the QI-Box): each prompt is scored by several rollouts; prompts whose score statistics fall in the box are kept.",
    keys: &[
        key("policy", Ty::Ref(DeclKind::Model), Default::Required, "The model that produces the rollouts."),
        ranged("rollouts", Ty::Int, Default::Number(4.0), (2.0, INF, true, false), "Rollouts per prompt (K); at least 2 for a standard deviation."),
        key("rubric", Ty::Ref(DeclKind::Rubric), Default::Required, "The rubric that scores the rollouts."),
        key("rollout", Ty::Ref(DeclKind::Rollout), Default::None, "Sampling settings of the rollouts; the stage's rollout when omitted."),
        key("keep", Ty::BoolExpr(Scope::Curate), Default::Required, "Which prompts to keep, over `mean`, `std`, `min` and `max` of their rollout scores (0 to 1)."),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[Renamed { old: "n", new: "rollouts", keeps_value: true }, Renamed { old: "k", new: "rollouts", keeps_value: true }],
};

const SPLIT: Block = Block {
    name: "split",
    doc: "Named fractions of the dataset (`train = 0.9, eval = 0.1`); they must sum to 1. Rows are assigned with the dataset's `seed`.",
    keys: &[],
    blocks: &[],
    forms: &[],
    open: Some(Ty::Fraction),
    renamed: &[],
};

const DATASET: Block = Block {
    name: "dataset",
    doc: "A data source with filters, curation, balancing and splits.",
    keys: &[
        key("source", Ty::Source, Default::Required, "Where rows come from: `jsonl(\"path\")`, a path relative to this file."),
        key("images", Ty::Path, Default::Derived("the folder of the source file"), "Folder that image paths in rows are relative to, itself written relative to this file. Images may be PNG, JPEG, WebP, GIF (its first frame), BMP or TIFF, and are turned upright by their EXIF orientation, as transformers loads them."),
        key("on_bad_row", Ty::Enum(&["skip", "fail"]), Default::Str("skip"), "What to do with a row that is not valid JSON, lacks a field or names a missing image: `skip` it (and count it) or `fail`."),
        key("balance", Ty::Field, Default::None, "Split so that each split gets its share of every value of this field, then repeat rows of rarer values in what a stage trains on until every value is equally frequent (held-out and eval splits keep each row once)."),
        key("dedup", Ty::SplitList, Default::None, "Drop rows whose question and images also appear in these splits (e.g. evaluation sets); done after filters, before curation, balancing and splitting."),
        ranged("limit", Ty::Int, Default::None, AT_LEAST_ONE, "Read at most this many rows."),
        ranged("seed", Ty::Int, Default::Number(0.0), SEED, "Seed of the shuffling, balancing and split assignment."),
    ],
    blocks: &[&CURATE, &SPLIT],
    forms: &[Form::Filter],
    open: None,
    renamed: &[Renamed { old: "path", new: "source", keeps_value: true }, Renamed { old: "train_files", new: "source", keeps_value: true }],
};

const CRITERION: Block = Block {
    name: "criterion",
    doc: "Settings of one rubric criterion.",
    keys: &[
        key(
            "scorer",
            Ty::ScorerCall,
            Default::Derived("the rubric's judge, asked about this criterion"),
            "How the criterion is scored: a scorer call (built-in, or yours: `scorer f(...) = expression`) or `judge.score(\"name\")`.",
        ),
        key(
            "scale",
            Ty::Range,
            Default::Range(0.0, 1.0),
            "The range of the raw score; it is normalised to 0..1.",
        ),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[],
};

const RUBRIC: Block = Block {
    name: "rubric",
    doc: "A structured reward: weighted criteria scored by the judge, penalties, format terms and the `total` that combines them.",
    keys: &[key(
        "total",
        Ty::NumberExpr(Scope::Rubric),
        Default::Derived("`weighted + penalties + format`"),
        "The reward, over the criteria (each 0 to 1), `weighted` (the weighted mean of the criteria), `penalties` (their sum) and `format` (the weighted format terms).",
    )],
    blocks: &[&CRITERION],
    forms: &[Form::Criterion, Form::Penalty, Form::Format],
    open: None,
    renamed: &[Renamed { old: "reward_weights", new: "criterion NAME weight W", keeps_value: true }],
};

const ROLLOUT: Block = Block {
    name: "rollout",
    doc: "How completions are sampled: the group size, temperature, nucleus and top-k sampling, lengths and the response format.",
    keys: &[
        ranged("group", Ty::Quantity(&[Unit::Completions]), Default::Number(8.0), COUNT, "Completions sampled per prompt (G)."),
        ranged("temperature", Ty::Number, Default::Number(1.0), (0.0, 2.0, true, true), "Sampling temperature; 0 is greedy."),
        ranged("top_p", Ty::Number, Default::Number(1.0), (0.0, 1.0, false, true), "Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`."),
        ranged("top_k", Ty::Int, Default::Number(0.0), NON_NEGATIVE, "Keep the `top_k` most likely tokens; 0 turns it off."),
        ranged("max_tokens", Ty::Quantity(&[Unit::Tokens]), Default::Required, AT_LEAST_ONE, "The longest completion."),
        ranged("min_tokens", Ty::Quantity(&[Unit::Tokens]), Default::Quantity(0.0, Unit::Tokens), NON_NEGATIVE, "End-of-sequence is suppressed until this many tokens."),
        key("format", Ty::Enum(FORMATS), Default::Str("think_answer"), "The response format completions should follow: `think_answer` (`<think>..</think><answer>..</answer>`), `answer_only` or `plain`. GRPO logs the share that does (`format_compliance`) and warns when under half do; reward it with a rubric `format` term."),
        key("stop", Ty::StrList, Default::None, "Strings that end a completion; its text ends with the first one, which its tokens hold (`stop = [\"</answer>\"]` keeps the `</answer>` a format term looks for). A string holding one of the model's special tokens (`<|im_end|>`) is refused (E0332, from the model folder's `tokenizer.json`): the text is decoded without them, and the model's end-of-sequence tokens end a completion already."),
        Key { name: "n", ty: Ty::Quantity(&[Unit::Completions]), default: Default::None, range: Some(AT_LEAST_ONE), doc: "Old name of `group`.", deprecated: Some("group") },
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[
        Renamed { old: "num_generations", new: "group", keeps_value: true },
        Renamed { old: "max_completion_length", new: "max_tokens", keeps_value: true },
        Renamed { old: "max_new_tokens", new: "max_tokens", keeps_value: true },
        Renamed { old: "min_new_tokens", new: "min_tokens", keeps_value: true },
    ],
};

const REFLECTION: Block = Block {
    name: "reflection",
    doc: "Safety-aware rollout: completions for which `when` holds are shown back to the policy with the reflection prompt, regenerated, re-scored, and enter the group.",
    keys: &[
        key("when", Ty::BoolExpr(Scope::Reflection), Default::Required, "Which completions are reflected on: a condition over `rubric.criterion` scores and `reward`."),
        key("prompt", Ty::PromptText, Default::Required, "The reflection prompt; `{completion}` stands for the original completion. It may not hold one of the policy's special tokens (E0332)."),
        ranged("rounds", Ty::Int, Default::Number(1.0), AT_LEAST_ONE, "Reflection rounds per completion."),
        key("keep", Ty::Enum(&["replace", "append"]), Default::Str("replace"), "How corrections enter the group: `replace` the unsafe completion (the group size stays G) or `append` to the group."),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[Renamed { old: "max_rounds", new: "rounds", keeps_value: true }, Renamed { old: "template", new: "prompt", keeps_value: true }],
};

const KL: Block = Block {
    name: "kl",
    doc: "The KL regulariser against the frozen reference model.",
    keys: &[
        key("estimator", Ty::Enum(&["k1", "k2", "k3", "k3_corrected"]), Default::Str("k3"), "`k1` (log ratio), `k2` (half squared log ratio), `k3` (low-variance, GRPO's choice) or `k3_corrected` (times the importance ratio, DeepSeek-V3.2); per token, summed over a completion where `placement = reward`. Unwritten: `k3`, or `k1` with `placement = reward`."),
        key("placement", Ty::Enum(&["loss", "reward"]), Default::Str("loss"), "`loss`: β·KL added to the per-token loss (GRPO); `reward`: β times the completion's summed per-token estimates (the `estimator`'s, k1 unless written) subtracted from the reward before advantages (PPO style)."),
        ranged("beta", Ty::Number, Default::Number(0.0), NON_NEGATIVE, "The coefficient β; 0 turns the term off (and no reference model is needed)."),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[Renamed { old: "coef", new: "beta", keeps_value: true }, Renamed { old: "kl_coef", new: "beta", keeps_value: true }, Renamed { old: "type", new: "estimator", keeps_value: true }],
};

const DYNAMIC_SAMPLING: Block = Block {
    name: "dynamic_sampling",
    doc: "DAPO dynamic sampling: keep only groups whose raw criterion varies (or whose mean lies in `band`), resampling up to `max_resample` times.",
    keys: &[
        key("on", Ty::CriterionRef, Default::Required, "The raw criterion filtered on, e.g. `safety_rubric.safety`; not the shaped total."),
        key("band", Ty::Range, Default::None, "Keep groups whose mean lies strictly inside this range instead of groups that vary."),
        ranged("max_resample", Ty::Int, Default::Number(3.0), NON_NEGATIVE, "How many extra batches may be drawn to fill a step; the run stops with an error when nothing is kept after that."),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[Renamed { old: "max_num_gen_batches", new: "max_resample", keeps_value: false }, Renamed { old: "filter_key", new: "on", keeps_value: true }],
};

const OVERLONG: Block = Block {
    name: "overlong",
    doc:
        "DAPO overlong reward shaping: a linear penalty over the last `cache` tokens before `max`.",
    keys: &[
        ranged(
            "max",
            Ty::Quantity(&[Unit::Tokens]),
            Default::Required,
            AT_LEAST_ONE,
            "L_max: completions longer than this get the full penalty.",
        ),
        ranged(
            "cache",
            Ty::Quantity(&[Unit::Tokens]),
            Default::Required,
            AT_LEAST_ONE,
            "L_cache: the length of the soft zone before `max`.",
        ),
        ranged(
            "factor",
            Ty::Number,
            Default::Number(1.0),
            NON_NEGATIVE,
            "Scale of the penalty.",
        ),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[],
};

const LAMBDA: Block = Block {
    name: "lambda",
    doc: "The learned Lagrange multiplier of the cost constraint.",
    keys: &[
        ranged(
            "init",
            Ty::Number,
            Default::Number(1.0),
            POSITIVE,
            "Initial λ; above 0, because λ is learned as log λ (as Safe RLHF does) and would never leave 0.",
        ),
        ranged(
            "lr",
            Ty::Number,
            Default::Number(0.1),
            POSITIVE,
            "Learning rate of log λ.",
        ),
        ranged(
            "max",
            Ty::Number,
            Default::Number(5.0),
            POSITIVE,
            "Upper bound of λ.",
        ),
        ranged(
            "window",
            Ty::Int,
            Default::Number(128.0),
            AT_LEAST_ONE,
            "Completions in the moving average of the cost.",
        ),
        ranged(
            "delay",
            Ty::Quantity(&[Unit::Steps]),
            Default::Quantity(0.0, Unit::Steps),
            NON_NEGATIVE,
            "Steps before λ starts to move.",
        ),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[
        Renamed {
            old: "lambda_init",
            new: "init",
            keeps_value: true,
        },
        Renamed {
            old: "lambda_lr",
            new: "lr",
            keeps_value: true,
        },
        Renamed {
            old: "lambda_max",
            new: "max",
            keeps_value: true,
        },
    ],
};

const COST: Block = Block {
    name: "cost",
    doc: "A Safe RLHF-style constraint: the mean of a cost criterion must stay below `threshold`; a learned multiplier λ weighs it against the reward before group normalisation.",
    keys: &[
        key("criterion", Ty::CriterionName, Default::Required, "The criterion of the stage's rubric used as the cost (higher is worse)."),
        ranged("threshold", Ty::Number, Default::Required, (0.0, 1.0, true, true), "The bound d on the mean cost, in 0..1 as the cost criterion's scores are (outside it the constraint never binds, or always does)."),
    ],
    blocks: &[&LAMBDA],
    forms: &[],
    open: None,
    renamed: &[],
};

/// The advantage estimators that normalise within a group.
pub const GROUP_NORMALISED: &[&str] = &["group_std", "group_mean"];

const GRPO: Block = Block {
    name: "grpo",
    doc: "Group Relative Policy Optimisation and its variants (clip-higher, Dr. GRPO, DAPO token-mean, GSPO, dynamic sampling, cost constraint).",
    keys: &[
        ranged("lr", Ty::Number, Default::Number(1e-6), (0.0, 1.0, false, false), "Learning rate of AdamW."),
        ranged("batch", Ty::Quantity(&[Unit::Prompts, Unit::Completions]), Default::Required, COUNT, "Prompts per step (or completions, which must be a whole number of groups); completions per step are prompts times the rollout `group`."),
        ranged("micro_batch", Ty::Quantity(&[Unit::Completions]), Default::Derived("all completions of the step"), COUNT, "Completions per forward/backward pass; gradients accumulate over micro-batches, so memory does not grow with `batch`."),
        ranged("iterations", Ty::Int, Default::Number(1.0), AT_LEAST_ONE, "Policy updates per batch (μ); old log-probs are kept for the importance ratio."),
        key("clip", Ty::NumberOrRange, Default::Range(0.2, 0.2), "The ratio clip ε, or `low..high` for clip-higher (DAPO uses `0.2..0.28`)."),
        key("dual_clip", Ty::Number, Default::None, "Dual-clip constant c > 1 bounding the loss of negative-advantage tokens (verl `clip_ratio_c`, usually 3)."),
        key("advantage", Ty::Enum(&["group_std", "group_mean", "batch_std"]), Default::Str("group_std"), "`group_std` (GRPO), `group_mean` (Dr. GRPO: no std division) or `batch_std` (std over the batch; a group of one takes the batch's mean as its baseline, REINFORCE++'s)."),
        ranged("eps", Ty::Number, Default::Number(1e-6), POSITIVE, "Added to the std before dividing."),
        key("multi_objective", Ty::Enum(&["sum_then_normalize", "normalize_then_sum"]), Default::Str("sum_then_normalize"), "Combine criteria before group normalisation, or normalise each criterion first (GDPO)."),
        key("loss", Ty::Enum(&["seq_mean_token_mean", "token_mean", "token_mean_local", "seq_sum_const"]), Default::Str("token_mean"), "Aggregation: `seq_mean_token_mean` (original GRPO), `token_mean` (DAPO, global tokens), `token_mean_local` (per micro-batch, TRL bnpo), `seq_sum_const` (Dr. GRPO)."),
        key("importance", Ty::Enum(&["token", "sequence"]), Default::Str("token"), "Token-level ratios, or one sequence-level ratio per completion (GSPO)."),
        key("mask_truncated", Ty::Bool, Default::Bool(false), "Leave completions that hit `max_tokens` out of the loss."),
        ranged("entropy_coef", Ty::Number, Default::Number(0.0), NON_NEGATIVE, "Entropy bonus coefficient."),
        ranged("max_grad_norm", Ty::Number, Default::Number(1.0), POSITIVE, "Global gradient-norm clipping."),
        ranged("weight_decay", Ty::Number, Default::Number(0.01), NON_NEGATIVE, "AdamW weight decay."),
        ADAM_BETA1_KEY,
        ADAM_BETA2_KEY,
        ADAM_EPSILON_KEY,
        ranged("warmup", Ty::Quantity(&[Unit::Steps]), Default::Quantity(0.0, Unit::Steps), NON_NEGATIVE, "Linear learning-rate warm-up."),
        key("schedule", Ty::Enum(&["constant", "linear", "cosine"]), Default::Str("constant"), "Learning-rate schedule after warm-up."),
    ],
    blocks: &[&KL, &DYNAMIC_SAMPLING, &OVERLONG, &COST],
    forms: &[],
    open: None,
    renamed: &[
        Renamed { old: "learning_rate", new: "lr", keeps_value: true },
        Renamed { old: "beta", new: "kl.beta", keeps_value: true },
        Renamed { old: "kl_coef", new: "kl.beta", keeps_value: true },
        Renamed { old: "epsilon", new: "clip", keeps_value: true },
        Renamed { old: "epsilon_high", new: "clip", keeps_value: false },
        Renamed { old: "clip_ratio", new: "clip", keeps_value: true },
        Renamed { old: "num_iterations", new: "iterations", keeps_value: true },
        Renamed { old: "ppo_epochs", new: "iterations", keeps_value: true },
        Renamed { old: "loss_type", new: "loss", keeps_value: true },
        Renamed { old: "loss_agg_mode", new: "loss", keeps_value: true },
        Renamed { old: "scale_rewards", new: "advantage", keeps_value: true },
        Renamed { old: "num_generations", new: "rollout.group", keeps_value: true },
        Renamed { old: "group", new: "rollout.group", keeps_value: true },
        Renamed { old: "temperature", new: "rollout.temperature", keeps_value: true },
        Renamed { old: "max_completion_length", new: "rollout.max_tokens", keeps_value: true },
        Renamed { old: "train_batch_size", new: "batch", keeps_value: false },
        Renamed { old: "per_device_train_batch_size", new: "micro_batch", keeps_value: false },
        Renamed { old: "clip_ratio_c", new: "dual_clip", keeps_value: true },
        Renamed { old: "mask_truncated_completions", new: "mask_truncated", keeps_value: true },
        Renamed { old: "importance_sampling_level", new: "importance", keeps_value: true },
        // verl's actor keys.
        Renamed { old: "grad_clip", new: "max_grad_norm", keeps_value: true },
        Renamed { old: "kl_loss_coef", new: "kl.beta", keeps_value: true },
        Renamed { old: "kl_loss_type", new: "kl.estimator", keeps_value: false },
        Renamed { old: "clip_ratio_low", new: "clip", keeps_value: false },
        Renamed { old: "clip_ratio_high", new: "clip", keeps_value: false },
        Renamed { old: "ppo_mini_batch_size", new: "batch", keeps_value: false },
        // TRL's trainer arguments.
        Renamed { old: "warmup_steps", new: "warmup", keeps_value: true },
        Renamed { old: "lr_scheduler_type", new: "schedule", keeps_value: true },
        Renamed { old: "steps", new: "train.steps", keeps_value: true },
    ],
};

const SFT: Block = Block {
    name: "sft",
    doc: "Supervised fine-tuning warm-up on the dataset's reference answers.",
    keys: &[
        ranged(
            "lr",
            Ty::Number,
            Default::Number(1e-4),
            (0.0, 1.0, false, false),
            "Learning rate of AdamW.",
        ),
        ranged(
            "batch",
            Ty::Quantity(&[Unit::Prompts]),
            Default::Number(8.0),
            COUNT,
            "Examples per step.",
        ),
        ranged(
            "epochs",
            Ty::Quantity(&[Unit::Epochs]),
            Default::Quantity(1.0, Unit::Epochs),
            AT_LEAST_ONE,
            "Passes over the data, as whole steps: an `sft` stage without `steps` runs ⌈rows × epochs ÷ batch⌉ steps, and a last batch the rows do not fill is filled from the next pass (each pass in a fresh order).",
        ),
        ranged(
            "max_tokens",
            Ty::Quantity(&[Unit::Tokens]),
            Default::Derived("the model's context"),
            AT_LEAST_ONE,
            "Reference answers are cut to this many tokens (and always to the room the context leaves after the prompt; a cut answer teaches no end-of-sequence).",
        ),
        key(
            "field",
            Ty::Field,
            Default::Str("response"),
            "The row field holding the reference completion the model learns to write.",
        ),
        ranged(
            "weight_decay",
            Ty::Number,
            Default::Number(0.0),
            NON_NEGATIVE,
            "AdamW weight decay.",
        ),
        ADAM_BETA1_KEY,
        ADAM_BETA2_KEY,
        ADAM_EPSILON_KEY,
        ranged(
            "max_grad_norm",
            Ty::Number,
            Default::Number(1.0),
            POSITIVE,
            "Global gradient-norm clipping.",
        ),
        ranged(
            "warmup",
            Ty::Quantity(&[Unit::Steps]),
            Default::Quantity(0.0, Unit::Steps),
            NON_NEGATIVE,
            "Linear learning-rate warm-up.",
        ),
        key(
            "schedule",
            Ty::Enum(&["constant", "linear", "cosine"]),
            Default::Str("constant"),
            "Learning-rate schedule after warm-up.",
        ),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[
        Renamed {
            old: "learning_rate",
            new: "lr",
            keeps_value: true,
        },
        Renamed {
            old: "num_train_epochs",
            new: "epochs",
            keeps_value: true,
        },
    ],
};

const CHECKPOINT: Block = Block {
    name: "checkpoint",
    doc: "When to write checkpoints (atomically, with optimiser, RNG and data-cursor state).",
    keys: &[
        ranged(
            "every",
            Ty::Quantity(&[Unit::Steps]),
            Default::Quantity(50.0, Unit::Steps),
            AT_LEAST_ONE,
            "Steps between checkpoints.",
        ),
        ranged(
            "keep",
            Ty::Int,
            Default::Number(3.0),
            AT_LEAST_ONE,
            "How many recent checkpoints are kept.",
        ),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[
        Renamed {
            old: "save_steps",
            new: "every",
            keeps_value: true,
        },
        Renamed {
            old: "save_limit",
            new: "keep",
            keeps_value: true,
        },
    ],
};

const TRAIN: Block = Block {
    name: "train",
    doc: "One training stage: an algorithm block (`grpo { ... }` or `sft { ... }`), the models, data, rollout, reflection and reward it uses, and how long it runs.",
    keys: &[
        key("policy", Ty::Ref(DeclKind::Model), Default::Required, "The model being trained."),
        key("reference", Ty::Ref(DeclKind::Model), Default::None, "The frozen reference for the KL term; a copy taken at the start of the stage. Required when `kl.beta > 0`."),
        key("data", Ty::SplitRef, Default::Required, "The training split, e.g. `qi_safe.train`."),
        key("eval_data", Ty::SplitRef, Default::None, "A held-out split scored before and after the stage with its `reward` rubric (greedy decoding, the rollout's lengths); an `sft` stage also reports its loss on the split's reference completions before and after (`summary.json`: `training.eval_loss`), with or without a rubric."),
        key("rollout", Ty::Ref(DeclKind::Rollout), Default::None, "The sampling policy (GRPO)."),
        key("reflection", Ty::Ref(DeclKind::Reflection), Default::None, "Reflection on unsafe completions (GRPO)."),
        key("reward", Ty::Ref(DeclKind::Rubric), Default::None, "The rubric whose `total` is the reward (GRPO)."),
        ranged("steps", Ty::Quantity(&[Unit::Steps]), Default::Derived("one epoch of `data`"), AT_LEAST_ONE, "Training steps: in `sft`, one optimiser step each; in `grpo`, one batch of rollouts each, trained on with `iterations` optimiser updates (TRL's `max_steps` is this times `iterations`). Warm-up, the schedule, `checkpoint.every` and the logs count these steps."),
        ranged("seed", Ty::Int, Default::Number(0.0), SEED, "Seed of sampling and shuffling."),
        key("after", Ty::Ref(DeclKind::Train), Default::None, "The stage that runs before this one (its trained policy is this stage's starting point)."),
        key("freeze_vision", Ty::Bool, Default::Bool(false), "Train the language model only: the policy's vision tower (`tiny_vlm`'s encoder and projection, Qwen2.5-VL's `visual` with its merger) keeps its weights and takes no gradient. Saves the tower's backward pass and optimiser state, and lifts the limit on the size of Qwen images in training (their attention scores need not be kept)."),
    ],
    blocks: &[&GRPO, &SFT, &CHECKPOINT],
    forms: &[],
    open: None,
    renamed: &[
        Renamed { old: "model", new: "policy", keeps_value: true },
        Renamed { old: "ref", new: "reference", keeps_value: true },
        Renamed { old: "ref_model", new: "reference", keeps_value: true },
        Renamed { old: "dataset", new: "data", keeps_value: true },
        Renamed { old: "max_steps", new: "steps", keeps_value: true },
        Renamed { old: "lr", new: "grpo.lr", keeps_value: true },
        Renamed { old: "batch", new: "grpo.batch", keeps_value: true },
        Renamed { old: "freeze_vision_tower", new: "freeze_vision", keeps_value: true },
    ],
};

const EVAL: Block = Block {
    name: "eval",
    doc: "Benchmark-style scoring of a model on a dataset split with a rubric.",
    keys: &[
        key(
            "model",
            Ty::Ref(DeclKind::Model),
            Default::Required,
            "The model evaluated.",
        ),
        key("data", Ty::SplitRef, Default::Required, "The split scored."),
        key(
            "rubric",
            Ty::Ref(DeclKind::Rubric),
            Default::Required,
            "The rubric that scores.",
        ),
        key(
            "rollout",
            Ty::Ref(DeclKind::Rollout),
            Default::None,
            "Lengths and stops of the completions (`max_tokens`, `min_tokens`, `stop`; 128 tokens when omitted); evaluation always decodes greedily, one completion per row, so scores compare models, not draws.",
        ),
    ],
    blocks: &[],
    forms: &[],
    open: None,
    renamed: &[
        Renamed {
            old: "policy",
            new: "model",
            keeps_value: true,
        },
        Renamed {
            old: "reward",
            new: "rubric",
            keeps_value: true,
        },
    ],
};

/// The schema of a declaration's block body (`None` for `prompt` and
/// `scorer`, which take `= value`).
pub fn for_decl(kind: DeclKind) -> Option<&'static Block> {
    Some(match kind {
        DeclKind::Model => &MODEL,
        DeclKind::Judge => &JUDGE,
        DeclKind::Dataset => &DATASET,
        DeclKind::Rubric => &RUBRIC,
        DeclKind::Rollout => &ROLLOUT,
        DeclKind::Reflection => &REFLECTION,
        DeclKind::Train => &TRAIN,
        DeclKind::Eval => &EVAL,
        DeclKind::Prompt | DeclKind::Scorer => return None,
    })
}

/// Every declaration block, in documentation order.
pub fn all_decl_blocks() -> Vec<(DeclKind, &'static Block)> {
    DeclKind::ALL
        .iter()
        .filter_map(|k| for_decl(*k).map(|b| (*k, b)))
        .collect()
}

/// Describes a type in words ("a number of `tokens`").
pub fn describe(ty: Ty) -> String {
    match ty {
        Ty::Number => "a number".into(),
        Ty::Int => "a whole number".into(),
        Ty::Fraction => "a fraction between 0 and 1".into(),
        Ty::Bool => "`true` or `false`".into(),
        Ty::Str => "a string".into(),
        Ty::Path => "a path (string)".into(),
        Ty::Enum(values) => format!("one of {}", crate::diagnostic::one_of(values)),
        Ty::Quantity(units) => format!(
            "a number of {}",
            crate::diagnostic::one_of(&units.iter().map(|u| u.plural()).collect::<Vec<_>>())
        ),
        Ty::Range => "a range `low..high`".into(),
        Ty::NumberOrRange => "a number or a range `low..high`".into(),
        Ty::Ref(kind) => format!("the name of a `{}`", kind.keyword()),
        Ty::PromptText => "a `prompt` or a string".into(),
        Ty::SplitRef => "a dataset split such as `data.train`".into(),
        Ty::SplitList => "a list of dataset splits".into(),
        Ty::CriterionRef => "a rubric criterion such as `rubric.safety`".into(),
        Ty::CriterionName => "the name of a criterion of the stage's rubric".into(),
        Ty::Source => "a source such as `jsonl(\"data.jsonl\")`".into(),
        Ty::StrList => "a list of strings".into(),
        Ty::Field => "a field name of the rows".into(),
        Ty::BoolExpr(_) => "a condition".into(),
        Ty::NumberExpr(_) => "a number expression".into(),
        Ty::ScorerCall => "a scorer call".into(),
    }
}

/// Describes a default in words for docs and hover.
pub fn describe_default(d: Default) -> String {
    match d {
        Default::None => "none (off)".into(),
        Default::Required => "required".into(),
        Default::Number(n) => format_number(n),
        Default::Quantity(n, u) => format!(
            "{} {}",
            format_number(n),
            if n == 1.0 { u.singular() } else { u.plural() }
        ),
        Default::Bool(b) => b.to_string(),
        Default::Str(s) => format!("`{s}`"),
        Default::Range(lo, hi) if lo == hi => format_number(lo),
        Default::Range(lo, hi) => format!("{}..{}", format_number(lo), format_number(hi)),
        Default::Derived(text) => text.into(),
    }
}

/// Describes an allowed range ("at least 1", "between 0 and 2").
pub fn describe_range(range: (f64, f64, bool, bool)) -> String {
    let (lo, hi, lo_in, hi_in) = range;
    match (lo.is_finite(), hi.is_finite()) {
        (true, false) if lo_in => format!("at least {}", format_number(lo)),
        (true, false) => format!("greater than {}", format_number(lo)),
        (false, true) if hi_in => format!("at most {}", format_number(hi)),
        (false, true) => format!("less than {}", format_number(hi)),
        _ => match (lo_in, hi_in) {
            (true, true) => format!("between {} and {}", format_number(lo), format_number(hi)),
            (false, false) => format!(
                "strictly between {} and {}",
                format_number(lo),
                format_number(hi)
            ),
            (false, true) => format!(
                "greater than {} and at most {}",
                format_number(lo),
                format_number(hi)
            ),
            (true, false) => format!(
                "at least {} and less than {}",
                format_number(lo),
                format_number(hi)
            ),
        },
    }
}

/// Prints a number the way users write it.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 {
        format!("{}", n as i64)
    } else if n != 0.0 && (n.abs() < 1e-3 || n.abs() >= 1e6) {
        format!("{n:e}")
    } else {
        let s = format!("{n}");
        s
    }
}
