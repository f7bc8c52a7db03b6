//! Checking one setting's value against its schema type, and resolving
//! references (`policy`, `qi_safe.train`, `safety_rubric.safety`,
//! `reflect.default`).

use super::exprs::{written_number, ExprScope};
use super::hir::{DeclRef, Value};
use super::schema::{self, Ty};
use super::scope::Found;
use super::Analyzer;
use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::syntax::ast::{self, BinaryOp, DeclKind, ExprKind, Ident, UnaryOp, Unit};

impl<'a> Analyzer<'a> {
    /// Checks `e` against `ty`; reports and returns `None` on mismatch.
    pub(crate) fn check_value(
        &mut self,
        decl: usize,
        ty: Ty,
        e: &ast::Expr,
        key: &str,
    ) -> Option<Value> {
        match ty {
            Ty::Number | Ty::Int | Ty::Fraction => {
                if let ExprKind::Quantity { value, unit } = &e.kind {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0302,
                            format!(
                                "`{key}` is a plain number, found `{} {}`",
                                value.text,
                                unit.counting(value.value)
                            ),
                        )
                        .with_primary(e.span, "this has a unit")
                        .with_help(format!("write `{key} = {}`", value.text)),
                    );
                    return None;
                }
                let n = self.constant_number(decl, e, &format!("`{key}`"))?;
                if ty == Ty::Int && n.fract() != 0.0 {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!(
                                "`{key}` must be a whole number, found {}",
                                schema::format_number(n)
                            ),
                        )
                        .with_primary(e.span, "not a whole number")
                        .with_help(format!(
                            "write a whole number, e.g. `{key} = {}`",
                            n.round().max(0.0)
                        )),
                    );
                    return None;
                }
                if ty == Ty::Fraction && !(0.0..=1.0).contains(&n) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0301,
                            format!(
                                "`{key}` must be between 0 and 1, found {}",
                                schema::format_number(n)
                            ),
                        )
                        .with_primary(e.span, "not a fraction"),
                    );
                    return None;
                }
                Some(Value::Number(n))
            }
            Ty::Bool => match &e.kind {
                ExprKind::Bool { value } => Some(Value::Bool(*value)),
                // Python's and YAML's spellings.
                ExprKind::Name { name }
                    if ["True", "False", "TRUE", "FALSE", "yes", "no", "on", "off"]
                        .contains(&name.as_str()) =>
                {
                    let meant = ["True", "TRUE", "yes", "on"].contains(&name.as_str());
                    let meant = if meant { "true" } else { "false" };
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!("`{key}` expects `true` or `false`, found `{name}`"),
                        )
                        .with_primary(e.span, "expected `true` or `false`")
                        .with_help(format!("booleans are lowercase: `{meant}`"))
                        .with_fix(e.span, name, meant),
                    );
                    None
                }
                _ => self.mismatch(e, "`true` or `false`", key),
            },
            Ty::Str => match &e.kind {
                ExprKind::String(s) => Some(Value::Str(s.value.clone())),
                _ => self.mismatch(e, "a string", key),
            },
            Ty::Path => match &e.kind {
                ExprKind::String(s) => Some(self.path_value(decl, &s.value)),
                _ => self.mismatch(e, "a path (a string)", key),
            },
            Ty::Enum(values) => self.enum_value(e, values, key),
            Ty::Quantity(units) => self.quantity(decl, e, units, key),
            Ty::Range => match self.range(decl, e) {
                Some((low, high)) => Some(Value::Range { low, high }),
                None if range_meant(e).is_some() => self.range_misspelt(e, key),
                None => self.mismatch(e, "a range `low..high`", key),
            },
            // `clip = 0.2-0.28` (a subtraction below 0) or `[0.2, 0.28]`
            // where a range was meant.
            Ty::NumberOrRange
                if negative_difference(e)
                    || matches!(&e.kind, ExprKind::List { .. }) && range_meant(e).is_some() =>
            {
                self.range_misspelt(e, key)
            }
            Ty::NumberOrRange => match &e.kind {
                ExprKind::Binary {
                    op: BinaryOp::Range,
                    ..
                } => self
                    .range(decl, e)
                    .map(|(low, high)| Value::Range { low, high }),
                _ => self
                    .constant_number(decl, e, &format!("`{key}`"))
                    .map(Value::Number),
            },
            Ty::Ref(kind) => self.resolve_decl(decl, e, &[kind], key).map(Value::Ref),
            Ty::PromptText => match &e.kind {
                ExprKind::String(s) => Some(Value::Str(s.value.clone())),
                _ => self
                    .resolve_decl(decl, e, &[DeclKind::Prompt], key)
                    .map(Value::Ref),
            },
            Ty::SplitRef => self.split_ref(decl, e),
            Ty::SplitList => match &e.kind {
                ExprKind::List { items } => {
                    let refs: Vec<Value> = items
                        .iter()
                        .filter_map(|i| self.split_ref(decl, i))
                        .collect();
                    (refs.len() == items.len()).then_some(Value::List(refs))
                }
                _ => self.split_ref(decl, e).map(|v| Value::List(vec![v])),
            },
            Ty::CriterionRef => self.criterion_ref(decl, e),
            Ty::CriterionName | Ty::Field => match &e.kind {
                ExprKind::Name { name } => Some(Value::Str(name.clone())),
                ExprKind::String(s) => Some(Value::Str(s.value.clone())),
                // A nested field, as filters name it: rows flatten
                // `{"meta": {"src": ...}}` to `meta.src`.
                ExprKind::Field { .. } if matches!(ty, Ty::Field) => match dotted_name(e) {
                    Some(name) => Some(Value::Str(name)),
                    None => self.mismatch(e, "a name", key),
                },
                _ => self.mismatch(e, "a name", key),
            },
            Ty::Source => self.source(decl, e),
            Ty::StrList => match &e.kind {
                ExprKind::List { items } => {
                    let mut out = Vec::new();
                    for item in items {
                        match &item.kind {
                            // The runtime skips an empty stop string: it
                            // would end every completion before it began.
                            ExprKind::String(s) if s.value.is_empty() && key == "stop" => {
                                self.diags.push(
                                    Diagnostic::warning(Code::E0317, "an empty stop string has no effect")
                                        .with_primary(item.span, "skipped")
                                        .with_help("remove it; a stop string ends a completion where its text first appears"),
                                );
                            }
                            ExprKind::String(s) => out.push(Value::Str(s.value.clone())),
                            _ => return self.mismatch(item, "a string", key),
                        }
                    }
                    Some(Value::List(out))
                }
                _ => self.mismatch(e, "a list of strings", key),
            },
            Ty::BoolExpr(scope) => {
                let t = self.typed(decl, e, &ExprScope::from_schema(scope, decl));
                self.expect_bool(&t, &format!("`{key}`"));
                Some(Value::Expr(t))
            }
            Ty::NumberExpr(scope) => {
                let t = self.typed(decl, e, &ExprScope::from_schema(scope, decl));
                self.expect_number(&t, &format!("`{key}`"));
                Some(Value::Expr(t))
            }
            Ty::ScorerCall => {
                if !matches!(e.kind, ExprKind::Call { .. }) {
                    return self.mismatch(e, "a scorer call such as `refusal()`", key);
                }
                let t = self.typed(decl, e, &ExprScope::Rubric { decl });
                Some(Value::Expr(t))
            }
        }
    }

    /// E0300 for `0-10` or `[0, 10]` where the range `0..10` was meant.
    fn range_misspelt(&mut self, e: &ast::Expr, key: &str) -> Option<Value> {
        let (wrote, range) = range_meant(e)?;
        let mut d = Diagnostic::error(
            Code::E0300,
            format!("`{key}` expects a range `low..high`, found {}", found(e)),
        )
        .with_primary(e.span, "not a range")
        .with_help(format!("a range is written with `..`: `{range}`"));
        if let Some(wrote) = wrote {
            d = d.with_fix(e.span, &wrote, &range);
        }
        self.diags.push(d);
        None
    }

    fn mismatch(&mut self, e: &ast::Expr, expected: &str, key: &str) -> Option<Value> {
        let mut d = Diagnostic::error(
            Code::E0300,
            format!("`{key}` expects {expected}, found {}", found(e)),
        )
        .with_primary(e.span, format!("expected {expected}"));
        if let (ExprKind::Name { name }, true) = (&e.kind, expected.contains("string")) {
            d = d.with_help(format!("quote it: `\"{name}\"`")).with_fix(
                e.span,
                name,
                &format!("\"{name}\""),
            );
        }
        self.diags.push(d);
        None
    }

    fn enum_value(
        &mut self,
        e: &ast::Expr,
        values: &'static [&'static str],
        key: &str,
    ) -> Option<Value> {
        match &e.kind {
            ExprKind::Name { name } if values.contains(&name.as_str()) => {
                Some(Value::Enum(name.clone()))
            }
            ExprKind::Name { name } => {
                let mut d =
                    Diagnostic::error(Code::E0303, format!("unknown value `{name}` for `{key}`"))
                        .with_primary(
                            e.span,
                            format!("expected one of {}", crate::diagnostic::one_of(values)),
                        );
                if let Some(best) = did_you_mean(name, values.iter().copied()) {
                    d = d.with_suggestion(e.span, name, &best);
                }
                self.diags.push(d);
                None
            }
            ExprKind::String(s) if values.contains(&s.value.as_str()) => {
                self.diags.push(
                    Diagnostic::error(Code::E0300, format!("`{key}` takes a name, not a string"))
                        .with_primary(e.span, "quoted")
                        .with_help(format!("write it without quotes: `{key} = {}`", s.value)),
                );
                None
            }
            _ => self.mismatch(
                e,
                &format!("one of {}", crate::diagnostic::one_of(values)),
                key,
            ),
        }
    }

    fn quantity(
        &mut self,
        decl: usize,
        e: &ast::Expr,
        units: &'static [Unit],
        key: &str,
    ) -> Option<Value> {
        let value = self.quantity_value(decl, e, units, key)?;
        // Every unit counts things (tokens, steps, prompts, completions,
        // epochs): a fraction of one is a typo.
        if let Value::Quantity { value: n, unit } = &value {
            if n.fract() != 0.0 {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0300,
                        format!(
                            "`{key}` counts whole {}, found {}",
                            unit.plural(),
                            schema::format_number(*n)
                        ),
                    )
                    .with_primary(e.span, "not a whole number")
                    .with_help(format!(
                        "write a whole number, e.g. `{key} = {} {}`",
                        n.round().max(0.0),
                        unit.counting(n.round().max(0.0))
                    )),
                );
                return None;
            }
        }
        Some(value)
    }

    fn quantity_value(
        &mut self,
        decl: usize,
        e: &ast::Expr,
        units: &'static [Unit],
        key: &str,
    ) -> Option<Value> {
        match &e.kind {
            ExprKind::Quantity { value, unit } if units.contains(unit) => Some(Value::Quantity {
                value: value.value,
                unit: *unit,
            }),
            ExprKind::Quantity { value, unit } => {
                let wanted: Vec<&str> = units.iter().map(|u| u.plural()).collect();
                self.diags.push(
                    Diagnostic::error(
                        Code::E0302,
                        format!(
                            "`{key}` counts {}, found `{} {}`",
                            crate::diagnostic::join_or(&wanted),
                            value.text,
                            unit.counting(value.value)
                        ),
                    )
                    .with_primary(e.span, format!("a number of {}", unit.plural()))
                    .with_help(format!(
                        "write the number of {}: `{key} = N {}`",
                        wanted[0], wanted[0]
                    )),
                );
                None
            }
            _ => {
                let n = self.constant_number(decl, e, &format!("`{key}`"))?;
                Some(Value::Quantity {
                    value: n,
                    unit: units[0],
                })
            }
        }
    }

    /// A constant range `low..high`.
    pub(crate) fn range(&mut self, decl: usize, e: &ast::Expr) -> Option<(f64, f64)> {
        let ExprKind::Binary {
            op: BinaryOp::Range,
            lhs,
            rhs,
        } = &e.kind
        else {
            return None;
        };
        let low = self.constant_number(decl, lhs, "the low end of the range")?;
        let high = self.constant_number(decl, rhs, "the high end of the range")?;
        Some((low, high))
    }

    /// A constant number (literals, unary minus, folded arithmetic).
    pub(crate) fn constant_number(
        &mut self,
        decl: usize,
        e: &ast::Expr,
        what: &str,
    ) -> Option<f64> {
        if let ExprKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } = &e.kind
        {
            return self.constant_number(decl, operand, what).map(|n| -n);
        }
        if let ExprKind::Number(n) = &e.kind {
            return Some(n.value);
        }
        let t = self.typed(decl, e, &ExprScope::Const);
        match t.number() {
            Some(n) => Some(n),
            None => {
                if t.ty != super::hir::ExprTy::Any {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!("{what} must be a number, found {}", found(e)),
                        )
                        .with_primary(e.span, "expected a number"),
                    );
                }
                None
            }
        }
    }

    /// A constant of any type (parameter defaults).
    pub(crate) fn constant_value(&mut self, decl: usize, e: &ast::Expr) -> Option<Value> {
        if let ExprKind::List { items } = &e.kind {
            let values: Vec<Value> = items
                .iter()
                .filter_map(|i| self.constant_value(decl, i))
                .collect();
            return Some(Value::List(values));
        }
        let t = self.typed(decl, e, &ExprScope::Const);
        t.constant().map(|c| c.to_value())
    }

    fn path_value(&self, decl: usize, written: &str) -> Value {
        let module = &self.loaded.modules[self.info[decl].module];
        let resolved = match &module.origin {
            super::loader::Origin::File(p) => p
                .parent()
                .map(|d| {
                    super::loader::normalize(&d.join(written))
                        .display()
                        .to_string()
                })
                .unwrap_or_else(|| written.to_string()),
            super::loader::Origin::Std(_) => format!("std/{written}"),
            super::loader::Origin::Text(_) => written.to_string(),
        };
        Value::Path {
            written: written.to_string(),
            resolved,
        }
    }

    fn source(&mut self, decl: usize, e: &ast::Expr) -> Option<Value> {
        if let ExprKind::String(file) = &e.kind {
            // A file's name alone: its format goes around it.
            let written = format!("\"{}\"", file.value);
            let wrapped = format!("jsonl({written})");
            let mut d = Diagnostic::error(
                Code::E0300,
                "`source` expects a source such as `jsonl(\"data.jsonl\")`, found a string",
            )
            .with_primary(e.span, "a file name without its format")
            .with_help(format!(
                "name the format: `source = {wrapped}` (JSON Lines, one row per line)"
            ));
            // Only where the string is written as its value reads.
            if !file.triple && !file.value.contains(['"', '\\', '\n']) {
                d = d.with_fix(e.span, &written, &wrapped);
            }
            self.diags.push(d);
            return None;
        }
        let ExprKind::Call { callee, args } = &e.kind else {
            return self.mismatch(e, "a source such as `jsonl(\"data.jsonl\")`", "source");
        };
        let ExprKind::Name { name } = &callee.kind else {
            return self.mismatch(e, "a source such as `jsonl(\"data.jsonl\")`", "source");
        };
        if name != "jsonl" {
            let mut d = Diagnostic::error(Code::E0203, format!("unknown source format `{name}`"))
                .with_primary(callee.span, "not a source format")
                .with_help("sources are `jsonl(\"path\")`: one JSON object per line");
            if let Some(jsonl) = did_you_mean(name, ["jsonl"]) {
                d = d.with_suggestion(callee.span, name, &jsonl);
            }
            self.diags.push(d);
            return None;
        }
        match args.as_slice() {
            [arg] if arg.name.is_none() => match &arg.value.kind {
                ExprKind::String(s) => Some(Value::Source {
                    format: "jsonl".into(),
                    path: Box::new(self.path_value(decl, &s.value)),
                }),
                _ => self.mismatch(&arg.value, "a path (a string)", "jsonl"),
            },
            _ => {
                self.diags.push(
                    Diagnostic::error(Code::E0300, "`jsonl` takes one path")
                        .with_primary(e.span, "expected `jsonl(\"path\")`"),
                );
                None
            }
        }
    }

    /// The help for a string where a declaration's name belongs: drop the
    /// quotes when a declaration of that name and kind is in scope; for a
    /// judge's `model`, the served model's name goes in `model_name`.
    fn quoted_name_help(
        &self,
        d: Diagnostic,
        decl: usize,
        span: crate::span::Span,
        name: &str,
        kinds: &[DeclKind],
    ) -> Diagnostic {
        let module = self.info[decl].module;
        let declared = match self.scopes.lookup(module, name) {
            Some(Found::Decl(r)) => kinds.is_empty() || kinds.contains(&self.decls[r.0].kind),
            _ => false,
        };
        if declared {
            return d
                .with_help(format!("a declaration is named without quotes: `{name}`"))
                .with_fix(span, &format!("\"{name}\""), name);
        }
        if self.decls[decl].kind == DeclKind::Judge && kinds == [DeclKind::Model] {
            return d.with_help(format!(
                "an `http` judge names the model its server serves with `model_name = \"{name}\"`; `model` names a `model` declaration, for a `kind = model` judge"
            ));
        }
        d
    }

    /// Resolves a dotted name to a declaration and the remaining segments.
    pub(crate) fn resolve_path<'e>(
        &mut self,
        decl: usize,
        e: &'e ast::Expr,
        kinds: &[DeclKind],
    ) -> Option<(DeclRef, Vec<&'e Ident>, ast::Expr)> {
        let mut segments: Vec<(&str, crate::span::Span, Option<&'e Ident>)> = Vec::new();
        let mut cur = e;
        loop {
            match &cur.kind {
                ExprKind::Name { name } => {
                    segments.push((name, cur.span, None));
                    break;
                }
                ExprKind::Field { base, name } => {
                    segments.push((&name.name, name.span, Some(name)));
                    cur = base;
                }
                _ => {
                    let what = kinds.first().map_or("a name".to_string(), |k| {
                        format!("the name of a `{}`", k.keyword())
                    });
                    let mut d = Diagnostic::error(
                        Code::E0300,
                        format!("expected {what}, found {}", found(e)),
                    )
                    .with_primary(e.span, format!("expected {what}"));
                    if let ExprKind::String(s) = &e.kind {
                        d = self.quoted_name_help(d, decl, e.span, &s.value, kinds);
                    }
                    self.diags.push(d);
                    return None;
                }
            }
        }
        segments.reverse();
        let module = self.info[decl].module;
        let (first, first_span, _) = segments[0];
        let (target, used) = match self.scopes.lookup(module, first) {
            Some(Found::Decl(r)) => {
                if !self.scopes.modules[module].local.contains_key(first) {
                    self.glob_uses.push((module, first.to_string(), first_span));
                }
                (r, 1)
            }
            Some(Found::Module(m)) => {
                let Some((second, second_span, _)) = segments.get(1).copied() else {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!("`{first}` is a module, not a declaration"),
                        )
                        .with_primary(first_span, "a module alias")
                        .with_help(format!("name a declaration inside it: `{first}.name`")),
                    );
                    return None;
                };
                match self.scopes.lookup_in(m, second) {
                    Some(r) => (r, 2),
                    None => {
                        let names: Vec<String> =
                            self.scopes.modules[m].local.keys().cloned().collect();
                        let mut d = Diagnostic::error(
                            Code::E0203,
                            format!("module `{first}` has no `{second}`"),
                        )
                        .with_primary(second_span, "not declared there");
                        if let Some(best) = did_you_mean(second, names.iter().map(String::as_str)) {
                            d = d
                                .with_help(best.help(|n| format!("{first}.{n}")))
                                .with_suggested_fixes(second_span, second, &best, str::to_string);
                        } else if !names.is_empty() {
                            d = d.with_help(format!(
                                "it declares {}",
                                crate::diagnostic::one_of(&names)
                            ));
                        }
                        self.diags.push(d);
                        return None;
                    }
                }
            }
            None => {
                self.unknown_name(module, first, first_span, kinds);
                return None;
            }
        };
        let rest: Vec<&Ident> = segments[used..]
            .iter()
            .filter_map(|(_, _, id)| *id)
            .collect();
        Some((target, rest, e.clone()))
    }

    /// The rubrics visible in `module` that have a criterion `name`, for
    /// a criterion written without its rubric (`safety` for
    /// `safety_rubric.safety`).
    pub(crate) fn rubrics_with_criterion(&self, module: usize, name: &str) -> Vec<String> {
        let decls = &self.decls;
        let kind_of = |r: DeclRef| decls[r.0].kind;
        self.scopes
            .visible_names(module, &kind_of, &[DeclKind::Rubric])
            .into_iter()
            .filter(|rubric| match self.scopes.lookup(module, rubric) {
                Some(Found::Decl(r)) => self.info[r.0].criteria.iter().any(|c| c == name),
                _ => false,
            })
            .collect()
    }

    /// E0203 for a criterion written without its rubric, with the fix for
    /// each rubric that has it.
    pub(crate) fn criterion_without_rubric(
        &mut self,
        name: &str,
        span: crate::span::Span,
        rubrics: &[String],
    ) {
        let written: Vec<String> = rubrics.iter().map(|r| format!("{r}.{name}")).collect();
        let d = rubrics.iter().fold(
            Diagnostic::error(
                Code::E0203,
                format!("`{name}` is a criterion: name it through its rubric"),
            )
            .with_primary(span, "a criterion of a rubric")
            .with_help(format!("write {}", crate::diagnostic::one_of(&written))),
            |d, full| d.with_fix(span, name, &format!("{full}.{name}")),
        );
        self.diags.push(d);
    }

    fn unknown_name(
        &mut self,
        module: usize,
        name: &str,
        span: crate::span::Span,
        kinds: &[DeclKind],
    ) {
        let decls = &self.decls;
        let kind_of = |r: DeclRef| decls[r.0].kind;
        let mut names = self.scopes.visible_names(module, &kind_of, kinds);
        names.extend(self.scopes.modules[module].aliases.keys().cloned());
        let best = did_you_mean(name, names.iter().map(String::as_str));
        if kinds.contains(&DeclKind::Rubric) && best.is_none() {
            let rubrics = self.rubrics_with_criterion(module, name);
            if !rubrics.is_empty() {
                self.criterion_without_rubric(name, span, &rubrics);
                return;
            }
        }
        // Unless it is a misspelling of a name in scope, a name may be
        // declared by a `use` of this module that failed (or be its alias):
        // that `use`'s own error says what to fix.
        let failed = &self.loaded.modules[module].failed_uses;
        if best.is_none()
            && failed
                .iter()
                .any(|alias| alias.as_deref().is_none_or(|a| a == name))
        {
            return;
        }
        let what = match kinds {
            [k] => format!("no `{}` named `{name}`", k.keyword()),
            _ => format!("unknown name `{name}`"),
        };
        let mut d = Diagnostic::error(Code::E0203, what).with_primary(span, "not found");
        if let Some(best) = best {
            d = d.with_suggestion(span, name, &best);
        } else if !names.is_empty() && names.len() <= 8 {
            d = d.with_help(format!("in scope: {}", crate::diagnostic::one_of(&names)));
        } else if names.is_empty() {
            if let [k] = kinds {
                d = d.with_help(format!("declare it: `{} {name} {{ ... }}`", k.keyword()));
            }
        }
        self.diags.push(d);
    }

    /// Resolves a reference to a declaration of one of `kinds`.
    pub(crate) fn resolve_decl(
        &mut self,
        decl: usize,
        e: &ast::Expr,
        kinds: &[DeclKind],
        key: &str,
    ) -> Option<DeclRef> {
        let (target, rest, _) = self.resolve_path(decl, e, kinds)?;
        let kind = self.decls[target.0].kind;
        if !kinds.contains(&kind) {
            let wanted: Vec<String> = kinds
                .iter()
                .map(|k| format!("a `{}`", k.keyword()))
                .collect();
            self.diags.push(
                Diagnostic::error(
                    Code::E0209,
                    format!(
                        "`{key}` expects {}, but `{}` is a `{}`",
                        crate::diagnostic::join_or(&wanted),
                        self.decls[target.0].name,
                        kind.keyword()
                    ),
                )
                .with_primary(e.span, format!("a `{}`", kind.keyword()))
                .with_secondary(self.decls[target.0].span, "declared here"),
            );
            return None;
        }
        if let Some(extra) = rest.first() {
            self.diags.push(
                Diagnostic::error(
                    Code::E0212,
                    format!("a `{}` has no field `{}`", kind.keyword(), extra.name),
                )
                .with_primary(extra.span, "unknown field")
                .with_help(format!(
                    "refer to the {} itself: `{}`",
                    kind.keyword(),
                    self.decls[target.0].name
                )),
            );
            return None;
        }
        Some(target)
    }

    fn split_ref(&mut self, decl: usize, e: &ast::Expr) -> Option<Value> {
        let (target, rest, _) = self.resolve_path(decl, e, &[DeclKind::Dataset])?;
        let kind = self.decls[target.0].kind;
        if kind != DeclKind::Dataset {
            self.diags.push(
                Diagnostic::error(
                    Code::E0209,
                    format!(
                        "expected a dataset split, but `{}` is a `{}`",
                        self.decls[target.0].name,
                        kind.keyword()
                    ),
                )
                .with_primary(e.span, format!("a `{}`", kind.keyword()))
                .with_secondary(self.decls[target.0].span, "declared here"),
            );
            return None;
        }
        match rest.as_slice() {
            [] => Some(Value::Split {
                dataset: target,
                split: None,
            }),
            [split] => {
                let splits = self.info[target.0].splits.clone();
                if splits.contains(&split.name) {
                    return Some(Value::Split {
                        dataset: target,
                        split: Some(split.name.clone()),
                    });
                }
                let dataset = self.decls[target.0].name.clone();
                let mut d = Diagnostic::error(
                    Code::E0212,
                    format!("dataset `{dataset}` has no split `{}`", split.name),
                )
                .with_primary(split.span, "unknown split")
                .with_secondary(self.decls[target.0].span, "declared here");
                d = if split.name == "all" {
                    // The graph's name for every row (E0320), not a split.
                    let d = d.with_help(format!(
                        "every row of `{dataset}` is written `{dataset}`, without a split"
                    ));
                    match &e.kind {
                        ExprKind::Field { base, .. } if e.span.end == split.span.end => {
                            let dot_all = crate::span::Span {
                                start: base.span.end,
                                ..e.span
                            };
                            match dot_all.len() == ".all".len() {
                                true => d.with_fix(dot_all, ".all", ""),
                                false => d,
                            }
                        }
                        _ => d,
                    }
                } else if splits.is_empty() {
                    d.with_help(format!("add `split {{ {} = ..., ... }}` to `{dataset}`, or use the whole dataset: `{dataset}`", split.name))
                } else if let Some(best) =
                    did_you_mean(&split.name, splits.iter().map(String::as_str))
                {
                    d.with_help(best.help(|n| format!("{dataset}.{n}")))
                        .with_suggested_fixes(split.span, &split.name, &best, str::to_string)
                } else {
                    d.with_help(format!(
                        "its splits are {}",
                        crate::diagnostic::one_of(&splits)
                    ))
                };
                self.diags.push(d);
                None
            }
            [_, extra, ..] => {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0212,
                        format!("a split has no field `{}`", extra.name),
                    )
                    .with_primary(extra.span, "unknown field"),
                );
                None
            }
        }
    }

    /// Resolves `rubric.criterion` (or `rubric` / `rubric.total` for the
    /// shaped total).
    pub(crate) fn criterion_ref(&mut self, decl: usize, e: &ast::Expr) -> Option<Value> {
        let (target, rest, _) = self.resolve_path(decl, e, &[DeclKind::Rubric])?;
        let kind = self.decls[target.0].kind;
        if kind != DeclKind::Rubric {
            self.diags.push(
                Diagnostic::error(
                    Code::E0209,
                    format!(
                        "expected a rubric criterion, but `{}` is a `{}`",
                        self.decls[target.0].name,
                        kind.keyword()
                    ),
                )
                .with_primary(e.span, format!("a `{}`", kind.keyword())),
            );
            return None;
        }
        match rest.as_slice() {
            [] => Some(Value::Criterion {
                rubric: target,
                criterion: None,
            }),
            [c] if c.name == "total" => Some(Value::Criterion {
                rubric: target,
                criterion: None,
            }),
            [c] => {
                if self.info[target.0].criteria.contains(&c.name) {
                    Some(Value::Criterion {
                        rubric: target,
                        criterion: Some(c.name.clone()),
                    })
                } else {
                    self.unknown_criterion(target, c);
                    None
                }
            }
            [_, extra, ..] => {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0212,
                        format!("a criterion has no field `{}`", extra.name),
                    )
                    .with_primary(extra.span, "unknown field"),
                );
                None
            }
        }
    }

    pub(crate) fn unknown_criterion(&mut self, rubric: DeclRef, c: &Ident) {
        let criteria = self.info[rubric.0].criteria.clone();
        let name = self.decls[rubric.0].name.clone();
        let mut d = Diagnostic::error(
            Code::E0210,
            format!("rubric `{name}` has no criterion `{}`", c.name),
        )
        .with_primary(c.span, "unknown criterion")
        .with_secondary(self.decls[rubric.0].span, "the rubric");
        d = match did_you_mean(&c.name, criteria.iter().map(String::as_str)) {
            Some(best) => d
                .with_help(best.help(|n| format!("{name}.{n}")))
                .with_suggested_fixes(c.span, &c.name, &best, str::to_string),
            None => d.with_help(format!(
                "its criteria are {}",
                crate::diagnostic::one_of(&criteria)
            )),
        };
        self.diags.push(d);
    }
}

/// How a value looks, for "found ..." messages.
/// The range meant by `0-10` or `[0, 10]`, two number literals joined
/// otherwise than by `..`: the text written, where it can be rebuilt from
/// the literals (its length is the span's), and `0..10`.
fn range_meant(e: &ast::Expr) -> Option<(Option<String>, String)> {
    let (low, high, shapes) = match &e.kind {
        ExprKind::Binary {
            op: BinaryOp::Sub,
            lhs,
            rhs,
        } => (lhs.as_ref(), rhs.as_ref(), ["{a}-{b}", "{a} - {b}"]),
        ExprKind::List { items } if items.len() == 2 => {
            (&items[0], &items[1], ["[{a}, {b}]", "[{a},{b}]"])
        }
        _ => return None,
    };
    let a = written_number(low)?;
    let b = written_number(high)?;
    let wrote = shapes
        .iter()
        .map(|shape| shape.replace("{a}", &a).replace("{b}", &b))
        .find(|w| w.len() == e.span.len());
    Some((wrote, format!("{a}..{b}")))
}

/// `a-b` of two literals that is below 0: `0.2-0.28` for `0.2..0.28`.
fn negative_difference(e: &ast::Expr) -> bool {
    let ExprKind::Binary {
        op: BinaryOp::Sub,
        lhs,
        rhs,
    } = &e.kind
    else {
        return false;
    };
    match (&lhs.kind, &rhs.kind) {
        (ExprKind::Number(a), ExprKind::Number(b)) => a.value < b.value,
        _ => false,
    }
}

pub(crate) fn found(e: &ast::Expr) -> String {
    match &e.kind {
        ExprKind::Number(n) => format!("the number `{}`", n.text),
        ExprKind::Quantity { value, unit } => format!("`{} {}`", value.text, unit.plural()),
        ExprKind::String(_) => "a string".into(),
        ExprKind::Bool { value } => format!("`{value}`"),
        ExprKind::Name { name } => format!("`{name}`"),
        ExprKind::List { .. } => "a list".into(),
        ExprKind::Binary {
            op: BinaryOp::Range,
            ..
        } => "a range".into(),
        ExprKind::Binary {
            op: BinaryOp::Sub,
            lhs,
            rhs,
        } => match (written_number(lhs), written_number(rhs)) {
            (Some(a), Some(b)) => format!("the subtraction `{a} - {b}`"),
            _ => "an expression".into(),
        },
        ExprKind::Call { .. } => "a call".into(),
        _ => "an expression".into(),
    }
}

/// `meta.src` written as fields of a name, as one dotted name; `None` for
/// any other expression.
fn dotted_name(e: &ast::Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Name { name } => Some(name.clone()),
        ExprKind::Field { base, name } => Some(format!("{}.{}", dotted_name(base)?, name.name)),
        _ => None,
    }
}
