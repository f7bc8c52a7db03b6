#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU (no network needed):
# parity with transformers on `cuda` (and `--device cuda`/`auto` choosing the
# GPU), then generation throughput on the GPU and on the CPU of the same
# machine, and, where that machine's Python has torch with CUDA and
# transformers, transformers' `generate` on the same GPU and the ratio. The
# benchmark model comes from runtime/benches/peer/hf_generate.py (`make`),
# run beforehand where Python with transformers exists; carry
# target/bench-models/ along.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

echo "== parity on cuda"
# One test at a time: the device probe swaps the process-wide panic hook.
cargo test --release -p safer-runtime --features cuda --test cuda_parity -- --nocapture --test-threads=1

echo "== generation, batch 8, 64 new tokens"
cargo build --release -q -p saferc --features cuda
model=target/bench-models/qwen2-3.8m
if [ ! -f "$model/config.json" ]; then
  echo "no $model: make it with runtime/benches/peer/hf_generate.py make $model" >&2
  exit 1
fi
prompt="Look at the picture and tell me whether it is safe to use this tool in the kitchen."
for device in cuda cpu; do
  for seed in 0 1 2; do
    target/release/saferc generate --model "$model" --prompt "$prompt" --n 8 --max-tokens 64 \
      --min-tokens 64 --seed "$seed" --device "$device" --json \
      | python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"]; print(s["device"], round(s["tokens_per_second"]), "tokens/s")'
  done
done

echo "== transformers generate on the same GPU (the peer), if this machine's Python has it"
if python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
  peer=$(python3 runtime/benches/peer/hf_generate.py bench "$model" cuda | tail -n 1)
  ours=$(target/release/saferc generate --model "$model" --prompt "$prompt" --n 8 --max-tokens 64 \
    --min-tokens 64 --seed 0 --device cuda --json)
  python3 - "$peer" "$ours" <<'PY'
import json, sys
peer, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])["stats"]
print(f"transformers on cuda: {peer['tokens_per_second']:.0f} tokens/s; saferc on cuda: {ours['tokens_per_second']:.0f}; ratio {ours['tokens_per_second'] / peer['tokens_per_second']:.1f}x")
PY
else
  echo "no Python with torch (CUDA) and transformers here: the GPU peer did not run"
fi
