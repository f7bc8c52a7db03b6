//! E0331 (warning): a declaration of the entry file that nothing the run
//! does reaches: a model, judge, rollout, reflection, rubric, prompt or
//! scorer that no stage or evaluation uses, directly or through what it
//! uses. Such a declaration reads as part of the pipeline but changes
//! nothing: editing it (a judge's `kind`, a rollout's temperature) has no
//! effect, which is how a typo in a name goes unseen. Datasets have their
//! own warning (E0325). A file without stages or evaluations (a library of
//! declarations for other files to `use`) is left alone, and so is a file
//! with errors (a setting refused would make what it names look unused).

use super::hir::{Decl, Setting, Settings, TExpr, TKind, Value};
use super::Analyzer;
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::DeclKind;

/// The kinds E0331 looks at (datasets: E0325; stages and evaluations are
/// what the run does).
const CHECKED: &[DeclKind] = &[
    DeclKind::Model,
    DeclKind::Judge,
    DeclKind::Rollout,
    DeclKind::Reflection,
    DeclKind::Rubric,
    DeclKind::Prompt,
    DeclKind::Scorer,
];

impl Analyzer<'_> {
    /// E0331 for each declaration of the entry file that no stage or
    /// evaluation reaches.
    pub(crate) fn check_declarations_used(&mut self) {
        let Some(reached) = self.reached_from_entry_stages() else {
            return;
        };
        let unused: Vec<usize> = (0..self.decls.len())
            .filter(|&i| {
                let d = &self.decls[i];
                d.module == 0
                    && !reached[i]
                    && CHECKED.contains(&d.kind)
                    && !matches!(d.value, Some(Value::Intrinsic))
            })
            .collect();
        for i in unused {
            let d = &self.decls[i];
            let kind = d.kind.keyword();
            self.diags.push(
                Diagnostic::warning(Code::E0331, format!("{kind} `{}` is never used", d.name))
                    .with_primary(d.span, "no stage or evaluation reaches it")
                    .with_help(
                        "the run never reads it, so editing it changes nothing: use it where it was meant (a misspelt name elsewhere?) or remove it",
                    ),
            );
        }
    }

    /// Which declarations the entry file's stages and evaluations reach
    /// (E0325, E0331); `None` for a file with errors (a setting refused
    /// would make what it names look unused) or without stages or
    /// evaluations (a library of declarations).
    pub(crate) fn reached_from_entry_stages(&self) -> Option<Vec<bool>> {
        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }
        let roots: Vec<usize> = (0..self.decls.len())
            .filter(|&i| {
                self.decls[i].module == 0
                    && matches!(self.decls[i].kind, DeclKind::Train | DeclKind::Eval)
            })
            .collect();
        (!roots.is_empty()).then(|| self.reached_from(roots))
    }

    /// Which declarations `roots` reach through what they name: settings,
    /// filters, rubric parts, parameter defaults, a prompt's or scorer's
    /// value, and the scorers their expressions call.
    fn reached_from(&self, roots: Vec<usize>) -> Vec<bool> {
        let mut reached = vec![false; self.decls.len()];
        let mut todo = roots;
        while let Some(i) = todo.pop() {
            if i >= reached.len() || reached[i] {
                continue;
            }
            reached[i] = true;
            let mut names = Names::default();
            names.decl(&self.decls[i]);
            todo.extend(names.decls);
            todo.extend(names.calls.iter().filter_map(|f| self.scorer_index(f)));
        }
        reached
    }
}

/// What a declaration names: declarations by index, and the functions its
/// expressions call (resolved to scorer declarations by the caller).
#[derive(Default)]
struct Names {
    decls: Vec<usize>,
    calls: Vec<String>,
}

impl Names {
    fn decl(&mut self, d: &Decl) {
        self.settings(&d.settings);
        d.filters.iter().for_each(|e| self.expr(e));
        if let Some(r) = &d.rubric {
            self.decls.extend(r.judge.map(|j| j.0));
            for c in &r.criteria {
                c.scorer.iter().for_each(|e| self.expr(e));
            }
            for p in &r.penalties {
                self.expr(&p.value);
                p.when.iter().for_each(|e| self.expr(e));
            }
            self.expr(&r.total);
        }
        d.value.iter().for_each(|v| self.value(v));
        d.params
            .iter()
            .filter_map(|p| p.default.as_ref())
            .for_each(|v| self.value(v));
    }

    fn settings(&mut self, s: &Settings) {
        for setting in s.0.values() {
            match setting {
                Setting::Value(v) => self.value(v),
                Setting::Block(inner) => self.settings(inner),
            }
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Ref(r) => self.decls.push(r.0),
            Value::Split { dataset, .. } => self.decls.push(dataset.0),
            Value::Criterion { rubric, .. } => self.decls.push(rubric.0),
            Value::Source { path, .. } => self.value(path),
            Value::List(items) => items.iter().for_each(|item| self.value(item)),
            Value::Expr(e) => self.expr(e),
            _ => {}
        }
    }

    fn expr(&mut self, e: &TExpr) {
        match &e.kind {
            TKind::Criterion { rubric, .. } => self.decls.push(rubric.0),
            TKind::Call { func, args, named } => {
                self.calls.push(func.clone());
                args.iter().chain(named.values()).for_each(|a| self.expr(a));
            }
            TKind::Field { base, .. } => self.expr(base),
            TKind::Unary { operand, .. } => self.expr(operand),
            TKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            TKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.expr(cond);
                self.expr(then);
                self.expr(otherwise);
            }
            TKind::List { items } => items.iter().for_each(|item| self.expr(item)),
            TKind::Const { .. } | TKind::Var { .. } => {}
        }
    }
}
