"""One epoch of training: the optimiser (weight decay on conv/linear weights only), the per-step
schedule (linear warm-up, cosine decay) and the step loop under autocast."""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from firecut.config import RunConfig
from firecut.training.device import train_autocast
from firecut.training.distill import distill_loss


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """Weight decay on conv/linear weights only; BN, biases, thresholds and clips are exempt."""
    t = cfg.train
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr)


def make_scheduler(opt: torch.optim.Optimizer, steps_per_epoch: int, cfg: RunConfig):
    """lr(step) = peak * step/warmup during warm-up, then peak * (1 + cos(pi * progress)) / 2."""
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warmup = int(cfg.train.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_epoch(model, loader, opt, sched, cfg: RunConfig,
                on_step: Callable[[int, int, Callable[[], str]], None] | None = None,
                teacher: nn.Module | None = None) -> dict[str, float]:
    """One pass over `loader`; `on_step(step, steps, info)` after each step (see training.loop.fit).
    With a `teacher`, the loss is training.distill's (cfg.train.distill, distill_temp)."""
    t = cfg.train
    model.train()
    device = loader.x.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    n, t0 = 0, time.perf_counter()

    def info() -> str:  # float() waits for the device: only when someone shows it
        return f"loss {float(loss_sum) / n:.3f}  {n / (time.perf_counter() - t0):.0f} img/s"

    for i, (x, y) in enumerate(loader):
        with train_autocast(device, t.amp):
            logits = model(x)  # (B, K)
            if teacher is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing)
            else:
                with torch.no_grad():
                    target = teacher(x).float()
                loss = distill_loss(logits.float(), target, y, t.distill, t.distill_temp,
                                    t.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        n += len(y)
        if on_step is not None:
            on_step(i, len(loader), info)
    seconds = time.perf_counter() - t0
    return {"train_loss": float(loss_sum) / max(n, 1), "train_acc": float(correct) / max(n, 1),
            "seconds": seconds, "img_s": n / seconds if seconds else 0.0}
