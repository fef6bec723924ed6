"""CPU counting and torch thread settings, one helper for every command.

Example:
    >>> with num_threads(1):  # doctest: +SKIP
    ...     model(x)
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["usable_cpus", "num_threads"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cgroups), else the
    machine's count.

    Example:
        >>> usable_cpus() >= 1
        True
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` (``None``: unchanged), restoring the
    previous value afterwards, also on errors."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
