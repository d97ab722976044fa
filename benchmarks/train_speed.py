"""Training speed of the SqueezeNet CNN and its spiking twin; the LIF overhead ratio.

    lif_overhead = SNN step time / (T x CNN step time)

1.0 means a T-step SNN costs exactly T CNN steps; above that is the price of the neurons and
their time loop. Variants are interleaved and repeated, and medians reported, because a shared
CPU's speed drifts by tens of percent between runs.

    python benchmarks/train_speed.py [--batch-size 64] [--timesteps 4] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from firecut.config import ModelConfig, SpikingConfig
from firecut.network import build_network


def step_time(model, opt, x, y, steps: int, sync) -> float:
    """Median seconds per training step (forward, backward, SGD update) over `steps`."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and variant")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)
    variants = {
        "cnn": build_network(ModelConfig(), SpikingConfig(enabled=False), 10, 32),
        "snn": build_network(ModelConfig(), SpikingConfig(enabled=True, timesteps=args.timesteps),
                             10, 32),
    }
    opts = {}
    for name, m in variants.items():
        m.to(dev).train()
        opts[name] = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        step_time(m, opts[name], x, y, 2, sync)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, m in variants.items():
            times[name].append(step_time(m, opts[name], x, y, args.steps, sync))
    cnn_s = statistics.median(times["cnn"])
    snn_s = statistics.median(times["snn"])
    result = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "batch_size": args.batch_size,
        "timesteps": args.timesteps,
        "cnn_img_s": args.batch_size / cnn_s,
        "snn_img_s": args.batch_size / snn_s,
        "cnn_step_ms": cnn_s * 1e3,
        "snn_step_ms": snn_s * 1e3,
        "lif_overhead": snn_s / (args.timesteps * cnn_s),
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>14}: {v:.3f}" if isinstance(v, float) else f"{k:>14}: {v}")


if __name__ == "__main__":
    main()
