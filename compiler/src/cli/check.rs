//! `saferc check`: load, parse and analyze pipelines, lower the clean ones
//! to their dataflow graph; report every diagnostic.

use super::{input, Format, ImportArgs};
use crate::semantic;
use crate::source::SourceMap;
use std::path::PathBuf;

pub(super) fn run(files: &[PathBuf], format: Format, imports: &ImportArgs) -> i32 {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    for path in files {
        let options = imports.options_for(path, &mut sources, &mut diags);
        let analysis = semantic::analyze_file(&mut sources, path, options);
        let clean = !analysis.diagnostics.iter().any(|d| d.is_error());
        diags.extend(analysis.diagnostics);
        // What only the dataflow graph shows (stages ordered in a cycle,
        // E04xx), as `graph` and `run` report it.
        if let (true, Some(program)) = (clean, analysis.program) {
            if let Err(graph_diags) = crate::graph::lower(&program) {
                diags.extend(graph_diags);
            }
        }
    }
    input::emit(&diags, &sources, format);
    i32::from(diags.iter().any(|d| d.is_error()))
}
