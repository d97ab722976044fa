"""The `firecut` command line, one module per command group; `app.py` assembles them.

    app.py     the Typer app, the commands in help order, `main` (errors as one line)
    common.py  what the commands share: device, Ctrl-C, JSON output, defaults in help texts, the
               recipe option bundle
    progress.py  event lines and the Rich bar, given to fit as its hooks
    train.py   train, evaluate, models
    prune.py   ablate, saliency, schedules list | show | validate | generate
    search.py  search
    bench.py   benchmark, report
    export.py  export, predict
"""

from firecut.cli.app import app, main, schedules_app

__all__ = ["app", "main", "schedules_app"]
