//! Times one prefill and the decode steps of a batch on a model directory,
//! without sampling or tokenisation: the model's share of generation time.
//! For profiling (`perf record --call-graph dwarf ...`):
//!
//! ```sh
//! cargo run --release -p safer-runtime --example decode_profile -- DIR [BATCH] [PROMPT_LEN] [STEPS]
//! ```

use std::time::Instant;

use safer_runtime::model::{KvCache, Layout, Model, ModelError, ModelInput};
use safer_runtime::CpuBackend;

mod common;
use common::Args;

fn main() -> Result<(), ModelError> {
    let args = Args::from_env();
    let dir = args.model_dir();
    let (batch, prompt, steps) = (args.number(2, 8), args.number(3, 67), args.number(4, 64));
    let model = Model::<CpuBackend>::load(&dir, &Default::default())?;
    for round in 0..2 {
        let mut cache = KvCache::new(model.num_layers());
        let start = Instant::now();
        let input = ModelInput {
            tokens: vec![7; batch * prompt],
            layout: Layout::dense(batch, prompt, true),
            images: None,
        };
        let _ = model.forward(&input, Some(&mut cache))?.into_data();
        let prefill = start.elapsed();
        let start = Instant::now();
        for step in 0..steps {
            let total = prompt + step + 1;
            let layout = Layout {
                batch,
                seq: 1,
                positions: vec![(prompt + step) as i64; batch],
                key_padding: vec![false; batch * total],
                causal: true,
                mrope: None,
            };
            let _ = model
                .forward(
                    &ModelInput {
                        tokens: vec![9; batch],
                        layout,
                        images: None,
                    },
                    Some(&mut cache),
                )?
                .into_data();
        }
        let decode = start.elapsed();
        println!(
            "round {round}: prefill {batch}×{prompt}: {:.1} ms; {steps} decode steps: {:.1} ms ({:.2} ms/step)",
            prefill.as_secs_f64() * 1e3,
            decode.as_secs_f64() * 1e3,
            decode.as_secs_f64() * 1e3 / steps.max(1) as f64
        );
    }
    Ok(())
}
