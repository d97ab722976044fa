"""NIR files run by toolchains firecut does not control (firecut.export.consumers): snntorch's
import_from_nir and norse's from_nir give the same scores as firecut's own spiking net on tiny
exported nets; and the consumers' own errors that firecut's graphs work around are pinned here, so
that a release that fixes (or changes) them is noticed."""

import logging
import warnings

import numpy as np
import pytest
import torch

from firecut.data import load_synthetic
from firecut.export import consumers as C
from firecut.export.to_nir import nir_graph
from firecut.export.unrolled import unroll
from test_export import synthetic_test
from test_nir import exportable

nir = pytest.importorskip("nir", reason="NIR export needs the nir package (pip install -e '.[dev]')")


def consumer(name: str) -> str:
    if name not in C.installed():
        pytest.skip(f"the NIR consumer {name} is not installed (pip install -e '.[dev]' installs it; "
                    "CI has it)")
    return name


def written(graph, tmp_path):
    """The graph as a consumer gets it: through a file, read back with nir's type check."""
    nir.write(str(tmp_path / "net.nir"), graph)
    return nir.read(str(tmp_path / "net.nir"))


@pytest.mark.parametrize("name", list(C.CONSUMERS))
@pytest.mark.parametrize("keep,beta", [(("fire2", "fire5"), 1.0), (("fire4", "fire6", "fire8", "fire9"), 0.9),
                                       ((), 1.0)])  # IF, leaky, three pools in the stem
def test_a_consumer_runs_the_file_as_firecut_does(name, keep, beta, tmp_path):
    consumer(name)
    model, _, _ = exportable(keep, beta, pool="avg2")
    graph = written(nir_graph(unroll(model), 32, {}), tmp_path)
    x = synthetic_test({"norm": dict(zip(("mean", "std"), load_synthetic().norm(), strict=True))})[1]
    with torch.no_grad():
        source = model(x).numpy()
    run = C.consumer_runner(name, graph, 3)
    out = run(x.numpy())
    assert out.shape == source.shape
    assert (out.argmax(1) == source.argmax(1)).all()
    assert np.abs(out - source).max() < 1e-4 * max(1.0, np.abs(source).max())
    assert np.array_equal(run(x.numpy()), out)  # no state carried from one batch to the next


def test_snntorch_maps_an_if_node_to_a_leaky_neuron():
    """snntorch 1.0.0 imports nir.IF as Leaky(beta=0.9) with subtract reset: not an
    integrate-and-fire neuron. firecut writes every neuron as a LIF node (to_nir's docstring)."""
    consumer("snntorch")
    import snntorch
    from snntorch.import_nir import _nir_to_snntorch_module

    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    node = nir.IF(r=ones, v_threshold=ones, v_reset=zeros)
    leaky = _nir_to_snntorch_module(node)
    assert isinstance(leaky, snntorch.Leaky)
    assert float(leaky.beta) == pytest.approx(0.9) and leaky.reset_mechanism == "subtract"


def test_norse_executes_a_node_with_two_inputs_wrongly():
    """NIR sums every edge that ends in a node; norse 1.1.0's from_nir (nirtorch's deprecated
    loader) passes one of them on. firecut's graphs are chains (to_nir.merged_expand)."""
    consumer("norse")
    import norse.torch

    def one():
        return nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 1, 1), np.float32), stride=1, padding=0,
                          dilation=1, groups=1, bias=np.zeros(1, np.float32))

    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1, 4, 4])}), "a": one(),
                            "b": one(), "output": nir.Output(output_type={"output": np.array([1, 4, 4])})},
                     edges=[("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = norse.torch.from_nir(g, dt=1e-4)(torch.ones(1, 1, 4, 4))
    assert torch.equal(out.detach(), torch.ones(1, 1, 4, 4))  # NIR's sum is 2


def test_norse_ignores_a_lif_nodes_r(caplog):
    consumer("norse")
    from norse.torch.utils.import_nir import _import_norse_module

    full = lambda v: np.full(2, v, np.float32)  # noqa: E731
    node = nir.LIF(tau=full(1e-3), r=full(5.0), v_leak=full(0.0), v_threshold=full(100.0), v_reset=full(0.0))
    with caplog.at_level(logging.WARNING):
        cell = _import_norse_module(node, dt=1e-4)
    z, state = cell(torch.ones(1, 2))
    assert torch.allclose(state.v, torch.full((1, 2), 0.1))  # dt / tau * I: r = 5 would give 0.5
    assert "r is expected to be set to 1" in caplog.text


def test_an_unknown_or_missing_consumer_is_one_clear_error(monkeypatch):
    from firecut.errors import FirecutError

    with pytest.raises(FirecutError, match="unknown NIR consumer 'loihi'; choose one of: snntorch, norse"):
        C.consumer_runner("loihi", None, 1)
    monkeypatch.setattr(C, "installed", lambda: [])
    with pytest.raises(FirecutError, match=r"norse is not installed: pip install -e '.\[nir\]'"):
        C.consumer_runner("norse", None, 1)


def test_export_runs_the_file_in_each_installed_consumer(tmp_path):
    """`firecut export --format nir` reports each consumer's run of the file it wrote: an avg2 net
    agrees with firecut's scores; a --pool avg net (SumPool2d, Scale) is reported as one they
    cannot run, and the file is still written."""
    from firecut.export import build as E
    from firecut.export.verify import VerifyConfig
    from test_export import save_synthetic_ckpt

    for name in C.CONSUMERS:
        consumer(name)
    for pool in ("avg2", "avg"):
        model, mc, sc = exportable(("fire2", "fire5"), pool=pool)
        ckpt = save_synthetic_ckpt(tmp_path / f"{pool}.pt", model, mc, sc)
        cfg = E.ExportConfig(str(ckpt), "nir", verify=VerifyConfig(images=64, layer_images=8))
        report = E.export_checkpoint(cfg)
        assert [r["consumer"] for r in report.consumers] == list(C.CONSUMERS)
        text = E.format_report(report)
        for r in report.consumers:
            if pool == "avg2":
                assert r["agreement"] == 1.0 and r["max_abs_diff"] < 1e-4 and "acc" in r
                assert f"consumer  {r['consumer']} {r['version']}: agree 100.0%" in text
            else:
                assert "error" in r and "cannot run this graph" in text
        assert (tmp_path / f"{pool}.nir").is_file()


def test_target_nir_trains_a_net_the_consumers_run_and_refuses_what_contradicts_it(tmp_path):
    """`--target nir` on the CNN sets its pools; the SNN converted from it inherits the target
    and its neuron (reset to zero, no initial membrane); both are recorded; the NIR export is exact
    and each consumer agrees. A flag that contradicts the target, or a CNN built for another, is
    refused in one line."""
    import yaml

    from conftest import assert_user_error, run_cli, run_cli_many

    for name in C.CONSUMERS:
        consumer(name)
    small = ["--dataset", "synthetic", "--set", "model.width=0.25", "--epochs", 1, "--quiet"]
    cnn = run_cli("train", "--cnn", "--target", "nir", *small, "--out", tmp_path / "cnn")
    assert cnn.returncode == 0, cnn.stderr
    snn = run_cli("train", "--init", tmp_path / "cnn" / "best.pt", "--timesteps", 2, *small,
                  "--out", tmp_path / "snn")
    assert snn.returncode == 0, snn.stderr
    cfg = yaml.safe_load((tmp_path / "snn" / "config.yaml").read_text())
    assert cfg["model"]["target"] == "nir" and cfg["model"]["pool"] == "avg2"
    assert cfg["spiking"]["reset"] == "zero" and cfg["spiking"]["v_init"] == 0.0
    exp = run_cli("export", tmp_path / "snn" / "best.pt", "--format", "nir", "--images", 64)
    assert exp.returncode == 0, exp.stderr
    assert "verdict   exact" in exp.stdout
    for name in C.CONSUMERS:
        line = next(l for l in exp.stdout.splitlines() if l.startswith(f"consumer  {name} "))
        assert "agree 100.0%" in line
    plain = run_cli("train", "--cnn", *small, "--out", tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    bad = run_cli_many(
        ["train", "--cnn", "--target", "nir", "--pool", "max", *small, "--out", tmp_path / "b1"],
        ["train", "--init", tmp_path / "cnn" / "best.pt", "--reset", "subtract", *small,
         "--out", tmp_path / "b2"],
        ["train", "--init", tmp_path / "plain" / "best.pt", "--target", "nir", *small,
         "--out", tmp_path / "b3"],
        ["train", "--cnn", "--target", "loihi", *small, "--out", tmp_path / "b4"])
    assert_user_error(bad[0], "--target nir needs --pool avg2", "not model.pool = 'max'")
    assert_user_error(bad[1], "--target nir needs --reset zero")
    assert_user_error(bad[2], "was not trained for it (its target is any)", "train the cnn with --target nir")
    assert_user_error(bad[3], "unknown --target 'loihi'; choose one of: any, nir")
    assert not any((tmp_path / f"b{i}").exists() for i in range(1, 5))


def test_the_recipe_builds_every_step_for_its_target():
    from firecut.config import RecipeConfig
    from firecut.training.recipe import step_config

    for mode in ("cnn", "snn", "snn-scratch"):
        cfg = step_config(RecipeConfig(preset="cpu", target="nir"), mode)
        got = (cfg.model.target, cfg.model.pool, cfg.spiking.reset, cfg.spiking.v_init)
        assert got == ("nir", "avg2", "zero", 0.0)
    cfg = step_config(RecipeConfig(preset="cpu"), "snn")
    assert (cfg.model.target, cfg.model.pool, cfg.spiking.reset) == ("any", "max", "subtract")
