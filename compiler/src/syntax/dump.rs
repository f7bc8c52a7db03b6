//! A readable, indented dump of the AST with the span of every node, used by
//! `saferc debug ast` and the parser snapshots.

use super::ast::*;
use crate::span::Span;
use std::fmt::Write;

/// Dumps a module, one node per line.
pub fn module(m: &Module) -> String {
    let mut d = Dumper::default();
    d.line(0, "Module", m.span, "");
    for item in &m.items {
        d.item(1, item);
    }
    d.out
}

#[derive(Default)]
struct Dumper {
    out: String,
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

impl Dumper {
    fn line(&mut self, depth: usize, head: &str, span: Span, rest: &str) {
        let _ = write!(
            self.out,
            "{:indent$}{head} {}..{}",
            "",
            span.start,
            span.end,
            indent = depth * 2
        );
        if !rest.is_empty() {
            self.out.push(' ');
            self.out.push_str(rest);
        }
        self.out.push('\n');
    }

    fn docs(&mut self, depth: usize, docs: &[String]) {
        for doc in docs {
            let _ = writeln!(self.out, "{:indent$}## {}", "", q(doc), indent = depth * 2);
        }
    }

    fn item(&mut self, depth: usize, item: &Item) {
        match &item.kind {
            ItemKind::Use(u) => {
                let alias = u
                    .alias
                    .as_ref()
                    .map(|a| format!(" as {}", a.name))
                    .unwrap_or_default();
                self.line(
                    depth,
                    "Use",
                    item.span,
                    &format!("{}{alias}", q(&u.path.value)),
                );
                self.docs(depth + 1, &item.docs);
            }
            ItemKind::Decl(decl) => {
                self.line(
                    depth,
                    "Decl",
                    item.span,
                    &format!("{} {}", decl.kind.keyword(), decl.name.name),
                );
                self.docs(depth + 1, &item.docs);
                for p in decl.params.iter().flatten() {
                    let ty =
                        p.ty.as_ref()
                            .map(|t| format!(": {}", t.name))
                            .unwrap_or_default();
                    self.line(depth + 1, "Param", p.span, &format!("{}{ty}", p.name.name));
                    if let Some(default) = &p.default {
                        self.expr(depth + 2, default);
                    }
                }
                match &decl.body {
                    DeclBody::Block(b) => self.block(depth + 1, b),
                    DeclBody::Value(e) => self.expr(depth + 1, e),
                }
            }
        }
    }

    fn block(&mut self, depth: usize, block: &Block) {
        self.line(depth, "Block", block.span, "");
        for stmt in &block.stmts {
            self.stmt(depth + 1, stmt);
        }
    }

    fn stmt(&mut self, depth: usize, stmt: &Stmt) {
        match &stmt.kind {
            StmtKind::Assign { key, value } => {
                self.line(depth, "Assign", stmt.span, &key.name);
                self.docs(depth + 1, &stmt.docs);
                self.expr(depth + 1, value);
            }
            StmtKind::Block { key, body } => {
                self.line(depth, "Nested", stmt.span, &key.name);
                self.docs(depth + 1, &stmt.docs);
                self.block(depth + 1, body);
            }
            StmtKind::Filter { cond } => {
                self.line(depth, "Filter", stmt.span, "");
                self.docs(depth + 1, &stmt.docs);
                self.expr(depth + 1, cond);
            }
            StmtKind::Criterion {
                name,
                weight,
                description,
                body,
            } => {
                let desc = description
                    .as_ref()
                    .map(|d| q(&d.value))
                    .unwrap_or_default();
                self.line(
                    depth,
                    "Criterion",
                    stmt.span,
                    format!("{} {desc}", name.name).trim_end(),
                );
                self.docs(depth + 1, &stmt.docs);
                if let Some(w) = weight {
                    self.line(depth + 1, "Weight", w.span, "");
                    self.expr(depth + 2, w);
                }
                if let Some(b) = body {
                    self.block(depth + 1, b);
                }
            }
            StmtKind::Penalty { name, value, when } => {
                self.line(depth, "Penalty", stmt.span, &name.name);
                self.docs(depth + 1, &stmt.docs);
                self.expr(depth + 1, value);
                if let Some(w) = when {
                    self.line(depth + 1, "When", w.span, "");
                    self.expr(depth + 2, w);
                }
            }
            StmtKind::Format { name, weight } => {
                self.line(depth, "Format", stmt.span, &name.name);
                self.docs(depth + 1, &stmt.docs);
                if let Some(w) = weight {
                    self.line(depth + 1, "Weight", w.span, "");
                    self.expr(depth + 2, w);
                }
            }
        }
    }

    fn expr(&mut self, depth: usize, e: &Expr) {
        match &e.kind {
            ExprKind::Number(n) => self.line(depth, "Number", e.span, &n.text),
            ExprKind::Quantity { value, unit } => {
                self.line(
                    depth,
                    "Quantity",
                    e.span,
                    &format!("{} {}", value.text, unit.plural()),
                );
            }
            ExprKind::String(s) => {
                let head = if s.triple { "Text" } else { "String" };
                self.line(depth, head, e.span, &q(&s.value));
            }
            ExprKind::Bool { value } => self.line(depth, "Bool", e.span, &value.to_string()),
            ExprKind::Name { name } => self.line(depth, "Name", e.span, name),
            ExprKind::List { items } => {
                self.line(depth, "List", e.span, "");
                for item in items {
                    self.expr(depth + 1, item);
                }
            }
            ExprKind::Paren { inner } => {
                self.line(depth, "Paren", e.span, "");
                self.expr(depth + 1, inner);
            }
            ExprKind::Field { base, name } => {
                self.line(depth, "Field", e.span, &name.name);
                self.expr(depth + 1, base);
            }
            ExprKind::Index { base, index } => {
                self.line(depth, "Index", e.span, "");
                self.expr(depth + 1, base);
                self.expr(depth + 1, index);
            }
            ExprKind::Call { callee, args } => {
                self.line(depth, "Call", e.span, "");
                self.expr(depth + 1, callee);
                for arg in args {
                    let name = arg.name.as_ref().map(|n| n.name.as_str()).unwrap_or("");
                    self.line(depth + 1, "Arg", arg.span, name);
                    self.expr(depth + 2, &arg.value);
                }
            }
            ExprKind::Unary { op, operand } => {
                self.line(depth, "Unary", e.span, op.symbol());
                self.expr(depth + 1, operand);
            }
            ExprKind::Binary { op, lhs, rhs } => {
                self.line(depth, "Binary", e.span, op.symbol());
                self.expr(depth + 1, lhs);
                self.expr(depth + 1, rhs);
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.line(depth, "If", e.span, "");
                self.expr(depth + 1, cond);
                self.expr(depth + 1, then);
                self.expr(depth + 1, otherwise);
            }
        }
    }
}
