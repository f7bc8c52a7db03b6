//! The `saferc` command: see `saferc --help`.
//!
//! The compiler's commands come from the library (`saferc::cli`); with the
//! `runtime` feature (on by default) the binary adds the commands that run
//! models, from [`runtime_cli`].

#[cfg(feature = "runtime")]
mod runtime_cli;

use clap::{Parser, Subcommand};

/// saferc: compile, check, format and run `.safer` safety-aware RL pipelines.
#[derive(Debug, Parser)]
#[command(name = "saferc", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    #[command(flatten)]
    Compiler(saferc::cli::Command),
    #[cfg(feature = "runtime")]
    #[command(flatten)]
    Runtime(runtime_cli::Command),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let code = match cli.command {
        Top::Compiler(command) => saferc::cli::run_command(command),
        #[cfg(feature = "runtime")]
        Top::Runtime(command) => runtime_cli::run(command),
    };
    std::process::exit(code);
}
