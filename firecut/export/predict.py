"""`firecut predict`: classify image files with an export (pt, TorchScript or ONNX).

Each image is read with PIL, converted to RGB, resized to the model's square input size
(bilinear; the aspect ratio is not kept, and images already that size are untouched), and
normalised with the mean/std stored in the artifact, exactly as the training loader does:
x = (pixel - 255 * mean) / (255 * std), in float32. The probabilities are the softmax of the
artifact's scores (for an SNN: of the classifier output averaged over the T steps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firecut.export.artifact import open_artifact
from firecut.errors import FirecutError


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most probable first


def read_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """An image file -> uint8 (3, size, size)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise FirecutError(f"{path}: not an image PIL can read ({e.__class__.__name__}); "
                           "give PNG or JPEG files") from None


def normalise(x: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, 3, H, W), the same arithmetic as data.DeviceLoader."""
    m = (np.asarray(mean, np.float32) * np.float32(255.0)).reshape(1, -1, 1, 1)
    s = (np.asarray(std, np.float32) * np.float32(255.0)).reshape(1, -1, 1, 1)
    return (x.astype(np.float32) - m) / s


def softmax(scores: np.ndarray) -> np.ndarray:
    """p_k = exp(s_k - max s) / sum_j exp(s_j - max s), per row."""
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def predict_files(artifact_path: str | os.PathLike, images: list[str], top: int = 1,
                  batch_size: int = 64, trust_torchscript: bool = False) -> list[Prediction]:
    if top < 1:
        raise FirecutError("--top must be >= 1")
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise FirecutError(f"image {missing[0]} does not exist"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                           + "; give paths of PNG or JPEG files")
    art = open_artifact(artifact_path, trust_torchscript=trust_torchscript)
    meta = art.meta
    k = min(top, len(meta.classes))
    out: list[Prediction] = []
    for i in range(0, len(images), batch_size):
        paths = images[i:i + batch_size]
        x = np.stack([read_image(p, meta.image_size) for p in paths])  # (B, 3, H, W) uint8
        probs = softmax(art.run(normalise(x, meta.mean, meta.std)).astype(np.float64))  # (B, K)
        for p, row in zip(paths, probs, strict=True):
            order = np.argsort(-row, kind="stable")[:k]
            out.append(Prediction(str(p), [(meta.classes[j], float(row[j])) for j in order]))
    return out


def format_predictions(preds: list[Prediction]) -> str:
    """One line per image: path, then class and probability for each of the top K (tab-separated)."""
    return "\n".join("\t".join([p.path] + [f"{c}\t{q:.4f}" for c, q in p.top]) for p in preds)
