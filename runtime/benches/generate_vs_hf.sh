#!/usr/bin/env bash
# Generation throughput: `saferc generate` against Hugging Face transformers
# `generate`, same ~3.8M-parameter Qwen2 model, batch 8, 64 new tokens,
# one run on this machine. Needs a Python with torch and transformers:
#
#   python3 -m venv .venv && .venv/bin/pip install torch transformers
#   runtime/benches/generate_vs_hf.sh            # PYTHON=... to use another interpreter
#
# Prints both rates (median of 5 timed runs after a warm-up each), the ratio,
# and a bound: the time torch's kernels need for a decode step's linear
# products alone (`hf_generate.py floor`).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
MODEL=target/bench-models/qwen2-3.8m
PROMPT="Look at the picture and tell me whether it is safe to use this tool in the kitchen."

cargo build --release -q -p saferc
"$PYTHON" runtime/benches/peer/hf_generate.py make "$MODEL" >/dev/null
peer=$("$PYTHON" runtime/benches/peer/hf_generate.py bench "$MODEL")
floor=$("$PYTHON" runtime/benches/peer/hf_generate.py floor "$MODEL")

rates=()
saferc=target/release/saferc
"$saferc" generate --model "$MODEL" --prompt "$PROMPT" --n 8 --max-tokens 64 --min-tokens 64 --seed 0 --device cpu --json >/dev/null
for seed in 1 2 3 4 5; do
  out=$("$saferc" generate --model "$MODEL" --prompt "$PROMPT" --n 8 --max-tokens 64 --min-tokens 64 --seed "$seed" --device cpu --json)
  rates+=("$(printf '%s' "$out" | "$PYTHON" -c 'import json,sys; s=json.load(sys.stdin)["stats"]; assert s["generated_tokens"]==512; print(s["tokens_per_second"])')")
done
"$PYTHON" - "$peer" "$floor" "${rates[@]}" <<'PY'
import json, statistics, sys
peer = json.loads(sys.argv[1])
floor = json.loads(sys.argv[2])
ours = statistics.median(float(r) for r in sys.argv[3:])
print(f"model: Qwen2 ~3.8M parameters, batch {peer['batch']}, {peer['new_tokens']} new tokens, prompt {peer['prompt_tokens']} tokens")
print(f"transformers {peer['version']} (torch {peer['torch']}, {peer['threads']} threads): {peer['tokens_per_second']:.0f} tokens/s")
print(f"saferc generate (cpu, flex):          {ours:.0f} tokens/s")
print(f"ratio: {ours / peer['tokens_per_second']:.1f}x")
print(f"bound: torch's own kernels spend {floor['ms_per_step']:.2f} ms per decode step on the {floor['products']} "
      f"linear products alone ({floor['threads']} threads), so no generator built on them exceeds "
      f"{floor['tokens_per_second_bound']:.0f} tokens/s = {floor['tokens_per_second_bound'] / peer['tokens_per_second']:.1f}x the peer")
PY
