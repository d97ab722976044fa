"""The recipe-mode search (search/ladder.py): the space of 81 networks, the rungs, promotion on
the front, the claim protocol (resume, dead workers, duplicates), the report, refusals. Worker
processes on PostgreSQL and a journal file, and a kill -9: test_search_workers.py."""

import csv
import json
import socket

import pytest

from firecut.errors import FirecutError
from firecut.pruning import masks as M
from firecut.pruning.schedules import load_schedules
from firecut.search import ladder as L
from firecut.search import run as S
from firecut.search.workers import pid_namespace

from conftest import experiment

PAPER = {s.name: M.bits_of(s.keep) for s in load_schedules("paper.yaml")}


class StubFit:
    """Stands in for training: a made-up summary that depends on the network and its epochs
    (deeper nets learn slower and end higher); records each SNN it 'trained' as (bits, E, F, seed)."""

    def __init__(self, interrupt_at: int | None = None):
        self.trained: list[tuple[str, int, int, int]] = []
        self.interrupt_at = interrupt_at
        self.cnn_epochs = 0

    def __call__(self, cfg, out, **kw):
        keep, n = cfg.model.keep, len(cfg.model.keep)
        if not cfg.spiking.enabled:
            self.cnn_epochs = cfg.train.epochs
            return {"acc": 0.5, "train_seconds": 60.0}
        if self.interrupt_at is not None and len(self.trained) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        e = self.cnn_epochs
        self.trained.append((M.bits_of(keep), e, cfg.train.epochs, cfg.train.seed))
        # at low budgets shallow nets lead; at high budgets depth pays; fire9 always helps a little
        acc = 0.3 + 0.01 * n * (e - 2) + 0.02 * ("fire9" in keep) + 0.001 * cfg.train.seed
        return {"acc": acc, "f1": acc, "ac": 1000.0 * n, "mac": 10.0, "params": 1000 * n,
                "energy_mj": 0.001 * (2 + n), "firing_rate": 0.1, "train_seconds": 30.0 * e}


def cfg_for(**kw) -> S.SearchConfig:
    d = dict(dataset="synthetic", root="", epochs=9, finetune_epochs=3, batch_size=64, width=0.25,
             device="cpu", timesteps=2, trials=9, rungs=2, eta=3, confirm=2)
    return experiment(S.SearchConfig, **{**d, **kw})


def study_of(out):
    import optuna

    return optuna.load_study(study_name="firecut-search", storage=S.default_url(out))


def test_the_rungs_of_the_cpu_recipe():
    rungs = L.plan_rungs(30, 8, 81, rungs=3, eta=3, confirm=3, seed=0)
    assert [(r.cnn_epochs, r.snn_epochs, r.size, r.seed, r.confirm) for r in rungs] == [
        (4, 1, 81, 0, False), (10, 3, 27, 0, False), (30, 8, 9, 0, False), (30, 8, 3, 1, True)]
    assert [r.budget for r in rungs] == ["e4f1", "e10f3", "e30f8", "e30f8"]
    assert L.plan_rungs(30, 8, 81, rungs=1, eta=3, confirm=0, seed=5) == [L.Rung(0, 30, 8, 5, 81)]


def test_the_256_keep_masks_build_81_networks():
    from firecut.config import RecipeConfig

    nets = L.distinct_networks(RecipeConfig(preset="cpu"), [(b, n) for n, b in PAPER.items()])
    assert len(nets) == 81 and len([n for n in nets if "1" in n.bits]) == 80  # + stem -> classifier
    every = [m for n in nets for m in n.masks]
    assert sorted(every) == sorted(M.ALL_MASKS)  # each mask in exactly one network
    by = {n.bits: n for n in nets}
    assert by[PAPER["Head-1"]].names == ("Head-1", "Head-2") and PAPER["Head-2"] in by[PAPER["Head-1"]].masks
    assert by[PAPER["Alt-1"]].names == ("Alt-1", "Alt-2") and len(by[PAPER["Alt-1"]].masks) == 16
    assert [n.bits for n in nets[:6]] == [PAPER[k] for k in ("Baseline", "Head-1", "Tail-1", "Alt-1",
                                                             "Ref-1", "Ref-2")]  # Table 3's first
    assert by["10000000"].masks == ("10000000", "01000000")  # fire2 alone = fire3 alone


def test_promotion_is_on_the_front_then_accuracy():
    # (acc, energy): c is cheap and poor but on the front; d is accurate but dominated by b
    res = {"a": (0.80, 3.0), "b": (0.85, 2.0), "c": (0.40, 0.5), "d": (0.84, 2.5), "e": (0.30, 0.6)}
    assert L.front_ranks([(e, a) for a, e in res.values()]) == [2, 0, 0, 1, 1]  # d dominates a
    assert L.promote(res, 2) == ["b", "c"]  # the front, though d is more accurate than c
    assert L.promote(res, 3) == ["b", "c", "d"]  # then the next front, most accurate first
    assert L.most_accurate(res, 2) == ["b", "d"]


def test_kendall_tau():
    assert L.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert L.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert L.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 of 6 pairs agree
    # the pilot's six networks: 4+1 epochs' SNN accuracy against the full recipe's (tau 0.33)
    short = [0.6420, 0.6988, 0.6864, 0.7058, 0.6992, 0.6880]
    full = [0.805, 0.830, 0.817, 0.833, 0.800, 0.814]
    assert L.kendall_tau(short, full) == pytest.approx(5 / 15)


def expected_ladder(cfg):
    """What the ladder must train, worked out from StubFit's formula without the study."""
    nets, rungs = L.ladder_of(cfg)
    fit, members, out = StubFit(), [n.bits for n in nets[:cfg.trials]], []
    for r in rungs:
        res = {}
        for b in members:
            keep = M.keep_of(b)
            fit.cnn_epochs = r.cnn_epochs
            from types import SimpleNamespace as NS

            snn = NS(model=NS(keep=list(keep)), spiking=NS(enabled=True),
                     train=NS(epochs=r.snn_epochs, seed=r.seed))
            s = fit(snn, "")
            res[b] = (s["acc"], s["energy_mj"])
        out.append(members)
        if r.index + 1 < len(rungs):
            nxt = rungs[r.index + 1]
            # brute force: rank by how many fronts must be peeled off
            left, order = dict(res), []
            beats = lambda o, b: left[o][0] >= left[b][0] and left[o][1] <= left[b][1] and left[o] != left[b]
            while left:
                front = [b for b in left if not any(beats(o, b) for o in left)]
                order += sorted(front, key=lambda b: (-left[b][0], left[b][1], b))
                for b in front:
                    del left[b]
            best_first = sorted(res, key=lambda b: (-res[b][0], res[b][1], b))
            members = (best_first if nxt.confirm else order)[:nxt.size]
    return rungs, out, fit.trained


def test_the_ladder_trains_each_rung_once_and_promotes_the_front(tmp_path):
    cfg = cfg_for()
    rungs, members, trained = expected_ladder(cfg)
    assert [len(m) for m in members] == [9, 3, 2]
    stub = StubFit()
    report = S.run_search(cfg, tmp_path / "s", fit=stub, log=lambda m: None)
    assert stub.trained == trained  # rung by rung, each network once, in the expected order
    assert [(e, f) for _, e, f, _ in stub.trained[:9]] == [(3, 1)] * 9  # ceil(9/3), ceil(3/3)
    assert {(e, f, s) for b, e, f, s in stub.trained[-2:]} == {(9, 3, 1)}  # confirm: seed 1
    rows = {r["network"]: r for r in report["rows"]}
    top = members[1]
    assert {b for b, r in rows.items() if r["rung"] == 1} == set(top) and set(members[2]) <= set(top)
    for b in members[2]:  # the confirmed networks: mean of two seeds
        assert rows[b]["seeds"] == 2 and rows[b]["acc_std"] == pytest.approx(0.001 / 2 ** 0.5)
    assert report["best"]["network"] in top and (tmp_path / "s" / "pareto.md").is_file()
    table = list(csv.DictReader((tmp_path / "s" / "networks.csv").open()))
    assert len(table) == 9 and {r["network"] for r in table} == set(members[0])
    assert all(r["acc@0"] for r in table) and {r["network"] for r in table if r["acc@1"]} == set(top)
    alt = next(r for r in table if r["network"] == PAPER["Alt-1"])
    assert alt["names"] == "Alt-1 Alt-2" and len(alt["masks"].split()) == 16  # every twin mask
    md = (tmp_path / "s" / "pareto.md").read_text()
    assert "| 0 | 3 + 1 | 0 | 9 | 9 |" in md and "| confirm | 9 + 3 | 1 | 2 | 2 |" in md
    assert "## Does a low rung rank like the full recipe?" in md
    again = StubFit()  # complete: nothing is trained again, the same report
    assert S.run_search(cfg, tmp_path / "s", fit=again, log=lambda m: None)["rows"] == report["rows"]
    assert again.trained == []


@pytest.mark.parametrize("at", [3, 11, 14])  # in rung 0, rung 1, the confirm rung
def test_a_killed_ladder_resumes_at_any_rung_and_ends_with_the_same_table(tmp_path, at):
    cfg = cfg_for()
    _, _, trained = expected_ladder(cfg)
    stub = StubFit(interrupt_at=at)
    with pytest.raises(KeyboardInterrupt):
        S.run_search(cfg, tmp_path / "s", fit=stub, log=lambda m: None)
    assert stub.trained == trained[:at - 1] and not (tmp_path / "s" / "pareto.md").exists()
    failed = [t for t in study_of(tmp_path / "s").get_trials() if t.user_attrs.get("status") == "interrupted"]
    assert len(failed) == 1
    again = StubFit()
    S.run_search(cfg, tmp_path / "s", fit=again, log=lambda m: None)
    assert again.trained == trained[at - 1:]  # the interrupted item first, nothing finished redone
    whole = S.run_search(cfg, tmp_path / "w", fit=StubFit(), log=lambda m: None)
    def table(out):  # run folders differ by OUT, and time by the clock
        rows = csv.DictReader((out / "networks.csv").open())
        return [{k: v for k, v in r.items() if k not in ("run", "wall_seconds")} for r in rows]

    assert table(tmp_path / "s") == table(tmp_path / "w")
    best = json.loads((tmp_path / "s" / "best.json").read_text())["best"]
    assert best["network"] == whole["best"]["network"]


def test_a_dead_workers_item_is_retried_and_a_duplicate_is_failed(tmp_path):
    """Another worker claimed Baseline's rung-0 trial and died (its pid is gone, same pid namespace);
    two workers enqueued Head-1's at once. The worker fails the first as stale and trains it, and
    trains Head-1 once."""
    import optuna

    cfg = cfg_for(trials=3, rungs=1, confirm=0)
    out = tmp_path / "s"
    storage = S.open_storage(S.default_url(out))
    study = S.open_study(cfg, storage, S.default_url(out), S.signature(cfg, None))
    study.enqueue_trial({}, user_attrs={"net": PAPER["Baseline"], "rung": 0})
    for _ in range(2):
        study.enqueue_trial({}, user_attrs={"net": PAPER["Head-1"], "rung": 0})
    dead = study.get_trials()[0]
    assert study._storage.set_trial_state_values(dead._trial_id, optuna.trial.TrialState.RUNNING)
    for k, v in (("host", socket.gethostname()), ("pidns", pid_namespace()), ("pid", 2 ** 22 + 17),
                 ("heartbeat", 3)):
        study._storage.set_trial_user_attr(dead._trial_id, k, v)
    logs, stub = [], StubFit()
    S.run_search(cfg, out, fit=stub, log=logs.append)
    want = [PAPER["Baseline"], PAPER["Head-1"], PAPER["Tail-1"]]
    assert sorted(b for b, *_ in stub.trained) == sorted(want)
    status = [t.user_attrs.get("status") for t in study_of(out).get_trials()]
    assert status.count("stale") == 1 and status.count("duplicate") == 1 and status.count("done") == 3
    assert any("stopped without finishing" in m for m in logs)


@pytest.mark.parametrize("over,msg", [
    (dict(base="snn.pt"), "--base is where --retrain finetune prunes from"),
    (dict(objective="scalar"), "--objective scalar is for --retrain finetune"),
    (dict(trials=82), "only 81 distinct networks"),
    (dict(rungs=0), "--rungs must be >= 1"),
    (dict(eta=1), "--eta must be >= 2"),
    (dict(retrain="scratch"), "unknown --retrain 'scratch'"),
])
def test_impossible_ladders_are_refused_before_out_is_touched(tmp_path, over, msg):
    with pytest.raises(FirecutError, match=msg):
        S.run_search(cfg_for(**over), tmp_path / "o", fit=StubFit(), log=lambda m: None)
    assert not (tmp_path / "o").exists()


def test_a_ladder_with_other_settings_is_refused(tmp_path):
    S.run_search(cfg_for(trials=3, rungs=1, confirm=0), tmp_path / "s", fit=StubFit(), log=lambda m: None)
    with pytest.raises(FirecutError, match="other settings.*rungs"):
        S.run_search(cfg_for(trials=3, rungs=2, confirm=0), tmp_path / "s", fit=StubFit(), log=lambda m: None)


def test_tau_table_compares_each_rung_with_the_last():
    from firecut.search.ladder_report import tau_table

    rungs = L.plan_rungs(9, 3, 4, rungs=2, eta=1 + 1, confirm=0, seed=0)
    rows = [{"rung": 1, "acc": acc, "by_rung": {0: {"acc": a0, "energy_mj": e, "cnn_acc": c0}}}
            for acc, a0, e, c0 in ((0.9, 0.5, 4, 0.6), (0.8, 0.6, 3, 0.5), (0.7, 0.4, 2, 0.3),
                                   (0.6, 0.3, 1, 0.4))]
    (t,) = tau_table(rows, rungs)
    assert t["networks"] == 4 and t["tau_acc"] == pytest.approx(4 / 6) and t["tau_energy"] == 1.0
    assert t["tau_cnn_acc"] == pytest.approx(4 / 6)


def test_recipe_search_cli_on_real_cifar10_and_its_best_pt_exports(tmp_path):
    """The chain the tool exists for, on real images: search (three networks, two rungs of equal
    budget), then `firecut export best.pt --format onnx`, verified."""
    import re

    import torch

    from conftest import run_cli, shared_file

    data = shared_file("cifar10-sub.npz")
    out = tmp_path / "search"
    args = ["search", "--dataset", data, "--trials", 3, "--rungs", 2, "--confirm", 0, "--train-subset", 200,
            "--test-subset", 50, "--epochs", 1, "--finetune-epochs", 1, "--batch-size", 50, "--out", out]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    rows = {r["network"]: r for r in csv.DictReader((out / "networks.csv").open())}
    assert list(rows) == [PAPER["Baseline"], PAPER["Head-1"], PAPER["Tail-1"]]  # Table 3's first
    assert [int(r["params"]) for r in rows.values()] == [736_458, 310_858, 673_290]  # as in Table 3
    for r in rows.values():
        assert 0 <= float(r["acc"]) <= 1 and float(r["ac"]) > 0 and 0 < float(r["firing_rate"]) < 1
        assert float(r["mac"]) == 32 * 32 * 64 * 27  # the encoding layer only: every other input spikes
    # rung 1 has rung 0's budget (1 + 1 epochs): it reads rung 0's run instead of training again
    assert sorted(p.name for p in (out / "nets").iterdir() if not p.name.endswith("-cnn")) == sorted(
        f"{b}-e1f1-s0" for b in rows)  # three SNN runs, not four
    top = [r for r in rows.values() if r["rung"] == "1"]
    assert len(top) == 1 and top[0]["seeds"] == "1"  # the one network promoted
    assert "| Paper name | SNN acc |" in proc.stdout and "best: network" in proc.stderr
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert M.bits_of(ckpt["arch"]["model"]["keep"]) == top[0]["network"]
    assert f"next: firecut export {out / 'best.pt'} --format onnx" in proc.stderr
    exp = run_cli("export", out / "best.pt", "--format", "onnx", "--images", 50)
    assert exp.returncode == 0, exp.stderr
    assert re.search(r"verdict +(\w+)", exp.stdout).group(1) in ("exact", "equivalent")
    assert (out / "best.onnx").is_file()
