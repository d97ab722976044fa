"""Datasets as uint8 tensors, and a batched on-device loader with augmentation.

Sources (a registry; `--dataset` takes a name or a path):
  cifar10, cifar100  torchvision's downloaders into `root` (or files already there)
  tinyimagenet       the official `tiny-imagenet-200/` layout in `root` (downloaded if absent),
                     decoded once into `root/tinyimagenet.npz`
  PATH.npz           x_train uint8 (N,H,W,3), y_train int (N,), x_test, y_test, classes
  synthetic          a small learnable set made in memory (tests)
Images stay uint8 (N, 3, H, W) on the training device; the loader crops (zero pad 4), flips and
normalises whole batches there, with no per-image Python work.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from firecut.errors import FirecutError


@dataclass
class ImageData:
    name: str
    classes: list[str]
    x_train: torch.Tensor  # (N, 3, H, W) uint8
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, 3, H, W) uint8
    y_test: torch.Tensor  # (M,) int64

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def norm(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        x = self.x_train.to(torch.float64) / 255.0
        return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()


def _from_arrays(name, classes, x_train, y_train, x_test, y_test) -> ImageData:
    """NHWC uint8 numpy arrays -> ImageData with NCHW tensors."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return ImageData(name, [str(c) for c in classes], t(x_train),
                     torch.as_tensor(np.asarray(y_train), dtype=torch.int64), t(x_test),
                     torch.as_tensor(np.asarray(y_test), dtype=torch.int64))


# ------------------------------------------------------------------------------ .npz files
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | os.PathLike, name: str | None = None) -> ImageData:
    path = Path(path)
    if not path.is_file():
        raise FirecutError(f"dataset file {path} does not exist; pass a name "
                           "(cifar10, cifar100, tinyimagenet) or the path of an .npz")
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/ValueError/OSError: anything unreadable
        raise FirecutError(f"{path}: not a readable .npz archive ({e.__class__.__name__}); "
                           "write one with numpy.savez") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise FirecutError(f"{path}: missing key(s) {', '.join(missing)}; an .npz dataset needs "
                           "x_train, y_train, x_test, y_test (and optionally classes)")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise FirecutError(f"{path}: x_{split} must be uint8 of shape (N, H, W, 3), "
                               f"got {x.dtype} {x.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
            raise FirecutError(f"{path}: y_{split} must be integer labels of shape ({len(x)},), "
                               f"got {y.dtype} {y.shape}")
        if len(x) == 0:
            raise FirecutError(f"{path}: x_{split} is empty")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise FirecutError(f"{path}: train and test images differ in size")
    n_labels = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    classes = list(arrays["classes"]) if "classes" in arrays else [str(i) for i in range(n_labels)]
    if min(arrays["y_train"].min(), arrays["y_test"].min()) < 0 or n_labels > len(classes):
        raise FirecutError(f"{path}: labels must lie in 0..{len(classes) - 1} (one per class name)")
    return _from_arrays(name or path.stem, classes, arrays["x_train"], arrays["y_train"],
                        arrays["x_test"], arrays["y_test"])


# ------------------------------------------------------------------------------ CIFAR
def _torchvision_cifar(cls_name: str, root: str, folder: str) -> ImageData:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    os.makedirs(root, exist_ok=True)
    try:
        train = cls(root, train=True, download=False)
        test = cls(root, train=False, download=False)
    except RuntimeError:  # not there yet: download
        try:
            train = cls(root, train=True, download=True)
            test = cls(root, train=False, download=True)
        except Exception as e:
            raise FirecutError(
                f"{cls_name} is not in {root} and could not be downloaded ({e.__class__.__name__}); "
                f"with no network, put the extracted '{folder}/' (or its .tar.gz) in {root} "
                "(--data-root), or pass an .npz with --dataset") from None
    return _from_arrays(cls_name.lower(), train.classes, train.data, train.targets, test.data,
                        test.targets)


def load_cifar10(root: str) -> ImageData:
    return _torchvision_cifar("CIFAR10", root, "cifar-10-batches-py")


def load_cifar100(root: str) -> ImageData:
    return _torchvision_cifar("CIFAR100", root, "cifar-100-python")


# ------------------------------------------------------------------------------ Tiny ImageNet
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_tiny_imagenet(folder: Path) -> dict[str, np.ndarray]:
    """Official layout -> arrays: train/<wnid>/images/*.JPEG; val/images + val_annotations.txt."""
    wnids = (folder / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    xs, ys = [], []
    for w in wnids:
        for f in sorted((folder / "train" / w / "images").iterdir()):
            xs.append(_read_rgb(f))
            ys.append(index[w])
    xv, yv = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            xv.append(_read_rgb(folder / "val" / "images" / parts[0]))
            yv.append(index[parts[1]])
    return {"x_train": np.stack(xs), "y_train": np.array(ys, np.int64),
            "x_test": np.stack(xv), "y_test": np.array(yv, np.int64), "classes": np.array(wnids)}


def download_tiny_imagenet(root: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TINY_URL, root, md5=TINY_MD5)


def load_tinyimagenet(root: str) -> ImageData:
    cache = Path(root) / "tinyimagenet.npz"
    if cache.is_file():
        return load_npz(cache, "tinyimagenet")
    folder = Path(root) / "tiny-imagenet-200"
    if not (folder / "wnids.txt").is_file():
        os.makedirs(root, exist_ok=True)
        try:
            download_tiny_imagenet(root)
        except Exception as e:
            raise FirecutError(
                f"Tiny ImageNet is not in {root} and could not be downloaded ({e.__class__.__name__}); "
                f"with no network, unzip tiny-imagenet-200.zip into {root} (--data-root) so that "
                f"{folder}/wnids.txt exists, or pass an .npz with --dataset") from None
    try:
        arrays = decode_tiny_imagenet(folder)
    except (OSError, KeyError, ValueError) as e:
        raise FirecutError(f"{folder}: not the official tiny-imagenet-200 layout ({e})") from None
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)
    return load_npz(cache, "tinyimagenet")


# ------------------------------------------------------------------------------ synthetic
def load_synthetic(root: str = "", n_train: int = 512, n_test: int = 256, classes: int = 10,
                   size: int = 32, seed: int = 0) -> ImageData:
    """Class k = a colour and a stripe orientation, plus noise: learnable in an epoch or two."""
    g = np.random.default_rng(seed)
    palette = g.integers(40, 216, size=(classes, 3))

    def make(n):
        y = np.arange(n) % classes
        g.shuffle(y)
        yy, xx = np.mgrid[0:size, 0:size]
        x = np.empty((n, size, size, 3), np.float64)
        for k in range(classes):
            stripes = np.sin((xx if k % 2 else yy) * (1 + k // 2) * 0.6)[..., None] * 30
            x[y == k] = palette[k] + stripes
        x += g.normal(0, 20, size=x.shape)
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    xtr, ytr = make(n_train)
    xte, yte = make(n_test)
    return _from_arrays("synthetic", [f"class{k}" for k in range(classes)], xtr, ytr, xte, yte)


DATASETS: dict[str, Callable[[str], ImageData]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "tinyimagenet": load_tinyimagenet,
    "synthetic": load_synthetic,
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "synthetic": 10}


def dataset_name(spec: str) -> str:
    return spec if spec in DATASETS else Path(spec).stem


def num_classes_of(spec: str) -> int:
    """Class count without loading images (reads only `classes`/labels of an .npz)."""
    if spec in NUM_CLASSES:
        return NUM_CLASSES[spec]
    return load_npz(spec).num_classes


def balanced_subset(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of n examples, as equal per class as n allows, chosen at random (seeded)."""
    if n >= len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    classes = torch.unique(y)
    per_class = [perm[y[perm] == c] for c in classes]
    base, extra = divmod(n, len(classes))
    picked = [idx[: base + (1 if i < extra else 0)] for i, idx in enumerate(per_class)]
    out = torch.cat(picked)
    if len(out) < n:  # a class ran short: top up from the rest
        rest = perm[~torch.isin(perm, out)]
        out = torch.cat([out, rest[: n - len(out)]])
    return out.sort().values


def load_data(dataset: str, root: str, train_subset: int | None = None,
              test_subset: int | None = None, seed: int = 0) -> ImageData:
    if dataset in DATASETS:
        data = DATASETS[dataset](root)
    elif dataset.endswith(".npz") or os.path.sep in dataset or Path(dataset).exists():
        data = load_npz(dataset)
    else:
        raise FirecutError(f"unknown dataset '{dataset}'; choose one of: {', '.join(DATASETS)}, "
                           "or give the path of an .npz file")
    if train_subset:
        i = balanced_subset(data.y_train, train_subset, seed)
        data.x_train, data.y_train = data.x_train[i], data.y_train[i]
    if test_subset:
        i = balanced_subset(data.y_test, test_subset, seed)
        data.x_test, data.y_test = data.x_test[i], data.y_test[i]
    return data


# ------------------------------------------------------------------------------ loader
def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Batched random crop (zero pad `pad` px) and horizontal flip of uint8 (B, C, H, W)."""
    b, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, H, W)


class DeviceLoader:
    """Batches of normalised float images from uint8 tensors kept on `device`.

    Order and augmentation depend only on (seed, epoch), so a resumed run sees the same batches.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, mean, std,
                 device: torch.device, train: bool = False, augment: bool = True, seed: int = 0,
                 channels_last: bool = False):
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.train, self.augment, self.seed = batch_size, train, augment, seed
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0
        self.channels_last = channels_last
        self.epoch = 0

    def head(self, n: int) -> "DeviceLoader":
        """The same loader over the first `n` images only (a probe)."""
        sub = copy.copy(self)
        sub.x, sub.y = self.x[:n], self.y[:n]
        return sub

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.train and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.x)
        order = torch.randperm(n, generator=g).to(self.x.device) if self.train else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[sl] if order is not None else None
            xb = self.x[idx] if idx is not None else self.x[sl]
            yb = self.y[idx] if idx is not None else self.y[sl]
            if self.train and self.augment:
                xb = random_crop_flip(xb, 4, g)
            xb = (xb.float() - self.mean) / self.std  # (B, C, H, W) normalised
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
