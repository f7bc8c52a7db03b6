//! Bad input never panics, hangs or overflows the stack: the parser gives a
//! coded error or a tree for every prefix of every shipped file, thousands
//! of random mutations, binary junk, huge and deeply nested inputs.
//!
//! These tests run on the default test thread (2 MiB of stack), which is
//! the point: nesting limits must hold there.

#![allow(clippy::panic)]

use proptest::prelude::*;
use safer_tests::{all_valid_safer_files, relative};
use saferc::span::SourceId;
use saferc::{fmt, syntax, Code};

/// Parses bytes; on success the formatter must also succeed and its output
/// must parse again.
fn parse_never_panics(bytes: &[u8]) -> Result<(), Code> {
    match syntax::parse_bytes(SourceId(0), bytes) {
        Ok(module) => {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            let formatted = fmt::format_module(&module, text);
            if let Err(d) = syntax::parse(SourceId(0), &formatted) {
                panic!("formatted output does not parse ({}): {}\n--- input\n{text}\n--- output\n{formatted}", d.code, d.message);
            }
            Ok(())
        }
        Err(d) => {
            assert!(
                d.code.as_str().starts_with("E01"),
                "unexpected code {}",
                d.code
            );
            assert!(
                !d.message.contains("internal compiler error"),
                "{}",
                d.message
            );
            assert!(
                !d.message.contains("Rule::") && !d.message.contains("_stmt"),
                "rule name leaked: {}",
                d.message
            );
            Err(d.code)
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    all_valid_safer_files()
        .into_iter()
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

#[test]
fn every_prefix_of_every_valid_file() {
    for path in all_valid_safer_files() {
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            parse_never_panics(&bytes).is_ok(),
            "{} must parse",
            relative(&path)
        );
        for cut in 0..bytes.len() {
            let _ = parse_never_panics(&bytes[..cut]);
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let n = 10_000;
    let cases = [
        format!("rubric r {{ total = {}1{} }}", "(".repeat(n), ")".repeat(n)),
        format!("rubric r {{ total = {}{} }}", "[".repeat(n), "]".repeat(n)),
        format!("train t {}{}", "a { ".repeat(n), "}".repeat(n)),
        format!("rubric r {{ total = {}1 }}", "if a { 1 } else ".repeat(n)),
        format!(
            "rubric r {{ total = {}x {} }}",
            "if ".repeat(n),
            "{ 1 } else { 2 }".repeat(n)
        ),
        format!("rubric r {{ total = {}x }}", "not ".repeat(n)),
        format!("rubric r {{ total = {}x }}", "-".repeat(n)),
        format!("rubric r {{ total = {} }}", vec!["1"; 100_000].join(" + ")),
        format!("rubric r {{ total = f{} }}", "(1)".repeat(n)),
        format!("rubric r {{ total = a{} }}", ".b".repeat(n)),
        "[".repeat(n),
        "{".repeat(n),
        "}".repeat(n),
    ];
    for case in cases {
        let result = parse_never_panics(case.as_bytes());
        assert!(
            matches!(
                result,
                Err(Code::E0105 | Code::E0103 | Code::E0104 | Code::E0101 | Code::E0109)
            ),
            "{:?} for input starting {:?}",
            result,
            &case[..40.min(case.len())]
        );
    }
}

#[test]
fn binary_junk_and_invalid_utf8() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut junk = vec![0u8; 1 << 20];
    for b in junk.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = (state >> 32) as u8;
    }
    assert_eq!(parse_never_panics(&junk), Err(Code::E0100));
    let ascii: Vec<u8> = junk.iter().map(|b| b & 0x7f).collect();
    assert!(parse_never_panics(&ascii).is_err());
    assert_eq!(parse_never_panics(b"prompt p = \"\xff\""), Err(Code::E0100));
    assert_eq!(
        parse_never_panics(b"\xef\xbb\xbfmodel m {}"),
        Ok(()),
        "a byte-order mark at the start is skipped (as rustc does)"
    );
    assert_eq!(
        parse_never_panics(b"model m {}\n\xef\xbb\xbf"),
        Err(Code::E0101),
        "one anywhere else is a stray character"
    );
    assert_eq!(parse_never_panics(b"\0"), Err(Code::E0101));
}

#[test]
fn huge_inputs_are_bounded() {
    let big = vec![b' '; 50 * 1024 * 1024];
    assert_eq!(parse_never_panics(&big), Err(Code::E0106));
    // A large valid file (about 2 MB) parses.
    let block = "model m { arch = tiny_vlm, weights = \"w\" }\n";
    let valid = block.repeat(2 * 1024 * 1024 / block.len());
    assert!(parse_never_panics(valid.as_bytes()).is_ok());
    // One very long line.
    let long = format!("prompt p = \"{}\"", "x".repeat(4 * 1024 * 1024));
    assert!(parse_never_panics(long.as_bytes()).is_ok());
}

/// One edit of a file.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Replace(usize, u8),
}

const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "\"\"\"",
    "#",
    "##",
    "=",
    "==",
    "..",
    ".",
    ",",
    "\n",
    " ",
    "if",
    "else",
    "not",
    "in",
    "and",
    "-",
    "+",
    "16 prompts",
    "model",
    "use",
    "criterion",
    "penalty",
    "when",
    "weight",
    "\\",
    "\\u{",
    "1e",
    "1e999",
    "\u{2603}",
    "\t",
    "x",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), prop::sample::select(FRAGMENTS))
            .prop_map(|(at, f)| Mutation::Insert(at, f.as_bytes().to_vec())),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Mutation::Insert(at, frag) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, frag.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    let copy: Vec<u8> = bytes[at..end].to_vec();
                    bytes.splice(end..end, copy);
                }
            }
            Mutation::Replace(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = *b;
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_mutations_never_panic(file in 0usize..1000, edits in prop::collection::vec(mutation(), 1..6)) {
        let corpus = corpus();
        let original = corpus[file % corpus.len()].clone();
        let mutated = apply(original, &edits);
        let _ = parse_never_panics(&mutated);
    }
}

/// A diagnostic far to the right of a long line is named by its place, not
/// drawn: miette pads to the label's column with a `u16` format width and
/// panics past 65,535 columns, and it draws a tab 4 columns wide, so 16,384
/// tabs (16 KiB) already reach that.
#[test]
fn diagnostics_on_very_wide_lines_render_without_panicking() {
    use saferc::diagnostic::render::{render_all, RenderOptions};
    for indent in ["\t".repeat(16_384), " ".repeat(70_000), "\t".repeat(20_000)] {
        let text = format!("rollout r {{{indent}temprature = 1 }}\n");
        let mut sources = saferc::SourceMap::new();
        let diags = saferc::semantic::analyze_text(
            &mut sources,
            "wide.safer",
            &text,
            None,
            Default::default(),
        )
        .diagnostics;
        assert!(!diags.is_empty());
        let shown = render_all(&diags, &sources, RenderOptions::plain());
        assert!(shown.contains("the line is too long to show"), "{shown}");
    }
}

/// A lone `\r` ends a line for saferc (the header's `file:line:column`) and
/// now for the snippet too: miette counted the whole file as one line and
/// numbered the snippet's lines apart from the header.
#[test]
fn snippets_of_files_with_lone_carriage_returns_number_lines_as_the_header() {
    use saferc::diagnostic::render::{render_all, RenderOptions};
    let text = "model m {\r  arch = tiny_vlm\r  weights = \"w\"\r  bogus = 3\r}\r";
    let mut sources = saferc::SourceMap::new();
    let diags =
        saferc::semantic::analyze_text(&mut sources, "cr.safer", text, None, Default::default())
            .diagnostics;
    let shown = render_all(&diags, &sources, RenderOptions::plain());
    assert!(shown.contains("cr.safer:4:3]"), "{shown}");
    assert!(shown.contains(" 4 │   bogus = 3\n"), "{shown}");
    assert!(shown.contains(" 3 │   weights = \"w\"\n"), "{shown}");
}
