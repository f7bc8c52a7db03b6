//! The cost constraint (Safe RLHF's PPO-Lagrangian, ported to GRPO at the
//! reward level): a cost criterion must stay below a threshold d; a learned
//! multiplier λ weighs it against the reward before group normalisation:
//! r' = (r − λ c) / (1 + λ).
//!
//! The multiplier follows `safe_rlhf/algorithms/ppo_lag/trainer.py`:
//! λ = exp(log λ); loss_λ = −(J̄_c − d) · λ with J̄_c the mean cost over a
//! moving window; one SGD step on log λ with `lr`; log λ clamped to
//! log(λ_max); no update before `delay` steps.

use std::collections::VecDeque;

/// Settings of the constraint.
#[derive(Debug, Clone, Copy)]
pub struct CostConfig {
    /// The bound d on the mean cost.
    pub threshold: f64,
    /// λ at the start.
    pub lambda_init: f64,
    /// Learning rate of log λ.
    pub lambda_lr: f64,
    /// Upper bound of λ.
    pub lambda_max: f64,
    /// Costs in the moving average.
    pub window: usize,
    /// Steps before λ moves.
    pub delay: u64,
}

/// The multiplier and its cost window.
#[derive(Debug, Clone)]
pub struct Lagrangian {
    cfg: CostConfig,
    log_lambda: f64,
    window: VecDeque<f64>,
}

impl Lagrangian {
    /// Starts at `lambda_init`.
    pub fn new(cfg: CostConfig) -> Self {
        Lagrangian {
            cfg,
            log_lambda: cfg.lambda_init.max(1e-12).ln(),
            window: VecDeque::new(),
        }
    }

    /// log λ and the cost window, as a checkpoint keeps them.
    pub fn state(&self) -> (f64, Vec<f64>) {
        (self.log_lambda, self.window.iter().copied().collect())
    }

    /// A multiplier as [`Lagrangian::state`] gave it, for a resumed run.
    pub fn restored(cfg: CostConfig, log_lambda: f64, window: Vec<f64>) -> Self {
        let mut window: VecDeque<f64> = window.into();
        while window.len() > cfg.window.max(1) {
            window.pop_front();
        }
        Lagrangian {
            cfg,
            log_lambda,
            window,
        }
    }

    /// The current λ.
    pub fn lambda(&self) -> f64 {
        // exp(ln max) can round one ulp above max.
        self.log_lambda.exp().min(self.cfg.lambda_max)
    }

    /// Records the costs of a batch in the moving window.
    pub fn observe(&mut self, costs: &[f32]) {
        for c in costs {
            self.window.push_back(f64::from(*c));
            while self.window.len() > self.cfg.window.max(1) {
                self.window.pop_front();
            }
        }
    }

    /// The mean cost of the window.
    pub fn mean_cost(&self) -> f64 {
        self.window.iter().sum::<f64>() / self.window.len().max(1) as f64
    }

    /// One update of log λ at `step`; returns the new λ.
    pub fn update(&mut self, step: u64) -> f64 {
        if step >= self.cfg.delay && !self.window.is_empty() {
            // d loss_λ / d log λ = −(J̄_c − d) λ; SGD: log λ ← log λ − lr · grad.
            let grad = -(self.mean_cost() - self.cfg.threshold) * self.lambda();
            self.log_lambda -= self.cfg.lambda_lr * grad;
            self.log_lambda = self.log_lambda.min(self.cfg.lambda_max.ln());
        }
        self.lambda()
    }

    /// Combines rewards and costs: (r − λ c) / (1 + λ).
    pub fn combine(&self, rewards: &[f32], costs: &[f32]) -> Vec<f32> {
        let l = self.lambda();
        rewards
            .iter()
            .zip(costs)
            .map(|(r, c)| ((f64::from(*r) - l * f64::from(*c)) / (1.0 + l)) as f32)
            .collect()
    }
}
