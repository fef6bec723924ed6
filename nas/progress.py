"""Progress that suits where it goes: a tqdm bar on a terminal, whole lines in a log.

Redrawn bars in a log file (CI, cluster jobs, ``nohup``) become one endless line of
carriage returns; :func:`progress` gives a plain line every ``every`` percent instead.

Example:
    >>> bar = progress(4, "profile", unit="sig", stream=io.StringIO())
    >>> bar.update(2); bar.update(2); bar.close()
"""
from __future__ import annotations

import io  # noqa: F401  (the example)
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["progress", "LogProgress"]


class LogProgress:
    """Whole progress lines for logs: one each time another ``every`` percent is done."""

    def __init__(self, total: int, desc: str, *, unit: str = "it", every: float = 10.0,
                 stream: TextIO | None = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.step = max(1, int(self.total * every / 100)) if self.total else 0
        self.n, self._next, self._t0 = 0, self.step, time.monotonic()
        self.stream = stream

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.step and self.n >= self._next:
            while self._next <= self.n:
                self._next += self.step
            stream = self.stream or sys.stderr
            print(f"{self.desc}: {self.n}/{self.total} {self.unit} "
                  f"({100 * self.n / self.total:.0f}%, {time.monotonic() - self._t0:.0f}s)",
                  file=stream, flush=True)

    def close(self) -> None:
        pass


def progress(total: int, desc: str, *, unit: str = "it", enabled: bool = True,
             stream: TextIO | None = None) -> Any:
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`LogProgress`;
    a disabled tqdm bar (no output) when not ``enabled`` or there is nothing to do."""
    out = stream or sys.stderr
    if not enabled or not total:
        return tqdm(total=total, disable=True)
    if hasattr(out, "isatty") and out.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=out)
    return LogProgress(total, desc, unit=unit, stream=out)
