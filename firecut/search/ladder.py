"""The recipe-mode search: every distinct pruned SqueezeNet ranked by successive halving.

    space      the 256 keep masks build 80 distinct networks when each is trained as its own net
               (pruning.twins: fire2/3, fire4/5, fire6/7, fire8/9 share plans); a network is named
               by one of its masks (a paper schedule's where it has one) and reported with all
    rungs      R complete recipes of growing budget: rung k trains the CNN ceil(E / eta^(R-1-k))
               epochs and the SNN ceil(F / eta^(R-1-k)) (E, F: the recipe's), each from scratch
               with its own one-cycle schedule (a truncated run ranks differently from a short run
               of its own); the last rung is the full recipe. With the `cpu` preset and eta = 3:
               (4, 1) -> (10, 3) -> (30, 8) epochs
    promotion  rung 0 judges every network (or the first --trials); rung k+1 takes the best
               ceil(n_k / eta) of rung k by non-dominated rank on (accuracy up, energy down), then
               accuracy: energy hardly moves with budget, so promoting on accuracy alone would
               drop the cheap end of the front at the first rung
    confirm    the C most accurate networks of the last rung are trained again with seed + 1 at
               the full budget; their figures are the mean of both seeds
    cost       about n_0 * r * R when each rung's budget is eta times the last's (r: rung 0's)

A rung is promoted only when every one of its networks has finished, so the ranking and the
table do not depend on how many workers ran or in which order (a one-worker run gives the same
table). Each (network, rung) is one Optuna trial, enqueued (WAITING) when its rung is known and
claimed by the atomic WAITING -> RUNNING transition of Optuna's storage, the one Optuna's own
`ask` uses. The claim protocol, in full:

    1. read the study; fail RUNNING trials whose worker is dead (workers.Ledger: a heartbeat that
       stood still for stale_s of the reader's clock, or a gone pid in the reader's pid namespace)
    2. an item's trial is its lowest-numbered trial that has not failed; an item with none is
       enqueued (a failed item is thus retried, and its run folders resume where it stopped)
    3. a worker claims an item only through its trial: WAITING -> RUNNING succeeds for one worker
       only; a later duplicate WAITING trial (two workers enqueued at once) is failed as
       `duplicate` by whoever meets it
    4. nothing to claim, and work still running elsewhere: wait; every rung complete: stop
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from firecut.errors import FirecutError
from firecut.pruning.masks import ALL_MASKS, bits_of, keep_of, pattern
from firecut.search.storage import storage_errors


# ------------------------------------------------------------------------------ the space


@dataclass(frozen=True)
class Network:
    bits: str  # the mask that names it (F2 first)
    masks: tuple[str, ...]  # every keep mask that builds it, `bits` first
    names: tuple[str, ...] = ()  # paper schedules among them (Table 3's names)


def distinct_networks(recipe, order: Sequence[tuple[str, str]] = ()) -> list[Network]:
    """The networks the 256 keep masks build when each is trained from scratch through `recipe`
    (its CNN's architecture; pruning.twins). `order` (bits, name) puts named masks first, in its
    order (the paper's schedules); the rest follow in ALL_MASKS order."""
    from firecut.training.recipe import step_config

    cfg = step_config(recipe, "cnn")
    memo = (repr(cfg.model), repr(cfg.spiking), tuple(order))
    if memo not in _NETWORKS:  # 256 nets built: seconds; the tests and a notebook ask again
        _NETWORKS[memo] = _group(cfg, order)
    return _NETWORKS[memo]


_NETWORKS: dict[tuple, list[Network]] = {}


def _group(cfg, order: Sequence[tuple[str, str]]) -> list[Network]:
    from firecut.pruning.twins import architecture_key

    named = dict(order)
    masks = list(dict.fromkeys([b for b, _ in order] + ALL_MASKS))
    groups: dict[str, list[str]] = {}
    for bits in masks:
        cfg.model.keep = list(keep_of(bits))
        groups.setdefault(architecture_key(cfg.model, cfg.spiking), []).append(bits)
    return [Network(g[0], tuple(g), tuple(named[b] for b in g if b in named)) for g in groups.values()]


# ------------------------------------------------------------------------------ the rungs


@dataclass(frozen=True)
class Rung:
    index: int
    cnn_epochs: int
    snn_epochs: int
    seed: int
    size: int  # networks judged at this rung
    confirm: bool = False  # a second seed of the last rung's best, at its budget

    @property
    def budget(self) -> str:
        return f"e{self.cnn_epochs}f{self.snn_epochs}"

    def label(self) -> str:
        what = "confirm, seed " + str(self.seed) if self.confirm else f"rung {self.index}"
        return f"{what}: CNN {self.cnn_epochs} + SNN {self.snn_epochs} epochs, {self.size} networks"


def plan_rungs(cnn_epochs: int, snn_epochs: int, networks: int, rungs: int, eta: int, confirm: int,
               seed: int) -> list[Rung]:
    """Rung k of R: budgets ceil(E / eta^(R-1-k)), ceil(F / eta^(R-1-k)); sizes n, ceil(n / eta),
    ...; then (confirm > 0) the last rung's budget again with seed + 1 for min(confirm, n_last)."""
    out, size = [], networks
    for k in range(rungs):
        div = eta ** (rungs - 1 - k)
        out.append(Rung(k, math.ceil(cnn_epochs / div), math.ceil(snn_epochs / div), seed, size))
        size = math.ceil(size / eta)
    if confirm > 0:
        last = out[-1]
        out.append(replace(last, index=rungs, seed=seed + 1, size=min(confirm, last.size), confirm=True))
    return out


def front_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting of (energy down, accuracy up): 0 for the Pareto front, 1 for the
    front of what remains, and so on."""
    from firecut.ablate import dominates

    ranks, left, r = [0] * len(points), set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = r
        left -= front
        r += 1
    return ranks


def promote(results: dict[str, tuple[float, float]], n: int) -> list[str]:
    """The n networks (bits -> (acc, energy_mj)) with the best non-dominated rank, then accuracy,
    then energy (then bits, so that every worker agrees)."""
    nets = sorted(results)
    ranks = front_ranks([(results[b][1], results[b][0]) for b in nets])
    def key(i: int) -> tuple:
        acc, energy = results[nets[i]]
        return ranks[i], -acc, energy, nets[i]

    return [nets[i] for i in sorted(range(len(nets)), key=key)[:n]]


def most_accurate(results: dict[str, tuple[float, float]], n: int) -> list[str]:
    return sorted(results, key=lambda b: (-results[b][0], results[b][1], b))[:n]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties in either count for neither
    pair; 1 = the same order, -1 = reversed). nan for fewer than two items or all ties."""
    conc = disc = tx = ty = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            if a == 0 and b == 0:
                continue
            if a == 0:
                tx += 1
            elif b == 0:
                ty += 1
            elif a == b:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else float("nan")


# ------------------------------------------------------------------------------ the ladder's state


def item_of(t) -> tuple[str, int] | None:
    """A trial's (network bits, rung index), from the attributes it was enqueued with."""
    a = t.user_attrs
    return (a["net"], int(a["rung"])) if "net" in a and "rung" in a else None


class Ladder:
    """The study read once: which networks each rung holds (known once the rung below finished),
    each item's trial, and its result."""

    def __init__(self, rungs: list[Rung], networks: list[Network], trials: list, stale_s: float, watch=None):
        from firecut.search.workers import Ledger

        self.rungs, self.networks = rungs, networks
        self.led = Ledger(trials, stale_s, watch)
        self.S = self.led.S
        self.by_item: dict[tuple[str, int], list] = {}
        for t in sorted(trials, key=lambda t: t.number):
            if (item := item_of(t)) is not None:
                self.by_item.setdefault(item, []).append(t)
        self.members: list[list[str] | None] = []
        for rung in rungs:
            self.members.append(self._members(rung))

    def _members(self, rung: Rung) -> list[str] | None:
        if rung.index == 0:
            return [n.bits for n in self.networks[:rung.size]]
        below = self.members[rung.index - 1]
        if below is None or not all(self.result(b, rung.index - 1) for b in below):
            return None
        res = {b: self.result(b, rung.index - 1) for b in below}
        return (most_accurate if rung.confirm else promote)(res, rung.size)

    def trial(self, bits: str, k: int):
        """The item's trial: its lowest-numbered trial that has not failed (or None)."""
        return next((t for t in self.by_item.get((bits, k), []) if t.state != self.S.FAIL), None)

    def result(self, bits: str, k: int) -> tuple[float, float] | None:
        t = self.trial(bits, k)
        if t is None or t.state != self.S.COMPLETE:
            return None
        return float(t.values[0]), float(t.values[1])

    def duplicates(self) -> list:
        """WAITING trials that are not their item's trial (enqueued twice at once)."""
        out = []
        for (bits, k), ts in self.by_item.items():
            first = self.trial(bits, k)
            out += [t for t in ts if t.state == self.S.WAITING and t is not first]
        return out

    def open_items(self) -> list[tuple[str, int]]:
        """Items of known rungs without a finished trial, rung by rung, in member order."""
        return [(b, r.index) for r, mem in zip(self.rungs, self.members, strict=True) if mem
                for b in mem if self.result(b, r.index) is None]

    def live(self, t) -> bool:
        return t.state == self.S.RUNNING and not self.led.stale(t)

    def complete(self) -> bool:
        return all(m is not None for m in self.members) and not self.open_items()


# ------------------------------------------------------------------------------ one worker


class LadderWorker:
    """One process's part of the ladder: claims (network, rung) items until every rung is
    complete, training each through the recipe at its rung's budget."""

    def __init__(self, cfg, study, url: str, out: Path, rungs: list[Rung], networks: list[Network],
                 fit: Callable, log: Callable[[str], None]):
        from firecut.search.workers import Watch

        self.cfg, self.study, self.url, self.out = cfg, study, url, out
        self.rungs, self.networks, self.fit, self.log = rungs, networks, fit, log
        self.id = uuid.uuid4().hex[:12]
        self.watch = Watch()
        self.trained = 0

    def read(self) -> Ladder:
        with storage_errors(self.url):
            trials = self.study.get_trials(deepcopy=False)
        return Ladder(self.rungs, self.networks, trials, self.cfg.stale_s, self.watch)

    def _fail(self, trial_id: int, status: str) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        storage = self.study._storage
        try:
            with storage_errors(self.url):
                storage.set_trial_user_attr(trial_id, "status", status)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            pass

    def tidy(self, lad: Ladder) -> bool:
        """Fails dead workers' trials and duplicate waiting ones; whether it changed anything."""
        changed = False
        for t in lad.led.trials:
            if lad.led.stale(t) and item_of(t) is not None:
                bits, k = item_of(t)
                self.log(f"{pattern(bits)} at rung {k}: its worker ({t.user_attrs.get('host')}, pid "
                         f"{t.user_attrs.get('pid')}) stopped without finishing; it is trained again "
                         "from its run folder")
                self._fail(t._trial_id, "stale")
                changed = True
        for t in lad.duplicates():
            if self.claim(t._trial_id):
                self._fail(t._trial_id, "duplicate")
                changed = True
        return changed

    def claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING: true for exactly one of the workers that try."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            with storage_errors(self.url):
                return bool(self.study._storage.set_trial_state_values(trial_id, TrialState.RUNNING))
        except UpdateFinishedTrialError:
            return False

    def run(self) -> None:
        from firecut.search.workers import beat_period

        while True:
            lad = self.read()
            if self.tidy(lad):
                lad = self.read()
            if lad.complete():
                return
            todo = lad.open_items()
            waiting = [(b, k) for b, k in todo if lad.trial(b, k) is None]
            if waiting:  # every open item gets its trial; the study then hands them out in order
                with storage_errors(self.url):
                    for b, k in waiting:
                        self.study.enqueue_trial({}, user_attrs={"net": b, "rung": k, "status": "waiting"})
                continue
            claimable = [lad.trial(b, k) for b, k in todo if lad.trial(b, k).state == lad.S.WAITING]
            if claimable:
                t = claimable[0]
                if self.claim(t._trial_id):
                    self.one(t._trial_id, t.number, *item_of(t))
                continue
            # Every open item is being trained by another worker, or the next rung waits for them.
            time.sleep(min(beat_period(self.cfg.stale_s), 5.0))

    def one(self, trial_id: int, number: int, bits: str, k: int) -> None:
        from firecut.search.workers import beat_period, heartbeat, pid_namespace

        rung = self.rungs[k]
        storage = self.study._storage
        with storage_errors(self.url):
            for key, v in (("worker", self.id), ("host", socket.gethostname()), ("pidns", pid_namespace()),
                           ("pid", os.getpid()), ("heartbeat", 0), ("status", "confirmed")):
                storage.set_trial_user_attr(trial_id, key, v)
        net = next(n for n in self.networks if n.bits == bits)
        also = f" (= {', '.join(net.names)})" if net.names else ""
        self.log(f"{rung.label().split(':')[0]} [{pattern(bits)}]{also}: CNN {rung.cnn_epochs} + SNN "
                 f"{rung.snn_epochs} epochs, seed {rung.seed} (trial {number})")
        start = time.monotonic()
        try:
            with heartbeat(storage, trial_id, beat_period(self.cfg.stale_s)):
                summary = self.train(bits, rung)
        except BaseException as e:  # KeyboardInterrupt included: the trial fails, its folders stay
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "error"
            try:
                storage.set_trial_user_attr(trial_id, "error", str(e)[:500])
                self._fail(trial_id, status)
            except Exception:
                pass  # the storage may be what failed; the next worker fails it as stale
            raise
        self.trained += 1
        summary["wall_seconds"] = time.monotonic() - start  # training, evaluation and counting
        with storage_errors(self.url):
            for key in ("acc", "f1", "energy_mj", "ac", "mac", "params", "firing_rate", "cnn_acc",
                        "cpu_seconds", "wall_seconds", "run"):
                storage.set_trial_user_attr(trial_id, key, summary[key])
            storage.set_trial_user_attr(trial_id, "status", "done")
            self.study.tell(number, [summary["acc"], summary["energy_mj"]])
        self.log(f"  acc {summary['acc']:.4f} (CNN {summary['cnn_acc']:.4f}), {summary['energy_mj']:.5f} mJ, "
                 f"{summary['wall_seconds'] / 60:.1f} min")

    def train(self, bits: str, rung: Rung) -> dict[str, Any]:
        """The network through the recipe at the rung's budget, into OUT/nets/BITS-eEfF-sSEED
        (its CNN beside it, -cnn): one folder per budget and seed, so rungs of equal budget share
        it and a killed run resumes from its last epoch."""
        from firecut.training.recipe import cnn_then_snn

        recipe = replace(self.cfg.recipe, epochs=rung.cnn_epochs, finetune_epochs=rung.snn_epochs)
        run = self.out / "nets" / f"{bits}-{rung.budget}-s{rung.seed}"
        cnn, snn = cnn_then_snn(recipe, run.with_name(run.name + "-cnn"), run, self.fit, lambda m: None,
                                seed=rung.seed, keep=list(keep_of(bits)))
        return {**snn, "cnn_acc": cnn["acc"], "run": str(run),  # cpu_seconds: the training steps alone
                "cpu_seconds": float(cnn.get("train_seconds", 0.0)) + float(snn.get("train_seconds", 0.0))}


# ------------------------------------------------------------------------------ set-up


def recipe_budget(recipe) -> tuple[int, int]:
    """(CNN epochs, SNN epochs) of the full recipe: the last rung's budget."""
    from firecut.training.recipe import step_config

    return step_config(recipe, "cnn").train.epochs, step_config(recipe, "snn").train.epochs


def ladder_of(cfg) -> tuple[list[Network], list[Rung]]:
    """The space (the paper's schedules' networks first) and the rungs for `cfg`."""
    from firecut.pruning.schedules import load_schedules

    paper = [(bits_of(s.keep), s.name) for s in load_schedules("paper.yaml")]
    networks = distinct_networks(cfg.recipe, paper)
    n = len(networks) if cfg.trials is None else cfg.trials
    if n > len(networks):
        raise FirecutError(f"--trials {n}: the keep masks build only {len(networks)} distinct networks "
                           f"when each is trained as its own net; use --trials {len(networks)} or drop it")
    e, f = recipe_budget(cfg.recipe)
    return networks, plan_rungs(e, f, n, cfg.rungs, cfg.eta, cfg.confirm, cfg.seed)
