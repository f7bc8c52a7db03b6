//! E0316 (a warning): a rubric's `total`, a penalty or a scorer's body
//! that divides by something a completion can make 0. A harmonic mean
//! (`2 * safety * helpful / (safety + helpful)`) is 0/0 when both criteria
//! are, and `saferc run` stops at the first such completion (a NaN reward),
//! which can be hours into a run. The values an expression can take are
//! bounded from what is known of its parts: a criterion's score and
//! `weighted` lie in 0..1, `format` in 0 to the sum of its weights, the
//! prelude's scorers and `judge.flag` in 0..1, `answer.length` and
//! `think.length` are 0 or more, constants are themselves. A divisor inside
//! an `if` whose condition reads what the divisor reads, or in the value of
//! a penalty whose `when` reads it, counts as guarded (a condition that
//! reads `weighted` guards the criteria). A division inside a condition is
//! left alone: an infinite or NaN quotient compares without stopping the
//! run. A constant divisor is folded elsewhere (E0316, an error for
//! `x / 0`).
//! A call that gives a scorer 0 for a parameter its body divides by is
//! warned about at the call (as a default of 0 is at the scorer).

use std::collections::BTreeMap;

use super::hir::{ExprTy, Rubric, TExpr, TKind, Value};
use super::Analyzer;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::{BinaryOp, UnaryOp};

/// What is known of the variables an expression reads: each one's range.
type Known = BTreeMap<String, (f64, f64)>;

/// The product of two ranges (0 × ∞ taken as 0).
fn times(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let fix = |v: f64| if v.is_nan() { 0.0 } else { v };
    let corners = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1].map(fix);
    let lo = corners.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// The values `e` can take, where they are bounded by what is known;
/// `None` otherwise.
fn range(e: &TExpr, known: &Known) -> Option<(f64, f64)> {
    match &e.kind {
        TKind::Const { .. } => e.number().map(|n| (n, n)),
        TKind::Var { name } => known.get(name).copied(),
        TKind::Call { func, .. } if func.starts_with("std/std::") || func == "judge.flag" => {
            Some((0.0, 1.0))
        }
        TKind::Field { base, field } if field == "length" => match &base.kind {
            TKind::Var { name } if name == "answer" || name == "think" => {
                Some((0.0, f64::INFINITY))
            }
            _ => None,
        },
        TKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } => range(operand, known).map(|(lo, hi)| (-hi, -lo)),
        TKind::Binary { op, lhs, rhs } => {
            let (l, r) = (range(lhs, known)?, range(rhs, known)?);
            match op {
                BinaryOp::Add => Some((l.0 + r.0, l.1 + r.1)),
                BinaryOp::Sub => Some((l.0 - r.1, l.1 - r.0)),
                BinaryOp::Mul => Some(times(l, r)),
                _ => None,
            }
        }
        TKind::If {
            then, otherwise, ..
        } => {
            let (a, b) = (range(then, known)?, range(otherwise, known)?);
            Some((a.0.min(b.0), a.1.max(b.1)))
        }
        _ => None,
    }
}

/// The variables, `.length` fields and calls `e` reads (what a guard must
/// read): `known`'s criteria too where it reads `weighted`, their mean.
fn reads(e: &TExpr, known: &Known, out: &mut Vec<String>) {
    match &e.kind {
        TKind::Var { name } if name == "weighted" => {
            out.push(name.clone());
            out.extend(
                known
                    .keys()
                    .filter(|k| !["weighted", "format"].contains(&k.as_str()))
                    .cloned(),
            );
        }
        TKind::Var { name } => out.push(name.clone()),
        TKind::Field { base, field } => {
            if let TKind::Var { name } = &base.kind {
                out.push(format!("{name}.{field}"));
            }
            return;
        }
        TKind::Call { func, .. } => out.push(format!("{func}()")),
        _ => {}
    }
    for child in e.children() {
        reads(child, known, out);
    }
}

/// The divisors of `e` that can be 0 and that nothing guards (`guard`: a
/// condition that holds wherever `e` is computed), with whether they
/// always are.
fn zero_divisors<'e>(e: &'e TExpr, known: &Known, guard: Option<&TExpr>) -> Vec<(&'e TExpr, bool)> {
    fn walk<'e>(
        e: &'e TExpr,
        known: &Known,
        guarded: &mut Vec<String>,
        out: &mut Vec<(&'e TExpr, bool)>,
    ) {
        // A condition's quotient (infinite or NaN) compares without
        // stopping the run.
        if e.ty == ExprTy::Bool {
            return;
        }
        if let TKind::Binary {
            op: BinaryOp::Div | BinaryOp::Rem,
            rhs,
            ..
        } = &e.kind
        {
            let mut read = Vec::new();
            reads(rhs, known, &mut read);
            let unguarded = !read.iter().any(|r| guarded.contains(r));
            let numeric = rhs.ty.is_numeric();
            if let (None, true, true, Some((lo, hi))) =
                (rhs.number(), numeric, unguarded, range(rhs, known))
            {
                if lo <= 0.0 && 0.0 <= hi {
                    out.push((rhs, lo == 0.0 && hi == 0.0));
                }
            }
        }
        if let TKind::If {
            cond,
            then,
            otherwise,
        } = &e.kind
        {
            let before = guarded.len();
            reads(cond, known, guarded);
            walk(then, known, guarded, out);
            walk(otherwise, known, guarded, out);
            guarded.truncate(before);
            return;
        }
        for child in e.children() {
            walk(child, known, guarded, out);
        }
    }
    let mut guarded = Vec::new();
    if let Some(guard) = guard {
        reads(guard, known, &mut guarded);
    }
    let mut out = Vec::new();
    walk(e, known, &mut guarded, &mut out);
    out
}

impl Analyzer<'_> {
    /// E0316 warnings for the divisors of rubric `rubric`'s `total` and
    /// penalties that a completion can make 0 (`penalties` and `format`
    /// where the rubric has none are E0316 errors already: `skip`).
    pub(crate) fn possible_zero_divisors_in_rubric(
        &mut self,
        name: &str,
        rubric: &Rubric,
        skip: &[&str],
    ) {
        let mut known: Known = rubric
            .criteria
            .iter()
            .map(|c| (c.name.clone(), (0.0, 1.0)))
            .collect();
        known.insert("weighted".into(), (0.0, 1.0));
        let format: f64 = rubric.formats.iter().map(|f| f.weight.max(0.0)).sum();
        known.insert("format".into(), (0.0, format));
        let skipped =
            |e: &TExpr| matches!(&e.kind, TKind::Var { name } if skip.contains(&name.as_str()));
        // A penalty's value is computed only where its `when` holds.
        let mut found: Vec<(String, &TExpr, Option<&TExpr>)> = vec![(
            format!("the `total` of rubric `{name}`"),
            &rubric.total,
            None,
        )];
        for p in &rubric.penalties {
            found.push((format!("penalty `{}`", p.name), &p.value, p.when.as_ref()));
        }
        for (what, e, guard) in found {
            for (divisor, always) in zero_divisors(e, &known, guard) {
                if skipped(divisor) {
                    continue;
                }
                let span = divisor.span;
                self.warn_zero_divisor(&what, span, always);
            }
        }
    }

    /// E0316 warnings for the divisors of a scorer's body that a
    /// completion can make 0 (`answer.length`, a prelude scorer's score).
    pub(crate) fn possible_zero_divisors_in_scorer(&mut self, name: &str, body: &TExpr) {
        for (divisor, always) in zero_divisors(body, &Known::new(), None) {
            let span = divisor.span;
            self.warn_zero_divisor(&format!("scorer `{name}`"), span, always);
        }
    }

    /// E0316 warnings for calls, in rubrics and scorer bodies, that give a
    /// scorer a constant 0 for a parameter its body divides by (unguarded).
    pub(crate) fn zero_arguments_to_divisors(&mut self) {
        let mut exprs: Vec<&TExpr> = Vec::new();
        for d in &self.decls {
            if let Some(r) = &d.rubric {
                exprs.extend(r.criteria.iter().filter_map(|c| c.scorer.as_ref()));
                for p in &r.penalties {
                    exprs.push(&p.value);
                    exprs.extend(p.when.as_ref());
                }
                exprs.push(&r.total);
            }
            if let (crate::syntax::ast::DeclKind::Scorer, Some(Value::Expr(body))) =
                (d.kind, &d.value)
            {
                exprs.push(body);
            }
        }
        let mut calls = Vec::new();
        for e in exprs {
            calls_in(e, &mut calls);
        }
        let mut warnings = Vec::new();
        for call in calls {
            let TKind::Call { func, args, named } = &call.kind else {
                continue;
            };
            let Some(j) = self.scorer_index(func) else {
                continue;
            };
            let Some(Value::Expr(body)) = &self.decls[j].value else {
                continue;
            };
            let mut divided = Vec::new();
            super::settings::divisors(body, &mut divided);
            let (params, scorer) = (&self.decls[j].params, &self.decls[j].name);
            let given = params.iter().enumerate().filter_map(|(k, p)| {
                let arg = args.get(k).or_else(|| named.get(&p.name))?;
                (arg.number() == Some(0.0)).then_some((p.name.clone(), arg.span))
            });
            let zero: Vec<(String, Span)> = given
                .filter(|(name, _)| divided.iter().any(|(d, _)| d == name))
                .collect();
            for (name, span) in zero {
                warnings.push(
                    Diagnostic::warning(Code::E0316, format!("this call gives `{name}` 0, and scorer `{scorer}` divides by `{name}`"))
                        .with_primary(span, "0")
                        .with_note("a reward must be a finite number: `saferc run` stops at the first completion whose score is 0/0 (an infinite score is clamped, with a warning)")
                        .with_help(format!("give `{name}` a value that is not 0, or guard the division in `{scorer}`: `if {name} > 0 {{ ... }} else {{ 0 }}`")),
                );
            }
        }
        self.diags.extend(warnings);
    }

    fn warn_zero_divisor(&mut self, what: &str, span: Span, always: bool) {
        let (message, label) = match always {
            true => (
                format!("{what} divides by something that is always 0"),
                "always 0",
            ),
            false => (
                format!("{what} divides by something a completion can make 0"),
                "can be 0",
            ),
        };
        self.diags.push(
            Diagnostic::warning(Code::E0316, message)
                .with_primary(span, label)
                .with_note("a reward must be a finite number: `saferc run` stops at the first completion that makes it 0/0 (an infinite score is clamped, with a warning)")
                .with_help("guard it with an `if` whose condition reads the divisor (`if D > 0 { x / D } else { 0 }`; in a penalty, `when D > 0`), or keep it away from 0 (`x / (D + 0.01)`)"),
        );
    }
}

/// The calls in `e`, outermost first.
fn calls_in<'e>(e: &'e TExpr, out: &mut Vec<&'e TExpr>) {
    if matches!(e.kind, TKind::Call { .. }) {
        out.push(e);
    }
    for child in e.children() {
        calls_in(child, out);
    }
}
