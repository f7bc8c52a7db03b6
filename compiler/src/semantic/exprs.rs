//! Typing and constant folding of expressions (`total`, `when`, `keep`,
//! `filter`, scorer calls), in the scope of the block that holds them.

use super::hir::{Const, ExprTy, TExpr, TKind, Value};
use super::schema::{self, Scope};
use super::scope::Found;
use super::Analyzer;
use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::{self, BinaryOp, DeclKind, ExprKind, UnaryOp};
use std::collections::BTreeMap;

/// Which names an expression may use.
#[derive(Debug, Clone)]
pub(crate) enum ExprScope {
    /// Constants only.
    Const,
    /// A rubric's criteria, `weighted`, `penalties`, `format`, its
    /// parameters, `judge`, `think`, `answer`, and scorer calls.
    Rubric {
        /// The rubric.
        decl: usize,
    },
    /// `mean`, `std`, `min`, `max` of rollout scores.
    Curate,
    /// `rubric.criterion` scores and `reward`.
    Reflection,
    /// Row fields and `len`, `lower`, `contains`.
    Filter,
    /// The body of a user scorer (`scorer f(max: number = 200) = ...`): its
    /// parameters, `judge`, `think`, `answer`, and built-in scorer calls.
    Scorer {
        /// The scorer.
        decl: usize,
    },
}

impl ExprScope {
    pub(crate) fn from_schema(scope: Scope, decl: usize) -> Self {
        match scope {
            Scope::Rubric => ExprScope::Rubric { decl },
            Scope::Curate => ExprScope::Curate,
            Scope::Reflection => ExprScope::Reflection,
        }
    }
}

/// The rubric's sums, made once its criteria and penalties are scored.
pub(super) const RUBRIC_VARS: &[&str] = &["weighted", "penalties", "format"];
const RUBRIC_OBJECTS: &[&str] = &["judge", "think", "answer"];
const CURATE_VARS: &[&str] = &["mean", "std", "min", "max"];
const FILTER_FUNCTIONS: &[(&str, ExprTy)] = &[
    ("len", ExprTy::Number),
    ("lower", ExprTy::String),
    ("contains", ExprTy::Bool),
];

/// How filter function `func` is called, for messages.
fn filter_form(func: &str) -> &'static str {
    match func {
        "len" => "`len(field)`",
        "lower" => "`lower(field)`",
        _ => "`contains(field, item)`",
    }
}

/// The error for `think` or `answer` used as a value: they are the
/// completion's parts, read through a field (a row field of that name
/// cannot be read in a rubric).
fn bare_part(name: &str, span: Span) -> Option<Diagnostic> {
    (name == "think" || name == "answer").then(|| {
        Diagnostic::error(
            Code::E0300,
            format!("`{name}` is the completion's {name} part, not a value"),
        )
        .with_primary(span, "read one of its fields")
        .with_help(format!(
            "write `{name}.text`, `{name}.length` or `{name}.verdict`"
        ))
    })
}

/// A number literal as written, with its minus sign.
pub(crate) fn written_number(e: &ast::Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Number(n) => Some(n.text.clone()),
        ExprKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } => written_number(operand).map(|n| format!("-{n}")),
        _ => None,
    }
}

/// How to make a condition, with names the context `what` can read: a
/// row's fields in a `filter`, a rubric's criteria in a reflection's `when`
/// (by the rubric's name) or a penalty's (by their own), the score
/// statistics in a curation's `keep`.
fn condition_help(what: &str) -> &'static str {
    match what {
        "a `filter` condition" => "compare it: `score > 0.5`, `label == \"unsafe\"`",
        "a penalty's `when`" => "compare a criterion of this rubric: `safety < 0.5`",
        "`when`" => "compare a criterion of the rubric: `r.safety < 0.5`",
        "`keep`" => "compare the rollouts' scores: `mean in 0.2..0.8 and std >= 0.15`",
        _ => "compare it: `x > 0.5`",
    }
}

/// `d` with the fix that swaps the ends of the range `e` as written, where
/// `e` is a range of two number literals written without spaces (its span
/// is exactly `a..b`); `d` unchanged otherwise.
pub(crate) fn with_ends_swapped(d: Diagnostic, e: &ast::Expr) -> Diagnostic {
    let ExprKind::Binary {
        op: BinaryOp::Range,
        lhs,
        rhs,
    } = &e.kind
    else {
        return d;
    };
    let (Some(a), Some(b)) = (written_number(lhs), written_number(rhs)) else {
        return d;
    };
    let wrote = format!("{a}..{b}");
    match wrote.len() == e.span.len() {
        true => d.with_fix(e.span, &wrote, &format!("{b}..{a}")),
        false => d,
    }
}

fn texpr(kind: TKind, ty: ExprTy, span: Span) -> TExpr {
    TExpr { kind, ty, span }
}

fn constant(value: Const, span: Span) -> TExpr {
    let ty = match &value {
        Const::Number(_) => ExprTy::Number,
        Const::Bool(_) => ExprTy::Bool,
        Const::Str(_) => ExprTy::String,
        Const::Range(..) => ExprTy::Range,
    };
    texpr(TKind::Const { value }, ty, span)
}

/// What a scorer call's argument check reads of one argument: its type,
/// and for a list literal its first item that is not a string (a built-in
/// scorer's list parameters take strings).
#[derive(Clone, Copy)]
struct ArgType {
    ty: ExprTy,
    item_not_string: Option<(Span, ExprTy)>,
    /// Its value, when it is a constant number.
    number: Option<f64>,
}

impl ArgType {
    fn of(arg: &TExpr) -> ArgType {
        let item_not_string = match &arg.kind {
            TKind::List { items } => items
                .iter()
                .find(|item| !matches!(item.ty, ExprTy::String | ExprTy::Any))
                .map(|item| (item.span, item.ty)),
            _ => None,
        };
        ArgType {
            ty: arg.ty,
            item_not_string,
            number: arg.number(),
        }
    }
}

/// The type a parameter's values must have, as written: its declared
/// type, else its default's when that is a literal; `None` when neither
/// says.
fn written_param_type(p: &ast::Param) -> Option<ExprTy> {
    if let Some(t) = &p.ty {
        return ExprTy::declared(&t.name);
    }
    let mut default = &p.default.as_ref()?.kind;
    loop {
        return Some(match default {
            ExprKind::Number(_) => ExprTy::Number,
            ExprKind::String(_) => ExprTy::String,
            ExprKind::Bool { .. } => ExprTy::Bool,
            ExprKind::List { .. } => ExprTy::List,
            ExprKind::Paren { inner } | ExprKind::Unary { operand: inner, .. } => {
                default = &inner.kind;
                continue;
            }
            _ => return None,
        });
    }
}

/// A parameter's default as an expression: a number, boolean, string or
/// range as a constant, a list of those as a list literal; `None` for
/// another value.
fn constant_of(value: &Value, span: Span) -> Option<TExpr> {
    Some(match value {
        Value::Number(n) => constant(Const::Number(*n), span),
        Value::Bool(b) => constant(Const::Bool(*b), span),
        Value::Str(s) => constant(Const::Str(s.clone()), span),
        Value::Range { low, high } => constant(Const::Range(*low, *high), span),
        Value::List(items) => texpr(
            TKind::List {
                items: items
                    .iter()
                    .map(|i| constant_of(i, span))
                    .collect::<Option<Vec<_>>>()?,
            },
            ExprTy::List,
            span,
        ),
        _ => return None,
    })
}

/// An expression of unknown type after an error (stops error cascades).
fn poisoned(span: Span) -> TExpr {
    texpr(
        TKind::Var {
            name: "<error>".into(),
        },
        ExprTy::Any,
        span,
    )
}

impl<'a> Analyzer<'a> {
    /// Types and folds `e` in `scope`.
    pub(crate) fn typed(&mut self, decl: usize, e: &ast::Expr, scope: &ExprScope) -> TExpr {
        let span = e.span;
        match &e.kind {
            ExprKind::Number(n) => constant(Const::Number(n.value), span),
            ExprKind::Quantity { value, .. } => constant(Const::Number(value.value), span),
            ExprKind::String(s) => constant(Const::Str(s.value.clone()), span),
            ExprKind::Bool { value } => constant(Const::Bool(*value), span),
            ExprKind::Paren { inner } => self.typed(decl, inner, scope),
            ExprKind::List { items } => {
                let items: Vec<TExpr> = items.iter().map(|i| self.typed(decl, i, scope)).collect();
                texpr(TKind::List { items }, ExprTy::List, span)
            }
            ExprKind::Name { name } => self.name(decl, name, span, scope),
            ExprKind::Field { .. } => self.field(decl, e, scope),
            ExprKind::Index { base, index } => {
                let base = self.typed(decl, base, scope);
                let index = self.typed(decl, index, scope);
                self.index_type(&base, &index);
                // A string's item is a string (or nothing past its end); a
                // list literal's item at a constant index has that item's
                // type (`[1, "a"][1]` is a string); other items any type.
                let item = match (&base.kind, index.number()) {
                    (TKind::List { items }, Some(i)) if i.fract() == 0.0 => {
                        let at = if i < 0.0 { items.len() as f64 + i } else { i };
                        (at >= 0.0).then(|| items.get(at as usize)).flatten()
                    }
                    _ => None,
                };
                let ty = match (base.ty, item) {
                    (ExprTy::String, _) => ExprTy::String,
                    (_, Some(item)) => item.ty,
                    _ => ExprTy::Any,
                };
                texpr(
                    TKind::Call {
                        func: "index".into(),
                        args: vec![base, index],
                        named: BTreeMap::new(),
                    },
                    ty,
                    span,
                )
            }
            ExprKind::Call { callee, args } => self.call(decl, callee, args, span, scope),
            ExprKind::Unary { op, operand } => {
                let inner = self.typed(decl, operand, scope);
                self.unary(*op, inner, span)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let l = self.typed(decl, lhs, scope);
                let r = self.typed(decl, rhs, scope);
                if *op == BinaryOp::Range && self.reversed_range(e, lhs, rhs, &l, &r) {
                    return poisoned(span);
                }
                self.binary(*op, l, r, span)
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.typed(decl, cond, scope);
                self.expect_bool(&c, "an `if` condition");
                let t = self.typed(decl, then, scope);
                let o = self.typed(decl, otherwise, scope);
                let ty = match (t.ty, o.ty) {
                    (a, b) if a == b => a,
                    (a, b) if a.is_numeric() && b.is_numeric() => ExprTy::Number,
                    (ExprTy::Any, b) => b,
                    (a, ExprTy::Any) => a,
                    (a, b) => {
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0300,
                                format!(
                                    "the branches of `if` differ: {} and {}",
                                    a.describe(),
                                    b.describe()
                                ),
                            )
                            .with_primary(o.span, b.describe())
                            .with_secondary(t.span, a.describe())
                            .with_help("both branches must have the same type"),
                        );
                        ExprTy::Any
                    }
                };
                if let Some(Const::Bool(b)) = c.constant() {
                    return if *b { t } else { o };
                }
                texpr(
                    TKind::If {
                        cond: Box::new(c),
                        then: Box::new(t),
                        otherwise: Box::new(o),
                    },
                    ty,
                    span,
                )
            }
        }
    }

    /// `judge` in a rubric expression or a scorer body, or a bare `think`
    /// or `answer` (an error, [`bare_part`]); `None` for another name.
    fn rubric_object(&mut self, name: &str, span: Span) -> Option<TExpr> {
        if name == "judge" {
            return Some(texpr(TKind::Var { name: name.into() }, ExprTy::Any, span));
        }
        let d = bare_part(name, span)?;
        self.diags.push(d);
        Some(poisoned(span))
    }

    fn name(&mut self, decl: usize, name: &str, span: Span, scope: &ExprScope) -> TExpr {
        let var = |name: &str, ty| texpr(TKind::Var { name: name.into() }, ty, span);
        let candidates: Vec<String> = match scope {
            ExprScope::Const => Vec::new(),
            ExprScope::Filter => return var(name, ExprTy::Any),
            ExprScope::Curate => {
                if CURATE_VARS.contains(&name) {
                    return var(name, ExprTy::Number);
                }
                CURATE_VARS.iter().map(|s| s.to_string()).collect()
            }
            ExprScope::Reflection => {
                if name == "reward" {
                    return var(name, ExprTy::Number);
                }
                // A bare rubric name stands for its total.
                let module = self.info[decl].module;
                if let Some(Found::Decl(r)) = self.scopes.lookup(module, name) {
                    if !self.scopes.modules[module].local.contains_key(name) {
                        self.glob_uses.push((module, name.to_string(), span));
                    }
                    if self.decls[r.0].kind == DeclKind::Rubric {
                        return texpr(
                            TKind::Criterion {
                                rubric: r,
                                criterion: None,
                            },
                            ExprTy::Number,
                            span,
                        );
                    }
                }
                vec!["reward".into()]
            }
            ExprScope::Scorer { decl: scorer } => {
                if let Some(t) = self.rubric_object(name, span) {
                    return t;
                }
                // Parameters are bound when the scorer is called.
                let params = self.decls[*scorer].params.clone();
                if let Some(p) = params.iter().find(|p| p.name == name) {
                    // Its declared type, else its default's (a list's
                    // items are known only at run time).
                    return var(name, p.expected_type().unwrap_or(ExprTy::Any));
                }
                let mut c: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
                c.extend(RUBRIC_OBJECTS.iter().map(|s| s.to_string()));
                c
            }
            ExprScope::Rubric { decl: rubric } => {
                if self.info[*rubric].criteria.iter().any(|c| c == name) {
                    return var(name, ExprTy::Score);
                }
                if RUBRIC_VARS.contains(&name) {
                    return var(name, ExprTy::Number);
                }
                if let Some(t) = self.rubric_object(name, span) {
                    return t;
                }
                let params = self.decls[*rubric].params.clone();
                if let Some(p) = params.iter().find(|p| p.name == name) {
                    // A rubric takes no arguments: its parameters are
                    // their defaults (one without is E0211 where declared).
                    return match &p.default {
                        Some(default) => {
                            constant_of(default, span).unwrap_or_else(|| var(name, ExprTy::Any))
                        }
                        None => poisoned(span),
                    };
                }
                let mut c: Vec<String> = self.info[*rubric].criteria.clone();
                c.extend(
                    RUBRIC_VARS
                        .iter()
                        .chain(RUBRIC_OBJECTS)
                        .map(|s| s.to_string()),
                );
                c.extend(params.iter().map(|p| p.name.clone()));
                c
            }
        };
        if matches!(scope, ExprScope::Reflection) {
            let rubrics = self.rubrics_with_criterion(self.info[decl].module, name);
            if !rubrics.is_empty() {
                self.criterion_without_rubric(name, span, &rubrics);
                return poisoned(span);
            }
        }
        let what = match scope {
            ExprScope::Const => format!("`{name}` is not a constant"),
            _ => format!("unknown name `{name}`"),
        };
        let mut d = Diagnostic::error(Code::E0203, what).with_primary(span, "not found here");
        d = match (did_you_mean(name, candidates.iter().map(String::as_str)), scope) {
            (Some(best), _) => d.with_suggestion(span, name, &best),
            (None, ExprScope::Const) => d.with_help("this setting takes a literal value"),
            (None, ExprScope::Rubric { .. }) => d.with_help(format!(
                "a rubric expression can use its criteria, `weighted`, `penalties`, `format` and its parameters: {}",
                crate::diagnostic::one_of(&candidates)
            )),
            (None, ExprScope::Scorer { decl: scorer }) => {
                let params: Vec<String> =
                    self.decls[*scorer].params.iter().map(|p| p.name.clone()).collect();
                d.with_help(if params.is_empty() {
                    "a scorer's body can use `judge`, `think`, `answer` and built-in scorers (this one has no parameters)".to_string()
                } else {
                    format!(
                        "a scorer's body can use its parameters ({}), `judge`, `think`, `answer` and built-in scorers",
                        crate::diagnostic::one_of(&params)
                    )
                })
            }
            (None, _) => d.with_help(format!("names here: {}", crate::diagnostic::one_of(&candidates))),
        };
        self.diags.push(d);
        poisoned(span)
    }

    fn field(&mut self, decl: usize, e: &ast::Expr, scope: &ExprScope) -> TExpr {
        let ExprKind::Field { base, name } = &e.kind else {
            return poisoned(e.span);
        };
        match scope {
            ExprScope::Reflection => {
                let value = self.criterion_ref(decl, e);
                match value {
                    Some(Value::Criterion { rubric, criterion }) => {
                        let ty = if criterion.is_some() {
                            ExprTy::Score
                        } else {
                            ExprTy::Number
                        };
                        texpr(TKind::Criterion { rubric, criterion }, ty, e.span)
                    }
                    _ => poisoned(e.span),
                }
            }
            ExprScope::Rubric { .. } | ExprScope::Scorer { .. } => {
                // `think.x` / `answer.x`: the part itself has no value.
                let b = match &base.kind {
                    ExprKind::Name { name } if name == "think" || name == "answer" => {
                        texpr(TKind::Var { name: name.clone() }, ExprTy::Any, base.span)
                    }
                    _ => self.typed(decl, base, scope),
                };
                let ty = match (&b.kind, name.name.as_str()) {
                    (TKind::Var { name: obj }, "verdict" | "text")
                        if obj == "think" || obj == "answer" =>
                    {
                        ExprTy::String
                    }
                    (TKind::Var { name: obj }, "length") if obj == "think" || obj == "answer" => {
                        ExprTy::Number
                    }
                    (TKind::Var { name: obj }, field) if obj == "think" || obj == "answer" => {
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0212,
                                format!("`{obj}` has no field `{field}`"),
                            )
                            .with_primary(name.span, "unknown field")
                            .with_help(format!("`{obj}` has `text`, `verdict` and `length`")),
                        );
                        ExprTy::Any
                    }
                    _ => {
                        self.no_fields(&b, name);
                        ExprTy::Any
                    }
                };
                texpr(
                    TKind::Field {
                        base: Box::new(b),
                        field: name.name.clone(),
                    },
                    ty,
                    e.span,
                )
            }
            _ => {
                let b = self.typed(decl, base, scope);
                self.no_fields(&b, name);
                texpr(
                    TKind::Field {
                        base: Box::new(b),
                        field: name.name.clone(),
                    },
                    ExprTy::Any,
                    e.span,
                )
            }
        }
    }

    fn call(
        &mut self,
        decl: usize,
        callee: &ast::Expr,
        args: &[ast::Arg],
        span: Span,
        scope: &ExprScope,
    ) -> TExpr {
        let mut positional = Vec::new();
        let mut named = BTreeMap::new();
        let mut types = Vec::with_capacity(args.len());
        for arg in args {
            let v = self.typed(decl, &arg.value, scope);
            types.push(ArgType::of(&v));
            match &arg.name {
                Some(n) => {
                    named.insert(n.name.clone(), v);
                }
                None => positional.push(v),
            }
        }
        let call = |func: String, ty, positional, named| {
            texpr(
                TKind::Call {
                    func,
                    args: positional,
                    named,
                },
                ty,
                span,
            )
        };
        match (&callee.kind, scope) {
            (
                ExprKind::Field { base, name },
                ExprScope::Rubric { .. } | ExprScope::Scorer { .. },
            ) if matches!(&base.kind, ExprKind::Name { name } if name == "judge") => {
                let ty = match name.name.as_str() {
                    "flag" => ExprTy::Bool,
                    "score" => ExprTy::Score,
                    other => {
                        self.diags.push(
                            Diagnostic::error(Code::E0203, format!("a judge has no method `{other}`"))
                                .with_primary(name.span, "unknown method")
                                .with_help("a judge has `judge.flag(\"name\")` (a yes/no verdict) and `judge.score(\"name\")` (a 0..1 score)"),
                        );
                        return poisoned(span);
                    }
                };
                self.expect_string_arg(&positional, span, &format!("judge.{}", name.name));
                call(format!("judge.{}", name.name), ty, positional, named)
            }
            (ExprKind::Name { name }, ExprScope::Filter) => {
                match FILTER_FUNCTIONS.iter().find(|(f, _)| f == name) {
                    Some((f, ty)) => {
                        self.check_filter_call(f, &positional, &named, span);
                        call((*f).to_string(), *ty, positional, named)
                    }
                    None => {
                        let mut d =
                            Diagnostic::error(Code::E0203, format!("unknown function `{name}`"))
                                .with_primary(callee.span, "not a filter function");
                        d = match did_you_mean(name, FILTER_FUNCTIONS.iter().map(|(f, _)| *f)) {
                            Some(best) => d.with_suggestion(callee.span, name, &best),
                            None => d.with_help("filters can call `len`, `lower` and `contains`"),
                        };
                        self.diags.push(d);
                        poisoned(span)
                    }
                }
            }
            (
                ExprKind::Name { .. } | ExprKind::Field { .. },
                ExprScope::Rubric { .. } | ExprScope::Scorer { .. },
            ) => {
                let Some((target, rest, _)) = self.resolve_path(decl, callee, &[DeclKind::Scorer])
                else {
                    return poisoned(span);
                };
                let d = &self.decls[target.0];
                if d.kind != DeclKind::Scorer || !rest.is_empty() {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0209,
                            format!("`{}` is a `{}`, not a scorer", d.name, d.kind.keyword()),
                        )
                        .with_primary(callee.span, "cannot be called"),
                    );
                    return poisoned(span);
                }
                // A scorer's body calls built-in scorers only: no scorer
                // can then call itself, directly or through another.
                let intrinsic = super::settings::is_intrinsic(&self.info[target.0].ast.body);
                if matches!(scope, ExprScope::Scorer { .. }) && !intrinsic {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0209,
                            format!("scorer `{}` is not a built-in scorer", d.name),
                        )
                        .with_primary(callee.span, "a scorer's body calls built-in scorers only")
                        .with_help(format!(
                            "call `{}` from the rubric (`criterion c {{ scorer = {}(...) }}`), or write its body into this one",
                            d.name, d.name
                        )),
                    );
                    return poisoned(span);
                }
                let qualified = d.qualified.clone();
                self.check_scorer_args(target, args, &types, span);
                call(qualified, ExprTy::Score, positional, named)
            }
            _ => {
                self.diags.push(
                    Diagnostic::error(Code::E0203, "no function can be called here")
                        .with_primary(callee.span, "not callable in this setting"),
                );
                poisoned(span)
            }
        }
    }

    fn expect_string_arg(&mut self, args: &[TExpr], span: Span, func: &str) {
        if !matches!(args, [a] if a.ty == ExprTy::String) {
            self.diags.push(
                Diagnostic::error(Code::E0300, format!("`{func}` takes one string"))
                    .with_primary(span, format!("expected `{func}(\"name\")`")),
            );
        }
    }

    /// Checks a scorer call's arguments (`types`: each argument's type, in
    /// order) against the scorer's parameters: names, count, order, each
    /// given once, the required ones given, and declared types. A built-in
    /// scorer's list parameters take strings.
    fn check_scorer_args(
        &mut self,
        scorer: super::hir::DeclRef,
        args: &[ast::Arg],
        types: &[ArgType],
        span: Span,
    ) {
        let intrinsic = super::settings::is_intrinsic(&self.info[scorer.0].ast.body);
        let params: Vec<(String, bool)> = match self.info[scorer.0].ast.params.as_ref() {
            Some(ps) => ps
                .iter()
                .map(|p| (p.name.name.clone(), p.default.is_some()))
                .collect(),
            None => Vec::new(),
        };
        // Each parameter's declared type, else its default's (read from
        // the syntax: the scorer may be checked after this call).
        let declared: BTreeMap<String, ExprTy> = self.info[scorer.0]
            .ast
            .params
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.name.clone(), written_param_type(p)?)))
            .collect();
        let name = self.decls[scorer.0].name.clone();
        let mut given: Vec<String> = Vec::new();
        // Constant numbers given, by parameter, with their spans.
        let mut numbers: BTreeMap<String, (f64, Span)> = BTreeMap::new();
        let mut named_seen = false;
        for (i, arg) in args.iter().enumerate() {
            // Positional arguments bind in order, so they come first.
            if arg.name.is_none() && named_seen {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0300,
                        format!("a positional argument of scorer `{name}` after a named one"),
                    )
                    .with_primary(arg.span, "positional after named")
                    .with_help(
                        "name it (`parameter = value`), or move it before the named arguments",
                    ),
                );
                continue;
            }
            named_seen |= arg.name.is_some();
            let pname = match &arg.name {
                Some(n) => {
                    if !params.iter().any(|(p, _)| *p == n.name) {
                        let mut d = Diagnostic::error(
                            Code::E0203,
                            format!("scorer `{name}` has no parameter `{}`", n.name),
                        )
                        .with_primary(n.span, "unknown parameter");
                        d = match did_you_mean(&n.name, params.iter().map(|(p, _)| p.as_str())) {
                            Some(best) => d.with_suggestion(n.span, &n.name, &best),
                            None if params.is_empty() => {
                                d.with_help(format!("`{name}` takes no arguments"))
                            }
                            None => d.with_help(format!(
                                "its parameters are {}",
                                crate::diagnostic::one_of(
                                    &params.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
                                )
                            )),
                        };
                        self.diags.push(d);
                        continue;
                    }
                    n.name.clone()
                }
                None => match params.get(i) {
                    Some((p, _)) => p.clone(),
                    None => {
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0300,
                                format!("scorer `{name}` takes {} argument(s)", params.len()),
                            )
                            .with_primary(arg.span, "one too many"),
                        );
                        continue;
                    }
                },
            };
            if given.contains(&pname) {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0208,
                        format!("scorer `{name}` is given `{pname}` twice"),
                    )
                    .with_primary(arg.span, "given again")
                    .with_help("keep one of them"),
                );
                continue;
            }
            if let (Some(expected), Some(arg_type)) = (declared.get(&pname), types.get(i)) {
                let found = arg_type.ty;
                if !expected.accepts(found) {
                    let ty = expected.keyword();
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!(
                                "`{pname}` of scorer `{name}` is a `{ty}`, given {}",
                                found.describe()
                            ),
                        )
                        .with_primary(arg.value.span, format!("not a {ty}")),
                    );
                } else if let (true, ExprTy::List, Some((item, item_ty))) =
                    (intrinsic, expected, arg_type.item_not_string)
                {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!(
                                "`{pname}` of scorer `{name}` is a list of strings, given {} in it",
                                item_ty.describe()
                            ),
                        )
                        .with_primary(
                            item,
                            if item == arg.value.span {
                                format!("holds {}", item_ty.describe())
                            } else {
                                "not a string".to_string()
                            },
                        )
                        .with_help("write it as a string: `\"...\"`"),
                    );
                }
            }
            if let Some(n) = types.get(i).and_then(|t| t.number) {
                numbers.insert(pname.clone(), (n, arg.value.span));
            }
            given.push(pname);
        }
        if intrinsic {
            self.check_builtin_numbers(&name, &given, &numbers, span);
        }
        for (p, has_default) in &params {
            if !has_default && !given.contains(p) {
                self.diags.push(
                    Diagnostic::error(Code::E0211, format!("scorer `{name}` needs `{p}`"))
                        .with_primary(span, format!("`{p}` is missing"))
                        .with_help(format!("pass it: `{name}({p} = ...)`")),
                );
            }
        }
    }

    /// The numbers a built-in scorer takes, where they are constants:
    /// `length`'s `min` not above its `max` (no length would score 1) and
    /// a positive `slack`; `helpful_response`'s `min_words` not negative.
    fn check_builtin_numbers(
        &mut self,
        scorer: &str,
        given: &[String],
        numbers: &BTreeMap<String, (f64, Span)>,
        call: Span,
    ) {
        let out_of_range = |param: &str, (n, span): (f64, Span), rule: &str| {
            Diagnostic::error(
                Code::E0301,
                format!(
                    "`{param}` of `{scorer}` must be {rule}, found {}",
                    super::schema::format_number(n)
                ),
            )
            .with_primary(span, "out of range")
        };
        match scorer {
            "length" => {
                // Each end: the constant given, the default when none is
                // given, unknown when the call gives another expression.
                let end = |param: &str, default: f64| match numbers.get(param) {
                    Some(&(n, span)) => Some((n, Some(span))),
                    None if !given.iter().any(|g| g == param) => Some((default, None)),
                    None => None,
                };
                if let (Some((lo, lo_at)), Some((hi, hi_at))) =
                    (end("min", 0.0), end("max", 4096.0))
                {
                    if lo > hi {
                        let (span, label) = match (hi_at, lo_at) {
                            (Some(at), _) => (at, "below `min`"),
                            (None, Some(at)) => (at, "above `max`, 4096 when not given"),
                            (None, None) => (call, "here"),
                        };
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0315,
                                format!(
                                    "`length` scores 1 between `min = {}` and `max = {}`: no length does",
                                    super::schema::format_number(lo),
                                    super::schema::format_number(hi)
                                ),
                            )
                            .with_primary(span, label)
                            .with_help("make `min` at most `max` (they count tokens)"),
                        );
                    }
                }
                // The score falls to 0 over `slack` tokens, at least one.
                if let Some(slack) = numbers.get("slack").filter(|s| s.0 < 1.0) {
                    let d = out_of_range(
                        "slack",
                        *slack,
                        "at least 1 (the tokens over which the score falls to 0)",
                    );
                    self.diags.push(d);
                }
            }
            "helpful_response" => {
                if let Some(words) = numbers.get("min_words").filter(|w| w.0 < 0.0) {
                    let d = out_of_range("min_words", *words, "at least 0");
                    self.diags.push(d);
                }
            }
            _ => {}
        }
    }

    fn unary(&mut self, op: UnaryOp, inner: TExpr, span: Span) -> TExpr {
        match op {
            UnaryOp::Neg => {
                self.expect_number(&inner, "`-`");
                if let Some(n) = inner.number() {
                    return constant(Const::Number(-n), span);
                }
                texpr(
                    TKind::Unary {
                        op,
                        operand: Box::new(inner),
                    },
                    ExprTy::Number,
                    span,
                )
            }
            UnaryOp::Not => {
                self.expect_bool(&inner, "`not`");
                if let Some(Const::Bool(b)) = inner.constant() {
                    return constant(Const::Bool(!b), span);
                }
                texpr(
                    TKind::Unary {
                        op,
                        operand: Box::new(inner),
                    },
                    ExprTy::Bool,
                    span,
                )
            }
        }
    }

    fn binary(&mut self, op: BinaryOp, l: TExpr, r: TExpr, span: Span) -> TExpr {
        use BinaryOp as B;
        let ty = match op {
            B::Or | B::And => {
                self.expect_bool(&l, &format!("`{}`", op.symbol()));
                self.expect_bool(&r, &format!("`{}`", op.symbol()));
                ExprTy::Bool
            }
            B::Eq | B::Ne => {
                let comparable = l.ty == r.ty
                    || (l.ty.is_numeric() && r.ty.is_numeric())
                    || l.ty == ExprTy::Any
                    || r.ty == ExprTy::Any;
                if !comparable {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!(
                                "cannot compare {} with {}",
                                l.ty.describe(),
                                r.ty.describe()
                            ),
                        )
                        .with_primary(r.span, r.ty.describe())
                        .with_secondary(l.span, l.ty.describe()),
                    );
                }
                ExprTy::Bool
            }
            B::Lt | B::Le | B::Gt | B::Ge => {
                self.expect_number(&l, &format!("`{}`", op.symbol()));
                self.expect_number(&r, &format!("`{}`", op.symbol()));
                ExprTy::Bool
            }
            B::In | B::NotIn => {
                if !matches!(
                    r.ty,
                    ExprTy::List | ExprTy::Range | ExprTy::Any | ExprTy::String
                ) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!(
                                "`{}` needs a list or a range on its right, found {}",
                                op.symbol(),
                                r.ty.describe()
                            ),
                        )
                        .with_primary(r.span, "not a list or range"),
                    );
                } else {
                    self.check_item_of(&r, &l, &format!("`{}`", op.symbol()));
                }
                // `label in "unsafe"` holds for "safe" too: `in` a text is
                // Python's substring test, rarely what such a line means.
                let text_on_the_left = matches!(l.ty, ExprTy::String | ExprTy::Any);
                if let (Some(Const::Str(text)), true) = (r.constant(), text_on_the_left) {
                    let (not, eq) = match op == B::NotIn {
                        true => ("not ", "!="),
                        false => ("", "=="),
                    };
                    self.diags.push(
                        Diagnostic::warning(
                            Code::E0330,
                            format!("`{}` a text tests for a substring", op.symbol()),
                        )
                        .with_primary(r.span, "a text, not a list")
                        .with_help(format!(
                            "for one value write `{eq} {text:?}`, for several `{not}in [{text:?}, ...]`; for a substring write `{not}contains({text:?}, ...)` with the field in place of `...`"
                        )),
                    );
                }
                ExprTy::Bool
            }
            B::Range => {
                self.expect_number(&l, "a range");
                self.expect_number(&r, "a range");
                ExprTy::Range
            }
            B::Add | B::Sub | B::Mul | B::Div | B::Rem => {
                self.expect_number(&l, &format!("`{}`", op.symbol()));
                self.expect_number(&r, &format!("`{}`", op.symbol()));
                if matches!(op, B::Div | B::Rem) && r.number() == Some(0.0) {
                    self.diags.push(
                        Diagnostic::error(Code::E0316, "division by zero")
                            .with_primary(r.span, "this is 0")
                            .with_help("a reward must be a finite number"),
                    );
                    return poisoned(span);
                }
                ExprTy::Number
            }
        };
        if let Some(folded) = fold(op, &l, &r) {
            // `-1e308 * 10`: each number is one, their result is none (it
            // would reach the graph as `inf` and JSON as `null`).
            if let Const::Number(n) = &folded {
                if !n.is_finite() {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0108,
                            format!("this number is out of range: it comes to {n}"),
                        )
                        .with_primary(span, "too large to represent")
                        .with_help(
                            "numbers are 64-bit floating point, at most about 1.8e308 either way",
                        ),
                    );
                    return poisoned(span);
                }
            }
            return constant(folded, span);
        }
        texpr(
            TKind::Binary {
                op,
                lhs: Box::new(l),
                rhs: Box::new(r),
            },
            ty,
            span,
        )
    }

    /// Reports a constant range written high end first (`0.8..0.2`),
    /// which holds no number, with the swap as its fix.
    fn reversed_range(
        &mut self,
        e: &ast::Expr,
        lhs: &ast::Expr,
        rhs: &ast::Expr,
        l: &TExpr,
        r: &TExpr,
    ) -> bool {
        let (Some(low), Some(high)) = (l.number(), r.number()) else {
            return false;
        };
        if low <= high {
            return false;
        }
        // The ends as written (`1e-3`, `1_000`), else their values.
        let (a, b) = match (written_number(lhs), written_number(rhs)) {
            (Some(a), Some(b)) => (a, b),
            _ => (schema::format_number(low), schema::format_number(high)),
        };
        let d = Diagnostic::error(
            Code::E0315,
            format!("the range {a}..{b} is reversed: no number lies in it"),
        )
        .with_primary(e.span, "the low end is written last")
        .with_help(format!("a range is written `low..high`: `{b}..{a}`"));
        self.diags.push(with_ends_swapped(d, e));
        true
    }

    /// Reports unless `t` is a condition.
    pub(crate) fn expect_bool(&mut self, t: &TExpr, what: &str) {
        if !t.ty.is_bool() {
            self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    format!("{what} needs a condition, found {}", t.ty.describe()),
                )
                .with_primary(t.span, "not a condition")
                .with_help(condition_help(what)),
            );
        }
    }

    /// Reports unless `t` is a number (or score).
    /// E0300 unless `item` can be in `container` (a range holds numbers,
    /// a string holds strings; a list anything): the run would fail at
    /// the first row or completion.
    fn check_item_of(&mut self, container: &TExpr, item: &TExpr, what: &str) {
        let (fits, holds) = match (container.ty, &container.kind) {
            (ExprTy::Range, _) => (item.ty.is_numeric(), "numbers"),
            (ExprTy::String, _) => (matches!(item.ty, ExprTy::String | ExprTy::Any), "strings"),
            // A list whose items are all of a kind the value can never
            // equal (`answer.verdict in [1, 2]`): as `==` between them is.
            (ExprTy::List, TKind::List { items }) if !items.is_empty() => {
                let equal_kind = |t: ExprTy| {
                    t == item.ty || (t.is_numeric() && item.ty.is_numeric()) || t == ExprTy::Any
                };
                let kind = |t: ExprTy| match t {
                    t if t.is_numeric() => "numbers",
                    ExprTy::String => "strings",
                    ExprTy::Bool => "conditions",
                    ExprTy::Range => "ranges",
                    ExprTy::List => "lists",
                    _ => "other values",
                };
                let holds = match items.iter().all(|i| kind(i.ty) == kind(items[0].ty)) {
                    true => kind(items[0].ty),
                    false => "items of other kinds",
                };
                let fits = item.ty == ExprTy::Any || items.iter().any(|i| equal_kind(i.ty));
                (fits, holds)
            }
            _ => return,
        };
        if !fits {
            self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    format!(
                        "{what}: {} holds {holds}, found {}",
                        container.ty.describe(),
                        item.ty.describe()
                    ),
                )
                .with_primary(
                    item.span,
                    match holds {
                        "items of other kinds" => "of no item's kind".to_string(),
                        _ => format!("not one of the {holds}"),
                    },
                )
                .with_secondary(container.span, container.ty.describe()),
            );
            if holds == "ranges" {
                if let Some(d) = self.diags.last_mut() {
                    *d = d.clone().with_help(
                        "`x in [0.2..0.8]` looks for a range among the list's items: for a number in the range write `x in 0.2..0.8`",
                    );
                }
            }
        }
    }

    /// E0300 for a filter function's arguments that cannot fit it: their
    /// count, names, and types known not to be what it takes.
    fn check_filter_call(
        &mut self,
        func: &str,
        args: &[TExpr],
        named: &BTreeMap<String, TExpr>,
        span: Span,
    ) {
        if let Some(first) = named.values().next() {
            self.diags.push(
                Diagnostic::error(Code::E0300, format!("`{func}` takes no named arguments"))
                    .with_primary(first.span, "named")
                    .with_help(format!(
                        "pass its arguments in order: {}",
                        filter_form(func)
                    )),
            );
            return;
        }
        let arity = if func == "contains" { 2 } else { 1 };
        if args.len() != arity {
            self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    format!(
                        "`{func}` takes {} argument{}, found {}",
                        arity,
                        if arity == 1 { "" } else { "s" },
                        args.len()
                    ),
                )
                .with_primary(span, format!("expected {}", filter_form(func)))
                .with_help(format!("write {}", filter_form(func))),
            );
            return;
        }
        let takes: &[ExprTy] = match func {
            "len" => &[ExprTy::String, ExprTy::List],
            "lower" => &[ExprTy::String],
            _ => &[ExprTy::String, ExprTy::List, ExprTy::Range],
        };
        let first = &args[0];
        if !(first.ty == ExprTy::Any || takes.contains(&first.ty)) {
            let words: Vec<&str> = takes.iter().map(|t| t.describe()).collect();
            let needs = crate::diagnostic::join_or(&words);
            self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    format!("`{func}` needs {needs}, found {}", first.ty.describe()),
                )
                .with_primary(first.span, "wrong type"),
            );
        } else if let [container, item] = args {
            self.check_item_of(container, item, "`contains`");
        }
    }

    /// E0212 for `.name` on a value known to have no fields: only a
    /// dataset row's values (known at run time) can be objects; a score,
    /// number, string or list fails there, in the middle of a run.
    fn no_fields(&mut self, base: &TExpr, name: &ast::Ident) {
        if matches!(base.ty, ExprTy::Any) {
            return;
        }
        let help = match base.ty {
            ExprTy::Score => format!(
                "a criterion's name is its score already: drop `.{}`",
                name.name
            ),
            _ => "fields belong to a dataset row's objects (`meta.source`)".to_string(),
        };
        self.diags.push(
            Diagnostic::error(
                Code::E0212,
                format!("{} has no field `{}`", base.ty.describe(), name.name),
            )
            .with_primary(name.span, "unknown field")
            .with_secondary(base.span, base.ty.describe())
            .with_help(help),
        );
    }

    /// The type of `base[index]`, reporting E0300 for a base that is no
    /// list or string and an index that is no whole number.
    fn index_type(&mut self, base: &TExpr, index: &TExpr) {
        if !matches!(base.ty, ExprTy::List | ExprTy::String | ExprTy::Any) {
            self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    format!(
                        "`[...]` needs a list or a string, found {}",
                        base.ty.describe()
                    ),
                )
                .with_primary(base.span, "not a list or a string"),
            );
        }
        self.expect_number(index, "an index");
        if let Some(i) = index.number().filter(|i| i.fract() != 0.0) {
            self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    format!("an index is a whole number, found {i}"),
                )
                .with_primary(index.span, "not a whole number")
                .with_help("items count from 0, and from -1 at the end"),
            );
        }
        // A list of known length at a constant index: past its end there
        // is nothing, which `saferc run` finds where a value is needed.
        if let (TKind::List { items }, Some(i)) = (&base.kind, index.number()) {
            let n = items.len() as f64;
            if i.fract() == 0.0 && !(-n..n).contains(&i) {
                let (first, last) = (-n, n - 1.0);
                let valid = match items.len() {
                    0 => "it has no items".to_string(),
                    _ => format!("its indexes are 0 to {last} (or {first} to -1 from the end)"),
                };
                self.diags.push(
                    Diagnostic::error(
                        Code::E0301,
                        format!(
                            "index {i} is outside a list of {} item{}",
                            items.len(),
                            if items.len() == 1 { "" } else { "s" }
                        ),
                    )
                    .with_primary(index.span, "no item here")
                    .with_secondary(
                        base.span,
                        format!(
                            "{} item{}",
                            items.len(),
                            if items.len() == 1 { "" } else { "s" }
                        ),
                    )
                    .with_help(format!(
                        "{valid}: items count from 0, so the first is `[0]` and the last `[-1]`"
                    )),
                );
            }
        }
    }

    pub(crate) fn expect_number(&mut self, t: &TExpr, what: &str) {
        if !t.ty.is_numeric() {
            self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    format!("{what} needs a number, found {}", t.ty.describe()),
                )
                .with_primary(t.span, "not a number"),
            );
        }
    }
}

fn fold(op: BinaryOp, l: &TExpr, r: &TExpr) -> Option<Const> {
    use BinaryOp as B;
    let (lc, rc) = (l.constant()?, r.constant()?);
    Some(match (op, lc, rc) {
        (B::Add, Const::Number(a), Const::Number(b)) => Const::Number(a + b),
        (B::Sub, Const::Number(a), Const::Number(b)) => Const::Number(a - b),
        (B::Mul, Const::Number(a), Const::Number(b)) => Const::Number(a * b),
        (B::Div, Const::Number(a), Const::Number(b)) => Const::Number(a / b),
        (B::Rem, Const::Number(a), Const::Number(b)) => Const::Number(a % b),
        (B::Range, Const::Number(a), Const::Number(b)) => Const::Range(*a, *b),
        (B::Lt, Const::Number(a), Const::Number(b)) => Const::Bool(a < b),
        (B::Le, Const::Number(a), Const::Number(b)) => Const::Bool(a <= b),
        (B::Gt, Const::Number(a), Const::Number(b)) => Const::Bool(a > b),
        (B::Ge, Const::Number(a), Const::Number(b)) => Const::Bool(a >= b),
        (B::Eq, a, b) => Const::Bool(a == b),
        (B::Ne, a, b) => Const::Bool(a != b),
        (B::And, Const::Bool(a), Const::Bool(b)) => Const::Bool(*a && *b),
        (B::Or, Const::Bool(a), Const::Bool(b)) => Const::Bool(*a || *b),
        (B::In, Const::Number(x), Const::Range(a, b)) => Const::Bool(a <= x && x <= b),
        (B::NotIn, Const::Number(x), Const::Range(a, b)) => Const::Bool(!(a <= x && x <= b)),
        _ => return None,
    })
}

/// Describes a schema scope's names (for docs).
pub fn scope_names(scope: Scope) -> &'static str {
    let _ = schema::FORMATS;
    match scope {
        Scope::Rubric => {
            "criteria, `weighted`, `penalties`, `format`, parameters, `judge`, `think`, `answer`"
        }
        Scope::Curate => "`mean`, `std`, `min`, `max`",
        Scope::Reflection => "`rubric.criterion`, `reward`",
    }
}
