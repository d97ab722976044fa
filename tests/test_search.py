"""The mask search: the study protocol (budget, repeats, rivals, stale workers, resume), the
reports and best.pt, refusals, and a real-data CLI run. Distributed workers: test_search_workers.py."""

import csv
import json
import os
import random
import socket
import time
from types import SimpleNamespace

import pytest

from firecut.pruning import masks as M
from firecut.search import run as S
from firecut.search import workers as W
from firecut.ablate import AblateConfig, train_base
from firecut.errors import FirecutError
from firecut.pruning.schedules import FIRE_NAMES, load_schedules
from firecut.search.report import choose_best, knee

from conftest import assert_user_error, experiment, run_cli, shared_file

PAPER = [M.bits_of(s.keep) for s in load_schedules("paper.yaml")]


def quiet_fit(cfg, out, **kw):
    from firecut.training.loop import fit

    return fit(cfg, out, **kw)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny trained spiking SqueezeNet on the synthetic set (the search's starting point)."""
    out = tmp_path_factory.mktemp("base")
    ac = experiment(AblateConfig, dataset="synthetic", root="", epochs=1, finetune_epochs=1, batch_size=64,
                    width=0.25, device="cpu", timesteps=2)
    return train_base(ac, out, quiet_fit, lambda m: None)


class StubFit:
    """Stands in for training: a made-up, mask-determined summary; records what it 'trained'."""

    def __init__(self, interrupt_at: int | None = None):
        self.trained: list[str] = []
        self.interrupt_at = interrupt_at

    def __call__(self, cfg, out, **kw):
        keep = cfg.model.keep
        if self.interrupt_at is not None and len(self.trained) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        self.trained.append(M.bits_of(keep))
        n = len(keep)
        return {"acc": 0.3 + 0.04 * n - 0.03 * ("fire9" not in keep), "f1": 0.3, "ac": 1000.0 * n,
                "mac": 10.0, "params": 1000 * n, "energy_mj": 0.001 * (2 + n), "firing_rate": 0.1,
                "train_seconds": 1.0}


def cfg_for(base, **kw) -> S.SearchConfig:
    d = dict(dataset="synthetic", root="", retrain="finetune", trials=6, base=base, epochs=1,
             finetune_epochs=1, batch_size=64, width=0.25, device="cpu", timesteps=2, saliency_masks=0,
             settle_s=0.01)
    return experiment(S.SearchConfig, **{**d, **kw})


def study_of(out, name="firecut-search"):
    import optuna

    return optuna.load_study(study_name=name, storage=S.default_url(out))


def trained_trials(study):
    from optuna.trial import TrialState

    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE
            and t.user_attrs.get("status") != "repeat"]


def test_masks_and_nearest_free():
    assert M.bits_of(("fire2", "fire9")) == "10000001" and M.keep_of("10000001") == ("fire2", "fire9")
    assert len(set(M.ALL_MASKS)) == 256 and M.pattern("10") == "✓–"
    taken = {"11111111", "01111111"}
    near = M.nearest_free("11111111", taken, random.Random(0))
    assert sum(a != b for a, b in zip(near, "11111111", strict=True)) == 1 and near not in taken
    assert M.nearest_free("11111111", set(M.ALL_MASKS), random.Random(0)) is None


def test_search_seeds_with_the_paper_and_resumes_after_a_kill_to_exactly_n(tmp_path, base):
    out = tmp_path / "s"
    stub = StubFit(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        S.run_search(cfg_for(base), out, fit=stub, log=lambda m: None)
    assert stub.trained == PAPER[:3]  # the paper's schedules go first, in Table 3's order
    assert not (out / "pareto.md").exists()  # no report that looks whole
    interrupted = [t for t in study_of(out).get_trials() if t.user_attrs.get("status") == "interrupted"]
    assert [t.user_attrs["mask"] for t in interrupted] == [PAPER[3]]

    again = StubFit()
    report = S.run_search(cfg_for(base), out, fit=again, log=lambda m: None)
    assert again.trained == PAPER[3:6]  # the interrupted mask first, then the next seeds
    done = trained_trials(study_of(out))
    masks = [t.user_attrs["mask"] for t in done]
    assert len(done) == 6 and len(set(masks)) == 6 and set(masks) == set(PAPER[:6])
    assert len(report["rows"]) == 6

    more = StubFit()  # a larger --trials continues the same study; finished masks are not redone
    S.run_search(cfg_for(base, trials=9), out, fit=more, log=lambda m: None)
    assert len(more.trained) == 3 and not set(more.trained) & set(masks)
    assert len(trained_trials(study_of(out))) == 9


def test_a_known_mask_is_not_trained_again_and_costs_no_budget(tmp_path, base):
    out = tmp_path / "s"
    S.run_search(cfg_for(base, trials=2), out, fit=StubFit(), log=lambda m: None)
    study = study_of(out)
    study.enqueue_trial({m: 1 for m in FIRE_NAMES})  # Baseline again, as a sampler might propose
    stub = StubFit()
    S.run_search(cfg_for(base, trials=3), out, fit=stub, log=lambda m: None)
    trials = study_of(out).get_trials()
    repeat = [t for t in trials if t.user_attrs.get("status") == "repeat"]
    assert len(repeat) == 1 and repeat[0].user_attrs["mask"] == "11111111"
    original = next(t for t in trials if t.number == repeat[0].user_attrs["repeat_of"])
    assert repeat[0].values == original.values  # the sampler learns the known result
    assert stub.trained == [PAPER[2]]  # the budget went to the next untried seed
    near = [t for t in trials if t.user_attrs.get("source") == "near:11111111"]
    assert len(near) == 1 and near[0].state.name == "WAITING"  # the nearest untried mask, queued
    assert sum(a != b for a, b in zip(M.mask_of(near[0]), "11111111", strict=True)) == 1
    assert len(trained_trials(study_of(out))) == 3


def test_a_rival_claim_wins_and_a_dead_workers_trial_is_retried(tmp_path, base):
    out = tmp_path / "s"
    S.run_search(cfg_for(base, trials=1), out, fit=StubFit(), log=lambda m: None)
    study = study_of(out)
    # A live worker (this process stands in) holds Head-1; another, dead one held Head-2.
    for mask, pid, beat in ((PAPER[1], os.getpid(), 7), (PAPER[2], 2 ** 22 + 17, 7)):
        study.enqueue_trial(M.params_of(mask))
        t = study.ask()
        for k, v in (("mask", mask), ("host", socket.gethostname()), ("pidns", W.pid_namespace()),
                     ("pid", pid), ("heartbeat", beat), ("status", "confirmed")):
            t.set_user_attr(k, v)
    study.enqueue_trial(M.params_of(PAPER[1]))  # proposed again
    rival = next(t for t in study.get_trials() if t.user_attrs.get("mask") == PAPER[1])

    class RivalFinishes(StubFit):
        """The rival's worker finishes while this one trains its second mask (a worker whose
        budget is spoken for waits for the others: it must not wait forever here)."""

        def __call__(self, cfg, out, **kw):
            summary = super().__call__(cfg, out, **kw)
            if len(self.trained) == 2:  # what the rival's worker records, then tells
                cfg = SimpleNamespace(model=SimpleNamespace(keep=M.keep_of(PAPER[1])))
                theirs = StubFit()(cfg, "")
                for k, v in theirs.items():
                    study._storage.set_trial_user_attr(rival._trial_id, k, v)
                study.tell(rival.number, [theirs["acc"], theirs["energy_mj"]])
            return summary

    logs, stub = [], RivalFinishes()
    S.run_search(cfg_for(base, trials=4), out, fit=stub, log=logs.append)
    trials = study_of(out).get_trials()
    assert PAPER[1] not in stub.trained  # held by a live rival: yielded, never trained here
    assert any(t.user_attrs.get("status") == "yielded" for t in trials)
    assert PAPER[2] in stub.trained  # the dead worker's mask was failed as stale and redone
    assert any("stopped without finishing" in m for m in logs)
    stale = [t for t in trials if t.user_attrs.get("status") == "stale"]
    assert [t.user_attrs["mask"] for t in stale] == [PAPER[2]]
    done = [t.user_attrs["mask"] for t in trained_trials(study_of(out))]
    assert len(done) == len(set(done)) == 4  # 3 here and the rival's
    assert PAPER[1] in done



def test_liveness_reads_heartbeats_on_the_readers_clock_not_the_workers():
    """A worker whose wall clock is an hour behind stays alive while its counter moves; one on
    another machine (another pid namespace, the same host name) that stopped is dead once its
    counter stood still for stale_s of the reader's own time, and only then."""
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"])
    skewed, stopped = study.ask(), study.ask()
    for t, worker in ((skewed, "a1"), (stopped, "b2")):
        for k, v in (("mask", PAPER[0]), ("worker", worker), ("host", socket.gethostname()),
                     ("pidns", "another-machine/pid:[1]"), ("pid", os.getpid()),  # a pid we do have
                     ("heartbeat", time.time() - 3600), ("status", "confirmed")):
            t.set_user_attr(k, v)
    now = [1000.0]
    watch = W.Watch(clock=lambda: now[0])

    def dead():
        led = W.Ledger(study.get_trials(), stale_s=60.0, watch=watch)
        return [led.stale(t) for t in (skewed, stopped)]

    assert dead() == [False, False]  # an hour-old wall-clock stamp says nothing
    for _ in range(5):  # 100 s of the reader's time; the skewed worker beats, the other does not
        now[0] += 20.0
        skewed.set_user_attr("heartbeat", time.time() - 3600)
        v = dead()
        assert v == [False, now[0] - 1000.0 > 60.0]  # dead once still for stale_s, and only then
    assert v[1] and study.get_trials()[1].state == optuna.trial.TrialState.RUNNING
    # the same host name in another container: its pid is not looked up in ours
    led = W.Ledger(study.get_trials(), stale_s=1e9, watch=W.Watch())
    assert not led.stale(stopped)


def test_reports_and_best_pt_from_real_training(tmp_path, base):
    import torch

    out = tmp_path / "s"
    report = S.run_search(cfg_for(base, trials=3, saliency_masks=1), out, fit=quiet_fit,
                          log=lambda m: None)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["mask"] for r in rows] == PAPER[:3] and all(float(r["energy_mj"]) > 0 for r in rows)
    md = (out / "pareto.md").read_text()
    assert "## Pareto front" in md and "| Trial | F2 | F3 |" in md and "Chosen as" in md
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "saliency.json").is_file()  # the saliency seed came from the base's ranking
    best = report["best"]
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert tuple(ckpt["arch"]["model"]["keep"]) == M.keep_of(best["mask"])
    assert ckpt["search"]["mask"] == best["mask"] and "optimizer" not in ckpt
    assert ckpt["metrics"]["acc"] == pytest.approx(best["acc"])
    assert json.loads((out / "best.json").read_text())["reason"] == report["reason"]


def test_the_scalar_objective_reports_every_epoch(tmp_path, base):
    out = tmp_path / "s"
    S.run_search(cfg_for(base, trials=2, objective="scalar", finetune_epochs=2), out, fit=quiet_fit,
                 log=lambda m: None)
    study = study_of(out)
    (t, *_) = trained_trials(study)
    assert sorted(t.intermediate_values) == [1, 2]  # epoch 1 (energy on a probe) and the final one
    e0 = study.user_attrs["base_energy_mj"]
    assert t.values[0] == pytest.approx(t.user_attrs["acc"] - 0.2 * t.user_attrs["energy_mj"] / e0)
    assert t.intermediate_values[2] == pytest.approx(t.values[0])


def _row(trial, acc, e, source="sampler"):
    return {"trial": trial, "mask": "1" * 8, "acc": acc, "energy_mj": e, "state": "complete",
            "source": source, "objective": acc - e, "on_front": True}


def test_choose_best_rules():
    rows = [_row(0, 0.50, 1.0), _row(1, 0.60, 1.2), _row(2, 0.62, 2.0), _row(3, 0.30, 0.5)]
    # scaled to [0, 1]: (0, 0), (.33, .63), (.47, .94), (1, 1); the chord is y = x
    assert knee(rows)["trial"] == 1
    best, why = choose_best(rows, "pareto", 1.1)
    assert best["trial"] == 0 and "the most accurate of 2 masks at or under --max-energy-mj 1.1" in why
    best, why = choose_best(rows, "pareto", 0.1)
    assert best["trial"] == 1 and "no mask is at or under" in why
    assert choose_best(rows, "scalar", None)[0]["trial"] == 3  # the highest objective: 0.3 - 0.5


@pytest.mark.parametrize("over,msg", [
    (dict(trials=0), "--trials must be >= 1"),
    (dict(trials=300), "only 256 keep masks exist"),
    (dict(objective="best"), "unknown --objective 'best'"),
    (dict(storage="redis://localhost/0"), "unknown storage scheme 'redis'"),
    (dict(storage="journal:"), "needs a file"),
])
def test_impossible_settings_are_refused_before_out_is_touched(tmp_path, base, over, msg):
    with pytest.raises(FirecutError, match=msg):
        S.run_search(cfg_for(base, **over), tmp_path / "o", fit=StubFit(), log=lambda m: None)
    assert not (tmp_path / "o").exists()


def test_a_study_with_other_settings_is_refused(tmp_path, base):
    S.run_search(cfg_for(base, trials=1), tmp_path / "s", fit=StubFit(), log=lambda m: None)
    with pytest.raises(FirecutError, match="other settings.*finetune_epochs"):
        S.run_search(cfg_for(base, trials=1, finetune_epochs=2), tmp_path / "s", fit=StubFit(),
                     log=lambda m: None)


def test_search_cli_bad_storage_and_unreachable_database(tmp_path, base):
    args = ["search", "--dataset", "synthetic", "--retrain", "finetune", "--base", base, "--width", 0.25,
            "--timesteps", 2,
            "--finetune-epochs", 1, "--saliency-masks", 0, "--out", tmp_path / "o"]
    assert_user_error(run_cli(*args, "--storage", "mongodb://x/y"), "unknown storage scheme 'mongodb'",
                      "postgresql://")
    assert_user_error(run_cli(*args, "--trials", 0), "--trials must be >= 1")
    proc = run_cli(*args, "--storage", "postgresql://u:secret@127.0.0.1:9/none")
    assert_user_error(proc, "cannot use the study storage", "u:***@127.0.0.1:9", "re-run")
    assert "secret" not in proc.stderr



class FitThatMustNotRun:
    def __call__(self, cfg, out, **kw):
        raise AssertionError(f"trained {out} before the storage, the study and the data were checked")


@pytest.mark.parametrize("problem, over, msg", [
    ("unreachable database", dict(storage="postgresql://u:secret@127.0.0.1:9/none"),
     "cannot use the study storage"),
    ("study with other settings", dict(finetune_epochs=3), "other settings.*finetune_epochs"),
    ("missing data", dict(dataset="/nonexistent/cifar10.npz"), "cifar10.npz"),
])
def test_what_can_fail_fails_before_the_base_trains(tmp_path, problem, over, msg):
    """No --base: the base would train first (minutes to hours); each problem must surface before."""
    import optuna

    out = tmp_path / "o"
    out.mkdir()
    study = optuna.create_study(storage=S.default_url(out), study_name="firecut-search",
                                directions=["maximize", "minimize"])
    same = {k: v for k, v in over.items() if k != "finetune_epochs"}  # the study differs in this one
    study.set_user_attr("firecut", S.signature(cfg_for(None, **same), None))
    with pytest.raises(FirecutError, match=msg):
        S.run_search(cfg_for(None, **over), out, fit=FitThatMustNotRun(), log=lambda m: None)


def test_finetune_search_cli_on_real_cifar10(tmp_path):
    data = shared_file("cifar10-sub.npz")
    out = tmp_path / "search"
    args = ["search", "--retrain", "finetune", "--dataset", data, "--trials", 3, "--train-subset", 300,
            "--test-subset", 100,
            "--epochs", 1, "--finetune-epochs", 1, "--batch-size", 50, "--saliency-masks", 0,
            "--settle-s", 0.05, "--out", out]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["source"] for r in rows] == ["paper:Baseline", "paper:Head-1", "paper:Head-2"]
    assert [int(r["params"]) for r in rows] == [736_458, 310_858, 310_858]  # the full-width nets
    for r in rows:
        assert 0 <= float(r["acc"]) <= 1 and float(r["ac"]) > 0
        assert float(r["mac"]) == 32 * 32 * 64 * 27  # the encoding layer only
    assert float(rows[1]["ac"]) < float(rows[0]["ac"])  # fewer modules, fewer accumulates
    assert "| Trial | F2 |" in proc.stdout and "best: trial" in proc.stderr
    assert (out / "best.pt").is_file() and (out / "pareto.png").is_file()
    assert f"next: firecut export {out / 'best.pt'} --format onnx" in proc.stderr  # what to run next
    again = run_cli(*args)  # the study is complete: nothing is trained, the same report
    assert again.returncode == 0 and again.stdout == proc.stdout
    assert "trial 0 [" not in again.stderr


def test_the_optuna_internals_firecut_relies_on_are_still_there():
    """firecut.search.workers writes through study._storage (user attributes and states of other workers'
    trials) and keys trials by FrozenTrial._trial_id; pyproject pins optuna below the next major.
    If this fails, Optuna changed them: fix firecut.search.workers before raising that bound."""
    import inspect

    import optuna

    study = optuna.create_study()
    assert isinstance(study._storage, optuna.storages.BaseStorage), "Study._storage is gone"
    for name, params in (("set_trial_user_attr", ["trial_id", "key", "value"]),
                         ("set_trial_state_values", ["trial_id", "state", "values"]),
                         ("get_study_id_from_name", ["study_name"]),
                         ("get_study_user_attrs", ["study_id"])):
        got = list(inspect.signature(getattr(optuna.storages.BaseStorage, name)).parameters)[1:]
        assert got[:len(params)] == params, f"BaseStorage.{name} now takes {got}"
    trial = study.ask()
    assert study.get_trials()[0]._trial_id == trial._trial_id, "FrozenTrial._trial_id changed"
    assert "skip_if_exists" in inspect.signature(study.enqueue_trial).parameters
    assert "set_constraint" in dir(trial) and trial.set_constraint("c", 1.0) is None
    assert optuna.trial.FrozenTrial.constraints, "FrozenTrial.constraints is gone"
    # the ladder's claim (search/ladder.py): WAITING -> RUNNING succeeds once, for one caller
    study.enqueue_trial({}, user_attrs={"net": "11111111", "rung": 0})
    waiting = next(t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING)
    running = optuna.trial.TrialState.RUNNING
    assert study._storage.set_trial_state_values(waiting._trial_id, running) is True
    assert study._storage.set_trial_state_values(waiting._trial_id, running) is False


def test_the_energy_budget_steers_the_samplers(tmp_path, base):
    """--max-energy-mj reaches Optuna as each trial's constraint (feasible: <= 0), which NSGA-II
    and TPE read; told values and the chosen best are unchanged by it."""
    cfg = cfg_for(base, trials=3, max_energy_mj=0.0085)
    S.run_search(cfg, tmp_path / "s", fit=StubFit(), log=lambda m: None)
    trials = trained_trials(study_of(tmp_path / "s"))
    for t in trials:
        assert t.constraints == {"energy_mj": pytest.approx(t.user_attrs["energy_mj"] - 0.0085)}
    assert {c["energy_mj"] <= 0 for t in trials for c in [t.constraints]} == {True, False}
    assert S.signature(cfg, None)["max_energy_mj"] == 0.0085  # every worker steers alike


def test_a_seed_is_queued_once_however_many_workers_queue_it(tmp_path):
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s",
                                directions=["maximize", "minimize"])
    worker = W.Worker(cfg_for(None), S.OBJECTIVES["pareto"], None, study, "sqlite://", tmp_path, "", None,
                      None, StubFit(), lambda m: None)
    for _ in range(3):
        worker.enqueue(PAPER[1], {"source": "paper:Head-1"})
    assert len(study.get_trials()) == 1
    t = study.ask()
    study.tell(t, state=optuna.trial.TrialState.FAIL)  # interrupted: its mask is retried, once
    for _ in range(2):
        worker.enqueue(PAPER[1], {"source": "paper:Head-1", "retry_of": t.number}, worker.ledger())
    waiting = [x for x in study.get_trials() if x.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and M.mask_of(waiting[0]) == PAPER[1]
