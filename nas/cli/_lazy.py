"""Sub-command functions that import their implementation only when the command runs.

The command modules of :mod:`nas.cli` hold argument definitions only; the work of each
sub-command lives in a private module beside it (``nas/cli/_<group>.py``), which may
import torch, Ray and the rest at module level. ``--help`` and argument errors never
load them.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

__all__ = ["lazy"]


def lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """The sub-command function ``"module:function"``, imported when it is first called.

    Example:
        >>> show = lazy("nas.cli._space:show")
        >>> show.__qualname__
        'nas.cli._space:show'
    """
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"lazy target must be 'module:function', got {target!r}")

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    run.__name__, run.__qualname__ = name, target
    return run
