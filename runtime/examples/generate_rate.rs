//! Generation throughput timed the way the peer script times transformers
//! (`benches/peer/hf_generate.py bench`): one process loads the model, runs
//! one warm-up generation, then times `RUNS` generations of `BATCH` samples
//! of the benchmark prompt (chat template, temperature 1, no top-p or
//! top-k, exactly `NEW` new tokens each) and prints the median rate as JSON.
//! `saferc generate` runs the same `generate` call once per process, so its
//! rate also pays for a fresh process's first forward (the thread pool's
//! start, first-touch page faults); `runtime/benches/generate_vs_hf.sh`
//! reports both.
//!
//! ```sh
//! cargo run --release -p safer-runtime --example generate_rate -- DIR [BATCH] [NEW] [RUNS]
//! ```

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_runtime::generate::{generate, user_prompt, SamplingParams};
use safer_runtime::model::{Model, ModelError};
use safer_runtime::text::TextTokenizer;
use safer_runtime::CpuBackend;

mod common;
use common::Args;

/// The peer script's prompt.
const PROMPT: &str =
    "Look at the picture and tell me whether it is safe to use this tool in the kitchen.";

fn main() -> Result<(), ModelError> {
    let args = Args::from_env();
    let dir = args.model_dir();
    let (batch, new_tokens, runs) = (
        args.number(2, 8),
        args.number(3, 64),
        args.number(4, 5).max(1),
    );
    let model = Model::<CpuBackend>::load(&dir, &Default::default())?;
    let tokenizer = TextTokenizer::load(&dir)?;
    let prompt = user_prompt(&tokenizer, &model.config, PROMPT, &[], None)?;
    let prompt_tokens = prompt.tokens.len();
    let prompts = vec![prompt; batch];
    let params = SamplingParams {
        greedy: false,
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: new_tokens,
        min_new_tokens: new_tokens,
        stop_tokens: Vec::new(),
        stop_strings: Vec::new(),
    };
    let mut rate = |seed: u64| -> Result<f64, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Instant::now();
        let completions = generate(&model, &tokenizer, &prompts, &params, &mut rng)?;
        let seconds = start.elapsed().as_secs_f64();
        let tokens: usize = completions.iter().map(|c| c.tokens.len()).sum();
        if tokens != batch * new_tokens {
            return Err(ModelError::Request {
                reason: format!("{tokens} tokens generated, expected {}", batch * new_tokens),
            });
        }
        Ok(tokens as f64 / seconds)
    };
    rate(0)?;
    let mut rates = (1..=runs as u64)
        .map(&mut rate)
        .collect::<Result<Vec<_>, _>>()?;
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    println!(
        "{{\"prompt_tokens\": {prompt_tokens}, \"batch\": {batch}, \"new_tokens\": {new_tokens}, \"tokens_per_second\": {median:.1}, \"runs\": {rates:?}}}"
    );
    Ok(())
}
