"""Fire-module saliency: which modules a trained (CNN or SNN) SqueezeNet can best do without.

Each Fire module's output is multiplied by a gate g = 1. Its saliency is the first-order Taylor
estimate of the loss change when the module is removed (g: 1 -> 0), averaged over N training
batches:

    saliency_m = mean over batches of |dL/dg_m|  at g = 1

For comparison, the exact loss change of that removal on the same batches, with no retraining:

    loss_increase_m = L(g_m = 0) - L(g = 1)

and the Spearman rank correlation between the two. Structural removal (the next squeeze conv
re-wired, docs/concepts.md) needs fine-tuning to mean anything; that is what `firecut ablate` does.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from firecut.energy import EnergyModel, OpCounter
from firecut.errors import FirecutError
from firecut.models.squeezenet import Fire
from firecut.spiking import SpikingNet


def fire_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Fire modules by name (fire2..fire9 that the model keeps), in network order."""
    net = model.net if isinstance(model, SpikingNet) else model
    features = getattr(net, "features", None)
    found = {n: m for n, m in features.named_children() if isinstance(m, Fire)} if features else {}
    if not found:
        raise FirecutError("saliency needs a SqueezeNet with Fire modules")
    return found


@contextmanager
def gated(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Multiplies each module's output by its own scalar gate (a leaf tensor, value 1)."""
    gates = {name: torch.ones((), requires_grad=True) for name in modules}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: out * gates[name].to(out.device))
             for name, m in modules.items()]
    try:
        yield gates
    finally:
        for h in hooks:
            h.remove()


def spearman(a: list[float], b: list[float]) -> float:
    """Pearson correlation of the ranks (ties share their mean rank)."""
    def ranks(v: list[float]) -> torch.Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        order = t.argsort()
        r = torch.empty_like(t)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for value in t.unique():  # average ties
            same = t == value
            r[same] = r[same].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum() / denom) if denom else 0.0


def module_saliency(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Saliency, exact gate-off loss increase and op shares of each Fire module of `model`."""
    if not batches:
        raise FirecutError("saliency needs at least one batch (--batches >= 1)")
    model.eval()
    modules = fire_modules(model)
    grads = {n: 0.0 for n in modules}
    base = 0.0
    with gated(modules) as gates:
        for x, y in batches:
            loss = F.cross_entropy(model(x).float(), y)
            dg = torch.autograd.grad(loss, list(gates.values()))
            for n, g in zip(gates, dg, strict=True):
                grads[n] += abs(float(g))
            base += float(loss.detach())
        base /= len(batches)
        increase = {}
        with torch.no_grad():
            for n in modules:
                gates[n].fill_(0.0)
                off = sum(float(F.cross_entropy(model(x).float(), y)) for x, y in batches) / len(batches)
                gates[n].fill_(1.0)
                increase[n] = off - base
    saliency = {n: v / len(batches) for n, v in grads.items()}
    ops = _op_shares(model, modules, batches[0][0])
    total = sum(saliency.values()) or 1.0
    rows = [{"module": n, "saliency": saliency[n], "share": saliency[n] / total,
             "params": sum(p.numel() for p in m.parameters()), **ops[n],
             "loss_increase": increase[n]} for n, m in modules.items()]
    return {"loss": base, "scores": saliency, "modules": rows,
            "spearman": spearman([r["saliency"] for r in rows], [r["loss_increase"] for r in rows])}


@torch.no_grad()
def _op_shares(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor) -> dict[str, dict]:
    """Each module's share of the network's AC (SNN) and MAC per image, on one batch."""
    spiking = isinstance(model, SpikingNet)
    counter = OpCounter(model, model.timesteps if spiking else 1, spiking)
    with counter:
        counter.begin_batch(len(x))
        model(x)
    report = counter.report(EnergyModel())
    prefix = "net.features." if spiking else "features."
    out = {}
    for n in modules:
        rows = [r for r in report["layers"] if r["name"].startswith(prefix + n + ".")]
        out[n] = {"ac_share": sum(r["ac"] for r in rows) / report["ac"] if report["ac"] else 0.0,
                  "mac_share": sum(r["mac"] for r in rows) / report["mac"] if report["mac"] else 0.0}
    return out


def saliency_of_checkpoint(path: str, dataset: str, root: str, *, batches: int = 8,
                           batch_size: int = 128, device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Loads a checkpoint and ranks its Fire modules on `batches` training batches of `dataset`."""
    from firecut.data import DeviceLoader, dataset_name
    from firecut.training.loop import open_checkpoint

    if batches < 1:
        raise FirecutError("--batches must be >= 1")
    ckpt, data, model, dev = open_checkpoint(path, dataset, root, device, test_subset=1)
    loader = DeviceLoader(data.x_train, data.y_train, batch_size, ckpt["norm"]["mean"],
                          ckpt["norm"]["std"], dev, train=True, augment=False, seed=seed)
    chosen = [b for _, b in zip(range(batches), loader, strict=False)]
    result = module_saliency(model, chosen)
    return {"checkpoint": str(path), "dataset": dataset_name(dataset),
            "spiking": isinstance(model, SpikingNet), "batches": len(chosen),
            "images": sum(len(y) for _, y in chosen), **result}


def format_ranking(result: dict[str, Any]) -> str:
    """The ranking as a plain table, most salient first."""
    rows = sorted(result["modules"], key=lambda r: -r["saliency"])
    lines = [f"{'module':<8} {'saliency':>10} {'share':>7} {'params':>9} {'AC share':>9} "
             f"{'MAC share':>9} {'loss +':>9}"]
    for r in rows:
        lines.append(f"{r['module']:<8} {r['saliency']:>10.4g} {r['share']:>7.1%} {r['params']:>9,} "
                     f"{r['ac_share']:>9.1%} {r['mac_share']:>9.1%} {r['loss_increase']:>9.4f}")
    lines.append(f"loss {result['loss']:.4f} on {result['images']} training images; Spearman rank "
                 f"correlation of saliency with the exact loss increase: {result['spearman']:.2f}")
    return "\n".join(lines)
