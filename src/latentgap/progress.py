"""One progress-bar style for every long job (rich), quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


@contextmanager
def progress_bar(total: int, description: str, *, disable: bool | None = None) -> Iterator["_Bar"]:
    """``with progress_bar(n, "encode") as bar: bar.advance(k)``."""
    if disable is None:
        disable = not sys.stderr.isatty()
    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=disable)
    with prog:
        task = prog.add_task(description, total=total)
        yield _Bar(prog, task)


class _Bar:
    def __init__(self, prog: Progress, task) -> None:
        self._prog, self._task = prog, task

    def advance(self, n: int = 1) -> None:
        self._prog.advance(self._task, n)

    def update(self, **kw) -> None:
        self._prog.update(self._task, **kw)
