#!/usr/bin/env bash
# The CUDA checks that firecut's 2-core CPU machines cannot run, as one script for a lent GPU
# under 8 minutes, with a working tree under 64 MiB.
#
#   benchmarks/gpu_check.sh --prepare   here, once, in firecut's venv: writes .gpu/ (git-ignored): a CIFAR-10 subset
#                                       (5,000 train / 1,000 test images, from ../shared/data) and
#                                       the snntorch wheel the CUDA image lacks
#   benchmarks/gpu_check.sh             there (device tool: carry [".gpu"]); prints, and writes to
#                                       $OUT/gpu_check.log when OUT is set:
#     1. python -m pytest -m gpu        the fused/Triton LIF on CUDA against the reference
#     2. train_speed.py --json          CUDA step times: Triton LIF against snntorch (target >= 3x),
#                                       fp32 against bf16 + channels_last, torch.compile
#     3. the cpu recipe, shortened      CNN 3 epochs, then SNN 1 epoch, on the subset, with bf16
#                                       autocast, channels_last and --compile (fit's CUDA defaults)
# Record what it prints in BENCHMARKS.md ("GPU check").
set -uo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$GPU"
    python3 - "$GPU/cifar10-gpu.npz" <<'PY'
import sys
from pathlib import Path

import numpy as np

src = Path("../shared/data/cifar10-sub.npz")
if not src.is_file():
    sys.exit(f"{src} is absent: --prepare needs the shared data beside the checkout")
z = np.load(src)
y = z["y_train"]
train = np.concatenate([np.flatnonzero(y == c)[:500] for c in range(10)])  # 500 per class
np.savez(sys.argv[1], x_train=z["x_train"][train], y_train=y[train], x_test=z["x_test"][:1000],
         y_test=z["y_test"][:1000], classes=z["classes"])
print(f"wrote {sys.argv[1]}: {len(train)} train / 1000 test images")
PY
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$GPU" "snntorch==1.0.0" || exit 1
    du -sh "$GPU"
    exit 0
fi

[ -f "$GPU/cifar10-gpu.npz" ] || { echo "no $GPU/cifar10-gpu.npz: run benchmarks/gpu_check.sh --prepare here first, then carry $GPU"; exit 2; }
LOG=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$GPU"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
RUNS=$(mktemp -d)
rc=0
step() { echo; echo "=== $1 ($(date -u +%T))"; shift; local t0=$SECONDS; "$@" || rc=1; echo "=== $((SECONDS - t0)) s"; }

echo "=== gpu_check at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ)"
nvidia-smi -L
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
step "pytest -m gpu" python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_triton_lif.py
step "train_speed (CUDA, T=4, batch 64)" python3 benchmarks/train_speed.py --json --compile --repeats 5 --steps 5
step "train_speed, the cpu preset's net (clipq, avg pools)" python3 benchmarks/train_speed.py --json \
    --act clipq --pool avg --variants cnn,snn_triton,cnn_bf16cl,snn_bf16cl --repeats 5 --steps 5
step "cpu recipe on the subset: CNN, 3 epochs, --compile" python3 -m firecut train --preset cpu --cnn \
    --dataset "$GPU/cifar10-gpu.npz" --epochs 3 --compile --quiet --out "$RUNS/cnn"
step "cpu recipe on the subset: SNN (T=4), 1 epoch, --compile" python3 -m firecut train --preset cpu \
    --init "$RUNS/cnn/best.pt" --dataset "$GPU/cifar10-gpu.npz" --epochs 1 --compile --quiet --out "$RUNS/snn"
echo "=== gpu_check done, rc $rc"
exit $rc
