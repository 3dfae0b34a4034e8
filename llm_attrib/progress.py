"""Progress of long steps on stderr: a tqdm bar with a total on a terminal, otherwise log lines such as
``influence-ekfac scores 1/1: 120/480 batches (25%), 12 s`` at most every `LOG_EVERY_S` seconds and one at the
end (a step quicker than that prints nothing), so that a job's log shows it is alive and how far it got."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

LOG_EVERY_S = 10.0


class Progress:
    """Counts the work of one step (`update`) and shows it; use as a context manager, which `close`\\ s it when
    the step ends without an error. ``total`` (optional) gives the percentage; ``enabled=False`` shows nothing."""

    def __init__(self, description: str, total: int | None = None, enabled: bool = True, unit: str = "batches"):
        self.description, self.total, self.unit = description, total, unit
        self.done = 0
        self.start = self.last_line = time.monotonic()
        self.logged_done: int | None = None  # the count the last line showed
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (now := time.monotonic()) - self.last_line >= LOG_EVERY_S:
            self._log(now)

    def close(self) -> None:
        """End the bar, or print the last count if a line was printed or the step took `LOG_EVERY_S` or longer."""
        if self.bar is not None:
            self.bar.close()
            return
        now = time.monotonic()
        shown = self.logged_done is not None or now - self.start >= LOG_EVERY_S
        if self.enabled and shown and self.logged_done != self.done:
            self._log(now)

    def _log(self, now: float) -> None:
        count = f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)" if self.total else (
            f"{self.done} {self.unit}")
        print(f"{self.description}: {count}, {now - self.start:.0f} s", file=sys.stderr, flush=True)
        self.last_line, self.logged_done = now, self.done

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        elif self.bar is not None:
            self.bar.close()


def progress(iterable: Iterable[T], description: str, total: int | None = None, enabled: bool = True,
             unit: str = "batches") -> Iterator[T]:
    """The items of ``iterable``, counted as one step's progress (see `Progress`); ``total`` defaults to its length
    where it has one."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(description, total, enabled, unit) as counter:
        for item in iterable:
            yield item
            counter.update()
