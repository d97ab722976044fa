"""NIR export: the graph nirtorch executes equals the spiking net it came from (concatenations
split, amplitudes folded, ceil-mode average pools rebuilt, stacked pools, IF and LIF); the file
reloads through `nir.read` with its type check; nets NIR cannot hold are refused in one line."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_user_error
from firecut.config import ModelConfig, SpikingConfig
from firecut.data import load_synthetic
from firecut.energy import EnergyModel, OpCounter
from firecut.export import artifact as A
from firecut.export import build as E
from firecut.export.to_nir import nir_graph, nir_problems, runner, window_cells
from firecut.export.unrolled import unroll
from firecut.export.verify import VerifyConfig
from firecut.network import build_network
from test_export import _calibrate, cli, save_synthetic_ckpt, synthetic_test

nir = pytest.importorskip("nir", reason="NIR export needs the nir package (pip install -e '.[dev]')")

STANDARD = {"Input", "Output", "Conv2d", "SumPool2d", "AvgPool2d", "Scale", "IF", "LIF"}


def exportable(keep=None, beta=1.0, **kw):
    torch.manual_seed(0)
    mc = ModelConfig(width=0.25, keep=keep, pool=kw.pop("pool", "avg"))
    sc = SpikingConfig(enabled=True, timesteps=3, beta=beta, reset=kw.pop("reset", "zero"),
                       v_init=kw.pop("v_init", 0.0))
    model = build_network(mc, sc, 10, 32)
    _calibrate(model)
    return model, mc, sc


@pytest.mark.parametrize("size", range(3, 34))
def test_window_cells_are_torch_ceil_mode_windows(size):
    sums = F.avg_pool2d(torch.ones(1, 1, size, size), 3, 2, ceil_mode=True, divisor_override=1)[0, 0]
    cells = window_cells(size)
    assert torch.equal(sums, torch.from_numpy(np.outer(cells, cells)))


# stacked pools (fire2, fire3 dropped: two pools in the stem), leaky neurons, 2x2/2 pools
REF1 = ("fire4", "fire6", "fire8", "fire9")


@pytest.mark.parametrize("keep,beta,pool", [
    (None, 1.0, "avg"), (REF1, 1.0, "avg"), (("fire2", "fire5"), 0.9, "avg"), (None, 1.0, "avg2"),
    (REF1, 0.9, "avg2"), ((), 1.0, "avg")])  # the last: no Fire module, three pools in the stem
def test_nir_graph_run_by_nirtorch_equals_the_snn(keep, beta, pool):
    from firecut.export.to_nir import DT, IF_TAU

    model, _, _ = exportable(keep, beta, pool=pool)
    graph = unroll(model)
    g = nir_graph(graph, 32, {})
    kinds = {type(n).__name__ for n in g.nodes.values()}
    ends = [dst for _, dst in g.edges]
    assert len(ends) == len(set(ends))  # a chain: no node has two inputs (norse executes none)
    assert kinds <= STANDARD and "IF" not in kinds
    if pool == "avg2":  # every consumer maps these: no pool node at all
        assert kinds == {"Input", "Output", "Conv2d", "LIF"}
    neurons = [n for n in g.nodes.values() if isinstance(n, nir.LIF)]
    tau = IF_TAU if beta == 1 else DT / (1 - beta)
    for n in neurons:  # one Euler step of DT, r = 1: v = (1 - k) v + k I, firing above k = DT / tau
        assert np.allclose(n.tau, tau) and (n.r == 1).all() and (n.v_leak == 0).all()
        assert np.allclose(n.v_threshold, DT / tau) and np.unique(n.v_threshold).size == 1
    assert float(g.metadata["dt"]) == DT
    x = synthetic_test({"norm": dict(zip(("mean", "std"), load_synthetic().norm(), strict=True))})[1]
    with OpCounter(model, 3) as counter, torch.no_grad():
        counter.begin_batch(len(x))
        source = model(x).numpy()
    rate = counter.report(EnergyModel())["firing_rate"]
    assert 0.02 < rate < 0.9  # neurons that fire: the comparison has spikes to get wrong
    out = runner(g, 3)(x.numpy())
    assert out.shape == source.shape
    assert np.abs(out - source).max() < 1e-4 * max(1.0, np.abs(source).max())
    assert (out.argmax(1) == source.argmax(1)).all()


def test_export_writes_a_file_nir_reads_with_its_type_check(tmp_path):
    model, mc, sc = exportable(("fire4", "fire6", "fire8", "fire9"))
    ckpt = save_synthetic_ckpt(tmp_path / "snn.pt", model, mc, sc)
    cfg = E.ExportConfig(str(ckpt), "nir", verify=VerifyConfig(images=64, layer_images=16))
    report = E.export_checkpoint(cfg)
    assert report.path.endswith("snn.nir") and report.check.verdict in ("exact", "equivalent")
    assert report.check.agreement == 1.0
    g = nir.read(report.path)  # type-checked on read, as any NIR consumer reads it
    assert {type(n).__name__ for n in g.nodes.values()} <= STANDARD
    art = A.open_artifact(report.path)
    assert art.meta.kind == "nir" and art.meta.timesteps == 3 and art.meta.bn_folded
    x = synthetic_test({"norm": {"mean": art.meta.mean, "std": art.meta.std}})[1]
    with torch.no_grad():
        assert (art.run(x.numpy()).argmax(1) == model(x).argmax(1).numpy()).all()


@pytest.mark.parametrize("kw,needle", [
    (dict(pool="max"), "max-pooling, which NIR lacks (train the CNN with --pool avg"),
    (dict(reset="subtract"), "do not reset to zero, which NIR lacks (fine-tune the SNN with --reset zero)"),
    (dict(v_init=0.5), "an initial membrane (v_init), which NIR lacks"),
])
def test_a_net_nir_cannot_hold_is_refused_in_one_line(kw, needle, tmp_path, capsys):
    model, mc, sc = exportable(**kw)
    assert len(nir_problems(model)) == 1
    ckpt = save_synthetic_ckpt(tmp_path / "snn.pt", model, mc, sc)
    assert_user_error(cli("export", ckpt, "--format", "nir", capsys=capsys), "cannot export", needle)
    assert not list(tmp_path.glob("*.nir")) and not list(tmp_path.glob(".*verifying"))


def test_a_cnn_is_refused_and_every_lack_is_named(tmp_path, capsys):
    torch.manual_seed(0)
    mc = ModelConfig(width=0.25)
    cnn = build_network(mc, SpikingConfig(enabled=False), 10, 32).eval()
    ckpt = save_synthetic_ckpt(tmp_path / "cnn.pt", cnn, mc, SpikingConfig(enabled=False))
    assert_user_error(cli("export", ckpt, "--format", "nir", capsys=capsys),
                      "it is a CNN, and NIR holds spiking nets")
    model, _, _ = exportable(pool="max", reset="subtract", v_init=0.5)
    assert len(nir_problems(model)) == 3
