"""The progress bar of a training run on stderr (Rich), or plain lines where stderr is no
terminal; `Progress(False)` is silent."""

from __future__ import annotations


class Progress:
    """A rich progress bar on stderr (images/s, loss); plain lines when stderr is no terminal."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal

    def log(self, msg: str) -> None:
        self.console.print(msg, highlight=False)

    def bar(self, description: str, total: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        if not self.enabled:
            return _NoBar()
        p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                     console=self.console, transient=True)
        p.start()
        p.add_task(description, total=total, info="")
        return _Bar(p)


class _Bar:
    shown = True

    def __init__(self, p):
        self.p = p

    def update(self, info: str) -> None:
        self.p.update(self.p.task_ids[0], advance=1, info=info)

    def close(self) -> None:
        self.p.stop()


class _NoBar:
    shown = False

    def update(self, info: str) -> None:
        pass

    def close(self) -> None:
        pass
