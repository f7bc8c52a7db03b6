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
# The machine's speed drifts between phases, so the two sides alternate:
# ROUNDS rounds (default 3), each running TRL and then saferc; prints each
# round's medians (steps 2..6), its ratio, the median ratio and saferc's
# step split into phases (median over every round's steps 2..6).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
ROUNDS=${ROUNDS:-3}
MODEL=target/bench-models/qwen2-3.8m

cargo build --release -q -p saferc
"$PYTHON" runtime/benches/peer/hf_generate.py make "$MODEL" >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
  peer=$("$PYTHON" runtime/benches/peer/trl_grpo_step.py "$MODEL" runtime/benches/grpo_prompts.jsonl 2>/dev/null | tail -n 1)
  run=target/bench-grpo/saferc-run-$round
  rm -rf "$run"
  target/release/saferc run runtime/benches/grpo_step.safer --out "$run" --device cpu --no-progress >/dev/null 2>&1
  results+=("$peer" "$run/metrics.jsonl")
done
"$PYTHON" - "${results[@]}" <<'PY'
import json, statistics, sys
pairs = [(json.loads(sys.argv[i]), [json.loads(l) for l in open(sys.argv[i + 1])][1:])
         for i in range(1, len(sys.argv), 2)]
peer0 = pairs[0][0]
print("GRPO step: Qwen2 ~3.8M parameters, 4 prompts x 4 completions x 32 tokens, KL beta 0.04, one AdamW update")
print(f"peer: TRL {peer0['trl']} GRPOTrainer (transformers {peer0['transformers']}, torch {peer0['torch']}, {peer0['threads']} threads); saferc run on cpu (flex)")
ratios = []
for i, (peer, steps) in enumerate(pairs, 1):
    ours = statistics.median(s["step_time_s"] for s in steps)
    ratios.append(peer["seconds_per_step"] / ours)
    print(f"round {i}: TRL {peer['seconds_per_step']:.3f} s/step, saferc {ours:.3f} s/step, ratio {ratios[-1]:.1f}x")
print(f"ratio (median of {len(ratios)} rounds): {statistics.median(ratios):.1f}x")
all_steps = [s for _, steps in pairs for s in steps]
phases = {k: statistics.median(s["time_s"][k] for s in all_steps) for k in all_steps[0]["time_s"]}
print("saferc step phases (median, s): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items() if v >= 0.001))
PY
