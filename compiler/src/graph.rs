//! Lowering: the resolved program → the dataflow graph ([`safer_ir::Graph`]).
//!
//! What is lowered: the `train` and `eval` declarations of the entry module
//! and everything they reach. A file without stages (a rubric library) lowers
//! its rubrics and their judges, so that every shipped file has a graph.
//! Each GRPO stage becomes an explicit step loop
//! (`batch → generate → score → reflect → advantage → update`, with
//! `ref_logprob`, `checkpoint` and `metrics`), closed by loop-back edges from
//! `update` to the nodes that use the current policy.

use crate::diagnostic::{Code, Diagnostic};
use crate::semantic::display;
use crate::semantic::hir::{DeclRef, Program, Setting, Settings, Value};
use crate::span::Span;
use crate::syntax::ast::DeclKind;
use petgraph::stable_graph::NodeIndex;
use safer_ir::{port, Graph, GraphError, Node, Op, PortType as T};
use std::collections::{BTreeMap, HashMap};

/// Lowers a program; validation problems come back as diagnostics.
///
/// # Errors
/// E0400 for cycles outside step loops (stages ordered in a cycle by
/// `after`), E0401 for dangling inputs.
pub fn lower(program: &Program) -> Result<Graph, Vec<Diagnostic>> {
    if !program.is_hashed() {
        return lower(&program.clone().hashed());
    }
    let mut l = Lowerer {
        program,
        graph: Graph::new(program.hash.clone()),
        done: HashMap::new(),
        run_order: run_order(program),
    };
    let stages: Vec<DeclRef> = program
        .entry_decls()
        .filter(|(_, d)| matches!(d.kind, DeclKind::Train | DeclKind::Eval))
        .map(|(r, _)| r)
        .collect();
    if stages.is_empty() {
        let rubrics: Vec<DeclRef> = program
            .entry_decls()
            .filter(|(_, d)| d.kind == DeclKind::Rubric)
            .map(|(r, _)| r)
            .collect();
        for r in rubrics {
            l.rubric(r);
        }
    }
    for stage in &stages {
        match program.decl(*stage).kind {
            DeclKind::Train => {
                l.train(*stage);
            }
            _ => l.eval(*stage),
        }
    }
    let errors = safer_ir::validate(&l.graph);
    if errors.is_empty() {
        Ok(l.graph)
    } else {
        Err(errors.into_iter().map(|e| diagnostic(program, e)).collect())
    }
}

/// The entry file's training stages in the order `saferc run` trains them:
/// as declared, each after the stage its `after` names.
fn run_order(program: &Program) -> Vec<DeclRef> {
    fn visit(program: &Program, r: DeclRef, order: &mut Vec<DeclRef>, seen: &mut Vec<DeclRef>) {
        if seen.contains(&r) {
            return;
        }
        seen.push(r);
        if let Some(prev) = program.decl(r).settings.reference("after") {
            visit(program, prev, order, seen);
        }
        order.push(r);
    }
    let (mut order, mut seen) = (Vec::new(), Vec::new());
    for (r, d) in program.entry_decls() {
        if d.kind == DeclKind::Train {
            visit(program, r, &mut order, &mut seen);
        }
    }
    order
}

fn diagnostic(program: &Program, e: GraphError) -> Diagnostic {
    let span_of = |node: &str| -> Span {
        let name = node.split('.').nth(1).unwrap_or("");
        program
            .entry_decls()
            .find(|(_, d)| d.name == name)
            .map_or(Span::default(), |(_, d)| d.span)
    };
    match e {
        GraphError::Cycle(path) => {
            let first = path.first().cloned().unwrap_or_default();
            let stages: Vec<String> = path
                .iter()
                .filter_map(|n| n.split('.').nth(1).map(str::to_string))
                .fold(Vec::new(), |mut acc, s| {
                    if acc.last() != Some(&s) {
                        acc.push(s);
                    }
                    acc
                });
            // A stage after itself: `a → a`.
            let stages = match stages.as_slice() {
                [one] => vec![one.clone(), one.clone()],
                _ => stages,
            };
            Diagnostic::error(Code::E0400, "training stages are ordered in a cycle")
                .with_primary(span_of(&first), "this stage is part of the cycle")
                .with_note(format!("the cycle: {}", stages.join(" → ")))
                .with_help("remove one `after` so that the stages have a first one")
        }
        GraphError::Dangling { node, port } => Diagnostic::error(
            Code::E0401,
            format!("input `{port}` of `{node}` is not connected"),
        )
        .with_primary(span_of(&node), "declared here")
        .with_help("set the setting that feeds it"),
        GraphError::BadEdge(what) => Diagnostic::error(
            Code::E0401,
            format!("internal compiler error: invalid graph edge ({what})"),
        )
        .with_help("please report this at https://github.com/saferc/saferc/issues"),
    }
}

struct Lowerer<'p> {
    program: &'p Program,
    graph: Graph,
    /// Nodes already made for declarations (`model.policy`, ...).
    done: HashMap<String, NodeIndex>,
    /// The training stages in the order they run ([`run_order`]).
    run_order: Vec<DeclRef>,
}

fn node(name: String, op: Op, stage_loop: Option<&str>) -> Node {
    Node {
        name,
        op,
        stage_loop: stage_loop.map(str::to_string),
        params: BTreeMap::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
    }
}

impl<'p> Lowerer<'p> {
    /// Settings as graph parameters, each in the surface syntax.
    fn params(&self, settings: &Settings) -> BTreeMap<String, serde_json::Value> {
        settings
            .0
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Setting::Value(v) => display::value(v, self.program),
                    Setting::Block(b) => display::settings(b, self.program),
                };
                (k.clone(), serde_json::Value::String(text))
            })
            .collect()
    }

    fn value_params(
        &self,
        pairs: &[(&str, Option<&Setting>)],
    ) -> BTreeMap<String, serde_json::Value> {
        let mut s = Settings::default();
        for (k, v) in pairs {
            if let Some(v) = v {
                s.0.insert((*k).to_string(), (*v).clone());
            }
        }
        self.params(&s)
    }

    fn add(&mut self, n: Node) -> NodeIndex {
        let name = n.name.clone();
        let i = self.graph.add(n);
        self.done.insert(name, i);
        i
    }

    fn name(&self, r: DeclRef) -> String {
        self.program.decl(r).qualified.clone()
    }

    fn model(&mut self, r: DeclRef) -> NodeIndex {
        let name = format!("model.{}", self.name(r));
        if let Some(&i) = self.done.get(&name) {
            return i;
        }
        let mut n = node(name, Op::LoadModel, None);
        n.params = self.params(&self.program.decl(r).settings);
        n.outputs.push(port("model", T::Model));
        self.add(n)
    }

    fn judge(&mut self, r: DeclRef) -> NodeIndex {
        let name = format!("judge.{}", self.name(r));
        if let Some(&i) = self.done.get(&name) {
            return i;
        }
        let decl = self.program.decl(r);
        let mut n = node(name, Op::Judge, None);
        n.params = self.params(&decl.settings);
        // A password in the endpoint URL is not printed with the graph.
        if let Some(url) = decl.settings.text("endpoint") {
            let masked = safer_ir::masked_url(url);
            if let Some(serde_json::Value::String(shown)) = n.params.get_mut("endpoint") {
                *shown = shown.replace(url, &masked);
            }
        }
        let model = decl.settings.reference("model");
        if model.is_some() {
            n.inputs.push(port("model", T::Model));
        }
        n.outputs.push(port("judge", T::Judge));
        let i = self.add(n);
        if let Some(m) = model {
            let mi = self.model(m);
            self.graph.connect(mi, "model", i, "model");
        }
        i
    }

    fn rubric(&mut self, r: DeclRef) -> NodeIndex {
        let name = format!("rubric.{}", self.name(r));
        if let Some(&i) = self.done.get(&name) {
            return i;
        }
        let decl = self.program.decl(r);
        self.graph
            .rubric_hashes
            .insert(decl.qualified.clone(), decl.hash.clone());
        let mut n = node(name, Op::Score, None);
        if let Some(rubric) = &decl.rubric {
            let criteria: Vec<String> = rubric
                .criteria
                .iter()
                .map(|c| {
                    format!(
                        "{} x {}",
                        c.name,
                        crate::semantic::schema::format_number(c.weight)
                    )
                })
                .collect();
            n.params
                .insert("criteria".into(), serde_json::json!(criteria.join(", ")));
            let penalties: Vec<String> = rubric
                .penalties
                .iter()
                .map(|p| match &p.when {
                    Some(w) => format!(
                        "{} = {} when {}",
                        p.name,
                        display::expr(&p.value, self.program),
                        display::expr(w, self.program)
                    ),
                    None => format!("{} = {}", p.name, display::expr(&p.value, self.program)),
                })
                .collect();
            if !penalties.is_empty() {
                n.params
                    .insert("penalties".into(), serde_json::json!(penalties.join("; ")));
            }
            let formats: Vec<String> = rubric
                .formats
                .iter()
                .map(|f| {
                    format!(
                        "{} x {}",
                        f.format,
                        crate::semantic::schema::format_number(f.weight)
                    )
                })
                .collect();
            if !formats.is_empty() {
                n.params
                    .insert("format".into(), serde_json::json!(formats.join(", ")));
            }
            n.params.insert(
                "total".into(),
                serde_json::json!(display::expr(&rubric.total, self.program)),
            );
        }
        let judge = decl.rubric.as_ref().and_then(|r| r.judge);
        if judge.is_some() {
            n.inputs.push(port("judge", T::Judge));
        }
        n.outputs.push(port("scorer", T::Scorer));
        let i = self.add(n);
        if let Some(j) = judge {
            let ji = self.judge(j);
            self.graph.connect(ji, "judge", i, "judge");
        }
        i
    }

    /// The node and port producing a split (or the whole dataset).
    fn split(&mut self, r: DeclRef, split: Option<&str>) -> (NodeIndex, String) {
        let d = self.dataset(r);
        (d, split.unwrap_or("all").to_string())
    }

    fn dataset(&mut self, r: DeclRef) -> NodeIndex {
        let base = format!("dataset.{}", self.name(r));
        let split_name = format!("{base}.split");
        if let Some(&i) = self.done.get(&split_name) {
            return i;
        }
        let decl = self.program.decl(r);
        let s = &decl.settings;
        let mut src = node(format!("{base}.source"), Op::Source, None);
        src.params = self.value_params(&[
            ("source", s.0.get("source")),
            ("images", s.0.get("images")),
            ("on_bad_row", s.0.get("on_bad_row")),
            ("limit", s.0.get("limit")),
        ]);
        src.outputs.push(port("rows", T::Rows));
        let mut prev = self.add(src);
        if !decl.filters.is_empty() {
            let mut f = node(format!("{base}.filter"), Op::Filter, None);
            let conds: Vec<String> = decl
                .filters
                .iter()
                .map(|f| display::expr(f, self.program))
                .collect();
            f.params
                .insert("conditions".into(), serde_json::json!(conds.join(" and ")));
            f.inputs.push(port("rows", T::Rows));
            f.outputs.push(port("rows", T::Rows));
            let fi = self.add(f);
            self.graph.connect(prev, "rows", fi, "rows");
            prev = fi;
        }
        // `dedup = [ev.test, ...]`: the rows of those splits are an input,
        // so a dataset comes after those it de-duplicates against.
        // Each split once (`dedup = [b.test, b.test]` reads it once).
        let mut against: Vec<(DeclRef, Option<String>)> = Vec::new();
        for pair in s.dedup_against(r) {
            if !against.contains(&pair) {
                against.push(pair);
            }
        }
        if !against.is_empty() {
            let mut d = node(format!("{base}.dedup"), Op::Dedup, None);
            let names: Vec<String> = against
                .iter()
                .map(|(dataset, split)| match split {
                    Some(split) => format!("{}.{split}", self.name(*dataset)),
                    None => self.name(*dataset),
                })
                .collect();
            d.params
                .insert("against".into(), serde_json::json!(names.join(", ")));
            // Ports `against.1`, `against.2`, ... in the order of `against`
            // (a split's own name could be `rows`, the node's other input).
            let ports: Vec<String> = (1..=names.len()).map(|k| format!("against.{k}")).collect();
            d.inputs.push(port("rows", T::Rows));
            for name in &ports {
                d.inputs.push(port(name, T::Rows));
            }
            d.outputs.push(port("rows", T::Rows));
            let di = self.add(d);
            self.graph.connect(prev, "rows", di, "rows");
            for ((dataset, split), name) in against.iter().zip(&ports) {
                let (si, p) = self.split(*dataset, split.as_deref());
                self.graph.connect(si, &p, di, name);
            }
            prev = di;
        }
        if let Some(curate) = s.block("curate") {
            let mut c = node(format!("{base}.curate"), Op::Curate, None);
            c.params = self.value_params(&[
                ("rollouts", curate.0.get("rollouts")),
                ("rollout", curate.0.get("rollout")),
                ("keep", curate.0.get("keep")),
            ]);
            c.inputs.push(port("rows", T::Rows));
            c.inputs.push(port("policy", T::Model));
            c.inputs.push(port("scorer", T::Scorer));
            c.outputs.push(port("rows", T::Rows));
            let ci = self.add(c);
            self.graph.connect(prev, "rows", ci, "rows");
            if let Some(p) = curate.reference("policy") {
                let pi = self.model(p);
                self.graph.connect(pi, "model", ci, "policy");
            }
            if let Some(rb) = curate.reference("rubric") {
                let ri = self.rubric(rb);
                self.graph.connect(ri, "scorer", ci, "scorer");
            }
            prev = ci;
        }
        if s.get("balance").is_some() {
            let mut b = node(format!("{base}.balance"), Op::Balance, None);
            b.params = self.value_params(&[("by", s.0.get("balance"))]);
            b.inputs.push(port("rows", T::Rows));
            b.outputs.push(port("rows", T::Rows));
            let bi = self.add(b);
            self.graph.connect(prev, "rows", bi, "rows");
            prev = bi;
        }
        let mut sp = node(split_name, Op::Split, None);
        sp.inputs.push(port("rows", T::Rows));
        let splits: Vec<String> = s
            .block("split")
            .map(|b| b.0.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(b) = s.block("split") {
            sp.params = self.params(b);
        }
        sp.params.insert(
            "seed".into(),
            serde_json::json!(crate::semantic::schema::format_number(
                s.number("seed").unwrap_or(0.0)
            )),
        );
        sp.outputs.push(port("all", T::Rows));
        for name in &splits {
            sp.outputs.push(port(name, T::Rows));
        }
        let si = self.add(sp);
        self.graph.connect(prev, "rows", si, "rows");
        si
    }

    /// Where a stage's starting policy comes from: the model, or the
    /// previous stage's update.
    fn policy_source(&mut self, stage: DeclRef) -> Option<(NodeIndex, &'static str)> {
        let s = &self.program.decl(stage).settings;
        if let Some(prev) = s.reference("after") {
            let name = format!("train.{}.update", self.name(prev));
            let i = match self.done.get(&name) {
                Some(&i) => i,
                None => self.train(prev)?,
            };
            return Some((i, "policy"));
        }
        let p = s.reference("policy")?;
        // Without `after`: the result of the last stage before it that
        // trained the same model, else the model's folder.
        let at = self.run_order.iter().position(|&r| r == stage)?;
        let previous = self.last_to_train(p, at);
        Some(self.latest_weights(p, previous))
    }

    /// The last of the first `before` stages in run order that trains
    /// model `p`.
    fn last_to_train(&self, p: DeclRef, before: usize) -> Option<DeclRef> {
        self.run_order[..before]
            .iter()
            .rev()
            .copied()
            .find(|&r| self.program.decl(r).settings.reference("policy") == Some(p))
    }

    /// Model `p`'s weights as `trained_by` (a stage that trained it) left
    /// them, or its folder's.
    fn latest_weights(
        &mut self,
        p: DeclRef,
        trained_by: Option<DeclRef>,
    ) -> (NodeIndex, &'static str) {
        match trained_by.and_then(|r| self.train(r)) {
            Some(update) => (update, "policy"),
            None => (self.model(p), "model"),
        }
    }

    fn train(&mut self, r: DeclRef) -> Option<NodeIndex> {
        let stage = self.name(r);
        let update_name = format!("train.{stage}.update");
        if let Some(&i) = self.done.get(&update_name) {
            return Some(i);
        }
        let s = self.program.decl(r).settings.clone();
        let lp = Some(stage.as_str());
        // Reserve the update node first so that `after` cycles resolve.
        let mut update = node(update_name, Op::Update, lp);
        update.inputs.push(port("policy", T::Model));
        update.outputs.push(port("policy", T::Model));
        update.outputs.push(port("metrics", T::Metrics));
        let grpo = s.block("grpo").cloned();
        match &grpo {
            Some(g) => {
                update.params = self.params(g);
                update
                    .params
                    .insert("algorithm".into(), serde_json::json!("grpo"));
                update.inputs.push(port("completions", T::Completions));
                update.inputs.push(port("advantages", T::Advantages));
            }
            None => {
                if let Some(sft) = s.block("sft") {
                    update.params = self.params(sft);
                }
                update
                    .params
                    .insert("algorithm".into(), serde_json::json!("sft"));
                update.inputs.push(port("prompts", T::Prompts));
            }
        }
        // What the update trains: the whole policy, or its language model
        // alone.
        update
            .params
            .extend(self.value_params(&[("freeze_vision", s.0.get("freeze_vision"))]));
        let ui = self.add(update);
        let (policy, policy_port) = self.policy_source(r)?;
        self.graph.connect(policy, policy_port, ui, "policy");
        self.graph.loop_back(ui, "policy", ui, "policy");

        let mut batch = node(format!("train.{stage}.batch"), Op::Batch, lp);
        batch.params = self.value_params(&[("steps", s.0.get("steps")), ("seed", s.0.get("seed"))]);
        batch.inputs.push(port("rows", T::Rows));
        batch.outputs.push(port("prompts", T::Prompts));
        let bi = self.add(batch);
        if let Some(Value::Split { dataset, split }) = s.get("data") {
            let (di, p) = self.split(*dataset, split.as_deref());
            self.graph.connect(di, &p, bi, "rows");
        }

        if let Some(g) = &grpo {
            let prefix = format!("train.{stage}");
            let gi = self.generate(
                &prefix,
                lp,
                s.reference("rollout"),
                bi,
                (policy, policy_port),
            );
            self.graph.loop_back(ui, "policy", gi, "policy");
            let (si, scorer) = self.score(&prefix, lp, gi, s.reference("reward"));
            let (mut comp, mut comp_port, mut scores) = (gi, "completions", si);
            if let Some(refl) = s.reference("reflection") {
                let mut rf = node(format!("train.{stage}.reflect"), Op::Reflect, lp);
                rf.params = self.params(&self.program.decl(refl).settings);
                rf.inputs.push(port("completions", T::Completions));
                rf.inputs.push(port("scores", T::Scores));
                rf.inputs.push(port("policy", T::Model));
                rf.inputs.push(port("scorer", T::Scorer));
                rf.outputs.push(port("completions", T::Completions));
                rf.outputs.push(port("scores", T::Scores));
                let fi = self.add(rf);
                self.graph.connect(gi, "completions", fi, "completions");
                self.graph.connect(si, "scores", fi, "scores");
                self.graph.connect(policy, policy_port, fi, "policy");
                self.graph.loop_back(ui, "policy", fi, "policy");
                if let Some(ri) = scorer {
                    self.graph.connect(ri, "scorer", fi, "scorer");
                }
                comp = fi;
                comp_port = "completions";
                scores = fi;
            }
            let kl_in_reward = g.block("kl").and_then(|k| k.text("placement")) == Some("reward");
            let mut adv = node(format!("train.{stage}.advantage"), Op::Advantage, lp);
            adv.params = self.value_params(&[
                ("advantage", g.0.get("advantage")),
                ("eps", g.0.get("eps")),
                ("multi_objective", g.0.get("multi_objective")),
                ("dynamic_sampling", g.0.get("dynamic_sampling")),
                ("cost", g.0.get("cost")),
                ("kl", g.0.get("kl").filter(|_| kl_in_reward)),
            ]);
            adv.inputs.push(port("scores", T::Scores));
            adv.outputs.push(port("advantages", T::Advantages));
            let ai = self.add(adv);
            self.graph.connect(scores, "scores", ai, "scores");
            self.graph.connect(comp, comp_port, ui, "completions");
            self.graph.connect(ai, "advantages", ui, "advantages");
            let beta = g.block("kl").and_then(|k| k.number("beta")).unwrap_or(0.0);
            if let (true, Some(reference)) = (beta > 0.0, s.reference("reference")) {
                let mut fr = node(format!("train.{stage}.reference"), Op::FreezeCopy, None);
                fr.inputs.push(port("model", T::Model));
                fr.outputs.push(port("model", T::Model));
                let fri = self.add(fr);
                let src = if Some(reference) == s.reference("policy") {
                    (policy, policy_port)
                } else {
                    (self.model(reference), "model")
                };
                self.graph.connect(src.0, src.1, fri, "model");
                let mut rl = node(format!("train.{stage}.ref_logprob"), Op::RefLogprob, lp);
                rl.inputs.push(port("completions", T::Completions));
                rl.inputs.push(port("reference", T::Model));
                rl.outputs.push(port("logprobs", T::LogProbs));
                let rli = self.add(rl);
                self.graph.connect(comp, comp_port, rli, "completions");
                self.graph.connect(fri, "model", rli, "reference");
                // `placement = reward` subtracts the KL from the reward
                // before advantages; `loss` adds it to the update's loss.
                // In the reward the policy's log-probs of the completions are
                // scored beside the reference's.
                let target = if kl_in_reward { ai } else { ui };
                if let Some(t) = self.graph.graph.node_weight_mut(target) {
                    t.inputs.push(port("ref_logprobs", T::LogProbs));
                    if kl_in_reward {
                        t.inputs.push(port("policy", T::Model));
                    }
                }
                self.graph.connect(rli, "logprobs", target, "ref_logprobs");
                if kl_in_reward {
                    self.graph.connect(policy, policy_port, ai, "policy");
                    self.graph.loop_back(ui, "policy", ai, "policy");
                }
            }
        } else {
            self.graph.connect(bi, "prompts", ui, "prompts");
        }

        let mut ck = node(format!("train.{stage}.checkpoint"), Op::Checkpoint, lp);
        if let Some(c) = s.block("checkpoint") {
            ck.params = self.params(c);
        }
        ck.inputs.push(port("policy", T::Model));
        let ci = self.add(ck);
        self.graph.connect(ui, "policy", ci, "policy");
        let mut mt = node(format!("train.{stage}.metrics"), Op::Metrics, lp);
        mt.inputs.push(port("metrics", T::Metrics));
        let mi = self.add(mt);
        self.graph.connect(ui, "metrics", mi, "metrics");
        // The report scores the held-out split (`eval_data`) with the
        // stage's reward before and after training.
        let mut rp = node(format!("train.{stage}.report"), Op::Report, None);
        rp.inputs.push(port("policy", T::Model));
        let held_out = match (s.get("eval_data"), s.reference("reward")) {
            (Some(Value::Split { dataset, split }), Some(reward)) => {
                rp.inputs.push(port("held_out", T::Rows));
                rp.inputs.push(port("scorer", T::Scorer));
                Some((*dataset, split.clone(), reward))
            }
            _ => None,
        };
        let ri = self.add(rp);
        self.graph.connect(ui, "policy", ri, "policy");
        if let Some((dataset, split, reward)) = held_out {
            let (di, p) = self.split(dataset, split.as_deref());
            self.graph.connect(di, &p, ri, "held_out");
            let rubric = self.rubric(reward);
            self.graph.connect(rubric, "scorer", ri, "scorer");
        }
        Some(ui)
    }

    /// `{prefix}.generate`: prompts from `batch`, the policy from `policy`.
    fn generate(
        &mut self,
        prefix: &str,
        stage_loop: Option<&str>,
        rollout: Option<DeclRef>,
        batch: NodeIndex,
        policy: (NodeIndex, &str),
    ) -> NodeIndex {
        let mut gen = node(format!("{prefix}.generate"), Op::Generate, stage_loop);
        if let Some(ro) = rollout {
            gen.params = self.params(&self.program.decl(ro).settings);
        }
        gen.inputs.push(port("prompts", T::Prompts));
        gen.inputs.push(port("policy", T::Model));
        gen.outputs.push(port("completions", T::Completions));
        let gi = self.add(gen);
        self.graph.connect(batch, "prompts", gi, "prompts");
        self.graph.connect(policy.0, policy.1, gi, "policy");
        gi
    }

    /// `{prefix}.score`: the completions of `generate` scored by `rubric`;
    /// returns the node and the rubric's node.
    fn score(
        &mut self,
        prefix: &str,
        stage_loop: Option<&str>,
        generate: NodeIndex,
        rubric: Option<DeclRef>,
    ) -> (NodeIndex, Option<NodeIndex>) {
        let mut score = node(format!("{prefix}.score"), Op::Score, stage_loop);
        score.inputs.push(port("completions", T::Completions));
        score.inputs.push(port("scorer", T::Scorer));
        score.outputs.push(port("scores", T::Scores));
        let si = self.add(score);
        self.graph
            .connect(generate, "completions", si, "completions");
        let scorer = rubric.map(|rb| self.rubric(rb));
        if let Some(ri) = scorer {
            self.graph.connect(ri, "scorer", si, "scorer");
        }
        (si, scorer)
    }

    fn eval(&mut self, r: DeclRef) {
        let name = self.name(r);
        let s = self.program.decl(r).settings.clone();
        let mut batch = node(format!("eval.{name}.batch"), Op::Batch, None);
        batch.inputs.push(port("rows", T::Rows));
        batch.outputs.push(port("prompts", T::Prompts));
        let bi = self.add(batch);
        if let Some(Value::Split { dataset, split }) = s.get("data") {
            let (di, p) = self.split(*dataset, split.as_deref());
            self.graph.connect(di, &p, bi, "rows");
        }
        let prefix = format!("eval.{name}");
        // An evaluation runs after every stage, on the model's latest
        // weights: those of the last stage that trained it.
        let model = s.reference("model").map(|m| {
            let last = self.last_to_train(m, self.run_order.len());
            self.latest_weights(m, last)
        });
        let gi = match model {
            Some(source) => self.generate(&prefix, None, s.reference("rollout"), bi, source),
            None => return,
        };
        // It decodes greedily, one completion per row: of its rollout,
        // only the lengths and stops count.
        if let Some(generate) = self.graph.graph.node_weight_mut(gi) {
            generate
                .params
                .retain(|key, _| matches!(key.as_str(), "max_tokens" | "min_tokens" | "stop"));
            generate.params.insert(
                "decoding".into(),
                serde_json::json!("greedy, one completion per row"),
            );
        }
        let (si, _) = self.score(&prefix, None, gi, s.reference("rubric"));
        let mut rp = node(format!("eval.{name}.report"), Op::Report, None);
        rp.inputs.push(port("scores", T::Scores));
        let ri = self.add(rp);
        self.graph.connect(si, "scores", ri, "scores");
    }
}
