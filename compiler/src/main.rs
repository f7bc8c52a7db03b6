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

/// Ends the process quietly, as a C tool killed by SIGPIPE would (exit 141),
/// when standard output is closed under it (`saferc hir FILE | head`):
/// `println!` panics on a broken pipe, which is no error of the program's.
/// Standard output that cannot be written otherwise (a full disk,
/// `> /dev/full`) is an error said in one line (exit 1), not a panic.
/// Every other panic goes to the default hook.
fn end_cleanly_when_stdout_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(reason) = message.strip_prefix("failed printing to stdout: ") {
            if reason.contains("Broken pipe") {
                std::process::exit(141);
            }
            eprintln!("error: cannot write to standard output: {reason}");
            std::process::exit(1);
        }
        default(info);
    }));
}

fn main() {
    end_cleanly_when_stdout_fails();
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
