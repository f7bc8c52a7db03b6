//! Pass 3: blocks against the schema table.

use super::exprs::{ExprScope, RUBRIC_VARS};
use super::hir::{
    Const, Criterion, ExprTy, FormatTerm, Param, Penalty, Rubric, Setting, Settings, TExpr, TKind,
    Value,
};
use super::schema::{self, Block, Default as Def, Form, Ty};
use super::Analyzer;
use crate::diagnostic::{did_you_mean, one_of, Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::{self, DeclBody, DeclKind, ExprKind, StmtKind};
use std::collections::{HashMap, HashSet};

/// A statement of a block whose key the schema does not know: the key,
/// its value (none for a nested block), and every name the block writes.
struct Written<'w> {
    key: &'w ast::Ident,
    value: Option<&'w ast::Expr>,
    block: &'w HashSet<&'w str>,
}

impl<'a> Analyzer<'a> {
    /// Checks every declaration's body.
    pub(crate) fn check_all_settings(&mut self) {
        for i in 0..self.decls.len() {
            let decl = self.info[i].ast;
            match decl.kind {
                DeclKind::Prompt => self.check_prompt(i, decl),
                DeclKind::Scorer => self.check_scorer(i, decl),
                kind => {
                    let Some(block_schema) = schema::for_decl(kind) else {
                        continue;
                    };
                    if let Some(params) = &decl.params {
                        if kind != DeclKind::Rubric {
                            let span = params.first().map_or(decl.name.span, |p| p.span);
                            self.diags.push(
                                Diagnostic::error(
                                    Code::E0205,
                                    format!("a `{}` takes no parameters", kind.keyword()),
                                )
                                .with_primary(
                                    span,
                                    "parameters are for `rubric` and `scorer` declarations",
                                )
                                .with_help("remove the parameter list"),
                            );
                        }
                    }
                    let block = match &decl.body {
                        DeclBody::Block(b) => b,
                        DeclBody::Value(v) => {
                            self.diags.push(
                                Diagnostic::error(
                                    Code::E0300,
                                    format!(
                                        "a `{}` is declared with a block, not `= value`",
                                        kind.keyword()
                                    ),
                                )
                                .with_primary(v.span, "expected `{ ... }`")
                                .with_help(format!(
                                    "write `{} {} {{ ... }}`",
                                    kind.keyword(),
                                    decl.name.name
                                )),
                            );
                            continue;
                        }
                    };
                    if kind == DeclKind::Rubric {
                        self.check_rubric(i, decl, block);
                    } else {
                        let (settings, forms) =
                            self.check_block(i, block_schema, block, kind.keyword());
                        self.decls[i].settings = settings;
                        if kind == DeclKind::Dataset {
                            for stmt in forms {
                                if let StmtKind::Filter { cond } = &stmt.kind {
                                    let t = self.typed(i, cond, &ExprScope::Filter);
                                    self.expect_bool(&t, "a `filter` condition");
                                    self.decls[i].filters.push(t);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks a block against its schema; returns the settings and the
    /// statements of extra forms (filters, criteria, ...) for the caller.
    pub(crate) fn check_block<'b>(
        &mut self,
        decl: usize,
        schema: &'static Block,
        block: &'b ast::Block,
        path: &str,
    ) -> (Settings, Vec<&'b ast::Stmt>) {
        let mut settings = Settings::default();
        let mut forms = Vec::new();
        let mut seen: HashMap<String, Span> = HashMap::new();
        // Every key and block name the block writes: a fix never renames
        // one into another that is already there.
        let written: HashSet<&str> = block
            .stmts
            .iter()
            .filter_map(|s| match &s.kind {
                StmtKind::Assign { key, .. } | StmtKind::Block { key, .. } => {
                    Some(key.name.as_str())
                }
                _ => None,
            })
            .collect();
        for stmt in &block.stmts {
            match &stmt.kind {
                StmtKind::Assign { key, value } => {
                    if let Some(first) = seen.get(&key.name) {
                        self.duplicate_key(key, *first);
                        continue;
                    }
                    seen.insert(key.name.clone(), key.span);
                    if let Some(k) = schema.key(&key.name) {
                        let canonical = k.deprecated.unwrap_or(k.name);
                        // A deprecated key and its new name set one setting.
                        let other_spelling = schema
                            .keys
                            .iter()
                            .filter(|o| o.name != key.name)
                            .filter(|o| o.name == canonical || o.deprecated == Some(canonical))
                            .find_map(|o| seen.get(o.name).map(|span| (o.name, *span)));
                        if let Some((other, first)) = other_spelling {
                            self.diags.push(
                                Diagnostic::error(
                                    Code::E0208,
                                    format!(
                                        "`{other}` and `{}` set the same setting, `{canonical}`",
                                        key.name
                                    ),
                                )
                                .with_primary(key.span, "set again here")
                                .with_secondary(first, "first set here")
                                .with_help(format!("keep one of them, written `{canonical}`")),
                            );
                            continue;
                        }
                        let name = match k.deprecated {
                            Some(new) => {
                                let mut d = Diagnostic::warning(
                                    Code::E0207,
                                    format!("`{}` is deprecated", key.name),
                                )
                                .with_primary(key.span, format!("use `{new}`"))
                                .with_help(format!(
                                    "write `{new} = ...`; `{}` will be removed",
                                    key.name
                                ));
                                // Not when the new name is written too (E0208).
                                if !written.contains(new) {
                                    d = d.with_fix(key.span, &key.name, new);
                                }
                                self.diags.push(d);
                                new
                            }
                            None => k.name,
                        };
                        if let Some(v) = self.check_value(decl, k.ty, value, name) {
                            self.check_range(k, &v, value.span, path);
                            settings.0.insert(name.to_string(), Setting::Value(v));
                        }
                    } else if let Some(ty) = schema.open {
                        if let Some(v) = self.check_value(decl, ty, value, &key.name) {
                            settings.0.insert(key.name.clone(), Setting::Value(v));
                        }
                    } else {
                        let stmt = Written {
                            key,
                            value: Some(value),
                            block: &written,
                        };
                        self.unknown_key(decl, schema, &stmt, path);
                    }
                }
                StmtKind::Block { key, body } => {
                    if let Some(first) = seen.get(&key.name) {
                        self.duplicate_key(key, *first);
                        continue;
                    }
                    seen.insert(key.name.clone(), key.span);
                    match schema.block(&key.name) {
                        Some(nested) => {
                            let inner_path = format!("{path}.{}", key.name);
                            let (inner, inner_forms) =
                                self.check_block(decl, nested, body, &inner_path);
                            forms.extend(inner_forms);
                            settings.0.insert(key.name.clone(), Setting::Block(inner));
                        }
                        None => {
                            let stmt = Written {
                                key,
                                value: None,
                                block: &written,
                            };
                            self.unknown_key(decl, schema, &stmt, path);
                        }
                    }
                }
                other => {
                    let (form, word, span) = match other {
                        StmtKind::Filter { .. } => (Form::Filter, "filter", stmt.span),
                        StmtKind::Criterion { name, .. } => {
                            (Form::Criterion, "criterion", name.span)
                        }
                        StmtKind::Penalty { name, .. } => (Form::Penalty, "penalty", name.span),
                        _ => (Form::Format, "format", stmt.span),
                    };
                    if schema.forms.contains(&form) {
                        forms.push(stmt);
                    } else if schema.key(word).is_some() {
                        // `cost { criterion safety }`: the setting, without
                        // its `=` (and not also missing).
                        seen.insert(word.to_string(), span);
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0205,
                                format!(
                                    "`{word}` is a setting of `{path}`, written as a statement"
                                ),
                            )
                            .with_primary(span, "missing `=`")
                            .with_help(format!("write `{word} = ...`")),
                        );
                    } else {
                        let home = match form {
                            Form::Filter => "`dataset`",
                            _ => "`rubric`",
                        };
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0205,
                                format!("`{word}` is not allowed in `{path}`"),
                            )
                            .with_primary(span, format!("`{word}` statements belong in a {home}"))
                            .with_help(format!("move it into a {home} declaration")),
                        );
                    }
                }
            }
        }
        self.fill_defaults(decl, schema, &mut settings, block, path, &seen);
        (settings, forms)
    }

    fn duplicate_key(&mut self, key: &ast::Ident, first: Span) {
        self.diags.push(
            Diagnostic::error(Code::E0208, format!("`{}` is set twice", key.name))
                .with_primary(key.span, "set again here")
                .with_secondary(first, "first set here")
                .with_help("keep one of them"),
        );
    }

    fn fill_defaults(
        &mut self,
        decl: usize,
        schema: &'static Block,
        settings: &mut Settings,
        block: &ast::Block,
        path: &str,
        written: &HashMap<String, Span>,
    ) {
        for k in schema.keys {
            // A key that was written but invalid has been reported already.
            if settings.0.contains_key(k.name)
                || written.contains_key(k.name)
                || k.deprecated.is_some()
            {
                continue;
            }
            let value = match k.default {
                // Written misspelt (`wieghts`) or under another name
                // (`path`): that key's error says what to write.
                Def::Required
                    if written.keys().any(|w| {
                        !schema.names().any(|n| n == w)
                            && (did_you_mean(w, [k.name]).is_some()
                                || schema.renamed(w).is_some_and(|r| r.new == k.name))
                    }) =>
                {
                    continue;
                }
                Def::Required => {
                    // `train` requires `rollout` and `reward` only for GRPO:
                    // those checks live in `checks`.
                    let decl_name = &self.decls[decl].name;
                    let kind = self.decls[decl].kind.keyword();
                    let head = if path == kind {
                        format!("`{kind} {decl_name}`")
                    } else {
                        format!("`{path}`")
                    };
                    self.diags.push(
                        Diagnostic::error(Code::E0211, format!("{head} has no `{}`", k.name))
                            .with_primary(
                                Span {
                                    end: block.span.start + 1,
                                    ..block.span
                                },
                                format!("`{}` is required here", k.name),
                            )
                            .with_note(format!("`{}`: {}", k.name, k.doc))
                            .with_help(format!(
                                "add `{} = ...` ({})",
                                k.name,
                                schema::describe(k.ty)
                            )),
                    );
                    continue;
                }
                Def::None | Def::Derived(_) => continue,
                Def::Number(n) => match k.ty {
                    Ty::Quantity(units) => Value::Quantity {
                        value: n,
                        unit: units[0],
                    },
                    _ => Value::Number(n),
                },
                Def::Quantity(n, unit) => Value::Quantity { value: n, unit },
                Def::Bool(b) => Value::Bool(b),
                Def::Str(s) => match k.ty {
                    Ty::Enum(_) => Value::Enum(s.to_string()),
                    _ => Value::Str(s.to_string()),
                },
                Def::Range(low, high) => Value::Range { low, high },
            };
            settings.0.insert(k.name.to_string(), Setting::Value(value));
        }
    }

    /// E0206 or E0205 for an unknown key or block name, with the fix when
    /// one name of the same kind replaces it: not one the block already
    /// writes (the fix would set it twice), and for a rename, only one
    /// under which the written value checks (`path = "d.jsonl"` is not
    /// `source = "d.jsonl"`).
    fn unknown_key(&mut self, decl: usize, schema: &'static Block, stmt: &Written<'_>, path: &str) {
        let key = stmt.key;
        let name = &key.name;
        let is_block = stmt.value.is_none();
        let same_kind = |other: &str| {
            !stmt.block.contains(other)
                && match is_block {
                    true => schema.block(other).is_some(),
                    false => schema.key(other).is_some(),
                }
        };
        if let Some(r) = schema.renamed(name) {
            // A stage's `lr` and `batch` go in its algorithm's block, which
            // is `sft` when the stage has that one.
            let sft = stmt.block.contains("sft") && !stmt.block.contains("grpo");
            let r = match (r.new, sft) {
                ("grpo.lr", true) => schema::Renamed {
                    new: "sft.lr",
                    ..*r
                },
                ("grpo.batch", true) => schema::Renamed {
                    new: "sft.batch",
                    ..*r
                },
                _ => *r,
            };
            // A phrase (`criterion NAME weight W`) is written as it is; a
            // dotted key (`kl.beta`) goes in its block.
            let help = if r.old == "api_key" {
                // The key itself never goes in a file.
                "keep the key out of the file: put it in an environment variable and name that variable, `api_key_env = \"MY_KEY_VAR\"`".to_string()
            } else if r.new.contains(' ') {
                format!("write it as `{}`", r.new)
            } else if let Some((block, inner)) = r.new.split_once('.') {
                format!("set it as `{block} {{ {inner} = ... }}`")
            } else {
                format!("write `{} = ...`", r.new)
            };
            let mut d = Diagnostic::error(
                Code::E0206,
                format!("`{name}` is called `{}` in saferc", r.new),
            )
            .with_primary(key.span, format!("not a key of `{path}`"))
            .with_help(help);
            let value_fits = match (stmt.value, schema.key(r.new)) {
                (Some(value), Some(k)) => self.value_fits(decl, k, value, path),
                _ => true,
            };
            if r.keeps_value && same_kind(r.new) && value_fits {
                d = d.with_fix(key.span, name, r.new);
            }
            // `api_key = "sk-..."` is the key itself: no report shows it.
            if let Some(value) = stmt.value.filter(|_| r.old == "api_key") {
                d = d.hiding(value.span);
            }
            self.diags.push(d);
            return;
        }
        // A block written as a setting, a setting as a block, or a
        // statement (`filter COND`, `format NAME`) as either.
        let form = crate::syntax::ast::statement_form(name).filter(|_| {
            schema.forms.iter().any(|f| match f {
                schema::Form::Filter => name == "filter",
                schema::Form::Criterion => name == "criterion",
                schema::Form::Penalty => name == "penalty",
                schema::Form::Format => name == "format",
            })
        });
        let written_as = match (is_block, schema.block(name), schema.key(name), form) {
            (_, _, _, Some(form)) => Some((
                "a statement",
                format!("`{name}` starts a statement of `{path}`, without `=`: `{form}`"),
            )),
            (false, Some(_), _, _) => Some((
                "a block",
                format!("`{name}` is a block of `{path}`: write `{name} {{ ... }}`"),
            )),
            // `reflection { ... }` inside a stage: a declaration of its own.
            (true, _, Some(k), _) if matches!(k.ty, Ty::Ref(_)) => {
                let kind = match k.ty {
                    Ty::Ref(kind) => kind.keyword(),
                    _ => name,
                };
                Some((
                    "a setting",
                    format!("`{name}` names a `{kind}` declared on its own: move the block out of `{path}` as `{kind} NAME {{ ... }}` and write `{name} = NAME` here"),
                ))
            }
            (true, _, Some(_), _) => Some((
                "a setting",
                format!("`{name}` is a setting of `{path}`: write `{name} = ...`"),
            )),
            _ => None,
        };
        if let Some((is, help)) = written_as {
            let written = if is_block { "a block" } else { "a setting" };
            self.diags.push(
                Diagnostic::error(
                    Code::E0205,
                    format!("`{name}` is written the wrong way in `{path}`"),
                )
                .with_primary(key.span, format!("{is}, written as {written}"))
                .with_help(help),
            );
            return;
        }
        let mut diag = Diagnostic::error(Code::E0205, format!("unknown key `{name}` in `{path}`"))
            .with_primary(key.span, "unknown key");
        // A key that exists as written in another block (`keep` of
        // `train.checkpoint` written in `train`) is named there, before a
        // near spelling here is offered as a fix (it wrote `seed`).
        let homes = find_key_elsewhere(name, path);
        if name == "judge" && path == "rubric" {
            let rubric = &self.info[decl].ast.name.name;
            diag = diag.with_help(format!(
                "a rubric's judge is a parameter of its head: `rubric {rubric}(judge = ...) {{ ... }}`"
            ));
        } else if !homes.is_empty() {
            diag = diag.with_help(format!(
                "`{name}` is a setting of {}, not of `{path}`",
                one_of(&homes)
            ));
        } else if let Some(best) = did_you_mean(name, schema.names()) {
            diag = match best.names().iter().all(|n| same_kind(n)) {
                true => diag.with_suggestion(key.span, name, &best),
                false => diag.with_help(best.help(str::to_string)),
            };
        } else {
            let names: Vec<&str> = schema.names().collect();
            diag = diag.with_help(if names.is_empty() {
                format!("`{path}` takes no settings")
            } else {
                format!("`{path}` accepts {}", one_of(&names))
            });
        }
        self.diags.push(diag);
    }

    /// Whether `value` checks as key `k`'s (type and range), reporting
    /// nothing.
    fn value_fits(&mut self, decl: usize, k: &schema::Key, value: &ast::Expr, path: &str) -> bool {
        let before = self.diags.len();
        let checked = self.check_value(decl, k.ty, value, k.name);
        if let Some(v) = &checked {
            self.check_range(k, v, value.span, path);
        }
        let fits = checked.is_some() && self.diags.len() == before;
        self.diags.truncate(before);
        fits
    }

    fn check_range(&mut self, k: &schema::Key, v: &Value, span: Span, path: &str) {
        let Some(range) = k.range else { return };
        let (lo, hi, lo_in, hi_in) = range;
        let n = match v {
            Value::Number(n) => *n,
            Value::Quantity { value, .. } => *value,
            _ => return,
        };
        let low_ok = if lo_in { n >= lo } else { n > lo };
        let ok = low_ok && (if hi_in { n <= hi } else { n < hi });
        if !ok {
            // The bound it crossed: the value to write when it is allowed.
            let (bound, allowed, side) = match low_ok {
                false => (lo, lo_in, "above"),
                true => (hi, hi_in, "below"),
            };
            let help = match allowed {
                true => format!(
                    "the nearest value allowed is {}",
                    schema::format_number(bound)
                ),
                false => format!("use a value {side} {}", schema::format_number(bound)),
            };
            self.diags.push(
                Diagnostic::error(
                    Code::E0301,
                    format!(
                        "`{}` must be {}, found {}",
                        k.name,
                        schema::describe_range(range),
                        schema::format_number(n)
                    ),
                )
                .with_primary(span, "out of range")
                .with_help(help)
                .with_note(format!("`{path}.{}`: {}", k.name, k.doc)),
            );
        }
    }

    fn check_prompt(&mut self, i: usize, decl: &ast::Decl) {
        match &decl.body {
            DeclBody::Value(e) => match &e.kind {
                ExprKind::String(s) => self.decls[i].value = Some(Value::Str(s.value.clone())),
                _ => self.diags.push(
                    Diagnostic::error(Code::E0300, "a prompt is a string")
                        .with_primary(e.span, "expected a string")
                        .with_help("write `prompt name = \"...\"` or use `\"\"\"...\"\"\"` for several lines"),
                ),
            },
            DeclBody::Block(b) => self.diags.push(
                Diagnostic::error(Code::E0300, "a prompt is declared with `= \"text\"`, not a block")
                    .with_primary(b.span, "expected `= \"...\"`")
                    .with_help(format!("write `prompt {} = \"...\"`", decl.name.name)),
            ),
        }
    }

    /// The names of the prelude's built-in scorers (`= intrinsic`).
    fn built_in_scorers(&self) -> Vec<String> {
        let prelude = self.loaded.prelude;
        self.info
            .iter()
            .filter(|d| {
                Some(d.module) == prelude
                    && d.ast.kind == DeclKind::Scorer
                    && is_intrinsic(&d.ast.body)
            })
            .map(|d| d.ast.name.name.clone())
            .collect()
    }

    /// E0300 for a parameter's type that is no type (`x: nmber`).
    fn check_param_type(&mut self, p: &ast::Param) {
        let Some(ty) = &p.ty else {
            return;
        };
        if ExprTy::declared(&ty.name).is_some() {
            return;
        }
        let names = ExprTy::DECLARABLE.map(|(name, _)| name);
        let d = Diagnostic::error(Code::E0300, format!("unknown type `{}`", ty.name))
            .with_primary(ty.span, "not a type");
        let d = match did_you_mean(&ty.name, names.iter().copied()) {
            Some(best) => d.with_suggestion(ty.span, &ty.name, &best),
            None => d.with_help(format!("a parameter's type is {}", one_of(&names))),
        };
        self.diags.push(d);
    }

    fn check_scorer(&mut self, i: usize, decl: &ast::Decl) {
        let mut params: Vec<Param> = Vec::new();
        for p in decl.params.iter().flatten() {
            let name = &p.name.name;
            if params.iter().any(|q| q.name == *name) {
                self.diags.push(
                    Diagnostic::error(Code::E0208, format!("parameter `{name}` is declared twice"))
                        .with_primary(p.name.span, "declared again")
                        .with_help("give each parameter its own name"),
                );
                continue;
            }
            // In a body, `think`, `answer` and `judge` are the completion's
            // parts and the rubric's judge.
            if ["think", "answer", "judge"].contains(&name.as_str()) && !is_intrinsic(&decl.body) {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0204,
                        format!("a scorer's parameter cannot be named `{name}`"),
                    )
                    .with_primary(p.name.span, format!("`{name}` is taken in a scorer's body"))
                    .with_help("rename the parameter"),
                );
            }
            self.check_param_type(p);
            // A call's arguments are checked against the type: one must
            // say it, or arguments of any type would pass until the run.
            if p.ty.is_none() && p.default.is_none() {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0211,
                        format!(
                            "parameter `{name}` of scorer `{}` has neither a type nor a default",
                            decl.name.name
                        ),
                    )
                    .with_primary(p.name.span, "its arguments' type is unknown")
                    .with_help(format!(
                        "declare its type, `{name}: number` (or `string`, `bool`, `list`), or give it a default, `{name} = ...`"
                    )),
                );
            }
            let default = p.default.as_ref().and_then(|d| self.constant_value(i, d));
            if let (Some(ty), Some(value)) = (&p.ty, &default) {
                if let Some(found) = param_type_mismatch(&ty.name, value) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!(
                                "the default of `{name}` is {found}, but `{name}` is a `{}`",
                                ty.name
                            ),
                        )
                        .with_primary(
                            p.default.as_ref().map_or(p.name.span, |d| d.span),
                            "wrong type",
                        )
                        .with_help(format!("give a {} default, or change the type", ty.name)),
                    );
                }
            }
            params.push(Param {
                name: name.clone(),
                ty: p.ty.as_ref().map(|t| t.name.clone()),
                default,
            });
        }
        self.decls[i].params = params;
        match &decl.body {
            DeclBody::Value(e) if is_intrinsic(&decl.body) => {
                self.decls[i].value = Some(Value::Intrinsic);
                // The runtime implements the prelude's built-in scorers
                // only: another name would check clean and stop the run.
                let prelude = self.loaded.prelude;
                let name = &self.decls[i].name;
                let builtins = self.built_in_scorers();
                let known =
                    self.info[i].module == prelude.unwrap_or(usize::MAX) || builtins.contains(name);
                if prelude.is_some() && !known {
                    let mut d = Diagnostic::error(
                        Code::E0203,
                        format!("no built-in scorer is named `{name}`"),
                    )
                    .with_primary(e.span, "the runtime has no such scorer");
                    d = match did_you_mean(name, builtins.iter().map(String::as_str)) {
                        Some(best) => d.with_suggestion(e.span, name, &best),
                        None => d.with_help(format!(
                            "built-in scorers: {}; or give `{name}` a body: `scorer {name}(...) = expression`",
                            one_of(&builtins)
                        )),
                    };
                    self.diags.push(d);
                }
            }
            // A user scorer: an expression of its parameters, the
            // completion's `think`/`answer`, judge questions and built-in
            // scorers, giving a number (a condition counts 1 or 0).
            DeclBody::Value(e) => {
                // Its plan name would be the built-in's, which the runtime
                // would run instead.
                let name = self.decls[i].name.clone();
                if self.built_in_scorers().contains(&name)
                    || safer_ir::plan::expr::BUILTIN_FUNCTIONS.contains(&name.as_str())
                {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0204,
                            format!("`{name}` is the name of a built-in; a scorer with a body needs its own"),
                        )
                        .with_primary(decl.name.span, "taken by the built-in")
                        .with_help(format!("rename it, e.g. `my_{name}`")),
                    );
                }
                let body = self.typed(i, e, &ExprScope::Scorer { decl: i });
                if !(body.ty.is_numeric() || body.ty.is_bool()) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0300,
                            format!("a scorer gives a score, found {}", body.ty.describe()),
                        )
                        .with_primary(body.span, "not a number or condition")
                        .with_help("e.g. `scorer short(max: number = 200) = if answer.length <= max { 1 } else { 0 }`"),
                    );
                }
                self.divisions_by_zero_defaults(i, &body);
                let name = self.decls[i].name.clone();
                self.possible_zero_divisors_in_scorer(&name, &body);
                self.decls[i].value = Some(Value::Expr(body));
            }
            DeclBody::Block(b) => self.diags.push(
                Diagnostic::error(
                    Code::E0300,
                    "a scorer is declared with `=`, not with a block",
                )
                .with_primary(b.span, "expected `= intrinsic` or `= expression`"),
            ),
        }
    }

    fn check_rubric(&mut self, i: usize, decl: &ast::Decl, block: &ast::Block) {
        let Some(schema) = schema::for_decl(DeclKind::Rubric) else {
            return;
        };
        // Parameters: `judge = rules` and constants such as `threshold = 0.6`.
        let mut params = Vec::new();
        let mut judge = None;
        for p in decl.params.iter().flatten() {
            self.check_param_type(p);
            // In the rubric's expressions a criterion's name is its score:
            // a parameter of that name could never be read.
            if self.info[i].criteria.contains(&p.name.name) {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0204,
                        format!(
                            "parameter `{}` of rubric `{}` has a criterion's name",
                            p.name.name, decl.name.name
                        ),
                    )
                    .with_primary(p.name.span, "hidden by the criterion of this name")
                    .with_help("rename the parameter or the criterion"),
                );
            }
            // The rubric's sums and the completion's parts are read first:
            // a parameter of their name could never be read either.
            let n = p.name.name.as_str();
            if RUBRIC_VARS.contains(&n) || n == "think" || n == "answer" {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0204,
                        format!("parameter `{n}` of rubric `{}` has a name the rubric's expressions already give a meaning", decl.name.name),
                    )
                    .with_primary(p.name.span, format!("hidden by the rubric's own `{n}`"))
                    .with_help(format!("rename the parameter: in a rubric's expressions `{n}` is {}", match n {
                        "think" | "answer" => "a part of the completion",
                        _ => "one of the rubric's sums",
                    })),
                );
            }
            // Nothing passes a rubric arguments (`rubric = r(x = 1)` is
            // no form): a parameter is its default.
            if p.default.is_none() {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0211,
                        format!(
                            "parameter `{}` of rubric `{}` has no default",
                            p.name.name, decl.name.name
                        ),
                    )
                    .with_primary(p.name.span, "a rubric's parameter is its default")
                    .with_help(format!(
                        "a rubric takes no arguments: give it one, `{} = ...`",
                        p.name.name
                    )),
                );
            }
            let default = match &p.default {
                Some(d) if p.name.name == "judge" => {
                    let r = self.resolve_decl(i, d, &[DeclKind::Judge], "judge");
                    judge = r;
                    r.map(Value::Ref)
                }
                Some(d) => self.constant_value(i, d),
                None => None,
            };
            params.push(Param {
                name: p.name.name.clone(),
                ty: p.ty.as_ref().map(|t| t.name.clone()),
                default,
            });
        }
        self.decls[i].params = params;
        let (settings, forms) = self.check_block(i, schema, block, "rubric");
        let scope = ExprScope::Rubric { decl: i };
        let mut criteria = Vec::new();
        let mut penalties = Vec::new();
        let mut formats = Vec::new();
        let mut format_spans: HashMap<String, Span> = HashMap::new();
        let mut seen: HashMap<String, Span> = HashMap::new();
        for stmt in forms {
            match &stmt.kind {
                StmtKind::Criterion {
                    name,
                    weight,
                    description,
                    body,
                } => {
                    if let Some(first) = seen.insert(name.name.clone(), name.span) {
                        self.duplicate_key(name, first);
                    }
                    let w = weight.as_ref().map_or(Some(1.0), |w| {
                        self.constant_number(i, w, "a criterion weight")
                    });
                    let (mut scorer, mut scale) = (None, (0.0, 1.0));
                    if let Some(body) = body {
                        let crit_schema = schema.block("criterion").unwrap_or(schema);
                        let (s, _) = self.check_block(
                            i,
                            crit_schema,
                            body,
                            &format!("criterion {}", name.name),
                        );
                        if let Some(Value::Expr(e)) = s.get("scorer") {
                            scorer = Some(e.clone());
                        }
                        if let Some(Value::Range { low, high }) = s.get("scale") {
                            scale = (*low, *high);
                            let value = body.stmts.iter().find_map(|st| match &st.kind {
                                StmtKind::Assign { key, value } if key.name == "scale" => {
                                    Some(value)
                                }
                                _ => None,
                            });
                            let span = value.map_or(name.span, |v| v.span);
                            if low >= high {
                                let d = Diagnostic::error(
                                    Code::E0301,
                                    format!(
                                        "the scale of criterion `{}` is empty or reversed: {}..{}",
                                        name.name,
                                        schema::format_number(*low),
                                        schema::format_number(*high)
                                    ),
                                )
                                .with_primary(span, "low must be below high")
                                .with_help(format!(
                                    "raw scores are mapped from `low..high` to 0..1; write e.g. `scale = {}..{}`",
                                    schema::format_number(low.min(*high)),
                                    schema::format_number(low.max(*high) + if low == high { 1.0 } else { 0.0 })
                                ));
                                // A reversed scale's fix swaps its ends.
                                let d = match (value, low > high) {
                                    (Some(v), true) => super::exprs::with_ends_swapped(d, v),
                                    _ => d,
                                };
                                self.diags.push(d);
                            } else if (*high <= 0.0 || *low >= 1.0)
                                && scorer
                                    .as_ref()
                                    .is_some_and(|e| self.scores_in_unit_range(e))
                            {
                                let constant = if *high <= 0.0 { 1 } else { 0 };
                                self.diags.push(
                                    Diagnostic::warning(
                                        Code::E0301,
                                        format!(
                                            "criterion `{}` would always be {constant}: its scorer gives 0..1, outside its scale {}..{}",
                                            name.name,
                                            schema::format_number(*low),
                                            schema::format_number(*high)
                                        ),
                                    )
                                    .with_primary(span, "outside the scorer's 0..1")
                                    .with_help("a built-in scorer's score and a judge's yes/no verdict are already in 0..1: remove `scale`"),
                                );
                            }
                        }
                    }
                    // In the rubric's expressions these names are the
                    // completion's parts, the judge and the totals; a row of
                    // samples.jsonl holds each criterion's score under its
                    // name, beside its own fields.
                    let n = name.name.as_str();
                    let taken = if [
                        "think",
                        "answer",
                        "judge",
                        "weighted",
                        "penalties",
                        "format",
                    ]
                    .contains(&n)
                    {
                        Some((
                            "taken in a rubric's expressions",
                            "rename the criterion".to_string(),
                        ))
                    } else if safer_ir::plan::SAMPLE_FIELDS.contains(&n) {
                        Some((
                            "a field of each row of samples.jsonl",
                            format!("rename the criterion (samples.jsonl writes each criterion's score under its name, beside `{n}`), e.g. `{n}_score`"),
                        ))
                    } else {
                        None
                    };
                    if let Some((label, help)) = taken {
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0204,
                                format!("a criterion cannot be named `{n}`"),
                            )
                            .with_primary(name.span, label)
                            .with_help(help),
                        );
                    }
                    criteria.push(Criterion {
                        name: name.name.clone(),
                        weight: w.unwrap_or(0.0),
                        description: description.as_ref().map(|d| d.value.clone()),
                        scorer,
                        scale,
                        span: weight.as_ref().map_or(name.span, |w| w.span),
                        name_span: name.span,
                    });
                }
                StmtKind::Penalty { name, value, when } => {
                    if let Some(first) = seen.insert(name.name.clone(), name.span) {
                        self.duplicate_key(name, first);
                    }
                    let v = self.typed(i, value, &scope);
                    self.expect_number(&v, "a penalty");
                    let w = when.as_ref().map(|w| {
                        let t = self.typed(i, w, &scope);
                        self.expect_bool(&t, "a penalty's `when`");
                        t
                    });
                    penalties.push(Penalty {
                        name: name.name.clone(),
                        value: v,
                        when: w,
                    });
                }
                StmtKind::Format { name, weight } => {
                    if !schema::FORMATS.contains(&name.name.as_str()) {
                        let mut d = Diagnostic::error(
                            Code::E0303,
                            format!("unknown format `{}`", name.name),
                        )
                        .with_primary(name.span, "not a response format");
                        d = match did_you_mean(&name.name, schema::FORMATS.iter().copied()) {
                            Some(best) => d.with_suggestion(name.span, &name.name, &best),
                            None => d.with_help(format!("formats are {}", one_of(schema::FORMATS))),
                        };
                        self.diags.push(d);
                    }
                    let w = weight
                        .as_ref()
                        .map_or(Some(1.0), |w| self.constant_number(i, w, "a format weight"));
                    // A format term rewards the format: one term a format,
                    // with a weight that is not negative (as a criterion's).
                    if let Some(first) = format_spans.get(&name.name) {
                        self.duplicate_key(name, *first);
                    }
                    format_spans.entry(name.name.clone()).or_insert(name.span);
                    if let (Some(weight), Some(value)) = (weight, w.filter(|w| *w < 0.0)) {
                        self.diags.push(
                            Diagnostic::error(
                                Code::E0309,
                                format!(
                                    "format `{}` has a negative weight ({})",
                                    name.name,
                                    schema::format_number(value)
                                ),
                            )
                            .with_primary(weight.span, "format terms reward the format")
                            .with_help(format!(
                                "to deduct for the format instead, write a penalty: `penalty {} = {} when ...`",
                                name.name,
                                schema::format_number(value)
                            )),
                        );
                    }
                    formats.push(FormatTerm {
                        format: name.name.clone(),
                        weight: w.unwrap_or(0.0),
                    });
                }
                _ => {}
            }
        }
        // `total` was typed by `check_block` (its schema type is a number
        // expression in the rubric's scope).
        let total = match settings.get("total") {
            Some(Value::Expr(t)) => t.clone(),
            _ => default_total(block.span),
        };
        // `penalties` and `format` are 0 in a rubric with none of them: a
        // division by either stops the run at its first completion.
        let zero: Vec<&str> = [
            ("penalties", penalties.is_empty()),
            ("format", formats.is_empty()),
        ]
        .into_iter()
        .filter_map(|(var, none)| none.then_some(var))
        .collect();
        self.divisions_by_zero_vars(&total, &zero);
        self.totals_read_by_penalties(&penalties);
        self.names_read_by_criteria(&criteria);
        let mut settings = settings;
        settings.0.remove("total");
        self.decls[i].settings = settings;
        let rubric = Rubric {
            judge,
            criteria,
            penalties,
            formats,
            total,
        };
        let name = self.decls[i].name.clone();
        self.possible_zero_divisors_in_rubric(&name, &rubric, &zero);
        self.decls[i].rubric = Some(rubric);
    }
}

impl Analyzer<'_> {
    /// E0203 for a penalty that reads `weighted`, `penalties` or `format`:
    /// they are the sums the rubric makes after its penalties (and
    /// `penalties` of them), so a penalty finds none when it is scored.
    fn totals_read_by_penalties(&mut self, penalties: &[Penalty]) {
        for p in penalties {
            let mut found = Vec::new();
            vars_named(&p.value, RUBRIC_VARS, &mut found);
            if let Some(when) = &p.when {
                vars_named(when, RUBRIC_VARS, &mut found);
            }
            for (name, span) in found {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0203,
                        format!("penalty `{}` reads `{name}`, which a penalty cannot use", p.name),
                    )
                    .with_primary(span, "made after the penalties are scored")
                    .with_help("`weighted`, `penalties` and `format` are the rubric's sums, made from its criteria, penalties and format terms once the penalties are scored: a penalty can read the criteria (`safety < 0.5`) and the rubric's parameters, and `total` can read the sums"),
                );
            }
        }
    }

    /// E0203 for a criterion whose scorer's arguments read the rubric's
    /// sums, itself or a criterion declared after it: criteria are scored
    /// in order, each seeing those before it, and the sums after all of
    /// them, so it would find none when it is scored.
    fn names_read_by_criteria(&mut self, criteria: &[Criterion]) {
        for (k, c) in criteria.iter().enumerate() {
            let Some(scorer) = &c.scorer else {
                continue;
            };
            let unscored: Vec<&str> = criteria[k..].iter().map(|c| c.name.as_str()).collect();
            let mut found = Vec::new();
            vars_named(scorer, RUBRIC_VARS, &mut found);
            vars_named(scorer, &unscored, &mut found);
            for (name, span) in found {
                let (label, help) = match RUBRIC_VARS.contains(&name.as_str()) {
                    true => (
                        "made once every criterion and penalty is scored",
                        "`weighted`, `penalties` and `format` are the rubric's sums: a criterion can read the criteria declared before it and the rubric's parameters, and `total` can read the sums".to_string(),
                    ),
                    false if name == c.name => (
                        "the criterion being scored",
                        "a criterion cannot read its own score: read the criteria declared before it".to_string(),
                    ),
                    false => (
                        "declared after it, so not yet scored",
                        format!("criteria are scored in the order they are declared: declare `{name}` before `{}`", c.name),
                    ),
                };
                self.diags.push(
                    Diagnostic::error(
                        Code::E0203,
                        format!("criterion `{}` reads `{name}`, which it cannot use", c.name),
                    )
                    .with_primary(span, label)
                    .with_help(help),
                );
            }
        }
    }

    /// E0316 (a warning): scorer `i`'s body divides by a parameter whose
    /// default is 0, so every call that leaves it out divides by zero.
    fn divisions_by_zero_defaults(&mut self, i: usize, body: &TExpr) {
        let zero: Vec<String> = self.decls[i]
            .params
            .iter()
            .filter(|p| matches!(p.default, Some(Value::Number(n)) if n == 0.0))
            .map(|p| p.name.clone())
            .collect();
        if zero.is_empty() {
            return;
        }
        let mut found = Vec::new();
        divisors(body, &mut found);
        let scorer = self.decls[i].name.clone();
        for (name, span) in found.into_iter().filter(|(n, _)| zero.contains(n)) {
            self.diags.push(
                Diagnostic::warning(Code::E0316, format!("scorer `{scorer}` divides by `{name}`, whose default is 0"))
                    .with_primary(span, "0 unless the call gives it")
                    .with_help(format!("give `{name}` a default that is not 0, or declare it without one (`{name}: number`), so that each call must give it")),
            );
        }
    }

    /// E0316 for every `x / v` or `x % v` in `e` where `v` is one of
    /// `zero`, rubric variables that are 0 in this rubric.
    fn divisions_by_zero_vars(&mut self, e: &TExpr, zero: &[&str]) {
        let mut found = Vec::new();
        divisors(e, &mut found);
        for (name, span) in found
            .into_iter()
            .filter(|(n, _)| zero.contains(&n.as_str()))
        {
            let what = if name == "penalties" {
                "penalty"
            } else {
                "format term"
            };
            self.diags.push(
                Diagnostic::error(Code::E0316, "division by zero")
                    .with_primary(span, format!("`{name}` is 0: this rubric has no {what}"))
                    .with_help(
                        "a reward must be a finite number: divide by something that is not 0",
                    ),
            );
        }
    }
}

impl Analyzer<'_> {
    /// Whether a criterion's scorer gives scores in 0..1 whatever its
    /// scale: a call of a built-in scorer, or a judge's `flag` (a judge's
    /// `score` is asked in the scale, so `scale = 1..10` is its use).
    fn scores_in_unit_range(&self, scorer: &TExpr) -> bool {
        let TKind::Call { func, .. } = &scorer.kind else {
            return false;
        };
        if func == "judge.flag" {
            return true;
        }
        self.scorer_index(func)
            .is_some_and(|j| is_intrinsic(&self.info[j].ast.body))
    }
}

/// The variables `e` divides by (`x / v`, `x % v`), with their spans;
/// not those in a branch of an `if` whose condition reads the variable
/// (`if n > 0 { x / n } else { 0 }`).
pub(super) fn divisors(e: &TExpr, out: &mut Vec<(String, Span)>) {
    fn walk(e: &TExpr, guarded: &mut Vec<String>, out: &mut Vec<(String, Span)>) {
        match &e.kind {
            TKind::Binary {
                op: crate::syntax::ast::BinaryOp::Div | crate::syntax::ast::BinaryOp::Rem,
                rhs,
                ..
            } => {
                if let TKind::Var { name } = &rhs.kind {
                    if !guarded.contains(name) {
                        out.push((name.clone(), rhs.span));
                    }
                }
            }
            TKind::If {
                cond,
                then,
                otherwise,
            } => {
                walk(cond, guarded, out);
                let before = guarded.len();
                read_vars(cond, guarded);
                walk(then, guarded, out);
                walk(otherwise, guarded, out);
                guarded.truncate(before);
                return;
            }
            _ => {}
        }
        for child in e.children() {
            walk(child, guarded, out);
        }
    }
    walk(e, &mut Vec::new(), out);
}

/// Where `e` reads one of the variables `names`, added to `out`.
fn vars_named(e: &TExpr, names: &[&str], out: &mut Vec<(String, Span)>) {
    if let TKind::Var { name } = &e.kind {
        if names.contains(&name.as_str()) {
            out.push((name.clone(), e.span));
        }
    }
    for child in e.children() {
        vars_named(child, names, out);
    }
}

/// The variables `e` reads, added to `out`.
fn read_vars(e: &TExpr, out: &mut Vec<String>) {
    if let TKind::Var { name } = &e.kind {
        out.push(name.clone());
    }
    for child in e.children() {
        read_vars(child, out);
    }
}

/// `weighted + penalties + format`.
fn default_total(span: Span) -> TExpr {
    use super::hir::ExprTy;
    use crate::syntax::ast::BinaryOp;
    let var = |name: &str| TExpr {
        kind: TKind::Var { name: name.into() },
        ty: ExprTy::Number,
        span,
    };
    let add = |l: TExpr, r: TExpr| TExpr {
        kind: TKind::Binary {
            op: BinaryOp::Add,
            lhs: Box::new(l),
            rhs: Box::new(r),
        },
        ty: ExprTy::Number,
        span,
    };
    add(add(var("weighted"), var("penalties")), var("format"))
}

/// The block (`rollout`, `grpo`, ...) that has a key named `name`, if any.
/// Every block of every declaration that has a key `name`, the blocks of
/// the declaration of `path` first (`train.checkpoint` for `keep` written
/// in `train`).
fn find_key_elsewhere(name: &str, path: &str) -> Vec<String> {
    fn walk(block: &'static Block, path: String, name: &str, homes: &mut Vec<String>) {
        if block.key(name).is_some() {
            homes.push(path.clone());
        }
        for b in block.blocks {
            walk(b, format!("{path}.{}", b.name), name, homes);
        }
    }
    let declaration = path.split('.').next().unwrap_or(path);
    let mut blocks = schema::all_decl_blocks();
    blocks.sort_by_key(|(kind, _)| kind.keyword() != declaration);
    let mut homes = Vec::new();
    for (kind, block) in blocks {
        walk(block, kind.keyword().to_string(), name, &mut homes);
    }
    homes.dedup();
    homes
}

impl Const {
    /// The constant as a checked value.
    pub fn to_value(&self) -> Value {
        match self {
            Const::Number(n) => Value::Number(*n),
            Const::Bool(b) => Value::Bool(*b),
            Const::Str(s) => Value::Str(s.clone()),
            Const::Range(low, high) => Value::Range {
                low: *low,
                high: *high,
            },
        }
    }
}

/// True for a declaration body `= intrinsic` (a built-in scorer).
pub(crate) fn is_intrinsic(body: &DeclBody) -> bool {
    matches!(body, DeclBody::Value(e) if matches!(&e.kind, ExprKind::Name { name } if name == "intrinsic"))
}

/// How `value` (a parameter's default) fails the declared type `ty`
/// (`number`, `string`, `bool`, `list`), described; `None` when it fits
/// or the type is not one of those.
pub(crate) fn param_type_mismatch(ty: &str, value: &Value) -> Option<&'static str> {
    let (expected, found) = (ExprTy::declared(ty)?, ExprTy::of_value(value)?);
    (!expected.accepts(found)).then_some(match found {
        ExprTy::Bool => "a boolean",
        other => other.describe(),
    })
}
