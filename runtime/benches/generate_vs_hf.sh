#!/usr/bin/env bash
# Generation throughput: `saferc generate` against Hugging Face transformers
# `generate`, same ~3.8M-parameter Qwen2 model, batch 8, 64 new tokens,
# one run on this machine. Needs a Python with torch and transformers:
#
#   python3 -m venv .venv && .venv/bin/pip install torch transformers
#   runtime/benches/generate_vs_hf.sh            # PYTHON=... to use another interpreter
#
# The machine's speed drifts between phases, so the two sides alternate:
# ROUNDS rounds (default 3), each timing the peer (median of 5 runs after a
# warm-up, in one Python process), then `saferc generate` (median of 5 runs,
# each its own process, after a warm-up process), then saferc's `generate`
# timed as the peer is, in one process after a warm-up (`--example
# generate_rate`: the same call without a fresh process's first forward).
# Prints each round's rates and ratios, the median ratios, and two bounds: the time of a
# decode step's linear products alone in torch (`hf_generate.py floor`) and
# in saferc (`--example decode_floor`), and the same products in saferc with
# one row per shard: nearly all of that is reading the weights from memory,
# which with more rows overlaps the arithmetic.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
ROUNDS=${ROUNDS:-3}
MODEL=target/bench-models/qwen2-3.8m
PROMPT="Look at the picture and tell me whether it is safe to use this tool in the kitchen."

cargo build --release -q -p saferc
cargo build --release -q -p safer-runtime --example decode_floor --example generate_rate
"$PYTHON" runtime/benches/peer/hf_generate.py make "$MODEL" >/dev/null

saferc=target/release/saferc
ours() {
  local rates=() out
  "$saferc" generate --model "$MODEL" --prompt "$PROMPT" --n 8 --max-tokens 64 --min-tokens 64 --seed 0 --device cpu --json >/dev/null
  for seed in 1 2 3 4 5; do
    out=$("$saferc" generate --model "$MODEL" --prompt "$PROMPT" --n 8 --max-tokens 64 --min-tokens 64 --seed "$seed" --device cpu --json)
    rates+=("$(printf '%s' "$out" | "$PYTHON" -c 'import json,sys; s=json.load(sys.stdin)["stats"]; assert s["generated_tokens"]==512; print(s["tokens_per_second"])')")
  done
  printf '%s\n' "${rates[@]}" | "$PYTHON" -c 'import statistics,sys; print(statistics.median(float(l) for l in sys.stdin))'
}

rounds=()
for _ in $(seq "$ROUNDS"); do
  peer=$("$PYTHON" runtime/benches/peer/hf_generate.py bench "$MODEL" 2>/dev/null)
  cli=$(ours)
  in_process=$(target/release/examples/generate_rate "$MODEL" 8 64 5)
  rounds+=("$peer" "$cli" "$in_process")
done
torch_floor=$("$PYTHON" runtime/benches/peer/hf_generate.py floor "$MODEL" 2>/dev/null)
saferc_floor=$(target/release/examples/decode_floor "$MODEL" 8)

"$PYTHON" - "$torch_floor" "$saferc_floor" "${rounds[@]}" <<'PY'
import json, statistics, sys
torch_floor, saferc_floor = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rounds = []
for i in range(3, len(sys.argv), 3):
    peer, warm = json.loads(sys.argv[i]), json.loads(sys.argv[i + 2])
    # generate_rate has its own copy of the prompt: it must be the peer's.
    same = [k for k in ("prompt_tokens", "batch", "new_tokens") if warm[k] != peer[k]]
    assert not same, f"generate_rate differs from the peer in {same}: {warm} vs {peer}"
    rounds.append((peer, float(sys.argv[i + 1]), warm["tokens_per_second"]))
peer0 = rounds[0][0]
print(f"model: Qwen2 ~3.8M parameters, batch {peer0['batch']}, {peer0['new_tokens']} new tokens, prompt {peer0['prompt_tokens']} tokens")
print(f"peer: transformers {peer0['version']} (torch {peer0['torch']}, {peer0['threads']} threads); saferc generate on cpu (flex)")
ratios, warm_ratios = [], []
for i, (peer, cli, warm) in enumerate(rounds, 1):
    ratios.append(cli / peer["tokens_per_second"])
    warm_ratios.append(warm / peer["tokens_per_second"])
    print(f"round {i}: transformers {peer['tokens_per_second']:.0f} tokens/s, saferc generate {cli:.0f} tokens/s "
          f"({ratios[-1]:.1f}x), in one process after a warm-up {warm:.0f} tokens/s ({warm_ratios[-1]:.1f}x)")
peer_rate = statistics.median(p["tokens_per_second"] for p, _, _ in rounds)
print(f"ratio (median of {len(ratios)} rounds): saferc generate {statistics.median(ratios):.1f}x; "
      f"timed as the peer is (one process, after a warm-up) {statistics.median(warm_ratios):.1f}x")
print(f"bound, torch: the {torch_floor['products']} linear products of a decode step alone take "
      f"{torch_floor['ms_per_step']:.2f} ms ({torch_floor['threads']} threads): at most "
      f"{torch_floor['tokens_per_second_bound']:.0f} tokens/s = {torch_floor['tokens_per_second_bound'] / peer_rate:.1f}x the peer")
print(f"bound, saferc: the same products through model::few_rows, {saferc_floor['shards']} shards, take "
      f"{saferc_floor['ms_per_step']:.2f} ms: at most {saferc_floor['tokens_per_second_bound']:.0f} tokens/s = "
      f"{saferc_floor['tokens_per_second_bound'] / peer_rate:.1f}x the peer (median peer rate)")
print(f"memory: with one row per shard instead of {saferc_floor['batch'] // saferc_floor['shards']}, the same products take "
      f"{saferc_floor['one_row_per_shard_ms_per_step']:.2f} ms (each shard's thread reading the "
      f"{saferc_floor['weight_megabytes']:.1f} MB of weights, the arithmetic a quarter or less); with more rows the reading overlaps the arithmetic")
PY
