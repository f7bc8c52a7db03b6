//! A large file is parsed in pieces on several threads; the result must be
//! exactly what one serial parse gives: the same tree with the same spans,
//! or the same first diagnostic, wherever the file is cut or broken.

#![allow(clippy::panic)]

use proptest::prelude::*;
use safer_tests::all_valid_safer_files;
use saferc::span::SourceId;
use saferc::syntax::{self, lexer};

/// Every shipped valid file, concatenated until the text is large enough to
/// be cut into many pieces (about 400 KiB).
fn big_file() -> String {
    let files: Vec<String> = all_valid_safer_files()
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let mut text = String::new();
    while text.len() < 400 * 1024 {
        for f in &files {
            text.push_str(f);
            text.push('\n');
        }
    }
    text
}

fn assert_same_as_serial(text: &str) {
    let parallel = syntax::parse(SourceId(0), text);
    let serial = syntax::parse_serial(SourceId(0), text);
    match (&parallel, &serial) {
        (Ok(a), Ok(b)) => assert!(a == b, "the parallel tree differs from the serial one"),
        (Err(a), Err(b)) => assert_eq!(a, b, "the parallel diagnostic differs"),
        _ => panic!(
            "parallel {:?} but serial {:?}",
            parallel.as_ref().map(|_| ()).map_err(|d| &d.message),
            serial.as_ref().map(|_| ()).map_err(|d| &d.message)
        ),
    }
}

#[test]
fn a_large_valid_file_parses_to_the_serial_tree() {
    let text = big_file();
    let scanned = lexer::scan(SourceId(0), &text).unwrap_or_else(|d| panic!("{}", d.message));
    assert!(
        scanned.item_starts.len() > 100,
        "the file should offer many cut points, found {}",
        scanned.item_starts.len()
    );
    let module = syntax::parse(SourceId(0), &text).unwrap_or_else(|d| panic!("{}", d.message));
    assert!(module.items.len() > 100);
    assert_same_as_serial(&text);
}

#[test]
fn a_syntax_error_late_in_a_large_file_is_reported_as_in_a_serial_parse() {
    let mut text = big_file();
    text.push_str("\nmodel broken {\n  lr = \n}\n");
    let err = syntax::parse(SourceId(0), &text)
        .err()
        .unwrap_or_else(|| panic!("a missing value must not parse"));
    assert!(err.code.as_str().starts_with("E01"), "{}", err.code);
    assert_same_as_serial(&text);
}

#[test]
fn a_syntax_error_wins_over_an_earlier_build_error_as_in_a_serial_parse() {
    // An invalid number near the start (a build error) and a syntax error at
    // the end: pest rejects the file before the builder runs, so the syntax
    // error is the one reported, cut or not.
    let mut text = String::from("model early {\n  lr = 1e999999\n}\n");
    text.push_str(&big_file());
    text.push_str("\nmodel late {\n  lr = \n}\n");
    assert_same_as_serial(&text);
    let mut only_build_error = String::from("model early {\n  lr = 1e999999\n}\n");
    only_build_error.push_str(&big_file());
    let err = syntax::parse(SourceId(0), &only_build_error)
        .err()
        .unwrap_or_else(|| panic!("an out-of-range number must not build"));
    assert_eq!(err.code.as_str(), "E0108");
    assert_same_as_serial(&only_build_error);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Cut the file anywhere, or overwrite a few bytes anywhere: the
    /// parallel parse agrees with the serial one.
    #[test]
    fn any_cut_or_mutation_of_a_large_file_agrees_with_a_serial_parse(
        cut in 0.0f64..1.0,
        at in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..4),
    ) {
        let text = big_file();
        let mut bytes = text.into_bytes();
        for (pos, byte) in at {
            let i = ((bytes.len() - 1) as f64 * pos) as usize;
            bytes[i] = byte;
        }
        bytes.truncate((bytes.len() as f64 * cut) as usize);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            assert_same_as_serial(text);
        }
    }
}
