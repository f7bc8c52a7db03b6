//! Questions that a rubric's judge must answer, checked against its kind.
//!
//! A `rules` judge (named, or the default of a rubric that names none) runs
//! scorers only: a criterion without a `scorer` (E0326) and a
//! `judge.score("...")` or `judge.flag("...")` call (E0328), in the
//! rubric or in the body of a scorer it calls, would stop `saferc run` at
//! its first scoring, after any stage before it had trained.

use super::hir::{TExpr, TKind, Value};
use super::Analyzer;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::DeclKind;

/// A `judge.*` call found in a rubric: where the rubric asks it (the call
/// itself, or the call of the scorer whose body asks it), the method, and
/// the scorer and the call in its body when it is asked there.
struct Asked {
    at: Span,
    method: String,
    through: Option<(String, Span)>,
}

impl<'a> Analyzer<'a> {
    /// E0326 and E0328 for rubric `i`, when its judge is `rules`.
    pub(crate) fn check_questions_answered(&mut self, i: usize) {
        let Some(rubric) = &self.decls[i].rubric else {
            return;
        };
        let judge = rubric.judge.map(|j| {
            let d = &self.decls[j.0];
            (
                d.name.clone(),
                d.settings.text("kind").unwrap_or("rules").to_string(),
            )
        });
        if judge.as_ref().is_some_and(|(_, kind)| kind != "rules") {
            return;
        }
        let rubric_name = self.decls[i].name.clone();
        let whose = match &judge {
            Some((name, _)) => format!("its judge `{name}` is `kind = rules`"),
            None => "the rubric names no judge, so `rules` scores it".to_string(),
        };
        self.check_criteria_scored(i, &rubric_name, &whose);
        self.check_judge_calls(i, &rubric_name, &whose);
    }

    /// E0326: a criterion without a `scorer` under a `rules` judge: only a
    /// `model` or `http` judge answers such a criterion.
    fn check_criteria_scored(&mut self, i: usize, rubric_name: &str, whose: &str) {
        let Some(rubric) = &self.decls[i].rubric else {
            return;
        };
        let unscored: Vec<(String, Span)> = rubric
            .criteria
            .iter()
            .filter(|c| c.scorer.is_none())
            .map(|c| (c.name.clone(), c.name_span))
            .collect();
        for (name, span) in unscored {
            self.diags.push(
                Diagnostic::error(
                    Code::E0326,
                    format!("criterion `{name}` of rubric `{rubric_name}` has no scorer, and {whose}"),
                )
                .with_primary(span, "nothing scores this criterion")
                .with_note("a `rules` judge runs scorers only; a criterion without one is asked of a `model` or `http` judge")
                .with_help(format!(
                    "give it a scorer (`criterion {name} weight 1 {{ scorer = refusal() }}`), or a judge that answers: `rubric {rubric_name}(judge = grader) {{ ... }}` with `judge grader {{ kind = http, endpoint = \"...\", model_name = \"...\" }}`"
                )),
            );
        }
    }

    /// E0328: `judge.score(...)` or `judge.flag(...)` in a criterion's
    /// scorer, a penalty, `total`, or the body of a scorer they call, under
    /// a `rules` judge: nobody answers the question.
    fn check_judge_calls(&mut self, i: usize, rubric_name: &str, whose: &str) {
        let Some(rubric) = &self.decls[i].rubric else {
            return;
        };
        let exprs = rubric.exprs();
        let mut asked = Vec::new();
        for e in exprs {
            self.judge_calls(e, None, &mut asked);
        }
        for a in asked {
            let method = &a.method;
            let mut d = Diagnostic::error(
                Code::E0328,
                format!("rubric `{rubric_name}` asks its judge a question (`{method}`), and {whose}"),
            )
            .with_note("a `rules` judge runs scorers only; `judge.score` and `judge.flag` are answered by a `model` or `http` judge");
            d = match &a.through {
                None => d.with_primary(a.at, "nobody answers this question"),
                Some((scorer, inner)) => {
                    let d = d.with_primary(
                        a.at,
                        format!("scorer `{scorer}` asks the judge, and nobody answers"),
                    );
                    if inner.source == a.at.source {
                        d.with_secondary(*inner, "the question")
                    } else {
                        d
                    }
                }
            };
            self.diags.push(d.with_help(format!(
                "score it with a scorer (`refusal()`, `regex(...)`, ...), or give the rubric a judge that answers: `rubric {rubric_name}(judge = grader) {{ ... }}` with `judge grader {{ kind = http, endpoint = \"...\", model_name = \"...\" }}`"
            )));
        }
    }

    /// Every `judge.*` call in `e`, and in the bodies of the user scorers it
    /// calls (a body calls built-in scorers only, so one level deep).
    /// `through`: the scorer whose body `e` is, and where it is called.
    fn judge_calls(&self, e: &TExpr, through: Option<(&str, Span)>, out: &mut Vec<Asked>) {
        if let TKind::Call { func, .. } = &e.kind {
            if let Some(method) = func.strip_prefix("judge.") {
                out.push(Asked {
                    at: through.map_or(e.span, |(_, at)| at),
                    method: format!("judge.{method}"),
                    through: through.map(|(name, _)| (name.to_string(), e.span)),
                });
            } else if through.is_none() {
                if let Some(d) = self.scorer_decl(func) {
                    if let Some(Value::Expr(body)) = &d.value {
                        self.judge_calls(body, Some((d.name.as_str(), e.span)), out);
                    }
                }
            }
        }
        for child in e.children() {
            self.judge_calls(child, through, out);
        }
    }

    /// The scorer declaration called as `qualified`, if one is.
    pub(crate) fn scorer_decl(&self, qualified: &str) -> Option<&super::hir::Decl> {
        self.scorer_index(qualified).map(|i| &self.decls[i])
    }

    /// The index of the scorer declaration called as `qualified`.
    pub(crate) fn scorer_index(&self, qualified: &str) -> Option<usize> {
        self.decls
            .iter()
            .position(|d| d.kind == DeclKind::Scorer && d.qualified == qualified)
    }
}
