"""Where a recipe-mode search stands while it runs: its reports, written from what has finished.

`firecut search` writes pareto.md and networks.csv when every rung is complete (days at full
scale). This reads the study a search runs against (read only: it trains nothing and claims
nothing), rebuilds the same ladder from the settings the study pinned, and writes networks.csv,
pareto.md and pareto.png into DEST from the finished networks (best.pt only once the last rung has
finished ones). Then `benchmarks/search_tau.py DEST ...` ranks its rungs.

    python benchmarks/search_status.py runs/search-full benchmarks/results/search-full --save-study
    python benchmarks/search_status.py runs/search-full DEST --storage postgresql://... --study NAME
"""

from __future__ import annotations

import argparse
from pathlib import Path

from firecut.config import RecipeConfig
from firecut.search.ladder import Ladder, ladder_of
from firecut.search.ladder_report import write_ladder_reports
from firecut.search.run import SearchConfig
from firecut.search.storage import default_url, open_storage


def save_study(url: str, dest: Path, name: str) -> None:
    import sqlite3

    import optuna
    from optuna.trial import TrialState

    if not url.startswith("sqlite:///"):
        raise SystemExit("--save-study copies SQLite studies only")
    src, dst = sqlite3.connect(url[len("sqlite:///"):]), sqlite3.connect(dest)
    src.backup(dst)  # a consistent copy while a worker writes
    dst.close(), src.close()
    storage = optuna.storages.RDBStorage(f"sqlite:///{dest}")
    for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the search's --out (its study.db, unless --storage)")
    ap.add_argument("dest", type=Path, help="folder for the reports")
    ap.add_argument("--storage", help="the search's --storage [default: sqlite:///OUT/study.db]")
    ap.add_argument("--study", default="firecut-search")
    ap.add_argument("--save-study", action="store_true",
                    help="also copy a SQLite study to DEST/study.db, its running trials failed as "
                         "interrupted (their run folders are not copied), so that a search resumed "
                         "from the copy retries them at once")
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = args.storage or default_url(args.out)
    study = optuna.load_study(study_name=args.study, storage=open_storage(url))
    sig = study.user_attrs["firecut"]
    if sig.get("retrain") != "recipe":
        raise SystemExit(f"study '{args.study}' is not a recipe-mode search")
    recipe = RecipeConfig(dataset=sig["dataset"], preset=sig["preset"], epochs=sig["epochs"],
                          finetune_epochs=sig["finetune_epochs"], timesteps=sig["timesteps"],
                          width=sig["width"], target=sig.get("target", "any"))
    cfg = SearchConfig(recipe, trials=sig["trials"], rungs=sig["rungs"], eta=sig["eta"],
                       confirm=sig["confirm"], seed=sig["seed"], study=args.study)
    networks, rungs = ladder_of(cfg)
    args.dest.mkdir(parents=True, exist_ok=True)
    lad = Ladder(rungs, networks, study.get_trials(deepcopy=False), cfg.stale_s)
    report = write_ladder_reports(cfg, lad, url, args.dest)
    (args.dest / "best.pt").unlink(missing_ok=True)  # a checkpoint does not belong in a record
    if args.save_study:
        save_study(url, args.dest / "study.db", args.study)
    print(f"{len(report['rows'])} of {len(networks)} networks judged; wrote {args.dest}/networks.csv, "
          "pareto.md")


if __name__ == "__main__":
    main()
