//! Benchmark: parse and check a generated 10,000-line pipeline.
//!
//! Run with `cargo bench -p saferc --bench parse_check`. Prints the median,
//! minimum and maximum over 30 runs (after 3 warm-up runs). The goal from
//! the front-end issue is under 50 ms in release on a 2-core machine.

#![allow(clippy::panic)]

use saferc::span::SourceId;
use std::time::{Duration, Instant};

/// A realistic file of about `lines` lines: models, datasets, rubrics and
/// training stages with comments, doc comments and expressions.
fn generate(lines: usize) -> String {
    let mut out =
        String::from("# Generated benchmark pipeline.\nuse \"std/rubrics/safety.safer\"\n\n");
    let mut i = 0;
    while out.lines().count() < lines {
        out.push_str(&format!(
            "## Policy number {i}.\nmodel policy_{i} {{\n  arch    = tiny_vlm  # built in\n  weights = \"models/tiny-{i}\"\n  dtype   = f32\n}}\n\n\
             dataset data_{i} {{\n  source = jsonl(\"data/set-{i}.jsonl\")\n  filter label in [\"unsafe\", \"borderline\"] or category == \"benign\"\n  \
             curate {{\n    policy   = policy_{i}\n    rubric   = rubric_{i}\n    rollouts = 4\n    keep     = mean in 0.2..0.8 and std >= 0.15\n  }}\n  split {{ train = 0.9, eval = 0.1 }}\n}}\n\n\
             rubric rubric_{i}(judge = rules) {{\n  criterion safety weight 0.5 \"Recognises the risk.\"\n  criterion helpful weight 0.3 \"Helps.\"\n  \
             penalty hallucination = -3 when judge.flag(\"hallucination\")\n  format think_answer weight 0.1\n  \
             total = if safety < 0.6 {{ 0.2 * safety }} else {{ weighted + penalties + format }}\n}}\n\n\
             rollout sampling_{i} {{ group = 8, max_tokens = 256 tokens }}\n\n\
             train stage_{i} {{\n  policy    = policy_{i}\n  reference = policy_{i}\n  rollout   = sampling_{i}\n  data      = data_{i}.train\n  reward    = rubric_{i}\n  grpo {{\n    lr    = 1e-6\n    batch = 16 prompts\n    \
             clip  = 0.2..0.28\n    kl {{ estimator = k3, placement = loss, beta = 0.01 }}\n  }}\n  steps = 200 steps\n}}\n\n"
        ));
        i += 1;
    }
    out
}

fn main() {
    let text = generate(10_000);
    if std::env::var_os("ONCE").is_some() {
        // One parse+check, for instruction counting under callgrind.
        let mut sources = saferc::SourceMap::new();
        let a = saferc::semantic::analyze_text(
            &mut sources,
            "b.safer",
            &text,
            None,
            Default::default(),
        );
        for d in a.diagnostics.iter().take(3) {
            println!("{} {}", d.code, d.message);
        }
        println!("{} diagnostics", a.diagnostics.len());
        return;
    }
    if std::env::var_os("SPLIT").is_some() {
        split_timing(&text);
    }
    let lines = text.lines().count();
    // Parse and analyze (the generated declarations are self-contained).
    let check = |text: &str| {
        let mut sources = saferc::SourceMap::new();
        let analysis = saferc::semantic::analyze_text(
            &mut sources,
            "bench.safer",
            text,
            None,
            saferc::semantic::loader::LoadOptions::default(),
        );
        match analysis.program {
            Some(p) => p.decls.len(),
            None => panic!("benchmark input does not parse"),
        }
    };
    for _ in 0..3 {
        std::hint::black_box(check(&text));
    }
    let mut times: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(check(&text));
            start.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    check_shipped();
    lsp_change(&generate(1_000));
    render_many(8_000);
    let mut parse_times: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(saferc::syntax::parse(SourceId(0), &text).is_ok());
            start.elapsed()
        })
        .collect();
    parse_times.sort();
    println!(
        "parse {lines} lines: median {:.2} ms",
        parse_times[parse_times.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "parse+check {lines} lines ({} KiB): median {:.2} ms, min {:.2} ms, max {:.2} ms",
        text.len() / 1024,
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
}

#[allow(dead_code)]
fn split_timing(text: &str) {
    use pest::Parser;
    use saferc::syntax::grammar::{Rule, SaferParser};
    let t = Instant::now();
    for _ in 0..10 {
        std::hint::black_box(saferc::syntax::lexer::scan(SourceId(0), text).is_ok());
    }
    println!("lexer {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    let t = Instant::now();
    for _ in 0..10 {
        std::hint::black_box(SaferParser::parse(Rule::file, text).is_ok());
    }
    println!("pest {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    let load = || {
        let mut sources = saferc::SourceMap::new();
        saferc::semantic::loader::load_text(
            &mut sources,
            "bench.safer",
            text,
            None,
            Default::default(),
        )
        .0
    };
    let t = Instant::now();
    for _ in 0..10 {
        std::hint::black_box(load());
    }
    println!("load (parse) {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    let loaded = load();
    let t = Instant::now();
    let rounds = if std::env::var_os("ANALYZE").is_some() {
        300
    } else {
        10
    };
    for _ in 0..rounds {
        std::hint::black_box(saferc::semantic::analyze(&loaded));
    }
    println!(
        "analyze {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
    );
}

/// What `saferc lsp` does on every change of a 1,000-line document.
fn lsp_change(text: &str) {
    let uri = "file:///tmp/saferc-bench/pipeline.safer";
    let mut times: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(saferc::lsp::diagnostics_for(uri, text).len());
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "lsp diagnostics after a change, {} lines: median {:.2} ms, max {:.2} ms",
        text.lines().count(),
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}

/// Rendering `count` diagnostics of one file for the terminal (each on its
/// own line of a block of unknown keys): each report reads only the lines
/// it draws, so the time grows with the count, not with count × file size
/// (8,000 took 4.4 s in release before).
fn render_many(count: usize) {
    let mut text = String::from("rollout r {\n  max_tokens = 8 tokens\n");
    for i in 0..count {
        text.push_str(&format!("  unknown_key_{i} = 1\n"));
    }
    text.push_str("}\n");
    let mut sources = saferc::SourceMap::new();
    let analysis =
        saferc::semantic::analyze_text(&mut sources, "many.safer", &text, None, Default::default());
    let start = Instant::now();
    let shown = saferc::diagnostic::render::render_all(
        &analysis.diagnostics,
        &sources,
        saferc::diagnostic::render::RenderOptions::plain(),
    );
    println!(
        "render {} diagnostics of a {}-line file: {:.0} ms ({} KiB of text)",
        analysis.diagnostics.len(),
        text.lines().count(),
        start.elapsed().as_secs_f64() * 1e3,
        shown.len() / 1024
    );
}

/// `saferc check` over every shipped file (examples, stdlib, pipelines).
fn check_shipped() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["examples", "stdlib", "pipelines"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "safer") {
                    files.push(p);
                }
            }
        }
    }
    let run = || {
        let mut sources = saferc::SourceMap::new();
        let mut errors = 0;
        for f in &files {
            let a = saferc::semantic::analyze_file(
                &mut sources,
                f,
                saferc::semantic::loader::LoadOptions::default(),
            );
            errors += a.diagnostics.len();
        }
        errors
    };
    for _ in 0..3 {
        std::hint::black_box(run());
    }
    let mut times: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(run());
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "check {} shipped files: median {:.2} ms, max {:.2} ms",
        files.len(),
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}
