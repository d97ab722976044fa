"""`firecut search --strategy supernet`: rank all 256 keep masks with one weight-sharing training,
then fine-tune only the top K.

    supernet  built from the base SNN (firecut/supernet.py) and trained E epochs with the
              fine-tuning recipe: the re-made branches (fresh convs) and skip branches (copies
              of the base's) at peak rate --supernet-lr, the base's own tensors at --shared-lr
              (default: the fine-tune's own rate); every step trains one mask's path, drawn so
              that every branch gets about the same number of steps (`balanced_draws`).
              N training images (--score-images, class-balanced) are held out of this training:
              they score the masks. OUT/supernet/last.pt after each epoch.
    score     every mask on the held-out images with the shared weights: loss and accuracy,
              with batch norm on each batch's own statistics (a shared BN's running statistics
              mix all masks); AC, MAC and energy per image counted on the same images, in the
              same walk. OUT/supernet/scores.json
    rank      by held-out loss (finer than accuracy on 1,000 images; BENCHMARKS.md):
              pareto = non-dominated sorting of (loss down, energy down), lowest loss first
              within a front; scalar: J = -loss - lambda * energy / energy(all kept)
    top K     pruned from the base and fine-tuned exactly like a trial of the Optuna search
              (OUT/masks/BITS-sSEED), so their figures compare with it; best.pt is chosen among
              them by the Optuna search's rule. ranking.csv lists all 256 masks.

Every stage is resumable: a re-run keeps the trained supernet, the scores and finished masks.
"""

from __future__ import annotations

import csv
import io
import json
import random
import socket
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from firecut.ablate import pareto_front, run_schedule
from firecut.errors import FirecutError
from firecut.masks import ALL_MASKS, keep_of, pattern
from firecut.recipe import pin_settings, step_config
from firecut.io import atomic_write_bytes, atomic_write_text
from firecut.schedules import FIRE_NAMES, Schedule

SCORE_BATCH = 500  # held-out images per walk (batch norm's statistics come from each batch)
SAMPLING = "balanced"  # in search signatures: a supernet trained on other draws is not resumed


def check_values(cfg) -> None:
    for flag, v, lo in (("--top-k", cfg.top_k, 1), ("--supernet-epochs", cfg.supernet_epochs, 1),
                        ("--score-images", cfg.score_images, 1)):
        if v < lo:
            raise FirecutError(f"{flag} must be >= {lo} (got {v})")
    if not cfg.supernet_lr > 0:
        raise FirecutError(f"--supernet-lr must be > 0 (got {cfg.supernet_lr})")
    if cfg.shared_lr is not None and not cfg.shared_lr >= 0:
        raise FirecutError(f"--shared-lr must be >= 0 (got {cfg.shared_lr})")
    if cfg.top_k > len(ALL_MASKS):
        raise FirecutError(f"--top-k {cfg.top_k}: only {len(ALL_MASKS)} keep masks exist")


# ------------------------------------------------------------------------------ training


def balanced_draws(paths: dict[str, set[str]], steps: int, seed: int) -> list[str]:
    """`steps` masks for the supernet's training, each drawn to train the branch trained least so
    far (ties, and the mask among those running through it, drawn at random), counting every
    branch on the drawn path. `paths`: each mask's re-made and skip branches (a mask with none,
    the unpruned one, is never drawn: all its tensors are shared and learn on other paths). Every
    branch then gets about the same number of steps whether 3 masks run through it or 64; drawn
    uniformly, fire9's branch from fire2 got ~3 of ~280 steps and its masks ranked near last.
    Steps are sequential, so the first k draws of a longer run are the draws of a shorter one."""
    rng = random.Random(f"{seed}-balanced")
    names = sorted(set().union(*paths.values()))
    through = {n: [b for b in paths if n in paths[b]] for n in names}
    count = dict.fromkeys(names, 0)
    draws = []
    for _ in range(steps):
        low = min(count.values())
        bits = rng.choice(through[rng.choice([n for n in names if count[n] == low])])
        for n in paths[bits]:
            count[n] += 1
        draws.append(bits)
    return draws


class MaskSampler:
    """A training loader that sets a keep mask on the supernet before each batch: the balanced
    draws (`balanced_draws`) over all 256 masks for `epochs` epochs, fixed by the seed, so a
    resumed epoch draws the same masks."""

    def __init__(self, loader, supernet, seed: int, epochs: int = 1):
        self.loader, self.supernet = loader, supernet
        net = supernet.net
        paths = {b: set(net.path(b)) & net.fresh for b in ALL_MASKS}
        self.draws = balanced_draws(paths, len(loader) * epochs, seed)
        self.x = loader.x

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        start = self.loader.epoch * len(self.loader)
        for i, batch in enumerate(self.loader):
            self.supernet.net.set_mask(self.draws[start + i])
            yield batch


def _split(data, n: int, seed: int):
    """(train indices, held-out indices): n class-balanced training images held out."""
    from firecut.data import balanced_subset

    if n > len(data.y_train) // 2:
        raise FirecutError(f"--score-images {n} would hold out more than half of the "
                           f"{len(data.y_train)} training images; give at most {len(data.y_train) // 2}")
    held = balanced_subset(data.y_train, n, seed)
    rest = torch.ones(len(data.y_train), dtype=torch.bool)
    rest[held] = False
    return rest.nonzero().flatten(), held


def _load_state(path: Path, sig: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FirecutError(f"{path}: unreadable ({e.__class__.__name__}); delete it to train the "
                           "supernet again") from None
    ours = isinstance(state, dict) and state.get("kind") == "firecut-supernet"
    if not ours or state.get("signature") != sig:
        raise FirecutError(f"{path} is not this search's supernet; delete it or use another --out")
    return state


def supernet_optimizer(sup, run_cfg, fresh_lr: float, shared_lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer with two peak rates: `fresh_lr` for the branches the base did not
    have, `shared_lr` for the base's own tensors (0 freezes them: every path then keeps the base's
    weights and only its re-made connections learn)."""
    from firecut.supernet import fresh_parameters
    from firecut.train import make_optimizer

    fresh = fresh_parameters(sup)
    if shared_lr == 0:
        for p in sup.parameters():
            p.requires_grad_(id(p) in fresh)
    recipe = make_optimizer(sup, run_cfg)  # (decay, no decay) groups
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": ps, "lr": lr}
              for g in recipe.param_groups
              for lr, ps in ((fresh_lr, [p for p in g["params"] if id(p) in fresh]),
                             (shared_lr, [p for p in g["params"] if id(p) not in fresh]))
              if ps]
    return type(recipe)(groups, **recipe.defaults)


def train_supernet(cfg, base: dict[str, Any], data, device, folder: Path, sig: dict[str, Any],
                   log: Callable[[str], None]):
    """The trained supernet (resumed from folder/last.pt), the held-out indices, its run config."""
    from firecut.data import DeviceLoader
    from firecut.supernet import build_supernet
    from firecut.train import Progress, make_scheduler, train_epoch

    run_cfg = step_config(_settings(cfg), "snn", cfg.seed)
    run_cfg.train.epochs = cfg.supernet_epochs
    sup = build_supernet(base)
    sup.set_timesteps(run_cfg.spiking.timesteps)
    sup.to(device)
    train_idx, held = _split(data, cfg.score_images, cfg.seed)
    mean, std = base["norm"]["mean"], base["norm"]["std"]
    loader = DeviceLoader(data.x_train[train_idx], data.y_train[train_idx], run_cfg.train.batch_size,
                          mean, std, device, train=True, augment=run_cfg.data.augment, seed=cfg.seed)
    if len(loader) == 0:
        raise FirecutError(f"{len(train_idx)} training images is fewer than one batch of "
                           f"{run_cfg.train.batch_size}; lower --batch-size")
    shared_lr = run_cfg.train.lr if cfg.shared_lr is None else cfg.shared_lr  # the fine-tune's rate
    opt = supernet_optimizer(sup, run_cfg, cfg.supernet_lr, shared_lr)
    sched = make_scheduler(opt, len(loader), run_cfg)
    start, seconds = 0, 0.0
    state = _load_state(folder / "last.pt", sig)
    if state is not None:
        sup.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, seconds = state["epoch"], state["train_seconds"]
        if start < cfg.supernet_epochs:
            log(f"supernet: resuming after epoch {start}/{cfg.supernet_epochs}")
    sampler = MaskSampler(loader, sup, cfg.seed, epochs=cfg.supernet_epochs)
    progress = Progress()
    for epoch in range(start, cfg.supernet_epochs):
        loader.epoch = epoch
        bar = progress.bar(f"supernet epoch {epoch + 1}/{cfg.supernet_epochs}", len(loader))
        try:
            tr = train_epoch(sup, sampler, opt, sched, run_cfg, bar)
        finally:
            bar.close()
        if not torch.isfinite(torch.tensor(tr["train_loss"])):
            raise FirecutError(f"the supernet diverged at epoch {epoch + 1}; lower the learning rate")
        seconds += tr["seconds"]
        log(f"supernet epoch {epoch + 1}/{cfg.supernet_epochs}: loss {tr['train_loss']:.3f}, "
            f"{tr['img_s']:.0f} img/s, {tr['seconds']:.0f}s")
        payload = {"kind": "firecut-supernet", "signature": sig, "epoch": epoch + 1,
                   "train_seconds": seconds, "state_dict": sup.state_dict(),
                   "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
        atomic_write_bytes(folder / "last.pt", lambda f: torch.save(payload, f))
    return sup, held, run_cfg, seconds


# ------------------------------------------------------------------------------ scoring


@torch.no_grad()
def score_masks(sup, loader, energy=None, amp: bool = True) -> dict[str, dict[str, float]]:
    """Per mask, through the shared weights (one walk per batch): held-out accuracy, mean loss,
    and AC, MAC and energy per image by DESIGN §2's rule (the stem's MACs, once per image, plus
    the exact accumulates of every conv after it, which all read spikes)."""
    from firecut.energy import EnergyModel, dense_macs_per_row
    from firecut.supernet import batch_statistics
    from firecut.train import autocast

    energy = energy or EnergyModel()
    device = loader.x.device
    T = sup.timesteps
    correct = {b: torch.zeros((), device=device) for b in ALL_MASKS}
    loss = {b: torch.zeros((), device=device) for b in ALL_MASKS}
    ac = {b: torch.zeros((), dtype=torch.float64, device=device) for b in ALL_MASKS}
    n, mac = 0, 0
    with batch_statistics(sup), autocast(device, amp):
        for x, y in loader:
            for bits, r, acc_ops in sup.net.walk(x):  # r (T*B, K)
                logits = r.view(T, -1, r.shape[-1]).mean(0).float()  # (B, K)
                correct[bits] += (logits.argmax(1) == y).sum()
                loss[bits] += F.cross_entropy(logits, y, reduction="sum")
                ac[bits] += acc_ops
            n += len(y)
            stem = sup.net.stem.conv
            mac = dense_macs_per_row(stem, x[:1], stem(x[:1]))
    scores = {}
    for bits in ALL_MASKS:
        ac_img = float(ac[bits]) / n
        scores[bits] = {"acc": float(correct[bits]) / n, "loss": float(loss[bits]) / n, "ac": ac_img,
                        "mac": float(mac), "energy_mj": energy.energy_mj(ac_img, mac)}
    return scores


def rank(scores: dict[str, dict[str, float]], objective: str, lam: float) -> list[str]:
    """Masks best first by held-out loss, not accuracy: on 1,000 images accuracy moves in coarse
    steps and sits near chance for every weak path, while the loss still orders them (as
    predictors of fine-tuned accuracy the two tie, BENCHMARKS.md). pareto = non-dominated fronts of
    (loss down, energy down) in turn, lowest loss first in each; scalar = J = -loss - lambda *
    energy / energy(all kept)."""
    if objective == "scalar":
        e_full = scores["1" * len(FIRE_NAMES)]["energy_mj"]
        return sorted(scores, key=lambda b: scores[b]["loss"] + lam * scores[b]["energy_mj"] / e_full)
    left, order = list(scores), []
    while left:
        pts = [(scores[b]["energy_mj"], -scores[b]["loss"]) for b in left]
        front = [left[i] for i in pareto_front(pts)]
        order += sorted(front, key=lambda b: (scores[b]["loss"], scores[b]["energy_mj"]))
        left = [b for b in left if b not in front]
    return order


def supernet_scores(cfg, base_path: str, out: Path, sig: dict[str, Any],
                    log: Callable[[str], None]) -> dict[str, Any]:
    """OUT/supernet/scores.json: trains the supernet (or resumes it) and scores all 256 masks."""
    from firecut.checkpoint import load_checkpoint
    from firecut.data import DeviceLoader, load_data
    from firecut.train import resolve_device

    folder = out / "supernet"
    path = folder / "scores.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("signature") == sig:
            return saved
        raise FirecutError(f"{path} was scored with other settings; delete {folder} or use another --out")
    folder.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    base = load_checkpoint(base_path)
    data = load_data(cfg.dataset, cfg.root, cfg.train_subset, cfg.test_subset, cfg.seed)
    sup, held, run_cfg, train_s = train_supernet(cfg, base, data, device, folder, sig, log)
    log(f"supernet: scoring all {len(ALL_MASKS)} masks on {len(held)} held-out training images")
    loader = DeviceLoader(data.x_train[held], data.y_train[held], SCORE_BATCH, base["norm"]["mean"],
                          base["norm"]["std"], device)
    t0 = time.perf_counter()
    scores = score_masks(sup, loader, amp=run_cfg.train.amp)
    score_s = time.perf_counter() - t0
    log(f"supernet: scored {len(scores)} masks in {score_s:.0f}s")
    result = {"signature": sig, "train_seconds": round(train_s, 1), "score_seconds": round(score_s, 1),
              "score_images": len(held), "timesteps": sup.timesteps, "scores": scores}
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return result


# ------------------------------------------------------------------------------ the search


def _settings(cfg):
    from firecut.search import _ablate_config

    return _ablate_config(cfg)


def _row(rank_i: int, bits: str, summary: dict[str, Any], run: Path) -> dict[str, Any]:
    return {"trial": rank_i, "mask": bits, "source": f"supernet:#{rank_i}", "state": "complete",
            **{k: summary[k] for k in ("acc", "f1", "energy_mj", "ac", "mac", "params", "firing_rate",
                                       "train_seconds")},
            "objective": None, "on_front": False, "host": socket.gethostname(), "run": str(run)}


def fine_tune(cfg, masks: list[tuple[int, str]], base: str, base_cfgs, out: Path, fit: Callable,
              log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Prunes the base to each (rank, mask) and fine-tunes it like an Optuna trial; rows."""
    rows = []
    for i, (r, bits) in enumerate(masks):
        log(f"mask {i + 1}/{len(masks)}: supernet rank {r} [{pattern(bits)}]")
        summary = run_schedule(_settings(cfg), Schedule(bits, keep_of(bits)), cfg.seed, base, base_cfgs,
                               out, fit, folder="masks")
        rows.append(_row(r, bits, summary, out / "masks" / f"{bits}-s{cfg.seed}"))
    pts = [(r["energy_mj"], r["acc"]) for r in rows]
    for i in pareto_front(pts):
        rows[i]["on_front"] = True
    return rows


def run_supernet_search(cfg, out: Path, fit: Callable, log: Callable[[str], None]) -> dict[str, Any]:
    from firecut.search import prepare_base, signature
    from firecut.search_report import choose_best, plot_pareto, trials_csv, write_best
    from firecut.supernet import BRANCHES, kendall_tau

    check_values(cfg)
    out.mkdir(parents=True, exist_ok=True)
    base, base_cfgs = prepare_base(cfg, out, fit, log)
    sig = {**signature(cfg, base), "supernet_epochs": cfg.supernet_epochs, "supernet_lr": cfg.supernet_lr,
           "shared_lr": cfg.shared_lr, "score_images": cfg.score_images, "branches": BRANCHES,
           "sampling": SAMPLING}
    sig.pop("objective", None)
    pin_settings(out, "supernet.yaml", {**sig, "objective": cfg.objective, "top_k": cfg.top_k},
                 "a supernet search with different settings")
    result = supernet_scores(cfg, base, out, sig, log)
    scores = result["scores"]
    order = rank(scores, cfg.objective, cfg.lam)
    rows = fine_tune(cfg, [(i + 1, b) for i, b in enumerate(order[: cfg.top_k])], base, base_cfgs, out,
                     fit, log)
    best, reason = choose_best(rows, cfg.objective, cfg.max_energy_mj)
    tau = (kendall_tau([-scores[r["mask"]]["loss"] for r in rows], [r["acc"] for r in rows])
           if len(rows) > 2 else None)
    atomic_write_text(out / "ranking.csv", ranking_csv(order, scores, rows))
    atomic_write_text(out / "trials.csv", trials_csv(rows))
    atomic_write_text(out / "pareto.md", supernet_markdown(cfg, result, order, rows, best, reason, tau))
    plot_pareto(rows, best, out / "pareto.png")
    note = write_best(best, reason, out)
    atomic_write_text(out / "best.json", json.dumps({"best": best, "reason": reason, "note": note,
                                                     "kendall_tau_top_k": tau}, indent=2) + "\n")
    return {"rows": rows, "front": [r for r in rows if r["on_front"]], "best": best, "reason": reason,
            "best_pt": None if note else str(out / "best.pt"), "note": note, "order": order,
            "scores": scores, "kendall_tau": tau,
            "supernet": {k: v for k, v in result.items() if k != "scores"}}


# ------------------------------------------------------------------------------ reports


def ranking_csv(order: list[str], scores: dict[str, dict[str, float]], rows: list[dict[str, Any]]) -> str:
    tuned = {r["mask"]: r for r in rows}
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["rank", "mask", "kept", "score_acc", "score_loss", "score_energy_mj", "tuned_acc",
                "tuned_energy_mj"])
    for i, b in enumerate(order):
        s, t = scores[b], tuned.get(b, {})
        w.writerow([i + 1, b, " ".join(keep_of(b)), f"{s['acc']:.4f}", f"{s['loss']:.4f}",
                    f"{s['energy_mj']:.6f}", t.get("acc", ""), t.get("energy_mj", "")])
    return buf.getvalue()


def supernet_markdown(cfg, result, order, rows, best, reason, tau) -> str:
    from firecut.search_report import _row_md

    scores = result["scores"]
    head = ("| Rank | " + " | ".join(f"F{m[4:]}" for m in FIRE_NAMES) +
            " | Acc | Params | Energy (mJ) | Source |\n|" + "---|" * (len(FIRE_NAMES) + 5))
    tuned = {r["mask"]: r for r in rows}
    lines = [f"# Mask search: supernet ({cfg.objective})", "",
             f"One weight-sharing supernet trained {cfg.supernet_epochs} epoch(s) "
             f"({result['train_seconds']:.0f} s) ranked all {len(order)} masks on "
             f"{result['score_images']} held-out training images ({result['score_seconds']:.0f} s); "
             f"the top {len(rows)} were then fine-tuned like Optuna trials.", "",
             "## Supernet ranking (top 20; all in ranking.csv)", "",
             "| Rank | " + " | ".join(f"F{m[4:]}" for m in FIRE_NAMES) +
             " | Score loss | Score acc | Score energy (mJ) | Fine-tuned acc |",
             "|" + "---|" * (len(FIRE_NAMES) + 5)]
    for i, b in enumerate(order[:20]):
        t = tuned.get(b)
        marks = " | ".join("✓" if c == "1" else "–" for c in b)
        lines.append(f"| {i + 1} | {marks} | {scores[b]['loss']:.3f} | {scores[b]['acc']:.4f} | "
                     f"{scores[b]['energy_mj']:.5f} | "
                     f"{format(t['acc'], '.4f') if t else ''} |")
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["energy_mj"])
    lines += ["", "## Fine-tuned masks: Pareto front", "", head, *map(_row_md, front), "",
              "## Chosen (best.pt)", "", head, _row_md(best), "", f"Chosen as {reason}.", ""]
    if tau is not None:
        lines += [f"Kendall tau between supernet loss (low to high) and fine-tuned accuracy over these "
                  f"{len(rows)} masks: {tau:.2f} (within the top of the ranking only).", ""]
    return "\n".join(lines)

