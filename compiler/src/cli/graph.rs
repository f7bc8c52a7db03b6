//! `saferc graph`: compile a pipeline and print its dataflow graph.

use super::{input, Format};
use crate::semantic::{self, loader::LoadOptions};
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

pub(super) fn run(file: &Path, format: GraphFormat, options: &LoadOptions) -> i32 {
    let mut sources = SourceMap::new();
    let analysis = semantic::analyze_file(&mut sources, file, options.clone());
    let has_errors = analysis.has_errors();
    input::emit(&analysis.diagnostics, &sources, Format::Human);
    let (Some(program), false) = (analysis.program, has_errors) else {
        return 1;
    };
    match crate::graph::lower(&program) {
        Ok(graph) => {
            let out = match format {
                GraphFormat::Text => safer_ir::to_text(&graph),
                GraphFormat::Dot => safer_ir::to_dot(&graph),
                GraphFormat::Mermaid => safer_ir::to_mermaid(&graph),
                GraphFormat::Json => serde_json::to_string_pretty(&graph).unwrap_or_default(),
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

pub(super) fn hir(file: &Path, options: &LoadOptions) -> i32 {
    let mut sources = SourceMap::new();
    let analysis = semantic::analyze_file(&mut sources, file, options.clone());
    input::emit(&analysis.diagnostics, &sources, Format::Human);
    let failed = analysis.has_errors();
    if let Some(program) = analysis.program.map(|p| p.hashed()) {
        println!(
            "{}",
            serde_json::to_string_pretty(&program).unwrap_or_default()
        );
    }
    i32::from(failed)
}
