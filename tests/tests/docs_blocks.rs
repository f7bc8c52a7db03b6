//! Every ` ```safer ` block in `docs/` and `README.md` compiles (parse and
//! semantic checks, `std/` imports available); ` ```safer syntax ` blocks
//! (fragments that name things declared elsewhere) must parse; blocks marked
//! ` ```safer error ` must fail; ` ```safer no-test ` blocks are skipped.

#![allow(clippy::panic)]

use safer_tests::repo_root;
use saferc::span::SourceId;
use saferc::syntax;
use std::path::{Path, PathBuf};

struct CodeBlock {
    file: String,
    line: usize,
    tags: Vec<String>,
    code: String,
}

fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut stack = vec![root.join("docs")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn blocks(path: &Path) -> Vec<CodeBlock> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let file = path
        .strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut current: Option<CodeBlock> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut tags = info.split_whitespace().map(str::to_string);
                    if tags.next().as_deref() == Some("safer") {
                        current = Some(CodeBlock {
                            file: file.clone(),
                            line: i + 1,
                            tags: tags.collect(),
                            code: String::new(),
                        });
                    } else if !info.trim().is_empty() || trimmed == "```" {
                        current = Some(CodeBlock {
                            file: file.clone(),
                            line: i + 1,
                            tags: vec!["other".into()],
                            code: String::new(),
                        });
                    }
                }
            }
            Some(block) => {
                if trimmed.starts_with("```") {
                    if let Some(done) = current.take() {
                        if !done.tags.iter().any(|t| t == "other") {
                            out.push(done);
                        }
                    }
                } else {
                    block.code.push_str(line);
                    block.code.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn every_safer_block_in_the_docs_compiles() {
    let mut checked = 0;
    for path in markdown_files() {
        for block in blocks(&path) {
            if block.tags.iter().any(|t| t == "no-test") {
                continue;
            }
            let expect_error = block.tags.iter().any(|t| t == "error");
            let syntax_only = block.tags.iter().any(|t| t == "syntax");
            let result: Result<(), String> = if syntax_only {
                syntax::parse(SourceId(0), &block.code)
                    .map(|_| ())
                    .map_err(|d| format!("[{}] {}", d.code, d.message))
            } else {
                let mut sources = saferc::SourceMap::new();
                let analysis = saferc::semantic::analyze_text(
                    &mut sources,
                    "block.safer",
                    &block.code,
                    None,
                    saferc::semantic::loader::LoadOptions::default(),
                );
                if analysis.has_errors() {
                    Err(safer_tests::render_plain(&analysis.diagnostics, &sources))
                } else {
                    Ok(())
                }
            };
            match (result, expect_error) {
                (Ok(_), false) | (Err(_), true) => checked += 1,
                (Err(d), false) => panic!(
                    "{}:{}: block does not compile:\n{d}\n{}",
                    block.file, block.line, block.code
                ),
                (Ok(_), true) => panic!(
                    "{}:{}: block marked `error` compiles\n{}",
                    block.file, block.line, block.code
                ),
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} blocks found: is the docs folder there?"
    );
}
