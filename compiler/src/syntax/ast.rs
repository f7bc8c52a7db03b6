//! The abstract syntax tree: what the user wrote, with a span on every node.
//!
//! The AST keeps the surface form the formatter needs (parentheses, number
//! text as written, triple-quoted strings, comments) and nothing resolved:
//! names are plain strings until `analyze` turns the tree into HIR.

use crate::span::Span;
use serde::Serialize;

/// One parsed file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Module {
    /// Declarations and imports, in source order.
    pub items: Vec<Item>,
    /// Every comment in the file (`#` and `##`), in source order.
    pub comments: Vec<Comment>,
    /// The whole file.
    pub span: Span,
}

/// A comment, kept for doc attachment and for the formatter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    /// The comment text including the leading `#` or `##`, without the line
    /// break and without trailing whitespace.
    pub text: String,
    /// True for `##` doc comments.
    pub doc: bool,
    /// Where it is.
    pub span: Span,
}

/// A top-level item: an import or a declaration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// `##` doc lines directly above the item, without the `##` marker.
    pub docs: Vec<String>,
    /// What the item is.
    pub kind: ItemKind,
    /// The whole item.
    pub span: Span,
}

/// The kinds of top-level items.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum ItemKind {
    /// `use "path.safer" [as name]`.
    Use(Use),
    /// `model name { ... }` and the other declarations.
    Decl(Decl),
}

/// `use "std/rubrics/safety.safer" as safety`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Use {
    /// The imported path, as written.
    pub path: StringLit,
    /// The module alias, when given.
    pub alias: Option<Ident>,
}

/// The declaration keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclKind {
    /// A policy, reference or judge network.
    Model,
    /// Something that scores completions (`rules`, `model`, `http`).
    Judge,
    /// A data source with filters, curation and splits.
    Dataset,
    /// Weighted criteria, penalties, format terms and a total.
    Rubric,
    /// A sampling policy (group size, temperature, lengths).
    Rollout,
    /// What to do with unsafe completions.
    Reflection,
    /// One training stage.
    Train,
    /// Benchmark-style scoring.
    Eval,
    /// A named prompt text.
    Prompt,
    /// A scorer signature (built-in scorers are declared `= intrinsic`).
    Scorer,
}

impl DeclKind {
    /// Every keyword, in the order the docs list them.
    pub const ALL: &'static [DeclKind] = &[
        DeclKind::Model,
        DeclKind::Judge,
        DeclKind::Dataset,
        DeclKind::Rubric,
        DeclKind::Rollout,
        DeclKind::Reflection,
        DeclKind::Train,
        DeclKind::Eval,
        DeclKind::Prompt,
        DeclKind::Scorer,
    ];

    /// The keyword as written.
    pub fn keyword(self) -> &'static str {
        match self {
            DeclKind::Model => "model",
            DeclKind::Judge => "judge",
            DeclKind::Dataset => "dataset",
            DeclKind::Rubric => "rubric",
            DeclKind::Rollout => "rollout",
            DeclKind::Reflection => "reflection",
            DeclKind::Train => "train",
            DeclKind::Eval => "eval",
            DeclKind::Prompt => "prompt",
            DeclKind::Scorer => "scorer",
        }
    }

    /// Parses a keyword.
    pub fn from_keyword(word: &str) -> Option<DeclKind> {
        DeclKind::ALL.iter().copied().find(|k| k.keyword() == word)
    }
}

/// A named declaration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decl {
    /// Which keyword introduced it.
    pub kind: DeclKind,
    /// The span of the keyword.
    pub kind_span: Span,
    /// The declared name.
    pub name: Ident,
    /// `(judge = rules)` parameters, when written.
    pub params: Option<Vec<Param>>,
    /// A block of settings, or `= value`.
    pub body: DeclBody,
}

/// The body of a declaration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclBody {
    /// `{ key = value ... }`.
    Block(Block),
    /// `= value` (prompts, intrinsic scorers).
    Value(Expr),
}

/// A declaration parameter: `judge = rules`, `pattern: string`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Param {
    /// Its name.
    pub name: Ident,
    /// Its declared type, when written.
    pub ty: Option<Ident>,
    /// Its default value, when written.
    pub default: Option<Expr>,
    /// The whole parameter.
    pub span: Span,
}

/// `{ statements }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    /// The statements, in source order.
    pub stmts: Vec<Stmt>,
    /// From `{` to `}`.
    pub span: Span,
}

/// One statement in a block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stmt {
    /// `##` doc lines directly above.
    pub docs: Vec<String>,
    /// What it says.
    pub kind: StmtKind,
    /// The whole statement.
    pub span: Span,
}

/// How the statement form that `keyword` starts is written (`penalty NAME
/// = VALUE when CONDITION`), for messages; `None` for another word.
pub fn statement_form(keyword: &str) -> Option<&'static str> {
    match keyword {
        "filter" => Some("filter CONDITION"),
        "criterion" => Some("criterion NAME weight W \"what it assesses\""),
        "penalty" => Some("penalty NAME = VALUE when CONDITION"),
        "format" => Some("format NAME weight W"),
        _ => None,
    }
}

/// The statement forms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "stmt", rename_all = "snake_case")]
pub enum StmtKind {
    /// `key = value`.
    Assign {
        /// The setting.
        key: Ident,
        /// Its value.
        value: Expr,
    },
    /// `key { ... }`: a nested block (`grpo`, `kl`, `split`, `curate`, ...).
    Block {
        /// The block's name.
        key: Ident,
        /// Its statements.
        body: Block,
    },
    /// `filter condition`.
    Filter {
        /// Rows for which this is false are dropped.
        cond: Expr,
    },
    /// `criterion name weight w "description" { ... }`.
    Criterion {
        /// The criterion's name.
        name: Ident,
        /// Its weight in `weighted`, when written.
        weight: Option<Expr>,
        /// What the judge is asked to assess.
        description: Option<StringLit>,
        /// Extra settings (scorer, scale, ...).
        body: Option<Block>,
    },
    /// `penalty name = value when condition`.
    Penalty {
        /// The penalty's name.
        name: Ident,
        /// The (usually negative) amount.
        value: Expr,
        /// When it applies; always, when omitted.
        when: Option<Expr>,
    },
    /// `format name weight w`.
    Format {
        /// The response format scored.
        name: Ident,
        /// Its weight, when written.
        weight: Option<Expr>,
    },
}

/// A name with its span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// A string literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StringLit {
    /// The value, escapes resolved.
    pub value: String,
    /// Written as `"""..."""` (kept verbatim, no escapes).
    pub triple: bool,
    /// Where it is, quotes included.
    pub span: Span,
}

/// A number as written and as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Number {
    /// The literal text (`1e-6`, `16`, `0.2`), kept for the formatter.
    pub text: String,
    /// Its value.
    pub value: f64,
}

/// Units of quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Prompts (a batch of distinct inputs).
    Prompts,
    /// Completions (prompts times the group size).
    Completions,
    /// Tokens.
    Tokens,
    /// Optimiser steps.
    Steps,
    /// Passes over a dataset.
    Epochs,
}

impl Unit {
    /// Every unit.
    pub const ALL: &'static [Unit] = &[
        Unit::Prompts,
        Unit::Completions,
        Unit::Tokens,
        Unit::Steps,
        Unit::Epochs,
    ];

    /// Reads a unit word, singular or plural.
    pub fn from_word(word: &str) -> Option<Unit> {
        let plural = word.strip_suffix('s').unwrap_or(word);
        Unit::ALL.iter().copied().find(|u| u.singular() == plural)
    }

    /// `prompt`, `token`, ...
    pub fn singular(self) -> &'static str {
        match self {
            Unit::Prompts => "prompt",
            Unit::Completions => "completion",
            Unit::Tokens => "token",
            Unit::Steps => "step",
            Unit::Epochs => "epoch",
        }
    }

    /// The word for `n` of it: `1 prompt`, `2 prompts`.
    pub fn counting(self, n: f64) -> &'static str {
        if n == 1.0 {
            self.singular()
        } else {
            self.plural()
        }
    }

    /// `prompts`, `tokens`, ...
    pub fn plural(self) -> &'static str {
        match self {
            Unit::Prompts => "prompts",
            Unit::Completions => "completions",
            Unit::Tokens => "tokens",
            Unit::Steps => "steps",
            Unit::Epochs => "epochs",
        }
    }
}

/// An expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// The expression forms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "expr", rename_all = "snake_case")]
pub enum ExprKind {
    /// `0.2`, `1e-6`.
    Number(Number),
    /// `16 prompts`.
    Quantity {
        /// The amount.
        value: Number,
        /// The unit.
        unit: Unit,
    },
    /// `"text"` or `"""text"""`.
    String(StringLit),
    /// `true`, `false`.
    Bool {
        /// The value.
        value: bool,
    },
    /// A bare name: `policy`, `k3`, `tiny_vlm`.
    Name {
        /// The name.
        name: String,
    },
    /// `[a, b]`.
    List {
        /// The elements.
        items: Vec<Expr>,
    },
    /// `(e)`, kept so that the formatter prints what the user wrote.
    Paren {
        /// The inner expression.
        inner: Box<Expr>,
    },
    /// `base.name`.
    Field {
        /// The expression before the dot.
        base: Box<Expr>,
        /// The field.
        name: Ident,
    },
    /// `base[index]`.
    Index {
        /// The indexed expression.
        base: Box<Expr>,
        /// The index.
        index: Box<Expr>,
    },
    /// `callee(args)`.
    Call {
        /// The function.
        callee: Box<Expr>,
        /// Positional and named arguments.
        args: Vec<Arg>,
    },
    /// `-x`, `not x`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        operand: Box<Expr>,
    },
    /// `a + b`, `a in b`, `a .. b`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `if c { a } else { b }`.
    If {
        /// The condition.
        cond: Box<Expr>,
        /// The value when true.
        then: Box<Expr>,
        /// The value when false.
        otherwise: Box<Expr>,
    },
}

/// A call argument, positional or `name = value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arg {
    /// The parameter name for named arguments.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
    /// The whole argument.
    pub span: Span,
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `not x`.
    Not,
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// `or`.
    Or,
    /// `and`.
    And,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `in`.
    In,
    /// `not in`.
    NotIn,
    /// `..` (an inclusive range).
    Range,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::In => "in",
            BinaryOp::NotIn => "not in",
            BinaryOp::Range => "..",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }

    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            // 3 is prefix `not`.
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::In
            | BinaryOp::NotIn => 4,
            BinaryOp::Range => 5,
            BinaryOp::Add | BinaryOp::Sub => 6,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => 7,
        }
    }

    /// Comparisons and ranges cannot be chained (`a < b < c` is an error).
    pub fn is_chainable(self) -> bool {
        self.precedence() != 4 && self != BinaryOp::Range
    }
}

impl UnaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Not => "not",
        }
    }

    /// Binding strength, on the same scale as [`BinaryOp::precedence`].
    pub fn precedence(self) -> u8 {
        match self {
            UnaryOp::Not => 3,
            UnaryOp::Neg => 8,
        }
    }
}

impl Module {
    /// The declarations of the module (imports skipped).
    pub fn decls(&self) -> impl Iterator<Item = &Decl> {
        self.items.iter().filter_map(|i| match &i.kind {
            ItemKind::Decl(d) => Some(d),
            ItemKind::Use(_) => None,
        })
    }
}

impl Decl {
    /// Every expression of the declaration, outermost first: its
    /// parameters' defaults, then its value or its block's.
    pub fn visit_exprs<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        for param in self.params.iter().flatten() {
            if let Some(default) = &param.default {
                default.visit(f);
            }
        }
        match &self.body {
            DeclBody::Block(block) => block.visit_exprs(f),
            DeclBody::Value(value) => value.visit(f),
        }
    }
}

impl Block {
    /// Every expression of the block's statements, nested blocks included.
    pub fn visit_exprs<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        for stmt in &self.stmts {
            match &stmt.kind {
                StmtKind::Assign { value, .. } => value.visit(f),
                StmtKind::Block { body, .. } => body.visit_exprs(f),
                StmtKind::Filter { cond } => cond.visit(f),
                StmtKind::Criterion { weight, body, .. } => {
                    if let Some(w) = weight {
                        w.visit(f);
                    }
                    if let Some(b) = body {
                        b.visit_exprs(f);
                    }
                }
                StmtKind::Penalty { value, when, .. } => {
                    value.visit(f);
                    if let Some(w) = when {
                        w.visit(f);
                    }
                }
                StmtKind::Format { weight, .. } => {
                    if let Some(w) = weight {
                        w.visit(f);
                    }
                }
            }
        }
    }
}

impl Expr {
    /// This expression and every one inside it, outermost first.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Number(_)
            | ExprKind::Quantity { .. }
            | ExprKind::String(_)
            | ExprKind::Bool { .. }
            | ExprKind::Name { .. } => {}
            ExprKind::List { items } => items.iter().for_each(|i| i.visit(f)),
            ExprKind::Paren { inner } => inner.visit(f),
            ExprKind::Field { base, .. } => base.visit(f),
            ExprKind::Index { base, index } => {
                base.visit(f);
                index.visit(f);
            }
            ExprKind::Call { callee, args } => {
                callee.visit(f);
                args.iter().for_each(|a| a.value.visit(f));
            }
            ExprKind::Unary { operand, .. } => operand.visit(f),
            ExprKind::Binary { lhs, rhs, .. } => {
                lhs.visit(f);
                rhs.visit(f);
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                cond.visit(f);
                then.visit(f);
                otherwise.visit(f);
            }
        }
    }
}
