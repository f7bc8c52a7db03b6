//! E0329: a `regex(pattern = "...")` whose pattern saferc's regex engine
//! (Rust's `regex` crate, as `saferc run` uses it) cannot read, refused by
//! `saferc check` rather than at the first completion a run scores.
//!
//! Patterns written as string constants are checked, in a rubric's
//! criteria, penalties and `total` and in the bodies of scorers.

use super::hir::{Const, TExpr, TKind, Value};
use super::Analyzer;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;

impl<'a> Analyzer<'a> {
    /// E0329 for the `regex(...)` patterns of declaration `i` (a rubric or
    /// a scorer with a body): strings written as a pattern (also in either
    /// branch of an `if`); in a scorer's body, the default of a parameter
    /// used as one; in a rubric, a string passed to a scorer for such a
    /// parameter.
    pub(crate) fn check_patterns(&mut self, i: usize) {
        let mut exprs: Vec<&TExpr> = self.decls[i]
            .rubric
            .as_ref()
            .map(super::hir::Rubric::exprs)
            .unwrap_or_default();
        // A scorer's parameters with a string default, used where its body
        // names them.
        let defaults: Vec<(String, String, bool)> = self.decls[i]
            .params
            .iter()
            .filter_map(|p| match &p.default {
                Some(Value::Str(text)) => Some((p.name.clone(), text.clone(), true)),
                _ => None,
            })
            .collect();
        if let Some(Value::Expr(body)) = &self.decls[i].value {
            exprs.push(body);
        }
        let mut patterns = Vec::new();
        for e in exprs {
            self.regex_patterns(e, &defaults, &mut patterns);
        }
        for (pattern, span, whence) in patterns {
            if let Some((why, help)) = pattern_error(&pattern) {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0329,
                        format!("regex pattern {pattern:?} does not compile: {why}"),
                    )
                    .with_primary(span, whence)
                    .with_help(help),
                );
            }
        }
    }

    /// The string patterns of the `regex(...)` calls in `e`, each with
    /// where to point and what to say there. `bound`: names whose string
    /// value a pattern that names them takes, and whether it is the name's
    /// default (a scorer's defaults, or the arguments of a call of a
    /// scorer).
    fn regex_patterns(
        &self,
        e: &TExpr,
        bound: &[(String, String, bool)],
        out: &mut Vec<(String, Span, String)>,
    ) {
        if let TKind::Call { func, args, named } = &e.kind {
            if self.is_builtin_regex(func) {
                if let Some(pattern) = args.first().or_else(|| named.get("pattern")) {
                    written_strings(pattern, bound, e.span, out);
                }
            } else if let Some((params, body)) = self.scorer_with_body(func) {
                // Strings this call passes for the scorer's parameters.
                let passed: Vec<(String, String, bool)> = params
                    .iter()
                    .enumerate()
                    .filter_map(
                        |(k, name)| match &args.get(k).or_else(|| named.get(name))?.kind {
                            TKind::Const {
                                value: Const::Str(text),
                            } => Some((name.clone(), text.clone(), false)),
                            _ => None,
                        },
                    )
                    .collect();
                if !passed.is_empty() {
                    let mut inner = Vec::new();
                    self.regex_patterns(body, &passed, &mut inner);
                    out.extend(inner.into_iter().filter(|(_, _, whence)| whence.starts_with("passed")).map(
                        |(pattern, _, _)| {
                            (pattern, e.span, format!("passed to `{func}` as a regex pattern saferc's engine cannot read"))
                        },
                    ));
                }
            }
        }
        for child in e.children() {
            self.regex_patterns(child, bound, out);
        }
    }

    /// The parameter names and body of the user scorer called as
    /// `qualified`, when it has a body.
    fn scorer_with_body(&self, qualified: &str) -> Option<(Vec<String>, &TExpr)> {
        let d = self.scorer_decl(qualified)?;
        match &d.value {
            Some(Value::Expr(body)) => {
                Some((d.params.iter().map(|p| p.name.clone()).collect(), body))
            }
            _ => None,
        }
    }

    /// Whether `func` (a call's qualified name) is the standard library's
    /// intrinsic `regex` scorer.
    fn is_builtin_regex(&self, func: &str) -> bool {
        self.scorer_decl(func)
            .is_some_and(|d| d.name == "regex" && matches!(d.value, Some(Value::Intrinsic)))
    }
}

/// The strings `pattern` (a `regex` call's pattern argument, the call at
/// `call`) can be, as written: a string, either branch of an `if`, or a
/// name `bound` gives a string (a parameter's default, or what a call
/// passes for it), each with where to point and what to say.
fn written_strings(
    pattern: &TExpr,
    bound: &[(String, String, bool)],
    call: Span,
    out: &mut Vec<(String, Span, String)>,
) {
    match &pattern.kind {
        TKind::Const {
            value: Const::Str(text),
        } => out.push((
            text.clone(),
            pattern.span,
            "saferc's regex engine cannot read this pattern".into(),
        )),
        TKind::If {
            then, otherwise, ..
        } => {
            written_strings(then, bound, call, out);
            written_strings(otherwise, bound, call, out);
        }
        TKind::Var { name } => {
            if let Some((_, text, default)) = bound.iter().find(|(n, _, _)| n == name) {
                let whence = if *default {
                    format!("the default of `{name}`, a pattern saferc's engine cannot read")
                } else {
                    format!("passed as `{name}`, a pattern saferc's engine cannot read")
                };
                out.push((text.clone(), call, whence));
            }
        }
        _ => {}
    }
}

/// Why `pattern` does not compile, with a fix, or `None` when it does.
fn pattern_error(pattern: &str) -> Option<(String, String)> {
    use regex_syntax::ast::ErrorKind;
    let general = "the syntax is Rust's `regex` crate's (https://docs.rs/regex/latest/regex/#syntax); a backslash in a .safer string is written `\\\\`".to_string();
    match regex_syntax::Parser::new().parse(pattern) {
        Ok(_) => {}
        Err(regex_syntax::Error::Parse(e)) => {
            let help = match e.kind() {
                ErrorKind::UnsupportedLookAround => "saferc's regex engine has no look-around (`(?=`, `(?!`, `(?<=`, `(?<!`): match the text around instead, or score it with a criterion of its own".to_string(),
                ErrorKind::UnsupportedBackreference => "saferc's regex engine has no backreferences (`\\1`): write out the repeated text, or use two `regex(...)` criteria".to_string(),
                _ => general,
            };
            return Some((e.kind().to_string(), help));
        }
        Err(regex_syntax::Error::Translate(e)) => return Some((e.kind().to_string(), general)),
        Err(e) => return Some((e.to_string(), general)),
    }
    // Limits the parser does not know (a pattern too large to compile).
    regex::Regex::new(pattern)
        .err()
        .map(|e| (e.to_string(), general))
}

#[cfg(test)]
mod tests {
    use super::pattern_error;

    #[test]
    fn patterns_the_engine_reads_pass_and_others_say_why() {
        for ok in [
            "\\[[0-9]+\\]",
            "(?i)sorry",
            "\\p{Greek}+",
            "(?P<n>a)|(?<m>b)",
            "\\bno\\b",
        ] {
            assert_eq!(pattern_error(ok), None, "{ok}");
        }
        let why = |p: &str| pattern_error(p).map(|(why, _)| why).unwrap_or_default();
        assert!(
            why("(unclosed").contains("unclosed group"),
            "{}",
            why("(unclosed")
        );
        assert!(why("a(?=b)").contains("look-around"), "{}", why("a(?=b)"));
        assert!(
            why("(a)\\1").contains("backreferences"),
            "{}",
            why("(a)\\1")
        );
        assert!(
            why("\\p{NotAScript}").contains("Unicode"),
            "{}",
            why("\\p{NotAScript}")
        );
    }
}
