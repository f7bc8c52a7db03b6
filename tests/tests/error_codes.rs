//! The code registry and its docs agree: every code has a page (the build
//! enforces it, this test checks the other direction), every page belongs to
//! a code, and every syntax code is produced by a corpus case.

#![allow(clippy::panic)]

use safer_tests::repo_root;
use saferc::Code;

#[test]
fn every_docs_page_belongs_to_a_code() {
    let dir = repo_root().join("docs/errors");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(code) = name.strip_suffix(".md") else {
            continue;
        };
        if code == "README" {
            continue;
        }
        assert!(
            Code::parse(code).is_some(),
            "docs/errors/{name} documents no known code"
        );
    }
}

#[test]
fn every_page_starts_with_its_code_and_title() {
    for code in Code::ALL {
        let page = saferc::diagnostic::codes::page(*code);
        let heading = format!("# {}: {}", code.as_str(), code.title());
        assert!(
            page.starts_with(&heading),
            "{} should start with `{heading}`",
            code.doc_path()
        );
    }
}

#[test]
fn every_syntax_code_has_a_corpus_case() {
    let snaps = repo_root().join("tests/tests/snapshots");
    let mut all = String::new();
    for entry in std::fs::read_dir(&snaps).into_iter().flatten().flatten() {
        all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    for code in Code::ALL.iter().filter(|c| c.as_str().starts_with("E01")) {
        // E0106 (8 MiB files) and E0111 (unreadable files) are covered by the
        // robustness and CLI tests instead of corpus files.
        if matches!(code, Code::E0106 | Code::E0111) {
            continue;
        }
        assert!(
            all.contains(&format!("\n{}\n", code.as_str())),
            "no corpus case produces {code}"
        );
    }
}
