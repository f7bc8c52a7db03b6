//! One run: the plan, the device, the run directory, the built datasets,
//! the judges, and which weights each model has now. [`Session::run`]
//! executes datasets, stages and evaluations in order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use safer_ir::plan::{DatasetSpec, Plan, RolloutSpec, SplitRef, StageSpec};
use serde_json::{json, Value};

use super::data::{self, Row};
use super::judge::{HttpJudge, Judge, RulesJudge};
use super::judge_model::{ModelJudge, REPLY_TOKENS};
use super::rubric::RubricScorer;
use super::run_dir::{write_atomically, RunDir};
use super::{curate, evaluate, grpo_stage, report, sft_stage, ExecError, RunOptions};
use crate::generate::prompt::check_tokenizer_against_config;
use crate::model::{Model, SaveDtype};
use crate::text::TextTokenizer;

/// A dataset after its ops.
pub struct BuiltDataset {
    /// Every row after filters, dedup and curation (balanced when a stage
    /// trains on the dataset as a whole).
    pub all: Vec<Row>,
    /// Rows by split.
    pub splits: BTreeMap<String, Vec<Row>>,
    /// Objects named in the rows (`objects` field).
    pub vocabulary: BTreeSet<String>,
    /// Counts for the summary.
    pub report: Value,
}

/// A loaded model with its tokenizer.
pub struct Loaded<B: Backend> {
    /// The model.
    pub model: Model<B>,
    /// The folder it was loaded from.
    pub dir: PathBuf,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
}

/// Loads a model directory on `device` (its tokenizer from the same directory).
///
/// # Errors
/// Model and tokenizer errors.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Loaded<B>, ExecError> {
    ModelDirs {
        weights: dir.to_path_buf(),
        tokenizer: dir.to_path_buf(),
        context: None,
    }
    .load(device)
}

/// The folder a model's `tokenizer` setting names: the folder itself, or
/// the folder of the `tokenizer.json` it names.
pub fn tokenizer_folder(tokenizer: &str) -> PathBuf {
    let path = Path::new(tokenizer);
    match path.is_file() {
        true => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        false => path.to_path_buf(),
    }
}

/// A model directory whose tokenizer may live elsewhere (`tokenizer = "..."`).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDirs {
    /// `config.json` and the weights.
    pub weights: PathBuf,
    /// The tokenizer files.
    pub tokenizer: PathBuf,
    /// The model's declared `context`, when it is set.
    pub context: Option<usize>,
}

impl ModelDirs {
    /// Loads the model on `device`. A declared `context` below
    /// `config.json`'s becomes the limit the run holds prompts and
    /// completions to ([`crate::model::ModelConfig::context`]; the saved
    /// `config.json` keeps the file's).
    ///
    /// # Errors
    /// Model and tokenizer errors.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<Loaded<B>, ExecError> {
        let mut model = Model::load(&self.weights, device)?;
        model.config.context_limit = self.context;
        let tokenizer = TextTokenizer::load(&self.tokenizer)?;
        check_tokenizer_against_config(&tokenizer, &model.config, &self.weights)?;
        Ok(Loaded {
            model,
            tokenizer,
            dir: self.weights.clone(),
        })
    }
}

/// A run in progress.
pub struct Session<'a, B: Backend> {
    /// The plan.
    pub plan: &'a Plan,
    /// The options.
    pub options: &'a RunOptions,
    /// The device.
    pub device: B::Device,
    /// The device's name.
    pub device_name: &'static str,
    /// The run directory.
    pub run: RunDir,
    /// Datasets by name.
    pub datasets: BTreeMap<String, BuiltDataset>,
    /// Judges by name.
    pub judges: BTreeMap<String, Box<dyn Judge>>,
    /// The current weights of each model that a stage has trained.
    pub trained: BTreeMap<String, PathBuf>,
    /// Finished stages a forced resume found changed (and those after
    /// them), for the warning on the stages that reuse their results.
    changed_stages: BTreeSet<String>,
    /// For each model, the stage that last trained it in this run (whose
    /// result a stage without `after` starts from, and a `reference` of
    /// that model reads).
    trained_by: BTreeMap<String, String>,
}

impl<'a, B: Backend> Session<'a, B> {
    /// Checks the models' folders and builds the HTTP judges, then opens
    /// (or resumes) the run directory and loads local judge models.
    ///
    /// # Errors
    /// Model-folder, judge-configuration and run-directory errors.
    pub fn start(
        plan: &'a Plan,
        options: &'a RunOptions,
        device: B::Device,
        device_name: &'static str,
    ) -> Result<Self, ExecError> {
        if plan.stages.is_empty() && plan.evals.is_empty() {
            return Err(ExecError::Usage(
                "the pipeline declares no `train` and no `eval`: there is nothing to run (`saferc check` checks a file without running it)".into(),
            ));
        }
        // The models' folders, the data files and the HTTP judges are
        // checked before the run directory is made, so that a declaration
        // that cannot run (an unsupported `arch`, a missing or unloadable
        // `config.json`, no `tokenizer.json` or one that does not load, a
        // weight file missing or cut short, a tensor missing or of the wrong
        // shape, an unset API-key variable, a bad `ca_file`, a data file
        // that is not there; a mismatched `arch` is the compiler's E0318)
        // leaves no run behind. A resumed run was checked when it started:
        // its finished stages may no longer need their models' folders.
        // What the checks warn about is printed now and kept in the
        // manifest, where it stays with the run's results.
        let mut warnings = Vec::new();
        if !options.resume {
            for name in plan.models.keys() {
                warnings.extend(Self::check_model(plan, name)?);
            }
            // A data file that is not there either.
            for (name, spec) in &plan.datasets {
                data::source_readable(name, spec)?;
            }
        }
        for warning in &warnings {
            crate::stderr_line!("warning: {warning}");
        }
        for (name, spec) in &plan.models {
            if spec.dtype != "f32" {
                crate::stderr_line!(
                    "note: model `{name}` has `dtype = {}`; the {device_name} runtime trains in f32 (its weights are cast to f32 on load, checkpoints are f32) and saves the trained model in {0}, rounded: the scores after training, and a stage after it, read what was saved",
                    spec.dtype
                );
            }
        }
        let mut judges: BTreeMap<String, Box<dyn Judge>> = BTreeMap::new();
        for (name, spec) in &plan.judges {
            match spec.kind.as_str() {
                "http" => {
                    let judge = HttpJudge::new(name, spec, options.interrupt.clone())
                        .map_err(ExecError::Usage)?;
                    judges.insert(name.clone(), Box::new(judge));
                }
                "model" => {}
                _ => {
                    judges.insert(name.clone(), Box::new(RulesJudge));
                }
            }
        }
        let run = if options.resume {
            RunDir::resume(&options.out, plan, options.force, &options.source)?
        } else {
            RunDir::create(&options.out, plan, device_name, &options.source, &warnings)?
        };
        crate::stderr_line!("run directory: {}", options.out.display());
        // Local judge models load after the run directory's own checks (a
        // taken `--out`, a changed pipeline on `--resume`), which are quick.
        for (name, spec) in &plan.judges {
            if spec.kind != "model" {
                continue;
            }
            let model = spec.model.as_ref().ok_or_else(|| {
                ExecError::Usage(format!(
                    "judge `{name}` is `kind = model` but names no `model`"
                ))
            })?;
            let dirs = Self::original_dirs(plan, model)?;
            let loaded = dirs.load::<B>(&device)?;
            // Its replies must leave room for a question, before a stage
            // trains for hours and then asks the first one.
            let context = loaded.model.config.context();
            if let Some(n) = spec.max_tokens.filter(|&n| n >= context) {
                return Err(ExecError::Usage(format!(
                    "judge `{name}` has `max_tokens = {n} tokens`, which leaves no room for its question in its model's context of {context} tokens; lower it (a reply that reasons needs a few hundred)"
                )));
            }
            let judge = ModelJudge::<B>::new(name, loaded, spec.fallback, spec.images)
                .with_reply_tokens(spec.max_tokens.unwrap_or(REPLY_TOKENS));
            judges.insert(name.clone(), Box::new(judge));
        }
        Ok(Session {
            plan,
            options,
            device,
            device_name,
            run,
            datasets: BTreeMap::new(),
            judges,
            trained: BTreeMap::new(),
            changed_stages: BTreeSet::new(),
            trained_by: BTreeMap::new(),
        })
    }

    /// The rubric scorer of `rubric` with the vocabulary of `dataset`.
    pub fn scorer<'s>(
        &'s self,
        rubric: &'s str,
        vocabulary: &'s BTreeSet<String>,
    ) -> Result<RubricScorer<'s>, ExecError> {
        let spec = self
            .plan
            .rubrics
            .get(rubric)
            .ok_or_else(|| ExecError::Usage(format!("rubric `{rubric}` is not in the plan")))?;
        static RULES: RulesJudge = RulesJudge;
        let judge: &dyn Judge = match spec.judge.as_ref().and_then(|j| self.judges.get(j)) {
            Some(j) => j.as_ref(),
            None => &RULES,
        };
        Ok(RubricScorer {
            name: rubric,
            spec,
            functions: &self.plan.functions,
            judge,
            vocabulary,
        })
    }

    /// Objects named in a dataset's rows (empty for an unknown dataset).
    pub fn vocabulary(&self, dataset: &str) -> &BTreeSet<String> {
        static EMPTY: BTreeSet<String> = BTreeSet::new();
        self.datasets.get(dataset).map_or(&EMPTY, |d| &d.vocabulary)
    }

    /// Whether `dataset` declares `on_bad_row = fail`.
    pub fn fails_on_bad_rows(&self, dataset: &str) -> bool {
        self.plan
            .datasets
            .get(dataset)
            .is_some_and(|d| d.on_bad_row == "fail")
    }

    /// The rows of a split.
    pub fn rows(&self, split: &SplitRef) -> Result<&[Row], ExecError> {
        let d = self
            .datasets
            .get(&split.dataset)
            .ok_or_else(|| ExecError::Data {
                dataset: split.dataset.clone(),
                message: "not built".into(),
            })?;
        match &split.split {
            None => Ok(&d.all),
            Some(s) => d
                .splits
                .get(s)
                .map(Vec::as_slice)
                .ok_or_else(|| ExecError::Data {
                    dataset: split.dataset.clone(),
                    message: format!("has no split `{s}`"),
                }),
        }
    }

    /// The directories of the current weights and the tokenizer of model `name`.
    pub fn model_dirs(&self, name: &str) -> Result<ModelDirs, ExecError> {
        if let Some(dir) = self.trained.get(name) {
            // Trained weights are saved with a copy of the tokenizer.
            return Ok(ModelDirs {
                weights: dir.clone(),
                tokenizer: dir.clone(),
                context: self.declared_context(name),
            });
        }
        Self::original_dirs(self.plan, name)
    }

    /// Model `name`'s declared folder: an architecture `saferc run` runs,
    /// a readable `config.json` and a `tokenizer.json`. The weights themselves are read when the model is
    /// loaded. Returns what it warns about (a missing chat template).
    fn check_model(plan: &Plan, name: &str) -> Result<Vec<String>, ExecError> {
        let dirs = Self::original_dirs(plan, name)?;
        // `config.json` must hold a model saferc runs; that it holds the
        // declared `arch` is the compiler's check (E0318).
        let config = crate::model::config::ModelConfig::read(&dirs.weights).map_err(|e| {
            match (e, plan.models.get(name).map(|m| m.arch.as_str())) {
                // A missing folder of the built-in architecture can be made.
                (crate::model::ModelError::NotAFolder { reason }, Some("tiny_vlm"))
                    if !dirs.weights.exists() =>
                {
                    crate::model::ModelError::NotAFolder {
                        reason: format!(
                            "{reason}, or make a fresh `tiny_vlm` there with `saferc init-model {}`",
                            dirs.weights.display()
                        ),
                    }
                }
                (e, _) => e,
            }
        })?;
        let file_context = config.text.max_position_embeddings;
        if let Some(declared) = dirs.context.filter(|d| *d > file_context) {
            return Err(ExecError::Usage(format!(
                "model `{name}` declares `context = {declared} tokens`, but its `config.json` ({}) allows at most {file_context} (`max_position_embeddings`); set `context` to at most {file_context} tokens, or leave it out",
                dirs.weights.join("config.json").display()
            )));
        }
        if !dirs.tokenizer.join("tokenizer.json").is_file() {
            return Err(ExecError::Model(crate::model::ModelError::MissingFile {
                dir: dirs.tokenizer.clone(),
                file: "tokenizer.json",
                hint: "the Hugging Face tokenizer",
            }));
        }
        // The tokenizer and its chat template load, and the weight files are
        // all there and whole and hold every tensor in the shape
        // `config.json` implies (their headers read, not their tensors): a
        // model only a later stage loads would otherwise fail after the
        // earlier stages trained.
        let tokenizer = crate::text::TextTokenizer::load(&dirs.tokenizer)?;
        check_tokenizer_against_config(&tokenizer, &config, &dirs.weights)?;
        let unused = crate::model::weights::check_tensors(&dirs.weights, &config)?;
        let mut warnings = Vec::new();
        if !unused.is_empty() {
            warnings.push(format!(
                "model `{name}`: {}",
                crate::model::weights::unused_tensors_note(&dirs.weights, &unused)
            ));
        }
        // A base model has none and takes the raw text; an instruct model
        // copied without its template would be prompted in a format it was
        // never trained on, silently.
        if !tokenizer.has_chat_template() {
            warnings.push(format!(
                "model `{name}` has no chat template in `{}` (`chat_template.jinja`, `chat_template.json` or `chat_template` in `tokenizer_config.json`): its prompts are the rows' raw text; copy the template with the model if it is an instruct model",
                dirs.tokenizer.display()
            ));
        }
        Ok(warnings)
    }

    /// The directories model `name` is declared with.
    fn original_dirs(plan: &Plan, name: &str) -> Result<ModelDirs, ExecError> {
        let spec = plan
            .models
            .get(name)
            .ok_or_else(|| ExecError::Usage(format!("model `{name}` is not in the plan")))?;
        let weights = PathBuf::from(&spec.weights);
        let tokenizer = match &spec.tokenizer {
            // The folder also holds `tokenizer_config.json` (chat template,
            // special tokens), so a file of another name cannot stand alone.
            Some(t)
                if Path::new(t).is_file()
                    && Path::new(t).file_name().and_then(|n| n.to_str())
                        != Some("tokenizer.json") =>
            {
                return Err(ExecError::Usage(format!(
                    "model `{name}`: `tokenizer` names the file {t}; name its folder, with the tokenizer saved there as `tokenizer.json` (and `tokenizer_config.json`), as `save_pretrained` writes them"
                )));
            }
            Some(t) => tokenizer_folder(t),
            None => weights.clone(),
        };
        Ok(ModelDirs {
            weights,
            tokenizer,
            context: spec.context,
        })
    }

    /// Model `name`'s declared `context`, when it is set.
    fn declared_context(&self, name: &str) -> Option<usize> {
        self.plan.models.get(name).and_then(|m| m.context)
    }

    /// Stops, before any stage trains, when a stage's training split has no
    /// rows (a later stage's used to be found only after the earlier ones
    /// had trained).
    fn refuse_empty_training_splits(&self) -> Result<(), ExecError> {
        for stage in &self.plan.stages {
            if self.rows(&stage.data)?.is_empty() {
                return Err(ExecError::Data {
                    dataset: stage.data.dataset.clone(),
                    message: format!(
                        "`{}`, the training split of stage `{}`, has no rows (after filters, dedup, curation and the split); nothing was trained",
                        stage.data, stage.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// Warns about each held-out split (`eval_data`) and `eval` split that
    /// has no rows once the dataset is built: it scores nothing, and the
    /// table shows `-` for it (an `sft` stage's held-out loss is unknown).
    fn warn_empty_scoring_splits(&self) -> Result<(), ExecError> {
        let mut uses: Vec<(String, &SplitRef)> = Vec::new();
        for stage in &self.plan.stages {
            let scored = stage.reward.is_some()
                || matches!(stage.algorithm, safer_ir::plan::Algorithm::Sft(_));
            if let Some(split) = stage.eval_data.as_ref().filter(|_| scored) {
                uses.push((
                    format!("the held-out split of stage `{}`", stage.name),
                    split,
                ));
            }
        }
        for e in &self.plan.evals {
            uses.push((format!("the split of `eval {}`", e.name), &e.data));
        }
        for (what, split) in uses {
            if self.rows(split)?.is_empty() {
                crate::stderr_line!(
                    "warning: `{split}`, {what}, has no rows (after filters, dedup, curation and the split); it scores nothing"
                );
            }
        }
        Ok(())
    }

    /// Warns, before anything is scored, about rows that lack a field a
    /// rubric's built-in scorers read ([`super::row_fields`]): each GRPO
    /// stage's training rows and each stage's held-out rows under its
    /// reward, each eval's rows under its rubric. Each warning prints once.
    fn warn_rows_lacking_fields(&self) -> Result<(), ExecError> {
        let mut pairs: Vec<(&str, &SplitRef)> = Vec::new();
        for stage in &self.plan.stages {
            if let Some(rubric) = &stage.reward {
                // `sft` learns its rows' answers; it scores only `eval_data`.
                if matches!(stage.algorithm, safer_ir::plan::Algorithm::Grpo(_)) {
                    pairs.push((rubric, &stage.data));
                }
                pairs.extend(stage.eval_data.iter().map(|e| (rubric.as_str(), e)));
            }
        }
        pairs.extend(self.plan.evals.iter().map(|e| (e.rubric.as_str(), &e.data)));
        let mut printed = BTreeSet::new();
        for (rubric, split) in pairs {
            let what = format!("`{split}`");
            let rows = self.rows(split)?;
            for line in super::row_fields::warnings(self.plan, rubric, rows, &what) {
                if printed.insert(line.clone()) {
                    crate::stderr_line!("{line}");
                }
            }
        }
        Ok(())
    }

    /// The rollout settings of a stage.
    pub fn rollout(&self, name: Option<&String>) -> RolloutSpec {
        self.plan.rollout(name)
    }

    /// Runs everything; returns the summary.
    ///
    /// # Errors
    /// The first failure; checkpoints stay.
    pub fn run(mut self) -> Result<Value, ExecError> {
        self.build_datasets()?;
        self.warn_rows_lacking_fields()?;
        self.warn_empty_scoring_splits()?;
        self.refuse_empty_training_splits()?;
        let mut stages = Vec::new();
        // The summary's before and after: the first stage that scores a
        // held-out split, before it trains, and its policy's final weights
        // on the same split, rubric and rollout (a later stage may score
        // with other settings, or not at all).
        let mut first_before: Option<(&StageSpec, Value)> = None;
        let plan = self.plan;
        for stage in &plan.stages {
            let result = self.stage(stage)?;
            if first_before.is_none() {
                if let Some(before) = result.get("eval_before").filter(|v| !v.is_null()) {
                    first_before = Some((stage, before.clone()));
                }
            }
            stages.push(result);
        }
        let last_after = match &first_before {
            Some((first, _)) => self.final_on_held_out(first, &stages)?,
            None => None,
        };
        let first_before_stage = first_before.as_ref().map(|(stage, _)| *stage);
        let first_before = first_before.map(|(_, v)| v);
        let mut evals = serde_json::Map::new();
        for e in &plan.evals {
            let model = self.model_dirs(&e.model)?.load::<B>(&self.device)?;
            let rollout = e
                .rollout
                .as_ref()
                .and_then(|r| plan.rollouts.get(r))
                .cloned();
            let rows = self.rows(&e.data)?;
            let scorer = self.scorer(&e.rubric, self.vocabulary(&e.data.dataset))?;
            let result = evaluate::evaluate(
                &model,
                rows,
                &scorer,
                rollout.as_ref(),
                0,
                self.fails_on_bad_rows(&e.data.dataset),
                &self.options.interrupt,
            )?;
            evals.insert(e.name.clone(), result);
        }
        self.write_eval_samples(&stages, first_before_stage, last_after.as_ref(), &evals)?;
        let shown = |v: &Value| evaluate::without_completions(v);
        let evals: serde_json::Map<String, Value> =
            evals.iter().map(|(k, v)| (k.clone(), shown(v))).collect();
        let stages: Vec<Value> = stages
            .iter()
            .map(|result| {
                let mut result = result.clone();
                for when in ["eval_before", "eval_after"] {
                    if let Some(v) = result.get_mut(when) {
                        *v = shown(v);
                    }
                }
                result
            })
            .collect();
        let datasets: serde_json::Map<String, Value> = self
            .datasets
            .iter()
            .map(|(k, d)| (k.clone(), d.report.clone()))
            .collect();
        let judges = self.judge_counts();
        let summary = json!({
            "program_hash": plan.program_hash,
            "judges": judges,
            "device": self.device_name,
            "eval": {"before": first_before.as_ref().map(|v| v["means"].clone()), "after": last_after.as_ref().map(|v| v["means"].clone()),
                     "before_by_label": first_before.as_ref().map(|v| v["by_label"].clone()), "after_by_label": last_after.as_ref().map(|v| v["by_label"].clone())},
            "stages": stages,
            "evals": evals,
            "datasets": datasets,
        });
        self.run.commit_forced()?;
        self.run.summary(&summary)?;
        // The plot draws what `metrics.jsonl` holds: a plot that cannot be
        // written (a full disk) loses nothing, and fails nothing saved.
        if let Err(e) = report::plot(&self.run.path) {
            crate::stderr_line!("warning: the reward plot was not drawn: {e}");
        }
        Ok(summary)
    }

    /// Keeps the digest of `dataset`'s images in the run directory the
    /// first time; on a resume, warns when they differ from it (the
    /// resumed stages then see other images than the run started with).
    fn record_images(
        &self,
        dataset: &str,
        spec: &DatasetSpec,
        rows: &[Row],
    ) -> Result<(), ExecError> {
        let Some(digest) = data::images_digest(rows, Path::new(&spec.images)) else {
            return Ok(());
        };
        let path = self.run.images_record();
        let mut record = super::records::read_record(
            &path,
            "a change to the images since the run started goes unseen",
        );
        match record.get(dataset).and_then(Value::as_str) {
            Some(then) if then == digest => Ok(()),
            Some(_) => {
                crate::stderr_line!(
                    "warning: dataset `{dataset}`: its images (under {}) changed since this run started; the resumed stages see the new ones",
                    spec.images
                );
                Ok(())
            }
            None => {
                record.insert(dataset.to_string(), json!(digest));
                write_atomically(&path, Value::Object(record).to_string().as_bytes())
            }
        }
    }

    /// Writes what curating `dataset` kept (row origins), its report and
    /// the judge counts, for a resume to reuse: curation samples, and a
    /// judge need not answer the same twice, so curating again could keep
    /// other rows than those the checkpoints' data cursor indexes.
    fn keep_curation(
        &self,
        dataset: &str,
        spec: &DatasetSpec,
        kept: &[Row],
        report: &Value,
        curated: &[String],
    ) -> Result<(), ExecError> {
        let path = self.run.curation(dataset);
        let kept: Vec<[&str; 2]> = kept
            .iter()
            .map(|r| [r.origin.as_str(), r.prompt.as_str()])
            .collect();
        // `curated`: the origins of every row curation saw, for a resume
        // to name the rows it did not.
        let saved = json!({
            "settings": self.curation_settings(spec), "kept": kept, "report": report,
            "judges": self.judge_counts(), "curated": curated,
        });
        super::kept_records::replace(&path, "settings", &saved)
    }

    /// What a stage's result depends on besides its data: its settings and
    /// its rubric, rollout and reflection (a forced resume may change them).
    fn stage_settings(&self, stage: &StageSpec) -> Value {
        let plan = self.plan;
        comparable(json!({
            "stage": stage,
            "reward": stage.reward.as_ref().and_then(|r| plan.rubrics.get(r)),
            "rollout": stage.rollout.as_ref().and_then(|r| plan.rollouts.get(r)),
            "reflection": stage.reflection.as_ref().and_then(|r| plan.reflections.get(r)),
            "judges": plan.judges,
            "scorers": plan.functions,
            "data": plan.datasets.get(&stage.data.dataset),
            "eval_data": stage.eval_data.as_ref().and_then(|e| plan.datasets.get(&e.dataset)),
        }))
    }

    /// Everything curating a dataset depends on: its settings, and the
    /// policy, rubric, rollouts and judges (a forced resume may change
    /// them).
    fn curation_settings(&self, spec: &DatasetSpec) -> Value {
        let plan = self.plan;
        let curate = spec.curate.as_ref();
        // The split comes after curation: a change of fractions alone does
        // not curate again.
        let mut dataset = serde_json::to_value(spec).unwrap_or_default();
        if let Value::Object(fields) = &mut dataset {
            fields.remove("splits");
        }
        comparable(json!({
            "dataset": dataset,
            "policy": curate.and_then(|c| plan.models.get(&c.policy)),
            "rubric": curate.and_then(|c| plan.rubrics.get(&c.rubric)),
            "rollouts": plan.rollouts,
            "judges": plan.judges,
            "scorers": plan.functions,
            "stages": plan.stages.iter().map(|s| (&s.data.dataset, &s.rollout)).collect::<Vec<_>>(),
        }))
    }

    /// On resume, the rows of `rows` the run's earlier curation of
    /// `dataset` kept, with its report (and the judge counts then); `None`
    /// when there is none, when the dataset's settings changed (a forced
    /// resume), or when a kept row is no longer among `rows` (the data
    /// changed): curation then runs again, with a warning. A curation of
    /// these settings that a forced resume's own replaced is found again
    /// ([`super::kept_records`]).
    ///
    /// # Errors
    /// Putting back a curation record kept beside the one there.
    fn reused_curation(
        &self,
        dataset: &str,
        spec: &DatasetSpec,
        rows: &[Row],
    ) -> Result<Option<(Vec<Row>, Value)>, ExecError> {
        if !self.options.resume {
            return Ok(None);
        }
        let path = self.run.curation(dataset);
        let settings = self.curation_settings(spec);
        let saved = match std::fs::read_to_string(&path) {
            Err(_) => return Ok(None),
            Ok(text) => serde_json::from_str::<Value>(&text).ok(),
        };
        let saved = match saved {
            Some(saved) if saved["settings"] == settings => saved,
            // A curation of these settings that another's replaced (or
            // that a damaged record hides) is found again.
            other => match super::kept_records::kept_beside(&path, "settings", &settings)? {
                Some(kept) => kept,
                None => {
                    match other {
                        Some(_) => crate::stderr_line!("warning: dataset `{dataset}` or what curates it changed since the run curated it; curating again"),
                        None => crate::stderr_line!(
                            "warning: dataset `{dataset}`: {} does not read as JSON (damaged?); curating again",
                            path.display()
                        ),
                    }
                    return Ok(None);
                }
            },
        };
        Ok(self.kept_rows(dataset, &saved, rows))
    }

    /// The rows of `rows` that `saved`, a curation record of `dataset`,
    /// kept, with its report; `None` when a kept row is no longer among
    /// `rows` (said so).
    fn kept_rows(&self, dataset: &str, saved: &Value, rows: &[Row]) -> Option<(Vec<Row>, Value)> {
        let by_origin: BTreeMap<(&str, &str), &Row> = rows
            .iter()
            .map(|r| ((r.origin.as_str(), r.prompt.as_str()), r))
            .collect();
        let kept: Option<Vec<Row>> = saved["kept"]
            .as_array()?
            .iter()
            .map(|k| {
                let key = (k[0].as_str()?, k[1].as_str()?);
                by_origin.get(&key).map(|r| (*r).clone())
            })
            .collect();
        let Some(kept) = kept else {
            crate::stderr_line!(
                "warning: dataset `{dataset}`: rows the run's curation kept are no longer in the data; curating again"
            );
            return None;
        };
        self.restore_judge_counts(&saved["judges"]);
        let report = &saved["report"];
        let count = |key: &str| report[key].as_u64().unwrap_or(0);
        crate::stderr_line!(
            "dataset {dataset}: reusing the run's curation ({} of {} prompts kept)",
            kept.len(),
            count("kept") + count("dropped")
        );
        // Rows the curation did not see (added to the data since, or no
        // longer removed by a changed `dedup`): the checkpoints' data
        // cursors count the kept rows, so they are left out, and said so.
        if let Some(curated) = saved["curated"].as_array() {
            let seen: BTreeSet<&str> = curated.iter().filter_map(Value::as_str).collect();
            let unseen = rows
                .iter()
                .filter(|r| !seen.contains(r.origin.as_str()))
                .count();
            if unseen > 0 {
                crate::stderr_line!(
                    "warning: dataset `{dataset}`: {unseen} prompt{} of the data now {} not among those the run curated; the reused curation leaves {} out (start a new run to curate and train on {})",
                    if unseen == 1 { "" } else { "s" },
                    if unseen == 1 { "was" } else { "were" },
                    if unseen == 1 { "it" } else { "them" },
                    if unseen == 1 { "it" } else { "them" },
                );
            }
        }
        Some((kept, saved["report"].clone()))
    }

    /// What each judge that asks someone has asked so far (`summary.json`'s
    /// `judges`, and kept in training checkpoints).
    pub fn judge_counts(&self) -> Value {
        self.judges
            .iter()
            .filter_map(|(name, judge)| Some((name.clone(), judge.counts()?.to_json())))
            .collect::<serde_json::Map<String, Value>>()
            .into()
    }

    /// `result` (an object) with the judge counts now, for a file a resume
    /// reuses instead of asking again ([`Self::take_judge_counts`]).
    fn with_judge_counts(&self, result: &Value) -> Value {
        let mut kept = result.clone();
        if let Value::Object(fields) = &mut kept {
            fields.insert("judges".into(), self.judge_counts());
        }
        kept
    }

    /// Takes back the judge counts [`Self::with_judge_counts`] added to
    /// `kept`, as [`Self::restore_judge_counts`] does.
    fn take_judge_counts(&self, kept: &mut Value) {
        if let Some(counts) = kept.as_object_mut().and_then(|o| o.remove("judges")) {
            self.restore_judge_counts(&counts);
        }
    }

    /// Takes the judge counts a checkpoint kept ([`Self::judge_counts`]):
    /// a resumed run has redone what came before the checkpoint, and the
    /// counts become the run's as a whole at that point.
    pub fn restore_judge_counts(&self, saved: &Value) {
        for (name, judge) in &self.judges {
            if let (Some(counts), Some(kept)) = (judge.counts(), saved.get(name)) {
                counts.restore(kept);
            }
        }
    }

    fn build_datasets(&mut self) -> Result<(), ExecError> {
        let plan = self.plan;
        // Every bad row of every dataset, for `bad_rows.jsonl` (the
        // terminal and `summary.json` show the first five of each).
        let mut bad_rows: Vec<Value> = Vec::new();
        let record = self.run.bad_rows_record();
        for name in dedup_order(plan)? {
            let spec = &plan.datasets[name];
            // Every bad row first, those the source cannot read and those a
            // filter cannot be evaluated on, in the file's order: under
            // `fail` the first of them stops the run.
            let mut loaded = data::load_source(name, spec)?;
            self.record_images(name, spec, &loaded.rows)?;
            let read = loaded.rows.len() + loaded.bad.len();
            let (rows, unfiltered) = data::filter(name, std::mem::take(&mut loaded.rows), spec);
            let filter_errors = unfiltered.len();
            loaded.bad.extend(unfiltered);
            data::apply_bad_row_policy(name, spec, &mut loaded.bad)?;
            for bad in loaded.bad.iter().take(5) {
                crate::stderr_line!("warning: dataset `{name}`: skipped bad row at {bad}");
            }
            if loaded.bad.len() > 5 {
                crate::stderr_line!(
                    "warning: dataset `{name}`: {} more bad rows skipped (every one is listed in {})",
                    loaded.bad.len() - 5,
                    record.display()
                );
            }
            bad_rows.extend(
                loaded
                    .bad
                    .iter()
                    .map(|b| json!({ "dataset": name, "row": b.origin, "reason": b.reason })),
            );
            // Written as each dataset is read, so that the file the
            // warnings name is there when a later dataset stops the run.
            if !bad_rows.is_empty() {
                let lines: String = bad_rows.iter().map(|line| format!("{line}\n")).collect();
                super::run_dir::write_atomically(&record, lines.as_bytes())?;
            }
            let filtered = rows.len();
            let vocabulary = super::scorers::vocabulary(&rows, "objects");
            // De-duplication first: curation need not score rows that go,
            // and balancing after it keeps the classes even.
            let mut rows = rows;
            let mut deduplicated = 0;
            for (other, split) in &spec.dedup {
                let against = self.rows(&SplitRef {
                    dataset: other.clone(),
                    split: split.clone(),
                })?;
                let (kept, dropped) = data::dedup(rows, against);
                rows = kept;
                deduplicated += dropped;
            }
            let (rows, curation) = match &spec.curate {
                Some(c) => {
                    let (kept, report) = match self.reused_curation(name, spec, &rows)? {
                        Some(reused) => reused,
                        None => {
                            let curated: Vec<String> =
                                rows.iter().map(|r| r.origin.clone()).collect();
                            let (kept, report) = curate::curate(self, name, rows, c, &vocabulary)?;
                            self.keep_curation(name, spec, &kept, &report, &curated)?;
                            (kept, report)
                        }
                    };
                    (kept, Some(report))
                }
                None => (rows, None),
            };
            // Split first (stratified by the balanced field), then balance
            // the splits a stage trains on: copies never reach a held-out or
            // eval split, and every split has its share of each class.
            let mut splits = data::split(&rows, &spec.splits, spec.seed, spec.balance.as_deref());
            let mut rows = rows;
            // Sizes of what was balanced (`all`: the dataset as a whole),
            // before and after.
            let balanced = match &spec.balance {
                Some(field) => {
                    balance_what_stages_read(plan, name, spec, field, &mut rows, &mut splits)
                }
                None => BTreeMap::new(),
            };
            // The same prompt on two lines, dealt to two splits: a
            // held-out score on it measures memorisation.
            for (a, b, count, example) in data::prompts_in_two_splits(&splits) {
                crate::stderr_line!(
                    "warning: dataset `{name}`: {count} prompt{} of split `{b}` also {} in split `{a}` (the same question and images on another line, as {example}); a score on one split of a prompt the other trains on measures memorisation: remove the repeated lines",
                    if count == 1 { "" } else { "s" },
                    if count == 1 { "appears" } else { "appear" },
                );
            }
            let report = json!({
                "rows_read": read,
                "bad_rows": loaded.bad.len(),
                "bad_row_examples": loaded.bad.iter().take(5).map(ToString::to_string).collect::<Vec<_>>(),
                "after_filters": filtered,
                "filter_errors": filter_errors,
                "curation": curation,
                "balanced": spec.balance.as_ref().map(|_| {
                    balanced.iter().map(|(k, (_, after))| (k.clone(), *after)).collect::<BTreeMap<_, _>>()
                }),
                "deduplicated": deduplicated,
                "splits": splits.iter().map(|(k, v)| (k.clone(), v.len())).collect::<BTreeMap<_, _>>(),
            });
            let split_sizes = if splits.is_empty() {
                String::new()
            } else {
                let sizes: Vec<String> = splits
                    .iter()
                    .map(|(k, v)| format!("{k} {}", v.len()))
                    .collect();
                format!(" ({})", sizes.join(", "))
            };
            // What a stage reads: the splits, or the whole dataset, as
            // balanced.
            let in_the_end = match splits.is_empty() {
                true => rows.len(),
                false => splits.values().map(Vec::len).sum(),
            };
            let mut steps_between = String::new();
            if deduplicated > 0 {
                steps_between += &format!(", {deduplicated} dropped as in eval sets");
            }
            if let Some(c) = &curation {
                steps_between += &format!(", {} kept by curation", c["kept"]);
            }
            let balance_note = match balanced.is_empty() {
                true => String::new(),
                false => {
                    let changes: Vec<String> = balanced
                        .iter()
                        .map(|(k, (before, after))| format!("{k} {before} → {after}"))
                        .collect();
                    format!(
                        "; balanced by `{}`: {}",
                        spec.balance.as_deref().unwrap_or_default(),
                        changes.join(", ")
                    )
                }
            };
            crate::stderr_line!(
                "dataset {name}: {read} rows read, {} bad, {filtered} after filters{steps_between}, {in_the_end} in the end{split_sizes}{balance_note}",
                loaded.bad.len(),
            );
            super::splits_record::record(
                &self.run.splits_record(),
                name,
                spec,
                &loaded.sha256,
                &rows,
                &splits,
            )?;
            self.datasets.insert(
                name.clone(),
                BuiltDataset {
                    all: rows,
                    splits,
                    vocabulary,
                    report,
                },
            );
        }
        // A resume whose data has no bad row left keeps no stale list.
        if bad_rows.is_empty() && record.exists() {
            std::fs::remove_file(&record).map_err(|e| ExecError::Io {
                path: record.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Writes `eval_samples.jsonl`: every completion scored on a held-out
    /// split or by an `eval`, one line each, with what was scored and when
    /// (`stage` and `when`: `before` or `after` its training, or `final`
    /// for the first stage's split scored on the weights of a later stage
    /// that trained the same policy; or `eval`), its row, scores and text,
    /// so that `summary.json`'s means can be read back to the answers.
    /// Written whole at the end of the run (a resumed run's before-scores
    /// come from its records).
    fn write_eval_samples(
        &self,
        stages: &[Value],
        first: Option<&StageSpec>,
        last_after: Option<&Value>,
        evals: &serde_json::Map<String, Value>,
    ) -> Result<(), ExecError> {
        let tag = |fields: Value| match fields {
            Value::Object(o) => o,
            _ => serde_json::Map::new(),
        };
        let mut lines = Vec::new();
        for (stage, result) in self.plan.stages.iter().zip(stages) {
            for when in ["before", "after"] {
                if let Some(v) = result.get(format!("eval_{when}")).filter(|v| !v.is_null()) {
                    let scored = tag(json!({"stage": stage.name, "when": when}));
                    lines.extend(evaluate::sample_lines(&scored, v));
                }
            }
        }
        // The summary's `after`, when a later stage trained the policy (else
        // it is the first stage's own `after`, written above): as the plan
        // says, not as the scores compare (a later stage may change nothing).
        let final_after = first.zip(last_after).filter(|(first, _)| {
            let last = self.plan.stages.iter().rfind(|s| s.policy == first.policy);
            last.is_some_and(|last| last.name != first.name)
        });
        if let Some((first, after)) = final_after {
            let scored = tag(json!({"stage": first.name, "when": "final"}));
            lines.extend(evaluate::sample_lines(&scored, after));
        }
        for (name, result) in evals {
            let model = self
                .plan
                .evals
                .iter()
                .find(|e| &e.name == name)
                .map(|e| e.model.clone());
            lines.extend(evaluate::sample_lines(
                &tag(json!({ "eval": name, "model": model })),
                result,
            ));
        }
        // Scores a run kept from a saferc that recorded no completions (a
        // resumed older run) have none to write: said, not silently short.
        let unrecorded = stages
            .iter()
            .flat_map(|r| [r.get("eval_before"), r.get("eval_after")])
            .chain(std::iter::once(final_after.map(|(_, after)| after)))
            .flatten()
            .filter(|v| !v.is_null() && v.get(evaluate::COMPLETIONS).is_none())
            .count();
        if unrecorded > 0 {
            crate::stderr_line!(
                "warning: {unrecorded} held-out scoring(s) kept from before this version of saferc recorded no completions: eval_samples.jsonl lacks them"
            );
        }
        let path = self.run.path.join("eval_samples.jsonl");
        if lines.is_empty() {
            // A forced resume that now scores nothing leaves no stale file.
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| ExecError::Io {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
            return Ok(());
        }
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        write_atomically(&path, text.as_bytes())
    }

    /// The final weights of `first`'s policy scored as `first` scores its
    /// held-out split: `first`'s own after-training scores when no later
    /// stage trains that policy, else a new scoring of the last one's.
    fn final_on_held_out(
        &self,
        first: &StageSpec,
        results: &[Value],
    ) -> Result<Option<Value>, ExecError> {
        let plan = self.plan;
        let Some(last) = plan.stages.iter().rposition(|s| s.policy == first.policy) else {
            return Ok(None);
        };
        if plan.stages[last].name == first.name {
            return Ok(results
                .get(last)
                .and_then(|r| r.get("eval_after"))
                .cloned()
                .filter(|v| !v.is_null()));
        }
        let final_dir = self.run.model_dir(&plan.stages[last].name);
        let dirs = ModelDirs {
            weights: final_dir.clone(),
            tokenizer: final_dir,
            context: self.declared_context(&first.policy),
        };
        let when = format!(
            "final weights (from stage `{}`), scored as before training",
            plan.stages[last].name
        );
        self.score_held_out(first, &dirs, &when)
    }

    /// Scores `model` on the stage's held-out split with its reward rubric
    /// (`None` when the stage has no `eval_data` or no `reward`).
    fn score_held_out(
        &self,
        stage: &StageSpec,
        model: &ModelDirs,
        when: &str,
    ) -> Result<Option<Value>, ExecError> {
        let (Some(split), Some(rubric)) = (&stage.eval_data, &stage.reward) else {
            return Ok(None);
        };
        let loaded = model.load::<B>(&self.device)?;
        let rollout = stage
            .rollout
            .as_ref()
            .and_then(|r| self.plan.rollouts.get(r));
        let v = evaluate::evaluate(
            &loaded,
            self.rows(split)?,
            &self.scorer(rubric, self.vocabulary(&stage.data.dataset))?,
            rollout,
            stage.seed,
            self.fails_on_bad_rows(&split.dataset),
            &self.options.interrupt,
        )?;
        crate::stderr_line!("stage {}: {when}, {}", stage.name, evaluate::describe(&v));
        Ok(Some(v))
    }

    /// What a stage's held-out scores are computed on, hashed: its split's
    /// rows (line and prompt, in order), its rubric and its rollout;
    /// empty without held-out scoring.
    fn held_out_identity(&self, stage: &StageSpec) -> Result<String, ExecError> {
        use sha2::{Digest, Sha256};
        let (Some(split), Some(rubric)) = (&stage.eval_data, &stage.reward) else {
            return Ok(String::new());
        };
        let mut hasher = Sha256::new();
        for row in self.rows(split)? {
            for part in [row.origin.as_bytes(), row.prompt.as_bytes()] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
        }
        let rollout = stage
            .rollout
            .as_ref()
            .and_then(|r| self.plan.rollouts.get(r));
        let how = json!({ "rubric": self.plan.rubrics.get(rubric), "rollout": rollout, "seed": stage.seed });
        hasher.update(how.to_string().as_bytes());
        Ok(super::checkpoint::hex(&hasher.finalize()))
    }

    /// A finished stage's result `done` (its `stage.json`), reused on
    /// resume as the run reported it.
    fn reuse_finished(&mut self, stage: &StageSpec, mut done: Value, final_dir: PathBuf) -> Value {
        // The judge counts of the run when the stage ended.
        self.take_judge_counts(&mut done);
        if let Some(d) = done.as_object_mut() {
            d.remove("settings");
            d.remove("checksums");
        }
        crate::stderr_line!(
            "stage {}: finished before; reusing {}",
            stage.name,
            final_dir.display()
        );
        self.trained.insert(stage.policy.clone(), final_dir);
        self.trained_by
            .insert(stage.policy.clone(), stage.name.clone());
        done
    }

    /// Runs one stage (or reuses its finished result on resume).
    fn stage(&mut self, stage: &StageSpec) -> Result<Value, ExecError> {
        let final_dir = self.run.model_dir(&stage.name);
        let result_path = final_dir.join("stage.json");
        // A finished stage whose saved model changed: its result, reused
        // once the model saved again is the one it recorded.
        let mut repair: Option<Value> = None;
        if self.options.resume {
            if let Ok(text) = std::fs::read_to_string(&result_path) {
                let done = serde_json::from_str::<Value>(&text).ok();
                // A forced resume may have changed the stage (more `steps`,
                // another `lr`): its result is not reused then, and the
                // stage goes on from its last checkpoint.
                let settings = done.as_ref().map(|d| d["settings"].clone());
                let changed = settings.is_some_and(|s| s != self.stage_settings(stage));
                if changed {
                    crate::stderr_line!(
                        "stage {}: its settings changed since it finished (a forced resume); going on from its last checkpoint",
                        stage.name
                    );
                    self.changed_stages.insert(stage.name.clone());
                }
                // The stages whose results it read: the one it started
                // from (`after`, else the last to train its model) and the
                // one that trained its reference model.
                let started_from = match &stage.after {
                    Some(prev) => Some(prev.clone()),
                    None => self.trained_by.get(&stage.policy).cloned(),
                };
                let reference_from = stage
                    .reference
                    .as_ref()
                    .and_then(|m| self.trained_by.get(m))
                    .cloned();
                let changed_before = [(started_from, "after"), (reference_from, "against")]
                    .into_iter()
                    .find_map(|(prev, how)| {
                        prev.filter(|p| self.changed_stages.contains(p))
                            .map(|p| (p, how))
                    });
                if let Some((prev, how)) = changed_before {
                    let read = match how {
                        "after" => format!("it trained after `{prev}`"),
                        _ => format!("it trained against `{prev}`'s result as its reference"),
                    };
                    crate::stderr_line!(
                        "warning: stage {}: {read}, which changed; its checkpoints hold training from `{prev}`'s old result (start a new run to train it again)",
                        stage.name
                    );
                    self.changed_stages.insert(stage.name.clone());
                }
                // A saved model changed since (damaged, or replaced by
                // hand) is saved again from the stage's checkpoints: the
                // stages after it read this one.
                let damaged = done
                    .as_ref()
                    .filter(|_| !changed)
                    .and_then(|d| d.get("checksums"))
                    .and_then(|recorded| changed_model_file(&final_dir, recorded));
                if let Some(file) = &damaged {
                    crate::stderr_line!(
                        "warning: stage {}: {} does not match the checksum recorded when the stage finished (changed since); saving the model again from the stage's checkpoints",
                        stage.name,
                        final_dir.join(file).display()
                    );
                }
                match done.filter(|_| !changed) {
                    Some(done) if damaged.is_none() => {
                        return Ok(self.reuse_finished(stage, done, final_dir))
                    }
                    Some(done) => repair = Some(done),
                    None => {}
                }
            }
        }
        // `after`: start from the previous stage's result, whatever model it trained.
        let start = match &stage.after {
            Some(prev) => {
                let dir = self.run.model_dir(prev);
                ModelDirs {
                    weights: dir.clone(),
                    tokenizer: dir,
                    context: self.declared_context(&stage.policy),
                }
            }
            None => self.model_dirs(&stage.policy)?,
        };
        let before_path = self.run.checkpoints(&stage.name).join("eval_before.json");
        // Reused on resume only while what it scored is the same: a split
        // changed under `--force` (curation, `split`, the rubric) is scored
        // again, so before and after compare one split.
        // A record of these settings that a forced resume's own replaced is
        // found again ([`super::kept_records`]).
        let identity = self.held_out_identity(stage)?;
        let held_out = Value::String(identity.clone());
        let saved_before = match self.options.resume {
            false => None,
            true => match std::fs::read_to_string(&before_path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                Some(v) if v.get("held_out") == Some(&held_out) => Some(v),
                _ => super::kept_records::kept_beside(&before_path, "held_out", &held_out)?,
            },
        };
        let eval_before = match saved_before {
            // The judge counts when it was scored come back with it.
            Some(mut v) => {
                self.take_judge_counts(&mut v);
                if let Some(fields) = v.as_object_mut() {
                    fields.remove("held_out");
                }
                Some(v)
            }
            None => {
                if self.options.resume && before_path.exists() {
                    crate::stderr_line!(
                        "stage {}: its held-out split or how it is scored changed since it was scored before training: scored again",
                        stage.name
                    );
                }
                let v = self.score_held_out(stage, &start, "before training")?;
                if let Some(v) = &v {
                    let mut kept = self.with_judge_counts(v);
                    if let Some(fields) = kept.as_object_mut() {
                        fields.insert("held_out".into(), held_out.clone());
                    }
                    super::kept_records::replace(&before_path, "held_out", &kept)?;
                }
                v
            }
        };
        let trained = match &stage.algorithm {
            safer_ir::plan::Algorithm::Grpo(g) => grpo_stage::train(self, stage, g, &start)?,
            safer_ir::plan::Algorithm::Sft(s) => sft_stage::train(self, stage, s, &start)?,
        };
        let training = trained.summary;
        // f32 unless the model declares `dtype = bf16` or `f16`.
        let dtype = self
            .plan
            .models
            .get(&stage.policy)
            .map_or(SaveDtype::F32, |m| SaveDtype::declared(&m.dtype));
        super::run_dir::make_run_folder(&final_dir)?;
        let kept_f32 = trained.model.save_as(&final_dir, dtype)?;
        if !kept_f32.is_empty() {
            crate::stderr_line!(
                "warning: stage {}: {} tensor{} of the trained model hold weights past f16's range (65504) and are saved in f32 ({}); a loader that casts the model to f16 makes them infinities",
                stage.name,
                kept_f32.len(),
                if kept_f32.len() == 1 { "" } else { "s" },
                kept_f32.iter().take(3).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            );
        }
        copy_tokenizer(&start.tokenizer, &final_dir)?;
        copy_processor(&start.weights, &final_dir)?;
        // Hashed once: for a repair's comparison and for `stage.json`.
        let checksums = final_model_checksums(&final_dir)?;
        if let Some(done) = repair {
            let recorded = done.get("checksums").cloned().unwrap_or(Value::Null);
            if checksums == recorded {
                crate::stderr_line!("stage {}: its model is saved again as it was", stage.name);
                return Ok(self.reuse_finished(stage, done, final_dir));
            }
            // Not the final step's checkpoint (damaged too, or removed), or
            // a `dtype` changed under `--force`: another model, which the
            // stages after it will read.
            crate::stderr_line!(
                "warning: stage {}: the model saved again differs from the one the stage first saved (its final checkpoint was not there to save it from); it is scored again, and a stage trained after it says so",
                stage.name
            );
            self.changed_stages.insert(stage.name.clone());
        }
        self.trained.insert(stage.policy.clone(), final_dir.clone());
        self.trained_by
            .insert(stage.policy.clone(), stage.name.clone());
        let final_dirs = ModelDirs {
            weights: final_dir.clone(),
            tokenizer: final_dir.clone(),
            context: self.declared_context(&stage.policy),
        };
        let eval_after = self.score_held_out(stage, &final_dirs, "after training")?;
        // Relative to the run directory, which may be moved or reached by
        // another path on resume.
        let model = final_dir.strip_prefix(&self.run.path).unwrap_or(&final_dir);
        let result = json!({
            "stage": stage.name,
            "model": model,
            "training": training,
            "eval_before": eval_before,
            "eval_after": eval_after,
        });
        // The file also keeps the judge counts and the settings, for a
        // resume that reuses it.
        let mut kept = self.with_judge_counts(&result);
        if let Value::Object(fields) = &mut kept {
            fields.insert("settings".into(), self.stage_settings(stage));
            fields.insert("checksums".into(), checksums);
        }
        write_atomically(
            &result_path,
            serde_json::to_string_pretty(&kept)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(result)
    }
}

/// The files of a stage's final model a resume checks before reusing it.
const FINAL_MODEL_FILES: [&str; 2] = ["model.safetensors", "config.json"];

/// Balances by `field` what the stages of `plan` read of dataset `name`:
/// the splits they train on, or the whole dataset (`rows`) where a stage
/// reads it unsplit; held-out and eval splits keep each row once. Warns of
/// rows without the field and of a dataset no stage trains on. Returns the
/// sizes of what was balanced, before and after (`all` for the whole
/// dataset).
fn balance_what_stages_read(
    plan: &Plan,
    name: &str,
    spec: &DatasetSpec,
    field: &str,
    rows: &mut Vec<Row>,
    splits: &mut BTreeMap<String, Vec<Row>>,
) -> BTreeMap<String, (usize, usize)> {
    let trained_on: BTreeSet<Option<&str>> = plan
        .stages
        .iter()
        .filter(|s| s.data.dataset == name)
        .map(|s| s.data.split.as_deref())
        .collect();
    let trained_splits: BTreeSet<String> = trained_on
        .iter()
        .flatten()
        .map(|s| (*s).to_string())
        .collect();
    for note in data::give_every_value(splits, &trained_splits, field) {
        crate::stderr_line!("note: dataset `{name}`: {note}");
    }
    let (mut lacking, mut considered) = (Vec::new(), 0);
    let mut sizes = BTreeMap::new();
    let mut balance = |label: &str, part: &mut Vec<Row>| {
        considered += part.len();
        let before = part.len();
        let (balanced, missing) = data::balance(std::mem::take(part), field, spec.seed);
        *part = balanced;
        lacking.extend(missing);
        sizes.insert(label.to_string(), (before, part.len()));
    };
    if trained_on.contains(&None) {
        balance("all", rows);
    }
    for (split, split_rows) in splits.iter_mut() {
        if trained_on.contains(&Some(split.as_str())) {
            balance(split, split_rows);
        }
    }
    if sizes.is_empty() {
        crate::stderr_line!(
            "warning: dataset `{name}`: `balance = {field}` balances what a stage trains on, and no stage trains on `{name}`; nothing is balanced (held-out and eval splits keep each row once)"
        );
    } else if let Some(line) = data::balance_warning(name, field, &lacking, considered) {
        crate::stderr_line!("{line}");
    }
    sizes
}

/// SHA-256 of each of [`FINAL_MODEL_FILES`] in `dir`, for `stage.json`.
///
/// # Errors
/// A file that cannot be read.
fn final_model_checksums(dir: &Path) -> Result<Value, ExecError> {
    let mut sums = serde_json::Map::new();
    for name in FINAL_MODEL_FILES {
        let sum = super::checkpoint::sha256_of(&dir.join(name))?;
        sums.insert(name.to_string(), Value::String(sum));
    }
    Ok(Value::Object(sums))
}

/// The first of the files `recorded` names (a finished stage's
/// `checksums`) whose content in `dir` differs from it or cannot be read.
fn changed_model_file(dir: &Path, recorded: &Value) -> Option<String> {
    let recorded = recorded.as_object()?;
    recorded
        .iter()
        .filter(|(name, _)| FINAL_MODEL_FILES.contains(&name.as_str()))
        .find(|(name, sum)| {
            let now = super::checkpoint::sha256_of(&dir.join(name)).ok();
            now.as_deref() != sum.as_str()
        })
        .map(|(name, _)| name.clone())
}

/// Settings as a run's files keep them, to compare on resume: no
/// password of an endpoint URL, and no absolute path ([`without_local_paths`]).
fn comparable(mut settings: Value) -> Value {
    safer_ir::mask_urls_in(&mut settings);
    without_local_paths(&mut settings);
    settings
}

/// Drops the absolute paths of plan settings (dataset `source` and
/// `images`, model `weights` and `tokenizer`, a judge's `ca_file`) from
/// `value`: a run directory resumed after its project moved, or on another
/// machine, reads the same files from elsewhere, and that is no change of
/// settings (the paths as written stay, as in the program hash).
fn without_local_paths(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for key in ["source", "images", "weights", "tokenizer", "ca_file"] {
                fields.remove(key);
            }
            fields.values_mut().for_each(without_local_paths);
        }
        Value::Array(items) => items.iter_mut().for_each(without_local_paths),
        _ => {}
    }
}

/// The result of a training stage.
pub struct Trained<B: Backend> {
    /// The trained policy.
    pub model: Model<B>,
    /// Training statistics for the summary.
    pub summary: Value,
}

/// Copies the tokenizer files of `from` into `to` (next to saved weights):
/// what transformers' `AutoTokenizer` reads, the slow tokenizer's
/// vocabulary and merges included.
///
/// # Errors
/// I/O errors.
pub fn copy_tokenizer(from: &Path, to: &Path) -> Result<(), ExecError> {
    copy_present(
        from,
        to,
        &[
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "chat_template.json",
            "special_tokens_map.json",
            "added_tokens.json",
            "vocab.json",
            "merges.txt",
            "generation_config.json",
        ],
    )
}

/// Copies the image and video processors' settings of `from` into `to` as
/// they are, over the image processor's file that saving wrote: a trained
/// model keeps every setting of its source's processor for transformers'
/// `AutoProcessor`, including those saferc does not use.
///
/// # Errors
/// I/O errors.
pub fn copy_processor(from: &Path, to: &Path) -> Result<(), ExecError> {
    copy_present(
        from,
        to,
        &[
            "preprocessor_config.json",
            "processor_config.json",
            "video_preprocessor_config.json",
        ],
    )
}

/// Copies each of `names` that `from` holds into `to`, each through a
/// temporary file and a rename (a full disk leaves no half file); an error
/// names the file that could not be read or written.
fn copy_present(from: &Path, to: &Path, names: &[&str]) -> Result<(), ExecError> {
    for name in names {
        let src = from.join(name);
        let dst = to.join(name);
        if src.is_file() && src != dst {
            let bytes = std::fs::read(&src).map_err(|e| ExecError::Io {
                path: src.clone(),
                message: e.to_string(),
            })?;
            super::run_dir::write_atomically(&dst, &bytes)?;
        }
    }
    Ok(())
}

/// The datasets in an order that builds every dataset after those it
/// de-duplicates against (name order otherwise).
///
/// # Errors
/// Datasets that de-duplicate against each other in a cycle, or one
/// against its own split.
fn dedup_order(plan: &Plan) -> Result<Vec<&String>, ExecError> {
    let mut order: Vec<&String> = Vec::with_capacity(plan.datasets.len());
    let mut left: Vec<&String> = plan.datasets.keys().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|name| {
            plan.datasets[*name]
                .dedup
                .iter()
                .all(|(other, _)| order.contains(&other) || !plan.datasets.contains_key(other))
        });
        match ready {
            Some(i) => order.push(left.remove(i)),
            None => {
                let names: Vec<String> = left.iter().map(|n| format!("`{n}`")).collect();
                return Err(ExecError::Usage(format!(
                    "datasets {} de-duplicate against each other (or against their own splits), so none can be built first; a `dedup` must name another dataset's split",
                    names.join(", ")
                )));
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::dedup_order;
    use safer_ir::plan::Plan;
    use serde_json::json;

    /// A plan with datasets `(name, [(dataset, split) it de-duplicates against])`.
    fn plan(datasets: &[(&str, &[(&str, &str)])]) -> Plan {
        let mut plan = Plan::default();
        for (name, dedup) in datasets {
            let spec = json!({"source": "d.jsonl", "source_written": "d.jsonl", "images": ".",
                "on_bad_row": "skip", "filters": [], "curate": null, "balance": null,
                "dedup": dedup, "limit": null, "splits": [["train", 0.8], ["eval", 0.2]], "seed": 0});
            plan.datasets
                .insert(name.to_string(), serde_json::from_value(spec).unwrap());
        }
        plan
    }

    #[test]
    fn datasets_are_built_after_those_they_deduplicate_against() {
        // `main` (first by name) needs `mid`, which needs `base`.
        let p = plan(&[
            ("main", &[("mid", "eval")]),
            ("mid", &[("base", "eval")]),
            ("base", &[]),
        ]);
        assert_eq!(dedup_order(&p).unwrap(), ["base", "mid", "main"]);
    }

    #[test]
    fn a_dedup_cycle_is_a_usage_error() {
        let p = plan(&[("a", &[("b", "eval")]), ("b", &[("a", "eval")]), ("c", &[])]);
        let err = dedup_order(&p).unwrap_err().to_string();
        assert!(
            err.contains("datasets `a`, `b` de-duplicate against each other"),
            "{err}"
        );
        let own = plan(&[("a", &[("a", "eval")])]);
        assert!(dedup_order(&own).is_err());
    }
}
