//! `saferc check`: load, parse and analyze pipelines; report every
//! diagnostic.

use super::{input, Format};
use crate::semantic::{self, loader::LoadOptions};
use crate::source::SourceMap;
use std::path::PathBuf;

pub(super) fn run(files: &[PathBuf], format: Format, options: &LoadOptions) -> i32 {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    for path in files {
        let analysis = semantic::analyze_file(&mut sources, path, options.clone());
        diags.extend(analysis.diagnostics);
    }
    input::emit(&diags, &sources, format);
    i32::from(diags.iter().any(|d| d.is_error()))
}
