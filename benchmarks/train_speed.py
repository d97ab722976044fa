"""Training speed of the SqueezeNet CNN, its spiking twin (each LIF path) and an snntorch baseline.

One training step = forward, cross-entropy, backward, SGD update (and a CUDA sync), batch B of
32x32 images, 10 classes. With t_cnn and t_snn the step times of the CNN and a T-step SNN,

    lif_overhead = t_snn / (T x t_cnn)

1.0 means a T-step SNN costs exactly T CNN steps (T times the conv work: every layer after the
first neuron sees T*B rows); above it is the price of the neurons and their time loop, below it
what `encode_once` saves (the stem runs once on B rows, not on T*B). Images per second = B / t.

Variants, all the same network (default ModelConfig: SqueezeNet-1.1, ReLU CNN; SpikingConfig
from scratch: beta 0.9, per-channel learnable thresholds 1.0, atan surrogate, subtract reset,
v_init 0.5, encode_once), built from the same seed:

    cnn            the CNN
    snn_reference  firecut's SNN with every LIF `fused = False`: autograd through each step
    snn_fused      firecut's fused autograd.Function LIF (FIRECUT_TRITON=0); firecut's CPU path
    snn_triton     (CUDA) the Triton kernels, firecut's default on CUDA
    snntorch       the same network stepped the tutorial way: a Python loop over T calling the
                   whole network on the (B, ...) image, one snntorch.Leaky per LIF keeping its
                   membrane between steps, readout = mean of the T outputs
                   (benchmarks/snntorch_baseline.py: fairness choices, and a check that it is
                   the same function as firecut's)
    snn_compiled   (--compile) firecut's default SNN under torch.compile; dropped if compiling fails
    cnn_bf16cl     the CNN as `fit` trains it by default: bf16 autocast (CUDA, or a CPU with native
    snn_bf16cl     bf16; else fp32) and channels_last model and batches; snn_bf16cl likewise the
                   default SNN path. The other variants are fp32 NCHW, so each pair is side by side.

`--act clipq --pool avg` times the `cpu` preset's network (4-level clip-quant CNN, average pools;
its SNN is the converted net: IF neurons, per-channel thresholds) instead of the defaults.

speedup_vs_snntorch = snn_img_s / snntorch_img_s, snn_* = firecut's default path on the device
(fused on CPU, Triton on CUDA). Targets: CPU (2 cores, B 64, T 4) lif_overhead <= 1.10 and
speedup_vs_snntorch >= 1.25; CUDA speedup_vs_snntorch >= 3.

A shared machine's speed drifts by tens of percent between runs, so the variants are interleaved:
each of `--repeats` rounds runs `--steps` steps of every variant, one step of each in turn
(A B C A B C ...; the order rotated per round, so no variant always runs first or after the same
neighbour); a variant's time is the median over rounds of its per-round median step.
round_spread = the largest (slowest round / fastest round) of any variant: above 1.5 the machine
was busy (2 cores shared with another job slow a step 4-15x, not 2x) and a warning is printed.

    python benchmarks/train_speed.py [--batch-size 64] [--timesteps 4] [--repeats 7] [--steps 5]
                                     [--variants cnn,snn_fused,snntorch] [--compile] [--json]
                                     [--act clipq --pool avg]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # snntorch_baseline, run as a script

from snntorch_baseline import check_trains, from_firecut, same_function_gap  # noqa: E402

from firecut.config import ModelConfig, SpikingConfig  # noqa: E402
from firecut.network import build_network  # noqa: E402
from firecut.training.device import cpu_has_bf16, train_autocast  # noqa: E402

NET = {"act": "relu", "pool": "max"}  # --act, --pool: the CNN's activation and pools

NUM_CLASSES, IMAGE_SIZE = 10, 32
VARIANTS = ("cnn", "snn_reference", "snn_fused", "snn_triton", "snntorch", "snn_compiled",
            "cnn_bf16cl", "snn_bf16cl")
FAST = ("cnn_bf16cl", "snn_bf16cl")  # bf16 autocast + channels_last, as fit trains


@dataclass
class Variant:
    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    env: dict[str, str] = field(default_factory=dict)  # environment while it runs
    rounds: list[float] = field(default_factory=list)  # per-round median step, seconds
    fast: bool = False  # bf16 autocast (where fit uses it) + channels_last input


@contextmanager
def environ(env: dict[str, str]):
    """Sets `env` for the block, then restores what was there."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def step_time(model, opt, x, y, steps: int, sync, fast: bool = False) -> float:
    """Median seconds per training step (forward, backward, SGD update) over `steps`; `fast`:
    under fit's training autocast (bf16 where the device has it natively)."""
    times = []
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(steps):
        t0 = time.perf_counter()
        with train_autocast(x.device, fast):
            loss = F.cross_entropy(model(x).float(), y)  # model: (B, 3, H, W) -> (B, K)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def triton_missing(dev: torch.device) -> str | None:
    """Why the Triton path cannot run on `dev`, or None when it can."""
    if dev.type != "cuda":
        return "CUDA only"
    try:
        from firecut.spiking import triton_lif
    except ImportError as e:
        return f"firecut.spiking.triton_lif not importable ({e})"
    with environ({"FIRECUT_TRITON": "1"}):
        if not triton_lif.available(torch.empty(1, device=dev)):
            return "triton not installed"
    return None


def net_config() -> ModelConfig:
    return ModelConfig(act=NET["act"], pool=NET["pool"])


def firecut_snn(timesteps: int) -> nn.Module:
    """firecut's SNN with the from-scratch defaults (a clip-quant net: converted, IF neurons);
    the same weights every call (seed 0)."""
    torch.manual_seed(0)
    converted = "cnn.pt" if NET["act"] == "clipq" else None
    return build_network(net_config(), SpikingConfig(enabled=True, timesteps=timesteps, init=converted),
                         NUM_CLASSES, IMAGE_SIZE)


def build_model(name: str, timesteps: int, x: torch.Tensor) -> nn.Module:
    """The network of variant `name`, on x's device, in training mode."""
    if name in ("cnn", "cnn_bf16cl"):
        torch.manual_seed(0)
        model = build_network(net_config(), SpikingConfig(enabled=False), NUM_CLASSES, IMAGE_SIZE)
    elif name == "snntorch":
        snn = firecut_snn(timesteps).to(x.device)
        model = from_firecut(snn).to(x.device)
        check_baseline(snn, model, x)
    else:
        model = firecut_snn(timesteps).to(x.device)
        if name == "snn_reference":
            for n in model.neurons():
                n.fused = False  # per-step autograd loop (lif_reference)
        elif name == "snn_compiled":
            model = torch.compile(model)  # compiles lazily: failures surface in warm_up
    model = model.to(x.device).train()
    return model.to(memory_format=torch.channels_last) if name in FAST else model


def check_baseline(snn: nn.Module, baseline: nn.Module, x: torch.Tensor) -> None:
    """Once, before timing: the baseline trains, and computes firecut's function (stderr)."""
    with environ({"FIRECUT_TRITON": "0"}):
        out_gap, grad_gap = same_function_gap(snn, baseline, x[:4])
    check_trains(baseline.train(), x, NUM_CLASSES)
    print(f"snntorch baseline: output (2, {NUM_CLASSES}), gradients reach every parameter; vs "
          f"firecut's SNN (plain pools, eval BN): max |output diff| {out_gap:.1e}, max relative "
          f"gradient diff {grad_gap:.1e}", file=sys.stderr)


def build_variants(names: list[str], timesteps: int, x: torch.Tensor) -> dict[str, Variant]:
    variants = {}
    for name in names:
        model = build_model(name, timesteps, x)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        env = {"FIRECUT_TRITON": "1" if name == "snn_triton" else "0"}
        if name in ("cnn", "snn_compiled") + FAST:
            env = {}  # the device's default
        variants[name] = Variant(name, model, opt, env, fast=name in FAST)
    return variants


def warm_up(variants: dict[str, Variant], x, y, sync) -> None:
    """Two untimed steps each (three for compile); a variant that fails here is dropped."""
    for name in list(variants):
        v = variants[name]
        try:
            with environ(v.env):
                step_time(v.model, v.opt, x, y, 3 if name == "snn_compiled" else 2, sync, v.fast)
        except Exception as e:  # torch.compile's failures come in many classes
            if name != "snn_compiled":
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"snn_compiled dropped: {type(e).__name__}: {reason[:300]}", file=sys.stderr)
            del variants[name]


def time_rounds(variants: dict[str, Variant], x, y, repeats: int, steps: int, sync) -> None:
    """`repeats` rounds of `steps` timed steps per variant, interleaved step by step (A B C A B C
    ...) so that a slow spell of the machine hits every variant alike; the order rotates by one
    each round. Appends each variant's median step of the round to its `rounds`."""
    names = list(variants)
    for r in range(repeats):
        k = r % len(names)
        order = names[k:] + names[:k]
        times: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(steps):
            for name in order:
                v = variants[name]
                with environ(v.env):
                    times[name].append(step_time(v.model, v.opt, x, y, 1, sync, v.fast))
        for name in names:
            variants[name].rounds.append(statistics.median(times[name]))
        print(f"round {r + 1}/{repeats}: "
              + ", ".join(f"{n} {variants[n].rounds[-1] * 1e3:.0f} ms" for n in names), file=sys.stderr)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def summarise(variants: dict[str, Variant], args, dev: torch.device) -> dict:
    B, T = args.batch_size, args.timesteps
    sec = {n: statistics.median(v.rounds) for n, v in variants.items()}  # seconds per step
    img_s = {n: B / s for n, s in sec.items()}
    ms = {n: s * 1e3 for n, s in sec.items()}
    default = "snn_triton" if "snn_triton" in sec else "snn_fused"  # firecut's path on `dev`
    cnn_T = T * sec["cnn"] if "cnn" in sec else None
    cpu = f"cpu x{torch.get_num_threads()}"
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu,
        "batch_size": B,
        "timesteps": T,
        "cnn_img_s": img_s.get("cnn"),
        "snn_img_s": img_s.get(default),
        "cnn_step_ms": ms.get("cnn"),
        "snn_step_ms": ms.get(default),
        "lif_overhead": _ratio(sec.get(default), cnn_T),
        "torch": torch.__version__,
        "snn_path": default.removeprefix("snn_"),
        "snn_reference_img_s": img_s.get("snn_reference"),
        "snn_fused_img_s": img_s.get("snn_fused"),
        "snn_triton_img_s": img_s.get("snn_triton"),
        "snntorch_img_s": img_s.get("snntorch"),
        "speedup_vs_snntorch": _ratio(img_s.get(default), img_s.get("snntorch")),
        "lif_overhead_reference": _ratio(sec.get("snn_reference"), cnn_T),
        "lif_overhead_snntorch": _ratio(sec.get("snntorch"), cnn_T),
        "snn_reference_step_ms": ms.get("snn_reference"),
        "snn_fused_step_ms": ms.get("snn_fused"),
        "snn_triton_step_ms": ms.get("snn_triton"),
        "snntorch_step_ms": ms.get("snntorch"),
        "repeats": args.repeats,
        "steps": args.steps,
        "round_spread": max(max(v.rounds) / min(v.rounds) for v in variants.values()),
        "act": NET["act"],
        "pool": NET["pool"],
        "bf16": dev.type == "cuda" or cpu_has_bf16(),  # whether *_bf16cl ran in bf16
        "cnn_bf16cl_img_s": img_s.get("cnn_bf16cl"),
        "snn_bf16cl_img_s": img_s.get("snn_bf16cl"),
        "cnn_bf16cl_step_ms": ms.get("cnn_bf16cl"),
        "snn_bf16cl_step_ms": ms.get("snn_bf16cl"),
        "cnn_bf16cl_speedup": _ratio(sec.get("cnn"), sec.get("cnn_bf16cl")),
        "snn_bf16cl_speedup": _ratio(sec.get(default), sec.get("snn_bf16cl")),
        "lif_overhead_bf16cl": _ratio(sec.get("snn_bf16cl"),
                                      T * sec["cnn_bf16cl"] if "cnn_bf16cl" in sec else None),
    }
    if "snn_compiled" in sec:
        result["snn_compiled_img_s"] = img_s["snn_compiled"]
        result["snn_compiled_step_ms"] = ms["snn_compiled"]
    return result


def print_table(variants: dict[str, Variant], result: dict) -> None:
    T, B = result["timesteps"], result["batch_size"]
    print(f"{result['device']}, torch {result['torch']}, batch {B}, T={T}, "
          f"{result['repeats']} rounds x {result['steps']} steps, medians")
    med = {n: statistics.median(v.rounds) for n, v in variants.items()}
    base = med.get("snntorch")
    print(f"{'variant':<15}{'step ms':>10}{'img/s':>9}{'/ (T x CNN)':>13}{'vs snntorch':>13}"
          f"{'rounds, ms':>18}")
    for name, v in variants.items():
        s = med[name]
        cnn = med.get("cnn_bf16cl" if name in FAST else "cnn")  # each SNN against its own CNN
        over = f"{s / (T * cnn):.3f}" if cnn and not name.startswith("cnn") else ""
        vs = f"{base / s:.2f}x" if base and name not in ("cnn", "snntorch") else ""
        spread = f"{min(v.rounds) * 1e3:.0f}-{max(v.rounds) * 1e3:.0f}"
        mark = " *" if name == "snn_" + result["snn_path"] else ""
        print(f"{name + mark:<15}{s * 1e3:>10.1f}{B / s:>9.1f}{over:>13}{vs:>13}{spread:>18}")
    print(f"* firecut's default path on this device (snn_img_s). lif_overhead "
          f"{_fmt(result['lif_overhead'])} (target <= 1.10 on CPU), speedup_vs_snntorch "
          f"{_fmt(result['speedup_vs_snntorch'])} (target >= 1.25 CPU, >= 3 CUDA)")
    if any(n in variants for n in FAST):
        print(f"bf16 + channels_last ({'bf16' if result['bf16'] else 'fp32: no native bf16'}): CNN "
              f"{_fmt(result['cnn_bf16cl_speedup'])}x, SNN {_fmt(result['snn_bf16cl_speedup'])}x "
              f"the fp32 NCHW step; act {result['act']}, pool {result['pool']}")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and variant")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variants", default=None,
                    help=f"comma list, a subset of {','.join(VARIANTS)} (default: all that run here)")
    ap.add_argument("--compile", action="store_true", help="add snn_compiled (torch.compile)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--act", default="relu", help="CNN activation (clipq: the cpu preset's)")
    ap.add_argument("--pool", default="max", help="squeezenet's pools: max | avg (the cpu preset's)")
    args = ap.parse_args()
    NET.update(act=args.act, pool=args.pool)
    if args.repeats < 1 or args.steps < 1:
        ap.error("--repeats and --steps must be >= 1")
    return args


def choose_variants(args, dev: torch.device) -> list[str]:
    names = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else [
        n for n in VARIANTS if n != "snn_compiled" or args.compile]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.compile and "snn_compiled" not in names:
        names.append("snn_compiled")
    missing = triton_missing(dev)
    if "snn_triton" in names and missing:
        names.remove("snn_triton")
        if args.variants or dev.type == "cuda":
            print(f"snn_triton dropped: {missing}", file=sys.stderr)
    return names


def main() -> None:
    args = parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, device=dev)  # (B, 3, 32, 32)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=dev)  # (B,)
    variants = build_variants(choose_variants(args, dev), args.timesteps, x)
    warm_up(variants, x, y, sync)
    time_rounds(variants, x, y, args.repeats, args.steps, sync)
    result = summarise(variants, args, dev)
    if result["round_spread"] > 1.5:
        print(f"warning: a variant's slowest round took {result['round_spread']:.1f}x its fastest: the "
              "machine was busy, medians may be off; rerun when it is idle", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(variants, result)


if __name__ == "__main__":
    main()
