"""Mask search: which Fire modules to keep, over all 2^8 keep masks, with Optuna.

    run.py       settings, objectives (NSGA-II on accuracy and energy, or TPE on a scalar), seed
                 masks, the study, and the entry point `run_search`
    workers.py   how the workers of one study divide its trials: claims, repeats, the budget,
                 heartbeats and dead workers
    storage.py   a --storage URL -> an Optuna storage (SQLite, PostgreSQL, MySQL, journal), with
                 passwords kept out of messages and files
    report.py    trials.csv, pareto.md, pareto.png, the front's knee, best.pt
"""
