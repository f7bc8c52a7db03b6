//! `saferc check`: load, parse and analyze pipelines; report every
//! diagnostic.

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
        diags.extend(analysis.diagnostics);
    }
    input::emit(&diags, &sources, format);
    i32::from(diags.iter().any(|d| d.is_error()))
}
