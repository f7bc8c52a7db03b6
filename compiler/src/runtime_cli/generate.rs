//! `saferc generate`: sample completions of one prompt with a local model.
//!
//! `--n N` samples N completions as one batch; `--json` prints, per
//! completion, its token ids, text and per-token log-probs, plus timing.

use std::path::PathBuf;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::burn::tensor::backend::Backend;
use safer_runtime::device::{dispatch, BackendTask, DeviceChoice};
use safer_runtime::generate::prompt::check_tokenizer_against_config;
use safer_runtime::generate::{generate, user_prompt, Completion, SamplingParams};
use safer_runtime::model::{Model, ModelError};
use safer_runtime::text::TextTokenizer;
use serde_json::json;

use super::Failure;

/// Arguments of `saferc generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A model directory (config.json, *.safetensors, tokenizer.json): `qwen2`, `qwen2_5_vl` or `tiny_vlm`.
    #[arg(long)]
    pub model: PathBuf,
    /// The user's message.
    #[arg(long)]
    pub prompt: String,
    /// An image shown with the prompt (repeat for several; `qwen2_5_vl` and `tiny_vlm`).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// A system message (rendered by the chat template, so not with `--raw`).
    #[arg(long, conflicts_with = "raw")]
    pub system: Option<String>,
    /// Use the prompt as raw text: no chat template.
    #[arg(long)]
    pub raw: bool,
    /// Completions to sample, as one batch.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Greedy decoding (not with `--temperature`, `--top-p` or `--top-k`).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    /// Sampling temperature (0: greedy decoding, as `--greedy`).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// The most new tokens per completion.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// End-of-sequence is suppressed until this many tokens (transformers' `min_new_tokens`).
    #[arg(long, default_value_t = 0)]
    pub min_tokens: usize,
    /// A string that ends a completion, which ends with it (repeatable; not empty).
    #[arg(long = "stop", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub stop: Vec<String>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto, cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print JSON: each completion's token ids, text and log-probs, and timing. The log-probs are
    /// temperature-scaled and taken before `--top-k`/`--top-p` cut the distribution (as a trainer
    /// scores the tokens), without the image placeholder (never sampled) and, before
    /// `--min-tokens`, without end-of-sequence.
    #[arg(long)]
    pub json: bool,
}

/// The most completions `--n` samples in one batch.
const MAX_BATCH: usize = 4096;

/// Runs `saferc generate`.
pub fn run(args: GenerateArgs) -> Result<(), Failure> {
    if args.n == 0 {
        return Err(Failure::Refused("`--n` must be at least 1".into()));
    }
    if args.n > MAX_BATCH {
        return Err(Failure::Refused(format!(
            "`--n {}` is more than one batch of {MAX_BATCH} completions (every completion keeps its own cache); sample in several calls with different `--seed`s",
            args.n
        )));
    }
    if args.max_tokens == 0 {
        return Err(Failure::Refused(
            "`--max-tokens` must be at least 1 (a completion of no tokens is not sampled)".into(),
        ));
    }
    sampling_params(&args)
        .validate()
        .map_err(Failure::Refused)?;
    if let Some(reason) = safer_runtime::device::not_built(args.device) {
        return Err(Failure::Refused(reason));
    }
    dispatch(args.device, Task(args)).map_err(|e| Failure::Failed(e.to_string()))?
}

/// A model error as the exit code sees it: a request the model cannot serve
/// (too long for its context, images for a text model) is refused (exit 2).
fn failure(e: ModelError) -> Failure {
    match e {
        ModelError::Request { .. } | ModelError::PromptText { .. } => {
            Failure::Refused(e.to_string())
        }
        _ => Failure::Failed(e.to_string()),
    }
}

/// The sampler's settings as the flags give them.
fn sampling_params(args: &GenerateArgs) -> SamplingParams {
    // `--temperature 0` is greedy decoding, as `temperature = 0` in a
    // rollout is.
    let zero = args.temperature == 0.0;
    SamplingParams {
        greedy: args.greedy || zero,
        temperature: if zero { 1.0 } else { args.temperature },
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_tokens,
        min_new_tokens: args.min_tokens,
        stop_tokens: Vec::new(),
        stop_strings: args.stop.clone(),
    }
}

/// The sampling defaults a model's `generation_config.json` sets
/// (transformers' `generate` samples with them unless told otherwise),
/// which `saferc generate` does not take: it samples as its flags say, and
/// has no repetition penalty. `None` when the file sets none.
fn generation_config_note(model: &std::path::Path) -> Option<String> {
    let path = model.join("generation_config.json");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    let set: Vec<String> = [
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
    ]
    .iter()
    .filter_map(|key| {
        let v = value.get(*key).filter(|v| !v.is_null())?;
        // The values that change nothing are not worth a note.
        let neutral = match *key {
            "temperature" | "top_p" | "repetition_penalty" => v.as_f64() == Some(1.0),
            "top_k" => v.as_u64() == Some(0),
            _ => false,
        };
        (!neutral).then(|| format!("{key} = {v}"))
    })
    .collect();
    if set.is_empty() {
        return None;
    }
    Some(format!(
        "{} sets {}, which `saferc generate` does not read: it samples as its flags say (`--greedy`, `--temperature`, `--top-p`, `--top-k`) and applies no repetition penalty, so its completions differ from those of transformers' `generate` with that file's defaults",
        path.display(),
        set.join(", ")
    ))
}

struct Task(GenerateArgs);

impl BackendTask for Task {
    type Output = Result<(), Failure>;

    fn run<B: Backend>(self, device: B::Device, name: &'static str) -> Self::Output {
        let args = self.0;
        let err = failure;
        let load_start = Instant::now();
        // Generation keeps no attention scores for a backward pass: images
        // of any size (the vision tower chunks its queries).
        let model = Model::<B>::load(&args.model, &device).map_err(err)?;
        let unused = safer_runtime::model::weights::check_tensors(&args.model, &model.config)
            .map_err(err)?;
        if !unused.is_empty() {
            safer_runtime::stderr_line!(
                "warning: {}",
                safer_runtime::model::weights::unused_tensors_note(&args.model, &unused)
            );
        }
        let tokenizer = TextTokenizer::load(&args.model).map_err(err)?;
        check_tokenizer_against_config(&tokenizer, &model.config, &args.model).map_err(err)?;
        if let Some(note) = generation_config_note(&args.model) {
            safer_runtime::stderr_line!("note: {note}");
        }
        let load_seconds = load_start.elapsed().as_secs_f64();
        let prompt = if args.raw {
            if !args.images.is_empty() {
                return Err(Failure::Refused(
                    "`--raw` takes text only; images need the chat template's placeholders".into(),
                ));
            }
            safer_runtime::generate::Prompt {
                tokens: tokenizer.encode(&args.prompt).map_err(err)?,
                images: None,
            }
        } else {
            if !tokenizer.has_chat_template() {
                if args.system.is_some() {
                    return Err(Failure::Refused(format!(
                        "`--system` is rendered by the chat template, and `{}` has none (no `chat_template.jinja`, `chat_template.json` or `chat_template` in `tokenizer_config.json`)",
                        args.model.display()
                    )));
                }
                safer_runtime::stderr_line!(
                    "warning: `{}` has no chat template: the prompt is tokenized as written, as with `--raw`",
                    args.model.display()
                );
            }
            user_prompt(
                &tokenizer,
                &model.config,
                &args.prompt,
                &args.images,
                args.system.as_deref(),
            )
            .map_err(err)?
        };
        let params = sampling_params(&args);
        let prompts = vec![prompt; args.n];
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        let start = Instant::now();
        let completions = generate(&model, &tokenizer, &prompts, &params, &mut rng)
            .map_err(|e| e.of_model(|| format!("the model in `{}`", args.model.display())))
            .map_err(err)?;
        let seconds = start.elapsed().as_secs_f64();
        let generated: usize = completions.iter().map(|c| c.tokens.len()).sum();
        let stats = json!({
            "device": name,
            "architecture": model.architecture(),
            "prompt_tokens": prompts[0].tokens.len(),
            "completions": completions.len(),
            "generated_tokens": generated,
            "load_seconds": load_seconds,
            "generate_seconds": seconds,
            "tokens_per_second": generated as f64 / seconds.max(1e-9),
        });
        if args.json {
            let items: Vec<_> = completions
                .iter()
                .enumerate()
                .map(|(i, c)| completion_json(i, c))
                .collect();
            println!("{:#}", json!({"completions": items, "stats": stats}));
        } else {
            for (i, c) in completions.iter().enumerate() {
                if completions.len() > 1 {
                    println!(
                        "--- completion {} ({} tokens, {:?}) ---",
                        i + 1,
                        c.tokens.len(),
                        c.finish
                    );
                }
                println!("{}", c.text);
            }
            safer_runtime::stderr_line!(
                "{generated} tokens in {seconds:.3} s ({:.0} tokens/s) on {name}",
                generated as f64 / seconds.max(1e-9)
            );
        }
        Ok(())
    }
}

fn completion_json(index: usize, c: &Completion) -> serde_json::Value {
    json!({
        "index": index,
        "text": c.text,
        "tokens": c.tokens,
        "logprobs": c.logprobs,
        "finish": c.finish,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::generation_config_note;

    /// A model's sampling defaults are named where they would change the
    /// completions; neutral values and a file without them are not.
    #[test]
    fn a_model_s_sampling_defaults_are_named() {
        let dir = std::env::temp_dir().join(format!("saferc-genconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let note = |json: &str| {
            std::fs::write(dir.join("generation_config.json"), json).unwrap();
            generation_config_note(&dir)
        };
        let said = note(r#"{"eos_token_id": 2, "do_sample": true, "temperature": 0.7, "top_k": 20, "repetition_penalty": 1.05}"#)
            .unwrap_or_default();
        assert!(
            said.contains(
                "do_sample = true, temperature = 0.7, top_k = 20, repetition_penalty = 1.05"
            ),
            "{said}"
        );
        assert_eq!(
            note(r#"{"eos_token_id": 2, "temperature": 1.0, "top_k": 0}"#),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(generation_config_note(&dir), None);
    }
}
