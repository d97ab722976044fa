"""Where and how a step runs: the device, bf16 autocast (CUDA, and CPUs with native bf16), and
torch.compile with its errors turned into one line."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from firecut.errors import FirecutError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FirecutError("--device cuda was asked for, but torch sees no CUDA device; "
                           "use --device cpu or auto")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): autocast then speeds convs
    up; without it bf16 is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, p, lambda: False)() for p in probes)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast for evaluation: on CUDA only, so CPU figures (accuracy, counted spikes)
    are fp32 whatever the CPU."""
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def train_autocast(device: torch.device, amp: bool):
    """bf16 autocast for training steps: on CUDA, and on a CPU with native bf16 (with
    channels_last, a SqueezeNet step is 1.4-2.3x faster there for the CNN, 1.1-1.3x for the SNN).
    Convs run in bf16; the loss, BN's statistics and the LIF membranes accumulate in fp32."""
    if amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def compiled(model: nn.Module) -> nn.Module:
    """torch.compile(model): the same parameters, steps traced and fused on first use."""
    return torch.compile(model)


@contextmanager
def compile_errors(active: bool):
    """A failed torch.compile (no C++ compiler, an unsupported op) as one line naming --compile."""
    if not active:
        yield
        return
    try:
        yield
    except Exception as e:
        if type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise FirecutError(f"torch.compile failed ({type(e).__name__}: {first}); train without "
                               "--compile") from None
        raise
