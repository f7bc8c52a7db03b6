//! `reward_spec.json`: what `safer_reward.py` needs to score a stage's
//! completions as `saferc run` does, taken from the plan as it is (the
//! rubric's criteria, penalties, format terms and `total` as expression
//! trees, the user scorers, the judge), plus the dataset's source, filters
//! and splits for the trainer scripts.

use safer_ir::plan::{Expr, Plan, RubricSpec, StageSpec, Val};
use serde_json::json;
use std::collections::BTreeMap;

/// The format `safer_reward.py` reads; raised when the file's meaning changes.
pub const SPEC_FORMAT: u32 = 1;

/// The spec of `stage`'s reward, as pretty JSON.
///
/// # Errors
/// A stage without a reward rubric, or one whose judge is a local model
/// (nothing outside saferc can run it; an HTTP endpoint can serve it).
pub fn reward_spec(plan: &Plan, stage: &StageSpec) -> Result<String, String> {
    let reward = stage
        .reward
        .as_deref()
        .ok_or_else(|| format!("stage `{}` has no `reward` rubric", stage.name))?;
    let rubric = plan
        .rubrics
        .get(reward)
        .ok_or_else(|| format!("rubric `{reward}` is not in the plan"))?;
    let mut judges = serde_json::Map::new();
    if let Some(name) = &rubric.judge {
        let judge = plan
            .judges
            .get(name)
            .ok_or_else(|| format!("judge `{name}` is not in the plan"))?;
        if judge.kind == "model" {
            return Err(format!(
                "rubric `{reward}` asks judge `{name}`, a local model (`kind = model`), which a trainer outside saferc cannot run; serve that model behind an OpenAI-compatible endpoint (vLLM: `vllm serve DIR`) and declare the judge `kind = http`"
            ));
        }
        judges.insert(
            name.clone(),
            json!({
                "kind": judge.kind,
                "endpoint": judge.endpoint,
                "model_name": judge.model_name,
                "api_key_env": judge.api_key_env,
                "ca_file": judge.ca_file,
                "retries": judge.retries,
                "timeout_s": judge.timeout_s,
                "concurrency": judge.concurrency,
                "temperature": judge.temperature,
                "fallback": judge.fallback,
                "images": judge.images,
                "max_tokens": judge.max_tokens,
            }),
        );
    }
    let mut datasets = serde_json::Map::new();
    for split in std::iter::once(&stage.data).chain(stage.eval_data.as_ref()) {
        if let Some(d) = plan.datasets.get(&split.dataset) {
            datasets.insert(
                split.dataset.clone(),
                json!({
                    "source": d.source,
                    "filters": d.filters,
                    "limit": d.limit,
                    "images": d.images,
                    "on_bad_row": d.on_bad_row,
                    "splits": d.splits,
                    "seed": d.seed,
                    "saferc_settings": d.row_settings(),
                }),
            );
        }
    }
    let mut counts_tokens = false;
    for_each_call(rubric, plan, &mut |func, _, _| {
        counts_tokens |= func == "length"
    });
    let tokenizer = plan
        .models
        .get(&stage.policy)
        .map(|m| m.tokenizer.clone().unwrap_or_else(|| m.weights.clone()));
    let spec = json!({
        "format": SPEC_FORMAT,
        "generated_by": format!("saferc {} emit", env!("CARGO_PKG_VERSION")),
        "program_hash": plan.program_hash,
        "stage": stage.name,
        "reward": reward,
        "rubric_hash": plan.rubric_hashes.get(reward),
        "rubrics": { reward: rubric },
        "functions": plan.functions,
        "judges": judges,
        "datasets": datasets,
        // Its rows' `objects` are `hallucinated_objects`'s vocabulary.
        "train_dataset": stage.data.dataset,
        "tokenizer": tokenizer,
        "counts_tokens": counts_tokens,
        "max_tokens": plan.rollout(stage.rollout.as_ref()).max_tokens,
    });
    serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())
}

/// Calls `f` with every call in `rubric` and in the plan's scorers with a
/// body (which call built-in scorers too: `length` inside `brief`).
fn for_each_call<'p>(
    rubric: &'p RubricSpec,
    plan: &'p Plan,
    f: &mut impl FnMut(&'p str, &'p [Expr], &'p BTreeMap<String, Expr>),
) {
    let bodies = plan.functions.values().map(|function| &function.body);
    for e in rubric.exprs().chain(bodies) {
        e.for_each_call(f);
    }
}

/// The patterns of the `regex(...)` calls in `rubric` and the scorers,
/// where they are string constants: written in the call, or reaching it
/// through a user scorer's parameter (its default, or a constant argument
/// of a call to that scorer).
pub(crate) fn regex_patterns(rubric: &RubricSpec, plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |pattern: Option<&String>| {
        if let Some(pattern) = pattern.filter(|p| !out.contains(p)) {
            out.push(pattern.clone());
        }
    };
    for_each_call(rubric, plan, &mut |func, args, named| {
        if func == "regex" {
            add(const_str(args.first().or_else(|| named.get("pattern"))));
        }
    });
    for (function, index) in pattern_params(plan) {
        let Some((name, default)) = plan
            .functions
            .get(&function)
            .and_then(|f| f.params.get(index))
        else {
            continue;
        };
        if let Some(Val::Str(pattern)) = default {
            add(Some(pattern));
        }
        for_each_call(rubric, plan, &mut |func, args, named| {
            if func == function {
                add(const_str(args.get(index).or_else(|| named.get(name))));
            }
        });
    }
    out
}

/// `e`'s text where it is a string constant.
fn const_str(e: Option<&Expr>) -> Option<&String> {
    match e {
        Some(Expr::Const {
            value: Val::Str(text),
        }) => Some(text),
        _ => None,
    }
}

/// The user scorers' parameters (scorer, index) that are a `regex(...)`
/// call's pattern in their body (a scorer's body calls built-in scorers
/// only, so a pattern passes through one parameter at most).
fn pattern_params(plan: &Plan) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (name, function) in &plan.functions {
        function.body.for_each_call(&mut |func, args, named| {
            if func != "regex" {
                return;
            }
            if let Some(Expr::Var { name: var }) = args.first().or_else(|| named.get("pattern")) {
                if let Some(index) = function.params.iter().position(|(p, _)| p == var) {
                    if !found.contains(&(name.clone(), index)) {
                        found.push((name.clone(), index));
                    }
                }
            }
        });
    }
    found
}

/// Why Python's `re` may match `pattern` differently from saferc's
/// `regex` crate, if it may: read from the pattern's syntax tree
/// ([`Differences`]). A pattern the crate cannot parse (refused by `saferc
/// check`, E0329) is said so.
pub(crate) fn regex_difference(pattern: &str) -> Option<&'static str> {
    let Ok(ast) = regex_syntax::ast::parse::Parser::new().parse(pattern) else {
        return Some("saferc's regex engine cannot read it");
    };
    if let Some(why) = spaced_class_in_verbose_mode(pattern) {
        return Some(why);
    }
    regex_syntax::ast::visit(
        &ast,
        Differences {
            pattern,
            global_until: 0,
        },
    )
    .err()
}

/// In `(?x)` mode saferc's regex crate ignores whitespace inside `[...]`
/// too, while Python's `re` keeps it as a character of the class: a
/// pattern with the `x` flag and whitespace inside a class may differ.
fn spaced_class_in_verbose_mode(pattern: &str) -> Option<&'static str> {
    // A flag group anywhere (`(?x)`, `(?ix:...)`) that turns `x` on.
    let verbose = pattern.match_indices("(?").any(|(at, _)| {
        let flags = &pattern[at + 2..];
        let end = flags.find([')', ':']).unwrap_or(flags.len());
        flags[..end]
            .split('-')
            .next()
            .is_some_and(|on| on.contains('x'))
    });
    if !verbose {
        return None;
    }
    let (mut in_class, mut escaped) = (false, false);
    for c in pattern.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            c if in_class && c.is_whitespace() => {
                return Some("in `(?x)` mode saferc's regex crate ignores whitespace inside `[...]` too; Python's `re` keeps it as a character of the class (write `\\ ` for a space)");
            }
            _ => {}
        }
    }
    None
}

/// What Python's `re` (3.11 and later) reads differently from saferc's
/// `regex` crate: `$` (Python's also matches before a final newline), `\z`
/// and `\p{..}` (Python refuses them), `\w`, `\b` (Python's leave combining
/// marks out of a word), `\s` (Python's also matches `\x1c`–`\x1f`), `\<`,
/// `\>` and `\b{start}` (Python reads `\<` as `<`), `[[:digit:]]`, classes
/// nested in classes and class operations (`&&`, `--`, `~~`; Python reads
/// them as characters), `\x{..}` and `\u{..}`, `(?<name>..)`, the `U` and
/// `R` flags, and flags set after the pattern's start (Python refuses
/// them). The visit stops at the first, as its error. `global_until`:
/// where a flag group that Python takes as global may begin (the pattern's
/// start, or the end of such a group just before it). A repetition
/// written with spaces (`a{1, 2}`) is a repetition for the crate and text
/// for Python, in `(?x)` mode too (which strips the spaces and reads
/// `a{1,2}` as text).
struct Differences<'p> {
    pattern: &'p str,
    global_until: usize,
}

impl regex_syntax::ast::Visitor for Differences<'_> {
    type Output = ();
    type Err = &'static str;

    fn finish(self) -> Result<(), &'static str> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &regex_syntax::ast::Ast) -> Result<(), &'static str> {
        use regex_syntax::ast::{AssertionKind, Ast, GroupKind};
        match ast {
            Ast::Assertion(a) => match a.kind {
                AssertionKind::EndLine => Err("Python's `$` also matches before a final newline, saferc's only at the very end"),
                AssertionKind::EndText => Err("`\\z` is an escape of saferc's regex crate that Python's `re` refuses"),
                AssertionKind::WordBoundary | AssertionKind::NotWordBoundary => Err(WORD),
                AssertionKind::StartLine | AssertionKind::StartText => Ok(()),
                _ => Err("`\\<`, `\\>` and `\\b{start}`-style boundaries are saferc's; Python's `re` reads `\\<` as `<` and refuses `\\b{`"),
            },
            Ast::ClassPerl(c) => perl_class(c),
            Ast::ClassUnicode(_) => Err(UNICODE_CLASS),
            Ast::Literal(l) => literal(l),
            Ast::Flags(f) => {
                if f.span.start.offset != self.global_until {
                    return Err("flags set after the pattern's start (`a(?i)b`): Python's `re` refuses them; put them first or scope them as `(?i:b)`");
                }
                if f.flags.items.iter().any(|i| matches!(i.kind, regex_syntax::ast::FlagsItemKind::Negation)) {
                    return Err("a flag turned off for the whole pattern (`(?-i)`): Python's `re` turns flags off only in a group, `(?-i:...)`");
                }
                self.global_until = f.span.end.offset;
                flags(&f.flags)
            }
            Ast::Repetition(r)
                if matches!(r.op.kind, regex_syntax::ast::RepetitionKind::Range(_))
                    && self
                        .pattern
                        .get(r.op.span.start.offset..r.op.span.end.offset)
                        .is_some_and(|op| op.contains(char::is_whitespace)) =>
            {
                Err("a repetition written with spaces (`a{1, 2}`) repeats in saferc's regex crate; Python's `re` reads it as text, in `(?x)` mode too (write `a{1,2}`)")
            }
            Ast::Group(g) => match &g.kind {
                GroupKind::CaptureName { starts_with_p: false, .. } => Err("`(?<name>..)` is saferc's named group; Python's `re` writes `(?P<name>..)`"),
                GroupKind::NonCapturing(f) => flags(f),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn visit_class_set_item_pre(
        &mut self,
        item: &regex_syntax::ast::ClassSetItem,
    ) -> Result<(), &'static str> {
        use regex_syntax::ast::ClassSetItem;
        match item {
            ClassSetItem::Ascii(_) => Err("`[[:digit:]]`-style classes are saferc's; Python's `re` reads them as plain sets of characters"),
            ClassSetItem::Bracketed(_) => Err("a class inside a class (`[a[bc]]`) is saferc's union; Python's `re` reads the inner `[` as a character"),
            ClassSetItem::Unicode(_) => Err(UNICODE_CLASS),
            ClassSetItem::Perl(c) => perl_class(c),
            ClassSetItem::Literal(l) => literal(l),
            ClassSetItem::Range(r) => literal(&r.start).and_then(|()| literal(&r.end)),
            _ => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(
        &mut self,
        _op: &regex_syntax::ast::ClassSetBinaryOp,
    ) -> Result<(), &'static str> {
        Err("class operations (`&&`, `--`, `~~`) are saferc's; Python's `re` reads them as characters")
    }
}

const WORD: &str = "Python's `\\w` and `\\b` leave combining marks (Devanagari vowel signs, decomposed accents) out of a word, saferc's keep them in";
const UNICODE_CLASS: &str =
    "`\\p{..}` and `\\P{..}` are escapes of saferc's regex crate that Python's `re` refuses";

fn perl_class(c: &regex_syntax::ast::ClassPerl) -> Result<(), &'static str> {
    use regex_syntax::ast::ClassPerlKind;
    match c.kind {
        ClassPerlKind::Word => Err(WORD),
        ClassPerlKind::Space => {
            Err("Python's `\\s` also matches the separators `\\x1c`–`\\x1f`, saferc's does not")
        }
        ClassPerlKind::Digit => Ok(()),
    }
}

fn literal(l: &regex_syntax::ast::Literal) -> Result<(), &'static str> {
    match l.kind {
        regex_syntax::ast::LiteralKind::HexBrace(_) => Err("`\\x{..}` and `\\u{..}` are escapes of saferc's regex crate that Python's `re` refuses; write `\\x41` or `\\u0041`"),
        _ => Ok(()),
    }
}

fn flags(f: &regex_syntax::ast::Flags) -> Result<(), &'static str> {
    use regex_syntax::ast::{Flag, FlagsItemKind};
    let mut negated = false;
    for item in &f.items {
        match item.kind {
            FlagsItemKind::Negation => negated = true,
            FlagsItemKind::Flag(Flag::SwapGreed | Flag::CRLF) => {
                return Err("the `U` and `R` flags are saferc's; Python's `re` refuses them");
            }
            FlagsItemKind::Flag(Flag::Unicode) if negated => {
                return Err("`(?-u)` turns Unicode off in saferc's regex crate; Python's `re` refuses it for text");
            }
            FlagsItemKind::Flag(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::*;

    /// Whether `e` calls `func` anywhere.
    fn expr_calls(e: &Expr, func: &str) -> bool {
        let mut found = false;
        e.for_each_call(&mut |f, _, _| found |= f == func);
        found
    }

    #[test]
    fn patterns_python_may_match_differently_are_named() {
        for differs in [
            "^[0-9]+$",
            "x\\Z",
            "a(?=b)",
            "(?<!no )risk",
            "\\p{L}+",
            "[\\p{L}]",
            "end\\z",
            "(?<n>a)",
            "[[:digit:]]",
            "[x[:digit:]]",
            "[a[bc]]",
            "[a-z&&[^aeiou]]{3}",
            "\\bno\\b",
            "\\w+",
            "[\\w]",
            "a\\sb",
            "\\<cat\\>",
            "\\x{41}",
            "\\u{41}",
            "(?U)a+",
            "(?R)a$",
            "a(?i)b",
            "(?-i)a",
            "(?i-s)a",
            "(?-u:a)",
            "[\\x{41}-\\x{5A}]",
            "b(?ix:[ a])",
            "(?x)[a b]c",
            "(?xi)[\\t]|[ ]",
            "ha{1, 2}!",
            "ha{ 3 }",
            "(?x) ha{1, 2}!",
        ] {
            assert!(regex_difference(differs).is_some(), "{differs}");
        }
        for same in [
            "(?i)please|thank",
            "cost \\$5",
            "^\\d+",
            "[$]",
            "(?P<n>a)",
            "(?i:a)b",
            "(?i)(?s)abc",
            "(?-i:a)b",
            "\\x41\\u0041",
            "[a-z]{2,3}?",
            "a b [c d]",
            "(?x)[a\\ b]c",
        ] {
            assert_eq!(regex_difference(same), None, "{same}");
        }
    }

    #[test]
    fn calls_inside_operators_are_found() {
        let call = |f: &str| Expr::Call {
            func: f.into(),
            args: Vec::new(),
            named: BTreeMap::new(),
        };
        let e = Expr::Binary {
            op: safer_ir::plan::expr::Binary::Add,
            lhs: Box::new(call("length")),
            rhs: Box::new(Expr::If {
                cond: Box::new(call("refusal")),
                then: Box::new(call("regex")),
                otherwise: Box::new(Expr::Var { name: "x".into() }),
            }),
        };
        for f in ["length", "refusal", "regex"] {
            assert!(expr_calls(&e, f), "{f}");
        }
        assert!(!expr_calls(&e, "label_match"));
    }
}
