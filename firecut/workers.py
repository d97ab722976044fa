"""How the workers of one search study divide its trials.

Several workers (processes or machines running the same command against one --storage) share
the study. Each trial follows one protocol, so that no mask is trained twice and the study ends
with exactly N trained masks:

    1. ask a trial, suggest its 8 bits; write mask, host, pid, heartbeat and status=claim
    2. wait settle_s (longer than one storage write), then read every trial:
       - the mask is already finished   -> status=repeat: told the same values (the sampler
         learns that it proposed a known mask; the budget is not charged) and the nearest
         untried mask is enqueued
       - a live trial holds the same mask and is lower-numbered or confirmed -> status=yielded
         (FAIL), the nearest untried mask is enqueued
       - N charged trials (finished, live or waiting) have lower numbers -> status=over_budget
       - else status=confirmed: train
    3. a heartbeat thread refreshes `heartbeat` while training; a RUNNING trial whose heartbeat is
       older than stale_s (or whose process on this host is gone) is failed by the next worker,
       and failed or interrupted masks are tried again first, so their run folders resume.

Before asking, a worker enqueues the next mask it wants tried (a failed one, else the next
untried seed); Optuna hands out the oldest waiting trial first.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from firecut.masks import ALL_MASKS, keep_of, mask_of, nearest_free, params_of, pattern
from firecut.schedules import FIRE_NAMES, Schedule
from firecut.storage import storage_errors

if TYPE_CHECKING:
    from firecut.ablate import AblateConfig
    from firecut.search import Objective, SearchConfig


class Ledger:
    """The study's trials read once, classified for the protocol (see the module docstring)."""

    def __init__(self, trials: list, stale_s: float, now: float | None = None):
        from optuna.trial import TrialState

        self.S, self.trials, self.stale_s = TrialState, trials, stale_s
        self.now = time.time() if now is None else now

    def stale(self, t) -> bool:
        if t.state != self.S.RUNNING:
            return False
        start = t.datetime_start.timestamp() if t.datetime_start else self.now
        beat = t.user_attrs.get("heartbeat") or start
        if self.now - beat > self.stale_s:
            return True
        if t.user_attrs.get("host") == socket.gethostname() and t.user_attrs.get("pid"):
            try:
                os.kill(int(t.user_attrs["pid"]), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def live(self, t) -> bool:
        return (t.state == self.S.RUNNING and t.user_attrs.get("status", "claim") in ("claim", "confirmed")
                and not self.stale(t))

    def finished(self, t) -> bool:
        return t.state in (self.S.COMPLETE, self.S.PRUNED) and t.user_attrs.get("status") != "repeat"

    def charged(self, t, waiting: bool = True) -> bool:
        return self.finished(t) or self.live(t) or (waiting and t.state == self.S.WAITING)

    def used(self) -> int:
        """Trials that count against --trials now: finished or being trained."""
        return sum(self.charged(t, waiting=False) for t in self.trials)

    def done_with(self, bits: str, me: int):
        return next((t for t in self.trials
                     if t.number != me and self.finished(t) and mask_of(t) == bits), None)

    def rival(self, bits: str, me: int):
        return next((t for t in self.trials if t.number != me and self.live(t) and mask_of(t) == bits
                     and (t.number < me or t.user_attrs.get("status") == "confirmed")), None)

    def ahead(self, me: int) -> int:
        return sum(self.charged(t) for t in self.trials if t.number < me)

    def taken(self) -> set[str]:
        return {m for t in self.trials if self.charged(t) and (m := mask_of(t))}

    def to_retry(self) -> list:
        """Failed (interrupted, stale, errored) trials whose mask nobody has finished or holds."""
        taken, out = self.taken(), []
        for t in self.trials:
            m = mask_of(t)
            if (t.state == self.S.FAIL and m and m not in taken
                    and t.user_attrs.get("status") not in ("yielded", "over_budget", "repeat")):
                taken.add(m)
                out.append(t)
        return out


class Worker:
    """One process's part of the search: trials until the study holds `cfg.trials` trained masks."""

    def __init__(self, cfg: SearchConfig, obj: Objective, ac: AblateConfig, study, url: str, out: Path,
                 base: str, base_cfgs, base_energy_mj: float | None, fit: Callable,
                 log: Callable[[str], None]):
        self.cfg, self.obj, self.ac, self.study, self.url, self.out = cfg, obj, ac, study, url, out
        self.base, self.base_cfgs, self.base_energy_mj, self.fit = base, base_cfgs, base_energy_mj, fit
        self.log = log
        self.trained = 0

    def ledger(self) -> Ledger:
        with storage_errors(self.url):
            return Ledger(self.study.get_trials(deepcopy=False), self.cfg.stale_s)

    def _attr(self, trial_id: int, key: str, value: Any) -> None:
        with storage_errors(self.url):
            self.study._storage.set_trial_user_attr(trial_id, key, value)

    def tidy(self, led: Ledger) -> None:
        """Fails dead workers' trials (their masks are then tried again: see next_fixed)."""
        from optuna.exceptions import UpdateFinishedTrialError

        for t in led.trials:
            if led.stale(t):
                self.log(f"trial {t.number} ({t.user_attrs.get('host')} pid {t.user_attrs.get('pid')}) "
                         "stopped without finishing; its mask is tried again")
                try:
                    with storage_errors(self.url):
                        self.study._storage.set_trial_user_attr(t._trial_id, "status", "stale")
                        self.study._storage.set_trial_state_values(t._trial_id, led.S.FAIL)
                except UpdateFinishedTrialError:
                    pass

    def next_fixed(self, led: Ledger) -> tuple[str, dict[str, Any]] | None:
        """The mask to try before asking the sampler: a failed one first (its run folder resumes),
        then the next untried seed."""
        retry = led.to_retry()
        if retry:
            t = retry[0]
            return mask_of(t), {"source": t.user_attrs.get("source", "sampler"), "retry_of": t.number}
        taken = led.taken()
        for bits, source in self.study.user_attrs.get("seeds", []):
            if bits not in taken:
                return bits, {"source": source}
        return None

    def enqueue(self, bits: str, attrs: dict[str, Any]) -> None:
        with storage_errors(self.url):
            self.study.enqueue_trial(params_of(bits), user_attrs=attrs)

    def run(self) -> None:
        while True:
            led = self.ledger()
            self.tidy(led)
            led = self.ledger()
            if led.used() >= self.cfg.trials:
                return
            if len({mask_of(t) for t in led.trials if led.finished(t)}) >= len(ALL_MASKS):
                self.log("every one of the 256 masks has been evaluated")
                return
            self.one_trial(led)

    def one_trial(self, led: Ledger) -> None:
        import optuna

        fixed = self.next_fixed(led)
        if fixed is not None:
            self.enqueue(*fixed)  # the oldest waiting trial is asked first: usually this one
        with storage_errors(self.url):
            trial = self.study.ask()
            bits = "".join(str(trial.suggest_categorical(m, (1, 0))) for m in FIRE_NAMES)
            for k, v in (("mask", bits), ("host", socket.gethostname()), ("pid", os.getpid()),
                         ("heartbeat", time.time()), ("status", "claim")):
                trial.set_user_attr(k, v)
        source = trial.user_attrs.get("source", "sampler")
        time.sleep(self.cfg.settle_s)
        led = self.ledger()
        done, rival = led.done_with(bits, trial.number), led.rival(bits, trial.number)
        if done is not None or rival is not None:
            self.redirect(trial, bits, done, rival, led)
            return
        if led.ahead(trial.number) >= self.cfg.trials:
            trial.set_user_attr("status", "over_budget")
            with storage_errors(self.url):
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        trial.set_user_attr("status", "confirmed")
        n = led.used()
        self.log(f"trial {trial.number} [{pattern(bits)}] {source}  ({n}/{self.cfg.trials} in the study)")
        try:
            with self.heartbeat(trial._trial_id):
                summary = self.train(trial, bits)
        except optuna.TrialPruned:
            with storage_errors(self.url):
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self.log(f"trial {trial.number} [{pattern(bits)}] pruned")
            return
        except BaseException as e:  # KeyboardInterrupt included: the trial is FAIL, its run folder kept
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "error"
            try:
                trial.set_user_attr("status", status)
                trial.set_user_attr("error", str(e)[:500])
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            except Exception:
                pass  # the storage may be what failed; the next run fails it as stale
            raise
        self.trained += 1
        values = self.obj.value(summary, self.cfg, self.base_energy_mj or 1.0)
        with storage_errors(self.url):
            for k in ("acc", "f1", "energy_mj", "ac", "mac", "params", "firing_rate", "train_seconds"):
                trial.set_user_attr(k, summary[k])
            trial.set_user_attr("run", str(self.out / "masks" / f"{bits}-s{self.cfg.seed}"))
            self.study.tell(trial, list(values))
        self.log(f"trial {trial.number} [{pattern(bits)}] acc {summary['acc']:.4f}  "
                 f"{summary['energy_mj']:.5f} mJ  {summary['params']:,} params")

    def redirect(self, trial, bits: str, done, rival, led: Ledger) -> None:
        """A known or claimed mask: record it without training; enqueue the nearest untried one."""
        import optuna

        with storage_errors(self.url):
            if done is not None:
                trial.set_user_attr("status", "repeat")
                trial.set_user_attr("repeat_of", done.number)
                if done.state == led.S.COMPLETE:
                    self.study.tell(trial, list(done.values))
                else:
                    self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                trial.set_user_attr("status", "yielded")
                trial.set_user_attr("yielded_to", rival.number)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        nxt = nearest_free(bits, led.taken() | {bits}, random.Random(f"{self.cfg.seed}-{trial.number}"))
        if nxt is not None:
            self.enqueue(nxt, {"source": f"near:{bits}"})

    @contextmanager
    def heartbeat(self, trial_id: int) -> Iterator[None]:
        stop = threading.Event()
        period = max(0.5, min(30.0, self.cfg.stale_s / 4))

        def beat() -> None:
            while not stop.wait(period):
                try:
                    self.study._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
                except Exception:
                    pass  # a storage hiccup: the next beat retries

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def train(self, trial, bits: str) -> dict[str, Any]:
        fit = self.fit
        if self.obj.prunes:
            def on_epoch(epoch: int, metrics: dict[str, Any], probe: Callable[[], dict[str, Any]]) -> None:
                m = metrics if "energy_mj" in metrics else {**metrics, "energy_mj": probe()["energy_mj"]}
                trial.report(self.obj.value(m, self.cfg, self.base_energy_mj or 1.0)[0], epoch)
                if "energy_mj" not in metrics and trial.should_prune():
                    import optuna

                    raise optuna.TrialPruned(f"epoch {epoch}")
            fit = partial(fit, on_epoch=on_epoch)
        sched = Schedule(bits, keep_of(bits))
        from firecut.ablate import run_schedule

        return run_schedule(self.ac, sched, self.cfg.seed, self.base, self.base_cfgs, self.out, fit,
                            folder="masks")
