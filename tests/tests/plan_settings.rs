//! GRPO settings reach the plan `saferc run` executes, as the settings
//! reference describes them: `batch` counted in completions becomes prompts
//! (completions / group), and the `overlong` and `cost` blocks are carried
//! with their defaults.

#![allow(clippy::panic)]

use std::path::PathBuf;

use safer_ir::plan::{Algorithm, CostSpec, GrpoSpec, OverlongSpec};

fn grpo_of(name: &str, grpo: &str) -> GrpoSpec {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "saferc-plan-settings-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("pipeline.safer");
    let text = format!(
        "model policy {{\n  arch    = tiny_vlm\n  weights = \"model\"\n}}\n\n\
         rubric r {{\n  criterion safety weight 1 \"Safe.\" {{\n    scorer = safe_response(field = \"label\")\n  }}\n  \
         criterion harm weight 1 \"Harm.\" {{\n    scorer = refusal()\n  }}\n}}\n\n\
         dataset d {{\n  source = jsonl(\"rows.jsonl\")\n  split {{ train = 1.0 }}\n}}\n\n\
         rollout s {{\n  group      = 4\n  max_tokens = 8 tokens\n}}\n\n\
         train t {{\n  policy  = policy\n  data    = d.train\n  rollout = s\n  reward  = r\n  grpo {{\n{grpo}\n  }}\n}}\n"
    );
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    let plan = saferc::cli::compile_plan(&file, &saferc::cli::ImportArgs::default())
        .unwrap_or_else(|| panic!("{name} does not compile"));
    let _ = std::fs::remove_dir_all(&dir);
    match plan.stages.first().map(|s| &s.algorithm) {
        Some(Algorithm::Grpo(g)) => (**g).clone(),
        other => panic!("{name}: no GRPO stage: {other:?}"),
    }
}

#[test]
fn a_batch_of_completions_is_that_many_groups() {
    assert_eq!(grpo_of("prompts", "    batch = 6 prompts").batch_prompts, 6);
    assert_eq!(
        grpo_of("completions", "    batch = 24 completions").batch_prompts,
        6
    );
}

#[test]
fn overlong_and_cost_blocks_reach_the_plan() {
    let g = grpo_of("plain", "    batch = 2 prompts");
    assert_eq!((g.overlong, g.cost), (None, None));
    let g = grpo_of(
        "blocks",
        "    batch = 2 prompts\n    overlong { max = 8 tokens, cache = 2 tokens }\n    cost { criterion = harm, threshold = 0.1, lambda { lr = 0.05, delay = 3 steps } }",
    );
    assert_eq!(
        g.overlong,
        Some(OverlongSpec {
            max: 8,
            cache: 2,
            factor: 1.0
        })
    );
    assert_eq!(
        g.cost,
        Some(CostSpec {
            criterion: "harm".into(),
            threshold: 0.1,
            lambda_init: 1.0,
            lambda_lr: 0.05,
            lambda_max: 5.0,
            window: 128,
            delay: 3,
        })
    );
}
