"""Reading a finished search's run directory, and appending to the logs kept beside it.

``nas rerank`` and ``nas verify`` both start from what ``nas search`` left in its run
directory (``config.json``, ``trials.jsonl``) and keep their own append-only JSON-lines
log there, so an interrupted run resumes.

Example:
    >>> config, space, records = read_search(Path("runs/search"))  # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.errors import ArtifactError
from nas.io import read_json, write_text
from nas.search.config import SearchConfig
from nas.search.trial_log import TrialLog
from nas.space import SearchSpace, load_space

__all__ = ["read_search", "append_line"]


def read_search(search_dir: Path) -> tuple[SearchConfig, SearchSpace, list[dict[str, Any]]]:
    """The search's config, space and finished trials; :class:`ArtifactError` when
    ``search_dir`` is not a search run directory or holds no finished trial."""
    path = search_dir / "config.json"
    if not path.is_file():
        raise ArtifactError(f"{search_dir} is not a search run dir (no config.json)")
    saved = read_json(path, what="search config")
    if not isinstance(saved, dict) or "config" not in saved:
        raise ArtifactError(f"{path} is not a search config")
    config = SearchConfig.from_dict(saved["config"], source=str(path))
    records = TrialLog(search_dir / "trials.jsonl").read()
    if not records:
        raise ArtifactError(f"{search_dir} holds no finished trials; run the search first")
    return config, load_space(config.space), records


def append_line(path: Path, rec: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` atomically (a line cut short by a kill is dropped)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    write_text(path, text + json.dumps(rec, separators=(",", ":")) + "\n")
