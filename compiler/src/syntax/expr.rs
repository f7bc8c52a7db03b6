//! Expressions: operator precedence over the flat sequence the grammar
//! produces, without recursion.
//!
//! The grammar reads `prefix* operand (infix prefix* operand)*`; this module
//! applies precedence with an operator stack (Dijkstra's shunting-yard), so
//! a chain of a million `+` costs a loop, not a million stack frames. Every
//! node's depth is tracked and limited to [`MAX_EXPR_DEPTH`], so that the
//! later recursive passes (formatting, analysis, drop) are bounded too.

use super::ast::*;
use super::build::{BuildResult, Builder};
use super::grammar::Rule;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use pest::iterators::Pair;

/// The deepest expression tree the compiler builds.
pub const MAX_EXPR_DEPTH: u32 = 256;

enum Pending {
    Prefix(UnaryOp, Span),
    Infix(BinaryOp, Span),
}

/// Builds expressions for one [`Builder`].
pub struct ExprBuilder<'b, 't> {
    b: &'b Builder<'t>,
}

type Built = (Expr, u32);

impl<'b, 't> ExprBuilder<'b, 't> {
    /// A builder over the file being built.
    pub fn new(b: &'b Builder<'t>) -> Self {
        ExprBuilder { b }
    }

    fn node(&self, kind: ExprKind, span: Span, depth: u32) -> BuildResult<Built> {
        if depth > MAX_EXPR_DEPTH {
            return Err(self.b.too_deep(span));
        }
        Ok((Expr { kind, span }, depth))
    }

    /// Builds an `expr` pair.
    ///
    /// # Errors
    /// E0110 for chained comparisons, E0105 for trees deeper than
    /// [`MAX_EXPR_DEPTH`], E0108 for numbers out of range.
    pub fn build(&self, pair: Pair<'_, Rule>) -> BuildResult<Built> {
        let mut operands: Vec<Built> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        for p in pair.into_inner() {
            let span = self.b.span(&p);
            let rule = p.as_rule();
            if rule == Rule::operand {
                operands.push(self.operand(p)?);
                continue;
            }
            if rule == Rule::op_not {
                pending.push(Pending::Prefix(UnaryOp::Not, span));
                continue;
            }
            if rule == Rule::op_neg {
                pending.push(Pending::Prefix(UnaryOp::Neg, span));
                continue;
            }
            let Some(op) = binary_op(rule) else { continue };
            loop {
                match pending.last() {
                    Some(Pending::Prefix(u, _)) if u.precedence() >= op.precedence() => {
                        self.reduce(&mut operands, &mut pending)?;
                    }
                    Some(Pending::Infix(top, top_span))
                        if top.precedence() == op.precedence() && !op.is_chainable() =>
                    {
                        return Err(chained(*top, *top_span, op, span));
                    }
                    Some(Pending::Infix(top, _)) if top.precedence() >= op.precedence() => {
                        self.reduce(&mut operands, &mut pending)?;
                    }
                    _ => break,
                }
            }
            pending.push(Pending::Infix(op, span));
        }
        while !pending.is_empty() {
            self.reduce(&mut operands, &mut pending)?;
        }
        match (operands.pop(), operands.is_empty()) {
            (Some(built), true) => Ok(built),
            _ => Err(self.b.missing("expression operands")),
        }
    }

    fn reduce(&self, operands: &mut Vec<Built>, pending: &mut Vec<Pending>) -> BuildResult<()> {
        let op = pending.pop().ok_or_else(|| self.b.missing("operator"))?;
        let built = match op {
            Pending::Prefix(op, span) => {
                let (operand, d) = operands.pop().ok_or_else(|| self.b.missing("operand"))?;
                let whole = span.to(operand.span);
                self.node(
                    ExprKind::Unary {
                        op,
                        operand: Box::new(operand),
                    },
                    whole,
                    d + 1,
                )?
            }
            Pending::Infix(op, _) => {
                let (rhs, dr) = operands
                    .pop()
                    .ok_or_else(|| self.b.missing("right operand"))?;
                let (lhs, dl) = operands
                    .pop()
                    .ok_or_else(|| self.b.missing("left operand"))?;
                let whole = lhs.span.to(rhs.span);
                self.node(
                    ExprKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                    whole,
                    dl.max(dr) + 1,
                )?
            }
        };
        operands.push(built);
        Ok(())
    }

    fn operand(&self, pair: Pair<'_, Rule>) -> BuildResult<Built> {
        let mut inner = pair.into_inner();
        let primary = inner.next().ok_or_else(|| self.b.missing("primary"))?;
        let (mut expr, mut depth) = self.primary(primary)?;
        for post in inner {
            let span = expr.span.to(self.b.span(&post));
            let (kind, d) = match post.as_rule() {
                Rule::field => {
                    let name = post
                        .into_inner()
                        .find(|p| p.as_rule() == Rule::word)
                        .ok_or_else(|| self.b.missing("field name"))?;
                    (
                        ExprKind::Field {
                            base: Box::new(expr),
                            name: self.b.ident_of(name),
                        },
                        depth + 1,
                    )
                }
                Rule::index => {
                    let index = post
                        .into_inner()
                        .find(|p| p.as_rule() == Rule::expr)
                        .ok_or_else(|| self.b.missing("index"))?;
                    let (index, di) = self.build(index)?;
                    (
                        ExprKind::Index {
                            base: Box::new(expr),
                            index: Box::new(index),
                        },
                        depth.max(di) + 1,
                    )
                }
                Rule::call_args => {
                    let mut args = Vec::new();
                    let mut dmax = depth;
                    for arg in post.into_inner().filter(|p| p.as_rule() == Rule::arg) {
                        let arg_span = self.b.span(&arg);
                        let mut name = None;
                        let mut value = None;
                        for part in arg.into_inner() {
                            match part.as_rule() {
                                Rule::word => name = Some(self.b.ident_of(part)),
                                Rule::expr => value = Some(self.build(part)?),
                                _ => {}
                            }
                        }
                        let (value, dv) = value.ok_or_else(|| self.b.missing("argument"))?;
                        dmax = dmax.max(dv);
                        args.push(Arg {
                            name,
                            value,
                            span: arg_span,
                        });
                    }
                    (
                        ExprKind::Call {
                            callee: Box::new(expr),
                            args,
                        },
                        dmax + 1,
                    )
                }
                _ => continue,
            };
            let built = self.node(kind, span, d)?;
            expr = built.0;
            depth = built.1;
        }
        Ok((expr, depth))
    }

    fn primary(&self, pair: Pair<'_, Rule>) -> BuildResult<Built> {
        let span = self.b.span(&pair);
        match pair.as_rule() {
            Rule::numeric => {
                let mut value = None;
                let mut unit = None;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::number => value = Some(self.number(&p)?),
                        Rule::unit => unit = Unit::from_word(p.as_str()),
                        _ => {}
                    }
                }
                let value = value.ok_or_else(|| self.b.missing("number"))?;
                match unit {
                    Some(unit) => self.node(ExprKind::Quantity { value, unit }, span, 1),
                    None => self.node(ExprKind::Number(value), span, 1),
                }
            }
            Rule::string => {
                let s = self.b.string(pair)?;
                self.node(ExprKind::String(s), span, 1)
            }
            Rule::boolean => self.node(
                ExprKind::Bool {
                    value: pair.as_str() == "true",
                },
                span,
                1,
            ),
            Rule::ident => self.node(
                ExprKind::Name {
                    name: pair.as_str().to_string(),
                },
                span,
                1,
            ),
            Rule::list => {
                let mut items = Vec::new();
                let mut depth = 0;
                for p in pair.into_inner().filter(|p| p.as_rule() == Rule::expr) {
                    let (e, d) = self.build(p)?;
                    depth = depth.max(d);
                    items.push(e);
                }
                self.node(ExprKind::List { items }, span, depth + 1)
            }
            Rule::paren => {
                let inner = pair
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::expr)
                    .ok_or_else(|| self.b.missing("parenthesised expression"))?;
                let (e, d) = self.build(inner)?;
                self.node(ExprKind::Paren { inner: Box::new(e) }, span, d + 1)
            }
            Rule::if_expr => self.if_chain(pair),
            _ => Err(self.b.missing("primary kind")),
        }
    }

    /// `if c1 { a } else if c2 { b } else { c }`, built from the last branch
    /// outwards in a loop.
    fn if_chain(&self, pair: Pair<'_, Rule>) -> BuildResult<Built> {
        let end = self.b.span(&pair).end as usize;
        let mut if_starts = Vec::new();
        let mut conds = Vec::new();
        let mut bodies = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::kw_if => if_starts.push(self.b.span(&p).start as usize),
                Rule::expr => conds.push(self.build(p)?),
                Rule::then_body => {
                    let e = p
                        .into_inner()
                        .find(|q| q.as_rule() == Rule::expr)
                        .ok_or_else(|| self.b.missing("if body"))?;
                    bodies.push(self.build(e)?);
                }
                _ => {}
            }
        }
        let mut acc = bodies.pop().ok_or_else(|| self.b.missing("else body"))?;
        while let Some((then, dt)) = bodies.pop() {
            let (cond, dc) = conds.pop().ok_or_else(|| self.b.missing("if condition"))?;
            let start = if_starts
                .pop()
                .ok_or_else(|| self.b.missing("if keyword"))?;
            let span = Span::new(self.b.source, start, end);
            let depth = dc.max(dt).max(acc.1) + 1;
            acc = self.node(
                ExprKind::If {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    otherwise: Box::new(acc.0),
                },
                span,
                depth,
            )?;
        }
        Ok(acc)
    }

    fn number(&self, pair: &Pair<'_, Rule>) -> BuildResult<Number> {
        let text = pair.as_str();
        let clean: String = text.chars().filter(|&c| c != '_').collect();
        // A literal with a nonzero digit before its exponent that parses to
        // 0 is too small to represent (`1e-400`), not zero.
        let mantissa = clean.split(['e', 'E']).next().unwrap_or("");
        let nonzero = mantissa.chars().any(|c| c.is_ascii_digit() && c != '0');
        match clean.parse::<f64>() {
            Ok(value) if value == 0.0 && nonzero => Err(Box::new(
                Diagnostic::error(Code::E0108, format!("number `{text}` is out of range"))
                    .with_primary(self.b.span(pair), "too small to represent: it would be 0")
                    .with_help("numbers are 64-bit floating point; the smallest above 0 is about 5e-324 (write 0 for zero)"),
            )),
            Ok(value) if value.is_finite() => Ok(Number {
                text: text.to_string(),
                value,
            }),
            _ => Err(Box::new(
                Diagnostic::error(Code::E0108, format!("number `{text}` is out of range"))
                    .with_primary(self.b.span(pair), "too large to represent")
                    .with_help("numbers are 64-bit floating point, at most about 1.8e308"),
            )),
        }
    }
}

fn binary_op(rule: Rule) -> Option<BinaryOp> {
    Some(match rule {
        Rule::op_or => BinaryOp::Or,
        Rule::op_and => BinaryOp::And,
        Rule::op_eq => BinaryOp::Eq,
        Rule::op_ne => BinaryOp::Ne,
        Rule::op_lt => BinaryOp::Lt,
        Rule::op_le => BinaryOp::Le,
        Rule::op_gt => BinaryOp::Gt,
        Rule::op_ge => BinaryOp::Ge,
        Rule::op_in => BinaryOp::In,
        Rule::op_not_in => BinaryOp::NotIn,
        Rule::op_range => BinaryOp::Range,
        Rule::op_add => BinaryOp::Add,
        Rule::op_sub => BinaryOp::Sub,
        Rule::op_mul => BinaryOp::Mul,
        Rule::op_div => BinaryOp::Div,
        Rule::op_rem => BinaryOp::Rem,
        _ => return None,
    })
}

fn chained(
    first: BinaryOp,
    first_span: Span,
    second: BinaryOp,
    second_span: Span,
) -> Box<Diagnostic> {
    let (what, help) = if first == BinaryOp::Range || second == BinaryOp::Range {
        (
            "ranges cannot be chained".to_string(),
            "a range has two ends: `low .. high`".to_string(),
        )
    } else {
        (
            format!(
                "comparison operators cannot be chained: `{}` after `{}`",
                second.symbol(),
                first.symbol()
            ),
            "compare twice and join with `and`: `a < b and b < c`, or use a range: `b in a .. c`"
                .to_string(),
        )
    };
    Box::new(
        Diagnostic::error(Code::E0110, what)
            .with_primary(second_span, "second operator")
            .with_secondary(first_span, "first operator")
            .with_help(help),
    )
}
