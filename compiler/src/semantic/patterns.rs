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
use crate::syntax::ast::DeclKind;

impl<'a> Analyzer<'a> {
    /// E0329 for the `regex(...)` patterns of declaration `i` (a rubric or
    /// a scorer with a body).
    pub(crate) fn check_patterns(&mut self, i: usize) {
        let mut exprs: Vec<&TExpr> = Vec::new();
        if let Some(rubric) = &self.decls[i].rubric {
            exprs.extend(rubric.criteria.iter().filter_map(|c| c.scorer.as_ref()));
            for p in &rubric.penalties {
                exprs.push(&p.value);
                exprs.extend(p.when.as_ref());
            }
            exprs.push(&rubric.total);
        }
        if let Some(Value::Expr(body)) = &self.decls[i].value {
            exprs.push(body);
        }
        let mut patterns = Vec::new();
        for e in exprs {
            self.regex_patterns(e, &mut patterns);
        }
        for (pattern, span) in patterns {
            if let Some((why, help)) = pattern_error(&pattern) {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0329,
                        format!("regex pattern {pattern:?} does not compile: {why}"),
                    )
                    .with_primary(span, "saferc's regex engine cannot read this pattern")
                    .with_help(help),
                );
            }
        }
    }

    /// The string-constant patterns of the `regex(...)` calls in `e`.
    fn regex_patterns(&self, e: &TExpr, out: &mut Vec<(String, Span)>) {
        match &e.kind {
            TKind::Call { func, args, named } => {
                if self.is_builtin_regex(func) {
                    let pattern = args.first().or_else(|| named.get("pattern"));
                    if let Some(TExpr {
                        kind:
                            TKind::Const {
                                value: Const::Str(text),
                            },
                        span,
                        ..
                    }) = pattern
                    {
                        out.push((text.clone(), *span));
                    }
                }
                for a in args.iter().chain(named.values()) {
                    self.regex_patterns(a, out);
                }
            }
            TKind::Unary { operand, .. } => self.regex_patterns(operand, out),
            TKind::Binary { lhs, rhs, .. } => {
                self.regex_patterns(lhs, out);
                self.regex_patterns(rhs, out);
            }
            TKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.regex_patterns(cond, out);
                self.regex_patterns(then, out);
                self.regex_patterns(otherwise, out);
            }
            TKind::List { items } => {
                for item in items {
                    self.regex_patterns(item, out);
                }
            }
            TKind::Field { base, .. } => self.regex_patterns(base, out),
            TKind::Const { .. } | TKind::Var { .. } | TKind::Criterion { .. } => {}
        }
    }

    /// Whether `func` (a call's qualified name) is the standard library's
    /// intrinsic `regex` scorer.
    fn is_builtin_regex(&self, func: &str) -> bool {
        self.decls.iter().any(|d| {
            d.kind == DeclKind::Scorer
                && d.name == "regex"
                && d.qualified == func
                && matches!(d.value, Some(Value::Intrinsic))
        })
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
