"""`firecut export`: a checkpoint -> a verified pt / TorchScript / ONNX / NIR file.

    1. load the checkpoint and its model (CPU), and `images` real test images of its dataset
    2. build what the format holds (pt: the model itself; torchscript/onnx: the unrolled graph,
       BN folded, T fixed; nir: that graph as NIR nodes, one step per call) and serialise it with
       its metadata (firecut.export.artifact)
    3. write it atomically to a hidden `.NAME.verifying` file beside the target
    4. reload that file from disk with the format's own runtime, run it on the images, and judge
       it against the source model (firecut.export.verify)
    5. passed: rename it to the target. Failed: delete it and raise; the target is not touched.
So a file at the target path has always passed its check.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from firecut.export.artifact import SUFFIXES, WRITERS, ArtifactMeta, check_kind, check_name, open_artifact
from firecut.checkpoint import (load_checkpoint, model_from_checkpoint, portable_path, require_fits,
                                resolve_recorded)
from firecut.config import default_data_root
from firecut.data import DeviceLoader, load_data
from firecut.errors import FirecutError
from firecut.io import atomic_write_bytes
from firecut.spiking import SpikingNet
from firecut.training.loop import model_keep
from firecut.export.to_nir import check_nir
from firecut.export.unrolled import unroll
from firecut.export.verify import (Check, VerifyConfig, compare, discontinuous, judge, layer_check,
                            run_batches)


@dataclass
class ExportConfig:
    checkpoint: str  # a best.pt/last.pt written by `firecut train`
    kind: str = "pt"  # pt | torchscript | onnx | nir
    output: str | None = None  # default: beside the checkpoint, STEM + SUFFIXES[kind]
    dataset: str | None = None  # test images to verify on; default: the checkpoint's own dataset
    root: str | None = None  # data root; default: the checkpoint's own
    verify: VerifyConfig = field(default_factory=VerifyConfig)


@dataclass
class ExportReport:
    path: str  # the artifact
    kind: str
    size_bytes: int
    dataset: str  # what it was verified on
    export_seconds: float  # build + serialise + write
    layer_images: int  # images of the teacher-forced layer check
    verify_seconds: float  # reload + run source and artifact + layer check + judge
    check: Check
    consumers: list[dict[str, Any]] = field(default_factory=list)  # nir: other toolchains' runs of the file


def default_output(checkpoint: str | os.PathLike, kind: str) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + SUFFIXES[kind])


MADE = "made inputs (no test images; accuracy not checked)"


def made_inputs(ckpt: dict[str, Any], n: int, seed: int = 0) -> torch.Tensor:
    """n smooth random images (N, 3, H, W), normalised as the checkpoint's data: 8x8 random pixels
    upsampled bilinearly, so that convs see image-like structure rather than white noise."""
    size = ckpt["arch"]["image_size"]
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, 8, 8), generator=g).float()
    pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear",
                                             align_corners=False)
    mean = torch.tensor(ckpt["norm"]["mean"]).view(1, -1, 1, 1) * 255.0
    std = torch.tensor(ckpt["norm"]["std"]).view(1, -1, 1, 1) * 255.0
    return (pixels - mean) / std


def _test_images(ckpt: dict[str, Any], cfg: ExportConfig,
                 log: Callable[[str], None]) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """(dataset, normalised images (N, 3, H, W), labels (N,)) from the checkpoint's test split;
    where the recorded dataset is not on this machine (and --dataset was not given), made
    inputs and no labels."""
    recorded = ckpt.get("config", {}).get("data", {})
    dataset = cfg.dataset or resolve_recorded(recorded.get("dataset") or ckpt.get("dataset", ""),
                                              cfg.checkpoint)
    root = cfg.root or recorded.get("root") or default_data_root()
    whence = "given with --dataset" if cfg.dataset else "recorded in the checkpoint"
    try:
        data = load_data(dataset, root, train_subset=1, test_subset=cfg.verify.images)
    except FirecutError as e:
        if cfg.dataset:
            raise FirecutError(f"cannot verify the export: dataset '{dataset}' ({whence}) cannot be "
                               f"loaded ({e}); pass --dataset (and --data-root) naming where the "
                               "checkpoint's test images are") from None
        log(f"no test images here (dataset '{dataset}': {e}); verifying on {cfg.verify.images} made "
            "inputs, score by score and layer by layer: accuracy is NOT checked (pass --dataset to check it)")
        return MADE, made_inputs(ckpt, cfg.verify.images), None
    try:
        require_fits(ckpt, data.num_classes, data.image_size, cfg.checkpoint)
    except FirecutError as e:
        raise FirecutError(f"cannot verify the export on dataset '{dataset}' ({whence}): {e} (it was "
                           f"trained on '{ckpt.get('dataset')}'); pass that one with --dataset") from None
    loader = DeviceLoader(data.x_test, data.y_test, 1024, ckpt["norm"]["mean"], ckpt["norm"]["std"],
                          torch.device("cpu"))
    xs, ys = zip(*loader, strict=True)
    return dataset, torch.cat(xs), torch.cat(ys)


def _meta(ckpt: dict[str, Any], model, kind: str, source: str) -> ArtifactMeta:
    spiking = isinstance(model, SpikingNet)
    return ArtifactMeta(kind=kind, model=ckpt["arch"]["model"]["name"], spiking=spiking,
                        timesteps=model.timesteps if spiking else 1,
                        image_size=ckpt["arch"]["image_size"], classes=list(ckpt["classes"]),
                        mean=list(ckpt["norm"]["mean"]), std=list(ckpt["norm"]["std"]),
                        keep=list(model_keep(model)), dataset=ckpt.get("dataset", ""),
                        metrics=dict(ckpt.get("metrics", {})), source=source,
                        bn_folded=kind != "pt")


def _arch(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's architecture, without the paths it was trained from."""
    arch = copy.deepcopy(ckpt["arch"])
    arch["model"]["parent"], arch["spiking"]["init"] = None, None
    return arch


def _target(cfg: ExportConfig) -> Path:
    out = Path(cfg.output) if cfg.output else default_output(cfg.checkpoint, cfg.kind)
    if out.is_dir():
        raise FirecutError(f"-o {out} is a folder; give the path of the file to write")
    if out.resolve() == Path(cfg.checkpoint).resolve():
        raise FirecutError(f"-o {out} is the checkpoint itself; give another output path")
    check_name(out, cfg.kind, "-o ")
    if not out.parent.is_dir():
        raise FirecutError(f"cannot write {out}: folder {out.parent} does not exist; create it or "
                           "give another -o")
    return out


def export_checkpoint(cfg: ExportConfig, log: Callable[[str], None] = lambda m: None) -> ExportReport:
    """Exports, verifies (see firecut.export.verify) and writes; raises FirecutError when the check fails."""
    check_kind(cfg.kind)
    ckpt = load_checkpoint(cfg.checkpoint)
    out = _target(cfg)
    source = model_from_checkpoint(ckpt).eval()
    if cfg.kind == "nir":  # before any data loads: a net NIR cannot hold is refused at once
        check_nir(source, cfg.checkpoint)
    dataset, x, y = _test_images(ckpt, cfg, log)
    on = f"{len(x)} {dataset}" if y is None else f"{len(x)} test images of {dataset}"
    log(f"exporting {cfg.checkpoint} as {cfg.kind}; verifying on {on}")

    t0 = time.perf_counter()
    graph = unroll(source) if cfg.kind != "pt" else None
    meta = _meta(ckpt, source, cfg.kind, portable_path(str(cfg.checkpoint), out.parent))
    payload = WRITERS[cfg.kind](source, graph, meta, _arch(ckpt))
    tmp = out.with_name(f".{out.name}.verifying")
    try:
        atomic_write_bytes(tmp, lambda f: f.write(payload))
    except OSError as e:
        raise FirecutError(f"cannot write {out} ({e.strerror or e}); give another -o") from None
    export_seconds = time.perf_counter() - t0

    try:
        t0 = time.perf_counter()
        artifact = open_artifact(tmp, trust_torchscript=True, check_names=False)  # ours, just written
        b = cfg.verify.batch_size
        s = run_batches(source, x, b)  # (N, K)
        layer = layer_check(source, graph, x[: cfg.verify.layer_images]) if graph is not None else None
        a = [artifact.run(x[i:i + b].numpy()) for i in range(0, len(x), b)]
        c = compare(s, torch.cat([torch.from_numpy(v) for v in a]).numpy(), y, cfg.verify)
        strict = cfg.kind == "pt" or not discontinuous(source)
        verdict, reason = judge(c, strict=strict, layer=layer, cfg=cfg.verify)
        check = Check(**c, verdict=verdict, reason=reason, layer=layer)
        verify_seconds = time.perf_counter() - t0
        if verdict == "failed":
            raise FirecutError(f"the {cfg.kind} export of {cfg.checkpoint} failed its check on {on}: "
                               f"{reason}; nothing was written (report this "
                               "as a bug)")
        consumers = []
        if cfg.kind == "nir":  # the file in toolchains firecut does not control, where installed
            from firecut.export.consumers import check_consumers
            from firecut.export.to_nir import read_nir

            log("running the file in the NIR consumers installed here (firecut.export.consumers)")
            consumers = check_consumers(read_nir(tmp)[0], meta.timesteps, x, s, y, b)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportReport(path=str(out), kind=cfg.kind, size_bytes=out.stat().st_size, dataset=dataset,
                        export_seconds=export_seconds, layer_images=min(len(x), cfg.verify.layer_images),
                        verify_seconds=verify_seconds, check=check, consumers=consumers)


def format_report(r: ExportReport) -> str:
    """What was checked, for stdout: one labelled line per fact."""
    c = r.check
    made = c.acc_source is None  # made inputs: no labels (see _test_images)
    lines = [
        f"artifact  {r.path}  ({r.kind}, {r.size_bytes / 1e6:.2f} MB; exported in {r.export_seconds:.1f} s)",
        (f"checked   {c.images} {r.dataset}, reloaded from disk ({r.verify_seconds:.1f} s)"
         if made else
         f"checked   {c.images} test images of {r.dataset}, reloaded from disk ({r.verify_seconds:.1f} s)"),
        f"scores    max |Δ| {c.max_abs_diff:.3g} vs the source; {c.matching} of {c.images} images "
        "within float tolerance",
        (f"agree     {c.agreement:.1%} same predicted class; accuracy not checked (no labels)"
         if made else
         f"agree     {c.agreement:.1%} same predicted class; accuracy {c.acc_artifact:.1%} "
         f"(source {c.acc_source:.1%}; {c.lost} images lost, {c.gained} gained)"),
    ]
    if c.layer is not None:
        L = c.layer
        neurons = f"unrolled neurons identical: {L.neurons_identical}" if L.neurons else "no neurons"
        lines.append(f"layers    teacher-forced on {r.layer_images} images: folded convs within "
                     f"{L.conv_max_rel:.1e} of conv + BN; {neurons}; {L.flips:,} of {L.outputs:,} block "
                     f"outputs flip a spike or level ({L.flips_in_pools:,} behind a gated max-pool)")
    lines.append(f"verdict   {c.verdict}: {c.reason}")
    if r.consumers:
        from firecut.export.consumers import format_consumer

        lines += [format_consumer(row) for row in r.consumers]
    return "\n".join(lines)
