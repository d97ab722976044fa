#!/usr/bin/env bash
# Table 3 by the recipe, the schedules not yet trained at full scale (commit in /work/wt-run)
cd /work/runs
export PYTHONPATH=/work/wt-run
PY=/work/main/.venv/bin/python
echo "== start $(date -u +%FT%TZ) commit $(git -C /work/wt-run rev-parse --short HEAD)"
$PY -m firecut ablate --retrain recipe --preset cpu --dataset /work/shared/data/cifar10-full.npz \
   --schedules recipe-rest.yaml --out ablate-recipe-rest
echo "== done rc=$? $(date -u +%FT%TZ)"
