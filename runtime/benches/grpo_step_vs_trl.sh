#!/usr/bin/env bash
# GRPO step time: `saferc run runtime/benches/grpo_step.safer` against TRL's
# GRPOTrainer (runtime/benches/peer/trl_grpo_step.py), same ~3.8M-parameter
# Qwen2, 4 prompts x 4 completions of 32 tokens per step, rule reward,
# reference KL (beta 0.04), one AdamW update; one run on this machine.
# Needs a Python with torch, transformers and trl:
#
#   python3 -m venv .venv && .venv/bin/pip install torch transformers trl
#   runtime/benches/grpo_step_vs_trl.sh          # PYTHON=... for another interpreter
#
# Prints both medians (steps 2..6) and the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
MODEL=target/bench-models/qwen2-3.8m

cargo build --release -q -p saferc
"$PYTHON" runtime/benches/peer/hf_generate.py make "$MODEL" >/dev/null
peer=$("$PYTHON" runtime/benches/peer/trl_grpo_step.py "$MODEL" runtime/benches/grpo_prompts.jsonl 2>/dev/null | tail -n 1)
rm -rf target/bench-grpo/saferc-run
target/release/saferc run runtime/benches/grpo_step.safer --out target/bench-grpo/saferc-run --device cpu --no-progress >/dev/null 2>&1
"$PYTHON" - "$peer" target/bench-grpo/saferc-run/metrics.jsonl <<'PY'
import json, statistics, sys
peer = json.loads(sys.argv[1])
steps = [json.loads(l) for l in open(sys.argv[2])]
ours = statistics.median(s["step_time_s"] for s in steps[1:])
print("GRPO step: Qwen2 ~3.8M parameters, 4 prompts x 4 completions x 32 tokens, KL beta 0.04, one AdamW update")
print(f"TRL {peer['trl']} GRPOTrainer (transformers {peer['transformers']}, torch {peer['torch']}, {peer['threads']} threads): {peer['seconds_per_step']:.3f} s/step")
print(f"saferc run (cpu, flex):                 {ours:.3f} s/step")
print(f"ratio: {peer['seconds_per_step'] / ours:.1f}x")
PY
