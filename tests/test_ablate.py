"""The Fire-module ablation: tables, resume after a kill between schedules, refusals, real data."""

import json

import pytest

from firecut import ablate as A
from firecut.checkpoint import load_checkpoint
from firecut.errors import FirecutError
from firecut.pruning.schedules import FIRE_NAMES

from conftest import assert_user_error, counting, experiment, quiet_fit, run_cli, shared_file

SCHEDULES = """\
- name: Full
  keep: [fire2, fire3, fire4, fire5, fire6, fire7, fire8, fire9]
- name: Ref-1
  keep: [fire4, fire6, fire8, fire9]
- name: Empty
  keep: []
"""


def small(tmp_path, **kw) -> A.AblateConfig:
    (tmp_path / "s.yaml").write_text(SCHEDULES)
    base = dict(dataset="synthetic", root="", schedules=str(tmp_path / "s.yaml"), epochs=1,
                finetune_epochs=1, batch_size=64, width=0.25, device="cpu", timesteps=2)
    return experiment(A.AblateConfig, **{**base, **kw})


def test_ablation_resumes_after_a_kill_between_schedules(tmp_path, monkeypatch):
    logs = []
    rows = A.run_ablation(small(tmp_path), tmp_path / "whole", fit=quiet_fit, log=logs.append)
    assert [r["schedule"] for r in rows] == ["Full", "Ref-1", "Empty"]
    assert any("keeps no Fire module" in m for m in logs)  # an empty schedule runs, and says so
    assert rows[0]["params"] > rows[1]["params"] > rows[2]["params"]
    table = (tmp_path / "whole" / "table.md").read_text()
    assert "| Ref-1 | – | – | ✓ | – | ✓ | – | ✓ | ✓ |" in table

    real, calls = A.run_schedule, []

    def killed_before_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(A, "run_schedule", killed_before_the_third)
    with pytest.raises(KeyboardInterrupt):
        A.run_ablation(small(tmp_path), tmp_path / "cut", fit=quiet_fit, log=lambda m: None)
    assert not (tmp_path / "cut" / "table.md").exists()  # no partial table that looks whole
    monkeypatch.setattr(A, "run_schedule", real)
    trained = []
    A.run_ablation(small(tmp_path), tmp_path / "cut", fit=counting(trained), log=lambda m: None)
    assert trained == ["Empty-s0"]  # finished work was kept
    assert (tmp_path / "cut" / "table.md").read_text() == table
    data = json.loads((tmp_path / "cut" / "table.json").read_text())
    metrics = {"acc", "f1", "ac", "mac", "energy_mj", "firing_rate", "train_seconds"}
    assert metrics <= set(data["schedules"][0])
    assert (tmp_path / "cut" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_other_settings_in_out_are_refused(tmp_path):
    A.check_settings(small(tmp_path), tmp_path / "o")
    with pytest.raises(FirecutError, match="different settings.*finetune_epochs"):
        A.check_settings(small(tmp_path, finetune_epochs=3), tmp_path / "o")



def test_more_seeds_add_runs_beside_the_finished_ones(tmp_path):
    import yaml

    (tmp_path / "one.yaml").write_text("- name: Ref-1\n  keep: [fire4, fire6, fire8, fire9]\n")
    trained = []
    counting_fit = counting(trained)
    one = dict(schedules=str(tmp_path / "one.yaml"), retrain="scratch")
    A.run_ablation(small(tmp_path, **one), tmp_path / "o", fit=counting_fit, log=lambda m: None)
    (row,) = A.run_ablation(small(tmp_path, seeds=2, **one), tmp_path / "o", fit=counting_fit,
                            log=lambda m: None)
    assert trained == ["Ref-1-s0", "Ref-1-s1"]  # seed 0 was kept, only seed 1 trained
    assert row["seeds"] == 2 and len(row["acc_per_seed"]) == 2
    assert "seeds" not in yaml.safe_load((tmp_path / "o" / "ablate.yaml").read_text())
    with pytest.raises(FirecutError, match="different settings.*timesteps"):
        A.check_settings(small(tmp_path, timesteps=3, **one), tmp_path / "o")


def test_where_the_data_lives_is_not_pinned(tmp_path):
    """Offline, a first run fails asking for --data-root; the re-run with it (or after moving the
    cache) must not be refused as 'different settings (root)': not for the ablation's folder, not
    for a run folder inside it."""
    import yaml

    from firecut.config import RunConfig, flat_settings
    from firecut.runs import RunFolder

    A.check_settings(small(tmp_path, root="/home/me/.cache/firecut/data"), tmp_path / "o")
    A.check_settings(small(tmp_path, root="/mnt/datasets"), tmp_path / "o")
    assert "root" not in yaml.safe_load((tmp_path / "o" / "ablate.yaml").read_text())
    old = tmp_path / "old"  # a folder pinned before root was unpinned
    old.mkdir()
    (old / "ablate.yaml").write_text(yaml.safe_dump({**flat_settings(small(tmp_path)), "root": "/x"}))
    A.check_settings(small(tmp_path, root="/y"), old)

    cfg = RunConfig()
    cfg.data.root = "/home/me/data"
    run = RunFolder(tmp_path / "run")
    run.open(cfg)
    run.file("last.pt").write_bytes(b"")  # finished work to resume
    cfg.data.root = "/mnt/datasets"
    assert run.open(cfg) == "resume"


def test_a_pruned_base_or_one_of_another_dataset_is_refused(tmp_path):
    import numpy as np

    A.run_ablation(small(tmp_path, retrain="scratch"), tmp_path / "scratch", fit=quiet_fit,
                   log=lambda m: None)
    runs = tmp_path / "scratch" / "schedules"
    with pytest.raises(FirecutError, match="already pruned"):
        A.check_base(small(tmp_path), str(runs / "Ref-1-s0" / "last.pt"))
    A.check_base(small(tmp_path), str(runs / "Full-s0" / "last.pt"))  # unpruned, same data: fine
    other = tmp_path / "other.npz"
    np.savez(other, x_train=np.zeros((10, 32, 32, 3), np.uint8), y_train=np.arange(10),
             x_test=np.zeros((10, 32, 32, 3), np.uint8), y_test=np.arange(10))
    with pytest.raises(FirecutError, match="trained on synthetic"):
        A.check_base(small(tmp_path, dataset=str(other)), str(runs / "Full-s0" / "last.pt"))


def test_recipe_retraining_trains_each_schedule_as_its_own_cnn_then_snn(tmp_path):
    trained = []

    def recording_fit(cfg, out):
        trained.append((out.split("/")[-1], cfg.mode(), cfg.model.keep, cfg.model.parent))
        return quiet_fit(cfg, out)

    rows = A.run_ablation(small(tmp_path, retrain="recipe"), tmp_path / "r", fit=recording_fit,
                          log=lambda m: None)
    assert not (tmp_path / "r" / "base-cnn").exists()  # no base: every schedule is its own net
    ref1 = ["fire4", "fire6", "fire8", "fire9"]
    assert ("Ref-1-s0-cnn", "cnn", ref1, None) in trained and ("Ref-1-s0", "snn", ref1, None) in trained
    assert len(trained) == 6 and [r["keep"] for r in rows] == [list(FIRE_NAMES), ref1, []]
    runs = json.loads((tmp_path / "r" / "table.json").read_text())["runs"]
    cnn = json.loads((tmp_path / "r" / "schedules" / "Ref-1-s0-cnn" / "summary.json").read_text())
    assert runs[1]["cnn_acc"] == cnn["acc"] and runs[1]["spiking"] and not cnn["spiking"]
    with pytest.raises(FirecutError, match="unknown --retrain 'prune'"):
        A.check_values(small(tmp_path, retrain="prune"))
    with pytest.raises(FirecutError, match="without a base; drop --base"):
        A.check_values(small(tmp_path, retrain="recipe", base="b.pt"))



def test_prune_cnn_prunes_the_base_cnn_fine_tunes_it_then_converts(tmp_path):
    trained = []

    def recording_fit(cfg, out):
        trained.append((out.split("/")[-1], cfg.mode(), cfg.model.keep, cfg.train.epochs))
        return quiet_fit(cfg, out)

    ac = small(tmp_path, retrain="prune-cnn", epochs=2, cnn_finetune_epochs=1)
    rows = A.run_ablation(ac, tmp_path / "p", fit=recording_fit, log=lambda m: None)
    assert trained[0] == ("base-cnn", "cnn", None, 2)  # one base, a CNN
    assert not (tmp_path / "p" / "base-snn").exists()
    ref1 = ["fire4", "fire6", "fire8", "fire9"]
    assert ("Ref-1-s0-cnn", "cnn", ref1, 1) in trained and ("Ref-1-s0", "snn", ref1, 1) in trained
    cnn = load_checkpoint(tmp_path / "p" / "schedules" / "Ref-1-s0-cnn" / "best.pt")
    assert cnn["arch"]["model"]["parent"] == "../../base-cnn/best.pt"  # pruned from the base CNN
    snn = load_checkpoint(tmp_path / "p" / "schedules" / "Ref-1-s0" / "best.pt")
    assert snn["arch"]["spiking"]["init"] == "../Ref-1-s0-cnn/best.pt"  # converted from its own CNN
    assert [r["keep"] for r in rows] == [list(FIRE_NAMES), ref1, []]
    runs = json.loads((tmp_path / "p" / "table.json").read_text())["runs"]
    assert all(0 <= r["cnn_acc"] <= 1 for r in runs) and all(r["spiking"] for r in runs)
    with pytest.raises(FirecutError, match="needs a squeezenet CNN"):  # an SNN is not the base here
        A.run_ablation(small(tmp_path, retrain="prune-cnn", base=str(tmp_path / "p" / "schedules" /
                                                                     "Ref-1-s0" / "best.pt")),
                       tmp_path / "q", fit=quiet_fit, log=lambda m: None)
    with pytest.raises(FirecutError, match="--cnn-finetune-epochs is for --retrain prune-cnn"):
        A.check_values(small(tmp_path, cnn_finetune_epochs=2))

def test_seeds_give_mean_and_std():
    runs = [{"schedule": "A", "params": 10, "epochs": 1, "timesteps": 4, "acc": a, "f1": 0.5, "ac": 1.0,
             "mac": 2.0, "energy_mj": 0.01, "firing_rate": 0.1, "train_seconds": 3.0} for a in (0.5, 0.7)]
    from firecut.pruning.schedules import Schedule

    (row,) = A.aggregate(runs, [Schedule("A", FIRE_NAMES)])
    assert row["acc"] == pytest.approx(0.6) and row["acc_std"] == pytest.approx(0.1414, rel=1e-3)
    assert row["acc_per_seed"] == [0.5, 0.7]
    assert "0.6000 ± 0.1414" in A.table_markdown([row])


def test_the_table_prices_each_schedule_at_matched_int8_precision_too():
    from firecut.pruning.schedules import Schedule

    runs = [{"schedule": "A", "params": 10, "epochs": 1, "timesteps": 4, "acc": 0.5, "f1": 0.5,
             "ac": ac, "mac": 1e6, "energy_mj": 0.0, "firing_rate": 0.1, "train_seconds": 3.0}
            for ac in (4e6, 6e6)]
    (row,) = A.aggregate(runs, [Schedule("A", FIRE_NAMES)])
    expect = [(ac * 0.03 + 1e6 * 0.23) * 1e-9 for ac in (4e6, 6e6)]  # Horowitz int8 add; mult + add
    assert row["energy_int8_mj_per_seed"] == pytest.approx(expect)
    head, _, line = A.table_markdown([row]).splitlines()
    assert head.endswith("| Energy (mJ) | Energy, int8 (mJ) | Pareto |")
    assert line.endswith(f"| {sum(expect) / 2:.6f} ± {abs(expect[1] - expect[0]) / 2 ** 0.5:.6f} | ★ |")


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.6), (1.5, 0.4), (3.0, 0.6), (0.5, 0.3)]
    assert A.pareto_front(pts) == [0, 1, 4]


def test_the_table_marks_the_schedules_on_the_pareto_front():
    from firecut.pruning.schedules import Schedule

    pts = [(1.0, 0.5), (2.0, 0.6), (1.5, 0.4)]  # (mJ, acc): the third is dominated by the first
    runs = [{"schedule": f"S{i}", "params": 10, "epochs": 1, "timesteps": 4, "acc": a, "f1": 0.5,
             "ac": 1.0, "mac": 2.0, "energy_mj": e, "firing_rate": 0.1, "train_seconds": 3.0}
            for i, (e, a) in enumerate(pts)]
    rows = A.aggregate(runs, [Schedule(f"S{i}", FIRE_NAMES) for i in range(3)])
    assert [r["pareto"] for r in rows] == [True, True, False]
    lines = A.table_markdown(rows).splitlines()[2:]
    assert [l.endswith("| ★ |") for l in lines] == [True, True, False] and lines[2].endswith("|  |")


def test_ablate_cli_on_real_cifar10(tmp_path):
    data = shared_file("cifar10-sub.npz")
    (tmp_path / "two.yaml").write_text("- name: Baseline\n  drop: []\n- name: Alt-2\n"
                                       "  keep: [fire3, fire5, fire7, fire9]\n")
    args = ["ablate", "--dataset", data, "--schedules", tmp_path / "two.yaml", "--train-subset", 300,
            "--test-subset", 100, "--epochs", 1, "--finetune-epochs", 1, "--batch-size", 50,
            "--out", tmp_path / "abl"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "schedule 2/2: Alt-2" in proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("| Baseline") or l.startswith("| Alt-2")]
    assert lines[0].startswith("| Baseline | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ |") and "736,458" in lines[0]
    assert lines[1].startswith("| Alt-2 | – | ✓ | – | ✓ | – | ✓ | – | ✓ |") and "362,058" in lines[1]
    table = json.loads((tmp_path / "abl" / "table.json").read_text())["schedules"]
    for row in table:
        assert row["ac"] > 0 and row["mac"] == 32 * 32 * 64 * 27 and 0 <= row["acc"] <= 1
        assert row["energy_mj"] == pytest.approx((row["ac"] * 0.9 + row["mac"] * 4.6) * 1e-9)
    assert table[1]["ac"] < table[0]["ac"]  # half the modules, fewer accumulates
    again = run_cli(*args)
    assert again.returncode == 0 and again.stdout == proc.stdout  # resumed: nothing retrained
    assert_user_error(run_cli(*args[:-2], "--timesteps", 2, "--out", tmp_path / "abl"),
                      "different settings (timesteps)")
    cnn = tmp_path / "abl" / "base-cnn" / "best.pt"
    assert_user_error(run_cli("ablate", "--dataset", data, "--base", cnn, "--out", tmp_path / "x"),
                      "needs a spiking squeezenet")


@pytest.mark.parametrize("over,msg", [(dict(preset="fast"), "unknown preset 'fast'"),
                                      (dict(finetune_epochs=0), "--finetune-epochs must be >= 1"),
                                      (dict(seeds=0), "--seeds must be >= 1")])
def test_impossible_settings_are_refused_before_out_is_touched(tmp_path, over, msg):
    with pytest.raises(FirecutError, match=msg):
        A.run_ablation(small(tmp_path, **over), tmp_path / "o", fit=quiet_fit, log=lambda m: None)
    assert not (tmp_path / "o").exists()


TWINS = """\
- name: Head-1
  keep: [fire2, fire3, fire4, fire5, fire9]
- name: Head-2
  keep: [fire2, fire3, fire4, fire5, fire8]
- name: Ref-1
  keep: [fire4, fire6, fire8, fire9]
"""


def test_twin_schedules_build_one_network_and_train_bit_identically(tmp_path):
    from firecut.config import ModelConfig, SpikingConfig
    from firecut.pruning.schedules import load_schedules
    from firecut.pruning.twins import architecture_key

    keys = {s.name: architecture_key(ModelConfig(act="clipq", keep=list(s.keep), width=0.25),
                                     SpikingConfig())
            for s in load_schedules("paper.yaml")}
    groups = sorted(sorted(n for n in keys if keys[n] == k) for k in set(keys.values()))
    assert groups == [["Alt-1", "Alt-2"], ["Baseline"], ["Head-1", "Head-2"], ["Ref-1"], ["Ref-2"],
                      ["Tail-1", "Tail-2"]]
    # the premise of reusing a twin's run: trained apart from one seed, the twins end identical
    (tmp_path / "t.yaml").write_text(TWINS)
    ac = small(tmp_path, retrain="scratch", schedules=str(tmp_path / "t.yaml"))
    alone = [A.run_schedule(ac, s, 0, None, None, tmp_path / "apart", quiet_fit)
             for s in load_schedules(str(tmp_path / "t.yaml"))[:2]]
    assert alone[0]["acc"] == alone[1]["acc"] and alone[0]["ac"] == alone[1]["ac"]
    assert alone[0]["keep"] != alone[1]["keep"]


@pytest.mark.parametrize("retrain, twins_trained", [("recipe", False), ("finetune", True)])
def test_the_ablation_trains_a_twin_once_where_it_trains_from_scratch(tmp_path, retrain, twins_trained):
    (tmp_path / "t.yaml").write_text(TWINS)
    trained, logs = [], []
    rows = A.run_ablation(small(tmp_path, retrain=retrain, schedules=str(tmp_path / "t.yaml")),
                          tmp_path / "r", fit=counting(trained), log=logs.append)
    assert ("Head-2-s0" in trained) == twins_trained  # pruned from a base, twins inherit apart
    head1, head2 = rows[0], rows[1]
    if twins_trained:
        assert head2.get("twin_of") is None
    else:
        assert "Head-2-s0-cnn" not in trained and "Ref-1-s0" in trained
        assert head2["twin_of"] == "Head-1" and head2["acc"] == head1["acc"]
        assert head2["keep"] == ["fire2", "fire3", "fire4", "fire5", "fire8"]
        assert any("the same network as Head-1" in m for m in logs)
        assert "| Head-2 (= Head-1) | ✓ | ✓ | ✓ | ✓ | – | – | ✓ | – |" in (tmp_path / "r" / "table.md").read_text()
