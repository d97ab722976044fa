#!/usr/bin/env bash
# Alt-1 seed 1 by the recipe (the CNN, then its SNN), after the Table 3 ablation (chain.sh) ends
cd /work/runs
while kill -0 1856 2>/dev/null; do sleep 10; done
export PYTHONPATH=/work/wt-run
PY=/work/main/.venv/bin/python
D=/work/shared/data/cifar10-full.npz
echo "== alt1-s1 start $(date -u +%FT%TZ) commit $(git -C /work/wt-run rev-parse --short HEAD)"
$PY -m firecut train --preset cpu --cnn --keep fire2,fire4,fire6,fire8 --seed 1 --dataset $D --out alt1-s1/cnn > alt1-s1-cnn.log 2>&1
echo "== cnn rc=$? $(date -u +%FT%TZ)"
$PY -m firecut train --preset cpu --init alt1-s1/cnn/best.pt --seed 1 --dataset $D --out alt1-s1/snn > alt1-s1-snn.log 2>&1
echo "== snn rc=$? $(date -u +%FT%TZ)"
