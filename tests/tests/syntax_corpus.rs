//! The syntax corpus: every `tests/cases/syntax/*.safer` parses and its AST
//! dump is snapshotted; every `tests/cases/syntax/errors/*.safer` fails and
//! its snapshot is the source with the rendered diagnostic.

#![allow(clippy::panic)]

use safer_tests::{relative, render_plain, source_and_error};
use saferc::syntax::{self, dump};
use saferc::SourceMap;

#[test]
fn parse() {
    insta::glob!("../cases/syntax", "*.safer", |path| {
        let mut sources = SourceMap::new();
        let id = match sources.load(path) {
            Ok(id) => id,
            Err(d) => panic!("{}", render_plain(&[*d], &sources)),
        };
        let text = sources.get(id).map(|f| f.text.clone()).unwrap_or_default();
        match syntax::parse(id, &text) {
            Ok(module) => insta::with_settings!({
                input_file => path,
                description => relative(path),
                prepend_module_to_snapshot => false,
            }, {
                insta::assert_snapshot!(dump::module(&module));
            }),
            Err(d) => panic!(
                "{} should parse:\n{}",
                relative(path),
                render_plain(&[*d], &sources)
            ),
        }
    });
}

#[test]
fn syntax_error() {
    insta::glob!("../cases/syntax/errors", "*.safer", |path| {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut sources = SourceMap::new();
        let result = sources.load(path).and_then(|id| {
            let text = sources.get(id).map(|f| f.text.clone()).unwrap_or_default();
            syntax::parse(id, &text).map(|_| ())
        });
        let Err(diag) = result else {
            panic!("{} should not parse", relative(path));
        };
        let shown = String::from_utf8_lossy(&bytes);
        let mut sources_for_render = sources.clone();
        // Render names relative to the repository, whatever the cwd.
        let _ = &mut sources_for_render;
        let rendered = render_plain(&[*diag], &sources);
        let rendered = rendered.replace(&path.display().to_string(), &relative(path));
        insta::with_settings!({
            input_file => path,
            description => relative(path),
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!(source_and_error(&shown, &rendered));
        });
    });
}
