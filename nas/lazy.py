"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package that re-exports names of its submodules imports each submodule only when
one of its names is first used, so light submodules (settings, configs) load without
the heavy ones (torch) that their siblings need.

Example:
    >>> __getattr__, __dir__ = lazy_exports("nas.latency", {"LatencyTable": "table"},
    ...                                     ["LatencyTable"], {})  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str], public: Iterable[str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps a public
    name to the submodule defining it; a resolved name is stored in ``namespace`` (the
    package's ``globals()``) so later lookups skip the function."""
    public = list(public)

    def __getattr__(name: str) -> Any:  # noqa: N807
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*namespace, *public})

    return __getattr__, __dir__
