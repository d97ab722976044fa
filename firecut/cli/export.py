"""`firecut export` and `predict`: a verified deployable file, and images classified with it."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from firecut.cli.common import command
from firecut.errors import FirecutError


@command(epilog="Example: firecut export runs/snn/best.pt --format onnx -o snn.onnx")
def export(
    checkpoint: str = typer.Argument(..., help="A best.pt/last.pt written by `firecut train`."),
    fmt: str = typer.Option("pt", "--format", help="pt (the firecut model, for firecut.load) | torchscript | onnx (T steps unrolled, BN folded) | nir (a neuromorphic graph: average pools and reset to zero only)."),
    fmt_old: Optional[str] = typer.Option(None, "-f", hidden=True, help="Old spelling of --format (-f is --file elsewhere)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Artifact path \\[default: beside the checkpoint: STEM.export.pt, STEM.torchscript.pt, STEM.onnx or STEM.nir]."),
    dataset: Optional[str] = typer.Option(None, help="Dataset whose test images to verify on \\[default: the one recorded in the checkpoint]."),
    data_root: Optional[str] = typer.Option(None, "--data-root", "--root", help="Download/cache folder \\[default: the checkpoint's, else $FIRECUT_DATA or ~/.cache/firecut/data]."),
    images: int = typer.Option(1000, help="Test images (class-balanced) the export is verified on."),
):
    """Export a checkpoint as pt, TorchScript, ONNX or NIR, verified before it is written.

    The file is reloaded from disk and run on real test images against the checkpoint's model
    (scores, predictions, accuracy; for folded graphs also layer by layer). A failed check leaves
    no file. Prints what was checked and the artifact's path and size; a NIR file is also run in
    the NIR consumers installed here (snntorch, norse), a line each.
    """
    from firecut.export.build import ExportConfig, export_checkpoint, format_report
    from firecut.export.verify import VerifyConfig

    if images < 1:
        raise FirecutError("--images must be >= 1")
    cfg = ExportConfig(checkpoint, fmt_old or fmt, output, dataset, data_root, VerifyConfig(images=images))
    report = export_checkpoint(cfg, log=lambda m: print(m, file=sys.stderr))
    print(format_report(report))


@command(epilog="Example: firecut predict runs/snn/best.onnx cat.png dog.jpg --top 3")
def predict(
    artifact: str = typer.Argument(..., help="A file written by `firecut export` (pt, torchscript, onnx or nir)."),
    images: list[str] = typer.Argument(..., help="Image files (PNG, JPEG: anything PIL reads)."),
    top: int = typer.Option(1, help="Print the K most probable classes per image."),
    trust_torchscript: bool = typer.Option(False, "--trust-torchscript", help="Open a TorchScript artifact: loading one runs code from the file, so only for files you made or whose source you trust \\[default: refused]."),
):
    """Classify image files with an export: one line per image, path, class and probability.

    Images are resized to the model's input size and normalised with the mean/std stored in the
    artifact; the output is tab-separated (path, then class and probability K times).
    """
    from firecut.export.predict import format_predictions, predict_files

    print(format_predictions(predict_files(artifact, images, top=top, trust_torchscript=trust_torchscript)))
