//! The commands that run models (binary only, feature `runtime`):
//! `saferc run`, `saferc generate` and `saferc init-model`.

mod generate;
mod init_model;
mod run;

use clap::Subcommand;

pub use generate::GenerateArgs;
pub use init_model::InitModelArgs;
pub use run::RunArgs;

/// Commands backed by the runtime.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate completions of a prompt with a local model (text or image + text).
    Generate(GenerateArgs),
    /// Create a fresh, randomly initialised `tiny_vlm` model directory.
    InitModel(InitModelArgs),
    /// Run a pipeline: datasets, training stages, evaluations; writes a run directory.
    Run(RunArgs),
}

/// Why `generate` or `init-model` stopped.
#[derive(Debug)]
pub enum Failure {
    /// A request that cannot be carried out as asked (a flag's value out of
    /// range, a folder already taken): exit 2, as clap's own usage errors.
    Refused(String),
    /// The work failed (a model that does not load, an image that does not
    /// decode): exit 1.
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

/// Runs one runtime command; returns the exit code (0 ok, 1 failure,
/// 2 a request that cannot be carried out).
pub fn run(command: Command) -> i32 {
    let result = match command {
        Command::Run(args) => return run::run(args),
        Command::Generate(args) => generate::run(args),
        Command::InitModel(args) => init_model::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(Failure::Failed(message)) => {
            safer_runtime::stderr_line!("error: {message}");
            1
        }
        Err(Failure::Refused(message)) => {
            safer_runtime::stderr_line!("error: {message}");
            2
        }
    }
}
