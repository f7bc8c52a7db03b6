//! Projects: `safer.toml` diagnostics (snapshots of the rendered TOML
//! errors), `saferc new` output that `check` accepts, two projects sharing
//! one rubric through import roots, named judge endpoints, and the pin
//! workflow (pin, change the shared rubric, E0226, re-pin).

#![allow(clippy::panic)]

use safer_tests::{relative, render_plain, repo_root, source_and_error};
use saferc::project::{self, manifest, pins};
use saferc::semantic;
use saferc::{Code, SourceFile, SourceId, SourceMap};
use std::path::{Path, PathBuf};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saferc-projects-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Checks a file the way `saferc check` does (project discovery included).
fn check(file: &Path) -> (Vec<saferc::Diagnostic>, SourceMap) {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    let (options, _) = project::options_around(&mut sources, file, false, &mut diags);
    let analysis = semantic::analyze_file(&mut sources, file, options);
    diags.extend(analysis.diagnostics);
    (diags, sources)
}

#[test]
fn manifest_errors() {
    insta::glob!("../cases/manifest/errors", "*.toml", |path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut sources = SourceMap::new();
        let id = sources.add(SourceFile::new("safer.toml", None, text.clone()));
        let root = repo_root().join("tests/cases/manifest");
        let Err(diags) = manifest::parse(id, &text, &root) else {
            panic!("{} should be rejected", relative(path));
        };
        let code = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .split('_')
            .next()
            .unwrap_or("");
        assert!(
            diags.iter().any(|d| d.code.as_str() == code),
            "{}: {:?}",
            relative(path),
            diags
        );
        insta::with_settings!({
            input_file => path,
            description => relative(path),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(source_and_error(&text, &render_plain(&diags, &sources)));
        });
    });
}

#[test]
fn new_project_checks_clean_from_any_subfolder() {
    let dir = temp("new").join("demo");
    project::new::create(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (diags, sources) = check(&dir.join("pipeline.safer"));
    assert!(diags.is_empty(), "{}", render_plain(&diags, &sources));
    // The project is found from the rubric's folder too.
    assert_eq!(
        project::discover(&dir.join("rubrics")),
        std::fs::canonicalize(&dir).ok()
    );
    let (diags, _) = check(&dir.join("rubrics/house.safer"));
    assert!(diags.is_empty());
    assert!(
        project::new::create(&dir).is_err(),
        "an existing project is not overwritten"
    );
}

/// A folder name with quotes and backslashes still makes a valid manifest.
#[test]
fn new_project_escapes_its_name_in_the_manifest() {
    let dir = temp("new-quoted").join("q\"uote\\x");
    project::new::create(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (diags, sources) = check(&dir.join("pipeline.safer"));
    assert!(diags.is_empty(), "{}", render_plain(&diags, &sources));
    let mut sources = SourceMap::new();
    let manifest = manifest::load(&mut sources, &dir)
        .unwrap_or_else(|d| panic!("{}", render_plain(&d, &sources)));
    assert_eq!(manifest.project.name, "q\"uote\\x");
}

/// A named endpoint's `concurrency`, `timeout` and `max_tokens` must make
/// sense.
#[test]
fn endpoint_concurrency_and_timeout_are_checked() {
    let root = temp("endpoint-values");
    for (values, wanted) in [
        ("concurrency = 0", "`concurrency = 0`"),
        ("timeout = -1", "`timeout = -1`"),
        ("timeout = inf", "`timeout = inf`"),
        ("max_tokens = 0", "`max_tokens = 0`"),
    ] {
        let text = format!(
            "[project]\nname = \"p\"\n\n[judges.g]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\n{values}\n"
        );
        let diags = manifest::parse(SourceId(0), &text, &root)
            .err()
            .unwrap_or_default();
        assert!(
            diags
                .iter()
                .any(|d| d.code == Code::E0222 && d.message.contains(wanted)),
            "{values}: {diags:?}"
        );
    }
}

#[test]
fn two_projects_share_one_rubric_and_pins_catch_changes() {
    let dir = temp("share");
    copy_dir(&repo_root().join("tests/cases/projects"), &dir);
    for p in ["alpha", "beta"] {
        let (diags, sources) = check(&dir.join(p).join("pipeline.safer"));
        assert!(diags.is_empty(), "{p}: {}", render_plain(&diags, &sources));
    }
    // Pin the shared rubric in alpha (what `saferc pin` does).
    let alpha = dir.join("alpha");
    let mut sources = SourceMap::new();
    let proj = project::load_around(&mut sources, &alpha)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no project"));
    let analysis = semantic::analyze_file(
        &mut sources,
        &alpha.join("pipeline.safer"),
        proj.load_options(false),
    );
    let program = analysis
        .program
        .unwrap_or_else(|| panic!("no program"))
        .hashed();
    let pinned = pins::imported_rubrics(&program);
    // Keyed by the path relative to the project's folder, so that the pin
    // holds wherever the tree is cloned or moved.
    assert!(
        pinned.contains_key("../shared/safety_house::shared_rubric"),
        "{pinned:?}"
    );
    let manifest_path = alpha.join("safer.toml");
    let text = std::fs::read_to_string(&manifest_path).unwrap_or_default();
    let rewritten = pins::rewrite(&text, &pinned).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&manifest_path, rewritten).unwrap_or_else(|e| panic!("{e}"));
    let (diags, _) = check(&alpha.join("pipeline.safer"));
    assert!(diags.is_empty(), "pinned and unchanged: clean");

    // Someone changes the shared rubric's weights.
    let shared = dir.join("shared/safety_house.safer");
    let rubric = std::fs::read_to_string(&shared).unwrap_or_default();
    std::fs::write(&shared, rubric.replace("weight 0.7", "weight 0.5"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (diags, sources) = check(&alpha.join("pipeline.safer"));
    assert!(
        diags.iter().any(|d| d.code == Code::E0226),
        "{}",
        render_plain(&diags, &sources)
    );
    // beta has no pins: it follows the shared file.
    let (diags, _) = check(&dir.join("beta/pipeline.safer"));
    assert!(diags.is_empty());
    // A comment-only change does not change the hash.
    std::fs::write(
        &shared,
        rubric.replace("## A rubric", "## (edited) A rubric"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (diags, _) = check(&alpha.join("pipeline.safer"));
    assert!(diags.is_empty(), "comments are not part of the hash");

    // The whole tree moved elsewhere (a clone): the pin still holds, and
    // still catches a change.
    let moved = temp("share-moved");
    copy_dir(&dir, &moved);
    let (diags, _) = check(&moved.join("alpha/pipeline.safer"));
    assert!(diags.is_empty(), "the pin holds after a move");
    let shared_moved = moved.join("shared/safety_house.safer");
    std::fs::write(&shared_moved, rubric.replace("weight 0.7", "weight 0.01"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (diags, _) = check(&moved.join("alpha/pipeline.safer"));
    assert!(
        diags.iter().any(|d| d.code == Code::E0226),
        "a moved tree's pin still catches a change"
    );
}

#[test]
fn named_endpoints_come_from_the_manifest() {
    let dir = temp("named");
    copy_dir(&repo_root().join("tests/cases/projects"), &dir);
    let file = dir.join("alpha/pipeline.safer");
    edit(&file, "named = \"grm\"", "named = \"gmr\"");
    let (diags, _) = check(&file);
    let d = diags
        .iter()
        .find(|d| d.code == Code::E0225)
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(d.help.as_deref(), Some("did you mean `grm`?"));
    // Without a project, a named endpoint is an error too.
    let lone = temp("lone").join("p.safer");
    std::fs::write(&lone, "judge j { kind = http, named = \"grm\" }\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (diags, _) = check(&lone);
    assert!(diags.iter().any(|d| d.code == Code::E0225));
    // A `safer.toml` that does not load is reported once, as itself: the
    // endpoint is not also said to lack a project.
    let broken = temp("broken");
    std::fs::write(
        broken.join("safer.toml"),
        "[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let file = broken.join("p.safer");
    std::fs::write(&file, "judge j { kind = http, named = \"grm\" }\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (diags, _) = check(&file);
    let codes: Vec<Code> = diags.iter().map(|d| d.code).collect();
    assert!(codes.contains(&Code::E0222), "{diags:?}");
    assert!(!codes.contains(&Code::E0225), "{diags:?}");
}

/// Replaces `from` with `to` in the file at `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
}

/// The plan of `file`, which must compile.
fn plan_of(file: &Path) -> safer_ir::plan::Plan {
    saferc::cli::compile_plan(file, &saferc::cli::ImportArgs::default())
        .unwrap_or_else(|| panic!("{} does not compile", file.display()))
}

#[test]
fn a_named_endpoint_s_settings_reach_the_plan() {
    let dir = temp("named-plan");
    copy_dir(&repo_root().join("tests/cases/projects"), &dir);
    let manifest = dir.join("alpha/safer.toml");
    edit(
        &manifest,
        "api_key_env = \"GRM_API_KEY\"",
        "api_key_env = \"GRM_API_KEY\"\nca_file = \"certs/ca.pem\"\nconcurrency = 16\ntimeout = 120\nimages = false\nmax_tokens = 1024",
    );
    // A rubric that asks the judge, so that the plan holds it.
    let pipeline = dir.join("alpha/pipeline.safer");
    edit(
        &pipeline,
        "judge remote { kind = http, named = \"grm\" }\n",
        "judge remote { kind = http, named = \"grm\" }\n\
         rubric graded(judge = remote) { criterion helpful weight 1 \"Answers.\" }\n\
         eval e { model = policy, data = prompts.eval, rubric = graded }\n",
    );
    let plan = plan_of(&pipeline);
    let judge = plan
        .judges
        .values()
        .find(|j| j.named.as_deref() == Some("grm"))
        .unwrap_or_else(|| panic!("no judge named grm in {:?}", plan.judges));
    assert_eq!(judge.endpoint.as_deref(), Some("http://localhost:8000/v1"));
    assert_eq!(judge.model_name.as_deref(), Some("GRM-RL-7B"));
    assert_eq!(judge.api_key_env.as_deref(), Some("GRM_API_KEY"));
    assert_eq!((judge.concurrency, judge.timeout_s), (16, 120.0));
    // The endpoint says whether it takes images and how long it may reply.
    assert_eq!((judge.images, judge.max_tokens), (false, Some(1024)));
    // The CA file is relative to the project's folder.
    let ca = PathBuf::from(judge.ca_file.as_deref().unwrap_or_default());
    assert!(ca.ends_with("alpha/certs/ca.pem"), "{}", ca.display());
    assert!(ca.is_absolute(), "{}", ca.display());
    // An endpoint without a CA file keeps the judge's own.
    edit(&manifest, "ca_file = \"certs/ca.pem\"\n", "");
    edit(
        &pipeline,
        "named = \"grm\" }",
        "named = \"grm\", ca_file = \"own.pem\" }",
    );
    let own = plan_of(&pipeline)
        .judges
        .values()
        .find_map(|j| j.ca_file.clone())
        .unwrap_or_default();
    assert!(own.ends_with("alpha/own.pem"), "{own}");
}

#[test]
fn manifest_problems_stop_the_check() {
    let dir = temp("badmanifest");
    std::fs::write(dir.join("safer.toml"), "[project]\nname = \"x\"\nfoo = 1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("p.safer"), "judge j { kind = rules }\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (diags, sources) = check(&dir.join("p.safer"));
    assert!(
        diags.iter().any(|d| d.code == Code::E0221),
        "{}",
        render_plain(&diags, &sources)
    );
}

/// An endpoint's `api_key_env` that is no variable's name (a pasted key)
/// is refused, without the value in the message.
#[test]
fn an_endpoint_s_key_variable_must_be_a_name() {
    let dir = temp("keyvar");
    std::fs::write(
        dir.join("safer.toml"),
        "[project]\nname = \"x\"\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\napi_key_env = \"sk-live-0123\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("p.safer"), "judge j { kind = rules }\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (diags, sources) = check(&dir.join("p.safer"));
    let d = diags
        .iter()
        .find(|d| d.code == Code::E0222)
        .unwrap_or_else(|| panic!("{}", render_plain(&diags, &sources)));
    assert!(
        d.message
            .contains("`api_key_env` is not the name of an environment variable"),
        "{}",
        d.message
    );
    assert!(!d.message.contains("sk-live"), "{}", d.message);
}

/// One mistake in `safer.toml` is reported once: the pipeline's imports
/// still resolve through the roots it declares (they were all "not found",
/// with errors about what they declare after them), and a wrong type is
/// named in words, not Rust's (`expected i64`).
#[test]
fn a_manifest_error_is_reported_alone() {
    let dir = temp("manifest-alone").join("demo");
    project::new::create(&dir).unwrap_or_else(|e| panic!("{e}"));
    edit(
        &dir.join("safer.toml"),
        "device = \"cpu\"",
        "devise = \"cpu\"",
    );
    let (diags, sources) = check(&dir.join("pipeline.safer"));
    let codes: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["E0221"], "{}", render_plain(&diags, &sources));
    assert_eq!(diags[0].fixes[0].replacement, "device");

    edit(&dir.join("safer.toml"), "devise = \"cpu\"", "device = \"cpu\"\n\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\nconcurrency = \"four\"");
    let (diags, sources) = check(&dir.join("pipeline.safer"));
    let rendered = render_plain(&diags, &sources);
    assert_eq!(diags.len(), 1, "{rendered}");
    assert!(
        rendered.contains("expected an integer") && !rendered.contains("i64"),
        "{rendered}"
    );
}

/// A TOML syntax error in `safer.toml` outside `[imports]` is reported
/// alone too: the `[imports]` table is read by itself, so `use` paths
/// through its roots still resolve. One inside `[imports]` leaves the
/// import unresolved, and its error says why the roots were not searched.
#[test]
fn a_manifest_syntax_error_is_reported_alone() {
    let dir = temp("manifest-syntax").join("demo");
    project::new::create(&dir).unwrap_or_else(|e| panic!("{e}"));
    edit(
        &dir.join("safer.toml"),
        "device = \"cpu\"",
        "device = \"cpu",
    );
    let (diags, sources) = check(&dir.join("pipeline.safer"));
    let rendered = render_plain(&diags, &sources);
    assert_eq!(diags.len(), 1, "{rendered}");
    assert!(rendered.contains("safer.toml"), "{rendered}");

    edit(
        &dir.join("safer.toml"),
        "device = \"cpu",
        "device = \"cpu\"",
    );
    edit(
        &dir.join("safer.toml"),
        "allow_outside = false",
        "allow_outside = ",
    );
    let (diags, sources) = check(&dir.join("pipeline.safer"));
    let rendered = render_plain(&diags, &sources);
    let codes: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["E0220", "E0200"], "{rendered}");
    let words = rendered.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("the import roots it may declare were not searched"),
        "{rendered}"
    );
}

/// A `safer.toml` misspelling is fixed only when the fix would not write a
/// key (or table) the file already has: that would make it invalid TOML.
#[test]
fn a_manifest_fix_never_duplicates_a_key() {
    let fix_of = |text: &str| {
        let mut sources = SourceMap::new();
        let id = sources.add(SourceFile::new("safer.toml", None, text.to_string()));
        let Err(diags) = manifest::parse(id, text, Path::new("/tmp")) else {
            panic!("{text} should be rejected")
        };
        assert_eq!(diags[0].code, Code::E0221, "{text}");
        diags[0].fixes.first().map(|f| f.replacement.clone())
    };
    let judge =
        "[project]\nname = \"x\"\n\n[judges.g]\nendpoint = \"http://h/v1\"\nmodel = \"m\"\n";
    assert_eq!(
        fix_of(&format!("{judge}endpiont = \"http://h/v1\"\n")),
        None
    );
    assert_eq!(
        fix_of("[project]\nname = \"x\"\n\n[projet]\nname = \"y\"\n"),
        None
    );
    assert_eq!(
        fix_of("[project]\nname = \"x\"\n\n[run]\ndevise = \"cpu\"\n").as_deref(),
        Some("device")
    );
}
