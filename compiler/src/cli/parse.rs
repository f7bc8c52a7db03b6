//! `saferc parse`: print the syntax tree of one file.

use super::{input, Format};
use crate::source::SourceMap;
use crate::syntax;
use std::path::Path;

pub(super) fn run(file: &Path, json: bool) -> i32 {
    let mut sources = SourceMap::new();
    let format = if json { Format::Json } else { Format::Human };
    let id = match input::read(&mut sources, file) {
        Ok(id) => id,
        Err(d) => {
            input::emit(&[*d], &sources, format);
            return 1;
        }
    };
    let text = sources.get(id).map(|f| f.text.clone()).unwrap_or_default();
    match syntax::parse(id, &text) {
        Ok(module) => {
            if json {
                match serde_json::to_string_pretty(&module) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot serialise the syntax tree: {e}");
                        return 1;
                    }
                }
            } else {
                print!("{}", syntax::dump::module(&module));
            }
            0
        }
        Err(d) => {
            input::emit(&[*d], &sources, format);
            1
        }
    }
}
