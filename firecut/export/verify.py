"""Does an export compute what its checkpoint computes? Checked on real test images (or, where
there are none, on made inputs: everything below but accuracy).

Three networks take part: the source (the checkpoint's model, as `firecut evaluate` runs it), the
exported graph (firecut.export.unrolled: BN folded, neurons unrolled; in torch, in this process) and the
artifact (reloaded from disk, run by its own runtime). All three see the same normalised images.

Why not just "equal within a tolerance": a spiking net is discontinuous. Folding BN changes float
rounding by ~1e-7 relative. That flips a spike whose membrane sits within that of its threshold,
or a gated max-pool's choice whose running sums straddle a boundary of its grid
(SpikingMaxPool2d.GRID; before that grid, sums equal in exact maths were broken by the last bit
and 1 prediction in 10 moved). A flip changes later currents by a whole weight and spreads. On
the quick SNN, 6 or 7 images in 1,000 still move beyond tolerance and none changes its class
(README, "Export and predict"). A CNN with clip-quant floors can flip a level likewise. So the verdict is:

  layers      (torchscript, onnx; required) the exported graph matches the source layer by layer
              on real inputs, teacher-forced: each folded conv, fed the input its conv + BN got, is
              within `layer_rtol` of their output; each unrolled neuron, fed its LIF's input,
              emits identical spikes.
  exact       every image's scores match the source's (|Δ| <= atol + rtol * |score|) and every
              predicted class is the same. Required of the pt format (the source's own code and
              weights) and of nets without spikes or quantisers (nothing can amplify rounding).
  equivalent  (spiking or clip-quant nets only) not exact, but end to end at least `min_agreement`
              of the predictions are the same and the artifact is not less accurate than the
              source on the labelled images (one-sided McNemar: lost - gained <= z * sqrt(lost +
              gained), lost = images only the source gets right, gained = the reverse).
  failed      anything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from firecut.activations import ClipQuant
from firecut.spiking import LIF, SpikingMaxPool2d, SpikingNet
from firecut.export.unrolled import UnrolledLIF


@dataclass
class VerifyConfig:
    images: int = 1000  # real test images (class-balanced) the artifact is run on
    batch_size: int = 200  # images per forward pass
    atol: float = 1e-4  # a score matches when |Δ| <= atol + rtol * |source score| (score units)
    rtol: float = 1e-4
    layer_rtol: float = 1e-4  # teacher-forced folded conv vs conv + BN, relative to max |output|
    layer_images: int = 200  # images the teacher-forced layer check runs on
    z: float = 3.0  # McNemar: standard deviations the artifact may lose by
    min_agreement: float = 0.99  # equivalent: at least this share of predictions the same


@dataclass
class LayerCheck:
    """Teacher-forced: every block of the exported graph fed the input its source block got."""

    conv_max_rel: float  # worst folded conv: max |Δ| / max |conv + BN output|
    neurons_identical: bool  # every unrolled neuron, fed its LIF's input, emits the same output
    neurons: int  # neurons (LIF layers) compared
    flips: int  # block outputs that differ by a spike / quantiser level (one layer of rounding)
    flips_in_pools: int  # ... of which in blocks with a gated max-pool (SpikingMaxPool2d)
    outputs: int  # block outputs compared (elements, over all steps)


@dataclass
class Check:
    images: int  # images compared
    max_abs_diff: float  # max |Δ score| over images and classes, artifact vs source
    matching: int  # images whose every score is within tolerance
    agreement: float  # share of images with the same predicted class, artifact vs source
    acc_source: float | None  # top-1 accuracy on these images (None: made inputs, no labels)
    acc_artifact: float | None
    lost: int  # images the source classifies right and the artifact wrong
    gained: int  # the reverse
    verdict: str  # exact | equivalent | failed
    reason: str  # one sentence
    layer: LayerCheck | None = None  # teacher-forced, exported graph vs source


def discontinuous(model: nn.Module) -> bool:
    """Spikes or quantisation floors: rounding differences can be amplified into real ones."""
    return isinstance(model, SpikingNet) or any(isinstance(m, ClipQuant) for m in model.modules())


@torch.no_grad()
def run_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])  # (N, K)


def _neurons(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (LIF, UnrolledLIF))}


@torch.no_grad()
def folded_vs_source(source: nn.Module, graph: nn.Module, x: torch.Tensor,
                     batch: int) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    """Both nets on x: (source scores, graph scores, spike flips, source spikes, neuron-steps)."""
    spikes: dict[str, torch.Tensor] = {}
    counts = [0, 0, 0]  # flips, spikes, neuron-steps

    def keep(name):
        return lambda mod, inp, out: spikes.__setitem__(name, out != 0)

    def compare(name):
        def hook(mod, inp, out):
            s = spikes.pop(name)
            counts[0] += int((s != (out != 0)).sum())
            counts[1] += int(s.sum())
            counts[2] += s.numel()
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in _neurons(source).items()]
    hooks += [m.register_forward_hook(compare(n)) for n, m in _neurons(graph).items()]
    try:
        a, b = [], []
        for i in range(0, len(x), batch):
            a.append(source(x[i:i + batch]))
            b.append(graph(x[i:i + batch]))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(a), torch.cat(b), *counts


def _has_gated_pool(block: nn.Module) -> bool:
    return any(isinstance(m, SpikingMaxPool2d) for m in block.modules())


@torch.no_grad()
def layer_check(source: nn.Module, graph: nn.Module, x: torch.Tensor, batch: int = 50) -> LayerCheck:
    """Runs `source` on x with hooks that keep each conv -> BN block's input and outputs (copies: an
    in-place ReLU overwrites the BN output) and each LIF's input and output; feeds the block or
    neuron of the same name in `graph` that input and compares. A flip is a block output off by more
    than 1e-3 of the block's largest output: a changed spike or quantiser level (a continuous
    activation only makes one through a real error)."""
    r = LayerCheck(0.0, True, 0, 0, 0, 0)
    for start in range(0, len(x), batch):
        caps: dict[str, dict[str, torch.Tensor]] = {}
        hooks = []
        for name, m in source.named_modules():
            conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                c = caps.setdefault(name, {})
                hooks += [conv.register_forward_hook(lambda mod, inp, out, c=c: c.update(inp=inp[0].clone())),
                          bn.register_forward_hook(lambda mod, inp, out, c=c: c.update(bn=out.clone())),
                          m.register_forward_hook(lambda mod, inp, out, c=c: c.update(out=out.clone()))]
            elif isinstance(m, LIF):
                c = caps.setdefault(name, {"lif": torch.ones(())})
                hooks.append(m.register_forward_hook(
                    lambda mod, inp, out, c=c: c.update(inp=inp[0].clone(), out=out.clone())))
        try:
            source(x[start:start + batch])
        finally:
            for h in hooks:
                h.remove()
        for name, c in caps.items():
            block = graph.get_submodule(name)
            if "lif" in c:
                r.neurons_identical &= torch.equal(block(c["inp"]), c["out"])
                r.neurons += start == 0
                continue
            y = block.conv(c["inp"])  # the folded conv
            r.conv_max_rel = max(r.conv_max_rel, float((y - c["bn"]).abs().max()
                                                       / c["bn"].abs().max().clamp_min(1e-12)))
            out = block(c["inp"])
            flips = int(((out - c["out"]).abs() > 1e-3 * c["out"].abs().max()).sum())
            r.flips += flips
            r.flips_in_pools += flips if _has_gated_pool(block) else 0
            r.outputs += out.numel()
    return r


def compare(source_scores: torch.Tensor, artifact_scores: np.ndarray, labels: torch.Tensor | None,
            cfg: VerifyConfig) -> dict:
    """Score and prediction agreement of the artifact with the source, and both accuracies
    (labels None, made inputs: accuracy unknown, nothing lost or gained)."""
    a, b = source_scores.double(), torch.from_numpy(np.asarray(artifact_scores)).double()
    diff = (a - b).abs()  # (N, K)
    within = (diff <= cfg.atol + cfg.rtol * a.abs()).all(1)  # (N,)
    pa, pb = a.argmax(1), b.argmax(1)
    c = {"images": len(a), "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
         "matching": int(within.sum()), "agreement": float((pa == pb).double().mean()),
         "acc_source": None, "acc_artifact": None, "lost": 0, "gained": 0}
    if labels is not None:
        ra, rb = pa == labels, pb == labels
        c.update(acc_source=float(ra.double().mean()), acc_artifact=float(rb.double().mean()),
                 lost=int((ra & ~rb).sum()), gained=int((rb & ~ra).sum()))
    return c


def judge(c: dict, *, strict: bool, layer: LayerCheck | None, cfg: VerifyConfig) -> tuple[str, str]:
    """The verdict (exact | equivalent | failed) and its reason; see the module docstring."""
    if layer is not None and (layer.conv_max_rel > cfg.layer_rtol or not layer.neurons_identical):
        return "failed", (f"the exported graph differs from the source layer by layer (folded conv "
                          f"error {layer.conv_max_rel:.2g} > {cfg.layer_rtol:g}, or neurons identical: "
                          f"{layer.neurons_identical})")
    if c["matching"] == c["images"] and c["agreement"] == 1.0:
        return "exact", (f"every score within {cfg.atol:g} + {cfg.rtol:g}·|score| and every "
                         "prediction the same")
    changed = round((1 - c["agreement"]) * c["images"])
    mismatch = (f"{c['images'] - c['matching']} of {c['images']} images differ beyond float tolerance "
                f"(max |Δ| {c['max_abs_diff']:.3g}) and {changed} change their predicted class")
    if strict:
        return "failed", f"{mismatch}, where nothing but float rounding may differ"
    if layer is None:
        return "failed", f"{mismatch}, and there is no layer-by-layer check to explain it"
    if c["agreement"] < cfg.min_agreement:
        return "failed", (f"{mismatch}: more than {1 - cfg.min_agreement:.0%} of predictions changed")
    if c["acc_source"] is None:  # made inputs: no labels
        return "equivalent", (f"{mismatch}: spikes/quantiser levels flipped by rounding; layer by "
                              "layer the same; accuracy not checked (made inputs, no test images)")
    margin = cfg.z * math.sqrt(c["lost"] + c["gained"])
    if c["lost"] - c["gained"] > margin:
        return "failed", (f"{mismatch}, and it is less accurate than the source ({c['lost']} images "
                          f"lost, {c['gained']} gained; more than {cfg.z:g} sigma)")
    return "equivalent", (f"{mismatch}: spikes/quantiser levels flipped by rounding; layer by layer "
                          f"the same, and not less accurate ({c['lost']} lost, {c['gained']} gained)")
