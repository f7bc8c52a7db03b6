//! `saferc init-model DIR [--size tiny|small] [--seed S]`: a fresh `tiny_vlm`.

use std::path::PathBuf;

use safer_runtime::burn::module::Module;
use safer_runtime::model::tiny_vlm::{create, Preset, CREATED_FILES};
use safer_runtime::CpuBackend;

use super::Failure;

/// Arguments of `saferc init-model`.
#[derive(Debug, clap::Args)]
pub struct InitModelArgs {
    /// The model directory to create (config.json, model.safetensors, tokenizer files).
    pub dir: PathBuf,
    /// `tiny` (about 0.1M parameters, for tests) or `small` (about 1M, the quickstart's size).
    #[arg(long, default_value = "small")]
    pub size: Preset,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Creates the model directory.
pub fn run(args: InitModelArgs) -> Result<(), Failure> {
    // Every file `init-model` writes: none may be overwritten; nor may
    // another model's weights stay beside them (a sharded model's index
    // would be read instead of the new weights).
    let mut taken: Vec<String> = CREATED_FILES
        .iter()
        .filter(|f| args.dir.join(f).exists())
        .map(|f| (*f).to_string())
        .collect();
    let mut other_weights: Vec<String> = std::fs::read_dir(&args.dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !taken.contains(n)
                && (n.ends_with(".safetensors") || n == "model.safetensors.index.json")
        })
        .collect();
    other_weights.sort();
    taken.extend(other_weights);
    if !taken.is_empty() {
        return Err(Failure::Refused(format!(
            "`{}` already holds model files ({}); choose another folder",
            args.dir.display(),
            taken.join(", ")
        )));
    }
    if args.dir.exists() && !args.dir.is_dir() {
        return Err(Failure::Refused(format!(
            "`{}` is a file, not a folder",
            args.dir.display()
        )));
    }
    let model = create::<CpuBackend>(&args.dir, args.size, args.seed, &Default::default())
        .map_err(|e| e.to_string())?;
    let params = model.num_params();
    println!(
        "created tiny_vlm ({params} parameters) in {}",
        args.dir.display()
    );
    Ok(())
}
