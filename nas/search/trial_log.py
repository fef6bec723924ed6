"""The trial log: an append-only JSON-lines file, the source of truth of a search.

One line per evaluated arch, appended (and fsynced) by the driver when its Ray trial
completes::

    {"trial": 0, "attempt": 0, "arch": {...}, "acc": 0.91, "latency_ms": 0.8,
     "params": 41210, "feasible": true, "meta": {"op": "mutation", "tries": 1}}

A resumed search replays the log into a fresh searcher; archs whose trial had not
completed when the driver died are not in it and are proposed again, so no finished
trial is lost or counted twice. A line cut short by a kill is dropped on reading.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nas.errors import ArtifactError
from nas.io import write_text

__all__ = ["TrialLog"]


class TrialLog:
    """Append-only log of evaluated archs at ``path`` (``trials.jsonl``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """All complete records; a truncated last line (killed mid-write) is removed."""
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        tail = lines.pop()  # "" when the file ends with a newline
        records = []
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ArtifactError(f"trial log {self.path} is corrupted at line {i + 1}") from None
            if not isinstance(rec, dict) or rec.get("trial") != len(records):
                raise ArtifactError(f"trial log {self.path}: line {i + 1} is not trial "
                                    f"{len(records)}; the log is corrupted")
            records.append(rec)
        if tail:
            write_text(self.path, "".join(line + "\n" for line in lines))
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records durably (one ``write`` + ``fsync``)."""
        blob = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not blob:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
