"""What ranking all 256 keep masks with the supernet costs, against one full training, and how
well its ranking predicts individually fine-tuned accuracy.

    cost  = (supernet training + scoring all 256 masks) / (one mask's fine-tune, the unpruned one)
    tau   = Kendall tau-b between the supernet's held-out loss (lower ranks higher) and the test
            accuracy of the same masks pruned from the base and fine-tuned one by one (the Optuna
            search's trial); also reported for its held-out accuracy, for energy vs energy, and
            for the baseline any ranking must beat: energy per image alone (bigger nets score
            higher) as the predictor of fine-tuned accuracy

The checked masks: the strategy's top K, the unpruned mask (it is the cost unit), then masks
drawn uniformly at random (--draw-seed, 0 by default, so every supernet setting is checked on the
same ones) up to --check in all. Another --draw-seed checks the same supernet out of sample: its
report goes to search_cost-draw<seed>.json beside the seed-0 one, and reuses every finished run.
Every step is a resumable run folder under OUT, so a killed benchmark re-run continues.

The truth is noisy too: --truth-seeds N fine-tunes every checked mask with seeds 0..N-1 and adds
the tau between seeds (how well one fine-tune predicts another: the ceiling for any ranking) and
the tau against the mean over seeds. "pool" is the tau over every mask fine-tuned in OUT/masks so
far, whichever draw checked it: the largest sample, once several draws have run in one OUT.

    python benchmarks/search_cost.py --dataset ../shared/data/cifar10-sub.npz \\
        --base runs/ablate-quick/base-snn/last.pt --out runs/search-cost [--check 12] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from firecut.config import default_data_root
from firecut.masks import ALL_MASKS
from firecut.search import SearchConfig, prepare_base, run_search
from firecut.supernet import kendall_tau
from firecut.supernet_search import fine_tune
from firecut.train import fit as train_fit

FULL = "11111111"


def quiet_fit(cfg, out, **kw):
    return train_fit(cfg, out, show_progress=False, **kw)


def checked(top: list[str], n: int, seed: int = 0) -> list[str]:
    """The top K, the unpruned mask, then a seeded uniform draw, n masks in all (or the top K)."""
    draw = random.Random(seed).sample(ALL_MASKS, len(ALL_MASKS))
    picked = list(top)
    for b in [FULL, *draw]:
        if len(picked) >= n:
            break
        if b not in picked:
            picked.append(b)
    return picked


def tuned_acc(out: Path, seed: int) -> dict[str, float]:
    """Test accuracy of every mask fine-tuned with `seed` in OUT/masks: {bits: acc}."""
    found = {}
    for summary in sorted((out / "masks").glob(f"*-s{seed}/summary.json")):
        found[summary.parent.name[:-len(f"-s{seed}")]] = json.loads(summary.read_text())["acc"]
    return found


def blend(scores: dict) -> dict[str, float]:
    """Higher is better: minus the mean of a mask's place among all 256 by supernet loss (lowest
    first) and by energy (highest first). The prior "bigger nets fine-tune better", which the
    loss corrects; equal weights, not fitted."""
    by_loss = sorted(scores, key=lambda b: scores[b]["loss"])
    by_energy = sorted(scores, key=lambda b: -scores[b]["energy_mj"])
    place = {b: i for i, b in enumerate(by_loss)}
    return {b: -(place[b] + i) / 2 for i, b in enumerate(by_energy)}


def taus(scores: dict, truth: dict[str, float], masks: list[str]) -> dict[str, float]:
    """Kendall tau against `truth` over `masks` of the supernet's loss, of energy alone, and of
    their rank blend."""
    acc = [truth[b] for b in masks]
    mix = blend(scores)
    return {"kendall_tau_loss": kendall_tau([-scores[b]["loss"] for b in masks], acc),
            "kendall_tau_energy_alone": kendall_tau([scores[b]["energy_mj"] for b in masks], acc),
            "kendall_tau_blend": kendall_tau([mix[b] for b in masks], acc)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--base", required=True, help="a trained unpruned spiking SqueezeNet (last.pt)")
    ap.add_argument("--out", default="runs/search-cost")
    ap.add_argument("--check", type=int, default=12, help="masks fine-tuned one by one for tau")
    ap.add_argument("--draw-seed", type=int, default=0, help="seed of the uniform draw of checked masks")
    ap.add_argument("--truth-seeds", type=int, default=1, help="fine-tune checked masks with seeds 0..N-1")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--supernet-epochs", type=int, default=SearchConfig.supernet_epochs)
    ap.add_argument("--score-images", type=int, default=SearchConfig.score_images)
    ap.add_argument("--supernet-lr", type=float, default=SearchConfig.supernet_lr)
    ap.add_argument("--shared-lr", type=float, default=SearchConfig.shared_lr,
                    help="default: the fine-tune's rate")
    ap.add_argument("--test-subset", type=int, default=None, help="class-balanced test images per mask")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.truth_seeds < 1 or args.check < 1:
        ap.error("--truth-seeds and --check take a whole number of at least 1")

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    cfg = SearchConfig(dataset=args.dataset, root=default_data_root(), base=args.base, strategy="supernet",
                       top_k=args.top_k, supernet_epochs=args.supernet_epochs,
                       score_images=args.score_images, device=args.device, saliency_masks=0,
                       supernet_lr=args.supernet_lr, shared_lr=args.shared_lr, test_subset=args.test_subset)
    out = Path(args.out)
    t0 = time.perf_counter()
    rep = run_search(cfg, out, fit=quiet_fit, log=log)
    scores = rep["scores"]
    by_loss = sorted(scores, key=lambda b: scores[b]["loss"])  # the supernet's own order
    picked = checked([r["mask"] for r in rep["rows"]], args.check, args.draw_seed)
    base, base_cfgs = prepare_base(cfg, out, quiet_fit, log)
    walls = {}
    rows = []
    for b in picked:
        t = time.perf_counter()
        rows += fine_tune(cfg, [(by_loss.index(b) + 1, b)], base, base_cfgs, out, quiet_fit, log)
        walls[b] = time.perf_counter() - t
    tuned = {r["mask"]: r for r in rows}
    for seed in range(1, args.truth_seeds):
        fine_tune(replace(cfg, seed=seed), [(by_loss.index(b) + 1, b) for b in picked], base, base_cfgs, out,
                  quiet_fit, log)
    by_seed = [tuned_acc(out, seed) for seed in range(args.truth_seeds)]
    every = sorted(set.intersection(*(set(t) for t in by_seed)))  # fine-tuned with every seed in OUT
    mean = {b: sum(t[b] for t in by_seed) / len(by_seed) for b in every}
    sup = rep["supernet"]
    full_s = tuned[FULL]["train_seconds"]
    ranking_s = sup["train_seconds"] + sup["score_seconds"]
    result = {
        "dataset": args.dataset, "timesteps": sup["timesteps"], "score_images": sup["score_images"],
        "supernet_epochs": args.supernet_epochs, "draw_seed": args.draw_seed,
        "supernet_train_s": sup["train_seconds"], "score_all_256_s": sup["score_seconds"],
        "one_training_s": full_s, "ranking_cost_trainings": ranking_s / full_s,
        "kendall_tau_acc": kendall_tau([scores[b]["acc"] for b in picked], [tuned[b]["acc"] for b in picked]),
        "kendall_tau_energy": kendall_tau([scores[b]["energy_mj"] for b in picked],
                                          [tuned[b]["energy_mj"] for b in picked]),
        **taus(scores, by_seed[0], picked),  # loss, energy alone, blend against seed 0
        "truth_seeds": args.truth_seeds,
        "seed_agreement_tau": [kendall_tau([by_seed[0][b] for b in picked], [t[b] for b in picked])
                               for t in by_seed[1:]],
        "mean_over_seeds": taus(scores, mean, picked),
        "pool": {"masks": len(by_seed[0]), **taus(scores, by_seed[0], sorted(by_seed[0]))},
        "pool_mean_over_seeds": {"masks": len(every), **taus(scores, mean, every)},
        "masks": [{"mask": b, "supernet_rank": by_loss.index(b) + 1, "score_acc": scores[b]["acc"],
                   "score_loss": scores[b]["loss"],
                   "score_energy_mj": scores[b]["energy_mj"], "tuned_acc": tuned[b]["acc"],
                   "tuned_energy_mj": tuned[b]["energy_mj"], "train_s": tuned[b]["train_seconds"],
                   "tuned_acc_by_seed": [t[b] for t in by_seed],
                   "wall_s": round(walls[b], 1)} for b in picked],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    name = "search_cost.json" if args.draw_seed == 0 else f"search_cost-draw{args.draw_seed}.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
        return
    print(f"supernet training {sup['train_seconds']:.0f} s + scoring 256 masks {sup['score_seconds']:.0f} s"
          f" = {result['ranking_cost_trainings']:.2f} x one training ({full_s:.0f} s, the unpruned mask)")
    print(f"Kendall tau over {len(picked)} fine-tuned masks: accuracy {result['kendall_tau_acc']:.2f}, "
          f"loss {result['kendall_tau_loss']:.2f}, energy {result['kendall_tau_energy']:.2f}; "
          f"energy alone as the predictor {result['kendall_tau_energy_alone']:.2f}, "
          f"loss and energy ranks blended {result['kendall_tau_blend']:.2f}")
    for seed, agree in enumerate(result["seed_agreement_tau"], 1):
        print(f"fine-tune seed {seed} against seed 0: tau {agree:.2f}")
    if args.truth_seeds > 1:
        m = result["mean_over_seeds"]
        print(f"against the mean of {args.truth_seeds} seeds: loss {m['kendall_tau_loss']:.2f}, "
              f"energy alone {m['kendall_tau_energy_alone']:.2f}, blended {m['kendall_tau_blend']:.2f}")
    pools = [("pool", "seed 0")]
    if args.truth_seeds > 1:
        pools.append(("pool_mean_over_seeds", f"the mean of {args.truth_seeds} seeds"))
    for key, what in pools:
        p = result[key]
        print(f"pool, every mask fine-tuned in {out}/masks ({p['masks']}), against {what}: "
              f"loss {p['kendall_tau_loss']:.2f}, energy alone {p['kendall_tau_energy_alone']:.2f}, "
              f"blended {p['kendall_tau_blend']:.2f}")
    print("| rank | mask | score loss | score acc | tuned acc | score mJ | tuned mJ |\n" + "|---" * 7 + "|")
    for m in sorted(result["masks"], key=lambda m: m["supernet_rank"]):
        print(f"| {m['supernet_rank']} | {m['mask']} | {m['score_loss']:.3f} | {m['score_acc']:.4f} | "
              f"{m['tuned_acc']:.4f} | "
              f"{m['score_energy_mj']:.5f} | {m['tuned_energy_mj']:.5f} |")


if __name__ == "__main__":
    main()
