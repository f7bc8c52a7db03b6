//! `saferc fmt` over every `.safer` file in the repository: the output
//! parses to the same AST (spans aside, comments included), formatting it
//! again changes nothing, and shipped files are already formatted.

#![allow(clippy::panic)]

use safer_tests::{all_valid_safer_files, relative, shipped_safer_files, without_spans};
use saferc::span::SourceId;
use saferc::{fmt, syntax};

#[test]
fn format_round_trips_and_is_idempotent() {
    let files = all_valid_safer_files();
    assert!(
        files.len() >= 10,
        "expected the corpus and shipped files, found {}",
        files.len()
    );
    for path in files {
        let name = relative(&path);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Ok(before) = syntax::parse(SourceId(0), &text) else {
            panic!("{name} does not parse");
        };
        let once = fmt::format_module(&before, &text);
        let after = match syntax::parse(SourceId(0), &once) {
            Ok(m) => m,
            Err(d) => panic!("formatted {name} does not parse: {}\n{once}", d.message),
        };
        assert_eq!(
            without_spans(&before),
            without_spans(&after),
            "formatting changed the syntax tree of {name}:\n{once}"
        );
        let twice = fmt::format_module(&after, &once);
        assert_eq!(
            once, twice,
            "formatting {name} twice gives a different result"
        );
    }
}

#[test]
fn shipped_files_are_formatted() {
    for path in shipped_safer_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let formatted = fmt::format_source(&text).unwrap_or_default();
        assert_eq!(
            text,
            formatted,
            "{} is not formatted: run `saferc fmt {}`",
            relative(&path),
            relative(&path)
        );
    }
}

#[test]
fn layout_rules() {
    let messy = "model   p{arch=tiny_vlm\n  weights=\"w\"   # kept\n\n\n  dtype=f32}\njudge j { kind = rules }\n\
                 rubric r { total = if a<1 {0} else {1}\n criterion s weight 0.5 }\n";
    let out = fmt::format_source(messy).unwrap_or_default();
    insta::assert_snapshot!(out, @r#"
    model p {
      arch    = tiny_vlm
      weights = "w"  # kept

      dtype = f32
    }

    judge j { kind = rules }

    rubric r {
      total = if a < 1 { 0 } else { 1 }
      criterion s weight 0.5
    }
    "#);
}

#[test]
fn long_lists_break_one_item_per_line() {
    let src = format!(
        "dataset d {{\n  dedup = [{}]\n}}\n",
        (0..30)
            .map(|i| format!("\"set{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = fmt::format_source(&src).unwrap_or_default();
    assert!(
        out.contains("  dedup = [\n    \"set0\",\n    \"set1\",\n"),
        "{out}"
    );
    assert_eq!(fmt::format_source(&out).unwrap_or_default(), out);
}

/// Comments inside a statement, or right under one with a blank line after
/// them, keep their place: formatting twice gives the same text, and a `##`
/// line never becomes the documentation of what follows it.
#[test]
fn comments_keep_their_place_and_formatting_is_idempotent() {
    let cases = [
        "model policy {\n  arch # k\n    = tiny_vlm\n  weights = \"m\"\n}\n",
        "use # a\n  \"std/prompts/reflect.safer\" as reflect\n\nprompt p = \"x\"\n",
        "prompt a = \"x\"\n## stray doc\n\nprompt p = \"x\"\n",
        "model m {\n  arch = tiny_vlm\n  ## stray\n\n  weights = \"m\"\n}\n",
        // Set apart by blank lines on both sides: documents nothing, and
        // the blank line under it stays.
        "model a { arch = tiny_vlm, weights = \"w\" }\n\n## doc\n\nmodel b { arch = tiny_vlm, weights = \"w\" }\n",
        "rollout r {\n  group = 4\n\n  ## about max\n\n  max_tokens = 8 tokens\n}\n",
        // A leading comma after a blank line: one alignment rule for both passes.
        "rollout r {\n  group = 4\n\n  , max_tokens = 8 tokens\n}\n",
        // `##` remarks after code, in a declaration's head, after a comma
        // or in a criterion's head: they document nothing, and must not
        // come to document the first setting (or the next one).
        "model policy { ## the policy we train\n  arch    = tiny_vlm\n  weights = \"w\"\n}\n",
        "model\n## x\npolicy {\n  arch = tiny_vlm\n  weights = \"w\"\n}\n",
        "model\n## x\npolicy {\n  ## doc of arch\n  arch = tiny_vlm\n  weights = \"w\"\n}\n",
        "train t {\n  reward = r\n  , ## x\n  grpo { lr = 1e-4 }\n}\n",
        "rubric r {\n  criterion safety\n  ## x\n  weight 1 { scale = 0..10 }\n}\n",
        // A comment after the next statement on the line is that one's.
        "train t {\n  grpo { lr = 1e-4, batch = # c\n 2 prompts }\n}\n",
        "dataset d {\n  a = 1, b = 2  # about b\n  c = 3\n}\n",
        // A `##` remark right before a closing bracket: nothing follows it
        // to document, so no blank line goes under it.
        "model m {\n  arch = tiny_vlm\n  ## note\n}\n",
        "rollout r {\n  stop = [\n    \"a\",\n    ## end\n  ]\n  max_tokens = 8 tokens\n}\n",
    ];
    for case in cases {
        let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
        let twice = fmt::format_source(&once).unwrap_or_else(|e| panic!("{e:?}"));
        if case.contains("## note") || case.contains("## end") {
            assert_eq!(once, case, "a remark before a closing bracket");
        }
        assert_eq!(once, twice, "not idempotent on {case:?}");
        let docs = |text: &str| -> Vec<Vec<String>> {
            let module = syntax::parse(SourceId(0), text).unwrap_or_else(|e| panic!("{e:?}"));
            let mut docs: Vec<Vec<String>> = Vec::new();
            for item in &module.items {
                docs.push(item.docs.clone());
                if let syntax::ast::ItemKind::Decl(d) = &item.kind {
                    if let syntax::ast::DeclBody::Block(b) = &d.body {
                        docs.extend(b.stmts.iter().map(|s| s.docs.clone()));
                    }
                }
            }
            docs
        };
        assert_eq!(
            docs(case),
            docs(&once),
            "documentation moved in {case:?} -> {once:?}"
        );
        assert_eq!(
            case.matches('#').count(),
            once.matches('#').count(),
            "{once:?}"
        );
    }
}

/// A comment inside an expression goes on its own line above its
/// statement, a trailing comment stays at the end of the line, and the
/// statements keep their alignment. A `##` remark there documented nothing
/// in the source and documents nothing after: a blank line keeps it apart
/// (it became the statement's documentation, changing the tree).
#[test]
fn comments_inside_expressions_go_above_their_statement() {
    let case = "rubric r {\n  criterion a weight (1 ## of a\n   + 1) \"x\"\n  criterion b weight 1\n}\n\
                model m {\n  arch = tiny_vlm\n  weights = (\"m\" # path\n    + \"n\") # end\n  dtype = f32\n}\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "rubric r {\n  ## of a\n\n  criterion a weight (1 + 1) \"x\"\n  criterion b weight 1\n}\n\n\
         model m {\n  arch = tiny_vlm\n  # path\n  weights = (\"m\" + \"n\")  # end\n  dtype   = f32\n}\n"
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
    let module = syntax::parse(SourceId(0), &once).unwrap_or_else(|e| panic!("{e:?}"));
    let syntax::ast::ItemKind::Decl(d) = &module.items[0].kind else {
        panic!("a declaration")
    };
    let syntax::ast::DeclBody::Block(b) = &d.body else {
        panic!("a block")
    };
    assert!(b.stmts[0].docs.is_empty());
    assert!(b.stmts[1].docs.is_empty());
}

/// A comment moved out of a declaration's expression goes above its `##`
/// documentation, which stays next to the declaration (it went between
/// them, and the declaration lost its documentation).
#[test]
fn moved_comments_do_not_split_a_declaration_from_its_documentation() {
    let case = "## Doc.\nscorer cond() = # why\n  think.verdict == answer.verdict\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "# why\n## Doc.\nscorer cond() = think.verdict == answer.verdict\n"
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
    let module = syntax::parse(SourceId(0), &once).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(module.items[0].docs, ["Doc."]);
}

/// A comment on a line after another statement belongs to the statement it
/// follows, not to the first one on the line (`# about b` went to `a`, and
/// `# c`, inside `batch`, to `lr`).
#[test]
fn a_comment_goes_with_the_statement_it_follows() {
    let cases = [
        (
            "dataset d {\n  a = 1, b = 2  # about b\n  c = 3\n}\n",
            "dataset d {\n  a = 1\n  b = 2  # about b\n  c = 3\n}\n",
        ),
        (
            "train t {\n  grpo { lr = 1e-4, batch = # c\n 2 prompts }\n}\n",
            "train t {\n  grpo {\n    lr = 1e-4\n    # c\n    batch = 2 prompts\n  }\n}\n",
        ),
    ];
    for (case, want) in cases {
        let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(once, want, "{case:?}");
        assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
    }
}

/// A comment on the line of a block's `{` stays there: it is about the
/// block (it went above the first statement, as if about that one).
#[test]
fn a_comment_after_an_opening_brace_stays_on_its_line() {
    let cases = [
        (
            "train t { # the main stage\n  policy = p\n  grpo {   # knobs\n    lr = 1e-6\n  }\n}\n",
            "train t {  # the main stage\n  policy = p\n  grpo {  # knobs\n    lr = 1e-6\n  }\n}\n",
        ),
        // A comment of its own line under the `{` stays above the statement.
        (
            "train t {\n  # about policy\n  policy = p\n}\n",
            "train t {\n  # about policy\n  policy = p\n}\n",
        ),
        // An empty block keeps its comment too.
        ("rubric r { # to do\n}\n", "rubric r {  # to do\n}\n"),
    ];
    for (case, want) in cases {
        let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(once, want, "{case:?}");
        assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
    }
}

/// Characters a reader cannot see stay escaped, or become escaped, in a
/// formatted string (a bidirectional override written as `\u{202e}` was
/// printed raw, invisible in review: "Trojan Source"); visible text, accents
/// included, stays as written, and the value is the same.
#[test]
fn invisible_characters_in_strings_are_escaped() {
    let case = "prompt p = \"a\\u{202e}b\\u{200b}c\\u{a0}d\u{2066}e\u{feff}f é\"\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "prompt p = \"a\\u{202e}b\\u{200b}c\\u{a0}d\\u{2066}e\\u{feff}f é\"\n"
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
    let value = |text: &str| {
        let module = syntax::parse(SourceId(0), text).unwrap_or_else(|e| panic!("{e:?}"));
        match &module.items[0].kind {
            syntax::ast::ItemKind::Decl(d) => match &d.body {
                syntax::ast::DeclBody::Value(v) => match &v.kind {
                    syntax::ast::ExprKind::String(s) => s.value.clone(),
                    _ => String::new(),
                },
                syntax::ast::DeclBody::Block(_) => String::new(),
            },
            syntax::ast::ItemKind::Use(_) => String::new(),
        }
    };
    assert_eq!(value(case), value(&once));
    assert!(value(case).contains('\u{202e}'));
}

/// Aligning `=` never pushes a line past 100 columns: a setting that fits
/// at its own key's width but not padded to a longer key's is left out of
/// the alignment (its list went to 106 columns, unbroken).
#[test]
fn alignment_never_pushes_a_line_past_the_width() {
    let case = "dataset d {\n  source = jsonl(\"d.jsonl\")\n  a_very_long_setting_name = 1\n  \
                filter_fields = [\"aaaaaaaaaaaaaa\", \"bbbbbbbbbbbbbbbbb\", \"ccccccccccccccccc\", \"ddddddddddddd\"]\n}\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "dataset d {\n  source                   = jsonl(\"d.jsonl\")\n  a_very_long_setting_name = 1\n  \
         filter_fields = [\"aaaaaaaaaaaaaa\", \"bbbbbbbbbbbbbbbbb\", \"ccccccccccccccccc\", \"ddddddddddddd\"]\n}\n"
    );
    assert!(once.lines().all(|l| l.chars().count() <= 100), "{once}");
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
}

/// A call written over several lines, or too long for the line, is printed
/// one argument per line with a trailing comma, and the comments between
/// its arguments stay beside them (they went above the statement, and the
/// call was joined onto one line). A line break inside an argument alone
/// leaves the call on one line.
#[test]
fn calls_written_over_lines_keep_one_argument_per_line() {
    let case =
        "dataset d {\n  source = jsonl(\"a.jsonl\",  # the main file\n    # skip bad rows\n    \
                on_bad_row = skip)\n  other = jsonl(\"b.jsonl\", on_bad_row = skip)\n  \
                far = jsonl(\"{long}.jsonl\")\n  nested = f([\n    1,\n  ])\n}\n"
            .replace("{long}", &"b".repeat(90));
    let once = fmt::format_source(&case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        format!(
            "dataset d {{\n  source = jsonl(\n    \"a.jsonl\",  # the main file\n    # skip bad rows\n    \
             on_bad_row = skip,\n  )\n  other = jsonl(\"b.jsonl\", on_bad_row = skip)\n  \
             far = jsonl(\n    \"{}.jsonl\",\n  )\n  nested = f([1])\n}}\n",
            "b".repeat(90)
        )
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
}

/// A declaration's parameters written over several lines, or too long for
/// the line, are printed one per line with their comments.
#[test]
fn long_parameter_lists_break_one_parameter_per_line() {
    let case = "scorer helpful(field: string = \"label\", unsafe_values: list = [\"unsafe\"], \
                min_words: number = 3, at_most: number = 9) = intrinsic\n\n\
                rubric r(judge = rules,  # the judge\n  threshold = 0.5\n  # last\n) {\n  criterion a weight 1\n}\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "scorer helpful(\n  field: string = \"label\",\n  unsafe_values: list = [\"unsafe\"],\n  \
         min_words: number = 3,\n  at_most: number = 9,\n) = intrinsic\n\n\
         rubric r(\n  judge = rules,  # the judge\n  threshold = 0.5,\n  # last\n) {\n  criterion a weight 1\n}\n"
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
}

/// Comments stay with the element they follow or lie in, in calls and
/// parameter lists printed one element per line: one at the end of a line
/// holding several arguments stays with the last of them (it moved to the
/// first), those inside an argument printed on one line go above it (the
/// second moved to the next argument), and one after `) {` stays after the
/// `{`. A head that breaks its parameters measures its value from `) = `,
/// and a value declaration's head counts its value in its width.
#[test]
fn comments_stay_with_their_element_in_broken_calls_and_heads() {
    let cases = [
        (
            "dataset d {\n  source = jsonl(\"a.jsonl\", on_bad_row = skip,  # noisy\n  )\n}\n",
            "dataset d {\n  source = jsonl(\n    \"a.jsonl\",\n    on_bad_row = skip,  # noisy\n  )\n}\n",
        ),
        (
            "dataset d {\n  source = jsonl(\n    \"a.jsonl\",\n    limit = 1 + # c1\n      # c2\n      2,\n  )\n}\n",
            "dataset d {\n  source = jsonl(\n    \"a.jsonl\",\n    # c1\n    # c2\n    limit = 1 + 2,\n  )\n}\n",
        ),
        (
            "rubric r(judge = rules,\n  threshold = 0.5) {  # the gate\n  criterion a weight 1\n}\n",
            "rubric r(\n  judge = rules,\n  threshold = 0.5,\n) {  # the gate\n  criterion a weight 1\n}\n",
        ),
        (
            "scorer pick(\n  field: string = \"label\",\n) = [1, 2]\n",
            "scorer pick(\n  field: string = \"label\",\n) = [1, 2]\n",
        ),
    ];
    for (case, want) in cases {
        let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(once, want, "{case:?}");
        assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
    }
    // A `##` remark before a `)` of a call printed on one line moves above
    // its statement, where the bracket no longer follows it: a blank line
    // keeps it from documenting the statement (the tree changed).
    for case in [
        "rubric r {\n  criterion a weight 1 { scorer = refusal(## x\n  ) }\n}\n",
        "model m {\n  arch = tiny_vlm\n  weights = f(\"w\" ## y\n  )\n}\n",
    ] {
        let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
        let tree = |text: &str| {
            without_spans(&syntax::parse(SourceId(0), text).unwrap_or_else(|e| panic!("{e:?}")))
        };
        assert_eq!(tree(case), tree(&once), "{once}");
        assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
    }
    let head = "scorer helpful2(field: string = \"label\", unsafe_values: list = [\"unsafe\"], min_words: number = 3) = intrinsic\n";
    let once = fmt::format_source(head).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        once.starts_with("scorer helpful2(\n  field: string"),
        "{once}"
    );
    assert!(once.lines().all(|l| l.chars().count() <= 100), "{once}");
}

/// The trailing comments on the elements of a call or list printed one per
/// line are aligned as a block's are (each sat two spaces after its own
/// element), and with the lines around them (the `)` after an element
/// without a comment starts a run of its own); a line whose code alone
/// passes 100 columns keeps its comment two spaces after it and sets no
/// column for its neighbours (the `seed` line's comment went to column 110).
#[test]
fn trailing_comments_in_broken_calls_are_aligned() {
    let case = "dataset d {\n  source = jsonl(\"data/main.jsonl\",  # the source\n    \
                \"b.jsonl\",  # the second\n    \"c.jsonl\")  # the third\n  \
                filter label in [\"unsafe\", \"borderline\", \"benign-with-a-very-long-name-for-this-test-to-pass-a-hundred\"]  # wide\n  \
                seed = 7  # seed\n  shuffle = true  # shuffled\n}\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "dataset d {\n  source = jsonl(\n    \"data/main.jsonl\",  # the source\n    \
         \"b.jsonl\",          # the second\n    \"c.jsonl\",\n  )  # the third\n  \
         filter label in [\"unsafe\", \"borderline\", \"benign-with-a-very-long-name-for-this-test-to-pass-a-hundred\"]  # wide\n  \
         seed    = 7     # seed\n  shuffle = true  # shuffled\n}\n"
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
}

/// A string whose escape gives a private-use character (the kind that
/// marks trailing comments while the file prints) keeps it: the mark is a
/// character the printed file lacks, not just the source (the string became
/// spaces, and the mark stayed in the file).
#[test]
fn a_private_use_character_in_a_string_is_not_taken_for_a_mark() {
    let case = "dataset d {\n  source = jsonl(\"d.jsonl\")  # a\n  note = \"\\u{e000}\\u{e001}\"  # b\n}\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "dataset d {\n  source = jsonl(\"d.jsonl\")  # a\n  note   = \"\u{e000}\u{e001}\"              # b\n}\n"
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
}

/// Trailing comments line up in the columns a terminal draws: a wide
/// character (Chinese, most emoji) takes two, so the comment after
/// `"评审模型"` (8 columns, 4 characters) sits where its neighbours' do.
#[test]
fn trailing_comments_align_by_drawn_width() {
    let case = "judge j {\n  kind = http # a\n  model_name = \"评审模型\" # b\n  endpoint = \"http://x/v1\" # c\n}\n";
    let once = fmt::format_source(case).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        once,
        "judge j {\n  kind       = http           # a\n  model_name = \"评审模型\"     # b\n  endpoint   = \"http://x/v1\"  # c\n}\n"
    );
    assert_eq!(fmt::format_source(&once).unwrap_or_default(), once);
}
