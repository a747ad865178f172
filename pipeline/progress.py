"""One Rich progress style for every long loop (bar, count, rate, ETA)."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_bar(transient: bool = True) -> Progress:
    """Live only on a terminal: in CI logs and pipes a bar is noise."""
    return Progress(TextColumn("      {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), transient=transient, disable=not sys.stdout.isatty())


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    with progress_bar() as bar:
        yield from bar.track(items, total=total, description=description)
