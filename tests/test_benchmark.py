"""The backbone benchmark and `firecut report`: tables, resume, refusals, real data at 32 and 64 px."""

import json

import pytest

from firecut import benchmark as B
from firecut.config import ModelConfig, SpikingConfig
from firecut.errors import FirecutError
from firecut.network import build_network, count_params

from conftest import assert_user_error, counting, experiment, quiet_fit, run_cli, shared_file


def small(**kw) -> B.BenchmarkConfig:
    base = dict(dataset="synthetic", root="", models=["squeezenet_p", "mnasnet"], epochs=1,
                finetune_epochs=1, batch_size=64, width=0.25, device="cpu", timesteps=2)
    return experiment(B.BenchmarkConfig, **{**base, **kw})


def test_models_option():
    assert B.parse_models("all") == list(B.BENCHMARK_MODELS)
    assert B.parse_models("mnasnet, xception,mnasnet") == ["mnasnet", "xception"]
    assert len(B.BENCHMARK_MODELS) == 6
    with pytest.raises(FirecutError, match="unknown model.*resnet"):
        B.parse_models("mnasnet,resnet")
    with pytest.raises(FirecutError, match="empty"):
        B.parse_models(" , ")


def fake_run(model, mode, acc, energy, seed=0):
    return {"model": model, "mode": mode, "dataset": "cifar10", "params": 1000, "epochs": 1,
            "timesteps": 4 if mode == "snn" else 1, "test_images": 100, "acc": acc, "f1": acc / 2,
            "ac": 5e5 if mode == "snn" else 0.0, "mac": 2e6, "energy_mj": energy,
            "firing_rate": 0.1 if mode == "snn" else None, "train_seconds": 1.0, "seed": seed}


def test_tables_from_runs_mean_over_seeds_and_the_energy_ratio():
    runs = [fake_run("mnasnet", "cnn", 0.80, 0.10), fake_run("mnasnet", "snn", 0.70, 0.04),
            fake_run("mnasnet", "cnn", 0.82, 0.10, 1), fake_run("mnasnet", "snn", 0.74, 0.04, 1)]
    rows = B.aggregate(runs, ["mnasnet"])
    assert [(r["model"], r["mode"]) for r in rows] == [("mnasnet", "cnn"), ("mnasnet", "snn")]
    assert rows[1]["acc"] == pytest.approx(0.72) and rows[1]["acc_per_seed"] == [0.70, 0.74]
    t1 = B.table1_markdown(rows)
    assert t1.splitlines()[0] == ("| Dataset | Model | Acc | F1 | AC (k) | MAC (k) | Params (k) | "
                                  "Energy (mJ) |")
    assert t1.splitlines()[2] == ("| cifar10 | MnasNet | 72.00 ± 2.83 | 36.00 ± 1.41 | 500.0 | 2,000.0 | "
                                  "1.0 | 0.0400 ± 0.0000 |")
    assert len(t1.splitlines()) == 3  # the SNN only
    t2 = B.table2_markdown(rows).splitlines()
    assert t2[0].startswith("| Model | CNN Acc | SNN Acc | ΔA | CNN Energy (mJ) | SNN Energy (mJ) |")
    assert t2[2] == ("| MnasNet | 81.00 ± 1.41 | 72.00 ± 2.83 | -9.00 | 0.1000 ± 0.0000 | 0.0400 ± 0.0000 | "
                     "2.50 | 0.97 |")  # int8: 2e6 x 0.23 / (5e5 x 0.03 + 2e6 x 0.23)


def test_benchmark_resumes_after_a_kill_and_keeps_finished_runs(tmp_path, monkeypatch):
    calls = []

    def killed_at_the_third(cfg, out):
        calls.append(out)
        if len(calls) == 3:  # squeezenet_p's CNN and SNN are done; mnasnet's CNN is not
            raise KeyboardInterrupt
        return quiet_fit(cfg, out)

    with pytest.raises(KeyboardInterrupt):
        B.run_benchmark(small(), tmp_path, fit=killed_at_the_third, log=lambda m: None)
    assert not (tmp_path / "table1.md").exists()  # no partial table that looks whole
    done = tmp_path / "squeezenet_p" / "snn-s0" / "summary.json"
    stamp = done.stat().st_mtime_ns
    trained = []

    counting_fit = counting(trained, parts=2)  # records 'model/run'
    rows = B.run_benchmark(small(), tmp_path, fit=counting_fit, log=lambda m: None)
    assert trained == ["mnasnet/cnn-s0", "mnasnet/snn-s0"]  # nothing finished was retrained
    assert done.stat().st_mtime_ns == stamp
    assert [(r["model"], r["mode"]) for r in rows] == [
        ("squeezenet_p", "cnn"), ("squeezenet_p", "snn"), ("mnasnet", "cnn"), ("mnasnet", "snn")]
    for r in rows:
        net = build_network(ModelConfig(name=r["model"], width=0.25, act="clipq"),
                            SpikingConfig(enabled=r["mode"] == "snn"), 10, 32)
        assert r["params"] == count_params(net)
        assert (r["ac"] > 0) == (r["mode"] == "snn")
    # another model list may join the same folder; another recipe may not
    B.run_benchmark(small(models=["squeezenet_p"]), tmp_path, fit=counting_fit, log=lambda m: None)
    assert len(trained) == 2
    assert (tmp_path / "table2.md").read_text().count("\n") == 3
    with pytest.raises(FirecutError, match="different recipe.*epochs"):
        B.run_benchmark(small(epochs=2), tmp_path, fit=counting_fit, log=lambda m: None)


@pytest.mark.parametrize("over,msg", [(dict(preset="fast"), "unknown preset 'fast'"),
                                      (dict(epochs=0), "--epochs must be >= 1"),
                                      (dict(seeds=0), "--seeds must be >= 1")])
def test_impossible_settings_are_refused_before_out_is_touched(tmp_path, over, msg):
    with pytest.raises(FirecutError, match=msg):
        B.run_benchmark(small(**over), tmp_path / "o", fit=quiet_fit, log=lambda m: None)
    assert not (tmp_path / "o").exists()


def bench_args(data, out, models="squeezenet_p,shufflenetv2"):
    return ["benchmark", "--dataset", data, "--models", models, "--train-subset", 200,
            "--test-subset", 100, "--epochs", 1, "--finetune-epochs", 1, "--batch-size", 50,
            "--width", 0.25, "--out", out]


def test_benchmark_and_report_cli_on_real_cifar10_and_tiny_imagenet(tmp_path):
    cifar = shared_file("cifar10-sub.npz")
    tiny = shared_file("tinyimagenet-sub.npz")
    proc = run_cli(*bench_args(cifar, tmp_path / "c10"))
    assert proc.returncode == 0, proc.stderr
    assert "model 2/2: shufflenetv2 seed 0" in proc.stderr
    d = json.loads((tmp_path / "c10" / "benchmark.json").read_text())
    rows = {(r["model"], r["mode"]): r for r in d["rows"]}
    assert set(rows) == {(m, k) for m in ("squeezenet_p", "shufflenetv2") for k in ("cnn", "snn")}
    for (_, mode), r in rows.items():
        assert r["dataset"] == "cifar10-sub" and r["test_images"] == 100 and 0 <= r["acc"] <= 1
        assert r["energy_mj"] == pytest.approx((r["ac"] * 0.9 + r["mac"] * 4.6) * 1e-9)
        assert (r["ac"] > 0) == (mode == "snn")
    for model in ("squeezenet_p", "shufflenetv2"):
        assert rows[(model, "snn")]["mac"] < rows[(model, "cnn")]["mac"]  # spikes make adds
    assert rows[("squeezenet_p", "snn")]["mac"] == 32 * 32 * 16 * 27  # only the encoder multiplies
    assert rows[("shufflenetv2", "snn")]["mac"] > 32 * 32 * 8 * 27  # plus the linear dw -> pw
    table2 = (tmp_path / "c10" / "table2.md").read_text()
    for model, name in (("squeezenet_p", "SqueezeNet-P"), ("shufflenetv2", "ShuffleNetV2")):
        ratio = rows[(model, "cnn")]["energy_mj"] / rows[(model, "snn")]["energy_mj"]
        cnn, snn = rows[(model, "cnn")], rows[(model, "snn")]
        int8 = cnn["mac"] * 0.23 / (snn["ac"] * 0.03 + snn["mac"] * 0.23)  # Horowitz: int8 add, mult + add
        assert f"| {name} |" in table2 and f"| {ratio:.2f} | {int8:.2f} |" in table2
    assert proc.stdout.startswith((tmp_path / "c10" / "table1.md").read_text())
    assert (tmp_path / "c10" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_cli(*bench_args(cifar, tmp_path / "c10"))
    assert again.returncode == 0 and again.stdout == proc.stdout  # resumed: nothing retrained

    tiny_run = run_cli(*bench_args(tiny, tmp_path / "tiny", "squeezenet_p"))
    assert tiny_run.returncode == 0, tiny_run.stderr
    t = json.loads((tmp_path / "tiny" / "benchmark.json").read_text())["rows"]
    snn64 = next(r for r in t if r["mode"] == "snn")
    assert snn64["dataset"] == "tinyimagenet-sub"
    assert snn64["mac"] == 4 * rows[("squeezenet_p", "snn")]["mac"]  # 64x64: exactly 4x the encoder
    assert snn64["params"] > rows[("squeezenet_p", "snn")]["params"]  # 200 classes

    merged = run_cli("report", tmp_path / "c10", tmp_path / "tiny", "-o", tmp_path / "t1.md")
    assert merged.returncode == 0, merged.stderr
    lines = merged.stdout.splitlines()
    assert [l.split(" | ")[:2] for l in lines[2:]] == [
        ["| cifar10-sub", "SqueezeNet-P"], ["| cifar10-sub", "ShuffleNetV2"],
        ["| tinyimagenet-sub", "SqueezeNet-P"]]
    assert (tmp_path / "t1.md").read_text() == merged.stdout
    priced = run_cli("report", tmp_path / "c10", "--e-ac-pj", 900, "--e-mac-pj", 4600, "--output",
                     tmp_path / "x1000.md")  # re-priced from the counts: 1000x the paper's costs
    assert priced.returncode == 0, priced.stderr
    r = rows[("squeezenet_p", "snn")]
    assert f" {r['energy_mj'] * 1000:.4f} " in priced.stdout and priced.stdout != merged.stdout


def test_report_refuses_what_it_cannot_read(tmp_path):
    assert_user_error(run_cli("report", tmp_path / "nope"), "no such folder")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "benchmark.yaml").write_text("dataset: cifar10\n")
    assert_user_error(run_cli("report", tmp_path / "half"), "has not finished")
    (tmp_path / "other").mkdir()
    assert_user_error(run_cli("report", tmp_path / "other"), "neither a benchmark nor an ablation")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "benchmark.json").write_text("{not json")
    assert_user_error(run_cli("report", tmp_path / "bad"), "cannot read")


def test_report_includes_ablation_rows(tmp_path):
    from firecut.report import merged_table1

    (tmp_path / "ablate.yaml").write_text("dataset: ../shared/data/cifar100-sub.npz\n")
    row = {"schedule": "Ref-1", "keep": ["fire4"], "params": 599130, "seeds": 1, "acc": 0.5, "f1": 0.4,
           "ac": 1e6, "mac": 1.7e6, "energy_mj": 0.0087}
    (tmp_path / "table.json").write_text(json.dumps({"schedules": [row], "runs": []}))
    assert merged_table1([str(tmp_path)]).splitlines()[2] == (
        "| cifar100-sub | SqueezeNet [Ref-1] | 50.00 | 40.00 | 1,000.0 | 1,700.0 | 599.1 | 0.0087 |")


def test_benchmark_cli_refuses_bad_input(tmp_path):
    assert_user_error(run_cli("benchmark", "--models", "resnet", "--out", tmp_path / "o"), "unknown model")
    assert_user_error(run_cli("benchmark", "--dataset", tmp_path / "missing.npz", "--models", "mnasnet",
                              "--out", tmp_path / "o2"), "missing.npz")
