"""The search: which Fire modules to keep, over all 2^8 = 256 keep masks, in one of two modes
(`--retrain`, as in the ablation):

    recipe     (default) every mask trained as its own network through the recipe: the 256 masks
               build 81 distinct networks, all ranked by successive halving (search/ladder.py).
               The default because it is where pruning helps at full scale: by the recipe Alt-1
               and Head-1 beat the unpruned net by 2.5-2.8 points, cut from it and fine-tuned
               every schedule falls below it (BENCHMARKS.md, Table 3)
    finetune   masks pruned from a trained base SNN and fine-tuned, searched by Optuna's samplers
               (below): minutes per mask instead of a recipe, but it ranks inherited weights

finetune, in full:

    trial      one mask (fire2..fire9 kept = 1 / dropped = 0), pruned from the base SNN (every
               fitting tensor inherited) and fine-tuned exactly like an ablation schedule, in its
               own resumable run folder OUT/masks/BITS-sSEED
    pareto     NSGA-II on (accuracy up, energy_mj down)
    scalar     TPE on J = acc - lambda * energy_mj / base_energy_mj, reported per epoch (energy
               counted on 256 test images until the last epoch) to a median pruner
    seeds      the paper's Table 3 schedules, then the masks keeping the 7, 6, 5 ... most salient
               modules of the base, are tried first (after any failed mask, which is retried)
    budget     --trials N counts the masks trained in the study by all its workers together

Several workers share a study; how they divide the trials: firecut/search/workers.py.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from firecut.ablate import AblateConfig, check_base, train_base
from firecut.config import RecipeConfig, flat_settings, settings_diff
from firecut.errors import FirecutError
from firecut.pruning.masks import ALL_MASKS, bits_of
from firecut.training.recipe import check_data, check_preset, check_recipe
from firecut.io import atomic_write_text
from firecut.pruning.schedules import load_schedules
from firecut.search.storage import check_url, default_url, open_storage, redact, storage_errors


@dataclass
class SearchConfig:
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    trials: int | None = None  # recipe: networks at rung 0 [all]; finetune: masks, all workers [50]
    retrain: str = "recipe"  # recipe | finetune (MODES)
    rungs: int = 3  # recipe: successive-halving rungs, the last the full recipe
    eta: int = 3  # recipe: each rung keeps 1/eta of the one below, at eta times its epochs
    confirm: int = 3  # recipe: the last rung's most accurate networks trained again with seed + 1
    objective: str = "pareto"  # see OBJECTIVES
    lam: float = 0.2  # scalar: accuracy given up per unit of relative energy
    max_energy_mj: float | None = None  # best.pt: the most accurate mask at or under this energy
    base: str | None = None  # a trained unpruned SNN checkpoint; None = train one in OUT
    storage: str | None = None  # an Optuna storage URL; None = sqlite:///OUT/study.db
    study: str = "firecut-search"
    seed: int = 0  # sampler seed and every mask's fine-tuning seed
    population: int = 12  # NSGA-II population (the seeds fill the first generation)
    saliency_masks: int = 3  # seeds: keep the 8-1 .. 8-k most salient modules
    settle_s: float = 1.0  # wait between claiming a mask and checking for a rival claim
    stale_s: float = 600.0  # a RUNNING trial whose heartbeat stood still this long (reader's clock) is dead


# ------------------------------------------------------------------------------ objectives


@dataclass(frozen=True)
class Objective:
    directions: tuple[str, ...]
    make_sampler: Callable[[SearchConfig], Any]
    value: Callable[[dict[str, Any], SearchConfig, float], tuple[float, ...]]  # (metrics, cfg, E_base)
    prunes: bool


def _nsga2(cfg: SearchConfig):
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=cfg.population, seed=cfg.seed)


def _tpe(cfg: SearchConfig):
    import optuna

    return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=10)


OBJECTIVES: dict[str, Objective] = {
    "pareto": Objective(("maximize", "minimize"), _nsga2,
                        lambda m, cfg, e0: (m["acc"], m["energy_mj"]), prunes=False),
    "scalar": Objective(("maximize",), _tpe,
                        lambda m, cfg, e0: (m["acc"] - cfg.lam * m["energy_mj"] / e0,), prunes=True),
}


MODES = ("recipe", "finetune")
FINETUNE_TRIALS = 50  # finetune's --trials when none is given


def check_values(cfg: SearchConfig) -> None:
    """Refuses impossible settings before anything is written or trained."""
    if cfg.retrain not in MODES:
        raise FirecutError(f"unknown --retrain '{cfg.retrain}'; choose one of: {', '.join(MODES)}")
    if cfg.objective not in OBJECTIVES:
        raise FirecutError(f"unknown --objective '{cfg.objective}'; choose one of: {', '.join(OBJECTIVES)}")
    check_preset(cfg.recipe.preset)
    if cfg.trials is not None and cfg.trials < 1:
        raise FirecutError(f"--trials must be >= 1 (got {cfg.trials})")
    if cfg.retrain == "recipe":
        check_ladder(cfg)
    elif (cfg.trials or FINETUNE_TRIALS) > len(ALL_MASKS):
        raise FirecutError(f"--trials {cfg.trials}: only {len(ALL_MASKS)} keep masks exist; "
                           f"use --trials {len(ALL_MASKS)} to try them all")
    if cfg.lam < 0:
        raise FirecutError("--lambda must be >= 0")
    if cfg.max_energy_mj is not None and cfg.max_energy_mj <= 0:
        raise FirecutError("--max-energy-mj must be > 0")
    check_recipe(cfg.recipe, ("--population", cfg.population))
    if cfg.recipe.distill > 0 and cfg.base and cfg.retrain == "finetune":
        raise FirecutError("--distill teaches the base SNN converted from its CNN, and --base gives a "
                           "trained one (trials are pruned from it, not converted); drop --distill")
    check_url(cfg.storage or "sqlite:///study.db")


def check_ladder(cfg: SearchConfig) -> None:
    """recipe mode: no base, the Pareto objective, at least one rung, eta >= 2."""
    if cfg.base:
        raise FirecutError("--base is where --retrain finetune prunes from; --retrain recipe (the default) "
                           "trains every network from scratch: add --retrain finetune, or drop --base")
    if cfg.objective != "pareto":
        raise FirecutError(f"--objective {cfg.objective} is for --retrain finetune; --retrain recipe "
                           "promotes networks on the accuracy-energy front")
    for flag, v, least in (("--rungs", cfg.rungs, 1), ("--eta", cfg.eta, 2), ("--confirm", cfg.confirm, 0)):
        if v < least:
            raise FirecutError(f"{flag} must be >= {least} (got {v})")
    from firecut.search.ladder import ladder_of

    ladder_of(cfg)  # --trials beyond the space's size


def _ablate_config(cfg: SearchConfig) -> AblateConfig:
    return AblateConfig(cfg.recipe, base=cfg.base, seeds=1)


def signature(cfg: SearchConfig, base: str | None) -> dict[str, Any]:
    """What every worker of one study must share: the base's bytes and the training settings
    (base None: the settings only, checked before a base exists)."""
    from firecut.data import dataset_name

    keep = ("preset", "epochs", "finetune_epochs", "timesteps", "batch_size", "train_subset",
            "test_subset", "width", "objective", "seed")
    sig = {k: v for k, v in flat_settings(cfg).items() if k in keep}
    r = cfg.recipe
    if cfg.objective == "scalar":
        sig["lam"] = cfg.lam
    if cfg.retrain == "recipe":  # finetune studies predate the modes and lack these keys
        sig.update(retrain="recipe", rungs=cfg.rungs, eta=cfg.eta, confirm=cfg.confirm, trials=cfg.trials)
    if r.distill > 0:
        sig["distill"] = r.distill
    if r.target != "any":
        sig["target"] = r.target
    if (r.energy_preset, r.e_ac_pj, r.e_mac_pj) != ("45nm-fp32", None, None):  # older studies lack it
        sig["energy"] = [r.energy_preset, r.e_ac_pj, r.e_mac_pj]
    if r.energy_model != "paper":
        sig["energy_model"] = r.energy_model
    if cfg.max_energy_mj is not None:  # it steers the samplers: every worker must share it
        sig["max_energy_mj"] = cfg.max_energy_mj
    if base is not None:
        sig["base_sha256"] = hashlib.sha256(Path(base).read_bytes()).hexdigest()
    return {"dataset": dataset_name(cfg.recipe.dataset), **sig}


def refuse_other_settings(cfg: SearchConfig, url: str, old: dict[str, Any], sig: dict[str, Any],
                          ignore: tuple[str, ...] = ()) -> None:
    diff = settings_diff(old, sig, ignore)
    if diff:
        raise FirecutError(f"study '{cfg.study}' in {redact(url)} was searched with other settings "
                           f"({', '.join(diff)}); give the same settings (and the same --base "
                           "file on every machine), or another --study")


def check_before_training(cfg: SearchConfig, storage: Any, url: str) -> None:
    """What can fail is checked before the base trains (minutes to hours): the storage answers
    (open_storage connected; a wrong password failed there), a study of this name holds these
    settings, and the dataset loads."""
    with storage_errors(url):
        try:
            study_id = storage.get_study_id_from_name(cfg.study)
        except KeyError:  # a new study
            old = None
        else:
            old = storage.get_study_user_attrs(study_id).get("firecut")
    if old is not None:
        sig = signature(cfg, None)
        refuse_other_settings(cfg, url, old, sig, ignore=("base_sha256",))
    check_data(cfg.recipe)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One process at a time (e.g. training the shared base when workers share OUT); waits."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


# ------------------------------------------------------------------------------ the study


def open_study(cfg: SearchConfig, storage: Any, url: str, sig: dict[str, Any]):
    import optuna

    obj = OBJECTIVES[cfg.objective]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5) if obj.prunes else optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with storage_errors(url):
        try:
            study = optuna.create_study(storage=storage, study_name=cfg.study, load_if_exists=True,
                                        directions=list(obj.directions), sampler=obj.make_sampler(cfg),
                                        pruner=pruner)
        except ValueError as e:
            raise FirecutError(f"study '{cfg.study}' in {redact(url)} cannot be used ({e}); "
                               "use another --study") from None
        old = study.user_attrs.get("firecut")
        if old is None:
            study.set_user_attr("firecut", sig)
        else:
            refuse_other_settings(cfg, url, old, sig)
    return study


def seed_masks(cfg: SearchConfig, base: str, out: Path, log: Callable[[str], None]) -> list[tuple[str, str]]:
    """(bits, source): the paper's schedules, then the base's saliency-ranked top masks."""
    seeds = [(bits_of(s.keep), f"paper:{s.name}") for s in load_schedules("paper.yaml")]
    if cfg.saliency_masks > 0:
        path = out / "saliency.json"
        if path.is_file():
            result = json.loads(path.read_text())
        else:
            from firecut.pruning.saliency import saliency_of_checkpoint

            log("ranking the base's Fire modules by saliency (seeds for the search)")
            r = cfg.recipe
            result = saliency_of_checkpoint(base, r.dataset, r.root, device=r.device, seed=cfg.seed)
            atomic_write_text(path, json.dumps(result, indent=2) + "\n")
        ranked = [r["module"] for r in sorted(result["modules"], key=lambda r: -r["saliency"])]
        for k in range(1, min(cfg.saliency_masks, len(ranked) - 1) + 1):
            seeds.append((bits_of(ranked[:len(ranked) - k]), f"saliency:drop-{k}"))
    unique: dict[str, str] = {}
    for bits, source in seeds:
        unique.setdefault(bits, source)
    return list(unique.items())


# ------------------------------------------------------------------------------ entry point


def prepare_base(cfg: SearchConfig, out: Path, fit: Callable, log: Callable[[str], None]):
    """The base SNN (given, or trained once in OUT under a lock) and its configs."""
    ac = _ablate_config(cfg)
    if cfg.base:
        base = cfg.base
    else:
        with _file_lock(out / ".base.lock"):
            base = train_base(ac, out, fit, log)
    return base, check_base(ac, base)


def base_energy(cfg: SearchConfig, study, url: str, base: str, out: Path,
                log: Callable[[str], None]) -> float:
    """The base's energy per image on the test split (counted once per study)."""
    if "base_energy_mj" in study.user_attrs:
        return float(study.user_attrs["base_energy_mj"])
    summary = out / "base-snn" / "summary.json"
    if not cfg.base and summary.is_file():
        e = json.loads(summary.read_text())["energy_mj"]
    else:
        from firecut.training.loop import evaluate_checkpoint

        log("counting the base's energy on the test split (for the scalar objective)")
        e = evaluate_checkpoint(base, cfg.recipe.dataset, cfg.recipe.root,
                                test_subset=cfg.recipe.test_subset, device=cfg.recipe.device)["energy_mj"]
    with storage_errors(url):
        study.set_user_attr("base_energy_mj", e)
    return float(e)


def run_search(cfg: SearchConfig, out: str | Path, fit: Callable | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or joins, or resumes) the study: recipe mode until every rung is complete, finetune
    until it holds cfg.trials trained masks; writes the reports and best.pt; returns the report
    (rows, front, best, reason)."""
    from firecut.training.loop import fit as default_fit

    fit = fit or default_fit
    out = Path(out)
    check_values(cfg)
    url = cfg.storage or default_url(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url)
    check_before_training(cfg, storage, url)
    return (search_networks if cfg.retrain == "recipe" else search_masks)(cfg, out, url, storage, fit, log)


def search_networks(cfg: SearchConfig, out: Path, url: str, storage: Any, fit: Callable,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """recipe mode: the ladder over every distinct network (search/ladder.py)."""
    from firecut.search.ladder import LadderWorker, ladder_of
    from firecut.search.ladder_report import write_ladder_reports

    networks, rungs = ladder_of(cfg)
    study = open_study(cfg, storage, url, signature(cfg, None))
    log(f"study '{cfg.study}' in {redact(url)}: {len(networks)} distinct networks; "
        + "; ".join(r.label() for r in rungs))
    worker = LadderWorker(cfg, study, url, out, rungs, networks, fit, log)
    worker.run()
    report = write_ladder_reports(cfg, worker.read(), url, out)
    report["trained_here"] = worker.trained
    return report


def search_masks(cfg: SearchConfig, out: Path, url: str, storage: Any, fit: Callable,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """finetune mode: masks pruned from the base, sampled by Optuna (search/workers.py)."""
    from dataclasses import replace

    cfg = replace(cfg, trials=cfg.trials or FINETUNE_TRIALS)
    from firecut.search.report import write_reports
    from firecut.search.workers import Worker

    base, base_cfgs = prepare_base(cfg, out, fit, log)
    study = open_study(cfg, storage, url, signature(cfg, base))
    with _file_lock(out / ".seed.lock"), storage_errors(url):
        if "seeds" not in study.user_attrs:
            seeds = seed_masks(cfg, base, out, log)
            study.set_user_attr("seeds", seeds)
            log(f"study '{cfg.study}' in {redact(url)}: {len(seeds)} seed masks go first (the "
                "paper's schedules and the saliency ranking's top masks)")
    e0 = base_energy(cfg, study, url, base, out, log) if cfg.objective == "scalar" else None
    worker = Worker(cfg, OBJECTIVES[cfg.objective], _ablate_config(cfg), study, url, out, base,
                    base_cfgs, e0, fit, log)
    worker.run()
    report = write_reports(cfg, study, url, out)
    report["trained_here"] = worker.trained
    return report
