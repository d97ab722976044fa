"""Evaluation: top-1 accuracy, macro F1 and (on the last pass) AC/MAC and energy, always in fp32
and NCHW so that a checkpoint's figures are the same wherever it is evaluated."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from firecut.data import DeviceLoader
from firecut.energy import EnergyModel, OpCounter
from firecut.spiking import SpikingNet, is_channels_last
from firecut.training.device import autocast


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts, rows = true class, columns = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def macro_f1(cm: torch.Tensor) -> float:
    """Mean over classes present in targets or predictions of F1 = 2 TP / (2 TP + FP + FN)."""
    tp = cm.diag().double()
    fp = cm.sum(0).double() - tp
    fn = cm.sum(1).double() - tp
    present = (cm.sum(0) + cm.sum(1)) > 0
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return float(f1[present].mean()) if present.any() else 0.0


def memory_format_of(model: nn.Module) -> torch.memory_format:
    """channels_last if the model's 4-D weights are stored NHWC, else contiguous_format (a 1x1
    conv's weight is both, so any weight that tells decides)."""
    nhwc = any(is_channels_last(p) for p in model.parameters())
    return torch.channels_last if nhwc else torch.contiguous_format


@contextmanager
def canonical_layout(model: nn.Module):
    """The model in NCHW for the block, then back in the layout it had: evaluation and counting
    then give what `firecut evaluate` gives for the checkpoint (a spike is a discontinuous function
    of the membrane, so the other layout's float rounding moves a few spikes)."""
    layout = memory_format_of(model)
    if layout == torch.contiguous_format:
        yield
        return
    model.to(memory_format=torch.contiguous_format)  # in place: the same Parameter objects
    try:
        yield
    finally:
        model.to(memory_format=layout)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, num_classes: int, *,
             energy: EnergyModel | None = None, amp: bool = True) -> dict[str, Any]:
    """Test-set accuracy, macro F1, mean loss; with `energy`, AC/MAC/energy per image too.
    Runs in NCHW whatever the training layout (`canonical_layout`)."""
    with canonical_layout(model):
        return _evaluate(model, loader, num_classes, energy=energy, amp=amp)


def _evaluate(model: nn.Module, loader: DeviceLoader, num_classes: int, *,
              energy: EnergyModel | None, amp: bool) -> dict[str, Any]:
    model.eval()
    device = loader.x.device
    spiking = isinstance(model, SpikingNet)
    counter = OpCounter(model, model.timesteps if spiking else 1, spiking) if energy else None
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum, n = torch.zeros((), device=device), 0
    with counter if counter else nullcontext(), autocast(device, amp):
        for x, y in loader:
            if counter:
                counter.begin_batch(len(x))
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            cm += confusion(logits.argmax(1), y, num_classes)
            n += len(y)
    out = {"acc": float(cm.diag().sum()) / max(n, 1), "f1": macro_f1(cm),
           "loss": float(loss_sum) / max(n, 1), "test_images": n}
    if counter:
        out.update(counter.report(energy))
    return out
