//! The `saferc` command line: one subcommand per compiler stage.
//!
//! Exit codes: 0 success, 1 errors in the input (or files that `fmt --check`
//! would change), 2 usage errors (clap's convention).

mod check;
mod emit;
mod explain;
mod fix;
mod fmt;
mod graph;
mod input;
mod parse;
mod project;

pub use graph::{compile_plan, run_defaults, RunDefaults};

use clap::{Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// saferc: compile, check and format `.safer` safety-aware RL pipelines.
#[derive(Debug, Parser)]
#[command(name = "saferc", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Rendered reports with source snippets, on stderr.
    #[default]
    Human,
    /// One JSON document on stdout, for tools and editors.
    Json,
}

/// How `use` paths may resolve.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ImportArgs {
    /// The project root (default: the folder of the nearest `safer.toml`
    /// above the file, else the file's folder); `use` may not leave it.
    #[arg(long, value_parser = existing_folder)]
    pub root: Option<PathBuf>,
    /// Allow `use` of files outside the project root.
    #[arg(long)]
    pub allow_outside_root: bool,
}

/// `--root`'s check: a folder that exists.
fn existing_folder(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match path.is_dir() {
        true => Ok(path),
        false if path.exists() => Err(format!("`{value}` is a file; the root is a folder")),
        false => Err(format!("no folder `{value}`")),
    }
}

impl ImportArgs {
    /// The options for checking `file`: from the nearest `safer.toml`, or
    /// defaults; `--root` sets the root `use` may not leave. Manifest
    /// problems are added to `diags`.
    fn options_for(
        &self,
        file: &std::path::Path,
        sources: &mut crate::source::SourceMap,
        diags: &mut Vec<crate::diagnostic::Diagnostic>,
    ) -> crate::semantic::loader::LoadOptions {
        self.options_and_project(file, sources, diags).0
    }

    /// [`Self::options_for`] and the project they came from (none outside
    /// a project, or when its manifest has errors).
    fn options_and_project(
        &self,
        file: &std::path::Path,
        sources: &mut crate::source::SourceMap,
        diags: &mut Vec<crate::diagnostic::Diagnostic>,
    ) -> (
        crate::semantic::loader::LoadOptions,
        Option<crate::project::Project>,
    ) {
        // `--root` moves the root `use` may not leave; the project's
        // manifest (import roots, judge endpoints, pins) still applies.
        let (mut options, project) =
            crate::project::options_around(sources, file, self.allow_outside_root, diags);
        if let Some(root) = &self.root {
            options.root = Some(std::fs::canonicalize(root).unwrap_or_else(|_| root.clone()));
        }
        (options, project)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check files for errors (exit 0 when clean, 1 on errors).
    Check {
        /// The `.safer` files to check; `-` reads standard input (its `use`
        /// paths relative to the current folder).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format of the diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Write the diagnostics' fixes into the files (a misspelt key, name,
        /// value or unit; a renamed or deprecated key), then check again
        /// and report what is left.
        #[arg(long)]
        fix: bool,
        /// Import options.
        #[command(flatten)]
        imports: ImportArgs,
    },
    /// Parse one file and print its syntax tree (for debugging).
    Parse {
        /// The `.safer` file.
        file: PathBuf,
        /// Print the tree as JSON instead of the indented dump.
        #[arg(long)]
        json: bool,
    },
    /// Format files in place (or check that they are formatted).
    Fmt {
        /// The `.safer` files to format; `-` reads stdin and writes stdout.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 and list the files that would change.
        #[arg(long)]
        check: bool,
    },
    /// Compile a pipeline and print its dataflow graph.
    Graph {
        /// The `.safer` file.
        file: PathBuf,
        /// Output form.
        #[arg(long, value_enum, default_value_t = graph::GraphFormat::Text)]
        format: graph::GraphFormat,
        /// Import options.
        #[command(flatten)]
        imports: ImportArgs,
    },
    /// Print the resolved, typed program (HIR) as JSON (for debugging).
    Hir {
        /// The `.safer` file.
        file: PathBuf,
        /// Import options.
        #[command(flatten)]
        imports: ImportArgs,
    },
    /// Write a GRPO stage as files for another trainer (TRL or verl): its
    /// config, and the rubric as a Python reward module that scores as
    /// `saferc run` does.
    Emit {
        /// The `.safer` pipeline.
        file: PathBuf,
        /// The trainer to write for.
        #[arg(long, value_enum)]
        target: crate::emit::Target,
        /// The GRPO stage (default: the pipeline's only one).
        #[arg(long)]
        stage: Option<String>,
        /// The folder to write into (default: `emit-TARGET-STAGE` beside
        /// the pipeline).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace files in the folder that differ from what emit writes
        /// (without it, such files are left alone and emit stops).
        #[arg(long)]
        force: bool,
        /// Import options.
        #[command(flatten)]
        imports: ImportArgs,
    },
    /// Create a project folder with `safer.toml`, a starter pipeline and a rubric.
    New {
        /// The folder to create (its name is the project's name).
        path: PathBuf,
    },
    /// Record the content hashes of imported rubrics in `safer.toml` `[pins]`.
    Pin {
        /// Pipelines whose imported rubrics to pin (default: every `.safer`
        /// file of the project).
        files: Vec<PathBuf>,
    },
    /// Run the language server over stdio (for editors).
    Lsp,
    /// Explain a diagnostic code (`saferc explain E0101`).
    Explain {
        /// The code, e.g. `E0101`.
        code: String,
    },
}

/// Runs the command line; returns the process exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    run_command(cli.command)
}

/// Runs one parsed compiler command; returns the process exit code.
pub fn run_command(command: Command) -> i32 {
    match command {
        Command::Check {
            files,
            format,
            fix,
            imports,
        } => check::run(&files, format, fix, &imports),
        Command::Parse { file, json } => parse::run(&file, json),
        Command::Fmt { files, check } => fmt::run(&files, check),
        Command::Graph {
            file,
            format,
            imports,
        } => graph::run(&file, format, &imports),
        Command::Hir { file, imports } => graph::hir(&file, &imports),
        Command::Emit {
            file,
            target,
            stage,
            out,
            force,
            imports,
        } => emit::run(
            &file,
            emit::Request {
                target,
                stage: stage.as_deref(),
                out: out.as_deref(),
                force,
            },
            &imports,
        ),
        Command::New { path } => project::new(&path),
        Command::Pin { files } => project::pin(&files),
        Command::Lsp => {
            let stdout = std::io::stdout();
            crate::lsp::serve(
                std::io::BufReader::new(std::io::stdin()),
                &mut stdout.lock(),
            )
        }
        Command::Explain { code } => explain::run(&code),
    }
}
