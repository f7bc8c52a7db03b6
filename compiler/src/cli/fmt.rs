//! `saferc fmt`: format files in place (standard input, `-`, to standard
//! output), or `--check` them.

use super::{input, Format};
use crate::source::SourceMap;
use crate::{fmt, syntax};
use std::path::PathBuf;

pub(super) fn run(files: &[PathBuf], check: bool) -> i32 {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    let mut unformatted = Vec::new();
    for path in files {
        let id = match input::read(&mut sources, path) {
            Ok(id) => id,
            Err(d) => {
                diags.push(*d);
                continue;
            }
        };
        let (text, mark) = sources
            .get(id)
            .map(|f| (f.text.clone(), f.byte_order_mark))
            .unwrap_or_default();
        let module = match syntax::parse(id, &text) {
            Ok(m) => m,
            Err(d) => {
                diags.push(*d);
                continue;
            }
        };
        // The file's byte-order mark and line ends are kept.
        let style = fmt::FileStyle::of(&text, mark);
        let formatted = style.apply(&fmt::format_module(&module, &text));
        let stdin = path.as_os_str() == "-";
        if stdin && !check {
            print!("{formatted}");
            continue;
        }
        let original = match mark {
            true => format!("\u{feff}{text}"),
            false => text.clone(),
        };
        if formatted == original {
            continue;
        }
        if check {
            unformatted.push(match stdin {
                true => "<standard input>".to_string(),
                false => path.display().to_string(),
            });
        } else if let Err(e) = input::write_atomically(path, &formatted) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return 1;
        }
    }
    input::emit(&diags, &sources, Format::Human);
    for name in &unformatted {
        println!("would reformat {name}");
    }
    i32::from(!diags.is_empty() || !unformatted.is_empty())
}
