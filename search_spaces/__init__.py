"""The shipped search spaces (``*.yaml``) and reference architectures (``reference/``).

Installed as package data of ``nas.search_spaces``, so a wheel carries them; code finds
them with :func:`shipped_dir` (``importlib.resources``), never by a path relative to
the source tree.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["shipped_dir"]


def shipped_dir() -> Path:
    """The folder holding the shipped space files (and ``reference/``)."""
    return Path(str(files(__name__)))
