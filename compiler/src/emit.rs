//! `saferc emit`: one GRPO stage of a compiled plan as files an existing
//! trainer runs, for training beyond one machine.
//!
//! Every target gets the same two reward files: `safer_reward.py`, a
//! standard-library Python module that evaluates the plan's expression IR
//! the way the runtime does (built-in scorers, user scorers, penalties,
//! format terms, `total`, HTTP judges with saferc's question and retries),
//! and `reward_spec.json`, the stage's compiled rubric ([`spec`]). Beside
//! them each target writes its trainer's configuration: a TRL
//! `GRPOConfig` script ([`trl`]) or a verl Hydra config with its data
//! preparation script ([`verl`]).
//!
//! What a target cannot express (reflection, curation, a KL estimator it
//! lacks, ...) is listed in [`Emitted::notes`], never dropped silently;
//! what makes the reward impossible to compute there (a local `model`
//! judge) is an error.

pub mod spec;
pub mod trl;
pub mod verl;

use safer_ir::plan::{Algorithm, GrpoSpec, Plan, StageSpec};

/// The reward module every target gets (see its docstring).
pub const SAFER_REWARD_PY: &str = include_str!("emit/safer_reward.py");

/// The trainers `saferc emit` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Hugging Face TRL's `GRPOTrainer`: `train_trl.py`.
    Trl,
    /// verl's `main_ppo` with `adv_estimator = grpo`: `verl_grpo.yaml` and
    /// `prepare_verl_data.py`.
    Verl,
}

/// The files of one emitted stage and what did not carry over.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The stage emitted.
    pub stage: String,
    /// File name (inside the output folder) and contents, in writing order.
    pub files: Vec<(String, String)>,
    /// Settings of the stage the target does not have, each a sentence
    /// naming the setting and what the emitted files do instead.
    pub notes: Vec<String>,
    /// Files that hold a credential (a judge endpoint's password or token
    /// in `reward_spec.json`): written readable by their owner alone.
    pub private: Vec<String>,
}

/// Emits stage `stage` of `plan` (default: its only GRPO stage) for
/// `target`; `pipeline` is the file as the user named it (for comments).
///
/// # Errors
/// No such GRPO stage, several without `--stage`, or a reward that cannot
/// be computed outside saferc (a local `model` judge).
pub fn emit(
    plan: &Plan,
    target: Target,
    stage: Option<&str>,
    pipeline: &str,
) -> Result<Emitted, String> {
    let (stage, grpo) = grpo_stage(plan, stage)?;
    let group = plan.rollout(stage.rollout.as_ref()).group;
    if target == Target::Trl && group < 2 {
        return Err(format!(
            "stage `{}` samples one completion per prompt (`group = {group}`), and TRL's GRPOTrainer needs at least 2 (`num_generations`): give its rollout `group = 2` or more, or emit it for verl",
            stage.name
        ));
    }
    let spec = spec::reward_spec(plan, stage)?;
    let mut notes = common_notes(plan, stage, grpo);
    let trainer = match target {
        Target::Trl => trl::files(plan, stage, grpo, pipeline, &mut notes),
        Target::Verl => verl::files(plan, stage, grpo, pipeline, &mut notes),
    };
    let mut files = vec![
        ("safer_reward.py".to_string(), SAFER_REWARD_PY.to_string()),
        ("reward_spec.json".to_string(), spec),
    ];
    files.extend(trainer);
    let holds_credential = plan.judges.values().any(|j| {
        j.endpoint
            .as_ref()
            .is_some_and(|e| safer_ir::masked_url(e) != *e)
    });
    Ok(Emitted {
        stage: stage.name.clone(),
        files,
        notes,
        private: if holds_credential {
            vec!["reward_spec.json".to_string()]
        } else {
            Vec::new()
        },
    })
}

/// The GRPO stage named `wanted`, or the plan's only one.
fn grpo_stage<'p>(
    plan: &'p Plan,
    wanted: Option<&str>,
) -> Result<(&'p StageSpec, &'p GrpoSpec), String> {
    let grpo: Vec<(&StageSpec, &GrpoSpec)> = plan
        .stages
        .iter()
        .filter_map(|s| match &s.algorithm {
            Algorithm::Grpo(g) => Some((s, g.as_ref())),
            Algorithm::Sft(_) => None,
        })
        .collect();
    let names = || {
        grpo.iter()
            .map(|(s, _)| format!("`{}`", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(name) => grpo
            .iter()
            .find(|(s, _)| s.name == name)
            .copied()
            .ok_or_else(|| {
                if plan.stages.iter().any(|s| s.name == name) && grpo.is_empty() {
                    format!("stage `{name}` is not a GRPO stage, and the pipeline has none; emit writes GRPO stages")
                } else if plan.stages.iter().any(|s| s.name == name) {
                    format!("stage `{name}` is not a GRPO stage; emit writes GRPO stages (this pipeline's: {})", names())
                } else if grpo.is_empty() {
                    format!("there is no stage `{name}`, and the pipeline has no GRPO stage")
                } else {
                    format!("there is no stage `{name}`; the GRPO stages are {}", names())
                }
            }),
        None => match grpo.as_slice() {
            [one] => Ok(*one),
            [] => Err("the pipeline has no GRPO stage; emit writes GRPO stages".into()),
            _ => Err(format!(
                "the pipeline has several GRPO stages ({}); name one with --stage",
                names()
            )),
        },
    }
}

/// Notes every target shares: parts of saferc's pipeline that no emitted
/// trainer runs.
fn common_notes(plan: &Plan, stage: &StageSpec, grpo: &GrpoSpec) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(after) = &stage.after {
        notes.push(format!(
            "stage `{}` starts from stage `{after}`'s result: the emitted config starts from `{}`'s weights as declared; point it at `{after}`'s output (run that stage first)",
            stage.name, stage.policy
        ));
    }
    if let Some(policy) = plan.models.get(&stage.policy) {
        if policy.arch == "tiny_vlm" {
            notes.push(format!(
                "model `{}` is a `tiny_vlm`, saferc's own architecture, which transformers cannot load: point the config at a Hugging Face model",
                stage.policy
            ));
        }
    }
    if let Some(reference) = &stage.reference {
        if reference != &stage.policy {
            notes.push(format!(
                "the reference model `{reference}` is not the policy: the emitted trainer takes its reference from the policy's starting weights"
            ));
        }
    }
    if let Some(reflection) = &stage.reflection {
        notes.push(format!(
            "reflection `{reflection}` (unsafe completions reflected on and corrected inside the group) has no equivalent: the emitted trainer samples plain groups"
        ));
    }
    if let Some(dataset) = plan.datasets.get(&stage.data.dataset) {
        if dataset.curate.is_some() {
            notes.push(format!(
                "dataset `{}` is curated by rollouts (QI-Box): the emitted data is the filtered source, uncurated",
                stage.data.dataset
            ));
        }
        if let Some(field) = &dataset.balance {
            notes.push(format!(
                "dataset `{}` balances `{field}`: the emitted data is not balanced",
                stage.data.dataset
            ));
        }
        if !dataset.dedup.is_empty() {
            notes.push(format!(
                "dataset `{}` drops rows of other splits (`dedup`): the emitted data keeps them",
                stage.data.dataset
            ));
        }
        if stage.data.split.is_some() {
            notes.push(format!(
                "split `{}` is dealt by its fractions with Python's seeded shuffle of the filtered rows: not the rows saferc's split holds",
                stage.data
            ));
        }
        let remade = dataset.curate.is_some()
            || dataset.balance.is_some()
            || !dataset.dedup.is_empty()
            || stage.data.split.is_some();
        if remade {
            notes.push("SAFER_SPLITS=RUN_DIR (the run directory of a `saferc run` of this pipeline) makes the scripts take the rows that run's splits held instead, curated, balanced and de-duplicated as saferc made them (its `splits.json`)".into());
        }
    }
    if !plan.evals.is_empty() {
        let names: Vec<String> = plan.evals.iter().map(|e| e.name.clone()).collect();
        notes.push(format!(
            "{} {} not emitted: the trainer does not run saferc's evaluations; score its checkpoints with `saferc run` (a pipeline whose `eval` points at them) or with `python safer_reward.py score`",
            if names.len() == 1 { "eval" } else { "evals" },
            match names.len() {
                1 => format!("{} is", crate::diagnostic::one_of(&names)),
                _ => format!("{} are", crate::diagnostic::one_of(&names)),
            }
        ));
    }
    let rubric = stage.reward.as_ref().and_then(|r| plan.rubrics.get(r));
    let judge = rubric
        .and_then(|r| r.judge.as_ref())
        .and_then(|name| Some((name, plan.judges.get(name)?.endpoint.as_ref()?)));
    if let Some((name, endpoint)) = judge {
        let masked = safer_ir::masked_url(endpoint);
        if masked != *endpoint {
            notes.push(format!(
                "judge `{name}`'s endpoint {masked} holds a credential, which reward_spec.json holds in full so that the module can ask it (the file is written readable by its owner alone): keep it private, or give the key through `api_key_env`"
            ));
        }
    }
    let patterns = rubric
        .map(|rubric| spec::regex_patterns(rubric, plan))
        .unwrap_or_default();
    for pattern in patterns {
        if let Some(why) = spec::regex_difference(&pattern) {
            notes.push(format!(
                "regex {pattern:?} may match differently in safer_reward.py: {why}"
            ));
        }
    }
    if grpo.cost.is_some() {
        notes.push(
            "the cost constraint (`cost`, Safe RLHF's Lagrangian) has no equivalent: the emitted trainer maximises the reward alone".into(),
        );
    }
    if grpo.overlong.is_some() {
        notes.push("DAPO overlong shaping (`overlong`) is not emitted: add the trainer's own overlong penalty if you need it".into());
    }
    notes
}

/// The positions a Hugging Face model folder's `config.json` holds
/// (`max_position_embeddings`, at its top or in its `text_config`), when
/// the file can be read.
pub(crate) fn model_positions(folder: &str) -> Option<usize> {
    let path = std::path::Path::new(folder).join("config.json");
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let key = "max_position_embeddings";
    json.get(key)
        .or_else(|| json.get("text_config")?.get(key))
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| usize::try_from(p).ok())
}

/// `x` as a Python literal (`1e-06`, `0.5`, `3.0`; `inf` as `float("inf")`).
pub(crate) fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "float(\"nan\")".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "float(\"inf\")".into()
        } else {
            "float(\"-inf\")".into()
        };
    }
    let text = format!("{x:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// `x` as a YAML 1.1 float, which PyYAML (OmegaConf, Hydra) reads as a
/// number: a dot in the mantissa and a signed exponent (`1.0e-06`; PyYAML
/// reads `1e-6` as a string).
pub(crate) fn yaml_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            ".nan".into()
        } else if x > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let text = format!("{x:?}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_string()
            } else {
                format!("{mantissa}.0")
            };
            let exponent = if exponent.starts_with('-') {
                exponent.to_string()
            } else {
                format!("+{exponent}")
            };
            format!("{mantissa}e{exponent}")
        }
        None if text.contains('.') => text,
        None => format!("{text}.0"),
    }
}

/// `s` as a quoted string literal for Python and YAML (JSON's escapes are
/// valid in both).
pub(crate) fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::*;

    /// Rust's `char::is_alphanumeric` as inclusive ranges, in the
    /// Python tuple `safer_reward.py` holds.
    fn word_ranges() -> String {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            if !c.is_alphanumeric() {
                continue;
            }
            let o = u32::from(c);
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == o => *end = o,
                _ => ranges.push((o, o)),
            }
        }
        let items: Vec<String> = ranges
            .iter()
            .map(|(a, b)| format!("(0x{a:X}, 0x{b:X})"))
            .collect();
        let lines: Vec<String> = items
            .chunks(6)
            .map(|c| format!("    {},", c.join(", ")))
            .collect();
        format!("_WORD_RANGES = (\n{}\n)", lines.join("\n"))
    }

    /// `safer_reward.py` splits words as `exec::scorers::words` does:
    /// its table is Rust's, regenerated with `SAFERC_BLESS=1` when the
    /// toolchain's Unicode tables change.
    #[test]
    fn the_reward_module_s_word_characters_are_rust_s() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/emit/safer_reward.py");
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("# BEGIN WORD RANGES\n", "\n# END WORD RANGES");
        let start = text.find(begin).unwrap() + begin.len();
        let stop = text.find(end).unwrap();
        let want = word_ranges();
        if std::env::var_os("SAFERC_BLESS").is_some() {
            let updated = format!("{}{want}{}", &text[..start], &text[stop..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert!(
            text[start..stop] == want,
            "safer_reward.py's word ranges are not Rust's: SAFERC_BLESS=1 cargo test -p saferc --lib emit::tests"
        );
    }

    #[test]
    fn numbers_and_strings_are_python_literals() {
        assert_eq!(py_float(1e-6), "1e-6");
        assert_eq!(py_float(3.0), "3.0");
        assert_eq!(py_float(0.28), "0.28");
        assert_eq!(py_float(f64::INFINITY), "float(\"inf\")");
        assert_eq!(yaml_float(1e-6), "1.0e-6");
        assert_eq!(yaml_float(2.5e-7), "2.5e-7");
        assert_eq!(yaml_float(1e20), "1.0e+20");
        assert_eq!(yaml_float(0.2), "0.2");
        assert_eq!(yaml_float(1.0), "1.0");
        assert_eq!(quoted("a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
    }
}
