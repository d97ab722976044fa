"""Datasets: .npz validation, balanced subsets, batched augmentation, downloaders up to the network."""

import numpy as np
import pytest
import torch

from firecut import data as D
from firecut.errors import FirecutError

from conftest import shared_file


def write_npz(path, **over):
    arrays = dict(x_train=np.zeros((20, 8, 8, 3), np.uint8), y_train=np.arange(20) % 4,
                  x_test=np.zeros((8, 8, 8, 3), np.uint8), y_test=np.arange(8) % 4,
                  classes=np.array(["a", "b", "c", "d"]))
    arrays.update(over)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_npz_round_trip(tmp_path):
    d = D.load_npz(write_npz(tmp_path / "ok.npz"))
    assert d.x_train.shape == (20, 3, 8, 8) and d.x_train.dtype == torch.uint8
    assert d.classes == ["a", "b", "c", "d"] and d.num_classes == 4 and d.image_size == 8


@pytest.mark.parametrize("over,msg", [
    (dict(y_test=None), "missing key(s) y_test"),
    (dict(x_train=np.zeros((20, 8, 8, 3), np.float32)), "x_train must be uint8"),
    (dict(x_test=np.zeros((8, 8, 8), np.uint8)), "x_test must be uint8 of shape"),
    (dict(y_train=np.arange(19)), "y_train must be integer labels"),
    (dict(y_train=np.arange(20) % 9), "labels must lie in 0..3"),
    (dict(x_test=np.zeros((8, 4, 4, 3), np.uint8)), "differ in size"),
])
def test_npz_validation_names_the_problem(tmp_path, over, msg):
    with pytest.raises(FirecutError) as e:
        D.load_npz(write_npz(tmp_path / "bad.npz", **over))
    assert msg in str(e.value) and "bad.npz" in str(e.value)


def test_npz_that_is_not_an_archive(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(FirecutError, match="not a readable .npz"):
        D.load_npz(p)


def test_unknown_dataset_name():
    with pytest.raises(FirecutError, match="unknown dataset 'mnist'"):
        D.load_data("mnist", "/nonexistent")


def test_balanced_subset_is_balanced_and_seeded():
    y = torch.arange(1000) % 10
    idx = D.balanced_subset(y, 95, seed=3)
    counts = torch.bincount(y[idx], minlength=10)
    assert len(idx) == 95 and counts.max() - counts.min() <= 1
    assert torch.equal(idx, D.balanced_subset(y, 95, seed=3))
    assert not torch.equal(idx, D.balanced_subset(y, 95, seed=4))


def test_random_crop_flip_yields_shifted_or_mirrored_crops():
    x = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = D.random_crop_flip(x, 4, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(16):
        crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(out[i], c) for c in crops)
        mirrored = any(torch.equal(out[i], c.flip(-1)) for c in crops)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 0 < flips < 16  # both flipped and unflipped images occur


def test_loader_is_deterministic_per_epoch_and_normalises():
    d = D.load_synthetic(n_train=64, n_test=32)
    mean, std = d.norm()
    mk = lambda: D.DeviceLoader(d.x_train, d.y_train, 16, mean, std, torch.device("cpu"),  # noqa
                                train=True, seed=5)
    a, b = mk(), mk()
    b.epoch = 0
    xa, ya = next(iter(a))
    xb, yb = next(iter(b))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.epoch = 1
    assert not torch.equal(next(iter(b))[1], ya)
    assert len(a) == 4 and xa.dtype == torch.float32
    test = D.DeviceLoader(d.x_test, d.y_test, 10, mean, std, torch.device("cpu"))
    assert len(test) == 4 and sum(len(y) for _, y in test) == 32  # evaluation keeps every image
    full = torch.cat([x for x, _ in test])
    assert abs(float(full.mean())) < 0.5


def test_cifar_offline_says_what_to_put_where(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append(download)
            if not download:
                raise RuntimeError("Dataset not found or corrupted.")
            raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    with pytest.raises(FirecutError) as e:
        D.load_data("cifar10", str(tmp_path))
    assert calls == [False, True]  # looked on disk, then tried the downloader
    assert "cifar-10-batches-py" in str(e.value) and str(tmp_path) in str(e.value)


def test_cifar_uses_files_already_on_disk(tmp_path, monkeypatch):
    import torchvision

    class FakeCIFAR100:
        classes = [f"c{i}" for i in range(100)]

        def __init__(self, root, train, download):
            assert not download
            n = 6 if train else 3
            self.data = np.full((n, 32, 32, 3), 7, np.uint8)
            self.targets = list(range(n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    d = D.load_data("cifar100", str(tmp_path))
    assert d.num_classes == 100 and d.x_train.shape == (6, 3, 32, 32) and int(d.x_test[0, 0, 0, 0]) == 7


def make_tiny_layout(root, wnids=("n01", "n02"), per_class=3):
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for k, w in enumerate(wnids):
        (folder / "train" / w / "images").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (64, 64), (10 * k, i, 0)).save(folder / "train" / w / "images" / f"{w}_{i}.JPEG")
        Image.new("L", (64, 64), 100 + k).save(folder / "val" / "images" / f"val_{k}.JPEG")  # grey
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_layout_is_decoded_once_into_a_cache(tmp_path, monkeypatch):
    make_tiny_layout(tmp_path)
    d = D.load_data("tinyimagenet", str(tmp_path))
    assert d.x_train.shape == (6, 3, 64, 64) and d.x_test.shape == (2, 3, 64, 64)
    assert d.classes == ["n01", "n02"] and d.y_test.tolist() == [0, 1]
    assert (tmp_path / "tinyimagenet.npz").is_file()
    monkeypatch.setattr(D, "decode_tiny_imagenet", lambda f: pytest.fail("decoded twice"))
    assert D.load_data("tinyimagenet", str(tmp_path)).x_train.shape == (6, 3, 64, 64)


def test_tiny_imagenet_download_is_attempted_then_explained(tmp_path, monkeypatch):
    import torchvision.datasets.utils as U

    seen = {}

    def fake_download(url, root, md5=None, **kw):
        seen.update(url=url, root=root)
        raise OSError("no network")

    monkeypatch.setattr(U, "download_and_extract_archive", fake_download)
    with pytest.raises(FirecutError) as e:
        D.load_data("tinyimagenet", str(tmp_path))
    assert seen == {"url": D.TINY_URL, "root": str(tmp_path)}
    assert "tiny-imagenet-200" in str(e.value) and "wnids.txt" in str(e.value)


def test_shared_cifar10_subset_loads_balanced():
    d = D.load_data(str(shared_file("cifar10-sub.npz")), "", train_subset=300, test_subset=100)
    assert d.num_classes == 10 and d.image_size == 32
    assert torch.bincount(d.y_train).tolist() == [30] * 10
    assert torch.bincount(d.y_test).tolist() == [10] * 10
