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
/// what a row without it scores as.
const FIELD_READERS: &[(&str, &str, &str)] = &[
    ("safe_response", "label", "as a prompt that is not unsafe"),
    (
        "helpful_response",
        "label",
        "as a prompt that is not unsafe",
    ),
    ("label_match", "label", "0"),
    ("category_match", "category", "0"),
    (
        "hallucinated_objects",
        "objects",
        "0 (no object list to check against)",
    ),
];

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
            .filter(|r| matches!(r.fields.get(&read.field), None | Some(Val::Null)))
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let scores_as = FIELD_READERS
            .iter()
            .find(|(name, _, _)| *name == read.scorer)
            .map_or("0", |(_, _, scores_as)| scores_as);
        let mut shown: Vec<&str> = lacking
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
        shown.dedup();
        out.push(format!(
            "warning: rubric `{rubric}`: `{}` reads the field `{}`, which {} of {} rows of {what} lack ({}{more}); it scores them {scores_as}",
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
            let given = args.get(i).or_else(|| named.get(param)).and_then(constant);
            let value = given.or_else(|| match default {
                Some(Val::Str(s)) => Some(s.clone()),
                _ => None,
            });
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
        let mut plan = Plan {
            program_hash: String::new(),
            rubric_hashes: BTreeMap::new(),
            models: BTreeMap::new(),
            judges: BTreeMap::new(),
            rubrics: BTreeMap::new(),
            functions: BTreeMap::new(),
            datasets: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            reflections: BTreeMap::new(),
            stages: vec![],
            evals: vec![],
        };
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
                "warning: rubric `r`: `safe_response` reads the field `label`, which 5 of 7 rows of `d.train` lack (rows.jsonl:3, rows.jsonl:4, rows.jsonl:5 and 2 more); it scores them as a prompt that is not unsafe"
                    .to_string()
            ]
        );
        assert!(super::warnings(&plan(), "r", &rows[..2], "`d.train`").is_empty());
    }
}
