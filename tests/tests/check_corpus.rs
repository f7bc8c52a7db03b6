//! Per-stage snapshots: for every shipped `.safer` file (examples, standard
//! library, pipelines) and every good check case, the resolved program
//! (`hir@...`), the graph text (`graph@...`) and the execution plan
//! `saferc run` hands to the runtime (`plan@...`); for every
//! `tests/cases/check/errors/*.safer`, the source with the rendered
//! diagnostics, which must include the code the file is named after, and
//! the source as the diagnostics' fixes leave it, when they have any.

#![allow(clippy::panic)]

use safer_tests::{relative, render_plain, repo_root, source_and_error};
use saferc::diagnostic::fix::{single_fixes, with_fixes};
use saferc::semantic::{self, display, loader::LoadOptions};
use saferc::SourceMap;
use std::path::Path;

fn stages(path: &Path) {
    let mut sources = SourceMap::new();
    let options = LoadOptions {
        root: Some(repo_root()),
        allow_outside_root: false,
        ..Default::default()
    };
    let analysis = semantic::analyze_file(&mut sources, path, options);
    let rendered = render_plain(&analysis.diagnostics, &sources);
    assert!(
        analysis.diagnostics.is_empty(),
        "{} should check clean:\n{rendered}",
        relative(path)
    );
    let Some(program) = analysis.program.map(|p| p.hashed()) else {
        panic!("no program for {}", relative(path))
    };
    let graph = match saferc::graph::lower(&program) {
        Ok(g) => g,
        Err(d) => panic!(
            "{} does not lower:\n{}",
            relative(path),
            render_plain(&d, &sources)
        ),
    };
    let name = relative(path).replace('/', "__");
    insta::with_settings!({
        input_file => path,
        description => relative(path),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        // Module names of files are paths: show them relative to the repository.
        let root = format!("{}/", repo_root().display());
        insta::assert_snapshot!(format!("hir@{name}"), display::program(&program).replace(&root, ""));
        insta::assert_snapshot!(format!("graph@{name}"), safer_ir::to_text(&graph).replace(&root, ""));
        let plan = serde_json::to_string_pretty(&saferc::plan::lower(&program)).unwrap_or_default();
        insta::assert_snapshot!(format!("plan@{name}"), plan.replace(&root, ""));
    });
}

#[test]
fn shipped_files_check_and_lower() {
    let mut count = 0;
    for dir in ["examples", "stdlib", "pipelines"] {
        for path in safer_tests::safer_files_under(&repo_root().join(dir)) {
            stages(&path);
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} shipped files");
}

#[test]
fn good_check_cases_lower() {
    insta::glob!("../cases/check", "*.safer", stages);
}

#[test]
fn check_errors() {
    insta::glob!("../cases/check/errors", "*.safer", |path| {
        let mut sources = SourceMap::new();
        let options = LoadOptions {
            root: Some(repo_root().join("tests/cases/check")),
            allow_outside_root: false,
            ..Default::default()
        };
        let analysis = semantic::analyze_file(&mut sources, path, options);
        let mut diags = analysis.diagnostics.clone();
        if !analysis.has_errors() {
            if let Some(program) = &analysis.program {
                if let Err(more) = saferc::graph::lower(program) {
                    diags.extend(more);
                }
            }
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let code = stem.split('_').next().unwrap_or("");
        assert!(
            diags.iter().any(|d| d.code.as_str() == code),
            "{} should produce {code}, got: {:?}",
            relative(path),
            diags.iter().map(|d| d.code.as_str()).collect::<Vec<_>>()
        );
        let rendered = render_plain(&diags, &sources);
        let root = repo_root().display().to_string();
        let rendered = rendered
            .replace(&format!("{root}/"), "")
            .replace(&root, "<repo>");
        let shown = std::fs::read_to_string(path).unwrap_or_default();
        // What `saferc check --fix` and the editor's quick fixes make of it.
        let fixed = sources.find_path(path).and_then(|id| {
            let text = &sources.get(id)?.text;
            let (fixed, count) = with_fixes(text, single_fixes(&diags, id));
            (count > 0).then(|| format!("\n----- FIXED\n{fixed}"))
        });
        insta::with_settings!({
            input_file => path,
            description => relative(path),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(source_and_error(&shown, &rendered) + &fixed.unwrap_or_default());
        });
    });
}

/// The hashed program of the file at `path`, which must check clean
/// (outside any project).
fn clean_program(path: &Path) -> saferc::semantic::hir::Program {
    let mut sources = SourceMap::new();
    let analysis = semantic::analyze_file(&mut sources, path, LoadOptions::default());
    assert!(
        analysis.diagnostics.is_empty(),
        "{}",
        render_plain(&analysis.diagnostics, &sources)
    );
    let Some(program) = analysis.program.map(|p| p.hashed()) else {
        panic!("no program for {}", relative(path))
    };
    program
}

/// Built-in scorers read their arguments by name: a positional argument
/// lowers to the parameter it binds (`label_match("kind")` reads `kind`,
/// not the default `label`).
#[test]
fn positional_arguments_of_built_in_scorers_lower_to_named_ones() {
    let dir = std::env::temp_dir().join(format!("saferc-positional-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("p.safer");
    std::fs::write(
        &path,
        "model policy { arch = tiny_vlm, weights = \"w\" }\n\
         dataset d {\n  source = jsonl(\"d.jsonl\")\n  split { train = 1.0 }\n}\n\
         rubric r {\n  criterion verdict weight 1 { scorer = label_match(\"kind\") }\n}\n\
         eval e { model = policy, data = d.train, rubric = r }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let program = clean_program(&path);
    let plan = serde_json::to_value(saferc::plan::lower(&program)).unwrap_or_default();
    let scorer = plan
        .pointer("/rubrics")
        .and_then(|r| r.as_object())
        .and_then(|r| r.values().next())
        .and_then(|r| r.pointer("/criteria/0/scorer"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        scorer,
        serde_json::json!({"kind": "call", "func": "label_match", "args": [], "named": {"field": {"kind": "const", "value": "kind"}}}),
        "{plan}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rubric's hash (what a `safer.toml` pin compares) covers the bodies of
/// the scorers it calls: flipping a body changes what the rubric rewards,
/// so it changes the hash; an unrelated scorer does not.
#[test]
fn a_rubric_hash_covers_the_bodies_of_its_scorers() {
    let dir = std::env::temp_dir().join(format!("saferc-rubric-hash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let hash_of_r = |body: &str, other: &str| {
        let path = dir.join("p.safer");
        std::fs::write(
            &path,
            format!(
                "scorer strict() = {body}\nscorer unused() = {other}\n\
                 rubric r {{\n  criterion c weight 1 {{ scorer = strict() }}\n}}\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        clean_program(&path)
            .decls
            .iter()
            .find(|d| d.name == "r")
            .map(|d| d.hash.clone())
            .unwrap_or_default()
    };
    let first = hash_of_r("if refusal() > 0.5 { 1 } else { 0 }", "1");
    assert_ne!(first, hash_of_r("if refusal() > 0.5 { 0 } else { 1 }", "1"));
    assert_eq!(first, hash_of_r("if refusal() > 0.5 { 1 } else { 0 }", "0"));
}
