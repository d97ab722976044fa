"""Training: metrics, a full fit on synthetic data, exact resume after interruption, checkpoints."""

import json
from pathlib import Path

import pytest
import torch

import firecut

from firecut.checkpoint import configs_of
from firecut.training import device as D
from firecut.training import loop as T
from firecut.training import metrics as M
from firecut.training import steps
from firecut.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from firecut.config import RunConfig, apply_preset, load_yaml, save_yaml, validate
from firecut.errors import FirecutError


def test_macro_f1_by_hand():
    # classes 0,1,2; true [0,0,1,1,2], pred [0,1,1,1,0]
    cm = M.confusion(torch.tensor([0, 1, 1, 1, 0]), torch.tensor([0, 0, 1, 1, 2]), 3)
    # F1_0 = 2*1/(2+1+1) = .5; F1_1 = 2*2/(4+1+0) = .8; F1_2 = 0
    assert M.macro_f1(cm) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # a class absent from both targets and predictions does not count
    cm4 = M.confusion(torch.tensor([0, 1]), torch.tensor([0, 1]), 4)
    assert M.macro_f1(cm4) == 1.0


def tiny_cfg(**train) -> RunConfig:
    cfg = RunConfig()
    cfg.data.dataset = "synthetic"
    cfg.model.width = 0.25
    cfg.train.epochs = 3
    cfg.train.batch_size = 64
    cfg.train.device = "cpu"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return validate(cfg)


def test_fit_learns_synthetic_and_writes_a_complete_run(tmp_path):
    cfg = tiny_cfg(epochs=6, lr=0.1, batch_size=32)
    s = T.fit(cfg, str(tmp_path / "run"))
    assert s["acc"] > 0.5  # 10 classes: chance is 0.1
    assert s["ac"] == 0 and s["mac"] > 0 and s["firing_rate"] is None
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "command.txt", "env.json", "metrics.csv", "last.pt", "best.pt",
            "summary.json"} <= files
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 1 + 6
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["classes"][0] == "class0" and ckpt["arch"]["model"]["width"] == 0.25
    assert ckpt["metrics"]["acc"] == s["best_acc"]


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    cfg = tiny_cfg(epochs=3)
    whole = T.fit(cfg, str(tmp_path / "whole"))

    real_epoch, calls = steps.train_epoch, []

    def dies_in_epoch_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*a, **k)

    monkeypatch.setattr(steps, "train_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        T.fit(cfg, str(tmp_path / "cut"))
    assert not (tmp_path / "cut" / "summary.json").exists()  # no partial result looks whole
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(steps, "train_epoch", real_epoch)
    resumed = T.fit(cfg, str(tmp_path / "cut"))
    for key in ("acc", "f1", "ac", "mac", "energy_mj", "test_loss"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-5), key
    assert len((tmp_path / "cut" / "metrics.csv").read_text().splitlines()) == 1 + 3
    # a third run finds the folder complete and trains nothing
    monkeypatch.setattr(steps, "train_epoch", lambda *a, **k: pytest.fail("trained again"))
    assert T.fit(cfg, str(tmp_path / "cut"))["acc"] == resumed["acc"]


def test_out_folder_with_other_settings_is_refused(tmp_path):
    T.fit(tiny_cfg(epochs=1), str(tmp_path / "r"))
    with pytest.raises(FirecutError, match="different settings.*train.epochs"):
        T.fit(tiny_cfg(epochs=2), str(tmp_path / "r"))
    assert T.fit(tiny_cfg(epochs=2), str(tmp_path / "r"), restart=True)["epochs"] == 2


def test_a_run_started_before_a_setting_existed_resumes_at_its_default(tmp_path):
    """A config.yaml written by an older firecut lacks fields added since (energy.model): the
    run resumes when the new field is at its default, and is refused when it is not."""
    import yaml

    from firecut.runs import RunFolder

    run = RunFolder(tmp_path / "run")
    run.open(RunConfig())
    stored = yaml.safe_load(run.file("config.yaml").read_text())
    del stored["energy"]["model"]
    run.file("config.yaml").write_text(yaml.safe_dump(stored))
    run.file("last.pt").write_bytes(b"")  # finished work to resume
    assert run.open(RunConfig()) == "resume"
    cfg = RunConfig()
    cfg.energy.model = "hardware"
    with pytest.raises(FirecutError, match="different settings.*energy.model"):
        run.open(cfg)


def test_a_run_that_failed_before_any_epoch_does_not_block_the_folder(tmp_path):
    bad = tiny_cfg(epochs=1)
    bad.data.dataset = str(tmp_path / "missing.npz")
    with pytest.raises(FirecutError, match="does not exist"):
        T.fit(bad, str(tmp_path / "r"))
    assert T.fit(tiny_cfg(epochs=1), str(tmp_path / "r"))["dataset"] == "synthetic"


def test_snn_from_cnn_checkpoint_and_checkpoint_round_trip(tmp_path):
    cnn_cfg = tiny_cfg(epochs=2, lr=0.1)
    cnn_cfg.model.act = "clipq"
    T.fit(cnn_cfg, str(tmp_path / "cnn"))
    snn_cfg = tiny_cfg(epochs=1, lr=0.01)
    snn_cfg.spiking.enabled, snn_cfg.spiking.init = True, str(tmp_path / "cnn" / "best.pt")
    s = T.fit(validate(snn_cfg), str(tmp_path / "snn"))
    assert s["spiking"] and s["timesteps"] == 4 and s["ac"] > 0 and 0 < s["firing_rate"] < 1
    stem = next(r for r in s["layers"] if r["name"].endswith("stem.conv"))
    assert stem["input"] == "real-static" and s["mac"] == stem["mac"]  # only the encoding layer
    clash = tiny_cfg(epochs=1)
    clash.spiking.enabled, clash.spiking.init = True, str(tmp_path / "cnn" / "best.pt")
    clash.model.keep = ["fire2"]
    with pytest.raises(FirecutError, match="has its own Fire modules"):
        T.fit(validate(clash), str(tmp_path / "clash"))
    ckpt = load_checkpoint(tmp_path / "snn" / "best.pt")
    model = model_from_checkpoint(ckpt).eval()
    again = T.evaluate_checkpoint(str(tmp_path / "snn" / "best.pt"), "synthetic", "", device="cpu")
    assert again["acc"] == pytest.approx(s["acc"])
    assert again["ac"] == pytest.approx(s["ac"], rel=1e-6)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model_from_checkpoint(ckpt).eval()(x))


def test_init_must_be_a_cnn(tmp_path):
    cfg = tiny_cfg(epochs=1)
    cfg.spiking.enabled = True
    T.fit(cfg, str(tmp_path / "snn"))
    cfg2 = tiny_cfg(epochs=1)
    cfg2.spiking.enabled, cfg2.spiking.init = True, str(tmp_path / "snn" / "best.pt")
    with pytest.raises(FirecutError, match="already a spiking net"):
        T.fit(cfg2, str(tmp_path / "again"))


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(FirecutError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(FirecutError, match="not a firecut checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint({"format": "firecut-checkpoint", "format_version": 99}, tmp_path / "new.pt")
    with pytest.raises(FirecutError, match="newer firecut"):
        load_checkpoint(tmp_path / "new.pt")


def test_presets_apply_per_mode_and_flags_win():
    cfg = apply_preset(RunConfig(), "quick")
    assert cfg.model.act == "clipq" and cfg.train.epochs == 8
    snn = RunConfig()
    snn.spiking.enabled, snn.spiking.init = True, "x.pt"
    assert apply_preset(snn, "paper").spiking.timesteps == 8
    with pytest.raises(FirecutError, match="unknown preset 'fast'"):
        apply_preset(RunConfig(), "fast")
    bad = RunConfig()
    bad.spiking.timesteps = 0
    with pytest.raises(FirecutError, match="--timesteps must be >= 1"):
        validate(bad)
    json.dumps(cfg.to_dict())  # the config snapshot is plain data


def test_settings_diff_names_changed_keys_less_ignored_and_counts_missing_as_defaults():
    from firecut.config import settings_diff

    old = {"epochs": 1, "root": "/a", "width": 0.5}
    assert settings_diff(old, {"epochs": 2, "root": "/b", "width": 0.5}, ("root",)) == ["epochs"]
    assert settings_diff(old, {"epochs": 1, "width": 0.5, "lam": 0.2}) == ["lam", "root"]
    # a key the stored settings lack (added since) counts as its default
    assert settings_diff(old, {**old, "lam": 0.2}, defaults={"lam": 0.2}) == []
    assert settings_diff(old, {**old, "lam": 0.3}, defaults={"lam": 0.2}) == ["lam"]


def test_config_yaml_round_trip_and_unknown_keys(tmp_path):
    cfg = tiny_cfg(epochs=2)
    cfg.model.keep = ["fire2", "fire9"]
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("train: {epochz: 3}\n")
    with pytest.raises(FirecutError, match="epochz"):
        load_yaml(tmp_path / "bad.yaml")


def test_a_checkpoint_for_another_dataset_shape_is_refused(tmp_path):
    import numpy as np

    T.fit(tiny_cfg(epochs=1), str(tmp_path / "r"))
    big = tmp_path / "big.npz"
    np.savez(big, x_train=np.zeros((4, 64, 64, 3), np.uint8), y_train=np.arange(4) % 2,
             x_test=np.zeros((4, 64, 64, 3), np.uint8), y_test=np.arange(4) % 2)
    with pytest.raises(FirecutError, match="trained for 10 classes at 32px, but the dataset has 2 at 64px"):
        T.evaluate_checkpoint(str(tmp_path / "r" / "best.pt"), str(big), "", device="cpu")
    cfg = tiny_cfg(epochs=1)
    cfg.data.dataset = str(big)
    cfg.spiking.enabled, cfg.spiking.init = True, str(tmp_path / "r" / "best.pt")
    with pytest.raises(FirecutError, match="--init .* trained for 10 classes"):
        T.fit(validate(cfg), str(tmp_path / "snn"))


@pytest.mark.parametrize("spiking,tolerance", [(False, 0.08), (True, 0.04)])
def test_bf16_training_on_cpu_tracks_fp32(monkeypatch, spiking, tolerance):
    # The same tiny net, batches and SGD, trained 6 epochs in fp32 and under the CPU bf16
    # autocast that fit uses (forced on, so this runs on any CPU): every epoch's mean training
    # loss within `tolerance` of fp32's (stated: 8% for the clip-quant CNN, 4% for its converted
    # SNN, whose membranes stay fp32), and both nets learn.
    import copy

    import torch.nn.functional as F

    from firecut.config import ModelConfig, SpikingConfig
    from firecut.data import DeviceLoader, load_synthetic
    from firecut.network import build_network

    monkeypatch.setattr(D, "cpu_has_bf16", lambda: True)
    cpu = torch.device("cpu")
    data = load_synthetic()
    mean, std = data.norm()
    batches = list(DeviceLoader(data.x_train, data.y_train, 64, mean, std, cpu, train=True,
                                augment=False, seed=0, channels_last=True))
    torch.manual_seed(0)
    net = build_network(ModelConfig(act="clipq", width=0.25, pool="avg"),
                        SpikingConfig(enabled=spiking, timesteps=4, init="cnn.pt" if spiking else None),
                        10, 32).to(memory_format=torch.channels_last).train()
    dtypes = set()
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
    curves = {}
    for amp in (False, True):
        model = copy.deepcopy(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
        curve = []
        for _ in range(6):
            total = 0.0
            for x, y in batches:
                with D.train_autocast(cpu, amp):
                    loss = F.cross_entropy(model(x).float(), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
            curve.append(total / len(batches))
        curves[amp] = curve
    assert dtypes == {torch.float32, torch.bfloat16}  # the bf16 run really ran its convs in bf16
    fp32, bf16 = curves[False], curves[True]
    assert max(abs(a - b) / a for a, b in zip(fp32, bf16, strict=True)) < tolerance
    assert fp32[-1] < 0.9 * fp32[0] and bf16[-1] < 0.9 * bf16[0]


def test_cpu_autocast_needs_native_bf16_and_evaluation_stays_fp32(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(D, "cpu_has_bf16", lambda: False)  # emulated bf16 is slower than fp32
    with D.train_autocast(cpu, True):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(D, "cpu_has_bf16", lambda: True)
    with D.train_autocast(cpu, True):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with D.train_autocast(cpu, False), D.autocast(cpu, True):
        assert not torch.is_autocast_enabled("cpu")


def test_fit_trains_channels_last_and_evaluates_in_nchw(tmp_path):
    # the summary of a channels_last run is what `firecut evaluate` measures on its checkpoint
    cfg = tiny_cfg(epochs=1, lr=0.05)
    cfg.spiking.enabled = True
    assert cfg.train.channels_last
    s = T.fit(cfg, str(tmp_path / "snn"))
    again = T.evaluate_checkpoint(str(tmp_path / "snn" / "last.pt"), "synthetic", "", device="cpu")
    assert (again["acc"], again["ac"]) == (s["acc"], s["ac"]) and s["ac"] > 0



def test_checkpoints_and_exports_hold_no_absolute_paths(tmp_path):
    """A shared best.pt or export names neither the writer's home nor its data folders; the paths
    it records (dataset file, --init CNN) are relative to its own folder and still resolve there."""
    import numpy as np

    from firecut.export.build import ExportConfig, export_checkpoint

    rng = np.random.default_rng(0)
    data = tmp_path / "data" / "tiny.npz"
    data.parent.mkdir()
    np.savez(data, x_train=rng.integers(0, 255, (64, 32, 32, 3), np.uint8), y_train=np.arange(64) % 4,
             x_test=rng.integers(0, 255, (32, 32, 32, 3), np.uint8), y_test=np.arange(32) % 4)
    cfg = tiny_cfg(epochs=1)
    cfg.data.dataset, cfg.data.root = str(data), str(tmp_path / "cache")
    T.fit(cfg, str(tmp_path / "runs" / "cnn"))
    cfg.spiking.enabled, cfg.spiking.timesteps = True, 2
    cfg.spiking.init = str(tmp_path / "runs" / "cnn" / "best.pt")
    T.fit(validate(cfg), str(tmp_path / "runs" / "snn"))

    home = str(tmp_path).encode()
    for run in ("cnn", "snn"):
        for name in ("best.pt", "last.pt"):
            assert home not in (tmp_path / "runs" / run / name).read_bytes(), (run, name)
    ckpt = load_checkpoint(tmp_path / "runs" / "snn" / "best.pt")
    assert ckpt["arch"]["spiking"]["init"] == "../cnn/best.pt"
    recorded = ckpt["config"]["data"]
    assert (recorded["dataset"], recorded["root"]) == ("../../data/tiny.npz", None)
    assert ckpt["arch"]["spiking"]["beta"] is None
    assert configs_of(ckpt)[1].resolved_beta() == 1.0  # still read as converted (IF neurons)
    report = export_checkpoint(ExportConfig(str(tmp_path / "runs" / "snn" / "best.pt")))  # finds tiny.npz
    assert report.dataset.endswith("tiny.npz") and report.check.verdict == "exact"
    assert home not in open(report.path, "rb").read()
    ts = export_checkpoint(ExportConfig(str(tmp_path / "runs" / "snn" / "best.pt"), "torchscript"))
    assert ts.check.verdict in ("exact", "equivalent")  # reloads without its debug info
    package = str(Path(firecut.__file__).parent).encode()  # where the exporting machine keeps firecut
    assert home not in open(ts.path, "rb").read() and package not in open(ts.path, "rb").read()


def test_every_config_field_is_reachable_with_set():
    from firecut.config import config_keys, set_from_string

    cfg = RunConfig()
    for key in config_keys():  # each field takes a value of its own type, written as on the command line
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        set_from_string(cfg, f"{key}={yaml_text(value)}")
        assert getattr(getattr(cfg, section), name) == value
    set_from_string(cfg, "train.label_smoothing=0")
    set_from_string(cfg, "model.keep=[fire2, fire9]")
    set_from_string(cfg, "spiking.beta=null")
    assert (cfg.train.label_smoothing, cfg.model.keep, cfg.spiking.beta) == (0.0, ["fire2", "fire9"], None)
    for bad, msg in [("train.nope=1", "expected SECTION.KEY=VALUE"), ("train.epochs", "expected SECTION.KEY"),
                     ("train.epochs=many", "is a str, but train.epochs takes int"),
                     ("data.train_subset=all", "takes int | None"), ("train.lr=null", "needs a value"),
                     ("data.augment=3", "takes bool"), ("model.keep=[a, b", "not valid YAML"),
                     ("model.keep=fire2", "takes list\\[str\\] \\| None")]:  # a list, not its characters
        with pytest.raises(FirecutError, match=msg):
            set_from_string(cfg, bad)


def yaml_text(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def test_a_saved_run_is_replayed_and_varied_from_its_config(tmp_path):
    """`--config RUN/config.yaml [--set ...]`: the same run again, or one field changed."""
    import yaml

    from conftest import assert_user_error, run_cli

    first = ["train", "--dataset", "synthetic", "--cnn", "--device", "cpu", "--quiet",
             "--set", "model.width=0.25", "--set", "train.epochs=1", "--set", "train.warmup_epochs=0"]
    assert run_cli(*first, "--out", tmp_path / "a").returncode == 0
    proc = run_cli("train", "--config", tmp_path / "a" / "config.yaml", "--set", "train.label_smoothing=0",
                   "--quiet", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    a, b = (yaml.safe_load((tmp_path / r / "config.yaml").read_text()) for r in "ab")
    assert b["train"]["label_smoothing"] == 0 and a["train"]["label_smoothing"] == 0.1
    b["train"]["label_smoothing"] = a["train"]["label_smoothing"]
    assert a == b  # everything else replayed, the hidden fields (width, warm-up) included
    assert a["model"]["act"] == "clipq" and a["train"]["batch_size"] == 64  # train's default preset: quick
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["params"] < 100_000  # width 0.25
    assert_user_error(run_cli("train", "--dataset", "synthetic", "--set", "model.depth=3"),
                      "--set 'model.depth=3'", "model.width")
    (tmp_path / "bad.yaml").write_text("train: 3\n")
    assert_user_error(run_cli("train", "--config", tmp_path / "bad.yaml"), "'train' must be a mapping")


def test_the_recipe_carries_the_energy_model_into_every_run():
    from firecut.config import RecipeConfig
    from firecut.training.recipe import check_recipe, step_config

    recipe = RecipeConfig(dataset="synthetic", root="", energy_preset="45nm-int8", e_mac_pj=0.5)
    cfg = step_config(recipe, "snn")
    assert (cfg.energy.preset, cfg.energy.e_ac_pj, cfg.energy.e_mac_pj) == ("45nm-int8", None, 0.5)
    with pytest.raises(FirecutError, match="unknown energy preset '7nm'"):
        check_recipe(RecipeConfig(dataset="synthetic", root="", energy_preset="7nm"))


def test_fit_is_silent_and_reports_through_its_hooks(tmp_path, capsys):
    cfg = tiny_cfg(epochs=2, batch_size=128)  # 512 synthetic images: 4 steps an epoch
    T.fit(cfg, str(tmp_path / "quiet"))
    assert capsys.readouterr() == ("", "")  # the library prints nothing
    lines, steps = [], []

    def on_step(epoch, step, n, info):
        steps.append((epoch, step, n, info() if step == n - 1 else ""))

    T.fit(cfg, str(tmp_path / "told"), log=lines.append, on_step=on_step)
    assert [(e, s, n) for e, s, n, _ in steps] == [(e, s, 4) for e in (0, 1) for s in range(4)]
    assert all(i.startswith("loss ") and i.endswith(" img/s") for *_, i in steps if i)
    epochs = [line.split()[:2] for line in lines if line.startswith("epoch")]
    assert epochs == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert capsys.readouterr() == ("", "")
