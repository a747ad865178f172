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


class EpochConsole:
    """The training loop's screen: an epochs bar and a batches bar with loss and ETA (terminal only), and one
    summary line per epoch (always, so logs keep them); silent on DDP ranks > 0."""

    def __init__(self, enabled: bool, show_bar: bool, epochs: int, first_epoch: int):
        self.enabled, self.progress = enabled, None
        if enabled and show_bar and sys.stdout.isatty():
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.epochs_task = self.progress.add_task("epochs ", total=epochs, completed=first_epoch - 1, info="")
            self.batches_task = self.progress.add_task("batches", total=1, info="")

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        if self.progress:
            self.progress.reset(self.batches_task, total=n_batches, description=f"epoch {epoch}", info="")

    def batch_done(self, loss: float) -> None:
        if self.progress:
            self.progress.update(self.batches_task, advance=1, info=f"loss {loss:.3f}")

    def line(self, text: str, epoch_done: bool = False) -> None:
        if not self.enabled:
            return
        if self.progress:
            self.progress.console.print(text, markup=False, highlight=False)
            if epoch_done:
                self.progress.advance(self.epochs_task)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
