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
    3. a heartbeat thread bumps the `heartbeat` counter while training. A RUNNING trial is dead
       when its counter has not moved for stale_s of a reader's own monotonic clock (no two
       machines' wall clocks are compared), or when its process is gone and the reader shares
       its pid namespace (boot id + namespace: not merely its host name). The next worker fails
       it, and failed or interrupted masks are tried again first, so their run folders resume.
       A worker whose budget is spoken for waits until no other trial runs (or is judged dead and
       retried), so that each worker's report is the whole study. Workers are told apart by a
       random id, not by host and pid.

Before asking, a worker enqueues the next mask it wants tried (a failed one, else the next
untried seed); Optuna hands out the oldest waiting trial first.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from firecut.pruning.masks import ALL_MASKS, keep_of, mask_of, nearest_free, params_of, pattern
from firecut.pruning.schedules import FIRE_NAMES, Schedule
from firecut.search.storage import storage_errors

if TYPE_CHECKING:
    from firecut.ablate import AblateConfig
    from firecut.search.run import Objective, SearchConfig


def pid_namespace() -> str | None:
    """This process's pid namespace, as boot id + namespace inode (Linux): two workers may check
    each other's pids only when these are equal. Containers sharing a hostname (or a host name
    reused by another machine) differ here; elsewhere it is None and only heartbeats count."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def beat_period(stale_s: float) -> float:
    """How often a training worker bumps its heartbeat: a quarter of the time after which a
    reader judges it dead (between 0.5 and 30 s)."""
    return max(0.5, min(30.0, stale_s / 4))


@contextmanager
def heartbeat(storage: Any, trial_id: int, period: float) -> Iterator[None]:
    """Bumps the trial's `heartbeat` counter every `period` seconds while the body runs."""
    stop = threading.Event()

    def beat() -> None:
        n = 0
        while not stop.wait(period):
            n += 1
            try:
                storage.set_trial_user_attr(trial_id, "heartbeat", n)
            except Exception:
                pass  # a storage hiccup: the next beat retries

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Watch:
    """A reader's own record of each running trial's heartbeat, on its monotonic clock: a
    heartbeat is a counter its worker bumps, never compared with the reader's wall clock, so
    clock skew between machines cannot make a live trial look dead."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.seen: dict[int, tuple[Any, float]] = {}  # trial id -> (beat, since)

    def observe(self, trial_id: int, beat: Any) -> float:
        """Seconds this beat has stood unchanged as far as this reader knows."""
        now = self.clock()
        old = self.seen.get(trial_id)
        if old is None or old[0] != beat:
            self.seen[trial_id] = (beat, now)
            return 0.0
        return now - old[1]


class Ledger:
    """The study's trials read once, classified for the protocol (see the module docstring)."""

    def __init__(self, trials: list, stale_s: float, watch: Watch | None = None):
        from optuna.trial import TrialState

        self.S, self.trials, self.stale_s = TrialState, trials, stale_s
        self.watch = watch or Watch()
        self.here = pid_namespace()
        self.dead = {t._trial_id for t in trials if t.state == TrialState.RUNNING and self._dead(t)}

    def _dead(self, t) -> bool:
        """Its heartbeat stood still for stale_s of this reader's time, or its process is gone
        (same pid namespace)."""
        a = t.user_attrs
        if self.watch.observe(t._trial_id, a.get("heartbeat")) > self.stale_s:
            return True
        if self.here is not None and a.get("pidns") == self.here and a.get("pid"):
            try:
                os.kill(int(a["pid"]), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return False

    def stale(self, t) -> bool:
        return t._trial_id in self.dead

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
        self.id = uuid.uuid4().hex[:12]  # this worker, in the study: hostnames and pids repeat
        self.watch = Watch()

    def ledger(self) -> Ledger:
        with storage_errors(self.url):
            return Ledger(self.study.get_trials(deepcopy=False), self.cfg.stale_s, self.watch)

    def _attr(self, trial_id: int, key: str, value: Any) -> None:
        with storage_errors(self.url):
            self.study._storage.set_trial_user_attr(trial_id, key, value)

    def tidy(self, led: Ledger) -> bool:
        """Fails dead workers' trials (their masks are then tried again: see next_fixed); whether
        there were any (the study must then be read again)."""
        from optuna.exceptions import UpdateFinishedTrialError

        for t in led.trials:
            if led.stale(t):
                self.log(f"trial {t.number} (worker {t.user_attrs.get('worker', '?')} on "
                         f"{t.user_attrs.get('host')}, pid {t.user_attrs.get('pid')}) stopped without "
                         "finishing; its mask is tried again")
                try:
                    with storage_errors(self.url):
                        self.study._storage.set_trial_user_attr(t._trial_id, "status", "stale")
                        self.study._storage.set_trial_state_values(t._trial_id, led.S.FAIL)
                except UpdateFinishedTrialError:
                    pass
        return any(led.stale(t) for t in led.trials)

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

    def enqueue(self, bits: str, attrs: dict[str, Any], led: Ledger | None = None) -> None:
        """Queues `bits` for the next ask. A seed or a neighbour is queued once in the study's life
        (Optuna's skip_if_exists: any trial of these params); a retry (its failed trial has the same
        params) unless one already waits."""
        with storage_errors(self.url):
            if "retry_of" not in attrs:
                self.study.enqueue_trial(params_of(bits), user_attrs=attrs, skip_if_exists=True)
            elif led is None or not any(t.state == led.S.WAITING and mask_of(t) == bits for t in led.trials):
                self.study.enqueue_trial(params_of(bits), user_attrs=attrs)

    def run(self) -> None:
        while True:
            led = self.ledger()
            if self.tidy(led):  # dead trials were failed: read the study as it is now
                led = self.ledger()
            if led.used() >= self.cfg.trials:
                if not any(led.live(t) for t in led.trials):
                    return
                # The budget is spoken for, but other workers' trials still run, or their workers
                # died (tidy() then fails them and this worker retries their masks). Wait, so that
                # the report this worker writes is the whole study.
                time.sleep(min(self.beat_period(), 5.0))
                continue
            if len({mask_of(t) for t in led.trials if led.finished(t)}) >= len(ALL_MASKS):
                self.log("every one of the 256 masks has been evaluated")
                return
            self.one_trial(led)

    def one_trial(self, led: Ledger) -> None:
        import optuna

        fixed = self.next_fixed(led)
        if fixed is not None:
            self.enqueue(*fixed, led)  # the oldest waiting trial is asked first: usually this one
        with storage_errors(self.url):
            trial = self.study.ask()
            bits = "".join(str(trial.suggest_categorical(m, (1, 0))) for m in FIRE_NAMES)
            for k, v in (("mask", bits), ("worker", self.id), ("host", socket.gethostname()),
                         ("pidns", pid_namespace()), ("pid", os.getpid()), ("heartbeat", 0),
                         ("status", "claim")):
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
        self.constrain(trial, summary["energy_mj"])
        with storage_errors(self.url):
            for k in ("acc", "f1", "energy_mj", "ac", "mac", "params", "firing_rate", "train_seconds"):
                trial.set_user_attr(k, summary[k])
            trial.set_user_attr("run", str(self.out / "masks" / f"{bits}-s{self.cfg.seed}"))
            self.study.tell(trial, list(values))
        self.log(f"trial {trial.number} [{pattern(bits)}] acc {summary['acc']:.4f}  "
                 f"{summary['energy_mj']:.5f} mJ  {summary['params']:,} params")

    def constrain(self, trial, energy_mj: float | None) -> None:
        """--max-energy-mj as an Optuna constraint, c = energy_mj - budget (feasible: c <= 0):
        NSGA-II and TPE then prefer masks within the budget, instead of the budget only
        filtering the result."""
        if self.cfg.max_energy_mj is not None and energy_mj is not None:
            with storage_errors(self.url):
                trial.set_constraint("energy_mj", float(energy_mj) - self.cfg.max_energy_mj)

    def redirect(self, trial, bits: str, done, rival, led: Ledger) -> None:
        """A known or claimed mask: record it without training; enqueue the nearest untried one."""
        import optuna

        with storage_errors(self.url):
            if done is not None:
                trial.set_user_attr("status", "repeat")
                trial.set_user_attr("repeat_of", done.number)
                if done.state == led.S.COMPLETE:
                    self.constrain(trial, done.user_attrs.get("energy_mj"))
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

    def beat_period(self) -> float:
        return beat_period(self.cfg.stale_s)

    def heartbeat(self, trial_id: int):
        return heartbeat(self.study._storage, trial_id, self.beat_period())

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
