//! Pass 4: rules that involve several settings or declarations.
//!
//! Each rule has its own code and a failing case in
//! `tests/cases/check/errors/`. Messages show the values involved and the
//! smallest fix (the batch arithmetic is printed in full).

use super::hir::{Const, DeclRef, Setting, Settings, TExpr, TKind, Value};
use super::schema::{self, format_number as num};
use super::Analyzer;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast::{self, BinaryOp, DeclBody, DeclKind, StmtKind, UnaryOp};

impl<'a> Analyzer<'a> {
    /// Runs every cross-field rule.
    pub(crate) fn cross_checks(&mut self) {
        for i in 0..self.decls.len() {
            if matches!(self.decls[i].kind, DeclKind::Rubric | DeclKind::Scorer) {
                self.check_patterns(i);
            }
            match self.decls[i].kind {
                DeclKind::Train => self.check_train(i),
                DeclKind::Rubric => {
                    self.check_rubric_weights(i);
                    self.check_rubric_scores_something(i);
                    self.check_penalty_signs(i);
                }
                DeclKind::Reflection => {
                    self.check_reflection_prompt(i);
                    self.check_reflection_when(i);
                }
                DeclKind::Dataset => {
                    self.check_path_kinds(i);
                    self.check_split(i);
                    self.check_curate_box(i);
                    self.check_dedup(i);
                }
                DeclKind::Judge => {
                    self.check_path_kinds(i);
                    self.check_judge(i);
                }
                DeclKind::Rollout => self.check_rollout_lengths(i),
                DeclKind::Model => {
                    self.check_path_kinds(i);
                    self.check_model_folder(i);
                }
                DeclKind::Eval => {
                    let s = self.decls[i].settings.clone();
                    if let Some(model) = s.reference("model") {
                        self.check_context(i, model, &s, true);
                    }
                }
                _ => {}
            }
        }
        self.check_dedup_cycle();
        self.check_datasets_read();
        self.check_declarations_used();
        self.check_one_device();
        self.check_special_tokens();
        self.zero_arguments_to_divisors();
        // After the rest: reported where nothing else is (a file's other
        // errors first, as a compiler's later phases wait for its earlier).
        if !self.diags.iter().any(Diagnostic::is_error) {
            for i in 0..self.decls.len() {
                if self.decls[i].kind == DeclKind::Rubric {
                    self.check_questions_answered(i);
                }
            }
        }
    }

    /// E0325 (warning): a dataset of the entry file that no stage or
    /// evaluation reads, directly or through another's `dedup`: `saferc
    /// run` never reads it, so its rows are never checked either. A file
    /// without stages (a library of declarations) is left alone, and so is
    /// a file with errors (a setting refused would make its dataset look
    /// unread).
    fn check_datasets_read(&mut self) {
        let Some(read) = self.reached_from_entry_stages() else {
            return;
        };
        let unread: Vec<(String, Span)> = self
            .decls
            .iter()
            .zip(&read)
            .filter(|(d, read)| d.module == 0 && d.kind == DeclKind::Dataset && !**read)
            .map(|(d, _)| (d.name.clone(), d.span))
            .collect();
        for (name, span) in unread {
            self.diags.push(
                Diagnostic::warning(Code::E0325, format!("dataset `{name}` is never read"))
                    .with_primary(span, "no stage or evaluation uses it")
                    .with_help(format!(
                        "`saferc run` reads only the datasets its stages and evaluations use (and those they `dedup` against), so this one's rows are never checked: use it (`data = {name}`, `eval_data = {name}`) or remove it"
                    )),
            );
        }
    }

    /// The span of the value of a setting at `path` (`["grpo", "batch"]`),
    /// or of the block, or of the declaration name.
    pub(crate) fn setting_span(&self, decl: usize, path: &[&str]) -> Span {
        let ast = self.info[decl].ast;
        let fallback = ast.name.span;
        let DeclBody::Block(first) = &ast.body else {
            return fallback;
        };
        let mut block = first;
        let mut span = fallback;
        for (i, key) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let mut next = None;
            for stmt in &block.stmts {
                match &stmt.kind {
                    StmtKind::Assign { key: k, value } if k.name == *key && last => {
                        return value.span
                    }
                    StmtKind::Block { key: k, body } if k.name == *key => {
                        span = k.span;
                        next = Some(body);
                    }
                    _ => {}
                }
            }
            match next {
                Some(b) => block = b,
                None => return span,
            }
        }
        span
    }

    /// The value the declaration writes for the setting at `path`.
    fn setting_value(&self, decl: usize, path: &[&str]) -> Option<&ast::Expr> {
        let DeclBody::Block(first) = &self.info[decl].ast.body else {
            return None;
        };
        let (last, blocks) = path.split_last()?;
        let mut block = first;
        for key in blocks {
            block = block.stmts.iter().find_map(|stmt| match &stmt.kind {
                StmtKind::Block { key: k, body } if k.name == *key => Some(body),
                _ => None,
            })?;
        }
        block.stmts.iter().find_map(|stmt| match &stmt.kind {
            StmtKind::Assign { key, value } if key.name == *last => Some(value),
            _ => None,
        })
    }

    /// `d` with the fix that swaps the ends of the range the setting at
    /// `path` writes (`0.28..0.2` → `0.2..0.28`).
    fn with_range_swapped(&self, d: Diagnostic, decl: usize, path: &[&str]) -> Diagnostic {
        match self.setting_value(decl, path) {
            Some(e) => super::exprs::with_ends_swapped(d, e),
            None => d,
        }
    }

    /// Whether the setting at `path` is written in the declaration (not a
    /// default filled in).
    pub(crate) fn written(&self, decl: usize, path: &[&str]) -> bool {
        let DeclBody::Block(first) = &self.info[decl].ast.body else {
            return false;
        };
        let mut block = first;
        for (i, key) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let next = block.stmts.iter().find_map(|stmt| match &stmt.kind {
                StmtKind::Assign { key: k, .. } if k.name == *key && last => Some(None),
                StmtKind::Block { key: k, body } if k.name == *key && !last => Some(Some(body)),
                _ => None,
            });
            match next {
                Some(None) => return true,
                Some(Some(body)) => block = body,
                None => return false,
            }
        }
        false
    }

    /// A warning (E0317) that `path` of declaration `i` changes nothing, and why.
    fn without_effect(&mut self, i: usize, path: &[&str], why: String, help: &str) {
        let key = path.join(".");
        self.diags.push(
            Diagnostic::warning(Code::E0317, format!("`{key}` has no effect here"))
                .with_primary(self.setting_span(i, path), why)
                .with_help(help.to_string()),
        );
    }

    /// E0317: a `schedule` that a warm-up as long as the stage, or one step
    /// shorter, leaves no step to lower the rate in.
    fn check_warmup_against_steps(&mut self, i: usize, s: &Settings) {
        let Some(steps) = s.number("steps") else {
            return;
        };
        for algorithm in ["grpo", "sft"] {
            let Some(block) = s.block(algorithm) else {
                continue;
            };
            let warmup = block.number("warmup").unwrap_or(0.0);
            let schedule = block.text("schedule").unwrap_or("constant");
            // A warm-up the stage never finishes: the rate rises from 0 by
            // `lr / warmup` a step and stops at `(steps - 1) / warmup` of it.
            if warmup >= steps && self.written(i, &[algorithm, "warmup"]) {
                let peak = (steps - 1.0) / warmup * 100.0;
                let steps_of =
                    |n: f64| format!("{} step{}", num(n), if n == 1.0 { "" } else { "s" });
                let at_end = if steps <= 1.0 {
                    "the only step runs at a rate of 0: nothing is trained".to_string()
                } else {
                    format!("the last step runs at {peak:.0}% of `lr`")
                };
                self.diags.push(
                    Diagnostic::warning(
                        Code::E0317,
                        format!("`warmup` ({}) is as long as the stage ({}) or longer: the rate never reaches `lr`", steps_of(warmup), steps_of(steps)),
                    )
                    .with_primary(self.setting_span(i, &[algorithm, "warmup"]), at_end)
                    .with_help("shorten `warmup` (a few percent of `steps` is common) or raise `steps`"),
                );
                continue;
            }
            // The first step after the warm-up runs at the full rate: the
            // decay lowers it from the second on.
            if warmup + 1.0 >= steps
                && schedule != "constant"
                && self.written(i, &[algorithm, "schedule"])
            {
                self.without_effect(
                    i,
                    &[algorithm, "schedule"],
                    format!("`warmup` ({} steps) leaves the stage ({} steps) at most one step after it, which runs at the full rate: the `{schedule}` decay never lowers it", num(warmup), num(steps)),
                    "shorten `warmup` (a few percent of `steps` is common) or raise `steps`",
                );
            }
        }
    }

    /// E0317: `overlong` whose soft zone (`max - cache` tokens on) starts at
    /// or past the rollout's `max_tokens`: no completion is that long.
    fn check_overlong_reach(&mut self, i: usize, s: &Settings, grpo: &Settings) {
        let Some(overlong) = grpo.block("overlong") else {
            return;
        };
        let (Some(max), Some(cache)) = (overlong.number("max"), overlong.number("cache")) else {
            return;
        };
        let Some(rollout) = s.reference("rollout") else {
            return;
        };
        let Some(max_tokens) = self.decls[rollout.0].settings.number("max_tokens") else {
            return;
        };
        let soft = max - cache;
        if max_tokens <= soft {
            let rname = self.decls[rollout.0].name.clone();
            self.without_effect(
                i,
                &["grpo", "overlong"],
                format!("its penalty starts past {} tokens (`max` {} minus `cache` {}), and rollout `{rname}` stops completions at `max_tokens` = {}", num(soft), num(max), num(cache), num(max_tokens)),
                "set `overlong.max` to the rollout's `max_tokens` (DAPO's choice), with `cache` the zone before it that is penalised",
            );
        }
    }

    fn check_train(&mut self, i: usize) {
        let s = self.decls[i].settings.clone();
        let name = self.decls[i].name.clone();
        self.check_warmup_against_steps(i, &s);
        let has_grpo = s.block("grpo").is_some();
        let has_sft = s.block("sft").is_some();
        if has_grpo == has_sft {
            let msg = if has_grpo {
                format!("`train {name}` has both `grpo` and `sft`")
            } else {
                format!("`train {name}` has no algorithm")
            };
            self.diags.push(
                Diagnostic::error(Code::E0319, msg)
                    .with_primary(self.decls[i].span, "one stage, one algorithm")
                    .with_help("write `grpo { ... }` or `sft { ... }`; chain stages with `after = other_stage`"),
            );
        }
        let policy = s.reference("policy");
        self.check_after(i, policy, &s);
        if let Some(policy) = policy {
            let scores_held_out = s.get("eval_data").is_some() && s.get("reward").is_some();
            self.check_context(i, policy, &s, scores_held_out);
            // Another reference model scores the same completions (the KL
            // term): its context must hold them too.
            let kl_beta = s
                .block("grpo")
                .and_then(|g| g.block("kl"))
                .and_then(|kl| kl.number("beta"))
                .unwrap_or(0.0);
            if let Some(reference) = s
                .reference("reference")
                .filter(|r| *r != policy && kl_beta > 0.0)
            {
                self.check_context(i, reference, &s, false);
            }
            let arch = self.decls[policy.0]
                .settings
                .text("arch")
                .unwrap_or("tiny_vlm");
            if safer_ir::plan::arch_reads_text_only(arch)
                && matches!(s.get("freeze_vision"), Some(Value::Bool(true)))
            {
                let model = self.decls[policy.0].name.clone();
                self.without_effect(
                    i,
                    &["freeze_vision"],
                    format!("`{model}` is a `qwen2` model, which reads text only: it has no vision tower to freeze"),
                    "remove it, or train a vision-language policy (`arch = qwen2_5_vl` or `tiny_vlm`)",
                );
            }
        }
        // A `reward` written but not resolved has its own error.
        // An `sft` stage reports its loss on the split without a rubric.
        if self.written(i, &["eval_data"])
            && s.get("reward").is_none()
            && !self.written(i, &["reward"])
            && s.block("sft").is_none()
        {
            self.without_effect(
                i,
                &["eval_data"],
                "the held-out split is scored with the stage's `reward` rubric, and there is none"
                    .into(),
                "add `reward = RUBRIC`, or score the split with an `eval` declaration",
            );
        }
        self.check_held_out(i, &s);
        self.check_empty_splits(i, &s);
        let Some(grpo) = s.block("grpo").cloned() else {
            if has_sft {
                // Its held-out scoring (`eval_data`) decodes with the
                // rollout's lengths: there `rollout` counts.
                let scores_held_out = s.get("eval_data").is_some() && s.get("reward").is_some();
                for key in ["reference", "rollout", "reflection"] {
                    if self.written(i, &[key]) && !(key == "rollout" && scores_held_out) {
                        self.without_effect(
                            i,
                            &[key],
                            format!("an `sft` stage learns the rows' reference answers; it samples nothing, so it uses no `{key}`"),
                            "remove it, or train this stage with `grpo`",
                        );
                    }
                }
                if self.written(i, &["sft", "epochs"]) && self.written(i, &["steps"]) {
                    self.without_effect(
                        i,
                        &["sft", "epochs"],
                        "`steps` is set, and the stage takes exactly that many".into(),
                        "remove `steps` to train for `epochs` passes over the data, or remove `epochs`",
                    );
                }
            }
            return;
        };
        for key in ["rollout", "reward"] {
            // A written one that does not resolve has its own error (E0203).
            if s.get(key).is_none() && !self.written(i, &[key]) {
                self.diags.push(
                    Diagnostic::error(Code::E0211, format!("`train {name}` uses `grpo` but has no `{key}`"))
                        .with_primary(self.setting_span(i, &["grpo"]), format!("GRPO needs a `{key}`"))
                        .with_help(if key == "rollout" {
                            "add `rollout = ...`, a `rollout` declaration with the group size and lengths (or `std/rollouts.safer`)"
                        } else {
                            "add `reward = ...`, the rubric whose `total` is the reward"
                        }),
                );
            }
        }
        if grpo.text("multi_objective") == Some("normalize_then_sum")
            && self.written(i, &["grpo", "advantage"])
        {
            self.without_effect(
                i,
                &["grpo", "advantage"],
                "`multi_objective = normalize_then_sum` normalises each objective within its group, and their sum over the batch, itself".into(),
                "remove `advantage`, or use `multi_objective = sum_then_normalize`",
            );
        }
        self.check_batch(i, &s, &grpo);
        self.check_overlong_reach(i, &s, &grpo);
        self.check_clip(i, &grpo);
        self.check_kl(i, &s, &grpo);
        self.check_dynamic_sampling(i, &s, &grpo);
        self.check_reflection_rubrics(i, &s);
        self.check_cost(i, &s, &grpo);
        if let Some(overlong) = grpo.block("overlong") {
            if let (Some(max), Some(cache)) = (overlong.number("max"), overlong.number("cache")) {
                if cache > max {
                    self.diags.push(
                        Diagnostic::error(Code::E0301, format!("`overlong.cache` ({} tokens) is longer than `overlong.max` ({} tokens)", num(cache), num(max)))
                            .with_primary(self.setting_span(i, &["grpo", "overlong", "cache"]), "the soft zone must fit below `max`")
                            .with_help("make `cache` at most `max`; DAPO used max 20480 and cache 4096"),
                    );
                }
            }
        }
    }

    fn group_of(&self, train: &Settings) -> Option<(f64, DeclRef)> {
        let rollout = train.reference("rollout")?;
        Some((self.decls[rollout.0].settings.number("group")?, rollout))
    }

    fn check_batch(&mut self, i: usize, s: &Settings, grpo: &Settings) {
        let Some((group, rollout)) = self.group_of(s) else {
            return;
        };
        let advantage = grpo.text("advantage").unwrap_or("group_std").to_string();
        let rollout_name = self.decls[rollout.0].name.clone();
        // A group of one under per-group normalisation: GDPO's of each
        // criterion, or the advantage's.
        let per_group = if grpo.text("multi_objective") == Some("normalize_then_sum") {
            Some((
                "`multi_objective = normalize_then_sum` normalises each criterion within a group".to_string(),
                "multi_objective",
                "per-group normalisation (GDPO)",
                "set `group` to at least 2 (8 is common), or use `multi_objective = sum_then_normalize` with `advantage = batch_std`",
            ))
        } else if schema::GROUP_NORMALISED.contains(&advantage.as_str()) {
            Some((
                format!("`advantage = {advantage}` compares completions within a group"),
                "advantage",
                "group-normalised advantages",
                "set `group` to at least 2 (8 is common), or use `advantage = batch_std` (a group of one then takes the batch's mean as its baseline)",
            ))
        } else {
            None
        };
        if let (true, Some((what, key, label, help))) = (group < 2.0, per_group) {
            self.diags.push(
                Diagnostic::error(
                    Code::E0304,
                    format!(
                        "{what}, but rollout `{rollout_name}` samples {} per prompt",
                        num(group)
                    ),
                )
                .with_primary(
                    self.setting_span(rollout.0, &["group"]),
                    "a group of one has no baseline",
                )
                .with_secondary(self.setting_span(i, &["grpo", key]), label)
                .with_help(help),
            );
            return;
        }
        let Some(Value::Quantity { value: batch, unit }) = grpo.get("batch").cloned() else {
            return;
        };
        // Counts out of range have their own error (E0301); their
        // products are no counts to check.
        let micro = grpo.number("micro_batch").unwrap_or(1.0);
        if [batch, group, micro].iter().any(|n| *n > schema::MAX_COUNT) {
            return;
        }
        let prompts = match unit {
            ast::Unit::Completions => {
                if batch % group != 0.0 {
                    let down = (batch / group).floor() * group;
                    let up = down + group;
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0305,
                            format!(
                                "{} completions is not a whole number of groups of {}",
                                num(batch),
                                num(group)
                            ),
                        )
                        .with_primary(
                            self.setting_span(i, &["grpo", "batch"]),
                            format!("{} / {} = {}", num(batch), num(group), num(batch / group)),
                        )
                        .with_secondary(self.setting_span(rollout.0, &["group"]), "the group size")
                        .with_help({
                            let prompts = (batch / group).round().max(1.0);
                            format!(
                                "use {} or {} completions, or count prompts: `batch = {} {}`",
                                num(down.max(group)),
                                num(up),
                                num(prompts),
                                if prompts == 1.0 { "prompt" } else { "prompts" }
                            )
                        }),
                    );
                    return;
                }
                batch / group
            }
            _ => batch,
        };
        let completions = prompts * group;
        let Some(micro) = grpo.number("micro_batch") else {
            return;
        };
        if micro > completions || completions % micro != 0.0 {
            let fix_micro = largest_divisor_at_most(completions as u64, micro as u64);
            // A few thousand group sizes at most: the search is bounded
            // whatever the numbers written.
            let g0 = group as u64;
            let fix_group = (g0.saturating_add(1)
                ..=g0.saturating_mul(4).min(g0.saturating_add(4096)))
                .find(|g| {
                    (prompts as u64)
                        .checked_mul(*g)
                        .is_some_and(|c| c.is_multiple_of(micro as u64))
                });
            let mut help = format!("use micro-batch {fix_micro}");
            if let Some(g) = fix_group {
                help = format!("use group {g} or micro-batch {fix_micro}");
            }
            let why = if micro > completions {
                "is larger than"
            } else {
                "does not divide"
            };
            self.diags.push(
                Diagnostic::error(
                    Code::E0305,
                    format!(
                        "{} prompts x group {} = {} completions, not divisible by micro-batch {}",
                        num(prompts),
                        num(group),
                        num(completions),
                        num(micro)
                    ),
                )
                .with_primary(self.setting_span(i, &["grpo", "micro_batch"]), format!("micro-batch {} {why} {} completions", num(micro), num(completions)))
                .with_secondary(self.setting_span(i, &["grpo", "batch"]), format!("{} prompts", num(prompts)))
                .with_secondary(self.setting_span(rollout.0, &["group"]), format!("group {}", num(group)))
                .with_help(help)
                .with_note("completions per step = prompts per step x group (before a reflection with `keep = append` adds its corrections), split evenly into micro-batches"),
            );
        }
    }

    fn check_clip(&mut self, i: usize, grpo: &Settings) {
        let span = self.setting_span(i, &["grpo", "clip"]);
        let (low, high) = match grpo.get("clip") {
            Some(Value::Range { low, high }) => (*low, *high),
            Some(Value::Number(n)) => (*n, *n),
            _ => return,
        };
        if low > high {
            let d = Diagnostic::error(
                Code::E0306,
                format!(
                    "clip range is reversed: low {} is above high {}",
                    num(low),
                    num(high)
                ),
            )
            .with_primary(span, "written `low..high`")
            .with_help(format!("write `clip = {}..{}`", num(high), num(low)));
            let d = self.with_range_swapped(d, i, &["grpo", "clip"]);
            self.diags.push(d);
        }
        for (what, v) in [("low", low), ("high", high)] {
            if !(v > 0.0 && v < 1.0) {
                self.diags.push(
                    Diagnostic::error(Code::E0306, format!("clip {what} must be between 0 and 1 (exclusive), found {}", num(v)))
                        .with_primary(span, "the ratio is clipped to 1 - low .. 1 + high")
                        .with_help("typical values: `clip = 0.2` (GRPO) or `clip = 0.2..0.28` (DAPO clip-higher)"),
                );
                break;
            }
        }
        if let Some(c) = grpo.number("dual_clip") {
            if c <= 1.0 {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0307,
                        format!(
                            "dual-clip constant must be greater than 1, found {}",
                            num(c)
                        ),
                    )
                    .with_primary(
                        self.setting_span(i, &["grpo", "dual_clip"]),
                        "at most 1 would clip every negative-advantage token",
                    )
                    .with_help("use `dual_clip = 3` (the verl and EasyR1 default)"),
                );
            }
        }
    }

    fn check_kl(&mut self, i: usize, s: &Settings, grpo: &Settings) {
        let beta = grpo
            .block("kl")
            .and_then(|kl| kl.number("beta"))
            .unwrap_or(0.0);
        // The reference is read by the KL term alone: without one the run
        // never loads it.
        if beta <= 0.0 && s.get("reference").is_some() {
            self.without_effect(
                i,
                &["reference"],
                "the stage has no KL term (`kl.beta` is 0), which is all a reference model is read for".into(),
                "remove it, or add the KL term: `grpo { kl { beta = 0.04 } }`",
            );
        }
        let Some(kl) = grpo.block("kl") else { return };
        if beta <= 0.0 {
            return;
        }
        // A `reference` written but not resolved has its own error.
        if s.get("reference").is_none() && !self.written(i, &["reference"]) {
            let name = self.decls[i].name.clone();
            self.diags.push(
                Diagnostic::error(Code::E0313, format!("`train {name}` has a KL term (beta {}) but no `reference` model", num(beta)))
                    .with_primary(self.setting_span(i, &["grpo", "kl", "beta"]), "KL against what?")
                    .with_help("add `reference = policy` (a frozen copy taken at the start of the stage), or set `beta = 0`"),
            );
        }
        let placement = kl.text("placement").unwrap_or("loss");
        let estimator =
            kl.text("estimator")
                .unwrap_or(if placement == "reward" { "k1" } else { "k3" });
        let advice = match (estimator, placement) {
            ("k1", "loss") => Some("k1 in the loss has an expected gradient of zero: it does not regularise"),
            ("k2" | "k3" | "k3_corrected", "reward") => Some("k2 and k3 are built for their gradient in the loss; in the reward only the value counts, and k1's is the usual penalty"),
            _ => None,
        };
        if let Some(why) = advice {
            self.diags.push(
                Diagnostic::warning(Code::E0312, format!("KL estimator `{estimator}` placed in the {placement}"))
                    .with_primary(self.setting_span(i, &["grpo", "kl", "estimator"]), why)
                    .with_help(if placement == "loss" {
                        "use `estimator = k3` (or `k2`) with `placement = loss`, or `placement = reward` with k1"
                    } else {
                        "use `estimator = k1` with `placement = reward`, or `placement = loss` with k3"
                    }),
            );
        }
    }

    /// `dedup` names other datasets' splits: a dataset's own rows are
    /// de-duplicated against other sets before it is split, so its own
    /// splits cannot be named.
    fn check_dedup(&mut self, i: usize) {
        let Some(Value::List(items)) = self.decls[i].settings.get("dedup").cloned() else {
            return;
        };
        let own = items
            .iter()
            .any(|v| matches!(v, Value::Split { dataset, .. } if dataset.0 == i));
        if own {
            self.without_effect(
                i,
                &["dedup"],
                "a split of this dataset: its splits never share a row, so it is skipped".into(),
                "`dedup` drops rows that also appear in other datasets (an evaluation set, say); remove this dataset's own split",
            );
        }
    }

    /// E0400: datasets that de-duplicate against each other in a cycle
    /// (`a` drops `b.eval`'s rows and `b` drops `a.eval`'s): each needs
    /// the other built first, and the run stops before reading any.
    fn check_dedup_cycle(&mut self) {
        let edges: Vec<Vec<usize>> = (0..self.decls.len())
            .map(|i| match self.decls[i].settings.get("dedup") {
                Some(Value::List(items)) if self.decls[i].kind == DeclKind::Dataset => items
                    .iter()
                    .filter_map(|v| match v {
                        Value::Split { dataset, .. } if dataset.0 != i => Some(dataset.0),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        // Depth-first from each dataset in turn; the first cycle found is
        // reported once, at the dataset that closes it.
        let mut state = vec![0u8; edges.len()]; // 0 new, 1 on the path, 2 done
        let mut path: Vec<usize> = Vec::new();
        fn visit(
            n: usize,
            edges: &[Vec<usize>],
            state: &mut [u8],
            path: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            state[n] = 1;
            path.push(n);
            for &m in &edges[n] {
                if state[m] == 1 {
                    let from = path.iter().position(|&p| p == m).unwrap_or(0);
                    return Some(path[from..].to_vec());
                }
                if state[m] == 0 {
                    if let Some(cycle) = visit(m, edges, state, path) {
                        return Some(cycle);
                    }
                }
            }
            path.pop();
            state[n] = 2;
            None
        }
        for start in 0..edges.len() {
            if state[start] != 0 {
                continue;
            }
            let Some(cycle) = visit(start, &edges, &mut state, &mut path) else {
                continue;
            };
            let mut names: Vec<String> = cycle
                .iter()
                .map(|&d| format!("`{}`", self.decls[d].name))
                .collect();
            names.push(names[0].clone());
            let last = cycle[cycle.len() - 1];
            self.diags.push(
                Diagnostic::error(
                    Code::E0400,
                    "datasets de-duplicate against each other in a cycle",
                )
                .with_primary(
                    self.setting_span(last, &["dedup"]),
                    "needs the next dataset built first",
                )
                .with_note(format!("the cycle: {}", names.join(" → ")))
                .with_help("a dataset's `dedup` names splits of datasets built before it: remove one of them from the cycle"),
            );
            return;
        }
    }

    /// E0301: a rollout whose `min_tokens` passes its `max_tokens`: every
    /// generation refuses it, at curation or the first step.
    fn check_rollout_lengths(&mut self, i: usize) {
        let s = &self.decls[i].settings;
        let (Some(min), Some(max)) = (s.number("min_tokens"), s.number("max_tokens")) else {
            return;
        };
        if min <= max {
            return;
        }
        let name = self.decls[i].name.clone();
        self.diags.push(
            Diagnostic::error(
                Code::E0301,
                format!(
                    "rollout `{name}` asks for at least {} tokens but allows at most {}",
                    num(min),
                    num(max)
                ),
            )
            .with_primary(
                self.setting_span(i, &["min_tokens"]),
                "more than `max_tokens`",
            )
            .with_secondary(
                self.setting_span(i, &["max_tokens"]),
                "the most a completion has",
            )
            .with_help(format!(
                "lower `min_tokens` to at most {} tokens, or raise `max_tokens`",
                num(max)
            )),
        );
    }

    /// E0210: a reflection whose `when` reads a rubric the stage does not
    /// score with: only the stage's `reward` scores are there at run time.
    fn check_reflection_rubrics(&mut self, i: usize, s: &Settings) {
        let (Some(reflection), Some(reward)) = (s.reference("reflection"), s.reference("reward"))
        else {
            return;
        };
        let Some(Value::Expr(when)) = self.decls[reflection.0].settings.get("when").cloned() else {
            return;
        };
        for (rubric, span) in when.rubrics_read() {
            if rubric.0 == reward.0 {
                continue;
            }
            let (stage, reflection_name, read, reward_name) = (
                self.decls[i].name.clone(),
                self.decls[reflection.0].name.clone(),
                self.decls[rubric.0].name.clone(),
                self.decls[reward.0].name.clone(),
            );
            self.diags.push(
                Diagnostic::error(
                    Code::E0210,
                    format!("reflection `{reflection_name}` reads rubric `{read}`, but stage `{stage}` scores its completions with `{reward_name}`"),
                )
                .with_primary(span, "not the stage's reward rubric")
                .with_secondary(self.setting_span(i, &["reflection"]), format!("used by `train {stage}`"))
                .with_help(format!("read the criteria of `{reward_name}` in `when` (e.g. `{reward_name}.CRITERION < 0.5`), or give the stage `reward = {read}`")),
            );
        }
    }

    fn check_dynamic_sampling(&mut self, i: usize, s: &Settings, grpo: &Settings) {
        let Some(ds) = grpo.block("dynamic_sampling") else {
            return;
        };
        // The groups are scored by the stage's reward rubric only.
        if let (Some(Value::Criterion { rubric, .. }), Some(reward)) =
            (ds.get("on"), s.reference("reward"))
        {
            if rubric.0 != reward.0 {
                let (on, reward_name) = (
                    self.decls[rubric.0].name.clone(),
                    self.decls[reward.0].name.clone(),
                );
                self.diags.push(
                    Diagnostic::error(
                        Code::E0210,
                        format!("dynamic sampling filters on rubric `{on}`, but the stage scores its groups with `{reward_name}`"),
                    )
                    .with_primary(self.setting_span(i, &["grpo", "dynamic_sampling", "on"]), "not the stage's reward rubric")
                    .with_help(format!("filter on a criterion of `{reward_name}`, e.g. `on = {reward_name}.CRITERION`")),
                );
            }
        }
        if let Some(Value::Criterion {
            rubric,
            criterion: None,
        }) = ds.get("on")
        {
            let rubric = self.decls[rubric.0].name.clone();
            self.diags.push(
                Diagnostic::warning(Code::E0310, format!("dynamic sampling filters on the shaped total of `{rubric}`"))
                    .with_primary(self.setting_span(i, &["grpo", "dynamic_sampling", "on"]), "shaped reward")
                    .with_help(format!("filter on a raw criterion such as `{rubric}.safety`: penalties and format terms vary even when the outcome does not, which lets groups with no real signal through"))
                    .with_note("see DAPO (arXiv 2503.14476) and verl-recipe PR #125 on \"phantom gradients\""),
            );
        }
        if let Some(Value::Range { low, high }) = ds.get("band") {
            if low >= high {
                let path = ["grpo", "dynamic_sampling", "band"];
                let d = Diagnostic::error(Code::E0315, format!("dynamic-sampling band {}..{} keeps no group", num(*low), num(*high)))
                    .with_primary(self.setting_span(i, &path), "empty band")
                    .with_help("a group is kept when its mean lies strictly inside `low..high`: make low < high");
                let d = match low > high {
                    true => self.with_range_swapped(d, i, &path),
                    false => d,
                };
                self.diags.push(d);
            } else if (*high <= 0.0 || *low >= 1.0)
                && matches!(
                    ds.get("on"),
                    Some(Value::Criterion {
                        criterion: Some(_),
                        ..
                    })
                )
            {
                // A criterion's scores lie in 0..1, and so does a group's mean.
                let path = ["grpo", "dynamic_sampling", "band"];
                self.diags.push(
                    Diagnostic::error(
                        Code::E0315,
                        format!(
                            "dynamic-sampling band {}..{} keeps no group",
                            num(*low),
                            num(*high)
                        ),
                    )
                    .with_primary(self.setting_span(i, &path), "outside 0..1")
                    .with_note("a criterion's scores are normalised to 0..1, and a group is kept when its mean lies strictly inside the band")
                    .with_help("choose a band inside 0..1, e.g. `band = 0.1..0.9`"),
                );
            }
        }
    }

    /// E0315: a stage trains on a split whose fraction is 0 (it gets no
    /// row, and the run would stop with nothing to train on); a warning
    /// for `eval_data` (nothing would be scored).
    fn check_empty_splits(&mut self, i: usize, s: &Settings) {
        for key in ["data", "eval_data"] {
            let Some(Value::Split {
                dataset,
                split: Some(split),
            }) = s.get(key)
            else {
                continue;
            };
            let zero = self.decls[dataset.0]
                .settings
                .block("split")
                .and_then(|b| b.number(split))
                .is_some_and(|f| f == 0.0);
            if !zero {
                continue;
            }
            let name = format!("{}.{split}", self.decls[dataset.0].name);
            let d = if key == "data" {
                Diagnostic::error(Code::E0315, format!("`{name}` gets no rows to train on"))
            } else {
                Diagnostic::warning(Code::E0315, format!("`{name}` gets no rows to score"))
            };
            self.diags.push(
                d.with_primary(
                    self.setting_span(i, &[key]),
                    format!("`{split}` is 0 of the rows"),
                )
                .with_help(format!(
                    "give `{split}` a share of the rows in `split {{ ... }}`"
                )),
            );
        }
    }

    /// E0324 (warning): `eval_data` holds rows the stage trains on (the
    /// same split as `data`, or the whole dataset on either side), so its
    /// "held-out" scores before and after measure memorisation.
    fn check_held_out(&mut self, i: usize, s: &Settings) {
        let (
            Some(Value::Split {
                dataset,
                split: trained,
            }),
            Some(Value::Split {
                dataset: scored_in,
                split: scored,
            }),
        ) = (s.get("data"), s.get("eval_data"))
        else {
            return;
        };
        if dataset != scored_in {
            return;
        }
        let name = &self.decls[dataset.0].name;
        let what = match (trained, scored) {
            (Some(a), Some(b)) if a != b => return,
            (Some(a), Some(_)) => format!("`{name}.{a}`, the split the stage trains on"),
            (None, _) => format!("rows of `{name}`, all of which the stage trains on"),
            (Some(a), None) => {
                format!("all of `{name}`, which holds `{name}.{a}`, the split the stage trains on")
            }
        };
        self.diags.push(
            Diagnostic::warning(Code::E0324, "the held-out scores are measured on training rows")
                .with_primary(self.setting_span(i, &["eval_data"]), format!("scores {what}"))
                .with_help(format!(
                    "score rows the stage never sees: `split {{ train = 0.9, eval = 0.1 }}` in `{name}`, then `data = {name}.train` and `eval_data = {name}.eval`"
                )),
        );
    }

    fn check_cost(&mut self, i: usize, s: &Settings, grpo: &Settings) {
        let Some(cost) = grpo.block("cost") else {
            return;
        };
        // λ is bounded by `max` from its first step: an `init` above it
        // would be cut to `max` without a word.
        if let Some(lambda) = cost.block("lambda") {
            if let (Some(init), Some(max)) = (lambda.number("init"), lambda.number("max")) {
                if init > max && self.written(i, &["grpo", "cost", "lambda", "init"]) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::E0301,
                            format!("λ starts at {} but is bounded by {}", num(init), num(max)),
                        )
                        .with_primary(
                            self.setting_span(i, &["grpo", "cost", "lambda", "init"]),
                            format!("above `max = {}`", num(max)),
                        )
                        .with_help("raise `max`, or start λ at most at it"),
                    );
                }
            }
        }
        let (Some(criterion), Some(reward)) = (
            cost.text("criterion").map(str::to_string),
            s.reference("reward"),
        ) else {
            return;
        };
        if !self.info[reward.0].criteria.contains(&criterion) {
            let span = self.setting_span(i, &["grpo", "cost", "criterion"]);
            let ident = ast::Ident {
                name: criterion,
                span,
            };
            self.unknown_criterion(reward, &ident);
        }
    }

    /// E0321: `after` names a stage that trains another model than this
    /// stage's `policy` (this stage would start from that model's weights).
    fn check_after(&mut self, i: usize, policy: Option<DeclRef>, s: &Settings) {
        let (Some(policy), Some(before)) = (policy, s.reference("after")) else {
            return;
        };
        let Some(theirs) = self.decls[before.0].settings.reference("policy") else {
            return;
        };
        if theirs == policy {
            return;
        }
        let (name, other) = (
            self.decls[i].name.clone(),
            self.decls[before.0].name.clone(),
        );
        let (mine, their_name) = (
            self.decls[policy.0].name.clone(),
            self.decls[theirs.0].name.clone(),
        );
        self.diags.push(
            Diagnostic::error(
                Code::E0321,
                format!("`train {name}` trains `{mine}` but continues `train {other}`, which trains `{their_name}`"),
            )
            .with_primary(self.setting_span(i, &["after"]), format!("starts from `{their_name}`'s trained weights"))
            .with_secondary(self.setting_span(before.0, &["policy"]), format!("`{other}` trains `{their_name}`"))
            .with_help(format!("set `policy = {their_name}` to continue it, or remove `after` to train `{mine}` from its own weights")),
        );
    }

    /// The context `saferc run` holds model `model`'s prompts and replies
    /// to: its declared `context`, else its folder's positions
    /// (`config.json`), else its architecture's default; and whether it
    /// came from the folder (a larger one cannot be declared then).
    fn model_context(&mut self, model: DeclRef) -> (f64, bool) {
        let m = &self.decls[model.0].settings;
        let arch = m.text("arch").unwrap_or("tiny_vlm").to_string();
        let declared = m.number("context");
        let file_context = declared.is_none().then(|| {
            self.model_config_json(model.0)
                .and_then(|(json, _)| Self::file_positions(&json))
        });
        match (declared, file_context.flatten()) {
            (Some(declared), _) => (declared, false),
            (None, Some(positions)) => (positions, true),
            (None, None) => (schema::default_context(&arch), false),
        }
    }

    /// E0311: a local judge (`kind = model`) whose reply limit
    /// (`max_tokens`) fills its model's context, leaving no room for its
    /// question; `saferc run` refuses it before it starts.
    fn check_judge_reply_fits(&mut self, i: usize, s: &Settings) {
        let (Some("model"), Some(model), Some(max_tokens)) =
            (s.text("kind"), s.reference("model"), s.number("max_tokens"))
        else {
            return;
        };
        let (context, from_file) = self.model_context(model);
        if max_tokens < context {
            return;
        }
        let name = self.decls[i].name.clone();
        let mname = self.decls[model.0].name.clone();
        let or_raise = match from_file {
            true => "",
            false => ", or raise the model's `context`",
        };
        self.diags.push(
            Diagnostic::error(
                Code::E0311,
                format!(
                    "judge `{name}` allows replies of {} tokens, which leaves no room for its question in the {}-token context of model `{mname}`",
                    num(max_tokens),
                    num(context)
                ),
            )
            .with_primary(self.setting_span(i, &["max_tokens"]), "the reply's limit")
            .with_secondary(self.decls[model.0].span, format!("context {} tokens", num(context)))
            .with_help(format!(
                "set `max_tokens` well below {}: the question (the rubric's text, the prompt and the completion) needs room too{or_raise}",
                num(context)
            )),
        );
    }

    /// E0311: the new tokens of declaration `i` (a `train` stage or an
    /// `eval`) beyond the context of `model`: its rollout's `max_tokens`, or,
    /// where it scores without a rollout (`scores_without_rollout`), the
    /// runtime's default for scoring.
    fn check_context(
        &mut self,
        i: usize,
        model: DeclRef,
        s: &Settings,
        scores_without_rollout: bool,
    ) {
        let arch = self.decls[model.0]
            .settings
            .text("arch")
            .unwrap_or("tiny_vlm")
            .to_string();
        let (context, from_file) = self.model_context(model);
        // Where the folder's `config.json` sets the context, a larger one
        // cannot be declared (E0301).
        let capped = ": the model's `config.json` allows no more";
        let (or_set, or_raise) = if from_file {
            (capped, capped)
        } else {
            (
                ", or set the model's `context`",
                ", or raise the model's `context`",
            )
        };
        let mname = self.decls[model.0].name.clone();
        let model_label = format!("`{arch}`, context {} tokens", num(context));
        match s.reference("rollout") {
            Some(rollout) => {
                let Some(max_tokens) = self.decls[rollout.0].settings.number("max_tokens") else {
                    return;
                };
                // A prompt takes at least one token: a rollout as long as
                // the context leaves it none, and every row is skipped.
                if max_tokens < context {
                    return;
                }
                let rname = self.decls[rollout.0].name.clone();
                let message = if max_tokens == context {
                    format!("rollout `{rname}` allows {} tokens, the whole {}-token context of model `{mname}`, which leaves no room for a prompt", num(max_tokens), num(context))
                } else {
                    format!("rollout `{rname}` allows {} tokens, beyond the {}-token context of model `{mname}`", num(max_tokens), num(context))
                };
                self.diags.push(
                    Diagnostic::error(Code::E0311, message)
                        .with_primary(self.setting_span(rollout.0, &["max_tokens"]), "too long")
                        .with_secondary(self.decls[model.0].span, model_label)
                        .with_help(format!(
                            "lower `max_tokens` below {} (the prompt needs room too){or_set}",
                            num(context)
                        )),
                );
            }
            None if scores_without_rollout => {
                let max_tokens = safer_ir::plan::SCORING_MAX_TOKENS as f64;
                if max_tokens < context {
                    return;
                }
                let kind = if self.decls[i].kind == DeclKind::Eval {
                    "eval"
                } else {
                    "train"
                };
                let name = format!("{kind} {}", self.decls[i].name);
                self.diags.push(
                    Diagnostic::error(
                        Code::E0311,
                        format!("`{name}` scores with up to {} new tokens (there is no `rollout`), which leaves no room for a prompt in the {}-token context of model `{mname}`", num(max_tokens), num(context)),
                    )
                    .with_primary(self.setting_span(i, &["rollout"]), "scores without a rollout")
                    .with_secondary(self.decls[model.0].span, model_label)
                    .with_help(format!("add `rollout = ...` with `max_tokens` below {} (the prompt needs room too){or_raise}", num(context))),
                );
            }
            None => {}
        }
    }

    fn check_rubric_weights(&mut self, i: usize) {
        let Some(rubric) = self.decls[i].rubric.clone() else {
            return;
        };
        for c in &rubric.criteria {
            if c.weight < 0.0 {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0309,
                        format!(
                            "criterion `{}` has a negative weight ({})",
                            c.name,
                            num(c.weight)
                        ),
                    )
                    .with_primary(c.span, "criteria reward what is good")
                    .with_help(format!(
                        "subtract through a penalty instead: `penalty {} = {} when ...`",
                        c.name,
                        num(c.weight)
                    )),
                );
            }
        }
        if !rubric.criteria.is_empty() && rubric.criteria.iter().all(|c| c.weight == 0.0) {
            let name = self.decls[i].name.clone();
            self.diags.push(
                Diagnostic::error(
                    Code::E0308,
                    format!("every criterion of rubric `{name}` has weight 0"),
                )
                .with_primary(self.decls[i].span, "`weighted` would be 0/0")
                .with_help("give at least one criterion a positive weight"),
            );
        }
    }

    /// A rubric written with no criteria, penalties, format terms or
    /// `total` gives every completion 0 (warning, E0308).
    fn check_rubric_scores_something(&mut self, i: usize) {
        let Some(rubric) = &self.decls[i].rubric else {
            return;
        };
        let empty =
            rubric.criteria.is_empty() && rubric.penalties.is_empty() && rubric.formats.is_empty();
        // Written with nothing in it: a statement that failed to check (an
        // unknown key) has its own error.
        let written_empty = match &self.info[i].ast.body {
            DeclBody::Block(b) => b.stmts.is_empty(),
            DeclBody::Value(_) => false,
        };
        if !empty || !written_empty {
            return;
        }
        let name = self.decls[i].name.clone();
        self.diags.push(
            Diagnostic::warning(Code::E0308, format!("rubric `{name}` scores nothing"))
                .with_primary(self.decls[i].span, "no criteria, penalties or format terms")
                .with_note("every completion would score 0: GRPO learns nothing from a reward that never varies")
                .with_help("add a criterion: `criterion safety weight 1 { scorer = refusal() }`, or one the judge scores: `criterion helpful weight 1 \"Answers the question.\"`"),
        );
    }

    /// A penalty whose constant amount, as `total` combines it, raises the
    /// reward (warning, E0323): `penalty x = 0.5 when ...` under the default
    /// `total = weighted + penalties + format`, or `-0.5` under
    /// `weighted - penalties`.
    fn check_penalty_signs(&mut self, i: usize) {
        let Some(rubric) = &self.decls[i].rubric else {
            return;
        };
        let coefficient = match penalties_coefficient(&rubric.total) {
            Some(c) if c != 0.0 => c,
            _ => return,
        };
        // The amounts as written, for the fix (`0.50` stays `0.50`).
        let written: Vec<(String, String)> = match &self.info[i].ast.body {
            DeclBody::Block(b) => b
                .stmts
                .iter()
                .filter_map(|stmt| match &stmt.kind {
                    StmtKind::Penalty { name, value, .. } => {
                        Some((name.name.clone(), super::exprs::written_number(value)?))
                    }
                    _ => None,
                })
                .collect(),
            DeclBody::Value(_) => Vec::new(),
        };
        let mut found = Vec::new();
        for p in &rubric.penalties {
            // Never lowers the reward, and raises it for some completion.
            if let Some((lo, hi)) = amount_range(&p.value) {
                let (lo, hi) = (lo * coefficient, hi * coefficient);
                if lo.min(hi) >= 0.0 && lo.max(hi) > 0.0 {
                    let wrote = written
                        .iter()
                        .find(|(name, _)| *name == p.name)
                        .map(|(_, w)| w.clone());
                    let constant = p.value.number().is_some();
                    found.push((p.name.clone(), wrote, p.value.span, constant));
                }
            }
        }
        for (name, wrote, span, constant) in found {
            let how = match (coefficient > 0.0, constant) {
                (true, true) => "`total` adds `penalties`, so this amount is a bonus",
                (false, true) => "`total` subtracts `penalties`, so this amount is a bonus",
                (true, false) => {
                    "`total` adds `penalties`, and this amount is never below 0: a bonus"
                }
                (false, false) => {
                    "`total` subtracts `penalties`, and this amount is never above 0: a bonus"
                }
            };
            let flipped = wrote.as_ref().map(|w| match w.strip_prefix('-') {
                Some(positive) => positive.to_string(),
                None => format!("-{w}"),
            });
            let mut d = Diagnostic::warning(
                Code::E0323,
                format!("penalty `{name}` raises the reward when it applies"),
            )
            .with_primary(span, how);
            d = match (&wrote, &flipped) {
                (Some(wrote), Some(flipped)) => d
                    .with_help(format!("write `penalty {name} = {flipped} when ...`, or make it a criterion if it rewards what is good"))
                    .with_fix(span, wrote, flipped),
                _ => d.with_help("negate its amount, or make it a criterion if it rewards what is good"),
            };
            self.diags.push(d);
        }
    }

    /// E0315: a reflection's `when` that no completion's scores can meet
    /// (an error: the reflection would never run), or that every one meets
    /// (a warning: every completion is reflected on). A criterion's scores
    /// lie in 0..1 whatever its `scale`, which is the usual slip: `r.helpful
    /// < 5` on a `scale = 1..10` criterion always holds.
    fn check_reflection_when(&mut self, i: usize) {
        let Some(Value::Expr(when)) = self.decls[i].settings.get("when").cloned() else {
            return;
        };
        let mut parts = Vec::new();
        let all_read = conjuncts(&when, &mut parts);
        // Per criterion (of a rubric): the values it may take, its scale.
        let mut bounds: Vec<(DeclRef, Interval, (f64, f64))> = Vec::new();
        let mut understood = all_read && !parts.is_empty();
        for part in parts {
            let read = match &part.kind {
                TKind::Binary { op, lhs, rhs } => match &lhs.kind {
                    TKind::Criterion {
                        rubric,
                        criterion: Some(name),
                    } => {
                        let scale = self.decls[rubric.0]
                            .rubric
                            .as_ref()
                            .and_then(|r| r.criteria.iter().find(|c| &c.name == name))
                            .map_or((0.0, 1.0), |c| c.scale);
                        let same =
                            |(r, b, _): &(DeclRef, Interval, _)| r == rubric && b.var == *name;
                        let at = match bounds.iter().position(same) {
                            Some(at) => at,
                            None => {
                                bounds.push((*rubric, Interval::closed(name, 0.0, 1.0), scale));
                                bounds.len() - 1
                            }
                        };
                        bounds[at].1.apply(*op, rhs.constant())
                    }
                    _ => false,
                },
                _ => false,
            };
            understood &= read;
        }
        let name = self.decls[i].name.clone();
        let on_a_scale = bounds
            .iter()
            .find(|(_, _, scale)| *scale != (0.0, 1.0))
            .map(|(_, b, (lo, hi))| {
                format!(
                    "; `{}` has `scale = {}..{}`, so a raw score s is (s − {}) / {} on 0..1",
                    b.var,
                    num(*lo),
                    num(*hi),
                    num(*lo),
                    num(hi - lo)
                )
            });
        let note = format!(
            "a criterion's scores lie in 0..1, whatever its `scale`{}",
            on_a_scale.unwrap_or_default()
        );
        if let Some((_, empty, _)) = bounds.iter().find(|(_, b, _)| b.is_empty()) {
            self.diags.push(
                Diagnostic::error(
                    Code::E0315,
                    format!("the condition of reflection `{name}` never holds"),
                )
                .with_primary(when.span, empty.describe())
                .with_note(note)
                .with_help("compare within 0..1, e.g. `when = r.safety < 0.5`"),
            );
        } else if understood && bounds.iter().all(|(_, b, _)| b.covers(0.0, 1.0)) {
            self.diags.push(
                Diagnostic::warning(
                    Code::E0315,
                    format!("the condition of reflection `{name}` always holds"),
                )
                .with_primary(when.span, "every completion is reflected on")
                .with_note(note)
                .with_help("compare within 0..1, e.g. `when = r.safety < 0.5`"),
            );
        }
    }

    /// The prompt of reflection declaration `i`: its text, and the `prompt`
    /// declaration it names (none for a string written in place).
    pub(crate) fn reflection_prompt(&self, i: usize) -> Option<(String, Option<DeclRef>)> {
        match self.decls[i].settings.get("prompt") {
            Some(Value::Str(text)) => Some((text.clone(), None)),
            Some(Value::Ref(p)) => match &self.decls[p.0].value {
                Some(Value::Str(text)) => Some((text.clone(), Some(*p))),
                _ => None,
            },
            _ => None,
        }
    }

    /// A reflection prompt without `{completion}`: the model is asked to
    /// correct an answer it is not shown (warning, E0322).
    fn check_reflection_prompt(&mut self, i: usize) {
        let Some((text, declared)) = self.reflection_prompt(i) else {
            return;
        };
        let name = self.decls[i].name.clone();
        if text.contains("{completion}") {
            // Another `{word}` is sent as written.
            let others: Vec<String> = placeholders(&text)
                .into_iter()
                .filter(|p| p != "{completion}")
                .collect();
            if !others.is_empty() {
                let mut d = Diagnostic::warning(
                    Code::E0327,
                    format!(
                        "the prompt of reflection `{name}` has {} that nothing fills in",
                        crate::diagnostic::all_of(&others)
                    ),
                )
                .with_primary(self.setting_span(i, &["prompt"]), "sent to the policy as written")
                .with_note("only `{completion}` is filled in (the original prompt, images included, is already in the conversation before it)")
                .with_help("remove the placeholder, or write the text it stands for");
                if let Some(p) = declared {
                    let prompt = self.decls[p.0].name.clone();
                    d = d.with_secondary(self.decls[p.0].span, format!("prompt `{prompt}`"));
                }
                self.diags.push(d);
            }
            return;
        }
        let mut d = Diagnostic::warning(
            Code::E0322,
            format!("the prompt of reflection `{name}` does not show the completion"),
        )
        .with_primary(self.setting_span(i, &["prompt"]), "no `{completion}` in this prompt")
        .with_help("add `{completion}` where the answer to correct goes, e.g. after `Your previous answer:`; or use a prompt of `std/prompts/reflect.safer`");
        if let Some(p) = declared {
            let prompt = self.decls[p.0].name.clone();
            d = d.with_secondary(self.decls[p.0].span, format!("prompt `{prompt}`"));
        }
        let others = placeholders(&text);
        if !others.is_empty() {
            d = d.with_note(format!(
                "only `{{completion}}` is filled in; {} stay{} as written",
                crate::diagnostic::all_of(&others),
                if others.len() == 1 { "s" } else { "" }
            ));
        }
        self.diags.push(d);
    }

    fn check_split(&mut self, i: usize) {
        let Some(split) = self.decls[i].settings.block("split").cloned() else {
            return;
        };
        let parts: Vec<(String, f64)> = split
            .0
            .iter()
            .filter_map(|(k, v)| match v {
                Setting::Value(Value::Number(n)) => Some((k.clone(), *n)),
                _ => None,
            })
            .collect();
        // Written empty, and once (a second `split` is E0208; an entry that
        // did not check has its own error).
        let written: Vec<bool> = match &self.info[i].ast.body {
            DeclBody::Block(b) => b
                .stmts
                .iter()
                .filter_map(|stmt| match &stmt.kind {
                    StmtKind::Block { key, body } if key.name == "split" => {
                        Some(body.stmts.is_empty())
                    }
                    _ => None,
                })
                .collect(),
            DeclBody::Value(_) => Vec::new(),
        };
        if written == [true] {
            let dataset = self.decls[i].name.clone();
            self.without_effect(
                i,
                &["split"],
                "a `split` that names no split".into(),
                &format!("name the splits and their fractions, `split {{ train = 0.9, eval = 0.1 }}`, or remove it: every row of `{dataset}` is `{dataset}`"),
            );
            return;
        }
        if parts.is_empty() {
            return;
        }
        if parts.iter().any(|(k, _)| k == "all") {
            self.diags.push(
                Diagnostic::error(Code::E0320, "a split cannot be called `all`")
                    .with_primary(
                        self.setting_span(i, &["split", "all"]),
                        "a split named `all`",
                    )
                    .with_note("the dataflow graph calls every row of a dataset `all` (what `data = d` reads)")
                    .with_help("name the split something else, such as `rest`"),
            );
        }
        let sum: f64 = parts.iter().map(|(_, n)| n).sum();
        if (sum - 1.0).abs() > 1e-9 {
            // The split written last absorbs the difference.
            let order = self.info[i].splits.clone();
            let last = order.last().cloned().unwrap_or_default();
            let last_value = parts
                .iter()
                .find(|(k, _)| *k == last)
                .map_or(0.0, |(_, v)| *v);
            let fixed = 1.0 - (sum - last_value);
            let terms: Vec<String> = order
                .iter()
                .filter_map(|k| parts.iter().find(|(p, _)| p == k))
                .map(|(k, v)| format!("{k} {}", num(*v)))
                .collect();
            let mut d = Diagnostic::error(
                Code::E0314,
                format!(
                    "split fractions add up to {}, not 1",
                    num((sum * 1e9).round() / 1e9)
                ),
            )
            .with_primary(self.setting_span(i, &["split"]), terms.join(" + "));
            if fixed > 0.0 {
                d = d.with_help(format!(
                    "set `{last} = {}`",
                    num((fixed * 1e9).round() / 1e9)
                ));
            }
            self.diags.push(d);
        }
    }

    fn check_curate_box(&mut self, i: usize) {
        let Some(curate) = self.decls[i].settings.block("curate").cloned() else {
            return;
        };
        let Some(Value::Expr(keep)) = curate.get("keep") else {
            return;
        };
        let k = curate.number("rollouts").unwrap_or(4.0).max(2.0);
        // The largest sample std of K scores in [0, 1]: half of them at 0,
        // the rest at 1 (for an odd K, one more on one side), rounded as
        // `saferc run` rounds the statistics (9 places).
        let k = k.round();
        let (low, high) = ((k / 2.0).floor(), (k / 2.0).ceil());
        let max_std = ((low * high / (k * (k - 1.0))).sqrt() * 1e9).round() / 1e9;
        let mut boxes = Boxes::new(max_std);
        let mut constraints = Vec::new();
        if !conjuncts(keep, &mut constraints) {
            return;
        }
        for c in constraints {
            boxes.apply(c);
        }
        if let Some(interval) = boxes.empty() {
            let above_max_std =
                interval.lo > max_std || (interval.lo == max_std && interval.lo_open);
            let detail = if interval.var == "std" && above_max_std {
                format!(
                    "with {} rollouts in 0..1, `std` is at most {:.3}",
                    num(k),
                    max_std
                )
            } else {
                interval.describe()
            };
            self.diags.push(
                Diagnostic::error(Code::E0315, "this curation box keeps nothing")
                    .with_primary(keep.span, detail)
                    .with_note("scores are normalised to 0..1: `mean`, `min` and `max` lie in 0..1")
                    .with_help("widen the box; QI-Box keeps moderate quality and high instability, e.g. `mean in 0.2..0.8 and std >= 0.15`"),
            );
        }
    }

    /// E0301: the models the pipeline uses name different devices
    /// (`device = cpu` and `device = cuda`); `saferc run` places every
    /// model on one device and would refuse the file.
    fn check_one_device(&mut self) {
        fn refs_in(settings: &Settings, out: &mut Vec<usize>) {
            for setting in settings.0.values() {
                match setting {
                    Setting::Value(Value::Ref(r)) => out.push(r.0),
                    Setting::Block(block) => refs_in(block, out),
                    Setting::Value(_) => {}
                }
            }
        }
        let mut used = Vec::new();
        for decl in self.decls.iter().filter(|d| d.kind != DeclKind::Model) {
            refs_in(&decl.settings, &mut used);
        }
        used.sort_unstable();
        used.dedup();
        let named: Vec<(usize, String)> = used
            .into_iter()
            .filter(|&m| self.decls.get(m).is_some_and(|d| d.kind == DeclKind::Model))
            .filter_map(|m| {
                let device = self.decls[m].settings.get("device").and_then(|v| match v {
                    Value::Enum(d) if d != "auto" => Some(d.clone()),
                    _ => None,
                })?;
                Some((m, device))
            })
            .collect();
        let Some((first, first_device)) = named.first().cloned() else {
            return;
        };
        if let Some((other, device)) = named.iter().find(|(_, d)| *d != first_device) {
            let (a, b) = (
                self.decls[first].name.clone(),
                self.decls[*other].name.clone(),
            );
            self.diags.push(
                Diagnostic::error(
                    Code::E0301,
                    format!("model `{a}` asks for device `{first_device}` but model `{b}` asks for `{device}`"),
                )
                .with_primary(self.setting_span(*other, &["device"]), format!("`{first_device}` for `{a}`"))
                .with_secondary(self.setting_span(first, &["device"]), "the first device named")
                .with_help("`saferc run` places every model on one device: name one device for all of them, or leave `device` out and choose it with `saferc run --device`"),
            );
        }
    }

    /// E0300 for a path that exists but is a file where a folder belongs
    /// or a folder where a file does: a model's `weights` folder and its
    /// `tokenizer` (a folder, or its `tokenizer.json`), a dataset's `jsonl`
    /// source and `images` folder, a judge's `ca_file`. Paths not on disk yet are not checked
    /// (another stage or program may make them).
    fn check_path_kinds(&mut self, i: usize) {
        let module = &self.loaded.modules[self.info[i].module];
        if !matches!(module.origin, super::loader::Origin::File(_)) {
            return;
        }
        let s = self.decls[i].settings.clone();
        let path_of = |v: Option<&Value>| match v {
            Some(Value::Path { resolved, written }) => Some((resolved.clone(), written.clone())),
            Some(Value::Source { path, .. }) => match path.as_ref() {
                Value::Path { resolved, written } => Some((resolved.clone(), written.clone())),
                _ => None,
            },
            _ => None,
        };
        // Each path setting, and whether it takes a folder.
        let keys: &[(&str, bool)] = match self.decls[i].kind {
            DeclKind::Model => &[("weights", true), ("tokenizer", true)],
            DeclKind::Dataset => &[("source", false), ("images", true)],
            DeclKind::Judge => &[("ca_file", false)],
            _ => &[],
        };
        for &(key, folder) in keys {
            let Some((resolved, written)) = path_of(s.get(key)) else {
                continue;
            };
            let path = std::path::Path::new(&resolved);
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let tokenizer_file = key == "tokenizer"
                && path.file_name().and_then(|n| n.to_str()) == Some("tokenizer.json");
            let (wrong, found, help) = if folder && meta.is_file() && !tokenizer_file {
                let help = match key {
                    "tokenizer" => "name the folder that holds `tokenizer.json` and `tokenizer_config.json` (as `save_pretrained` writes them), or its `tokenizer.json`".to_string(),
                    "weights" => "name the model's folder (with `config.json` and the `.safetensors` files), not one of its files".to_string(),
                    _ => format!("name the folder the rows' image paths are relative to, e.g. the folder of `{written}`"),
                };
                (true, "a file", help)
            } else if !folder && meta.is_dir() {
                let help = match key {
                    "ca_file" => "name the PEM file of the certificate authority itself, e.g. `\"certs/private-ca.pem\"`",
                    _ => "name the JSONL file itself: `jsonl(\"data/train.jsonl\")`",
                };
                (true, "a folder", help.to_string())
            } else {
                (false, "", String::new())
            };
            if wrong {
                let wanted = match (key, folder) {
                    ("tokenizer", _) => "a folder, or its `tokenizer.json`",
                    (_, true) => "a folder",
                    (_, false) => "a file",
                };
                // `""` resolves to the file's own folder.
                let named = match written.is_empty() {
                    true => "is empty".to_string(),
                    false => format!("names {found}, `{written}`"),
                };
                self.diags.push(
                    Diagnostic::error(Code::E0300, format!("`{key}` {named}: it takes {wanted}"))
                        .with_primary(self.setting_span(i, &[key]), format!("{found} on disk"))
                        .with_help(help),
                );
            }
        }
    }

    /// The `config.json` of model declaration `i`'s `weights` folder, and
    /// the folder as written, where the file can be read (once per model;
    /// every stage's context check asks for it): a plain file of a
    /// plausible size (the checks run on every edit in the editor) that
    /// holds JSON (one that does not is the loader's error, with its line),
    /// beside a document that is a file (an editor's untitled buffer has no
    /// folder to resolve `weights` against).
    fn model_config_json(&mut self, i: usize) -> Option<(serde_json::Value, String)> {
        if let Some(read) = self.model_configs.get(&i) {
            return read.clone();
        }
        let read = self.read_model_config_json(i);
        self.model_configs.insert(i, read.clone());
        read
    }

    /// [`Self::model_config_json`], read from disk.
    fn read_model_config_json(&self, i: usize) -> Option<(serde_json::Value, String)> {
        let Some(Value::Path { resolved, written }) = self.decls[i].settings.get("weights") else {
            return None;
        };
        let module = &self.loaded.modules[self.info[i].module];
        if !matches!(module.origin, super::loader::Origin::File(_)) {
            return None;
        }
        let config = std::path::Path::new(resolved).join("config.json");
        let meta = std::fs::metadata(&config).ok()?;
        if !meta.is_file() || meta.len() > 1 << 20 {
            return None;
        }
        let text = std::fs::read_to_string(&config).ok()?;
        let json = serde_json::from_str::<serde_json::Value>(&text).ok()?;
        Some((json, written.clone()))
    }

    /// A model's positions as its `config.json` gives them
    /// (`max_position_embeddings`, at the top or in `text_config`).
    fn file_positions(config: &serde_json::Value) -> Option<f64> {
        config
            .get("max_position_embeddings")
            .or_else(|| config.get("text_config")?.get("max_position_embeddings"))
            .and_then(serde_json::Value::as_f64)
    }

    /// A model whose `weights` folder exists must hold the declared
    /// architecture (`config.json`'s `model_type`). A folder that does not
    /// exist yet (made elsewhere, or by another run) is not checked here.
    fn check_model_folder(&mut self, i: usize) {
        let Some(declared) = self.decls[i].settings.text("arch").map(str::to_string) else {
            return;
        };
        let Some((json, written)) = self.model_config_json(i) else {
            return;
        };
        self.check_context_fits(i, &json, &written);
        let Some(found) = json.get("model_type").and_then(serde_json::Value::as_str) else {
            return;
        };
        if found == declared {
            return;
        }
        let name = self.decls[i].name.clone();
        let shown = format!("{}/config.json", written.trim_end_matches('/'));
        let help = if schema::ARCHS.contains(&found) {
            format!("set `arch = {found}`, or point `weights` at a `{declared}` model folder")
        } else {
            let known: Vec<String> = schema::ARCHS.iter().map(|a| format!("`{a}`")).collect();
            format!("the architectures saferc knows are {}; point `weights` at a folder holding one of them", known.join(", "))
        };
        self.diags.push(
            Diagnostic::error(
                Code::E0318,
                format!("model `{name}` is declared `arch = {declared}`, but `{shown}` holds a `{found}` model"),
            )
            .with_primary(self.setting_span(i, &["arch"]), "declared here")
            .with_secondary(self.setting_span(i, &["weights"]), format!("`model_type` is `{found}` there"))
            .with_help(help),
        );
    }

    /// E0301: a model's `context` beyond its `config.json`'s
    /// `max_position_embeddings` (at the top or in `text_config`), which
    /// `saferc run` refuses when it loads the model.
    fn check_context_fits(&mut self, i: usize, config: &serde_json::Value, written: &str) {
        let Some(context) = self.decls[i].settings.number("context") else {
            return;
        };
        let Some(limit) = Self::file_positions(config).filter(|l| context > *l) else {
            return;
        };
        let name = self.decls[i].name.clone();
        let shown = format!("{}/config.json", written.trim_end_matches('/'));
        self.diags.push(
            Diagnostic::error(
                Code::E0301,
                format!("model `{name}` declares a context of {} tokens, but `{shown}` allows at most {}", num(context), num(limit)),
            )
            .with_primary(self.setting_span(i, &["context"]), "beyond `max_position_embeddings`")
            .with_help(format!("set `context` to at most {} tokens, or leave it out", num(limit))),
        );
    }

    fn check_judge(&mut self, i: usize) {
        let s = self.decls[i].settings.clone();
        let name = self.decls[i].name.clone();
        if let Some(named) = s.text("named").map(str::to_string) {
            self.check_named_endpoint(i, &named);
        }
        self.check_judge_reply_fits(i, &s);
        let needs: &[&str] = match s.text("kind") {
            // A `named` endpoint that did not check has its own error.
            Some("http") if s.get("named").is_some() || self.written(i, &["named"]) => &[],
            Some("http") => &["endpoint", "model_name"],
            Some("model") => &["model"],
            _ => &[],
        };
        for key in needs {
            // Written but not valid: its own error says why. An http
            // judge's `model` is answered with `model_name` already.
            let answered =
                self.written(i, &[key]) || (*key == "model_name" && self.written(i, &["model"]));
            if s.get(key).is_none() && !answered {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0211,
                        format!(
                            "judge `{name}` of kind `{}` has no `{key}`",
                            s.text("kind").unwrap_or("")
                        ),
                    )
                    .with_primary(
                        self.setting_span(i, &["kind"]),
                        format!("`{key}` is required for this kind"),
                    )
                    .with_help(format!("add `{key} = ...`")),
                );
            }
        }
        // `api_key_env` names a variable; a value that is no variable's name
        // is most likely the key itself, which must not be in a file (nor
        // in this message).
        if let Some(var) = s.text("api_key_env") {
            if !is_variable_name(var) {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0303,
                        format!("judge `{name}`: `api_key_env` is not the name of an environment variable"),
                    )
                    .with_primary(
                        self.setting_span(i, &["api_key_env"]),
                        "a variable's name: letters, digits and `_`, not starting with a digit",
                    )
                    .hiding(self.setting_span(i, &["api_key_env"]))
                    .with_note("if this is the key itself, it is now in the file: take it out and revoke it (this report does not show it)")
                    .with_help("put the key in an environment variable and name that variable: `api_key_env = \"JUDGE_API_KEY\"`"),
                );
            }
        }
        // A local model judge answers greedily, one question at a time, on
        // this machine: the network's knobs and sampling do not apply.
        if s.text("kind") == Some("model") {
            for key in ["temperature", "concurrency", "retries", "timeout"] {
                if self.written(i, &[key]) {
                    self.without_effect(
                        i,
                        &[key],
                        format!("judge `{name}` is a local `model` judge: it decodes greedily, one question at a time, with no network to wait on or retry"),
                        "remove it; it applies to `kind = http` judges",
                    );
                }
            }
        }
        // A local model that reads text only cannot be shown the images.
        if s.text("kind") == Some("model") && s.bool("images") == Some(true) {
            let text_only = s.reference("model").filter(|m| {
                self.decls[m.0]
                    .settings
                    .text("arch")
                    .is_some_and(safer_ir::plan::arch_reads_text_only)
            });
            if let Some(model) = text_only {
                let model = self.decls[model.0].name.clone();
                self.without_effect(
                    i,
                    &["images"],
                    format!("judge `{name}`'s model `{model}` is a `qwen2` model, which reads text only: it cannot be shown the rows' images"),
                    "remove it, or judge with a vision-language model (`arch = qwen2_5_vl` or `tiny_vlm`) or an `http` endpoint that takes images",
                );
            }
        }
        // The settings of the other kinds: a judge meant to be `http`, left
        // `rules`, would score with the built-in rules without a word.
        let (other_kinds, help): (&[&str], &str) = match s.text("kind") {
            Some("rules") => (
                &["model", "named", "endpoint", "model_name", "api_key_env", "concurrency", "timeout", "retries", "temperature", "fallback", "images", "max_tokens"],
                "remove it, or make the judge `kind = http` (an endpoint) or `kind = model` (a local model) as meant",
            ),
            Some("model") => (
                &["named", "endpoint", "model_name", "api_key_env"],
                "remove it, or make the judge `kind = http` to ask an endpoint",
            ),
            Some("http") => (
                &["model"],
                "remove it: an `http` judge asks its endpoint for `model_name`; a local model judges as `kind = model`",
            ),
            _ => (&[], ""),
        };
        for key in other_kinds {
            // An `http` judge's `model` that is no model's name is taken for
            // its `model_name`, and its own error says so.
            let read_as_written = s.text("kind") != Some("http") || s.get(key).is_some();
            if self.written(i, &[key]) && read_as_written {
                let kind = s.text("kind").unwrap_or("rules");
                self.without_effect(
                    i,
                    &[key],
                    format!("judge `{name}` is of kind `{kind}`, which does not read `{key}`"),
                    help,
                );
            }
        }
        // `ca_file` only changes an https connection.
        if s.get("ca_file").is_some() {
            let why = match (s.text("kind"), s.text("endpoint")) {
                (Some("http"), Some(url)) if url.starts_with("http://") => Some(format!(
                    "`{}` is plain http: no certificate is checked",
                    safer_ir::masked_url(url)
                )),
                (Some("http"), _) => None,
                (kind, _) => Some(format!(
                    "a `{}` judge makes no https connection",
                    kind.unwrap_or("rules")
                )),
            };
            if let Some(why) = why {
                self.diags.push(
                    Diagnostic::warning(
                        Code::E0317,
                        format!("`ca_file` of judge `{name}` has no effect"),
                    )
                    .with_primary(self.setting_span(i, &["ca_file"]), why)
                    .with_help("remove `ca_file`, or give the judge an `https://` endpoint"),
                );
            }
        }
        if let Some(url) = s.text("endpoint") {
            if !is_http_url(url) {
                self.diags.push(
                    Diagnostic::error(
                        Code::E0300,
                        format!("`endpoint` must be an http(s) URL, found `{url}`"),
                    )
                    .with_primary(self.setting_span(i, &["endpoint"]), "not a URL")
                    .with_help("e.g. `endpoint = \"http://localhost:8000/v1\"`"),
                );
            }
        }
    }
}

impl<'a> Analyzer<'a> {
    fn check_named_endpoint(&mut self, i: usize, named: &str) {
        let span = self.setting_span(i, &["named"]);
        match &self.loaded.options.endpoints {
            Some(names) if names.iter().any(|n| n == named) => {}
            Some(names) => {
                let mut d = Diagnostic::error(Code::E0225, format!("`safer.toml` declares no judge endpoint `{named}`"))
                    .with_primary(span, "unknown endpoint");
                d = match crate::diagnostic::did_you_mean(named, names.iter().map(String::as_str)) {
                    Some(best) => d
                        .with_help(best.help(str::to_string))
                        .with_suggested_fixes(span, &format!("\"{named}\""), &best, |n| format!("\"{n}\"")),
                    None if names.is_empty() => d.with_help(format!("declare it in `safer.toml`: `[judges.{named}]` with `endpoint` and `model`")),
                    None => d.with_help(format!("declared endpoints: {}", crate::diagnostic::one_of(names))),
                };
                self.diags.push(d);
            }
            // Its `safer.toml` has errors, reported where they are.
            None if self.loaded.options.manifest_unreadable => {}
            None => self.diags.push(
                Diagnostic::error(Code::E0225, format!("judge endpoint `{named}` needs a project"))
                    .with_primary(span, "no `safer.toml` above this file")
                    .with_help("create one with `saferc new`, or write `endpoint` and `model_name` in the judge"),
            ),
        }
    }
}

/// How much one unit of `penalties` moves `e`, where `e` is linear in it:
/// `weighted + penalties` 1, `weighted - 0.5 * penalties` -0.5; an `if`
/// whose branches agree, or that reads it in one branch only, that
/// branch's. `Some(0)` when `e` does not read it; `None` when it reads it
/// otherwise (times a score, in a condition, in a call).
/// The values a penalty's amount can take, where that is known: constants,
/// the prelude's scorers (0 to 1), `answer.length` and `think.length` (0 or
/// more), and negations, sums, differences, products and quotients by a
/// constant, and `if`s of those. `None` for anything else (a user scorer
/// may return any number; a criterion's score lies in its `scale`).
fn amount_range(e: &TExpr) -> Option<(f64, f64)> {
    let scaled = |(lo, hi): (f64, f64), k: f64| {
        let (a, b) = (lo * k, hi * k);
        // 0 × ∞ is no number: an unbounded side times 0 is 0.
        let fix = |v: f64| if v.is_nan() { 0.0 } else { v };
        (fix(a.min(b)), fix(a.max(b)))
    };
    match &e.kind {
        TKind::Const { .. } => e.number().map(|n| (n, n)),
        TKind::Call { func, .. } if func.starts_with("std/std::") => Some((0.0, 1.0)),
        TKind::Field { base, field } if field == "length" => match &base.kind {
            TKind::Var { name } if name == "answer" || name == "think" => {
                Some((0.0, f64::INFINITY))
            }
            _ => None,
        },
        TKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } => amount_range(operand).map(|r| scaled(r, -1.0)),
        TKind::Binary { op, lhs, rhs } => match op {
            BinaryOp::Add => {
                let (l, r) = (amount_range(lhs)?, amount_range(rhs)?);
                Some((l.0 + r.0, l.1 + r.1))
            }
            BinaryOp::Sub => {
                let (l, r) = (amount_range(lhs)?, amount_range(rhs)?);
                Some((l.0 - r.1, l.1 - r.0))
            }
            BinaryOp::Mul => match (lhs.number(), rhs.number()) {
                (Some(k), _) => amount_range(rhs).map(|r| scaled(r, k)),
                (_, Some(k)) => amount_range(lhs).map(|r| scaled(r, k)),
                _ => None,
            },
            BinaryOp::Div => match rhs.number() {
                Some(k) if k != 0.0 => amount_range(lhs).map(|r| scaled(r, 1.0 / k)),
                _ => None,
            },
            _ => None,
        },
        TKind::If {
            then, otherwise, ..
        } => {
            let (a, b) = (amount_range(then)?, amount_range(otherwise)?);
            Some((a.0.min(b.0), a.1.max(b.1)))
        }
        _ => None,
    }
}

fn penalties_coefficient(e: &TExpr) -> Option<f64> {
    match &e.kind {
        TKind::Var { name } if name == "penalties" => Some(1.0),
        TKind::Const { .. } | TKind::Var { .. } | TKind::Criterion { .. } => Some(0.0),
        TKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } => penalties_coefficient(operand).map(|c| -c),
        TKind::Binary { op, lhs, rhs } => {
            let (l, r) = (penalties_coefficient(lhs), penalties_coefficient(rhs));
            match op {
                BinaryOp::Add => Some(l? + r?),
                BinaryOp::Sub => Some(l? - r?),
                BinaryOp::Mul => match (lhs.number(), rhs.number()) {
                    (Some(k), _) => r.map(|c| k * c),
                    (_, Some(k)) => l.map(|c| k * c),
                    _ => (l? == 0.0 && r? == 0.0).then_some(0.0),
                },
                BinaryOp::Div => match rhs.number() {
                    Some(k) if k != 0.0 => l.map(|c| c / k),
                    _ => (l? == 0.0 && r? == 0.0).then_some(0.0),
                },
                _ => (l? == 0.0 && r? == 0.0).then_some(0.0),
            }
        }
        TKind::If {
            cond,
            then,
            otherwise,
        } => {
            if penalties_coefficient(cond)? != 0.0 {
                return None;
            }
            match (
                penalties_coefficient(then)?,
                penalties_coefficient(otherwise)?,
            ) {
                (a, b) if a == b => Some(a),
                (0.0, c) | (c, 0.0) => Some(c),
                _ => None,
            }
        }
        TKind::Field { base, .. } => (penalties_coefficient(base)? == 0.0).then_some(0.0),
        TKind::Call { args, named, .. } => args
            .iter()
            .chain(named.values())
            .all(|a| penalties_coefficient(a) == Some(0.0))
            .then_some(0.0),
        TKind::Unary { operand, .. } => (penalties_coefficient(operand)? == 0.0).then_some(0.0),
        TKind::List { items } => items
            .iter()
            .all(|a| penalties_coefficient(a) == Some(0.0))
            .then_some(0.0),
    }
}

/// The `{name}` placeholders of a prompt, in order, once each.
fn placeholders(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else { break };
        let inner = &rest[..close];
        let word = !inner.is_empty()
            && inner.len() <= 40
            && inner
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == ' ');
        let shown = format!("{{{inner}}}");
        if word && !found.contains(&shown) {
            found.push(shown);
        }
    }
    found
}

/// Flattens `a and b and c` into atomic comparisons; false when the
/// expression has a shape the box analysis does not understand (`or`).
fn conjuncts<'e>(e: &'e TExpr, out: &mut Vec<&'e TExpr>) -> bool {
    match &e.kind {
        TKind::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => conjuncts(lhs, out) && conjuncts(rhs, out),
        TKind::Binary {
            op: BinaryOp::Or, ..
        } => false,
        TKind::Unary {
            op: UnaryOp::Not, ..
        } => false,
        _ => {
            out.push(e);
            true
        }
    }
}

/// Feasible intervals of `mean`, `std`, `min`, `max`.
struct Boxes {
    vars: Vec<Interval>,
}

/// The values a variable of a curation box may still take: `lo..hi`, each
/// end left out when a strict comparison (`>`, `<`) set it.
#[derive(Clone)]
struct Interval {
    var: String,
    lo: f64,
    lo_open: bool,
    hi: f64,
    hi_open: bool,
}

impl Interval {
    fn closed(var: &str, lo: f64, hi: f64) -> Self {
        Interval {
            var: var.to_string(),
            lo,
            lo_open: false,
            hi,
            hi_open: false,
        }
    }

    /// Values above `a` (`open`), or at least `a`.
    fn above(&mut self, a: f64, open: bool) {
        if a > self.lo || (a == self.lo && open) {
            self.lo = a;
            self.lo_open = open;
        }
    }

    /// Values below `b` (`open`), or at most `b`.
    fn below(&mut self, b: f64, open: bool) {
        if b < self.hi || (b == self.hi && open) {
            self.hi = b;
            self.hi_open = open;
        }
    }

    fn is_empty(&self) -> bool {
        self.lo > self.hi || (self.lo == self.hi && (self.lo_open || self.hi_open))
    }

    /// Where the variable would have to lie, in words.
    fn describe(&self) -> String {
        if self.lo_open || self.hi_open {
            let lo = if self.lo_open { "above" } else { "at least" };
            let hi = if self.hi_open { "below" } else { "at most" };
            format!(
                "`{}` would have to be {lo} {} and {hi} {}",
                self.var,
                num(self.lo),
                num(self.hi)
            )
        } else {
            format!(
                "`{}` would have to lie in {}..{}",
                self.var,
                num(self.lo),
                num(self.hi)
            )
        }
    }
}

impl Boxes {
    fn new(max_std: f64) -> Self {
        Boxes {
            vars: vec![
                Interval::closed("mean", 0.0, 1.0),
                Interval::closed("std", 0.0, max_std),
                Interval::closed("min", 0.0, 1.0),
                Interval::closed("max", 0.0, 1.0),
            ],
        }
    }

    fn apply(&mut self, c: &TExpr) {
        let TKind::Binary { op, lhs, rhs } = &c.kind else {
            return;
        };
        let TKind::Var { name } = &lhs.kind else {
            return;
        };
        let Some(slot) = self.vars.iter_mut().find(|v| v.var == *name) else {
            return;
        };
        slot.apply(*op, rhs.constant());
    }

    fn empty(&self) -> Option<Interval> {
        self.vars.iter().find(|v| v.is_empty()).cloned()
    }
}

impl Interval {
    /// Narrows the interval by `var op constant`; false for a comparison
    /// it cannot read (`!=`, a constant of another kind).
    fn apply(&mut self, op: BinaryOp, constant: Option<&Const>) -> bool {
        let slot = self;
        match (op, constant) {
            (BinaryOp::In, Some(Const::Range(a, b))) => {
                slot.above(*a, false);
                slot.below(*b, false);
            }
            (BinaryOp::Ge, Some(Const::Number(a))) => slot.above(*a, false),
            (BinaryOp::Gt, Some(Const::Number(a))) => slot.above(*a, true),
            (BinaryOp::Le, Some(Const::Number(b))) => slot.below(*b, false),
            (BinaryOp::Lt, Some(Const::Number(b))) => slot.below(*b, true),
            (BinaryOp::Eq, Some(Const::Number(a))) => {
                slot.above(*a, false);
                slot.below(*a, false);
            }
            _ => return false,
        }
        true
    }

    /// Whether the interval still holds all of `lo..hi`.
    fn covers(&self, lo: f64, hi: f64) -> bool {
        (self.lo < lo || (self.lo == lo && !self.lo_open))
            && (self.hi > hi || (self.hi == hi && !self.hi_open))
    }
}

/// The largest divisor of `n` that is at most `limit`, found in at most
/// about 2²⁰ steps, so that a typo such as `micro_batch = 10000000000` is
/// answered at once (a count down from any `limit` took minutes): a count
/// down from a small `limit`; else `n / k` for the smallest `k` from
/// `n / limit` up that divides `n`; else trial division up to `√n`. 1 when
/// none of them ends in time (`n` over 2⁴⁰ with no such `k` near).
fn largest_divisor_at_most(n: u64, limit: u64) -> u64 {
    const STEPS: u64 = 1 << 20;
    if limit >= n {
        return n.max(1);
    }
    if limit <= STEPS {
        return (1..=limit)
            .rev()
            .find(|d| n.is_multiple_of(*d))
            .unwrap_or(1);
    }
    let k0 = n.div_ceil(limit.max(1));
    if let Some(k) = (k0..k0.saturating_add(STEPS)).find(|k| n.is_multiple_of(*k)) {
        return n / k;
    }
    if n > STEPS * STEPS {
        return 1;
    }
    let mut best = 1;
    let mut i = 1;
    while i * i <= n {
        if n.is_multiple_of(i) {
            for d in [i, n / i] {
                if d <= limit {
                    best = best.max(d);
                }
            }
        }
        i += 1;
    }
    best
}

/// Whether `s` can name an environment variable: ASCII letters, digits and
/// `_`, not starting with a digit (what `api_key_env` takes), and does not
/// look like a key that has that shape (a Hugging Face token, `hf_` and
/// 30 or more letters and digits).
/// Whether `s` is an absolute `http` or `https` URL with a host, as the
/// runtime's HTTP client reads it (the `url` crate: the scheme in any case,
/// a port up to 65535, no space in the host).
pub(crate) fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    })
}

pub(crate) fn is_variable_name(s: &str) -> bool {
    let shaped = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let token = s
        .strip_prefix("hf_")
        .is_some_and(|rest| rest.len() >= 30 && rest.chars().all(|c| c.is_ascii_alphanumeric()));
    shaped && !token
}

#[cfg(test)]
mod tests {
    use super::{is_variable_name, largest_divisor_at_most};

    #[test]
    fn endpoints_are_http_urls_as_the_client_reads_them() {
        for good in [
            "http://x",
            "https://judge.example/v1",
            "HTTP://HOST/v1",
            "http://127.0.0.1:8000/v1?api-version=1",
        ] {
            assert!(super::is_http_url(good), "{good}");
        }
        for bad in [
            "http://",
            "https://",
            "ftp://x",
            "localhost:8000",
            "http://host .com",
            "http://x:99999/v1",
            "",
        ] {
            assert!(!super::is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn key_variables_are_names_and_not_keys() {
        for name in ["JUDGE_API_KEY", "_KEY", "hf_token", "OPENAI_API_KEY2"] {
            assert!(is_variable_name(name), "{name}");
        }
        for not_a_name in [
            "",
            "2KEY",
            "sk-live-0123456789abcdef",
            "MY KEY",
            "hf_abcdefghijABCDEFGHIJ0123456789xyz",
        ] {
            assert!(!is_variable_name(not_a_name), "{not_a_name}");
        }
    }

    /// Against a count down, on small numbers, and at once on huge ones.
    #[test]
    fn the_largest_divisor_at_most_a_limit() {
        for n in 1..200u64 {
            for limit in 1..220u64 {
                let expected = (1..=limit.min(n)).rev().find(|d| n % d == 0).unwrap_or(1);
                assert_eq!(largest_divisor_at_most(n, limit), expected, "{n} {limit}");
            }
        }
        // 2^41 completions, micro-batch 3,000,000: 2^21 (it gave 1).
        assert_eq!(largest_divisor_at_most(1 << 41, 3_000_000), 1 << 21);
        assert_eq!(largest_divisor_at_most(48, 10_000_000_000), 48);
        assert_eq!(largest_divisor_at_most(3_000_000_000_000, 7), 6);
        // A prime below 2^40 and a large limit: trial division.
        assert_eq!(largest_divisor_at_most(1_099_511_627_689, 1 << 30), 1);
    }
}
