//! `saferc graph`: compile a pipeline and print its dataflow graph.

use super::{input, Format, ImportArgs};
use crate::semantic;
use crate::source::SourceMap;
use std::path::Path;

/// Output forms of `saferc graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// Stable text (names from the source, sorted).
    Text,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON (the serialised graph).
    Json,
}

/// The program and project of a checked pipeline.
type Checked = (
    crate::semantic::hir::Program,
    Option<crate::project::Project>,
);

/// Analyzes `file` (`-`: standard input, as a file in the current folder,
/// as `check -` reads it) with its project's options and prints the
/// diagnostics; the program, when there were no errors, and the project it
/// belongs to.
fn checked_program(file: &Path, imports: &ImportArgs, sources: &mut SourceMap) -> Option<Checked> {
    let mut diags = Vec::new();
    let (options, project) =
        imports.options_and_project(&input::project_path(file), sources, &mut diags);
    let analysis = match input::analyze(sources, file, options) {
        Ok(analysis) => analysis,
        Err(d) => {
            diags.push(*d);
            input::emit(&diags, sources, Format::Human);
            return None;
        }
    };
    diags.extend(analysis.diagnostics);
    let has_errors = diags.iter().any(|d| d.is_error());
    input::emit(&diags, sources, Format::Human);
    analysis
        .program
        .filter(|_| !has_errors)
        .map(|p| (p, project))
}

pub(super) fn run(file: &Path, format: GraphFormat, imports: &ImportArgs) -> i32 {
    let mut sources = SourceMap::new();
    let Some((program, _)) = checked_program(file, imports, &mut sources) else {
        return 1;
    };
    match crate::graph::lower(&program) {
        Ok(graph) => {
            let out = match format {
                GraphFormat::Text => safer_ir::to_text(&graph),
                GraphFormat::Dot => safer_ir::to_dot(&graph),
                GraphFormat::Mermaid => safer_ir::to_mermaid(&graph),
                // Ended by a newline, as the other formats and `hir` are.
                GraphFormat::Json => {
                    serde_json::to_string_pretty(&graph).unwrap_or_default() + "\n"
                }
            };
            print!("{out}");
            0
        }
        Err(diags) => {
            input::emit(&diags, &sources, Format::Human);
            1
        }
    }
}

pub(super) fn hir(file: &Path, imports: &ImportArgs) -> i32 {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    let options = imports.options_for(file, &mut sources, &mut diags);
    let analysis = semantic::analyze_file(&mut sources, file, options);
    diags.extend(analysis.diagnostics);
    input::emit(&diags, &sources, Format::Human);
    let failed = diags.iter().any(|d| d.is_error());
    if let Some(program) = analysis.program.map(|p| p.hashed()) {
        // A password in a judge's endpoint URL is not printed.
        let mut json = serde_json::to_value(&program).unwrap_or_default();
        safer_ir::mask_urls_in(&mut json);
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    }
    i32::from(failed)
}

/// What the project around a pipeline (its `safer.toml`) sets for `saferc
/// run`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunDefaults {
    /// `[paths] runs`, resolved against the project's folder.
    pub runs: Option<std::path::PathBuf>,
    /// `[run] device` (`cpu`, `wgpu` or `cuda`).
    pub device: Option<String>,
}

/// The `saferc run` defaults of the project `file` belongs to; none outside
/// a project (or with a manifest that does not load, which compiling the
/// file reports).
pub fn run_defaults(file: &Path) -> RunDefaults {
    let mut sources = SourceMap::new();
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match crate::project::load_around(&mut sources, dir) {
        Ok(Some(project)) => RunDefaults {
            runs: Some(project.root.join(&project.manifest.paths.runs)),
            device: project.manifest.run.map(|r| {
                match r.device {
                    crate::project::manifest::Device::Cpu => "cpu",
                    crate::project::manifest::Device::Wgpu => "wgpu",
                    crate::project::manifest::Device::Cuda => "cuda",
                }
                .to_string()
            }),
        },
        _ => RunDefaults::default(),
    }
}

/// Compiles `file` for `saferc run`: checks, lowers the graph (validated)
/// and the plan; diagnostics are printed and `None` returned on errors.
pub fn compile_plan(file: &Path, imports: &ImportArgs) -> Option<safer_ir::plan::Plan> {
    let mut sources = SourceMap::new();
    let (program, project) = checked_program(file, imports, &mut sources)?;
    if let Err(diags) = crate::graph::lower(&program) {
        input::emit(&diags, &sources, Format::Human);
        return None;
    }
    let mut plan = crate::plan::lower(&program);
    // Judges that name a `safer.toml` endpoint get its URL, model, key variable,
    // CA file, concurrency, timeout, `images` and `max_tokens` (the checker has verified that it exists).
    if let Some(project) = project {
        for judge in plan.judges.values_mut() {
            let Some(endpoint) = judge
                .named
                .as_ref()
                .and_then(|n| project.manifest.judges.get(n))
            else {
                continue;
            };
            judge.endpoint = Some(endpoint.endpoint.get_ref().clone());
            judge.model_name = Some(endpoint.model.clone());
            // A key variable or CA file the endpoint leaves out stays the judge's own.
            if let Some(var) = &endpoint.api_key_env {
                judge.api_key_env = Some(var.get_ref().clone());
            }
            if let Some(file) = &endpoint.ca_file {
                judge.ca_file = Some(
                    project
                        .root
                        .join(file.get_ref())
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            // Set in `safer.toml`, they win; unset, the judge's own stay.
            if let Some(c) = &endpoint.concurrency {
                judge.concurrency = usize::try_from(*c.get_ref()).unwrap_or(1).max(1);
            }
            if let Some(t) = &endpoint.timeout {
                judge.timeout_s = *t.get_ref();
            }
            if let Some(images) = endpoint.images {
                judge.images = images;
            }
            if let Some(n) = &endpoint.max_tokens {
                judge.max_tokens = usize::try_from(*n.get_ref()).ok().filter(|&n| n > 0);
            }
        }
    }
    Some(plan)
}
