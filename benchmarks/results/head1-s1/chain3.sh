#!/bin/bash
# continues chain.sh (stopped after launching head1-s1/cnn, pid 10915) with the seed-1 replicate
# converting last.pt instead of best.pt (no checkpoint chosen on the test set); worktree at 89c0285
export PYTHONPATH=/work/wt-run
PY=/work/main/.venv/bin/python
D=/work/shared/data/cifar10-full.npz
t() { echo "== $(date -u +%FT%TZ) $*"; /usr/bin/time -f "wall %e s" "$@"; echo "== $(date -u +%FT%TZ) rc=$?"; }
cd /work/runs
while kill -0 10915 2>/dev/null; do sleep 10; done
t $PY -m firecut train --preset cpu --init head1-s1/cnn/best.pt --seed 1 --dataset $D --out head1-s1/snn
t $PY -m firecut train --preset cpu --cnn --keep fire2,fire4,fire6,fire8 --epochs 60 --seed 1 --dataset $D --out alt1-e60-kd-s1/cnn
t $PY -m firecut train --preset cpu --init alt1-e60-kd-s1/cnn/last.pt --distill 0.5 --seed 1 --dataset $D --out alt1-e60-kd-s1/snn
