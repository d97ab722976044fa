"""Distillation of a converted SNN from the CNN it was converted from (`train.distill`).

The converted SNN starts as a copy of its CNN and should end as close to it as T steps allow, so
the CNN (frozen, eval mode) is the natural teacher: Hinton et al. 2015,

    L = (1 - a) CE_ls(s, y) + a tau^2 KL( softmax(t / tau) || softmax(s / tau) )

with s, t the SNN's and the CNN's logits (B, K), `a` = train.distill, tau = train.distill_temp,
CE_ls the cross-entropy with label smoothing; tau^2 keeps the soft term's gradient on the scale
of the hard one's. The teacher costs one CNN forward per step (no backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from firecut.checkpoint import configs_of, load_checkpoint, model_from_checkpoint, require_fits
from firecut.errors import FirecutError


def load_teacher(path: str, num_classes: int, image_size: int, device: torch.device,
                 channels_last: bool) -> nn.Module:
    """The CNN of checkpoint `path` (checked again on resume: the file may have changed), frozen,
    in eval mode (BN on its running statistics)."""
    ckpt = load_checkpoint(path)
    if configs_of(ckpt)[1].enabled:
        raise FirecutError(f"--init {path} is a spiking net; the distillation teacher is the CNN "
                           "the SNN was converted from")
    require_fits(ckpt, num_classes, image_size, f"--init {path}")
    teacher = model_from_checkpoint(ckpt).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(memory_format=torch.channels_last) if channels_last else teacher


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                 weight: float, temp: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - weight) * CE(student, y) + weight * temp^2 * KL(teacher || student) at temperature
    `temp`; logits (B, K) in fp32, labels (B,)."""
    hard = F.cross_entropy(student_logits, y, label_smoothing=label_smoothing)
    soft = F.kl_div(F.log_softmax(student_logits / temp, dim=1),
                    F.log_softmax(teacher_logits / temp, dim=1), reduction="batchmean", log_target=True)
    return (1.0 - weight) * hard + weight * temp * temp * soft
