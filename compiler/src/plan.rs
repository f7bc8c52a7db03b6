//! Lowering: the resolved program → the execution plan
//! ([`safer_ir::plan::Plan`]) that `saferc run` hands to the runtime.
//!
//! The graph ([`crate::graph`]) says what runs; the plan carries the values:
//! settings as numbers and strings without units, paths resolved, rubric
//! totals, penalties, filters and conditions as [`Expr`] trees with the
//! declared defaults of every scorer argument filled in. Declarations are
//! named by their qualified names (`std/rubrics/safety::safety_rubric`).

use crate::semantic::hir::{Const, Decl, DeclRef, Program, Settings, TExpr, TKind, Value};
use crate::syntax::ast::{BinaryOp, DeclKind, UnaryOp, Unit};
use safer_ir::plan::expr::{Binary, Unary};
use safer_ir::plan::{
    AdamSpec, Algorithm, CostSpec, CriterionSpec, CurateSpec, DatasetSpec, DynamicSamplingSpec,
    EvalSpec, Expr, FormatSpec, Function, GrpoSpec, JudgeSpec, KlSpec, ModelSpec, OverlongSpec,
    PenaltySpec, Plan, ReflectionSpec, RolloutSpec, RubricSpec, SftSpec, SplitRef, StageSpec, Val,
};
use std::collections::{BTreeMap, BTreeSet};

/// Lowers a checked program (the caller has run the checks and the graph
/// lowering, so every required setting is present).
pub fn lower(program: &Program) -> Plan {
    if !program.is_hashed() {
        return lower(&program.clone().hashed());
    }
    let mut l = Lowerer {
        p: program,
        plan: Plan {
            program_hash: program.hash.clone(),
            ..Plan::default()
        },
        staged: BTreeSet::new(),
    };
    let entry: Vec<(DeclRef, DeclKind)> = program.entry_decls().map(|(r, d)| (r, d.kind)).collect();
    for (r, kind) in &entry {
        if *kind == DeclKind::Train {
            l.stage(*r);
        }
    }
    for (r, kind) in &entry {
        if *kind == DeclKind::Eval {
            l.eval(*r);
        }
    }
    l.plan
}

struct Lowerer<'a> {
    p: &'a Program,
    plan: Plan,
    staged: BTreeSet<usize>,
}

fn num(s: &Settings, key: &str, default: f64) -> f64 {
    s.number(key).unwrap_or(default)
}

/// AdamW's settings of an `sft` or `grpo` block (defaults where unset).
fn adam(block: &Settings) -> AdamSpec {
    let d = AdamSpec::default();
    AdamSpec {
        adam_beta1: num(block, "adam_beta1", d.adam_beta1),
        adam_beta2: num(block, "adam_beta2", d.adam_beta2),
        adam_epsilon: num(block, "adam_epsilon", d.adam_epsilon),
    }
}

fn text(s: &Settings, key: &str, default: &str) -> String {
    s.text(key).unwrap_or(default).to_string()
}

fn count(s: &Settings, key: &str, default: f64) -> usize {
    num(s, key, default).max(0.0) as usize
}

fn path(v: Option<&Value>) -> Option<(String, String)> {
    match v? {
        Value::Path { written, resolved } => Some((resolved.clone(), written.clone())),
        Value::Str(s) => Some((s.clone(), s.clone())),
        _ => None,
    }
}

impl<'a> Lowerer<'a> {
    /// A declaration, borrowed from the program (not from the lowerer, which
    /// is mutated while the declaration is read).
    fn decl(&self, r: DeclRef) -> &'a Decl {
        let p: &'a Program = self.p;
        p.decl(r)
    }

    fn qualified(&self, r: DeclRef) -> String {
        self.decl(r).qualified.clone()
    }

    fn split_ref(&mut self, v: Option<&Value>) -> Option<SplitRef> {
        match v? {
            Value::Split { dataset, split } => {
                let name = self.dataset(*dataset);
                Some(SplitRef {
                    dataset: name,
                    split: split.clone(),
                })
            }
            _ => None,
        }
    }

    fn model(&mut self, r: DeclRef) -> String {
        let name = self.qualified(r);
        if !self.plan.models.contains_key(&name) {
            let s = &self.decl(r).settings;
            let (weights, weights_written) = path(s.get("weights")).unwrap_or_default();
            self.plan.models.insert(
                name.clone(),
                ModelSpec {
                    arch: text(s, "arch", "tiny_vlm"),
                    weights,
                    weights_written,
                    device: text(s, "device", "auto"),
                    dtype: text(s, "dtype", "f32"),
                    tokenizer: path(s.get("tokenizer")).map(|(p, _)| p),
                    context: s.number("context").map(|n| n.max(1.0) as usize),
                },
            );
        }
        name
    }

    fn judge(&mut self, r: DeclRef) -> String {
        let name = self.qualified(r);
        if !self.plan.judges.contains_key(&name) {
            let s = &self.decl(r).settings;
            let model = s.reference("model").map(|m| self.model(m));
            let kind = text(s, "kind", "rules");
            // Shown by default where the judge can see them: an endpoint
            // (one that reads text only says so, and `images = false`
            // answers it) or a local vision-language model.
            let sees_images = match kind.as_str() {
                "http" => true,
                "model" => model
                    .as_ref()
                    .and_then(|m| self.plan.models.get(m))
                    .is_some_and(|m| !safer_ir::plan::arch_reads_text_only(&m.arch)),
                _ => false,
            };
            let images = sees_images && s.bool("images").unwrap_or(true);
            self.plan.judges.insert(
                name.clone(),
                JudgeSpec {
                    kind,
                    model,
                    named: s.text("named").map(str::to_string),
                    endpoint: s.text("endpoint").map(str::to_string),
                    model_name: s.text("model_name").map(str::to_string),
                    api_key_env: s.text("api_key_env").map(str::to_string),
                    ca_file: path(s.get("ca_file")).map(|(resolved, _)| resolved),
                    retries: num(s, "retries", 3.0) as u32,
                    timeout_s: num(s, "timeout", 60.0),
                    concurrency: count(s, "concurrency", 4.0).max(1),
                    temperature: num(s, "temperature", 0.0),
                    fallback: s.number("fallback"),
                    images,
                    max_tokens: s.number("max_tokens").map(|n| n.max(1.0) as usize),
                },
            );
        }
        name
    }

    fn rubric(&mut self, r: DeclRef) -> String {
        let name = self.qualified(r);
        if self.plan.rubrics.contains_key(&name) {
            return name;
        }
        let decl = self.decl(r);
        self.plan
            .rubric_hashes
            .insert(name.clone(), decl.hash.clone());
        let Some(rubric) = decl.rubric.as_ref() else {
            return name;
        };
        let judge = rubric.judge.map(|j| self.judge(j));
        let spec = RubricSpec {
            judge,
            criteria: rubric
                .criteria
                .iter()
                .map(|c| CriterionSpec {
                    name: c.name.clone(),
                    weight: c.weight,
                    description: c.description.clone(),
                    scorer: c.scorer.as_ref().map(|e| self.expr(e)),
                    scale: c.scale,
                })
                .collect(),
            penalties: rubric
                .penalties
                .iter()
                .map(|p| PenaltySpec {
                    name: p.name.clone(),
                    value: self.expr(&p.value),
                    when: p.when.as_ref().map(|w| self.expr(w)),
                })
                .collect(),
            formats: rubric
                .formats
                .iter()
                .map(|f| FormatSpec {
                    format: f.format.clone(),
                    weight: f.weight,
                })
                .collect(),
            total: self.expr(&rubric.total),
        };
        self.plan.rubrics.insert(name.clone(), spec);
        name
    }

    fn rollout(&mut self, r: DeclRef) -> String {
        let name = self.qualified(r);
        let s = &self.decl(r).settings;
        let stop = s.strings("stop");
        self.plan.rollouts.insert(
            name.clone(),
            RolloutSpec {
                group: count(s, "group", 8.0).max(1),
                temperature: num(s, "temperature", 1.0),
                top_p: num(s, "top_p", 1.0),
                top_k: count(s, "top_k", 0.0),
                max_tokens: count(s, "max_tokens", 256.0).max(1),
                min_tokens: count(s, "min_tokens", 0.0),
                format: text(s, "format", "think_answer"),
                stop,
            },
        );
        name
    }

    fn reflection(&mut self, r: DeclRef) -> String {
        let name = self.qualified(r);
        let s = &self.decl(r).settings;
        let prompt = match s.get("prompt") {
            Some(Value::Str(t)) => t.clone(),
            Some(Value::Ref(p)) => match &self.p.decl(*p).value {
                Some(Value::Str(t)) => t.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let when = match s.get("when") {
            Some(Value::Expr(e)) => self.expr(e),
            _ => Expr::Const {
                value: Val::Bool(false),
            },
        };
        self.plan.reflections.insert(
            name.clone(),
            ReflectionSpec {
                when,
                prompt,
                rounds: count(s, "rounds", 1.0).max(1),
                keep: text(s, "keep", "replace"),
            },
        );
        name
    }

    fn dataset(&mut self, r: DeclRef) -> String {
        let name = self.qualified(r);
        if self.plan.datasets.contains_key(&name) {
            return name;
        }
        let decl = self.decl(r);
        let s = &decl.settings;
        let (source, source_written) = match s.get("source") {
            Some(Value::Source { path: p, .. }) => path(Some(p)).unwrap_or_default(),
            _ => Default::default(),
        };
        let images = path(s.get("images")).map(|(p, _)| p).unwrap_or_else(|| {
            std::path::Path::new(&source)
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let filters = decl.filters.iter().map(|f| self.expr(f)).collect();
        // Insert first: curation and dedup may refer back to this dataset.
        self.plan.datasets.insert(
            name.clone(),
            DatasetSpec {
                source,
                source_written,
                images,
                on_bad_row: text(s, "on_bad_row", "skip"),
                filters,
                curate: None,
                balance: s.text("balance").map(str::to_string),
                dedup: Vec::new(),
                limit: s.number("limit").map(|n| n as usize),
                splits: s
                    .block("split")
                    .map(|b| {
                        b.0.keys()
                            .map(|k| (k.clone(), b.number(k).unwrap_or(0.0)))
                            .collect()
                    })
                    .unwrap_or_default(),
                seed: num(s, "seed", 0.0) as u64,
            },
        );
        let curate = s.block("curate").map(|c| CurateSpec {
            policy: c
                .reference("policy")
                .map(|m| self.model(m))
                .unwrap_or_default(),
            rollouts: count(c, "rollouts", 4.0).max(2),
            rubric: c
                .reference("rubric")
                .map(|x| self.rubric(x))
                .unwrap_or_default(),
            rollout: c.reference("rollout").map(|x| self.rollout(x)),
            keep: match c.get("keep") {
                Some(Value::Expr(e)) => self.expr(e),
                _ => Expr::Const {
                    value: Val::Bool(true),
                },
            },
        });
        let dedup = s
            .dedup_against(r)
            .into_iter()
            .map(|(dataset, split)| (self.dataset(dataset), split))
            .collect();
        if let Some(d) = self.plan.datasets.get_mut(&name) {
            d.curate = curate;
            d.dedup = dedup;
        }
        name
    }

    fn stage(&mut self, r: DeclRef) {
        if !self.staged.insert(r.0) {
            return;
        }
        let decl = self.decl(r);
        let s = &decl.settings;
        let after = s.reference("after");
        if let Some(prev) = after {
            self.stage(prev);
        }
        let policy = s
            .reference("policy")
            .map(|m| self.model(m))
            .unwrap_or_default();
        let reference = s.reference("reference").map(|m| self.model(m));
        let data = self.split_ref(s.get("data")).unwrap_or(SplitRef {
            dataset: String::new(),
            split: None,
        });
        let eval_data = self.split_ref(s.get("eval_data"));
        let rollout = s.reference("rollout").map(|x| self.rollout(x));
        let reflection = s.reference("reflection").map(|x| self.reflection(x));
        let reward = s.reference("reward").map(|x| self.rubric(x));
        // Completions per prompt, for `batch = N completions`: the rollout's
        // `group`, or the runtime's default rollout's (4) without one.
        let group = rollout
            .as_ref()
            .and_then(|r| self.plan.rollouts.get(r))
            .map_or(4, |r| r.group);
        let algorithm = match (s.block("grpo"), s.block("sft")) {
            (Some(g), _) => Algorithm::Grpo(Box::new(self.grpo(g, group))),
            (None, sft) => {
                let empty = Settings::default();
                let f = sft.unwrap_or(&empty);
                Algorithm::Sft(SftSpec {
                    lr: num(f, "lr", 1e-4),
                    batch: count(f, "batch", 8.0).max(1),
                    epochs: count(f, "epochs", 1.0).max(1),
                    max_tokens: f.number("max_tokens").map(|n| n as usize),
                    field: text(f, "field", "response"),
                    weight_decay: num(f, "weight_decay", 0.0),
                    adam: adam(f),
                    max_grad_norm: num(f, "max_grad_norm", 1.0),
                    warmup: num(f, "warmup", 0.0) as u64,
                    schedule: text(f, "schedule", "constant"),
                })
            }
        };
        let ck = s.block("checkpoint");
        self.plan.stages.push(StageSpec {
            name: decl.qualified.clone(),
            policy,
            after: after.map(|a| self.qualified(a)),
            reference,
            data,
            eval_data,
            rollout,
            reflection,
            reward,
            steps: s.number("steps").map(|n| n as u64),
            seed: num(s, "seed", 0.0) as u64,
            checkpoint_every: ck.map_or(50.0, |c| num(c, "every", 50.0)).max(1.0) as u64,
            checkpoint_keep: ck.map_or(3.0, |c| num(c, "keep", 3.0)).max(1.0) as usize,
            freeze_vision: matches!(s.get("freeze_vision"), Some(Value::Bool(true))),
            algorithm,
        });
    }

    /// The GRPO settings of a stage whose rollout samples `group`
    /// completions per prompt.
    fn grpo(&mut self, g: &Settings, group: usize) -> GrpoSpec {
        let (clip_low, clip_high) = match g.get("clip") {
            Some(Value::Range { low, high }) => (*low, *high),
            Some(Value::Number(n)) => (*n, *n),
            _ => (0.2, 0.2),
        };
        let kl = g.block("kl");
        let dynamic_sampling = g.block("dynamic_sampling").and_then(|d| {
            let (rubric, criterion) = match d.get("on") {
                Some(Value::Criterion { rubric, criterion }) => (*rubric, criterion.clone()),
                _ => return None,
            };
            Some(DynamicSamplingSpec {
                rubric: self.rubric(rubric),
                criterion,
                band: match d.get("band") {
                    Some(Value::Range { low, high }) => Some((*low, *high)),
                    _ => None,
                },
                max_resample: count(d, "max_resample", 3.0),
            })
        });
        GrpoSpec {
            lr: num(g, "lr", 1e-6),
            // `batch = N completions` is N / group prompts (E0305 checks
            // that it divides).
            batch_prompts: match g.get("batch") {
                Some(Value::Quantity {
                    value,
                    unit: Unit::Completions,
                }) => (value / group.max(1) as f64).floor().max(1.0) as usize,
                _ => count(g, "batch", 1.0).max(1),
            },
            micro_batch: g.number("micro_batch").map(|n| n.max(1.0) as usize),
            iterations: count(g, "iterations", 1.0).max(1),
            clip_low,
            clip_high,
            dual_clip: g.number("dual_clip"),
            advantage: text(g, "advantage", "group_std"),
            eps: num(g, "eps", 1e-6),
            multi_objective: text(g, "multi_objective", "sum_then_normalize"),
            loss: text(g, "loss", "token_mean"),
            importance: text(g, "importance", "token"),
            mask_truncated: matches!(g.get("mask_truncated"), Some(Value::Bool(true))),
            entropy_coef: num(g, "entropy_coef", 0.0),
            max_grad_norm: num(g, "max_grad_norm", 1.0),
            weight_decay: num(g, "weight_decay", 0.01),
            adam: adam(g),
            warmup: num(g, "warmup", 0.0) as u64,
            schedule: text(g, "schedule", "constant"),
            kl: KlSpec {
                // Unwritten: k1 in the reward (its value is the penalty),
                // k3 in the loss (its gradient regularises).
                estimator: kl.map_or("k3".into(), |k| {
                    let in_reward = k.text("placement") == Some("reward");
                    text(k, "estimator", if in_reward { "k1" } else { "k3" })
                }),
                placement: kl.map_or("loss".into(), |k| text(k, "placement", "loss")),
                beta: kl.map_or(0.0, |k| num(k, "beta", 0.0)),
            },
            dynamic_sampling,
            overlong: g.block("overlong").map(|o| OverlongSpec {
                max: count(o, "max", 1.0).max(1),
                cache: count(o, "cache", 1.0).max(1),
                factor: num(o, "factor", 1.0),
            }),
            cost: g.block("cost").and_then(|c| {
                let lambda = c.block("lambda");
                let lambda_num = |key, default| lambda.map_or(default, |l| num(l, key, default));
                Some(CostSpec {
                    criterion: c.text("criterion")?.to_string(),
                    threshold: c.number("threshold")?,
                    lambda_init: lambda_num("init", 1.0),
                    lambda_lr: lambda_num("lr", 0.1),
                    lambda_max: lambda_num("max", 5.0),
                    window: lambda.map_or(128, |l| count(l, "window", 128.0)).max(1),
                    delay: lambda_num("delay", 0.0) as u64,
                })
            }),
        }
    }

    fn eval(&mut self, r: DeclRef) {
        let decl = self.decl(r);
        let s = &decl.settings;
        let model = s
            .reference("model")
            .map(|m| self.model(m))
            .unwrap_or_default();
        let data = self.split_ref(s.get("data")).unwrap_or(SplitRef {
            dataset: String::new(),
            split: None,
        });
        let rubric = s
            .reference("rubric")
            .map(|x| self.rubric(x))
            .unwrap_or_default();
        let rollout = s.reference("rollout").map(|x| self.rollout(x));
        self.plan.evals.push(EvalSpec {
            name: decl.qualified.clone(),
            model,
            data,
            rubric,
            rollout,
        });
    }

    /// A scorer call: intrinsics by their plain name with every default
    /// filled in; user scorers lowered once into `functions`.
    fn call(&mut self, func: &str, args: &[TExpr], named: &BTreeMap<String, TExpr>) -> Expr {
        let target = self
            .p
            .decls
            .iter()
            .position(|d| d.kind == DeclKind::Scorer && d.qualified == func)
            .map(DeclRef);
        let mut named_out: BTreeMap<String, Expr> = named
            .iter()
            .map(|(k, v)| (k.clone(), self.expr(v)))
            .collect();
        let args_out: Vec<Expr> = args.iter().map(|a| self.expr(a)).collect();
        let Some(target) = target else {
            return Expr::Call {
                func: func.to_string(),
                args: args_out,
                named: named_out,
            };
        };
        let decl = self.decl(target);
        // Positional arguments bind to parameters in order; defaults fill the rest.
        for (i, param) in decl.params.iter().enumerate() {
            if i < args_out.len() || named_out.contains_key(&param.name) {
                continue;
            }
            if let Some(default) = param.default.as_ref().and_then(value_to_val) {
                named_out.insert(param.name.clone(), Expr::Const { value: default });
            }
        }
        // A built-in scorer reads its arguments by name: positional ones
        // become named (`label_match("kind")` is `label_match(field = "kind")`).
        let mut args_out = args_out;
        if matches!(decl.value, Some(Value::Intrinsic)) {
            for (param, arg) in decl.params.iter().zip(std::mem::take(&mut args_out)) {
                named_out.insert(param.name.clone(), arg);
            }
        }
        let plain = match &decl.value {
            Some(Value::Intrinsic) => decl.name.clone(),
            Some(Value::Expr(body)) => {
                if !self.plan.functions.contains_key(&decl.qualified) {
                    let body = self.expr(body);
                    let params = decl
                        .params
                        .iter()
                        .map(|p| (p.name.clone(), p.default.as_ref().and_then(value_to_val)))
                        .collect();
                    self.plan
                        .functions
                        .insert(decl.qualified.clone(), Function { params, body });
                }
                decl.qualified.clone()
            }
            _ => decl.name.clone(),
        };
        Expr::Call {
            func: plain,
            args: args_out,
            named: named_out,
        }
    }

    fn expr(&mut self, e: &TExpr) -> Expr {
        match &e.kind {
            TKind::Const { value } => Expr::Const {
                value: match value {
                    Const::Number(n) => Val::Num(*n),
                    Const::Bool(b) => Val::Bool(*b),
                    Const::Str(s) => Val::Str(s.clone()),
                    Const::Range(low, high) => Val::Range {
                        low: *low,
                        high: *high,
                    },
                },
            },
            TKind::Var { name } => Expr::Var { name: name.clone() },
            TKind::Criterion { rubric, criterion } => Expr::Criterion {
                rubric: self.rubric(*rubric),
                criterion: criterion.clone(),
            },
            TKind::Field { base, field } => Expr::Field {
                base: Box::new(self.expr(base)),
                field: field.clone(),
            },
            TKind::Call { func, args, named } => self.call(func, args, named),
            TKind::Unary { op, operand } => Expr::Unary {
                op: match op {
                    UnaryOp::Neg => Unary::Neg,
                    UnaryOp::Not => Unary::Not,
                },
                operand: Box::new(self.expr(operand)),
            },
            TKind::Binary { op, lhs, rhs } => Expr::Binary {
                op: binary(*op),
                lhs: Box::new(self.expr(lhs)),
                rhs: Box::new(self.expr(rhs)),
            },
            TKind::If {
                cond,
                then,
                otherwise,
            } => Expr::If {
                cond: Box::new(self.expr(cond)),
                then: Box::new(self.expr(then)),
                otherwise: Box::new(self.expr(otherwise)),
            },
            TKind::List { items } => Expr::List {
                items: items.iter().map(|i| self.expr(i)).collect(),
            },
        }
    }
}

fn binary(op: BinaryOp) -> Binary {
    match op {
        BinaryOp::Or => Binary::Or,
        BinaryOp::And => Binary::And,
        BinaryOp::Eq => Binary::Eq,
        BinaryOp::Ne => Binary::Ne,
        BinaryOp::Lt => Binary::Lt,
        BinaryOp::Le => Binary::Le,
        BinaryOp::Gt => Binary::Gt,
        BinaryOp::Ge => Binary::Ge,
        BinaryOp::In => Binary::In,
        BinaryOp::NotIn => Binary::NotIn,
        BinaryOp::Range => Binary::Range,
        BinaryOp::Add => Binary::Add,
        BinaryOp::Sub => Binary::Sub,
        BinaryOp::Mul => Binary::Mul,
        BinaryOp::Div => Binary::Div,
        BinaryOp::Rem => Binary::Rem,
    }
}

fn value_to_val(v: &Value) -> Option<Val> {
    Some(match v {
        Value::Number(n) => Val::Num(*n),
        Value::Quantity { value, .. } => Val::Num(*value),
        Value::Bool(b) => Val::Bool(*b),
        Value::Str(s) | Value::Enum(s) => Val::Str(s.clone()),
        Value::Range { low, high } => Val::Range {
            low: *low,
            high: *high,
        },
        Value::List(items) => Val::List(items.iter().filter_map(value_to_val).collect()),
        _ => return None,
    })
}
