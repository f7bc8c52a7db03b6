#!/usr/bin/env python3
"""Peer for the GRPO step benchmark: TRL's GRPOTrainer on the CPU with the
same tiny Qwen2 model (made by hf_generate.py make), prompts, group size,
prompt count, lengths, KL and reward as `runtime/benches/grpo_step.safer`.

    trl_grpo_step.py MODEL_DIR PROMPTS_JSONL        # the step's time
    trl_grpo_step.py floor MODEL_DIR PROMPTS_JSONL  # its linear products alone

One step = 4 prompts x 4 completions of exactly 32 tokens (min = max new
tokens), a rule reward, the reference model's log-probs (beta 0.04) and one
AdamW update. Prints the median wall time of steps 2..6 as JSON.
`floor` times only the linear products such a step cannot avoid, with
torch's kernels (see `floor`). Run through runtime/benches/grpo_step_vs_trl.sh.
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


def floor(model_dir, prompts_path):
    """A lower bound on a GRPO step with torch's kernels: only the linear
    products (every projection and the output head) of the least work the
    step needs, nothing else (no attention, norms, softmax, sampling,
    optimiser or Python model code):

    - generation: each prompt's prefill once per group, then NEW_TOKENS - 1
      decode steps of PROMPTS x GROUP rows;
    - reference: one forward over the prompts once and every completion
      token but the last (what the scoring passes feed);
    - update: the same forward, and its backward's two products per layer
      (input gradient dY.W and weight gradient dY^T.X).

    Prompt lengths are the mean over the prompts file with the chat
    template, as TRL renders them. Median of 5 runs after one warm-up.
    """
    torch.set_grad_enabled(False)
    rows = [json.loads(l) for l in open(prompts_path)]
    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(tok.apply_chat_template([{"role": "user", "content": r["question"]}],
                                           add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
               for r in rows]
    prompt_tokens = round(statistics.mean(lengths) * PROMPTS)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    samples = PROMPTS * GROUP
    scored = prompt_tokens + samples * (NEW_TOKENS - 1)
    linear = torch.nn.functional.linear

    def inputs(m):
        return {w.shape[1]: torch.randn(m, w.shape[1]) for w in weights}, \
               {w.shape[0]: torch.randn(m, w.shape[0]) for w in weights}

    (prefill, _), (step, _), (x, dy) = inputs(prompt_tokens), inputs(samples), inputs(scored)

    def timed(f):
        start = time.perf_counter()
        f()
        return time.perf_counter() - start

    def generation():
        for w in weights:
            linear(prefill[w.shape[1]], w)
        for _ in range(NEW_TOKENS - 1):
            for w in weights:
                linear(step[w.shape[1]], w)

    def forward():
        for w in weights:
            linear(x[w.shape[1]], w)

    def backward():
        for w in weights:
            torch.mm(dy[w.shape[0]], w)                   # input gradient [scored, in]
            torch.mm(dy[w.shape[0]].t(), x[w.shape[1]])   # weight gradient [out, in]

    phases = {"generation": generation, "reference": forward, "update_forward": forward, "update_backward": backward}
    for f in phases.values():
        f()
    seconds = {name: statistics.median(timed(f) for _ in range(5)) for name, f in phases.items()}
    macs = sum(w.numel() for w in weights)
    flops = 2 * macs * (prompt_tokens + samples * (NEW_TOKENS - 1) + 4 * scored)
    print(json.dumps({"products_per_forward": len(weights), "prompt_tokens": prompt_tokens, "scored_rows": scored,
                      "gflop": flops / 1e9, "threads": torch.get_num_threads(),
                      "seconds": seconds, "seconds_per_step": sum(seconds.values())}))


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        floor(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2])
