//! Run-time expressions: filters, curation bands, rubric totals, penalties,
//! reflection conditions and scorer calls, and their evaluator.
//!
//! The compiler has already checked types; evaluation still reports a
//! mismatch (a row field of the wrong type, an unknown variable) as an
//! [`EvalError`] instead of panicking, because row fields are only known
//! at run time.
//!
//! `saferc emit`'s `safer_reward.py` (`compiler/src/emit/`) does this in
//! Python for trainers other than saferc: a change here needs the same
//! change there (`compiler/tests/emit_parity.rs` compares the two).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A run-time value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Val {
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<Val>),
    /// An inclusive range `low..high`.
    Range {
        /// Low end.
        low: f64,
        /// High end.
        high: f64,
    },
    /// A missing row field.
    Null,
}

impl Val {
    /// A JSON value as a run-time value (objects become `Null`).
    pub fn from_json(v: &serde_json::Value) -> Val {
        match v {
            serde_json::Value::Bool(b) => Val::Bool(*b),
            serde_json::Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Val::Str(s.clone()),
            serde_json::Value::Array(items) => {
                Val::List(items.iter().map(Val::from_json).collect())
            }
            serde_json::Value::Null | serde_json::Value::Object(_) => Val::Null,
        }
    }

    /// The type in words, for errors.
    pub fn describe(&self) -> &'static str {
        match self {
            Val::Num(_) => "a number",
            Val::Bool(_) => "a boolean",
            Val::Str(_) => "a string",
            Val::List(_) => "a list",
            Val::Range { .. } => "a range",
            Val::Null => "nothing (a missing field)",
        }
    }

    /// The number, or an error naming `what`.
    pub fn num(&self, what: &str) -> Result<f64, EvalError> {
        match self {
            Val::Num(n) => Ok(*n),
            Val::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(EvalError::Type(format!(
                "{what} should be a number, found {}",
                other.describe()
            ))),
        }
    }

    /// The boolean, or an error naming `what`.
    pub fn truth(&self, what: &str) -> Result<bool, EvalError> {
        match self {
            Val::Bool(b) => Ok(*b),
            Val::Null => Ok(false),
            other => Err(EvalError::Type(format!(
                "{what} should be a condition, found {}",
                other.describe()
            ))),
        }
    }

    /// The string, or an error naming `what`.
    pub fn text(&self, what: &str) -> Result<&str, EvalError> {
        match self {
            Val::Str(s) => Ok(s),
            other => Err(EvalError::Type(format!(
                "{what} should be a string, found {}",
                other.describe()
            ))),
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Num(n) => write!(f, "{n}"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Str(s) => write!(f, "{s:?}"),
            Val::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Val::Range { low, high } => write!(f, "{low}..{high}"),
            Val::Null => f.write_str("null"),
        }
    }
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unary {
    /// `-x`.
    Neg,
    /// `not x`.
    Not,
}

/// Infix operators (the same set as the compiler's `BinaryOp`, repeated here
/// because the plan must not depend on the parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binary {
    /// `or` (short-circuit).
    Or,
    /// `and` (short-circuit).
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
    /// `in` (a list, a range or a substring).
    In,
    /// `not in`.
    NotIn,
    /// `a..b`.
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

/// An expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expr {
    /// A constant.
    Const {
        /// Its value.
        value: Val,
    },
    /// A variable: a row field, a criterion of the rubric in scope,
    /// `weighted`, `penalties`, `format`, `reward`, `mean`, `std`, ...
    Var {
        /// Its name.
        name: String,
    },
    /// A criterion (or the total, when `criterion` is `None`) of a named rubric.
    Criterion {
        /// The rubric.
        rubric: String,
        /// The criterion.
        criterion: Option<String>,
    },
    /// `base.field` of a row object or a nested field.
    Field {
        /// The object.
        base: Box<Expr>,
        /// The field.
        field: String,
    },
    /// A call: a built-in function (`len`, `lower`, ...), an intrinsic
    /// scorer (`safe_response`) or a user scorer; named arguments carry the
    /// declared defaults.
    Call {
        /// The function's plain name.
        func: String,
        /// Positional arguments.
        args: Vec<Expr>,
        /// Named arguments.
        named: BTreeMap<String, Expr>,
    },
    /// A prefix operator.
    Unary {
        /// The operator.
        op: Unary,
        /// The operand.
        operand: Box<Expr>,
    },
    /// An infix operator.
    Binary {
        /// The operator.
        op: Binary,
        /// Left.
        lhs: Box<Expr>,
        /// Right.
        rhs: Box<Expr>,
    },
    /// `if c { a } else { b }`.
    If {
        /// Condition.
        cond: Box<Expr>,
        /// When true.
        then: Box<Expr>,
        /// When false.
        otherwise: Box<Expr>,
    },
    /// `[a, b]`.
    List {
        /// Elements.
        items: Vec<Expr>,
    },
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// A value of the wrong type.
    Type(String),
    /// A name with no value here.
    Unknown(String),
    /// A failing call (a scorer's own error, a judge that did not answer).
    Call(String),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Type(m) | EvalError::Call(m) => f.write_str(m),
            EvalError::Unknown(name) => write!(f, "`{name}` has no value here"),
        }
    }
}

impl std::error::Error for EvalError {}

/// What names and calls mean where an expression is evaluated.
pub trait Env {
    /// The value of a variable; `None` when the name is unknown.
    fn var(&self, name: &str) -> Option<Val>;

    /// A criterion of a named rubric (reflection conditions).
    fn criterion(&self, rubric: &str, criterion: Option<&str>) -> Option<Val> {
        let _ = (rubric, criterion);
        None
    }

    /// A call that is not a built-in function (scorers).
    fn call(
        &self,
        func: &str,
        args: &[Val],
        named: &BTreeMap<String, Val>,
    ) -> Result<Val, EvalError> {
        let _ = (args, named);
        Err(EvalError::Unknown(format!("{func}()")))
    }
}

/// Evaluates `e` in `env`.
pub fn eval(e: &Expr, env: &dyn Env) -> Result<Val, EvalError> {
    match e {
        Expr::Const { value } => Ok(value.clone()),
        Expr::Var { name } => env
            .var(name)
            .ok_or_else(|| EvalError::Unknown(name.clone())),
        Expr::Criterion { rubric, criterion } => {
            env.criterion(rubric, criterion.as_deref()).ok_or_else(|| {
                EvalError::Unknown(match criterion {
                    Some(c) => format!("{rubric}.{c}"),
                    None => rubric.clone(),
                })
            })
        }
        Expr::Field { base, field } => match eval(base, env)? {
            // A nested row field (`meta.source`): the row flattens objects to dotted names.
            Val::Null if matches!(base.as_ref(), Expr::Var { .. }) => {
                let Expr::Var { name } = base.as_ref() else {
                    return Ok(Val::Null);
                };
                Ok(env.var(&format!("{name}.{field}")).unwrap_or(Val::Null))
            }
            Val::Null => Ok(Val::Null),
            other => Err(EvalError::Type(format!(
                "`.{field}` needs an object, found {}",
                other.describe()
            ))),
        },
        Expr::Call { func, args, named } => {
            let args = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<Vec<_>, _>>()?;
            let named = named
                .iter()
                .map(|(k, v)| Ok((k.clone(), eval(v, env)?)))
                .collect::<Result<BTreeMap<_, _>, EvalError>>()?;
            match builtin(func, &args)? {
                Some(v) => Ok(v),
                None => env.call(func, &args, &named),
            }
        }
        Expr::Unary { op, operand } => {
            let v = eval(operand, env)?;
            match op {
                Unary::Neg => Ok(Val::Num(-v.num("the operand of `-`")?)),
                Unary::Not => Ok(Val::Bool(!v.truth("the operand of `not`")?)),
            }
        }
        Expr::Binary { op, lhs, rhs } => binary(*op, lhs, rhs, env),
        Expr::If {
            cond,
            then,
            otherwise,
        } => {
            if eval(cond, env)?.truth("the condition of `if`")? {
                eval(then, env)
            } else {
                eval(otherwise, env)
            }
        }
        Expr::List { items } => Ok(Val::List(
            items
                .iter()
                .map(|i| eval(i, env))
                .collect::<Result<_, _>>()?,
        )),
    }
}

fn binary(op: Binary, lhs: &Expr, rhs: &Expr, env: &dyn Env) -> Result<Val, EvalError> {
    let sym = symbol(op);
    // Short-circuit first, so `x and f()` does not call `f` when `x` is false.
    match op {
        Binary::And => {
            return Ok(Val::Bool(
                eval(lhs, env)?.truth("the left side of `and`")?
                    && eval(rhs, env)?.truth("the right side of `and`")?,
            ))
        }
        Binary::Or => {
            return Ok(Val::Bool(
                eval(lhs, env)?.truth("the left side of `or`")?
                    || eval(rhs, env)?.truth("the right side of `or`")?,
            ))
        }
        _ => {}
    }
    let (a, b) = (eval(lhs, env)?, eval(rhs, env)?);
    let left = || format!("the left side of `{sym}`");
    let right = || format!("the right side of `{sym}`");
    Ok(match op {
        Binary::Eq => Val::Bool(equal(&a, &b)),
        Binary::Ne => Val::Bool(!equal(&a, &b)),
        Binary::Lt | Binary::Le | Binary::Gt | Binary::Ge => {
            let (x, y) = (a.num(&left())?, b.num(&right())?);
            Val::Bool(match op {
                Binary::Lt => x < y,
                Binary::Le => x <= y,
                Binary::Gt => x > y,
                _ => x >= y,
            })
        }
        Binary::In | Binary::NotIn => {
            let inside = contains(&b, &a)?;
            Val::Bool(if op == Binary::In { inside } else { !inside })
        }
        Binary::Range => Val::Range {
            low: a.num(&left())?,
            high: b.num(&right())?,
        },
        Binary::Add => match (&a, &b) {
            (Val::Str(x), Val::Str(y)) => Val::Str(format!("{x}{y}")),
            _ => Val::Num(a.num(&left())? + b.num(&right())?),
        },
        Binary::Sub => Val::Num(a.num(&left())? - b.num(&right())?),
        Binary::Mul => Val::Num(a.num(&left())? * b.num(&right())?),
        Binary::Div => Val::Num(a.num(&left())? / b.num(&right())?),
        Binary::Rem => Val::Num(a.num(&left())? % b.num(&right())?),
        Binary::And | Binary::Or => Val::Null,
    })
}

fn equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn contains(container: &Val, item: &Val) -> Result<bool, EvalError> {
    match container {
        Val::List(items) => Ok(items.iter().any(|i| equal(i, item))),
        Val::Range { low, high } => {
            let x = item.num("the left side of `in`")?;
            Ok(*low <= x && x <= *high)
        }
        // A missing field is in no text, as it is in no list.
        Val::Str(_) if matches!(item, Val::Null) => Ok(false),
        Val::Str(s) => Ok(s.contains(item.text("the left side of `in`")?)),
        Val::Null => Ok(false),
        other => Err(EvalError::Type(format!(
            "the right side of `in` should be a list, a range or a string, found {}",
            other.describe()
        ))),
    }
}

/// The names of [`builtin`]'s functions. They come before the
/// environment's, so a user scorer cannot take one (the checker refuses it).
pub const BUILTIN_FUNCTIONS: &[&str] = &[
    "index", "len", "lower", "upper", "words", "contains", "abs", "min", "max", "clamp",
];

/// Built-in functions usable in every expression; `None` when `func` is
/// not one (the environment resolves it).
fn builtin(func: &str, args: &[Val]) -> Result<Option<Val>, EvalError> {
    let one = || {
        args.first()
            .ok_or_else(|| EvalError::Call(format!("{func}() takes one argument")))
    };
    Ok(Some(match func {
        // `items[i]`: from 0, negative from the end; past either end, or on
        // a missing value, null (as a missing row field is).
        "index" => match args {
            [base, i] => {
                let i = i.num("an index")?;
                if i.fract() != 0.0 {
                    return Err(EvalError::Type(format!(
                        "an index is a whole number, found {i}"
                    )));
                }
                let at = |len: usize| -> Option<usize> {
                    let k = if i < 0.0 { len as f64 + i } else { i };
                    (k >= 0.0 && k < len as f64).then_some(k as usize)
                };
                match base {
                    Val::List(items) => at(items.len()).map_or(Val::Null, |k| items[k].clone()),
                    Val::Str(s) => {
                        let chars: Vec<char> = s.chars().collect();
                        at(chars.len()).map_or(Val::Null, |k| Val::Str(chars[k].to_string()))
                    }
                    Val::Null => Val::Null,
                    other => {
                        return Err(EvalError::Type(format!(
                            "`[...]` needs a list or a string, found {}",
                            other.describe()
                        )))
                    }
                }
            }
            _ => {
                return Err(EvalError::Call(
                    "an index takes a value and a position".into(),
                ))
            }
        },
        "len" => Val::Num(match one()? {
            Val::Str(s) => s.chars().count() as f64,
            Val::List(items) => items.len() as f64,
            Val::Null => 0.0,
            other => {
                return Err(EvalError::Type(format!(
                    "len() needs a string or a list, found {}",
                    other.describe()
                )))
            }
        }),
        "lower" => Val::Str(one()?.text("the argument of lower()")?.to_lowercase()),
        "upper" => Val::Str(one()?.text("the argument of upper()")?.to_uppercase()),
        "words" => Val::Num(
            one()?
                .text("the argument of words()")?
                .split_whitespace()
                .count() as f64,
        ),
        "contains" => match args {
            [hay, needle] => Val::Bool(contains(hay, needle)?),
            _ => {
                return Err(EvalError::Call(
                    "contains() takes a container and an item".into(),
                ))
            }
        },
        "abs" => Val::Num(one()?.num("the argument of abs()")?.abs()),
        "min" | "max" => {
            let nums = args
                .iter()
                .map(|a| a.num(&format!("an argument of {func}()")))
                .collect::<Result<Vec<_>, _>>()?;
            let pick = if func == "min" { f64::min } else { f64::max };
            match nums.into_iter().reduce(pick) {
                Some(v) => Val::Num(v),
                None => return Err(EvalError::Call(format!("{func}() needs an argument"))),
            }
        }
        "clamp" => match args {
            [x, lo, hi] => Val::Num(x.num("clamp's value")?.clamp(
                lo.num("clamp's low")?,
                hi.num("clamp's high")?.max(lo.num("clamp's low")?),
            )),
            _ => {
                return Err(EvalError::Call(
                    "clamp() takes a value, a low and a high".into(),
                ))
            }
        },
        _ => return Ok(None),
    }))
}

impl Expr {
    /// Calls `f` with every node of the tree, each before its children.
    pub fn for_each_node<'e>(&'e self, f: &mut impl FnMut(&'e Expr)) {
        f(self);
        match self {
            Expr::Call { args, named, .. } => {
                args.iter().for_each(|a| a.for_each_node(f));
                named.values().for_each(|a| a.for_each_node(f));
            }
            Expr::Field { base, .. } => base.for_each_node(f),
            Expr::Unary { operand, .. } => operand.for_each_node(f),
            Expr::Binary { lhs, rhs, .. } => {
                lhs.for_each_node(f);
                rhs.for_each_node(f);
            }
            Expr::If {
                cond,
                then,
                otherwise,
            } => {
                cond.for_each_node(f);
                then.for_each_node(f);
                otherwise.for_each_node(f);
            }
            Expr::List { items } => items.iter().for_each(|i| i.for_each_node(f)),
            Expr::Const { .. } | Expr::Var { .. } | Expr::Criterion { .. } => {}
        }
    }

    /// Calls `f` with the name of every variable in the tree (a filter's
    /// row fields), in order, repeats included.
    pub fn for_each_var<'e>(&'e self, f: &mut impl FnMut(&'e str)) {
        self.for_each_node(&mut |e| {
            if let Expr::Var { name } = e {
                f(name);
            }
        });
    }

    /// Calls `f` with every call in the tree, outer calls first: the
    /// function's name, its positional and its named arguments.
    pub fn for_each_call<'e>(
        &'e self,
        f: &mut impl FnMut(&'e str, &'e [Expr], &'e BTreeMap<String, Expr>),
    ) {
        self.for_each_node(&mut |e| {
            if let Expr::Call { func, args, named } = e {
                f(func, args, named);
            }
        });
    }
}

/// Where `e` compares a list with `==` or `!=` to a string, number or
/// boolean on `env`'s values (`objects == "pills"` where a row's `objects`
/// is a list), what to write instead. Such a comparison is false (`!=`:
/// true) whatever the list holds, so a filter written so drops (or keeps)
/// every row, silently; filters report it. Sides that cannot be evaluated
/// are passed over (their own errors are the evaluation's).
pub fn list_against_value(e: &Expr, env: &dyn Env) -> Option<String> {
    let mut found = None;
    e.for_each_node(&mut |node| {
        if let (
            None,
            Expr::Binary {
                op: op @ (Binary::Eq | Binary::Ne),
                lhs,
                rhs,
            },
        ) = (&found, node)
        {
            if let (Ok(a), Ok(b)) = (eval(lhs, env), eval(rhs, env)) {
                found = list_against_value_message(*op, &a, &b);
            }
        }
    });
    found
}

/// [`list_against_value`]'s message for one comparison.
fn list_against_value_message(op: Binary, a: &Val, b: &Val) -> Option<String> {
    let (list, other, side) = match (a, b) {
        (Val::List(_), o) => (a, o, "left"),
        (o, Val::List(_)) => (b, o, "right"),
        _ => return None,
    };
    if matches!(other, Val::List(_) | Val::Null) {
        return None;
    }
    let shown = match other {
        Val::Str(s) => format!("{s:?}"),
        Val::Num(n) => n.to_string(),
        Val::Bool(b) => b.to_string(),
        _ => "VALUE".into(),
    };
    let written = if op == Binary::Eq { "in" } else { "not in" };
    Some(format!(
        "the {side} side of `{}` is {} and the other {}: a list equals only a list; to test whether it holds the value, write `{shown} {written} ...` with the list after `{written}`",
        symbol(op),
        list.describe(),
        other.describe()
    ))
}

/// An operator as written.
pub fn symbol(op: Binary) -> &'static str {
    match op {
        Binary::Or => "or",
        Binary::And => "and",
        Binary::Eq => "==",
        Binary::Ne => "!=",
        Binary::Lt => "<",
        Binary::Le => "<=",
        Binary::Gt => ">",
        Binary::Ge => ">=",
        Binary::In => "in",
        Binary::NotIn => "not in",
        Binary::Range => "..",
        Binary::Add => "+",
        Binary::Sub => "-",
        Binary::Mul => "*",
        Binary::Div => "/",
        Binary::Rem => "%",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_functions_are_the_ones_listed() {
        // Each listed name is a built-in (its arity error, or a value);
        // a name not listed falls through to the environment.
        for name in super::BUILTIN_FUNCTIONS {
            assert!(
                !matches!(super::builtin(name, &[]), Ok(None)),
                "{name} is listed but not built in"
            );
        }
        for name in ["refusal", "length", "sum", "exp"] {
            assert!(matches!(super::builtin(name, &[]), Ok(None)), "{name}");
        }
    }

    use super::*;

    struct Row(BTreeMap<String, Val>);
    impl Env for Row {
        fn var(&self, name: &str) -> Option<Val> {
            self.0.get(name).cloned()
        }
    }

    fn var(n: &str) -> Box<Expr> {
        Box::new(Expr::Var { name: n.into() })
    }
    fn num(x: f64) -> Box<Expr> {
        Box::new(Expr::Const { value: Val::Num(x) })
    }

    fn row() -> Row {
        Row(BTreeMap::from([
            ("mean".into(), Val::Num(0.5)),
            ("std".into(), Val::Num(0.1)),
            ("label".into(), Val::Str("unsafe".into())),
        ]))
    }

    #[test]
    fn curation_band() {
        // mean in 0.2..0.8 and std >= 0.15
        let band = Expr::Binary {
            op: Binary::In,
            lhs: var("mean"),
            rhs: Box::new(Expr::Binary {
                op: Binary::Range,
                lhs: num(0.2),
                rhs: num(0.8),
            }),
        };
        let spread = Expr::Binary {
            op: Binary::Ge,
            lhs: var("std"),
            rhs: num(0.15),
        };
        let keep = Expr::Binary {
            op: Binary::And,
            lhs: Box::new(band.clone()),
            rhs: Box::new(spread),
        };
        assert_eq!(eval(&band, &row()), Ok(Val::Bool(true)));
        assert_eq!(eval(&keep, &row()), Ok(Val::Bool(false)));
    }

    /// A missing field is in no text, as in no list (it was an error in a
    /// text and false in a list).
    #[test]
    fn a_missing_field_is_in_no_text() {
        let text = Box::new(Expr::Const {
            value: Val::Str("unsafe".into()),
        });
        let in_text = |field: &str| Expr::Binary {
            op: Binary::In,
            lhs: var(field),
            rhs: text.clone(),
        };
        // A row's missing field reads as null.
        let mut with_null = row();
        with_null.0.insert("missing".into(), Val::Null);
        assert_eq!(eval(&in_text("missing"), &with_null), Ok(Val::Bool(false)));
        assert_eq!(eval(&in_text("label"), &row()), Ok(Val::Bool(true)));
    }

    #[test]
    fn membership_gate_and_arithmetic() {
        let list = Expr::List {
            items: vec![
                Expr::Const {
                    value: Val::Str("unsafe".into()),
                },
                Expr::Const {
                    value: Val::Str("borderline".into()),
                },
            ],
        };
        let member = Expr::Binary {
            op: Binary::In,
            lhs: var("label"),
            rhs: Box::new(list),
        };
        assert_eq!(eval(&member, &row()), Ok(Val::Bool(true)));
        // if mean < 0.6 { 0.2 * mean } else { mean + std }
        let gate = Expr::If {
            cond: Box::new(Expr::Binary {
                op: Binary::Lt,
                lhs: var("mean"),
                rhs: num(0.6),
            }),
            then: Box::new(Expr::Binary {
                op: Binary::Mul,
                lhs: num(0.2),
                rhs: var("mean"),
            }),
            otherwise: Box::new(Expr::Binary {
                op: Binary::Add,
                lhs: var("mean"),
                rhs: var("std"),
            }),
        };
        assert_eq!(eval(&gate, &row()), Ok(Val::Num(0.1)));
    }

    /// A list compared with `==` or `!=` to a string, number or boolean is
    /// found, with what to write (`in`); the comparison itself still
    /// evaluates as before (false, `!=` true), so that a rubric whose row
    /// fields are sometimes lists scores as it did. Lists against lists and
    /// against a missing field are not reported.
    #[test]
    fn a_list_compared_with_a_value_is_found() {
        let tags = || {
            Box::new(Expr::Const {
                value: Val::List(vec![Val::Str("pills".into())]),
            })
        };
        let text = || {
            Box::new(Expr::Const {
                value: Val::Str("pills".into()),
            })
        };
        let binary = |op, lhs, rhs| Expr::Binary { op, lhs, rhs };
        for (op, written) in [(Binary::Eq, "in"), (Binary::Ne, "not in")] {
            for (lhs, rhs) in [(tags(), text()), (text(), tags())] {
                let e = binary(op, lhs, rhs);
                let why = list_against_value(&e, &row()).unwrap_or_default();
                assert!(
                    why.contains(&format!("write `\"pills\" {written} ...`")),
                    "{why}"
                );
                assert_eq!(eval(&e, &row()), Ok(Val::Bool(op == Binary::Ne)));
            }
        }
        // Inside a larger condition too.
        let nested = binary(
            Binary::Or,
            Box::new(binary(Binary::Eq, var("label"), text())),
            Box::new(binary(Binary::Eq, tags(), text())),
        );
        assert!(list_against_value(&nested, &row()).is_some());
        assert_eq!(
            list_against_value(&binary(Binary::Eq, tags(), tags()), &row()),
            None
        );
        let missing = Box::new(Expr::Const { value: Val::Null });
        assert_eq!(
            list_against_value(&binary(Binary::Eq, tags(), missing), &row()),
            None
        );
    }

    /// `items[i]` from 0, negative from the end, null past either end or on
    /// a missing value; a fractional index or a number as the base is an
    /// error.
    #[test]
    fn indexing() {
        let tags = Val::List(vec![Val::Str("a".into()), Val::Str("b".into())]);
        let at = |base: Val, i: f64| builtin("index", &[base, Val::Num(i)]);
        assert_eq!(at(tags.clone(), 0.0), Ok(Some(Val::Str("a".into()))));
        assert_eq!(at(tags.clone(), -1.0), Ok(Some(Val::Str("b".into()))));
        assert_eq!(at(tags.clone(), 2.0), Ok(Some(Val::Null)));
        assert_eq!(at(tags.clone(), -3.0), Ok(Some(Val::Null)));
        assert_eq!(at(Val::Null, 0.0), Ok(Some(Val::Null)));
        assert_eq!(
            at(Val::Str("héllo".into()), 1.0),
            Ok(Some(Val::Str("é".into())))
        );
        assert!(matches!(at(tags, 0.5), Err(EvalError::Type(_))));
        assert!(matches!(at(Val::Num(3.0), 0.0), Err(EvalError::Type(_))));
    }

    #[test]
    fn short_circuit_and_errors() {
        // false and unknown_name: no error, the right side is never read.
        let e = Expr::Binary {
            op: Binary::And,
            lhs: Box::new(Expr::Const {
                value: Val::Bool(false),
            }),
            rhs: var("nope"),
        };
        assert_eq!(eval(&e, &row()), Ok(Val::Bool(false)));
        assert_eq!(
            eval(&var("nope"), &row()),
            Err(EvalError::Unknown("nope".into()))
        );
        let bad = Expr::Binary {
            op: Binary::Lt,
            lhs: var("label"),
            rhs: num(1.0),
        };
        assert!(
            matches!(eval(&bad, &row()), Err(EvalError::Type(m)) if m.contains("should be a number"))
        );
        let len = Expr::Call {
            func: "len".into(),
            args: vec![Expr::Var {
                name: "label".into(),
            }],
            named: BTreeMap::new(),
        };
        assert_eq!(eval(&len, &row()), Ok(Val::Num(6.0)));
    }
}
