#!/bin/bash
# session 2026-12-02b: best-combo runs + Head-1 seed 1, from worktree at 792fb8f
export PYTHONPATH=/work/wt-run
PY=/work/main/.venv/bin/python
D=/work/shared/data/cifar10-full.npz
t() { echo "== $(date -u +%FT%TZ) $*"; /usr/bin/time -f "wall %e s" "$@"; echo "== $(date -u +%FT%TZ) rc=$?"; }
cd /work/runs
t $PY -m firecut train --preset cpu --cnn --keep fire2,fire4,fire6,fire8 --epochs 60 --seed 0 --dataset $D --out alt1-e60-kd/cnn
t $PY -m firecut train --preset cpu --init alt1-e60-kd/cnn/best.pt --distill 0.5 --seed 0 --dataset $D --out alt1-e60-kd/snn
t $PY -m firecut train --preset cpu --cnn --keep fire2,fire3,fire4,fire5,fire9 --seed 1 --dataset $D --out head1-s1/cnn
t $PY -m firecut train --preset cpu --init head1-s1/cnn/best.pt --seed 1 --dataset $D --out head1-s1/snn
t $PY -m firecut train --preset cpu --cnn --keep fire2,fire4,fire6,fire8 --epochs 60 --seed 1 --dataset $D --out alt1-e60-kd-s1/cnn
t $PY -m firecut train --preset cpu --init alt1-e60-kd-s1/cnn/best.pt --distill 0.5 --seed 1 --dataset $D --out alt1-e60-kd-s1/snn
