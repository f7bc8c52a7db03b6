//! The HIR: a resolved, typed program.
//!
//! Declarations from every loaded module live in one list; references are
//! indices into it ([`DeclRef`]). Settings are stored generically (key →
//! [`Value`]) after the schema table has checked them and filled in
//! defaults, so that the graph, the emitters and the runtime read one shape.
//! Spans are kept for diagnostics but never serialised, so the content hash
//! of a program ignores layout and comments.

use crate::span::Span;
use crate::syntax::ast::{BinaryOp, DeclKind, UnaryOp, Unit};
use serde::Serialize;
use std::collections::BTreeMap;

/// Index of a declaration in [`Program::decls`]. Serialised as
/// `{"decl": index}` so that hashing can replace it by the declaration's
/// qualified name (indices depend on load order, names do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeclRef(pub usize);

impl Serialize for DeclRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("decl", &self.0)?;
        map.end()
    }
}

/// A whole resolved program: the entry module and everything it imports.
#[derive(Debug, Clone, Serialize)]
pub struct Program {
    /// Content hash of the whole program (see `semantic::hash`).
    pub hash: String,
    /// Loaded modules, the entry first.
    pub modules: Vec<ModuleInfo>,
    /// Every declaration of every module.
    pub decls: Vec<Decl>,
}

/// One loaded module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleInfo {
    /// Its display name (`std/rubrics/safety.safer`, `examples/quickstart.safer`).
    pub name: String,
    /// Content hash of the module's resolved declarations.
    pub hash: String,
}

/// A resolved declaration.
#[derive(Debug, Clone, Serialize)]
pub struct Decl {
    /// Its keyword.
    pub kind: DeclKind,
    /// Its name as declared.
    pub name: String,
    /// A program-wide unique name: the plain name for the entry module,
    /// `module::name` for imported ones.
    pub qualified: String,
    /// Index of its module in [`Program::modules`].
    pub module: usize,
    /// Checked settings with defaults filled in (block bodies).
    pub settings: Settings,
    /// Filters of a dataset, in order.
    pub filters: Vec<TExpr>,
    /// Criteria, penalties, format terms and total of a rubric.
    pub rubric: Option<Rubric>,
    /// The value of `prompt name = ...` and `scorer f(...) = ...`.
    pub value: Option<Value>,
    /// Declared parameters (rubrics, scorers).
    pub params: Vec<Param>,
    /// Content hash (rubrics: what a pin in `safer.toml` compares).
    pub hash: String,
    /// The doc comment.
    pub docs: Vec<String>,
    /// Where the name is.
    #[serde(skip)]
    pub span: Span,
}

/// A declared parameter.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its type name, when declared.
    pub ty: Option<String>,
    /// Its default, when declared.
    pub default: Option<Value>,
}

impl Param {
    /// The type its values must have: the declared one, else its
    /// default's; `None` when neither says.
    pub fn expected_type(&self) -> Option<ExprTy> {
        match &self.ty {
            Some(t) => ExprTy::declared(t),
            None => self.default.as_ref().and_then(ExprTy::of_value),
        }
    }
}

/// Settings of a block: values and nested blocks, sorted by key.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings(pub BTreeMap<String, Setting>);

/// One entry of [`Settings`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Setting {
    /// `key = value` (or a default).
    Value(Value),
    /// `key { ... }`.
    Block(Settings),
}

impl Settings {
    /// A dataset's `dedup`: the other datasets' splits it names, in order
    /// (`own`'s own splits left out: E0317 says so).
    pub fn dedup_against(&self, own: DeclRef) -> Vec<(DeclRef, Option<String>)> {
        match self.get("dedup") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Split { dataset, split } if *dataset != own => {
                        Some((*dataset, split.clone()))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self.0.get(key) {
            Some(Setting::Value(v)) => Some(v),
            _ => None,
        }
    }

    /// A nested block by name.
    pub fn block(&self, key: &str) -> Option<&Settings> {
        match self.0.get(key) {
            Some(Setting::Block(b)) => Some(b),
            _ => None,
        }
    }

    /// A number (or the amount of a quantity) by key.
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Number(n) => Some(*n),
            Value::Quantity { value, .. } => Some(*value),
            _ => None,
        }
    }

    /// An enum or string value by key.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Enum(s) | Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The strings of a string list by key (a rollout's `stop`); empty
    /// when unset.
    pub fn strings(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A boolean by key.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A declaration reference by key.
    pub fn reference(&self, key: &str) -> Option<DeclRef> {
        match self.get(key)? {
            Value::Ref(r) => Some(*r),
            _ => None,
        }
    }
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// A number.
    Number(f64),
    /// A number with a unit.
    Quantity {
        /// The amount.
        value: f64,
        /// The unit.
        unit: Unit,
    },
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A name from a fixed set.
    Enum(String),
    /// A path as written and as resolved from the declaring file.
    Path {
        /// As written.
        written: String,
        /// Resolved (absolute for files; `std/...` for the standard library).
        resolved: String,
    },
    /// `low..high`.
    Range {
        /// Low end.
        low: f64,
        /// High end.
        high: f64,
    },
    /// A declaration.
    Ref(DeclRef),
    /// A dataset split (`None`: the whole dataset).
    Split {
        /// The dataset.
        dataset: DeclRef,
        /// The split.
        split: Option<String>,
    },
    /// A rubric criterion (`None`: the shaped total).
    Criterion {
        /// The rubric.
        rubric: DeclRef,
        /// The criterion.
        criterion: Option<String>,
    },
    /// A data source.
    Source {
        /// `jsonl`.
        format: String,
        /// The file.
        path: Box<Value>,
    },
    /// A list.
    List(Vec<Value>),
    /// An expression evaluated at run time (conditions, totals, scorers).
    Expr(TExpr),
    /// `intrinsic`: implemented by the runtime.
    Intrinsic,
}

/// Criteria, penalties and format terms of a rubric.
#[derive(Debug, Clone, Serialize)]
pub struct Rubric {
    /// The judge that scores the criteria (the `judge` parameter's default).
    pub judge: Option<DeclRef>,
    /// Weighted criteria.
    pub criteria: Vec<Criterion>,
    /// Penalties.
    pub penalties: Vec<Penalty>,
    /// Format terms.
    pub formats: Vec<FormatTerm>,
    /// The reward expression.
    pub total: TExpr,
}

/// One criterion.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    /// Its name.
    pub name: String,
    /// Its weight in `weighted`.
    pub weight: f64,
    /// What the judge assesses.
    pub description: Option<String>,
    /// How it is scored, when not by asking the judge.
    pub scorer: Option<TExpr>,
    /// The raw score range, normalised to 0..1.
    pub scale: (f64, f64),
    /// Its weight, where written (else its name): what a weight's
    /// diagnostics point at.
    #[serde(skip)]
    pub span: Span,
    /// Its name in the `criterion` statement (the editor's definition).
    #[serde(skip)]
    pub name_span: Span,
}

/// One penalty.
#[derive(Debug, Clone, Serialize)]
pub struct Penalty {
    /// Its name.
    pub name: String,
    /// The amount (usually negative).
    pub value: TExpr,
    /// When it applies (always when absent).
    pub when: Option<TExpr>,
}

/// One format term.
#[derive(Debug, Clone, Serialize)]
pub struct FormatTerm {
    /// The format (`think_answer`, ...).
    pub format: String,
    /// Its weight.
    pub weight: f64,
}

/// The type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExprTy {
    /// A number.
    Number,
    /// A score in 0..1 (a criterion).
    Score,
    /// A boolean.
    Bool,
    /// A string.
    String,
    /// A list.
    List,
    /// A range.
    Range,
    /// Known only at run time (a dataset row field).
    Any,
}

impl ExprTy {
    /// The type in words.
    pub fn describe(self) -> &'static str {
        match self {
            ExprTy::Number => "a number",
            ExprTy::Score => "a score",
            ExprTy::Bool => "a condition (`true` or `false`)",
            ExprTy::String => "a string",
            ExprTy::List => "a list",
            ExprTy::Range => "a range",
            ExprTy::Any => "a row field",
        }
    }

    /// True for numbers and scores (and unknowns).
    pub fn is_numeric(self) -> bool {
        matches!(self, ExprTy::Number | ExprTy::Score | ExprTy::Any)
    }

    /// True for booleans (and unknowns).
    pub fn is_bool(self) -> bool {
        matches!(self, ExprTy::Bool | ExprTy::Any)
    }

    /// The type a parameter's declared type names (`number`, `string`,
    /// `bool`, `list`); `None` for another name.
    pub fn declared(name: &str) -> Option<ExprTy> {
        Self::DECLARABLE
            .iter()
            .find_map(|&(n, ty)| (n == name).then_some(ty))
    }

    /// The keyword that declares this type (`number`, ...), for messages.
    pub fn keyword(self) -> &'static str {
        match self {
            ExprTy::Number | ExprTy::Score => "number",
            ExprTy::Bool => "bool",
            ExprTy::String => "string",
            ExprTy::List => "list",
            ExprTy::Range => "range",
            ExprTy::Any => "value",
        }
    }

    /// The type names a parameter can be declared with, and their types.
    pub const DECLARABLE: [(&'static str, ExprTy); 4] = [
        ("number", ExprTy::Number),
        ("string", ExprTy::String),
        ("bool", ExprTy::Bool),
        ("list", ExprTy::List),
    ];

    /// The type of a constant value (a parameter's default), when it is a
    /// number, string, boolean or list.
    pub fn of_value(value: &Value) -> Option<ExprTy> {
        match value {
            Value::Number(_) => Some(ExprTy::Number),
            Value::Str(_) => Some(ExprTy::String),
            Value::Bool(_) => Some(ExprTy::Bool),
            Value::List(_) => Some(ExprTy::List),
            _ => None,
        }
    }

    /// Whether a value of type `found` may be given for a parameter
    /// declared `self` (an unknown always may).
    pub fn accepts(self, found: ExprTy) -> bool {
        match self {
            ExprTy::Number => found.is_numeric(),
            ExprTy::Bool => found.is_bool(),
            expected => found == expected || found == ExprTy::Any,
        }
    }
}

/// A typed, resolved expression (constants folded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TExpr {
    /// What it is.
    pub kind: TKind,
    /// Its type.
    pub ty: ExprTy,
    /// Where it is.
    #[serde(skip)]
    pub span: Span,
}

/// Typed expression forms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TKind {
    /// A folded constant.
    Const {
        /// Its value.
        value: Const,
    },
    /// A variable of the scope: a criterion, `weighted`, `mean`, a row field.
    Var {
        /// Its name.
        name: String,
    },
    /// A criterion of another rubric (reflection conditions).
    Criterion {
        /// The rubric.
        rubric: DeclRef,
        /// The criterion, or `None` for its total.
        criterion: Option<String>,
    },
    /// `base.field`.
    Field {
        /// The object.
        base: Box<TExpr>,
        /// The field.
        field: String,
    },
    /// A call of a built-in function or scorer.
    Call {
        /// The function (`len`, `judge.flag`, `std::regex`).
        func: String,
        /// Positional arguments.
        args: Vec<TExpr>,
        /// Named arguments.
        named: BTreeMap<String, TExpr>,
    },
    /// A prefix operator.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        operand: Box<TExpr>,
    },
    /// An infix operator.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left.
        lhs: Box<TExpr>,
        /// Right.
        rhs: Box<TExpr>,
    },
    /// `if c { a } else { b }`.
    If {
        /// Condition.
        cond: Box<TExpr>,
        /// When true.
        then: Box<TExpr>,
        /// When false.
        otherwise: Box<TExpr>,
    },
    /// `[a, b]`.
    List {
        /// Elements.
        items: Vec<TExpr>,
    },
}

/// A constant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Const {
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A range.
    Range(f64, f64),
}

impl TExpr {
    /// The constant value, if folded.
    pub fn constant(&self) -> Option<&Const> {
        match &self.kind {
            TKind::Const { value } => Some(value),
            _ => None,
        }
    }

    /// The folded number, if any.
    pub fn number(&self) -> Option<f64> {
        match self.constant()? {
            Const::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The rubrics whose criteria (or totals) the expression reads
    /// (`safety_rubric.safety`), with the span of each reference.
    pub fn rubrics_read(&self) -> Vec<(DeclRef, Span)> {
        let mut out = Vec::new();
        self.collect_rubrics(&mut out);
        out
    }

    fn collect_rubrics(&self, out: &mut Vec<(DeclRef, Span)>) {
        if let TKind::Criterion { rubric, .. } = &self.kind {
            out.push((*rubric, self.span));
        }
        for child in self.children() {
            child.collect_rubrics(out);
        }
    }

    /// The expressions directly inside this one, in source order (a
    /// call's positional arguments before its named ones).
    pub fn children(&self) -> Vec<&TExpr> {
        match &self.kind {
            TKind::Field { base, .. } => vec![base],
            TKind::Unary { operand, .. } => vec![operand],
            TKind::Binary { lhs, rhs, .. } => vec![lhs, rhs],
            TKind::If {
                cond,
                then,
                otherwise,
            } => vec![cond, then, otherwise],
            TKind::Call { args, named, .. } => args.iter().chain(named.values()).collect(),
            TKind::List { items } => items.iter().collect(),
            TKind::Const { .. } | TKind::Var { .. } | TKind::Criterion { .. } => Vec::new(),
        }
    }
}

impl Rubric {
    /// Every expression the rubric evaluates: the criteria's scorers, the
    /// penalties' amounts and conditions, and `total`.
    pub fn exprs(&self) -> Vec<&TExpr> {
        let mut out: Vec<&TExpr> = self
            .criteria
            .iter()
            .filter_map(|c| c.scorer.as_ref())
            .collect();
        for p in &self.penalties {
            out.push(&p.value);
            out.extend(p.when.as_ref());
        }
        out.push(&self.total);
        out
    }
}

impl Program {
    /// A declaration by reference.
    pub fn decl(&self, r: DeclRef) -> &Decl {
        &self.decls[r.0]
    }

    /// Declarations of the entry module, in source order.
    pub fn entry_decls(&self) -> impl Iterator<Item = (DeclRef, &Decl)> {
        self.decls
            .iter()
            .enumerate()
            .filter(|(_, d)| d.module == 0)
            .map(|(i, d)| (DeclRef(i), d))
    }
}
