"""How much a spiking net's output depends on float rounding: the measurement behind the export check.

On N test images of the checkpoint's dataset, against the source model as `firecut evaluate` runs
it (batch 200, this machine's default threads):

  batch 50      the source itself, run in batches of 50 (other conv kernels' rounding)
  1 thread      the source itself, with torch.set_num_threads(1)
  BN folded     the exported graph (firecut.export.unrolled) in torch: end to end, and teacher-forced
                layer by layer (firecut.export.verify.layer_check: which flips one layer of rounding makes,
                and how many of them sit behind a gated max-pool)

    python benchmarks/export_flips.py runs/quick-snn/best.pt --dataset ../shared/data/cifar10-sub.npz
"""

from __future__ import annotations

import argparse
import time

import torch

from firecut.checkpoint import load_checkpoint, model_from_checkpoint
from firecut.data import DeviceLoader, load_data
from firecut.export.unrolled import unroll
from firecut.export.verify import VerifyConfig, compare, folded_vs_source, layer_check, run_batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--layer-images", type=int, default=200)
    a = ap.parse_args()

    ckpt = load_checkpoint(a.checkpoint)
    data = load_data(a.dataset, "", train_subset=1, test_subset=a.images)
    xs, ys = zip(*DeviceLoader(data.x_test, data.y_test, 1024, ckpt["norm"]["mean"], ckpt["norm"]["std"],
                               torch.device("cpu")), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    source = model_from_checkpoint(ckpt).eval()
    cfg = VerifyConfig()
    t0 = time.perf_counter()
    ref = run_batches(source, x, 200)
    print(f"source: {len(x)} images, accuracy {float((ref.argmax(1) == y).float().mean()):.1%}, "
          f"{time.perf_counter() - t0:.1f} s, {torch.get_num_threads()} threads")

    def row(label: str, scores: torch.Tensor, extra: str = "") -> None:
        c = compare(ref, scores.numpy(), y, cfg)
        print(f"{label:<12} max |Δ| {c['max_abs_diff']:.3g}  images within tolerance "
              f"{c['matching']}/{c['images']}  predictions agree {c['agreement']:.1%}  "
              f"accuracy {c['acc_artifact']:.1%}{extra}")

    row("batch 50", run_batches(source, x, 50))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    row("1 thread", run_batches(source, x, 200))
    torch.set_num_threads(threads)
    graph = unroll(source)
    _, g, flips, spikes, steps = folded_vs_source(source, graph, x, 200)
    row("BN folded", g, f"  spikes differ {flips:,} of {spikes:,} ({flips / max(spikes, 1):.1%}; "
                        f"{flips / max(steps, 1):.2%} of {steps:,} neuron-steps)" if steps else "")
    L = layer_check(source, graph, x[: a.layer_images])
    print(f"teacher-forced on {min(len(x), a.layer_images)} images: folded convs within "
          f"{L.conv_max_rel:.1e}; neurons identical: {L.neurons_identical}; {L.flips:,} of "
          f"{L.outputs:,} block outputs flip "
          f"({L.flips_in_pools:,} in blocks with a gated max-pool)")


if __name__ == "__main__":
    main()
