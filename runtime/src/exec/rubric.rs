//! The `Score` op: a rubric scores completions. Each criterion comes from
//! its scorer expression (intrinsics, user scorers) or, without one, from
//! the rubric's judge; raw scores are normalised by the criterion's scale to
//! 0..1. Then penalties (over the criteria), format terms, `weighted` (the
//! weighted mean of the criteria) and the `total` expression give the reward.
//! Completions are scored in parallel (rayon).
//!
//! `saferc emit`'s `safer_reward.py` (`compiler/src/emit/`) does this in
//! Python for trainers other than saferc: a change here needs the same
//! change there (`compiler/tests/emit_parity.rs` compares the two).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use safer_ir::plan::{eval, Env, EvalError, Expr, Function, RubricSpec, Val};
use serde::Serialize;

use super::data::Row;
use super::judge::{Judge, Question};
use super::scorers::{self, Completion};

/// The scores of one completion under one rubric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    /// Each criterion, 0..1, in rubric order.
    pub criteria: Vec<f64>,
    /// Each penalty's amount (0 when it does not apply), in rubric order.
    pub penalties: Vec<f64>,
    /// The weighted format terms.
    pub format: f64,
    /// The weighted mean of the criteria.
    pub weighted: f64,
    /// The reward (`total`).
    pub total: f64,
}

/// A rubric ready to score: its spec, user scorers, judge and vocabulary.
pub struct RubricScorer<'a> {
    /// The rubric's qualified name.
    pub name: &'a str,
    /// The rubric.
    pub spec: &'a RubricSpec,
    /// User-defined scorers.
    pub functions: &'a BTreeMap<String, Function>,
    /// The judge for criteria without a scorer and `judge.*` calls.
    pub judge: &'a dyn Judge,
    /// Objects named in the dataset (hallucination checks).
    pub vocabulary: &'a BTreeSet<String>,
}

/// One completion to score.
pub struct Item<'a> {
    /// Its row.
    pub row: &'a Row,
    /// Its text.
    pub text: &'a str,
    /// Its token count.
    pub tokens: usize,
}

struct Scope<'a> {
    rubric: &'a RubricScorer<'a>,
    item: &'a Item<'a>,
    /// Criteria, `weighted`, `penalties`, `format` once known.
    vars: BTreeMap<String, Val>,
    /// Arguments of a user scorer being evaluated.
    params: BTreeMap<String, Val>,
    /// The criterion being scored (for `judge.*`): its name, description
    /// and `scale`.
    criterion: Option<(&'a str, Option<&'a str>, (f64, f64))>,
}

impl Env for Scope<'_> {
    fn var(&self, name: &str) -> Option<Val> {
        if let Some(v) = self.params.get(name).or_else(|| self.vars.get(name)) {
            return Some(v.clone());
        }
        // `think` and `answer` are the completion's parts here, not row
        // fields: `think.verdict` and the like.
        if name == "think" || name == "answer" {
            return Some(Val::Null);
        }
        if let Some(v) = super::scorers::part_field(self.item.text, name) {
            return Some(v);
        }
        self.item.row.var(name)
    }

    fn call(
        &self,
        func: &str,
        args: &[Val],
        named: &BTreeMap<String, Val>,
    ) -> Result<Val, EvalError> {
        let completion = Completion {
            text: self.item.text,
            tokens: self.item.tokens,
            row: self.item.row,
            vocabulary: self.rubric.vocabulary,
        };
        if let Some(result) = scorers::call(func, args, named, &completion) {
            return result;
        }
        if let Some(kind @ ("judge.score" | "judge.flag")) = Some(func) {
            let question = args
                .first()
                .map(|a| a.text("the judge's question"))
                .transpose()?;
            let (criterion, description, scale) =
                self.criterion.unwrap_or(("reward", None, (0.0, 1.0)));
            let asked = question.unwrap_or(criterion);
            // A score is asked on the criterion's `scale`, which the rubric
            // then maps to 0..1; a flag is a yes (1) or no (0).
            let range = if kind == "judge.score" && scale.1 > scale.0 {
                scale
            } else {
                (0.0, 1.0)
            };
            let v = self.rubric.judge.ask(&Question {
                criterion: asked,
                description,
                row: self.item.row,
                completion: self.item.text,
                range,
            })?;
            return Ok(if kind == "judge.flag" {
                Val::Bool(v >= 0.5)
            } else {
                Val::Num(v)
            });
        }
        if let Some(f) = self.rubric.functions.get(func) {
            let mut params = BTreeMap::new();
            for (i, (name, default)) in f.params.iter().enumerate() {
                let v = args.get(i).or_else(|| named.get(name)).or(default.as_ref());
                params.insert(name.clone(), v.cloned().unwrap_or(Val::Null));
            }
            let inner = Scope {
                rubric: self.rubric,
                item: self.item,
                vars: self.vars.clone(),
                params,
                criterion: self.criterion,
            };
            return eval(&f.body, &inner);
        }
        Err(EvalError::Unknown(format!("{func}()")))
    }
}

/// Warns, once per rubric and criterion in a run, that a criterion's
/// scorer gave `raw` outside its `scale` (the score is clamped into it): a
/// user scorer giving 3, or a length, where a score from 0 to 1 was meant.
fn warn_out_of_scale(rubric: &str, criterion: &str, raw: f64, (lo, hi): (f64, f64)) {
    static WARNED: std::sync::OnceLock<std::sync::Mutex<BTreeSet<String>>> =
        std::sync::OnceLock::new();
    let key = format!("{rubric}.{criterion}");
    let mut warned = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned.insert(key) {
        crate::stderr_line!(
            "warning: rubric `{rubric}`, criterion `{criterion}`: its scorer gave {raw}, outside the criterion's scale {lo}..{hi}; such scores are clamped into it (a scorer gives a score from 0 to 1, or set `scale`)"
        );
    }
}

fn number(v: Val, what: &str) -> Result<f64, EvalError> {
    match v {
        Val::Bool(b) => Ok(f64::from(u8::from(b))),
        other => other.num(what),
    }
}

impl RubricScorer<'_> {
    /// Scores one completion.
    ///
    /// # Errors
    /// A scorer or judge that fails, or an expression of the wrong type,
    /// naming the rubric and the part.
    pub fn score(&self, item: &Item<'_>) -> Result<Scores, EvalError> {
        let mut scope = Scope {
            rubric: self,
            item,
            vars: BTreeMap::new(),
            params: BTreeMap::new(),
            criterion: None,
        };
        let ctx = |part: &str, e: EvalError| {
            EvalError::Call(format!("rubric `{}`, {part}: {e}", self.name))
        };
        // The judged criteria are asked together: from a judge's pool of
        // `concurrency` threads, a completion's questions are in flight at
        // once (asked one after another, a rubric of several judged
        // criteria kept at most one request per completion in flight).
        // Only a judge with a pool of its own is asked so: a `model` judge
        // computes on the CPU's pool under a lock, and a question of its
        // queued there could be taken up by the thread holding the lock.
        let ask = |c: &safer_ir::plan::CriterionSpec| {
            c.scorer.is_none().then(|| {
                self.judge.ask(&Question {
                    criterion: &c.name,
                    description: c.description.as_deref(),
                    row: item.row,
                    completion: item.text,
                    // A judged criterion's `scale` is the range asked for.
                    range: if c.scale.1 > c.scale.0 {
                        c.scale
                    } else {
                        (0.0, 1.0)
                    },
                })
            })
        };
        let asked: Vec<Option<Result<f64, EvalError>>> = match self.judge.pool() {
            Some(_) => self.spec.criteria.par_iter().map(ask).collect(),
            None => self.spec.criteria.iter().map(ask).collect(),
        };
        let mut criteria = Vec::with_capacity(self.spec.criteria.len());
        for (c, asked) in self.spec.criteria.iter().zip(asked) {
            scope.criterion = Some((c.name.as_str(), c.description.as_deref(), c.scale));
            let raw = match (&c.scorer, asked) {
                (Some(e), _) => number(
                    eval(e, &scope).map_err(|e| ctx(&format!("criterion `{}`", c.name), e))?,
                    &c.name,
                )
                .map_err(|e| ctx(&format!("criterion `{}`", c.name), e))?,
                (None, Some(answer)) => {
                    answer.map_err(|e| ctx(&format!("criterion `{}`", c.name), e))?
                }
                (None, None) => {
                    return Err(ctx(
                        &format!("criterion `{}`", c.name),
                        EvalError::Call("it was not asked".into()),
                    ))
                }
            };
            let (lo, hi) = c.scale;
            // NaN (0/0) is no score to clamp: the total it makes stops
            // the run below, naming the row.
            if c.scorer.is_some() && hi > lo && !raw.is_nan() && !(lo..=hi).contains(&raw) {
                warn_out_of_scale(self.name, &c.name, raw, (lo, hi));
            }
            let v = if hi > lo {
                ((raw - lo) / (hi - lo)).clamp(0.0, 1.0)
            } else {
                raw
            };
            scope.vars.insert(c.name.clone(), Val::Num(v));
            criteria.push(v);
        }
        scope.criterion = None;
        let weight_sum: f64 = self.spec.criteria.iter().map(|c| c.weight).sum();
        let weighted = if weight_sum > 0.0 {
            self.spec
                .criteria
                .iter()
                .zip(&criteria)
                .map(|(c, v)| c.weight * v)
                .sum::<f64>()
                / weight_sum
        } else {
            0.0
        };
        let mut penalties = Vec::with_capacity(self.spec.penalties.len());
        for p in &self.spec.penalties {
            let applies = match &p.when {
                Some(w) => eval(w, &scope)
                    .and_then(|v| v.truth("a penalty's `when`"))
                    .map_err(|e| ctx(&format!("penalty `{}`", p.name), e))?,
                None => true,
            };
            let amount = if applies {
                number(
                    eval(&p.value, &scope).map_err(|e| ctx(&format!("penalty `{}`", p.name), e))?,
                    &p.name,
                )
                .map_err(|e| ctx(&format!("penalty `{}`", p.name), e))?
            } else {
                0.0
            };
            penalties.push(amount);
        }
        let format: f64 = self
            .spec
            .formats
            .iter()
            .map(|f| f.weight * format_score(&f.format, item.text))
            .sum();
        scope.vars.insert("weighted".into(), Val::Num(weighted));
        scope
            .vars
            .insert("penalties".into(), Val::Num(penalties.iter().sum()));
        scope.vars.insert("format".into(), Val::Num(format));
        let total = number(
            eval(&self.spec.total, &scope).map_err(|e| ctx("total", e))?,
            "total",
        )
        .map_err(|e| ctx("total", e))?;
        if !total.is_finite() {
            // A reward no advantage can use (a division by zero in `total`):
            // named here, with the row, not later as a NaN in the step.
            let parts: Vec<String> = self
                .spec
                .criteria
                .iter()
                .zip(&criteria)
                .map(|(c, v)| format!("{} = {v}", c.name))
                .collect();
            return Err(ctx(
                "total",
                EvalError::Call(format!(
                    "it is {total} for row {} ({}); make `total` finite for every score (a division by zero?)",
                    item.row.origin,
                    parts.join(", ")
                )),
            ));
        }
        Ok(Scores {
            criteria,
            penalties,
            format,
            weighted,
            total,
        })
    }

    /// Scores many completions in parallel, in order.
    ///
    /// # Errors
    /// The first failure.
    pub fn score_all(&self, items: &[Item<'_>]) -> Result<Vec<Scores>, EvalError> {
        let score = || items.par_iter().map(|i| self.score(i)).collect();
        match self.judge.pool() {
            // A judge that waits on the network asks from its own pool of
            // `concurrency` threads, so that many requests are in flight
            // whatever the number of CPUs.
            Some(pool) => pool.install(score),
            // A judge that computes under a lock (a `model` judge, whose
            // generation runs on the CPU's pool) is asked one completion at
            // a time: a thread holding the lock and waiting in the pool
            // could take up another completion's question and wait for the
            // lock it holds.
            None if self.judge.serial() => items.iter().map(|i| self.score(i)).collect(),
            None => score(),
        }
    }

    /// Scores generated completions, each against the row `row_of` names.
    ///
    /// # Errors
    /// The first scoring failure, as [`super::ExecError::Score`].
    pub fn score_completions<'r>(
        &self,
        completions: &[crate::generate::Completion],
        row_of: impl Fn(&crate::generate::Completion) -> &'r Row,
    ) -> Result<Vec<Scores>, super::ExecError> {
        let items: Vec<Item<'_>> = completions
            .iter()
            .map(|c| Item {
                row: row_of(c),
                text: &c.text,
                tokens: c.tokens.len(),
            })
            .collect();
        self.score_all(&items)
            .map_err(|e| super::ExecError::Score(e.to_string()))
    }

    /// The criterion names in order.
    pub fn criterion_names(&self) -> Vec<String> {
        self.spec.criteria.iter().map(|c| c.name.clone()).collect()
    }

    /// A criterion's value from scores (`None`: the total).
    pub fn pick(&self, scores: &Scores, criterion: Option<&str>) -> f64 {
        match criterion {
            None => scores.total,
            Some(c) => self
                .spec
                .criteria
                .iter()
                .position(|x| x.name == c)
                .and_then(|i| scores.criteria.get(i).copied())
                .unwrap_or(f64::NAN),
        }
    }
}

/// The score of a response format.
pub fn format_score(format: &str, text: &str) -> f64 {
    match format {
        "think_answer" => scorers::think_answer_format(text),
        "answer_only" => f64::from(u8::from(
            scorers::tagged(text, "answer").is_some_and(|a| !a.trim().is_empty()),
        )),
        _ => 1.0,
    }
}

/// An environment for conditions over named rubrics' scores of one
/// completion (`safety_rubric.safety < 0.5`, `reward`).
pub struct ScoreEnv<'a> {
    /// Scores by rubric name, with the rubric they follow.
    pub scores: BTreeMap<&'a str, (&'a RubricSpec, &'a Scores)>,
    /// The reward of the stage's rubric.
    pub reward: f64,
}

impl Env for ScoreEnv<'_> {
    fn var(&self, name: &str) -> Option<Val> {
        (name == "reward").then_some(Val::Num(self.reward))
    }

    fn criterion(&self, rubric: &str, criterion: Option<&str>) -> Option<Val> {
        let (spec, s) = self.scores.get(rubric)?;
        Some(Val::Num(match criterion {
            None => s.total,
            Some(c) => *s
                .criteria
                .get(spec.criteria.iter().position(|x| x.name == c)?)?,
        }))
    }
}

/// Evaluates a condition in a [`ScoreEnv`].
///
/// # Errors
/// A condition that does not evaluate to a boolean.
pub fn condition(e: &Expr, env: &ScoreEnv<'_>) -> Result<bool, EvalError> {
    eval(e, env)?.truth("the condition")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::*;
    use safer_ir::plan::CriterionSpec;
    use std::sync::Mutex;

    /// A judge that answers 70% of the range it is asked in, and records it.
    struct Grader(Mutex<Vec<(f64, f64)>>);

    impl Judge for Grader {
        fn ask(&self, q: &Question<'_>) -> Result<f64, EvalError> {
            self.0.lock().unwrap().push(q.range);
            Ok(q.range.0 + 0.7 * (q.range.1 - q.range.0))
        }
    }

    fn call(func: &str) -> Expr {
        Expr::Call {
            func: func.into(),
            args: Vec::new(),
            named: BTreeMap::new(),
        }
    }

    #[test]
    fn a_judge_score_is_asked_on_its_criterion_s_scale() {
        let criterion = |name: &str, scorer: Option<Expr>, scale| CriterionSpec {
            name: name.into(),
            weight: 1.0,
            description: None,
            scorer,
            scale,
        };
        let spec = RubricSpec {
            judge: None,
            criteria: vec![
                criterion("tenths", Some(call("judge.score")), (0.0, 10.0)),
                criterion("unit", Some(call("judge.score")), (0.0, 0.0)),
                criterion("asked", None, (1.0, 5.0)),
            ],
            penalties: Vec::new(),
            formats: Vec::new(),
            total: Expr::Var {
                name: "weighted".into(),
            },
        };
        let judge = Grader(Mutex::new(Vec::new()));
        let (functions, vocabulary) = (BTreeMap::new(), BTreeSet::new());
        let scorer = RubricScorer {
            name: "r",
            spec: &spec,
            functions: &functions,
            judge: &judge,
            vocabulary: &vocabulary,
        };
        let row = Row {
            id: "a".into(),
            origin: "rows.jsonl:1".into(),
            fields: BTreeMap::new(),
            prompt: "Is this safe?".into(),
            images: Vec::new(),
        };
        let scores = scorer
            .score(&Item {
                row: &row,
                text: "It is.",
                tokens: 3,
            })
            .unwrap();
        // The judged criterion is asked first (judged criteria are asked
        // together, before the scorers run).
        assert_eq!(
            *judge.0.lock().unwrap(),
            vec![(1.0, 5.0), (0.0, 10.0), (0.0, 1.0)]
        );
        for v in &scores.criteria {
            assert!((v - 0.7).abs() < 1e-12, "{:?}", scores.criteria);
        }
    }
}
