#!/usr/bin/env bash
# Remakes the quickstart's committed inputs: the data set (needs Pillow) and the
# warmed-up model examples/models/tiny-safety (a fresh tiny_vlm trained by
# examples/pretrain.safer). Run from the repository root:
#   bash examples/make_quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" examples/data/make_data.py  # needs Pillow
cargo build --release -q -p saferc
rm -rf examples/models/tiny-init examples/models/tiny-safety target/pretrain-run
./target/release/saferc init-model examples/models/tiny-init --size small --seed 0
./target/release/saferc run examples/pretrain.safer --out target/pretrain-run --no-progress
mkdir -p examples/models/tiny-safety
cp target/pretrain-run/models/warm_up/* examples/models/tiny-safety/
rm -f examples/models/tiny-safety/stage.json
