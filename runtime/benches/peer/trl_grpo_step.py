#!/usr/bin/env python3
"""Peer for the GRPO step benchmark: TRL's GRPOTrainer on the CPU with the
same tiny Qwen2 model (made by hf_generate.py make), prompts, group size,
prompt count, lengths, KL and reward as `runtime/benches/grpo_step.safer`.

    trl_grpo_step.py MODEL_DIR PROMPTS_JSONL

One step = 4 prompts x 4 completions of exactly 32 tokens (min = max new
tokens), a rule reward, the reference model's log-probs (beta 0.04) and one
AdamW update. Prints the median wall time of steps 2..6 as JSON.
Run through runtime/benches/grpo_step_vs_trl.sh.
"""
import json
import statistics
import sys
import time

import torch
import transformers
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

PROMPTS, GROUP, NEW_TOKENS, STEPS = 4, 4, 32, 6


def reward(completions, **_):
    # The same rule as the saferc pipeline: `regex(pattern = "e")` on the answer.
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if "e" in t else 0.0 for t in texts]


class Timer(TrainerCallback):
    def __init__(self):
        self.times, self.start = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.start)


def main(model_dir, prompts_path):
    torch.manual_seed(0)
    rows = [json.loads(l) for l in open(prompts_path)]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}]} for r in rows])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = GRPOConfig(
        output_dir="target/bench-grpo/trl-out", use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        per_device_train_batch_size=PROMPTS * GROUP, gradient_accumulation_steps=1, num_generations=GROUP,
        max_completion_length=NEW_TOKENS, generation_kwargs={"min_new_tokens": NEW_TOKENS},
        temperature=1.0, top_p=1.0, beta=0.04, learning_rate=1e-5, max_steps=STEPS, logging_steps=1,
        loss_type="dapo", num_iterations=1, seed=0, dataloader_num_workers=0,
    )
    timer = Timer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data,
                          processing_class=tok, callbacks=[timer])
    trainer.train()
    steady = timer.times[1:]
    print(json.dumps({"seconds_per_step": statistics.median(steady), "steps": len(timer.times),
                      "trl": trl.__version__, "transformers": transformers.__version__,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
