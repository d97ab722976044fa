"""Where conversion loses accuracy: each activation of a trained CNN against its spiking twin's rate.

A CNN checkpoint is converted as `firecut train --init` converts it (thresholds balanced on 8
training batches; a clip-quant layer's threshold is its clip theta), with no fine-tuning, and run
beside the CNN on the same test images. For each activation (in execution order) with CNN output
a and spiking output s[t] (spike x threshold, per step), the SNN's rate-coded value is
r = mean over T of s[t], and

    rel_err   = ||r - a|| / ||a||          (over all images, channels and positions)
    bias      = (sum r - sum a) / sum a     (> 0: the SNN over-fires, < 0: under-fires)

For a clip-quant CNN converted at T = L, the first layer (static input) is exact (rel_err 0):
what grows with depth is the error of uneven spike trains (a neuron sees its input arrive
unevenly over T, so floor(sum) differs from sum of the expected floor). A gated max-pool adds
its own (the running-sum winner only approaches max of the rates). The last line gives test
accuracy of the CNN and of the converted SNN and how often their top-1 agree.

    python benchmarks/conversion_gap.py CNN.pt --dataset ../shared/data/cifar10-sub.npz \
        [--timesteps 4,8] [--images 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from firecut.activations import CONVERTIBLE
from firecut.checkpoint import configs_of, load_checkpoint, model_from_checkpoint
from firecut.config import SpikingConfig
from firecut.data import DeviceLoader, load_data
from firecut.network import to_spiking
from firecut.spiking import LIF, balance_thresholds


def capture(model: torch.nn.Module, kinds: tuple, x: torch.Tensor, batch: int = 250):
    """Runs `model` on x in batches: (logits (N, K), {name: per-batch outputs of each module of
    `kinds`}), an SNN's as (T*b, C, ...) chunks."""
    outs: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: outs.setdefault(n, []).append(o.detach()))
             for n, m in model.named_modules() if isinstance(m, kinds)]
    logits = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits.append(model(x[i:i + batch]))
    for h in hooks:
        h.remove()
    return torch.cat(logits), outs


def gap(ckpt_path: str, dataset: str, timesteps: int, images: int) -> dict:
    torch.manual_seed(0)
    ckpt = load_checkpoint(ckpt_path)
    mc, sc = configs_of(ckpt)
    if sc.enabled:
        sys.exit(f"{ckpt_path} is a spiking net; give the CNN checkpoint")
    data = load_data(dataset, "", test_subset=images)
    mean, std = ckpt["norm"]["mean"], ckpt["norm"]["std"]
    cpu = torch.device("cpu")
    x = next(iter(DeviceLoader(data.x_test, data.y_test, len(data.x_test), mean, std, cpu)))[0]
    y = data.y_test
    cnn = model_from_checkpoint(ckpt).eval()
    cnn_logits, acts = capture(cnn, CONVERTIBLE, x)
    train = DeviceLoader(data.x_train, data.y_train, 128, mean, std, cpu, train=True, augment=False)
    batches = (b for _, (b, _) in zip(range(8), train, strict=False))
    thresholds = balance_thresholds(cnn, batches)
    snn = to_spiking(model_from_checkpoint(ckpt), SpikingConfig(enabled=True, timesteps=timesteps,
                                                                init=ckpt_path),
                     data.image_size, thresholds).eval()
    snn_logits, spikes = capture(snn, (LIF,), x)
    layers = []
    for name, a in acts.items():
        a = torch.cat(a, 0)  # (N, C, ...)
        per_batch = [c.view(timesteps, -1, *c.shape[1:]).mean(0) for c in spikes["net." + name]]
        r = torch.cat(per_batch, 0)  # (N, C, ...) rate x threshold
        assert r.shape == a.shape
        layers.append({"layer": name, "rel_err": float((r - a).norm() / a.norm().clamp_min(1e-12)),
                       "bias": float((r.sum() - a.sum()) / a.sum().clamp_min(1e-12)),
                       "cnn_mean": float(a.mean()), "snn_mean": float(r.mean())})
    cnn_pred, snn_pred = cnn_logits.argmax(1), snn_logits.argmax(1)
    return {"checkpoint": ckpt_path, "pool": mc.pool, "act": mc.act, "levels": mc.levels,
            "timesteps": timesteps, "images": len(y), "cnn_acc": float((cnn_pred == y).float().mean()),
            "snn_acc": float((snn_pred == y).float().mean()),
            "agreement": float((cnn_pred == snn_pred).float().mean()), "layers": layers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a CNN checkpoint (firecut train --cnn)")
    ap.add_argument("--dataset", default="../shared/data/cifar10-sub.npz")
    ap.add_argument("--timesteps", default="4", help="comma list of T")
    ap.add_argument("--images", type=int, default=1000, help="class-balanced test images")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [gap(args.checkpoint, args.dataset, int(t), args.images) for t in args.timesteps.split(",")]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(f"{r['checkpoint']} ({r['act']} L={r['levels']}, {r['pool']} pools), T={r['timesteps']}, "
              f"{r['images']} test images")
        print(f"{'layer':<28}{'rel_err':>9}{'bias':>9}{'CNN mean':>10}{'SNN mean':>10}")
        for lr in r["layers"]:
            print(f"{lr['layer']:<28}{lr['rel_err']:>9.3f}{lr['bias']:>+9.3f}{lr['cnn_mean']:>10.4f}"
                  f"{lr['snn_mean']:>10.4f}")
        print(f"CNN acc {r['cnn_acc']:.4f}  converted SNN acc {r['snn_acc']:.4f}  top-1 agreement "
              f"{r['agreement']:.4f}\n")


if __name__ == "__main__":
    main()
