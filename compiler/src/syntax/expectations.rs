//! Human names for what the parser expected.
//!
//! pest reports the grammar rules it tried at the furthest position; users
//! must never see those names. Each rule maps to an [`Expectation`], and
//! [`describe`] turns a set of them into "a value", "`=` or `{`", ...

use super::grammar::Rule;
use crate::diagnostic::join_or;

/// Something the parser would have accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expectation {
    /// A literal token, such as `=`.
    Token(&'static str),
    /// Any expression.
    Value,
    /// A name (declaration, parameter, field).
    Name,
    /// A string literal.
    String,
    /// A unit word after a number.
    Unit,
    /// A setting or statement inside a block.
    Setting,
    /// A top-level declaration.
    Declaration,
    /// An operator continuing an expression.
    Operator,
    /// The end of the file.
    EndOfFile,
}

impl Expectation {
    /// The phrase used in messages.
    pub fn phrase(self) -> String {
        match self {
            Expectation::Token(t) => format!("`{t}`"),
            Expectation::Value => "a value".into(),
            Expectation::Name => "a name".into(),
            Expectation::String => "a string".into(),
            Expectation::Unit => "a unit".into(),
            Expectation::Setting => "a setting".into(),
            Expectation::Declaration => "a declaration".into(),
            Expectation::Operator => "an operator".into(),
            Expectation::EndOfFile => "the end of the file".into(),
        }
    }

    /// True for what can end the current construct (used to drop "an
    /// operator" when the expression could simply have ended).
    fn ends_construct(self) -> bool {
        matches!(
            self,
            Expectation::Setting
                | Expectation::Declaration
                | Expectation::EndOfFile
                | Expectation::Token("}" | ")" | "]" | "," | "when" | "else" | "{")
        )
    }
}

/// The expectation a rule stands for, if it is one users should hear of.
pub fn of_rule(rule: Rule) -> Option<Expectation> {
    use Expectation as E;
    Some(match rule {
        Rule::expr
        | Rule::operand
        | Rule::op_not
        | Rule::op_neg
        | Rule::if_expr
        | Rule::numeric
        | Rule::number
        | Rule::boolean
        | Rule::list
        | Rule::paren => E::Value,
        Rule::ident | Rule::word | Rule::type_name => E::Name,
        Rule::string | Rule::plain_string | Rule::triple_string => E::String,
        Rule::unit => E::Unit,
        Rule::key
        | Rule::assign_stmt
        | Rule::block_stmt
        | Rule::filter_stmt
        | Rule::criterion_stmt
        | Rule::penalty_stmt
        | Rule::format_stmt
        | Rule::kw_filter
        | Rule::kw_criterion
        | Rule::kw_penalty
        | Rule::kw_format => E::Setting,
        Rule::file | Rule::decl | Rule::decl_kind | Rule::use_decl | Rule::kw_use => E::Declaration,
        Rule::arg => E::Value,
        Rule::param => E::Name,
        Rule::op_or
        | Rule::op_and
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_lt
        | Rule::op_le
        | Rule::op_gt
        | Rule::op_ge
        | Rule::op_in
        | Rule::op_not_in
        | Rule::op_range
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_mul
        | Rule::op_div
        | Rule::op_rem
        | Rule::call_args
        | Rule::field
        | Rule::index
        | Rule::dot => E::Operator,
        Rule::EOI => E::EndOfFile,
        Rule::eq => E::Token("="),
        Rule::comma => E::Token(","),
        Rule::colon => E::Token(":"),
        Rule::lparen | Rule::params => E::Token("("),
        Rule::rparen => E::Token(")"),
        Rule::lbrace | Rule::block | Rule::then_body => E::Token("{"),
        Rule::rbrace => E::Token("}"),
        Rule::lbracket => E::Token("["),
        Rule::rbracket => E::Token("]"),
        Rule::kw_as => E::Token("as"),
        Rule::kw_if => E::Token("if"),
        Rule::kw_else => E::Token("else"),
        Rule::kw_weight => E::Token("weight"),
        Rule::kw_when => E::Token("when"),
        _ => return None,
    })
}

/// Things that would continue the expression just read (an operator, a
/// unit after a number, a call or index bracket, a field dot).
fn continues_expression(e: Expectation) -> bool {
    matches!(
        e,
        Expectation::Operator | Expectation::Unit | Expectation::Token("(" | "[" | ".")
    )
}

/// The deduplicated, pruned expectations of a set of rules, most useful
/// first. `found_punctuation` says whether the unexpected token is
/// punctuation (then "an operator" is a likely intent and is kept).
pub fn from_rules(rules: &[Rule], found_punctuation: bool) -> Vec<Expectation> {
    let mut set: Vec<Expectation> = rules.iter().filter_map(|r| of_rule(*r)).collect();
    set.sort_by_key(|e| order(*e));
    set.dedup();
    if set.contains(&Expectation::Value) {
        // `(` and `[` start values too; "a value" already says it.
        set.retain(|e| !matches!(e, Expectation::Token("(" | "[")));
    }
    if set.contains(&Expectation::Setting) {
        // A name here is the key of the next setting.
        set.retain(|e| *e != Expectation::Name);
    }
    if set.iter().any(|e| e.ends_construct()) {
        let continued = set.iter().any(|e| continues_expression(*e));
        set.retain(|e| !continues_expression(*e));
        if continued && found_punctuation {
            set.insert(0, Expectation::Operator);
        }
    }
    set
}

fn order(e: Expectation) -> u8 {
    match e {
        Expectation::Token("=") => 0,
        Expectation::Value => 1,
        Expectation::Name => 2,
        Expectation::String => 3,
        Expectation::Unit => 4,
        Expectation::Token(_) => 5,
        Expectation::Operator => 6,
        Expectation::Setting => 7,
        Expectation::Declaration => 8,
        Expectation::EndOfFile => 9,
    }
}

/// "a value", "`=` or `{`", "a setting, `,` or `}`".
pub fn describe(set: &[Expectation]) -> String {
    let phrases: Vec<String> = set.iter().map(|e| e.phrase()).collect();
    if phrases.is_empty() {
        "something else".to_string()
    } else {
        join_or(&phrases)
    }
}
