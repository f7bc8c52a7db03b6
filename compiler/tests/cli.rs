//! The `saferc` binary: exit codes, output formats, `fmt` and `explain`.

#![allow(clippy::panic)]

mod common;

use common::{saferc, temp_dir};
use std::process::{Command, Output};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

/// `saferc ARGS` run in folder `cwd`, without colour.
fn saferc_in(cwd: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_exit_codes() {
    let dir = temp_dir("check");
    let good = write(
        &dir,
        "good.safer",
        "model m { arch = tiny_vlm, weights = \"w\" }\n",
    );
    let bad = write(&dir, "bad.safer", "train t {\n  steps = }\n");
    let ok = saferc(&["check", &good]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stderr(&ok).is_empty());

    let err = saferc(&["check", &good, &bad]);
    assert_eq!(err.status.code(), Some(1));
    let text = stderr(&err);
    assert!(
        text.contains("E0101") && text.contains("expected a value after `=`, found `}`"),
        "{text}"
    );
    assert!(text.contains("bad.safer:2:11"), "{text}");
    assert!(text.contains("1 error"), "{text}");

    let missing = saferc(&["check", &dir.join("nope.safer").display().to_string()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("E0111"), "{}", stderr(&missing));
}

/// A UTF-8 byte-order mark at the start of a file is skipped, not an error.
#[test]
fn a_byte_order_mark_is_no_syntax_error() {
    let dir = temp_dir("bom");
    let file = dir.join("bom.safer");
    std::fs::write(
        &file,
        "\u{feff}model m { arch = tiny_vlm, weights = \"w\" }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = saferc(&["check", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// What only the dataflow graph shows (E04xx) is a `check` error too, as
/// in `graph` and `run`.
#[test]
fn check_reports_a_cycle_of_stages() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/cases/check/errors/E0400_stage_cycle.safer");
    let out = saferc(&["check", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("E0400"), "{}", stderr(&out));
    let json = saferc(&["check", "--format", "json", &file.display().to_string()]);
    assert!(stdout(&json).contains("E0400"), "{}", stdout(&json));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(saferc(&[]).status.code(), Some(2));
    assert_eq!(saferc(&["check"]).status.code(), Some(2));
    assert_eq!(
        saferc(&["check", "--bogus", "x.safer"]).status.code(),
        Some(2)
    );
    assert_eq!(saferc(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(saferc(&["explain", "nope"]).status.code(), Some(2));
    let no_root = saferc(&["check", "--root", "/nonexistent-saferc-root", "x.safer"]);
    assert_eq!(no_root.status.code(), Some(2));
    assert!(stderr(&no_root).contains("no folder `/nonexistent-saferc-root`"));
    assert_eq!(saferc(&["--help"]).status.code(), Some(0));
}

#[test]
fn check_json_format() {
    let dir = temp_dir("json");
    let bad = write(&dir, "bad.safer", "modle policy {\n}\n");
    let out = saferc(&["check", "--format", "json", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(doc["errors"], 1);
    let diag = &doc["diagnostics"][0];
    assert_eq!(diag["code"], "E0109");
    assert_eq!(diag["severity"], "error");
    assert_eq!(diag["help"], "did you mean `model`?");
    assert_eq!(diag["fixes"][0]["replacement"], "model");
    assert_eq!(diag["fixes"][0]["byte_start"], 0);
    assert_eq!(diag["fixes"][0]["byte_end"], 5);
    let label = &diag["labels"][0];
    assert_eq!(label["primary"], true);
    assert_eq!(label["start"]["line"], 0);
    assert_eq!(label["start"]["column"], 0);
    assert_eq!(label["end"]["column"], 5);
    assert!(label["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("bad.safer")));

    let good = write(&dir, "good.safer", "judge j { kind = rules }\n");
    let clean = saferc(&["check", "--format", "json", &good]);
    assert_eq!(clean.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&clean)).unwrap_or_default();
    assert_eq!(doc["errors"], 0);
}

/// `check --fix` writes each diagnostic's fix (a misspelt keyword, import,
/// key and unit, a renamed key), checks again and reports what is left; it
/// keeps a byte-order mark, leaves a key whose rename would change its
/// value's meaning (`api_key`) to the user, and refuses standard input.
#[test]
fn check_fix_writes_the_fixes_and_reports_what_is_left() {
    let dir = temp_dir("fix");
    let text = "\u{feff}use \"std/rubrics/safty.safer\"\n\nmodle policy {\n  arch = tiny_vlm\n  weights = \"w\"\n  torch_dtype = f32\n}\n\nrollout r {\n  temprature = 1.0\n  max_tokens = 64 tokns\n}\n\njudge j {\n  kind = http\n  endpoint = \"http://127.0.0.1:1/v1\"\n  model_name = \"m\"\n  api_key = \"sk-1\"\n}\n";
    let file = write(&dir, "p.safer", text);
    let out = saferc(&["check", "--fix", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fixed 5 problems in"),
        "{}",
        stderr(&out)
    );
    let fixed = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        fixed,
        text.replace("safty", "safety")
            .replace("modle", "model")
            .replace("torch_dtype", "dtype")
            .replace("temprature", "temperature")
            .replace("tokns", "tokens")
    );
    // What is left: the secret's key, with its help and no fix.
    assert!(stderr(&out).contains("E0206") && stderr(&out).contains("api_key_env"));
    let json = saferc(&["check", "--format", "json", &file]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap_or_default();
    assert_eq!(doc["errors"], 1, "{doc}");
    assert_eq!(doc["diagnostics"][0]["fixes"], serde_json::json!([]));

    // A file named through a symbolic link is written through it.
    let real = write(
        &dir,
        "real.safer",
        "rollout r {\n  temprature = 1.0\n  max_tokens = 8 tokens\n}\n",
    );
    let link = dir.join("link.safer");
    std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("{e}"));
    let out = saferc(&["check", "--fix", &link.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()));
    assert!(std::fs::read_to_string(&real)
        .unwrap_or_default()
        .contains("temperature = 1.0"));

    let stdin = saferc(&["check", "--fix", "-"]);
    assert_eq!(stdin.status.code(), Some(2));
    assert!(stderr(&stdin).contains("standard input"));

    // A file the named one imports (a shared rubric) is left as it is,
    // and said to be; named, it is fixed.
    let lib_text = "rubric shared {\n  criterion c weight 1 { scorer = refusal() }\n  penalty p = 2 when c < 0.5\n}\n";
    let lib = write(&dir, "lib.safer", lib_text);
    let main = write(
        &dir,
        "main.safer",
        "use \"lib.safer\" as lib\nrollout r {\n  temprature = 1.0\n  max_tokens = 8 tokens\n}\n",
    );
    let out = saferc(&["check", "--fix", &main]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fixed 1 problem in"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not fixed: 1 problem in"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&lib).unwrap_or_default(), lib_text);
    let out = saferc(&["check", "--fix", &main, &lib]);
    assert!(
        stderr(&out).contains("fixed 1 problem in"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read_to_string(&lib)
        .unwrap_or_default()
        .contains("penalty p = -2 when"));
}

/// `saferc ARGS` with `text` on its standard input.
fn saferc_with_input(args: &[&str], text: &str) -> std::process::Output {
    saferc_with_input_in(std::path::Path::new("."), args, text)
}

/// [`saferc_with_input`] run in folder `cwd`.
fn saferc_with_input_in(cwd: &std::path::Path, args: &[&str], text: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    stdin
        .write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

/// `check -` checks standard input (it was taken for a file named `-`).
#[test]
fn check_reads_standard_input() {
    let check = |text: &str| saferc_with_input(&["check", "-"], text);
    assert_eq!(check("judge j { kind = rules }\n").status.code(), Some(0));
    // In a project, its import roots (`../shared`) apply to standard input
    // as to the file it holds.
    let alpha =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/projects/alpha");
    let text = std::fs::read_to_string(alpha.join("pipeline.safer")).unwrap_or_default();
    let piped = saferc_with_input_in(&alpha, &["check", "-"], &text);
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    let bad = check("judge j { kind = rulez }\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("unknown value `rulez`"),
        "{}",
        stderr(&bad)
    );
}

/// A device that never ends is read only to the size limit: E0106, not
/// all the memory there is.
#[test]
fn check_reads_an_endless_file_only_to_the_limit() {
    let out = saferc(&["check", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("E0106") && stderr(&out).contains("over the limit"),
        "{}",
        stderr(&out)
    );
}

/// A binary named by mistake (larger than the limit too) is "not UTF-8",
/// and its snippet shows no control characters that would garble the
/// terminal (an escape sequence, a NUL).
#[test]
fn a_binary_file_is_not_utf8_and_its_snippet_is_printable() {
    let dir = temp_dir("binary");
    let path = dir.join("tool");
    let mut bytes = b"\x7fELF\x02\x01\x01\x00\x1b[31mred\x07\xaa\xff".to_vec();
    bytes.resize(9 * 1024 * 1024, 0);
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let out = saferc(&["check", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("E0100") && !text.contains("E0106"), "{text}");
    assert!(
        !text.contains(['\x1b', '\x00', '\x07']),
        "control characters in {text:?}"
    );
}

/// A reader of the diagnostics that goes away early (`| head`) ends the
/// output, not the program: exit 1 for the errors, not a panic's 101.
#[test]
fn check_survives_a_closed_stderr() {
    use std::io::Read;
    let dir = temp_dir("closed-stderr");
    let keys: String = (0..3000).map(|i| format!("  unknown_{i} = 1\n")).collect();
    let file = write(&dir, "many.safer", &format!("rollout r {{\n{keys}}}\n"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(["check", &file])
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stderr = child.stderr.take().unwrap_or_else(|| panic!("stderr"));
    let mut first = [0u8; 16];
    stderr
        .read_exact(&mut first)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(stderr);
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(1));
}

/// `saferc fmt` keeps what the layout does not decide: a file's CRLF line
/// ends (a Windows checkout failed `--check` on every formatted file,
/// with `"""` text left CRLF among LF lines) and its byte-order mark.
#[test]
fn fmt_keeps_crlf_line_ends_and_the_byte_order_mark() {
    let dir = temp_dir("fmt-style");
    let crlf = write(
        &dir,
        "crlf.safer",
        "model m{arch=tiny_vlm}\r\nprompt p = \"\"\"\r\na\r\n\"\"\"\r\n",
    );
    let fix = saferc(&["fmt", &crlf]);
    assert_eq!(fix.status.code(), Some(0), "{}", stderr(&fix));
    assert_eq!(
        std::fs::read_to_string(&crlf).unwrap_or_default(),
        "model m { arch = tiny_vlm }\r\n\r\nprompt p = \"\"\"\r\na\r\n\"\"\"\r\n"
    );
    assert_eq!(saferc(&["fmt", "--check", &crlf]).status.code(), Some(0));
    // Mixed line ends in a CRLF file are made all CRLF.
    let mixed = write(
        &dir,
        "mixed.safer",
        "model m { arch = tiny_vlm }\r\n\nprompt p = \"a\"\n",
    );
    assert_eq!(saferc(&["fmt", "--check", &mixed]).status.code(), Some(1));
    // A line break in `"""` text is `\n` whatever the file's line ends, so
    // making them all CRLF changes no prompt: the same program before and
    // after, and as an all-LF copy of it.
    let hir_in = |dir: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_saferc"))
            .args(["hir", "p.safer"])
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
    };
    let (lf_dir, mixed_dir) = (dir.join("lf"), dir.join("mixed"));
    let text = "prompt y = \"q\"\r\nprompt x = \"\"\"a\nb\r\nc\"\"\"\n";
    for (d, t) in [
        (&lf_dir, text.replace("\r\n", "\n")),
        (&mixed_dir, text.to_string()),
    ] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        write(d, "p.safer", &t);
    }
    let before = hir_in(&mixed_dir);
    assert_eq!(before, hir_in(&lf_dir));
    let fmt = saferc(&["fmt", &mixed_dir.join("p.safer").display().to_string()]);
    assert_eq!(fmt.status.code(), Some(0), "{}", stderr(&fmt));
    let formatted = std::fs::read_to_string(mixed_dir.join("p.safer")).unwrap_or_default();
    assert!(
        formatted.contains("\"\"\"a\r\nb\r\nc\"\"\""),
        "{formatted:?}"
    );
    assert_eq!(hir_in(&mixed_dir), before);

    let marked = write(&dir, "bom.safer", "\u{feff}model m{arch=tiny_vlm}\n");
    assert_eq!(saferc(&["fmt", &marked]).status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&marked).unwrap_or_default(),
        "\u{feff}model m { arch = tiny_vlm }\n"
    );
    assert_eq!(saferc(&["fmt", "--check", &marked]).status.code(), Some(0));
}

#[test]
fn fmt_rewrites_and_check_reports() {
    let dir = temp_dir("fmt");
    let messy = write(&dir, "messy.safer", "model m{arch=tiny_vlm}\n");
    let check = saferc(&["fmt", "--check", &messy]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stdout(&check).contains("would reformat"),
        "{}",
        stdout(&check)
    );
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap_or_default(),
        "model m{arch=tiny_vlm}\n"
    );

    let fix = saferc(&["fmt", &messy]);
    assert_eq!(fix.status.code(), Some(0), "{}", stderr(&fix));
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap_or_default(),
        "model m { arch = tiny_vlm }\n"
    );
    assert_eq!(saferc(&["fmt", "--check", &messy]).status.code(), Some(0));

    // Standard input: formatted to standard output, or checked (`--check -`
    // printed the formatted text and passed).
    let piped = saferc_with_input(&["fmt", "-"], "model m{arch=tiny_vlm}\n");
    assert_eq!(piped.status.code(), Some(0));
    assert_eq!(stdout(&piped), "model m { arch = tiny_vlm }\n");
    let checked = saferc_with_input(&["fmt", "--check", "-"], "model m{arch=tiny_vlm}\n");
    assert_eq!(checked.status.code(), Some(1));
    assert_eq!(stdout(&checked), "would reformat <standard input>\n");
    let clean = saferc_with_input(&["fmt", "--check", "-"], "model m { arch = tiny_vlm }\n");
    assert_eq!(clean.status.code(), Some(0));
    assert_eq!(stdout(&clean), "");

    let broken = write(&dir, "broken.safer", "model m {\n");
    let out = saferc(&["fmt", &broken]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("E0103"));
    assert_eq!(
        std::fs::read_to_string(&broken).unwrap_or_default(),
        "model m {\n",
        "a file that does not parse is left alone"
    );
}

#[test]
fn parse_prints_tree_or_json() {
    let dir = temp_dir("parse");
    let file = write(&dir, "m.safer", "model m { arch = tiny_vlm }\n");
    let tree = saferc(&["parse", &file]);
    assert_eq!(tree.status.code(), Some(0));
    assert!(
        stdout(&tree).starts_with("Module 0..28\n  Decl 0..27 model m"),
        "{}",
        stdout(&tree)
    );
    let json = saferc(&["parse", &file, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap_or_default();
    assert_eq!(doc["items"][0]["kind"]["item"], "decl");
    assert_eq!(doc["items"][0]["kind"]["name"]["name"], "m");
}

#[test]
fn explain_prints_the_code_page() {
    let out = saferc(&["explain", "e0109"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with("# E0109: unknown declaration keyword"),
        "{}",
        stdout(&out)
    );
    // A code's number written short is named as the code; an unknown
    // number says so.
    for short in ["0109", "E109", "109"] {
        let out = saferc(&["explain", short]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("saferc explain E0109"),
            "{}",
            stderr(&out)
        );
    }
    let unknown = saferc(&["explain", "E9999"]);
    assert!(
        stderr(&unknown).contains("no diagnostic `E9999`"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn graph_prints_text_dot_and_mermaid() {
    let dir = temp_dir("graph");
    let file = write(
        &dir,
        "p.safer",
        "use \"std/rubrics/safety.safer\"\nmodel p { arch = tiny_vlm, weights = \"w\" }\n\
         dataset d { source = jsonl(\"d.jsonl\") }\n\
         train t { policy = p, data = d, sft { lr = 1e-4 } }\n",
    );
    let text = saferc(&["graph", &file]);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    assert!(
        stdout(&text).starts_with("program sha256:"),
        "{}",
        stdout(&text)
    );
    assert!(stdout(&text).contains("train.t.update : Update  [loop t]"));
    let dot = saferc(&["graph", "--format", "dot", &file]);
    assert!(stdout(&dot).starts_with("digraph pipeline {"));
    let mermaid = saferc(&["graph", "--format", "mermaid", &file]);
    assert!(stdout(&mermaid).starts_with("flowchart LR"));
    // The same program hashes the same, wherever it is.
    let dir2 = temp_dir("graph2");
    let copy = write(
        &dir2,
        "p.safer",
        &std::fs::read_to_string(&file).unwrap_or_default(),
    );
    let again = saferc(&["graph", &copy]);
    assert_eq!(stdout(&text).lines().next(), stdout(&again).lines().next());
}

#[test]
fn graph_hir_and_warnings_mask_an_endpoint_password() {
    let dir = temp_dir("graph_password");
    let file = write(
        &dir,
        "p.safer",
        "model p { arch = tiny_vlm, weights = \"w\" }\n\
         judge g { kind = http, endpoint = \"http://me:s3cret@127.0.0.1:9/v1\", \
         model_name = \"g\", ca_file = \"ca.pem\" }\n\
         rubric r(judge = g) { criterion c weight 1 \"Helps.\" }\n\
         dataset d { source = jsonl(\"d.jsonl\") }\n\
         eval e { model = p, data = d, rubric = r }\n",
    );
    for args in [
        vec!["graph", file.as_str()],
        vec!["graph", "--format", "json", file.as_str()],
        vec!["hir", file.as_str()],
    ] {
        let out = saferc(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let printed = stdout(&out);
        assert!(!printed.contains("s3cret"), "{args:?}: {printed}");
        assert!(
            printed.contains("http://me:***@127.0.0.1:9/v1"),
            "{args:?}: {printed}"
        );
        // The warning's words mask the password, and so does the snippet
        // of the line that holds it.
        assert!(
            stderr(&out).contains("`http://me:***@127.0.0.1:9/v1` is plain http"),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("\"http://me:******@127.0.0.1:9/v1\""),
            "{}",
            stderr(&out)
        );
    }
}

/// A key written where its variable's name belongs (`api_key_env`), or as
/// `api_key`, in a pipeline or in `safer.toml`, is drawn as `*` in every
/// report, also in the snippet of another error on a line next to it: a
/// CI log does not get the key a second time.
#[test]
fn a_key_written_in_a_file_is_not_printed() {
    let dir = temp_dir("secret");
    write(
        &dir,
        "safer.toml",
        "[project]\nname = \"p\"\n\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\napi_key_env = \"sk-toml-0123456789\"\n",
    );
    // The key written as `api_key` in `safer.toml` (no such key there).
    let literal = temp_dir("secret-literal");
    write(
        &literal,
        "safer.toml",
        "[project]\nname = \"p\"\n\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\napi_key = \"sk-LITERAL-0123\"\n",
    );
    let pipeline = write(&literal, "p.safer", "");
    let out = saferc(&["check", &pipeline]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("E0221"), "{err}");
    assert!(!err.contains("sk-LITERAL"), "printed:\n{err}");
    assert!(err.contains("api_key = \"***************\""), "{err}");
    assert!(err.contains("revoke it"), "{err}");
    // Not TOML (a bare value), triple-quoted, written twice, or in an
    // `auth` key: hidden in whatever error the file gives.
    for line in [
        "api_key = sk-LITERAL-0123",
        "api_key = \"\"\"sk-LITERAL-0123\"\"\"",
        "api_key = \"sk-LITERAL-0123\"\napi_key = \"sk-LITERAL-4567\"",
        "auth = \"Bearer sk-LITERAL-0123\"",
    ] {
        write(
            &literal,
            "safer.toml",
            &format!("[project]\nname = \"p\"\n\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\n{line}\n"),
        );
        let out = saferc(&["check", &pipeline]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{line}: {err}");
        assert!(!err.contains("sk-LITERAL"), "{line}: printed:\n{err}");
    }
    // A misspelt `api_key_env` naming a variable is only misspelt: shown,
    // with the fix.
    write(
        &literal,
        "safer.toml",
        "[project]\nname = \"p\"\n\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\napi_key_evn = \"JUDGE_KEY\"\n",
    );
    let err = stderr(&saferc(&["check", &pipeline]));
    assert!(
        err.contains("did you mean `api_key_env`?") && err.contains("\"JUDGE_KEY\""),
        "{err}"
    );
    let file = write(
        &dir,
        "p.safer",
        "judge a {\n  kind        = http\n  endpoint    = \"http://localhost:8000/v1\"\n  model_name  = \"grader\"\n  api_key_env = \"sk-live-0123456789\"\n  concurrency = 0\n}\n\njudge b {\n  kind       = http\n  endpoint   = \"http://localhost:8000/v1\"\n  model_name = \"grader\"\n  api_key    = \"sk-pasted-0123456789\"\n}\n",
    );
    let out = saferc(&["check", &file]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for code in ["E0303", "E0206", "E0222"] {
        assert!(err.contains(code), "{code} missing:\n{err}");
    }
    for key in ["sk-live", "sk-pasted", "sk-toml"] {
        assert!(!err.contains(key), "{key} printed:\n{err}");
    }
    assert!(
        err.contains("api_key_env = \"******************\""),
        "{err}"
    );
}

/// `seed = 7 steps = 20 steps` reads `steps` as the unit of 7: the fix
/// writes a comma (a unit already right was "fixed" to its singular, and
/// back, before).
#[test]
fn check_fix_separates_two_settings_whose_second_key_is_a_unit() {
    let dir = temp_dir("unit-key");
    let file = write(
        &dir,
        "p.safer",
        "train t { seed = 7 steps = 20 steps }\nreflection f { rounds = 1 prompt = \"{completion}\" }\n",
    );
    let out = saferc(&["check", "--fix", &file]);
    assert!(
        stderr(&out).contains("fixed 2 problems in"),
        "{}",
        stderr(&out)
    );
    let fixed = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        fixed,
        "train t { seed = 7, steps = 20 steps }\nreflection f { rounds = 1, prompt = \"{completion}\" }\n"
    );
    assert!(!stderr(&out).contains("E0101"), "{}", stderr(&out));
}

#[test]
fn new_then_check_then_pin() {
    let dir = temp_dir("new");
    let out = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(["new", "demo"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let demo = dir.join("demo");
    for f in [
        "safer.toml",
        "pipeline.safer",
        "rubrics/house.safer",
        ".gitignore",
        "README.md",
    ] {
        assert!(demo.join(f).is_file(), "{f} missing");
    }
    let check = saferc_in(&demo, &["check", "pipeline.safer"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let from_sub = saferc_in(&demo.join("rubrics"), &["check", "../pipeline.safer"]);
    assert_eq!(from_sub.status.code(), Some(0), "{}", stderr(&from_sub));
    let pin = saferc_in(&demo, &["pin"]);
    assert_eq!(pin.status.code(), Some(0), "{}", stderr(&pin));
    assert!(
        stdout(&pin).contains("pinned rubrics/house::house_rubric sha256:"),
        "{}",
        stdout(&pin)
    );
    let manifest = std::fs::read_to_string(demo.join("safer.toml")).unwrap_or_default();
    assert!(
        manifest.contains("[pins]\n\"rubrics/house::house_rubric\" = \"sha256:"),
        "{manifest}"
    );
    // A root above the project names the modules from the project's
    // folder still, so the pins `saferc pin` wrote hold.
    for (cwd, file) in [(&demo, "pipeline.safer"), (&dir, "demo/pipeline.safer")] {
        let above = saferc_in(cwd, &["check", "--root", &dir.to_string_lossy(), file]);
        assert_eq!(above.status.code(), Some(0), "{}", stderr(&above));
    }
    let rubric = demo.join("rubrics/house.safer");
    let text = std::fs::read_to_string(&rubric).unwrap_or_default();
    std::fs::write(&rubric, text.replace("weight 0.6", "weight 0.5"))
        .unwrap_or_else(|e| panic!("{e}"));
    let changed = saferc_in(&demo, &["check", "pipeline.safer"]);
    assert_eq!(changed.status.code(), Some(1));
    assert!(stderr(&changed).contains("E0226"), "{}", stderr(&changed));
    // `--root` moves the root `use` may not leave, and the pins still hold.
    let rooted = saferc_in(&demo, &["check", "--root", ".", "pipeline.safer"]);
    assert!(stderr(&rooted).contains("E0226"), "{}", stderr(&rooted));
    let above = saferc_in(&demo, &["check", "--root", "..", "pipeline.safer"]);
    assert!(
        stderr(&above).contains("changed since it was pinned"),
        "{}",
        stderr(&above)
    );
    let again = saferc_in(&demo, &["new", "demo2"]);
    assert_eq!(again.status.code(), Some(0));
    let exists = saferc_in(&dir, &["new", "demo"]);
    assert_eq!(
        exists.status.code(),
        Some(1),
        "an existing folder is not overwritten"
    );
    // A file is said to be one; `.` in an empty folder takes its name.
    write(&dir, "plain", "");
    let file = saferc_in(&dir, &["new", "plain"]);
    assert!(
        stderr(&file).contains("is a file, not a folder"),
        "{}",
        stderr(&file)
    );
    std::fs::create_dir_all(dir.join("here")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        saferc_in(&dir.join("here"), &["new", "."]).status.code(),
        Some(0)
    );
    let manifest = std::fs::read_to_string(dir.join("here/safer.toml")).unwrap_or_default();
    assert!(manifest.contains("name = \"here\""), "{manifest}");
}

/// Two files whose pin keys are one (`h.safer` and a file named `h`: a key
/// leaves out `.safer`) are refused by `pin`: their one pin could never
/// match both, and `check` would fail on a freshly pinned project.
#[test]
fn pin_refuses_two_files_under_one_key() {
    let dir = temp_dir("pin-clash");
    write(&dir, "safer.toml", "[project]\nname = \"p\"\n");
    let rubric = "rubric rr { criterion safety weight 1 { scorer = refusal() } }\n";
    write(&dir, "h.safer", rubric);
    write(&dir, "h", &rubric.replace("weight 1", "weight 3"));
    write(
        &dir,
        "p.safer",
        "use \"h.safer\" as one\nuse \"h\" as two\nreflection q { when = one.rr.safety < 0.5 and two.rr.safety < 0.5, prompt = \"{completion}\" }\n",
    );
    assert_eq!(
        saferc_in(&dir, &["check", "p.safer"]).status.code(),
        Some(0)
    );
    let pin = saferc_in(&dir, &["pin"]);
    assert_eq!(pin.status.code(), Some(1), "{}", stdout(&pin));
    assert!(
        stderr(&pin).contains("would pin rubric `rr` under one key, `h::rr`"),
        "{}",
        stderr(&pin)
    );
    let manifest = std::fs::read_to_string(dir.join("safer.toml")).unwrap_or_default();
    assert!(!manifest.contains("pins"), "{manifest}");
}

/// `saferc pin` edits `safer.toml` as a TOML document: comments of other
/// tables stay, a spaced `[ pins ]` header is replaced rather than doubled,
/// a path with a quote is quoted; named files keep the other files' pins,
/// the whole project drops (and names) pins nothing imports; the manifest
/// stays a symbolic link with its permissions; a file of another project is
/// refused.
#[test]
fn pin_edits_the_manifest_and_keeps_other_files_pins() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("pin-edit");
    assert_eq!(saferc_in(&dir, &["new", "demo"]).status.code(), Some(0));
    let demo = dir.join("demo");
    // A second pipeline importing a second rubric, from a path with a quote.
    let house = std::fs::read_to_string(demo.join("rubrics/house.safer")).unwrap_or_default();
    std::fs::create_dir_all(demo.join("r\"2")).unwrap_or_else(|e| panic!("{e}"));
    write(
        &demo.join("r\"2"),
        "other.safer",
        &house.replace("house_rubric", "other_rubric"),
    );
    let pipeline = std::fs::read_to_string(demo.join("pipeline.safer")).unwrap_or_default();
    assert!(pipeline.contains("use \"house.safer\""), "{pipeline}");
    write(
        &demo,
        "p2.safer",
        &pipeline
            .replace("use \"house.safer\"", "use \"r\\\"2/other.safer\"")
            .replace("house_rubric", "other_rubric"),
    );
    assert_eq!(
        saferc_in(&demo, &["check", "p2.safer"]).status.code(),
        Some(0)
    );
    // A comment above the table after `[pins]`, and a spaced header.
    let manifest = demo.join("safer.toml");
    let text = std::fs::read_to_string(&manifest).unwrap_or_default();
    std::fs::write(
        &manifest,
        format!("{text}\n[ pins ]\n\"gone::r\" = \"sha256:0\"\n\n# ask the judge team first\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The manifest through a symbolic link, readable by its owner only.
    std::fs::rename(&manifest, dir.join("demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("../demo.toml", &manifest).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        dir.join("demo.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let all = saferc_in(&demo, &["pin"]);
    assert_eq!(all.status.code(), Some(0), "{}", stderr(&all));
    assert!(stdout(&all).contains("removed gone::r"), "{}", stdout(&all));
    let read = || std::fs::read_to_string(dir.join("demo.toml")).unwrap_or_default();
    let pinned: toml::Table = toml::from_str(&read()).unwrap_or_else(|e| panic!("{e}: {}", read()));
    let pins = pinned["pins"].as_table().cloned().unwrap_or_default();
    let keys: Vec<&String> = pins.keys().collect();
    assert_eq!(
        keys,
        ["r\"2/other::other_rubric", "rubrics/house::house_rubric"],
        "{}",
        read()
    );
    assert!(read().contains("# ask the judge team first"), "{}", read());
    assert!(std::fs::symlink_metadata(&manifest).is_ok_and(|m| m.file_type().is_symlink()));
    let mode = std::fs::metadata(dir.join("demo.toml")).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600));

    // One file named: its pins are written, the other file's stay.
    let house_only = saferc_in(&demo, &["pin", "pipeline.safer"]);
    assert_eq!(house_only.status.code(), Some(0), "{}", stderr(&house_only));
    assert!(read().contains("other_rubric"), "{}", read());

    // A file of another project is refused, and nothing is written.
    assert_eq!(saferc_in(&dir, &["new", "beta"]).status.code(), Some(0));
    let before = read();
    let mixed = saferc_in(&demo, &["pin", "pipeline.safer", "../beta/pipeline.safer"]);
    assert_eq!(mixed.status.code(), Some(2), "{}", stderr(&mixed));
    assert!(
        stderr(&mixed).contains("is not in the project"),
        "{}",
        stderr(&mixed)
    );
    assert_eq!(read(), before);
    // A project inside this one pins its own rubrics: not this one's.
    assert_eq!(saferc_in(&demo, &["new", "inner"]).status.code(), Some(0));
    let outer = saferc_in(&demo, &["pin"]);
    assert_eq!(outer.status.code(), Some(0), "{}", stderr(&outer));

    // A copy beside the pipeline shadows the pinned rubric's file: said,
    // not passed (its key is another file's, which no pin names).
    write(
        &demo,
        "house.safer",
        &house.replace("weight 0.6", "weight 0.5"),
    );
    let shadowed = saferc_in(&demo, &["check", "pipeline.safer"]);
    assert_eq!(shadowed.status.code(), Some(1), "{}", stderr(&shadowed));
    assert!(
        stderr(&shadowed).contains("pinned from another file"),
        "{}",
        stderr(&shadowed)
    );
}

/// A symbolic link inside the project that points out of it does not
/// carry `use` out of the root (E0202), as `../outside/r.safer` does not.
#[test]
fn a_link_out_of_the_project_is_outside_its_root() {
    let dir = temp_dir("link-out");
    for d in ["proj", "outside"] {
        std::fs::create_dir_all(dir.join(d)).unwrap_or_else(|e| panic!("{e}"));
    }
    write(&dir.join("proj"), "safer.toml", "[project]\nname = \"p\"\n");
    write(
        &dir.join("outside"),
        "r.safer",
        "judge j { kind = rules }\n",
    );
    std::os::unix::fs::symlink(dir.join("outside"), dir.join("proj/olink"))
        .unwrap_or_else(|e| panic!("{e}"));
    let main = write(&dir.join("proj"), "main.safer", "use \"olink/r.safer\"\n");
    let out = saferc(&["check", &main]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("E0202") && stderr(&out).contains("symbolic link"),
        "{}",
        stderr(&out)
    );
    let allowed = saferc(&["check", "--allow-outside-root", &main]);
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));
}

/// Diagnostics name an imported file as the user finds it from where they
/// ran the command: beside its importer, as the checked file was named
/// (`m/sub/x/y.safer`), not relative to the project root (`sub/x/y.safer`,
/// which does not exist from there).
#[test]
fn imported_files_are_named_from_where_the_command_ran() {
    let dir = temp_dir("shown-names");
    std::fs::create_dir_all(dir.join("m/sub/x")).unwrap_or_else(|e| panic!("{e}"));
    write(&dir, "m/top.safer", "use \"sub/mid.safer\"\n");
    write(&dir, "m/sub/mid.safer", "use \"x/../x/y.safer\"\n");
    write(&dir, "m/sub/x/y.safer", "judge j { kind = rulez }\n");
    let out = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(["check", "--format", "json", "m/top.safer"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let files: Vec<&str> = report["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["labels"].as_array().into_iter().flatten())
        .filter_map(|label| label["file"].as_str())
        .collect();
    assert_eq!(files, ["m/sub/x/y.safer"], "{text}");
}

/// Two files checked together that import the same broken file report its
/// problem once (each file's analysis loads it again).
#[test]
fn a_shared_import_s_problem_is_reported_once() {
    let dir = temp_dir("shared-import");
    let a = write(&dir, "a.safer", "use \"shared.safer\"\n");
    let b = write(&dir, "b.safer", "use \"shared.safer\"\n");
    write(&dir, "shared.safer", "judge j { kind = rulez }\n");
    let out = saferc(&["check", &a, &b]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert_eq!(said.matches("unknown value `rulez`").count(), 1, "{said}");
}

/// `--root` named relative to the current folder is the folder it names:
/// an import inside it is no "outside the project root" (the files' paths
/// are absolute), one outside it still is.
#[test]
fn a_relative_root_is_taken_from_the_current_folder() {
    let dir = temp_dir("relative-root");
    for sub in ["rt/a", "rt/shared"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("{e}"));
    }
    write(
        &dir.join("rt/shared"),
        "lib.safer",
        "model m { arch = tiny_vlm, weights = \"w\" }\n",
    );
    write(
        &dir.join("rt/a"),
        "p.safer",
        "use \"../shared/lib.safer\"\n",
    );
    let check = |cwd: &std::path::Path, file: &str, root: &str| {
        Command::new(env!("CARGO_BIN_EXE_saferc"))
            .args(["check", file, "--root", root])
            .current_dir(cwd)
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    for root in ["rt", "./rt", "rt/"] {
        let out = check(&dir, "rt/a/p.safer", root);
        assert_eq!(
            out.status.code(),
            Some(0),
            "--root {root}: {}",
            stderr(&out)
        );
    }
    let inside = check(&dir.join("rt/a"), "p.safer", "../../rt");
    assert_eq!(inside.status.code(), Some(0), "{}", stderr(&inside));
    // Standard input's imports resolve from the current folder, inside
    // the root it names.
    let piped = saferc_with_input_in(
        &dir.join("rt/a"),
        &["check", "-", "--root", "../.."],
        "use \"../shared/lib.safer\"\n",
    );
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    let outside = check(&dir.join("rt/a"), "p.safer", ".");
    assert_eq!(outside.status.code(), Some(1), "{}", stderr(&outside));
    assert!(stderr(&outside).contains("E0202"), "{}", stderr(&outside));
}

/// `saferc graph -` reads standard input as a file of the current folder,
/// as `check -` and `fmt -` do (it was refused as a file named `-`).
#[test]
fn graph_reads_standard_input() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(examples.join("quickstart.safer")).unwrap_or_default();
    let piped = saferc_with_input_in(&examples, &["graph", "-"], &text);
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    let from_file = saferc(&[
        "graph",
        &examples.join("quickstart.safer").to_string_lossy(),
    ]);
    assert_eq!(stdout(&piped), stdout(&from_file));
    assert!(stdout(&piped).starts_with("program sha256:"));
}

/// Standard output that cannot be written (`> /dev/full`) is an error said
/// in one line, exit 1, not a panic; a closed pipe (`| head`) ends the
/// process quietly, exit 141, as SIGPIPE ends a C tool.
#[test]
fn unwritable_standard_output_is_an_error_not_a_panic() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(full) = full else {
        return; // no /dev/full on this system
    };
    let out = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(["explain", "E0101"])
        .stdout(full)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.starts_with("error: cannot write to standard output:") && !said.contains("panicked"),
        "{said}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(["explain", "E0101"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}
