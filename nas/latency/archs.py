"""Reading lists of architectures (for ``nas profile --archs`` and the benchmarks).

Example:
    >>> archs = read_archs("search_spaces/reference/deit_tiny.yaml")  # doctest: +SKIP
"""
from __future__ import annotations

import os

import yaml

from nas.arch import Arch
from nas.errors import ArchError
from nas.io import read_yaml

__all__ = ["read_archs"]


def read_archs(path: str) -> list[Arch]:
    """Archs from a file: one arch, a list, YAML documents, ``{arch: ...}`` wrappers, JSON lines."""
    if not os.path.isfile(path):
        raise ArchError(f"arch list not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        if lines and all(ln.lstrip().startswith("{") for ln in lines) and len(lines) > 1:
            docs = [yaml.safe_load(ln) for ln in lines]
        else:
            docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        read_yaml(path, what="arch list")  # raises a located error
        raise ArchError(f"{path}: malformed YAML/JSON: {e}") from None
    items = [x for d in docs if d is not None for x in (d if isinstance(d, list) else [d])]
    if not items:
        raise ArchError(f"{path}: no architectures in the file")
    return [Arch.from_dict(x["arch"] if isinstance(x, dict) and "arch" in x and "stages" not in x
                           else x, source=f"{path}[{i}]") for i, x in enumerate(items)]
