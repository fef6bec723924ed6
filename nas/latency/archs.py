"""Reading lists of architectures (for ``nas profile --archs`` and the benchmarks).

Example:
    >>> archs = read_archs("search_spaces/reference/deit_tiny.yaml")  # doctest: +SKIP
"""
from __future__ import annotations

import os

from nas.arch import Arch
from nas.errors import ArchError, ArtifactError
from nas.io import parse_yaml, read_text

__all__ = ["read_archs"]


def read_archs(path: str) -> list[Arch]:
    """Archs from a file: one arch, a list, YAML documents, ``{arch: ...}`` wrappers, JSON lines."""
    if not os.path.isfile(path):
        raise ArchError(f"arch list not found: {path}")
    try:
        text = read_text(path, what="arch list")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines and all(ln.lstrip().startswith("{") for ln in lines) and len(lines) > 1:
            docs = [parse_yaml(ln, source=f"{path} line {i + 1}") for i, ln in enumerate(lines)]
        else:
            docs = parse_yaml(text, source=path, all_documents=True)
    except ArtifactError as e:
        raise ArchError(str(e)) from None
    items = [x for d in docs if d is not None for x in (d if isinstance(d, list) else [d])]
    if not items:
        raise ArchError(f"{path}: no architectures in the file")
    return [Arch.from_dict(x["arch"] if isinstance(x, dict) and "arch" in x and "stages" not in x
                           else x, source=f"{path}[{i}]") for i, x in enumerate(items)]
