//! Row fields a rubric's built-in scorers read, checked against the rows
//! they will score before any of them is scored.
//!
//! `safe_response` and `helpful_response` read a safety label (`label` by
//! default), `label_match` and `category_match` a label or category, and
//! `hallucinated_objects` an object list. A row without that field is
//! still scored (as a prompt that is not unsafe, or as 0), so a dataset
//! whose rows lack it would train on a silently wrong reward: the run
//! warns once per rubric, scorer, field and split, naming how many rows
//! lack it and where the first ones are.

use std::collections::{BTreeMap, BTreeSet};

use safer_ir::plan::{Expr, Plan, Val};

use super::data::Row;

/// The built-in scorers that read a row field: name, default field, and
/// what a row without it scores as. A test keeps the names and defaults
/// equal to the `field` parameters of `stdlib/std.safer`.
pub const FIELD_READERS: &[(&str, &str, &str)] = &[
    (
        "safe_response",
        "label",
        "treats them as prompts not marked unsafe",
    ),
    (
        "helpful_response",
        "label",
        "treats them as prompts not marked unsafe",
    ),
    ("label_match", "label", "scores them 0"),
    ("category_match", "category", "scores them 0"),
    (
        "hallucinated_objects",
        "objects",
        "scores them 0 (no object list to check against)",
    ),
];

/// Whether `row` gives `scorer` nothing it can read in `field`, as the
/// scorer sees it: a list for `hallucinated_objects`, text (a string,
/// number or boolean) for the others.
fn unreadable(row: &Row, scorer: &str, field: &str) -> bool {
    if scorer == "hallucinated_objects" {
        !matches!(row.fields.get(field), Some(Val::List(_)))
    } else {
        row.text(field).is_none()
    }
}

/// Rows listed by name in a warning before "and N more".
const SHOWN: usize = 3;

/// A built-in scorer reading a row field: the scorer and the field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldRead {
    /// The built-in scorer (`safe_response`).
    pub scorer: String,
    /// The field it reads (`label`).
    pub field: String,
}

/// The row fields that rubric `rubric`'s built-in scorers read, through
/// criteria, penalties, the total, user scorers and other rubrics'
/// criteria. A field given by an expression that is not a constant is not
/// listed (it is only known per row).
pub fn fields_read(plan: &Plan, rubric: &str) -> BTreeSet<FieldRead> {
    let mut walk = Walk {
        plan,
        found: BTreeSet::new(),
        rubrics_seen: BTreeSet::new(),
        functions_seen: BTreeSet::new(),
    };
    walk.rubric(rubric);
    walk.found
}

/// One warning per field read that some of `rows` lack (`what`: the rows'
/// split, for the message).
pub fn warnings(plan: &Plan, rubric: &str, rows: &[Row], what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for read in fields_read(plan, rubric) {
        let lacking: Vec<&Row> = rows
            .iter()
            .filter(|r| unreadable(r, &read.scorer, &read.field))
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let scores_as = FIELD_READERS
            .iter()
            .find(|(name, _, _)| *name == read.scorer)
            .map_or("scores them 0", |(_, _, scores_as)| scores_as);
        let shown: Vec<&str> = lacking
            .iter()
            .take(SHOWN)
            .map(|r| r.origin.as_str())
            .collect();
        let more = lacking.len().saturating_sub(SHOWN);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        out.push(format!(
            "warning: rubric `{rubric}`: `{}` reads the field `{}`, which {} of {} rows of {what} lack or hold in a form it cannot read ({}{more}); it {scores_as}",
            read.scorer,
            read.field,
            lacking.len(),
            rows.len(),
            shown.join(", "),
        ));
    }
    out
}

struct Walk<'p> {
    plan: &'p Plan,
    found: BTreeSet<FieldRead>,
    rubrics_seen: BTreeSet<String>,
    functions_seen: BTreeSet<(String, BTreeMap<String, String>)>,
}

impl Walk<'_> {
    fn rubric(&mut self, name: &str) {
        if !self.rubrics_seen.insert(name.to_string()) {
            return;
        }
        let Some(spec) = self.plan.rubrics.get(name) else {
            return;
        };
        let none = BTreeMap::new();
        for c in &spec.criteria {
            if let Some(e) = &c.scorer {
                self.expr(e, &none);
            }
        }
        for p in &spec.penalties {
            self.expr(&p.value, &none);
            if let Some(w) = &p.when {
                self.expr(w, &none);
            }
        }
        self.expr(&spec.total, &none);
    }

    /// Walks `e`; `consts`: the constant string arguments of the user
    /// scorer being walked, by parameter.
    fn expr(&mut self, e: &Expr, consts: &BTreeMap<String, String>) {
        match e {
            Expr::Const { .. } | Expr::Var { .. } => {}
            Expr::Criterion { rubric, .. } => self.rubric(rubric),
            Expr::Field { base, .. } => self.expr(base, consts),
            Expr::Unary { operand, .. } => self.expr(operand, consts),
            Expr::Binary { lhs, rhs, .. } => {
                self.expr(lhs, consts);
                self.expr(rhs, consts);
            }
            Expr::If {
                cond,
                then,
                otherwise,
            } => {
                self.expr(cond, consts);
                self.expr(then, consts);
                self.expr(otherwise, consts);
            }
            Expr::List { items } => {
                for item in items {
                    self.expr(item, consts);
                }
            }
            Expr::Call { func, args, named } => {
                for a in args.iter().chain(named.values()) {
                    self.expr(a, consts);
                }
                self.call(func, args, named, consts);
            }
        }
    }

    fn call(
        &mut self,
        func: &str,
        args: &[Expr],
        named: &BTreeMap<String, Expr>,
        consts: &BTreeMap<String, String>,
    ) {
        let constant = |e: &Expr| -> Option<String> {
            match e {
                Expr::Const { value: Val::Str(s) } => Some(s.clone()),
                Expr::Var { name } => consts.get(name).cloned(),
                _ => None,
            }
        };
        if let Some((_, default, _)) = FIELD_READERS.iter().find(|(name, _, _)| *name == func) {
            let field = match named.get("field") {
                Some(e) => constant(e),
                None => Some((*default).to_string()),
            };
            if let Some(field) = field {
                self.found.insert(FieldRead {
                    scorer: func.to_string(),
                    field,
                });
            }
            return;
        }
        let Some(function) = self.plan.functions.get(func) else {
            return;
        };
        // The user scorer's constant string arguments, as its body sees them.
        let mut inner = BTreeMap::new();
        for (i, (param, default)) in function.params.iter().enumerate() {
            // An argument that is not a constant is known only per row: no
            // value (and not the default, which it replaces).
            let value = match args.get(i).or_else(|| named.get(param)) {
                Some(given) => constant(given),
                None => match default {
                    Some(Val::Str(s)) => Some(s.clone()),
                    _ => None,
                },
            };
            if let Some(v) = value {
                inner.insert(param.clone(), v);
            }
        }
        if self
            .functions_seen
            .insert((func.to_string(), inner.clone()))
        {
            self.expr(&function.body, &inner);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use safer_ir::plan::{CriterionSpec, Function, RubricSpec};

    fn call(func: &str, named: &[(&str, Expr)]) -> Expr {
        Expr::Call {
            func: func.into(),
            args: vec![],
            named: named
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        }
    }

    fn text(s: &str) -> Expr {
        Expr::Const {
            value: Val::Str(s.into()),
        }
    }

    fn criterion(name: &str, scorer: Expr) -> CriterionSpec {
        CriterionSpec {
            name: name.into(),
            weight: 1.0,
            description: None,
            scorer: Some(scorer),
            scale: (0.0, 1.0),
        }
    }

    fn plan() -> Plan {
        let mut plan = Plan::default();
        // A user scorer forwarding its `key` parameter to `label_match`.
        plan.functions.insert(
            "matches".into(),
            Function {
                params: vec![("key".into(), Some(Val::Str("verdict".into())))],
                body: call(
                    "label_match",
                    &[("field", Expr::Var { name: "key".into() })],
                ),
            },
        );
        // Its argument computed per row: the field is unknown, not the default.
        plan.rubrics.insert(
            "computed".into(),
            RubricSpec {
                judge: None,
                criteria: vec![criterion(
                    "topic",
                    call(
                        "matches",
                        &[(
                            "key",
                            Expr::Call {
                                func: "lower".into(),
                                args: vec![Expr::Var { name: "x".into() }],
                                named: BTreeMap::new(),
                            },
                        )],
                    ),
                )],
                penalties: vec![],
                formats: vec![],
                total: Expr::Var {
                    name: "weighted".into(),
                },
            },
        );
        plan.rubrics.insert(
            "r".into(),
            RubricSpec {
                judge: None,
                criteria: vec![
                    criterion("safety", call("safe_response", &[("field", text("label"))])),
                    criterion("topic", call("matches", &[])),
                    criterion("kind", call("matches", &[("key", text("kind"))])),
                    criterion("objects", call("hallucinated_objects", &[])),
                    criterion("form", call("think_answer_format", &[])),
                ],
                penalties: vec![],
                formats: vec![],
                total: Expr::Var {
                    name: "weighted".into(),
                },
            },
        );
        plan
    }

    fn row(line: usize, fields: &[(&str, Val)]) -> Row {
        Row {
            id: format!("r{line}"),
            origin: format!("rows.jsonl:{line}"),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
            prompt: "q".into(),
            images: vec![],
        }
    }

    #[test]
    fn fields_are_found_through_user_scorers_and_defaults() {
        let reads: Vec<(String, String)> = fields_read(&plan(), "r")
            .into_iter()
            .map(|r| (r.scorer, r.field))
            .collect();
        let want = [
            ("hallucinated_objects", "objects"),
            ("label_match", "kind"),
            ("label_match", "verdict"),
            ("safe_response", "label"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect();
        assert_eq!(reads, want);
        assert!(fields_read(&plan(), "computed").is_empty());
    }

    #[test]
    fn fields_in_a_form_the_scorer_cannot_read_count_as_lacking() {
        let full = [
            ("label", Val::Str("safe".into())),
            ("kind", Val::Num(3.0)),
            ("verdict", Val::Bool(true)),
            ("objects", Val::List(vec![])),
        ];
        let mut listed = row(1, &full);
        listed
            .fields
            .insert("label".into(), Val::List(vec![Val::Str("unsafe".into())]));
        let mut named = row(2, &full);
        named
            .fields
            .insert("objects".into(), Val::Str("pills".into()));
        let warnings = warnings(&plan(), "r", &[row(3, &full), listed, named], "`d`");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("`hallucinated_objects` reads the field `objects`, which 1 of 3 rows of `d` lack or hold in a form it cannot read (rows.jsonl:2)"));
        assert!(warnings[1].contains("`safe_response` reads the field `label`, which 1 of 3 rows of `d` lack or hold in a form it cannot read (rows.jsonl:1)"));
    }

    #[test]
    fn the_prelude_s_field_readers_are_these() {
        let declared: Vec<(String, String)> =
            crate::exec::scorers::prelude_intrinsic_declarations()
                .iter()
                .filter_map(|l| {
                    let name = l["scorer ".len()..].split('(').next()?;
                    let default = l.split("field: string = \"").nth(1)?.split('"').next()?;
                    Some((name.to_string(), default.to_string()))
                })
                .collect();
        let known: Vec<(String, String)> = FIELD_READERS
            .iter()
            .map(|(name, field, _)| ((*name).to_string(), (*field).to_string()))
            .collect();
        assert_eq!(declared, known);
    }

    #[test]
    fn rows_without_a_field_read_are_named() {
        let full = [
            ("label", Val::Str("safe".into())),
            ("kind", Val::Str("x".into())),
            ("verdict", Val::Str("y".into())),
            ("objects", Val::List(vec![])),
        ];
        let mut rows: Vec<Row> = (1..=2).map(|l| row(l, &full)).collect();
        // Five rows without `label` (one with it null): three named, two more.
        for line in 3..=7 {
            let fields: Vec<(&str, Val)> = full[1..].to_vec();
            rows.push(row(line, &fields));
        }
        rows[6].fields.insert("label".into(), Val::Null);
        let warnings = warnings(&plan(), "r", &rows, "`d.train`");
        assert_eq!(
            warnings,
            vec![
                "warning: rubric `r`: `safe_response` reads the field `label`, which 5 of 7 rows of `d.train` lack or hold in a form it cannot read (rows.jsonl:3, rows.jsonl:4, rows.jsonl:5 and 2 more); it treats them as prompts not marked unsafe"
                    .to_string()
            ]
        );
        assert!(super::warnings(&plan(), "r", &rows[..2], "`d.train`").is_empty());
    }
}
