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
# step split into phases (median over every round's steps 2..6). Then the
# floor under any such step: the time of its linear products alone, with
# torch's kernels (`trl_grpo_step.py floor`) and with saferc's
# (`--example grpo_floor`), the ratio to TRL that each leaves, and the rate
# in GFLOP/s those products reach; where a C compiler and AVX-512 are at
# hand, beside this machine's f32 peak (`peer/fma_peak.c`, both cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
ROUNDS=${ROUNDS:-3}
MODEL=target/bench-models/qwen2-3.8m

cargo build --release -q -p saferc
cargo build --release -q -p safer-runtime --example grpo_floor
"$PYTHON" runtime/benches/peer/hf_generate.py make "$MODEL" >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
  peer=$("$PYTHON" runtime/benches/peer/trl_grpo_step.py "$MODEL" runtime/benches/grpo_prompts.jsonl 2>/dev/null | tail -n 1)
  run=target/bench-grpo/saferc-run-$round
  rm -rf "$run"
  target/release/saferc run runtime/benches/grpo_step.safer --out "$run" --device cpu --no-progress >/dev/null 2>&1
  results+=("$peer" "$run/metrics.jsonl")
done
torch_floor=$("$PYTHON" runtime/benches/peer/trl_grpo_step.py floor "$MODEL" runtime/benches/grpo_prompts.jsonl 2>/dev/null | tail -n 1)
prompt_tokens=$(printf '%s' "$torch_floor" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["prompt_tokens"])')
saferc_floor=$(target/release/examples/grpo_floor "$MODEL" "$prompt_tokens")
peak=none
if cc -O3 -march=native runtime/benches/peer/fma_peak.c -o target/fma_peak 2>/dev/null \
    && grep -qw avx512f /proc/cpuinfo; then
  # Both cores at once: the sum of two single-core probes run together.
  peak=$( (target/fma_peak & target/fma_peak; wait) | "$PYTHON" -c 'import sys; print(sum(float(l) for l in sys.stdin))')
fi
"$PYTHON" - "$torch_floor" "$saferc_floor" "$peak" "${results[@]}" <<'PY'
import json, statistics, sys
torch_floor, saferc_floor = json.loads(sys.argv[1]), json.loads(sys.argv[2])
peak = None if sys.argv[3] == "none" else float(sys.argv[3])
pairs = [(json.loads(sys.argv[i]), [json.loads(l) for l in open(sys.argv[i + 1])][1:])
         for i in range(4, len(sys.argv), 2)]
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
print("saferc step phases (median, s): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items() if v >= 0.001)
      + " (the reference pass runs alongside the update's forward: its time is inside the update's)")
peer_step = statistics.median(p["seconds_per_step"] for p, _ in pairs)
print(f"floor: the step's linear products alone ({torch_floor['gflop']:.1f} GFLOP: {torch_floor['prompt_tokens']} prompt tokens "
      f"prefilled, 31 decode steps of 16 rows, a reference forward and an update forward + backward over "
      f"{torch_floor['scored_rows']} rows), nothing else:")
for name, floor in [("torch", torch_floor), ("saferc", saferc_floor)]:
    parts = ", ".join(f"{k} {v:.3f}" for k, v in floor["seconds"].items())
    print(f"  {name}'s kernels: {floor['seconds_per_step']:.3f} s ({parts}): at most "
          f"{peer_step / floor['seconds_per_step']:.1f}x TRL's median step ({peer_step:.3f} s) with everything else free")
# Rows through every weight in each phase: the prefill's prompt tokens and
# 31 decode steps of 16 rows (together as many as a forward's scored rows),
# a forward's scored rows, twice that for a backward (two products a weight).
scored = torch_floor["scored_rows"]
rows = {"generation": scored, "reference": scored, "update_forward": scored, "update_backward": 2 * scored}
gflop_per_row = torch_floor["gflop"] / sum(rows.values())
for name, floor in [("torch", torch_floor), ("saferc", saferc_floor)]:
    rates = ", ".join(f"{k} {rows[k] * gflop_per_row / v:.0f}" for k, v in floor["seconds"].items())
    print(f"  GFLOP/s of those products, {name}'s kernels: {rates}")
if peak is not None:
    print(f"  this machine's f32 peak (AVX-512 FMAs alone, runtime/benches/peer/fma_peak.c, both cores): {peak:.0f} GFLOP/s")
PY
