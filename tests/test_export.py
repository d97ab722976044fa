"""Export and predict: BN folding, the unrolled neuron, round trips through pt / TorchScript / ONNX
(a spiking net with a keep mask and a CNN), firecut.load, verification that refuses a broken
artifact, predict on PNG files, bad input, and one end-to-end run on real CIFAR-10 images."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_user_error, run_cli, shared_file
from firecut.export import artifact as A
from firecut.export import build as E
from firecut.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from firecut.config import ModelConfig, SpikingConfig
from firecut.data import DeviceLoader, load_synthetic
from firecut.errors import FirecutError
from firecut.network import build_network
from firecut.export.predict import predict_files
from firecut.spiking import LIF, RESETS
from firecut.export.unrolled import UnrolledLIF, fold_all_bn, fold_bn, unroll
from firecut.export.verify import VerifyConfig

KEEP = ["fire2", "fire4", "fire6", "fire9"]
NETS = {"snn": dict(spiking=True, keep=KEEP), "cnn": dict(spiking=False, keep=None),
        "snn-avg": dict(spiking=True, keep=KEEP, pool="avg")}  # the cpu preset's pools
KINDS = ["pt", "torchscript", "onnx"]


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


def _calibrate(model: nn.Module) -> None:
    """Live BN statistics (train-mode passes over synthetic images), then perturbed BN affines, so
    that the untrained net's activations are neither dead nor trivial and folding has work to do."""
    x = (load_synthetic().x_train[:128].float() / 255 - 0.5) / 0.25
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.6 + 0.7)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2 + 0.2)
    model.eval()


def make_ckpt(path, spiking: bool, keep=None, pool="max"):
    torch.manual_seed(0)
    mc = ModelConfig(width=0.25, keep=keep, pool=pool)
    sc = SpikingConfig(enabled=spiking, timesteps=2, beta=1.0)
    model = build_network(mc, sc, 10, 32)
    _calibrate(model)
    return save_synthetic_ckpt(path, model, mc, sc)


def save_synthetic_ckpt(path, model, mc, sc):
    """`model` saved as a checkpoint trained on the synthetic dataset."""
    data = load_synthetic()
    mean, std = data.norm()
    save_checkpoint(make_checkpoint(model, mc, sc, classes=data.classes, image_size=32, dataset="synthetic",
                                    mean=mean, std=std, metrics={"acc": 0.1},
                                    config={"data": {"dataset": "synthetic", "root": ""}}), path)
    return path


def synthetic_test(ckpt, n: int = 64):
    data = load_synthetic()
    loader = DeviceLoader(data.x_test[:n], data.y_test[:n], n, ckpt["norm"]["mean"], ckpt["norm"]["std"],
                          torch.device("cpu"))
    return data.x_test[:n], next(iter(loader))[0]  # uint8 (n, 3, 32, 32), normalised float


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each net exported once in each format: {(net, kind): (checkpoint path, ExportReport)}."""
    d = tmp_path_factory.mktemp("export")
    out = {}
    for net, kw in NETS.items():
        ckpt = make_ckpt(d / f"{net}.pt", **kw)
        for kind in KINDS:
            cfg = E.ExportConfig(str(ckpt), kind, verify=VerifyConfig(images=64, layer_images=16))
            out[net, kind] = ckpt, E.export_checkpoint(cfg)
    return out


# ------------------------------------------------------------------------------ the graph


def test_folded_conv_equals_conv_then_bn():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
    _randomise_bn(nn.Sequential(bn))
    bn.eval()
    x = torch.randn(4, 8, 12, 12)
    with torch.no_grad():
        ref, got = bn(conv(x)), fold_bn(conv, bn)(x)
    assert (ref - got).abs().max() < 1e-5 * ref.abs().max()
    assert (ref - conv(x)).abs().max() > 0.1  # the BN really did something

    net = build_network(ModelConfig(width=0.25), SpikingConfig(enabled=False), 10, 32)
    assert fold_all_bn(net) == 1 + 3 * 8  # the stem and three convs per Fire module
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_unrolled_cnn_equals_its_source_and_has_no_bn():
    model = build_network(ModelConfig(width=0.25), SpikingConfig(enabled=False), 10, 32)
    _calibrate(model)
    graph = unroll(model)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref, got = model(x), graph(x)
    assert (ref - got).abs().max() < 1e-4 * ref.abs().max()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in graph.modules())


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("beta", [1.0, 0.8])
def test_unrolled_neuron_equals_the_fused_one(reset, broadcast, beta):
    torch.manual_seed(1)
    T, B, C = 4, 3, 5
    lif = LIF(C, beta=beta, threshold=0.7, v_init=0.5, scale_output=True, timesteps=T,
              broadcast_input=broadcast, reset=reset)
    lif.threshold.data.uniform_(0.3, 1.2)
    x = torch.randn(B if broadcast else T * B, C, 6, 6)
    with torch.no_grad():
        ref, got = lif(x), UnrolledLIF(lif)(x)
    assert ref.shape == (T * B, C, 6, 6)
    assert torch.equal(ref, got)
    assert 0 < (ref != 0).float().mean() < 1  # some spikes, not all


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("net", list(NETS))
def test_round_trip(exported, net, kind):
    ckpt_path, r = exported[net, kind]
    c = r.check
    assert r.path.endswith(A.SUFFIXES[kind]) and r.kind == kind
    assert c.images == 64
    if kind == "pt" or net == "cnn":  # the same code, or nothing discontinuous: must be exact
        assert c.verdict == "exact" and c.agreement == 1.0 and c.matching == 64
        assert c.max_abs_diff < 1e-3
    else:
        assert c.verdict in ("exact", "equivalent")
    if kind != "pt":
        assert c.layer.conv_max_rel < 1e-5 and c.layer.neurons_identical
        assert c.layer.neurons == (0 if net == "cnn" else 25 - 3 * 4)  # 4 of 8 Fire modules kept
    folder = os.path.dirname(r.path)
    assert os.path.getsize(r.path) == r.size_bytes
    assert not [f for f in os.listdir(folder) if f.endswith(".verifying")]  # no half-written file

    art = A.open_artifact(r.path, trust_torchscript=True)
    ckpt = load_checkpoint(ckpt_path)
    m = art.meta
    spiking = net != "cnn"
    assert (m.kind, m.model, m.spiking, m.image_size) == (kind, "squeezenet", spiking, 32)
    assert m.timesteps == (2 if spiking else 1) and m.bn_folded == (kind != "pt")
    assert m.classes == ckpt["classes"] and m.mean == ckpt["norm"]["mean"] and m.std == ckpt["norm"]["std"]
    assert m.keep == (KEEP if spiking else [f"fire{i}" for i in range(2, 10)])

    _, x = synthetic_test(ckpt)
    source = model_from_checkpoint(ckpt).eval()  # the checkpoint rebuilds its own pools
    pools = {type(p).__name__ for p in source.modules()
             if type(p).__name__.endswith("Pool2d") and not isinstance(p, nn.AdaptiveAvgPool2d)}
    assert pools == ({"AvgPool2d"} if net == "snn-avg" else {"MaxPool2d", "SpikingMaxPool2d"}
                     if spiking else {"MaxPool2d"})
    with torch.no_grad():
        ref = source(x).numpy()
    got = art.run(x.numpy())
    assert got.shape == (64, 10)
    if c.verdict == "exact":
        assert np.abs(got - ref).max() < 1e-3 and (got.argmax(1) == ref.argmax(1)).all()
    few = art.run(x[:3].numpy())  # the batch size is free
    assert few.shape == (3, 10) and np.isfinite(few).all()
    if net == "cnn":  # (an SNN's spikes may flip with the batch size's float rounding, see README)
        assert np.allclose(few, got[:3], atol=1e-4)


def test_firecut_load_rebuilds_the_model_without_training_code(exported, tmp_path):
    ckpt_path, r = exported["snn", "pt"]
    ckpt = load_checkpoint(ckpt_path)
    _, x = synthetic_test(ckpt, 16)
    with torch.no_grad():
        expected = model_from_checkpoint(ckpt).eval()(x)
    torch.save({"x": x, "y": expected}, tmp_path / "io.pt")
    code = f"""
import sys, firecut
assert 'torch' not in sys.modules
model = firecut.load({r.path!r})
import torch
io = torch.load({str(tmp_path / 'io.pt')!r})
with torch.no_grad():
    assert torch.equal(model(io['x']), io['y'])
assert model.meta.timesteps == 2 and model.meta.keep == {KEEP!r} and not model.training
heavy = ('firecut.training.loop', 'firecut.data', 'firecut.export.build', 'optuna')
print(sorted(m for m in heavy if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    with pytest.raises(FirecutError, match="is a torchscript export"):
        A.load(exported["snn", "torchscript"][1].path)


# ------------------------------------------------------------------------------ a failed check


def test_the_verdict_rules():
    from firecut.export.verify import LayerCheck, judge

    cfg = VerifyConfig()
    ok = LayerCheck(1e-7, True, 5, 10, 10, 1000)
    labelled = dict(acc_source=0.9, acc_artifact=0.9)  # compare() always sets both; None: made inputs
    same = dict(labelled, images=100, matching=100, agreement=1.0, max_abs_diff=0.0, lost=0, gained=0)
    moved = dict(labelled, images=1000, matching=987, agreement=0.995, max_abs_diff=0.4, lost=3, gained=2)
    worse = dict(moved, matching=900, agreement=0.99, lost=10, gained=0)  # 10 > 3 * sqrt(10) = 9.5
    churned = dict(moved, matching=0, agreement=0.9, max_abs_diff=1.3, lost=50, gained=50)
    assert judge(same, strict=True, layer=ok, cfg=cfg)[0] == "exact"
    assert judge(moved, strict=False, layer=ok, cfg=cfg)[0] == "equivalent"
    assert judge(moved, strict=True, layer=ok, cfg=cfg)[0] == "failed"  # pt, or a ReLU CNN
    assert judge(moved, strict=False, layer=None, cfg=cfg)[0] == "failed"
    assert "less accurate" in judge(worse, strict=False, layer=ok, cfg=cfg)[1]
    # as accurate, but 1 prediction in 10 moved: not what the source computes
    assert "predictions changed" in judge(churned, strict=False, layer=ok, cfg=cfg)[1]
    for bad in (LayerCheck(1e-3, True, 5, 0, 0, 1000), LayerCheck(1e-7, False, 5, 0, 0, 1000)):
        assert judge(same, strict=False, layer=bad, cfg=cfg)[0] == "failed"  # even if the ends agree
    unlabelled = dict(moved, acc_source=None, acc_artifact=None, lost=0, gained=0)  # made inputs
    verdict, reason = judge(unlabelled, strict=False, layer=ok, cfg=cfg)
    assert verdict == "equivalent" and "accuracy not checked" in reason



def _broken_unroll(model):
    graph = unroll(model)
    with torch.no_grad():
        graph.get_submodule("net.features.stem.conv" if hasattr(graph, "timesteps")
                            else "features.stem.conv").weight.mul_(1.5)
    return graph


@pytest.mark.parametrize("net", list(NETS))
def test_a_broken_export_fails_and_leaves_no_file(exported, net, monkeypatch, tmp_path):
    ckpt_path, _ = exported[net, "pt"]
    monkeypatch.setattr(E, "unroll", _broken_unroll)
    out = tmp_path / "broken.torchscript.pt"
    cfg = E.ExportConfig(str(ckpt_path), "torchscript", str(out),
                         verify=VerifyConfig(images=64, layer_images=16))
    with pytest.raises(FirecutError, match="failed its check.*layer by layer"):
        E.export_checkpoint(cfg)
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor its .verifying file


def test_a_pt_export_must_be_exact(exported, monkeypatch, tmp_path):
    ckpt_path, _ = exported["snn", "pt"]
    real = A.WRITERS["pt"]

    def off_by_a_little(model, graph, meta, arch):
        model = model_from_checkpoint(load_checkpoint(ckpt_path))
        with torch.no_grad():
            model.net.classifier.conv.bias.add_(1e-2)
        return real(model, graph, meta, arch)

    monkeypatch.setitem(A.WRITERS, "pt", off_by_a_little)
    with pytest.raises(FirecutError, match="nothing but float rounding may differ"):
        E.export_checkpoint(E.ExportConfig(str(ckpt_path), "pt", str(tmp_path / "x.pt"),
                                           verify=VerifyConfig(images=32)))
    assert not (tmp_path / "x.pt").exists()



def test_export_without_test_images_verifies_on_made_inputs(tmp_path, capsys):
    """A deployment machine without the dataset: the export is still checked score by score (and
    layer by layer), and says plainly that accuracy was not."""
    ckpt = make_ckpt(tmp_path / "snn.pt", spiking=True, keep=KEEP)
    payload = load_checkpoint(ckpt)
    payload["config"]["data"]["dataset"] = str(tmp_path / "gone" / "cifar10.npz")  # not on this machine
    save_checkpoint(payload, ckpt)
    for kind in ("pt", "onnx"):
        proc = cli("export", ckpt, "--format", kind, "--images", 16, capsys=capsys)
        assert proc.returncode == 0, proc.stderr
        assert "accuracy is NOT checked" in proc.stderr
        assert "checked   16 made inputs (no test images; accuracy not checked)" in proc.stdout
        assert "accuracy not checked (no labels)" in proc.stdout
        verdict = re.search(r"verdict +(\w+)", proc.stdout).group(1)
        assert verdict == "exact" if kind == "pt" else verdict in ("exact", "equivalent")
        if kind == "onnx":
            assert "layers    teacher-forced on 16 images" in proc.stdout


def test_an_onnx_graph_the_checker_rejects_is_not_written(exported, monkeypatch, tmp_path):
    import onnx

    def reject(proto, full_check=False):
        assert full_check
        raise onnx.checker.ValidationError("Nodes in a graph must be topologically sorted")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    ckpt = exported["cnn", "onnx"][0]
    cfg = E.ExportConfig(str(ckpt), "onnx", str(tmp_path / "m.onnx"), verify=VerifyConfig(images=8))
    with pytest.raises(FirecutError, match="fails onnx.checker .*topologically sorted.*nothing was written"):
        E.export_checkpoint(cfg)
    assert list(tmp_path.iterdir()) == []

# ------------------------------------------------------------------------------ predict


@pytest.mark.parametrize("kind", KINDS)
def test_predict_png_files_matches_the_artifact_and_the_source(exported, kind, tmp_path):
    from PIL import Image

    ckpt_path, r = exported["snn", kind]
    ckpt = load_checkpoint(ckpt_path)
    raw, x = synthetic_test(ckpt, 8)
    paths = []
    for i, img in enumerate(raw):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(paths[-1])
    preds = predict_files(r.path, paths, top=3, trust_torchscript=True)  # made here
    scores = A.open_artifact(r.path, trust_torchscript=True).run(x.numpy())
    assert [p.path for p in preds] == paths
    assert [p.top[0][0] for p in preds] == [ckpt["classes"][k] for k in scores.argmax(1)]
    for p in preds:
        probs = [q for _, q in p.top]
        assert len(p.top) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    if r.check.verdict == "exact":
        with torch.no_grad():
            ref = model_from_checkpoint(ckpt).eval()(x).argmax(1)
        assert [p.top[0][0] for p in preds] == [ckpt["classes"][k] for k in ref]
    # another size (JPEG, not square) is resized to the model's input
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(tmp_path / "big.jpg")
    (big,) = predict_files(r.path, [str(tmp_path / "big.jpg")], trust_torchscript=True)
    assert big.top[0][0] in ckpt["classes"]


# ------------------------------------------------------------------------------ bad input


def cli(*args, capsys) -> subprocess.CompletedProcess:
    """The CLI in this process (torch is already imported): exit code, stdout, stderr."""
    from firecut.cli import main

    old = sys.argv
    sys.argv = ["firecut", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # making a foreign TorchScript file
def test_bad_input_is_one_line_and_exit_2(exported, tmp_path, capsys):
    snn = exported["snn", "pt"][0]
    (tmp_path / "corrupt.pt").write_bytes(b"\x00\x01 not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(tmp_path / "plain.ts"))
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk")
    ts = exported["snn", "torchscript"][1].path
    shutil.copy(ts, tmp_path / "disguised.onnx")  # TorchScript (code) under a data format's name
    cases = [
        (["predict", ts, tmp_path / "x.png"], ["is TorchScript", "runs code", "--trust-torchscript"]),
        (["predict", tmp_path / "disguised.onnx", "--trust-torchscript", tmp_path / "x.png"],
         ["holds torchscript but its name says onnx"]),
        (["export", snn, "--format", "torchscript", "-o", tmp_path / "m.onnx"],
         ["-o", "holds torchscript but its name says onnx"]),
        (["export", tmp_path / "foreign.pt"], ["not a firecut checkpoint"]),
        (["export", tmp_path / "corrupt.pt"], ["corrupt"]),
        (["export", snn, "--format", "tflite"], ["unsupported --format 'tflite'", "onnx"]),
        (["export", snn, "--dataset", tmp_path / "missing.npz"], ["cannot verify the export", "--dataset"]),
        (["export", snn, "--images", 0], ["--images must be >= 1"]),
        (["predict", exported["snn", "onnx"][1].path, tmp_path / "missing.png"],
         ["missing.png", "does not exist"]),
        (["predict", snn, tmp_path / "x.png"], ["is a firecut checkpoint, not an export", "firecut export"]),
        (["predict", tmp_path / "foreign.pt", tmp_path / "x.png"], ["not a firecut export"]),
        (["predict", tmp_path / "plain.ts", tmp_path / "x.png"], ["not a firecut export", "TorchScript"]),
        (["predict", tmp_path / "junk.onnx", tmp_path / "x.png"], ["not a firecut export"]),
        (["predict", tmp_path / "nothing.onnx", tmp_path / "x.png"], ["nothing.onnx", "does not exist"]),
    ]
    (tmp_path / "x.png").write_bytes(b"")  # exists; the artifact is refused before it is read
    for args, needles in cases:
        assert_user_error(cli(*args, capsys=capsys), *needles)
    assert not list(tmp_path.glob("*.export.pt")) and not list(tmp_path.glob(".*verifying"))
    assert_user_error(run_cli("predict", exported["cnn", "onnx"][1].path, tmp_path / "x.png"),
                      "x.png", "not an image")  # a real subprocess: one line, no traceback


# ------------------------------------------------------------------------------ end to end


def test_export_and_predict_end_to_end_on_real_cifar10(tmp_path, capsys):
    """A ReLU CNN trained briefly on real images and converted (T=2, no fine-tuning): alive, with
    varied predictions. Train and convert as a user does (subprocesses); export in all three
    formats and predict through the same CLI entry point in this process (saves a torch import
    per call)."""
    from PIL import Image

    data = shared_file("cifar10-sub.npz")
    common = ["--dataset", data, "--test-subset", 50, "--quiet"]
    cnn = run_cli("train", "--cnn", "--act", "relu", "--train-subset", 800, "--epochs", 1, "--batch-size", 16,
                  *common, "--out", tmp_path / "cnn")
    assert cnn.returncode == 0, cnn.stderr
    snn = run_cli("train", "--init", tmp_path / "cnn" / "best.pt", "--epochs", 0, "--timesteps", 2,
                  "--train-subset", 200, "--batch-size", 50, *common, "--out", tmp_path / "snn")
    assert snn.returncode == 0, snn.stderr
    ckpt_path = tmp_path / "snn" / "best.pt"
    ckpt = load_checkpoint(ckpt_path)
    z = np.load(data)
    n = 16
    x_raw = torch.from_numpy(z["x_test"][:n]).permute(0, 3, 1, 2)
    x = next(iter(DeviceLoader(x_raw, torch.zeros(n, dtype=torch.long), n, ckpt["norm"]["mean"],
                               ckpt["norm"]["std"], torch.device("cpu"))))[0]
    with torch.no_grad():
        scores = model_from_checkpoint(ckpt).eval()(x)
    source = scores.argmax(1).tolist()
    assert len(set(source)) > 1  # a live net, not one constant answer
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"test{i}.png")
        Image.fromarray(z["x_test"][i]).save(paths[-1])

    for kind in KINDS:
        proc = cli("export", ckpt_path, "--format", kind, "--images", 50, capsys=capsys)
        assert proc.returncode == 0, proc.stderr
        path = ckpt_path.with_name("best" + A.SUFFIXES[kind])
        assert path.is_file() and f"artifact  {path}" in proc.stdout
        # recorded in the checkpoint, resolved (../shared may be a symbolic link)
        assert f"checked   50 test images of {data.resolve()}" in proc.stdout
        agree = float(re.search(r"agree +([\d.]+)%", proc.stdout).group(1))
        verdict = re.search(r"verdict +(\w+)", proc.stdout).group(1)
        assert verdict in ("exact", "equivalent") and "max |Δ|" in proc.stdout
        trust = ["--trust-torchscript"] if kind == "torchscript" else []  # made here
        pred = cli("predict", path, *paths, "--top", 2, *trust, capsys=capsys)
        assert pred.returncode == 0, pred.stderr
        lines = [l.split("\t") for l in pred.stdout.splitlines()]
        assert [l[0] for l in lines] == list(map(str, paths)) and all(len(l) == 5 for l in lines)
        got = [ckpt["classes"].index(l[1]) for l in lines]
        assert all(1 >= float(l[2]) >= float(l[4]) >= 0 for l in lines)
        if kind == "pt":  # the same network: the same predictions
            assert verdict == "exact" and agree == 100.0 and got == source
        else:  # folded: what the file computes; the source's classes up to rounding flips
            assert got == A.open_artifact(path, trust_torchscript=True).run(x.numpy()).argmax(1).tolist()
            # The check's verdict covers its own 50 class-balanced images, not these 16, and a batch
            # of another size rounds differently: a spike flipped by the last bit may move a class
            # here (CI saw 1 of 16 on an Intel CPU). A broken fold agrees on ~1 in 10.
            assert sum(g == s for g, s in zip(got, source, strict=True)) >= n - 2, (got, source)
    # a max-pool net with subtract reset and a half-full membrane: NIR holds none of the three
    assert_user_error(cli("export", ckpt_path, "--format", "nir", capsys=capsys), "cannot export",
                      "max-pooling", "reset to zero", "initial membrane")
    assert not ckpt_path.with_name("best.nir").exists()
