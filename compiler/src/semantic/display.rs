//! Printing HIR values and typed expressions in the surface syntax, for
//! graph parameters and messages (`256 tokens`, `mean in 0.2..0.8`).

use super::hir::{Const, Program, Setting, Settings, TExpr, TKind, Value};
use super::schema::format_number as num;
use crate::syntax::lexer::escape;

/// A value as it would be written.
pub fn value(v: &Value, program: &Program) -> String {
    match v {
        Value::Number(n) => num(*n),
        Value::Quantity { value, unit } => {
            format!(
                "{} {}",
                num(*value),
                if *value == 1.0 {
                    unit.singular()
                } else {
                    unit.plural()
                }
            )
        }
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => format!("\"{}\"", escape(s)),
        Value::Enum(s) => s.clone(),
        Value::Path { written, .. } => format!("\"{}\"", escape(written)),
        Value::Range { low, high } => format!("{}..{}", num(*low), num(*high)),
        Value::Ref(r) => program.decl(*r).qualified.clone(),
        Value::Split { dataset, split } => match split {
            Some(s) => format!("{}.{s}", program.decl(*dataset).qualified),
            None => program.decl(*dataset).qualified.clone(),
        },
        Value::Criterion { rubric, criterion } => match criterion {
            Some(c) => format!("{}.{c}", program.decl(*rubric).qualified),
            None => program.decl(*rubric).qualified.clone(),
        },
        Value::Source { format, path } => format!("{format}({})", value(path, program)),
        Value::List(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| value(i, program))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Expr(e) => expr(e, program),
        Value::Intrinsic => "intrinsic".into(),
    }
}

/// A block of settings on one line: `{ a = 1, b = 2 }`.
pub fn settings(s: &Settings, program: &Program) -> String {
    let parts: Vec<String> =
        s.0.iter()
            .map(|(k, v)| match v {
                Setting::Value(v) => format!("{k} = {}", value(v, program)),
                Setting::Block(b) => format!("{k} {}", settings(b, program)),
            })
            .collect();
    format!("{{ {} }}", parts.join(", "))
}

/// How the prelude's (`stdlib/std.safer`) functions are qualified.
const PRELUDE_QUALIFIER: &str = "std/std::";

/// A typed expression, fully parenthesised where precedence matters.
pub fn expr(e: &TExpr, program: &Program) -> String {
    match &e.kind {
        TKind::Const { value } => match value {
            Const::Number(n) => num(*n),
            Const::Bool(b) => b.to_string(),
            Const::Str(s) => format!("\"{}\"", escape(s)),
            Const::Range(a, b) => format!("{}..{}", num(*a), num(*b)),
        },
        TKind::Var { name } => name.clone(),
        TKind::Criterion { rubric, criterion } => match criterion {
            Some(c) => format!("{}.{c}", program.decl(*rubric).qualified),
            None => program.decl(*rubric).qualified.clone(),
        },
        TKind::Field { base, field } => format!("{}.{field}", expr(base, program)),
        TKind::Call { func, args, named } => {
            let mut parts: Vec<String> = args.iter().map(|a| expr(a, program)).collect();
            parts.extend(
                named
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", expr(v, program))),
            );
            // The prelude's scorers as they are written (`refusal()`, not
            // `std/std::refusal()`), unless a declaration of the program
            // shadows the name; other modules' keep their qualifier.
            let func = match func.strip_prefix(PRELUDE_QUALIFIER) {
                Some(bare)
                    if !program
                        .decls
                        .iter()
                        .any(|d| d.name == bare && !d.qualified.starts_with(PRELUDE_QUALIFIER)) =>
                {
                    bare
                }
                _ => func,
            };
            format!("{func}({})", parts.join(", "))
        }
        TKind::Unary { op, operand } => {
            let sep = if op.symbol() == "not" { " " } else { "" };
            format!("{}{sep}{}", op.symbol(), sub(operand, program))
        }
        TKind::Binary { op, lhs, rhs } => {
            format!(
                "{} {} {}",
                sub(lhs, program),
                op.symbol(),
                sub(rhs, program)
            )
        }
        TKind::If {
            cond,
            then,
            otherwise,
        } => format!(
            "if {} {{ {} }} else {{ {} }}",
            expr(cond, program),
            expr(then, program),
            expr(otherwise, program)
        ),
        TKind::List { items } => format!(
            "[{}]",
            items
                .iter()
                .map(|i| expr(i, program))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn sub(e: &TExpr, program: &Program) -> String {
    match &e.kind {
        TKind::Binary { .. } | TKind::If { .. } => format!("({})", expr(e, program)),
        _ => expr(e, program),
    }
}

/// A readable dump of the entry module's resolved declarations (the HIR
/// snapshots and `saferc hir --text`): one line per setting, defaults
/// included, references by qualified name.
pub fn program(p: &Program) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for m in &p.modules {
        let _ = writeln!(s, "module {} {}", m.name, m.hash);
    }
    for (_, d) in p.entry_decls() {
        let _ = writeln!(s, "\n{} {}", d.kind.keyword(), d.qualified);
        for param in &d.params {
            let default = param
                .default
                .as_ref()
                .map(|v| format!(" = {}", value(v, p)))
                .unwrap_or_default();
            let _ = writeln!(s, "  param {}{default}", param.name);
        }
        flatten(&d.settings, "", p, &mut s);
        for f in &d.filters {
            let _ = writeln!(s, "  filter {}", expr(f, p));
        }
        if let Some(r) = &d.rubric {
            for c in &r.criteria {
                let scorer = c
                    .scorer
                    .as_ref()
                    .map(|e| format!(" scored by {}", expr(e, p)))
                    .unwrap_or_default();
                let _ = writeln!(s, "  criterion {} weight {}{scorer}", c.name, num(c.weight));
            }
            for pen in &r.penalties {
                let when = pen
                    .when
                    .as_ref()
                    .map(|w| format!(" when {}", expr(w, p)))
                    .unwrap_or_default();
                let _ = writeln!(s, "  penalty {} = {}{when}", pen.name, expr(&pen.value, p));
            }
            for f in &r.formats {
                let _ = writeln!(s, "  format {} weight {}", f.format, num(f.weight));
            }
            let _ = writeln!(s, "  total = {}", expr(&r.total, p));
            let _ = writeln!(s, "  hash = {}", d.hash);
        }
        if let Some(v) = &d.value {
            let text = value(v, p);
            let shown: String = text.chars().take(60).collect();
            let more = if text.chars().count() > 60 { "..." } else { "" };
            let _ = writeln!(s, "  = {}{more}", shown.replace('\n', "\\n"));
        }
    }
    s
}

fn flatten(settings: &Settings, prefix: &str, p: &Program, out: &mut String) {
    use std::fmt::Write;
    for (k, v) in &settings.0 {
        match v {
            Setting::Value(v) => {
                let _ = writeln!(out, "  {prefix}{k} = {}", value(v, p));
            }
            Setting::Block(b) => flatten(b, &format!("{prefix}{k}."), p, out),
        }
    }
}
