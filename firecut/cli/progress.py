"""The progress a command shows on stderr: a line per event (what ran, each epoch's figures) and,
where stderr is a terminal, a Rich bar over each epoch's steps with loss and images/s. The
library reaches it only through fit's hooks (`log`, `on_step`)."""

from __future__ import annotations

import functools
from typing import Callable


class ProgressBar:
    def __init__(self, bar: bool = True):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.show_bar = bar and self.console.is_terminal
        self.live = None

    def log(self, msg: str) -> None:
        self.console.print(msg, highlight=False)

    def on_step(self, epoch: int, step: int, steps: int, info: Callable[[], str]) -> None:
        """fit's step hook: a bar per epoch; the loss read back every 10 steps (it syncs)."""
        if not self.show_bar:
            return
        if step == 0:
            self.close()
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=self.console, transient=True)
            self.live.start()
            self.live.add_task(f"epoch {epoch + 1}", total=steps, info="")
        shown = step % 10 == 0 or step == steps - 1
        self.live.update(self.live.task_ids[0], advance=1, **({"info": info()} if shown else {}))
        if step == steps - 1:
            self.close()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def fit(self) -> Callable:
        """training.loop.fit with this progress as its hooks (for the experiments)."""
        from firecut.training.loop import fit

        return functools.partial(fit, log=self.log, on_step=self.on_step)
