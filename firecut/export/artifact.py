"""Export artifacts: what each format holds, how it is written to bytes and how it is read back.

Every format carries the same metadata record (ArtifactMeta: class names, normalisation, T, image
size, ...), so a file alone is enough to classify images. Every format's model maps a normalised
image batch (N, 3, H, W) float32 to class scores (N, K), the SpikingNet readout (the classifier
output averaged over T; a CNN's logits).

  pt           torch.save({"meta", "arch", "state_dict"}): the firecut model itself (fused LIF,
               BN unfolded); `load()` rebuilds it with firecut's network code, no training code.
  torchscript  the unrolled graph (firecut.export.unrolled: BN folded, T steps as plain ops), traced;
               metadata in `_extra_files["firecut.json"]`.
  onnx         the same graph, dynamic batch, input "image", output "scores"; metadata as
               `metadata_props["firecut"]` (JSON).
  nir          a spiking SqueezeNet with average pools and reset to zero as a NIR graph (HDF5;
               firecut.export.to_nir), one step per call; metadata in the graph's
               `metadata["firecut"]` (JSON); scores = the output's mean over T steps.

No data loaders or training code are imported here; torch, onnx, onnxruntime and nir only inside the
functions that need them.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import firecut
from firecut.errors import FirecutError

MARKER = "firecut-export"
FORMAT_VERSION = 1
TS_EXTRA = "firecut.json"  # TorchScript _extra_files name
ONNX_KEY = "firecut"  # ONNX metadata_props key
SUFFIXES = {"pt": ".export.pt", "torchscript": ".torchscript.pt", "onnx": ".onnx",
            "nir": ".nir"}  # default names
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # a NIR file is HDF5
# What a file whose name ends so may hold (longest ending first); other names go by content alone.
NAMED_KINDS = ((".torchscript.pt", ("torchscript",)), (".onnx", ("onnx",)), (".nir", ("nir",)),
               (".pt", ("pt", "torchscript")), (".pth", ("pt", "torchscript")))


@dataclass
class ArtifactMeta:
    kind: str  # pt | torchscript | onnx | nir
    model: str  # registered model name
    spiking: bool
    timesteps: int  # T, steps per image (1 for a CNN)
    image_size: int  # px, square input
    classes: list[str]
    mean: list[float]  # per RGB channel, in [0, 1] units
    std: list[float]  # per RGB channel, in [0, 1] units
    keep: list[str]  # Fire modules the net keeps
    dataset: str  # name of the dataset it was trained on
    metrics: dict[str, Any]  # the checkpoint's test metrics (acc, f1, loss)
    source: str  # the checkpoint it was exported from, relative to the artifact's folder
    bn_folded: bool  # batch norm folded into the convs (torchscript, onnx)
    format: str = MARKER
    format_version: int = FORMAT_VERSION
    firecut_version: str = firecut.__version__
    input: str = "image (N, 3, H, W) float32 = (pixel / 255 - mean) / std"
    output: str = "scores (N, K) = classifier output averaged over the T steps; softmax gives probabilities"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> ArtifactMeta:
        if not isinstance(d, dict) or d.get("format") != MARKER:
            raise not_an_export(where, f"no '{MARKER}' marker")
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise FirecutError(f"{where}: written by a newer firecut ({d.get('firecut_version')}); "
                               "upgrade firecut")
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:
            raise not_an_export(where, f"incomplete metadata: {e}") from None


def not_an_export(path: str | os.PathLike, why: str) -> FirecutError:
    return FirecutError(f"{path}: not a firecut export ({why}); make one with `firecut export CKPT`")


# ------------------------------------------------------------------------------ writing


@contextmanager
def _quiet():
    """Tracing and exporting warn about deprecations and traced shapes; none of it is the user's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def pt_bytes(model, graph, meta: ArtifactMeta, arch: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"format": MARKER, "meta": asdict(meta), "arch": arch,
                "state_dict": model.state_dict()}, buf)
    return buf.getvalue()


def torchscript_bytes(model, graph, meta: ArtifactMeta, arch: dict[str, Any]) -> bytes:
    import torch

    example = torch.zeros(2, 3, meta.image_size, meta.image_size)  # (N, 3, H, W); N stays free
    buf = io.BytesIO()
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(graph, example, check_trace=False)
        torch.jit.save(traced, buf, _extra_files={TS_EXTRA: json.dumps(asdict(meta))})
    return buf.getvalue()


def onnx_bytes(model, graph, meta: ArtifactMeta, arch: dict[str, Any]) -> bytes:
    import torch

    example = torch.zeros(2, 3, meta.image_size, meta.image_size)  # (N, 3, H, W)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(graph, (example,), dynamo=True, verbose=False,
                                        input_names=["image"], output_names=["scores"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    except ImportError as e:
        raise FirecutError(f"ONNX export needs the onnx and onnxscript packages ({e}); "
                           "pip install -e '.[dev]' (or pip install onnx onnxscript onnxruntime)") from None
    proto = program.model_proto
    for node in proto.graph.node:  # the exporter's per-node notes: source paths and stack traces
        del node.metadata_props[:]
        node.doc_string = ""
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_KEY, json.dumps(asdict(meta))
    proto.producer_name = "firecut"
    import onnx

    try:  # the ONNX spec's own checks, shapes and types inferred through the whole graph
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise FirecutError(f"the ONNX graph fails onnx.checker ({str(e).splitlines()[0][:200]}); "
                           "nothing was written (report this as a bug)") from None
    return proto.SerializeToString()


def nir_bytes(model, graph, meta: ArtifactMeta, arch: dict[str, Any]) -> bytes:
    from firecut.export.to_nir import nir_bytes as write

    return write(graph, meta.image_size, asdict(meta))


# kind -> writer(model, unrolled graph, meta, arch) -> bytes
WRITERS: dict[str, Callable[..., bytes]] = {"pt": pt_bytes, "torchscript": torchscript_bytes,
                                             "onnx": onnx_bytes, "nir": nir_bytes}


def check_name(path: str | os.PathLike, kind: str, flag: str = "") -> None:
    """Refuses a `kind` file whose name promises another format (a TorchScript file named .onnx
    would otherwise go to a loader its reader did not choose)."""
    name = Path(path).name.lower()
    allowed = next((kinds for end, kinds in NAMED_KINDS if name.endswith(end)), None)
    if allowed is not None and kind not in allowed:
        raise FirecutError(f"{flag}{path} holds {kind} but its name says {' or '.join(allowed)}; "
                           f"name a {kind} file *{SUFFIXES[kind]}")


def check_kind(kind: str) -> str:
    if kind not in WRITERS:
        raise FirecutError(f"unsupported --format '{kind}'; choose one of: {', '.join(WRITERS)}")
    return kind


# ------------------------------------------------------------------------------ reading


@dataclass
class Artifact:
    """A reloaded export: its metadata and `run(x (N, 3, H, W) float32) -> scores (N, K)`."""

    path: Path
    meta: ArtifactMeta
    run: Callable[[np.ndarray], np.ndarray]


def sniff(path: str | os.PathLike) -> str:
    """The format of a file by its content: 'pt', 'torchscript', 'onnx' or 'nir' (unchecked)."""
    path = Path(path)
    if not path.is_file():
        raise FirecutError(f"{path} does not exist; give a file written by `firecut export`")
    with open(path, "rb") as f:
        if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            return "nir"
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise not_an_export(path, f"unreadable archive: {e.__class__.__name__}") from None
        if any(n.endswith("/extra/" + TS_EXTRA) for n in names):
            return "torchscript"
        if any("/code/" in n for n in names):
            raise not_an_export(path, "a TorchScript file without firecut's metadata")
        return "pt"
    return "onnx"


def _read_pt(path: Path) -> tuple[ArtifactMeta, dict[str, Any]]:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise not_an_export(path, f"unreadable torch file: {e.__class__.__name__}") from None
    if isinstance(payload, dict) and payload.get("format") == "firecut-checkpoint":
        raise FirecutError(f"{path} is a firecut checkpoint, not an export; "
                           f"run `firecut export {path}` first")
    if not isinstance(payload, dict) or payload.get("format") != MARKER:
        raise not_an_export(path, f"no '{MARKER}' marker")
    return ArtifactMeta.from_dict(payload.get("meta"), str(path)), payload


def load(path: str | os.PathLike):
    """The model of a `pt` export, rebuilt by firecut's network code, in eval mode on the CPU.

    Returns the nn.Module (a SpikingNet or a CNN): (N, 3, H, W) normalised images -> (N, K)
    scores. Its `.meta` (ArtifactMeta) holds classes, mean/std, T, image size and metrics.
    """
    from firecut.config import ModelConfig, SpikingConfig
    from firecut.network import build_network

    path = Path(path)
    kind = sniff(path)
    if kind != "pt":
        raise FirecutError(f"{path} is a {kind} export; firecut.load reads the pt format "
                           "(use `firecut predict`, torch.jit.load or onnxruntime for this one)")
    meta, payload = _read_pt(path)
    arch = payload["arch"]
    try:
        model = build_network(ModelConfig(**arch["model"]), SpikingConfig(**arch["spiking"]),
                              arch["num_classes"], arch["image_size"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise not_an_export(path, f"its weights do not fit its architecture: "
                            f"{str(e).splitlines()[0]}") from None
    model.eval()
    model.meta = meta
    return model


def _torch_runner(module) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    return run


def _open_pt(path: Path) -> Artifact:
    model = load(path)
    return Artifact(path, model.meta, _torch_runner(model))


def _open_torchscript(path: Path) -> Artifact:
    import torch

    extra = {TS_EXTRA: ""}
    try:
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise not_an_export(path, f"unreadable TorchScript: {e.__class__.__name__}") from None
    try:
        meta = ArtifactMeta.from_dict(json.loads(extra[TS_EXTRA]), str(path))
    except json.JSONDecodeError:
        raise not_an_export(path, "its firecut.json is not JSON") from None
    return Artifact(path, meta, _torch_runner(module.eval()))


def _open_onnx(path: Path) -> Artifact:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        raise FirecutError(f"reading ONNX needs onnx and onnxruntime ({e}); "
                           "pip install -e '.[dev]' (or pip install onnx onnxruntime)") from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise not_an_export(path, f"neither a torch file nor an ONNX model: {e.__class__.__name__}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if ONNX_KEY not in props:
        raise not_an_export(path, "no firecut metadata in it (not an ONNX model firecut wrote)")
    try:
        meta = ArtifactMeta.from_dict(json.loads(props[ONNX_KEY]), str(path))
    except json.JSONDecodeError:
        raise not_an_export(path, "its firecut metadata is not JSON") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise not_an_export(path, f"onnxruntime cannot load it: {str(e).splitlines()[0][:200]}") from None
    name = session.get_inputs()[0].name
    return Artifact(path, meta, lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0])


def _open_nir(path: Path) -> Artifact:
    from firecut.export.to_nir import read_nir, runner

    graph, meta = read_nir(path)
    meta = ArtifactMeta.from_dict(meta, str(path))
    return Artifact(path, meta, runner(graph, meta.timesteps))


READERS: dict[str, Callable[[Path], Artifact]] = {"pt": _open_pt, "torchscript": _open_torchscript,
                                                  "onnx": _open_onnx, "nir": _open_nir}


def open_artifact(path: str | os.PathLike, trust_torchscript: bool = False,
                  check_names: bool = True) -> Artifact:
    """Reads any of the four formats, told apart by content; a content its name contradicts is
    refused (check_names), and so is TorchScript, which runs code from the file as it loads,
    unless the caller trusts the file (trust_torchscript: it made the file, or knows its source).
    pt files load with torch.load(weights_only=True), ONNX through onnxruntime and NIR through
    h5py: data only."""
    path = Path(path)
    kind = sniff(path)
    if check_names:
        check_name(path, kind)
    if kind == "torchscript" and not trust_torchscript:
        raise FirecutError(f"{path} is TorchScript, which runs code from the file when it loads; "
                           "pass --trust-torchscript if you made it or trust its source (or use a "
                           "pt or onnx export, which hold data only)")
    return READERS[kind](path)
