"""Tables of evaluated subnets: the training data of the accuracy predictors.

A table is a CSV file with one row per architecture:

* ``arch`` -- the arch as compact JSON (:meth:`nas.arch.Arch.to_json`);
* ``space_fingerprint`` -- fingerprint of the search space the arch belongs to;
* ``acc``, ``loss`` -- validation accuracy (0..1) and loss with inherited weights;
* ``params``, ``macs`` -- complexity of the standalone model (batch size 1);
* ``train_speed``, ``naswot`` (optional, :data:`SIGNALS`) -- signals of the subnet at
  its own initialisation (:mod:`nas.predictors.proxies`; higher is better);
* one column per encoding entry (:func:`nas.encoding.encoding_names`), for other tools.

Beside ``TABLE.csv``, ``TABLE.meta.json`` records the search space definition and how
the table was made (run dir, seed, timings). Only ``arch`` and ``acc`` are required
when reading, so hand-made tables work (then pass the space explicitly). The arch
JSON is the source of truth: encodings are recomputed from it.

Example:
    >>> table = read_table("runs/subnets.csv")  # doctest: +SKIP
    >>> len(table), table.acc.mean()  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, space_contains
from nas.encoding import encode_arch, encoding_names
from nas.errors import ArtifactError, NasError
from nas.io import read_json, write_json, write_text
from nas.predictors.features import space_from_record, space_record
from nas.space import SearchSpace

__all__ = ["ArchTable", "BASE_COLUMNS", "SIGNALS", "read_table", "write_table", "table_meta_path",
           "read_table_meta", "write_table_meta", "table_space"]

BASE_COLUMNS = ("arch", "space_fingerprint", "acc", "loss", "params", "macs")
_REQUIRED = ("arch", "acc")
SIGNALS = ("train_speed", "naswot")  # optional columns scored at each subnet's own init
_OPTIONAL_NUMERIC = ("loss", "params", "macs") + SIGNALS


@dataclass(frozen=True)
class ArchTable:
    """Validated rows of a table; optional columns are ``None`` when absent."""

    archs: tuple[Arch, ...]
    acc: np.ndarray
    loss: np.ndarray | None = None
    params: np.ndarray | None = None
    macs: np.ndarray | None = None
    fingerprint: str | None = None
    source: str = "<memory>"
    train_speed: np.ndarray | None = None
    naswot: np.ndarray | None = None

    @property
    def signals(self) -> dict[str, np.ndarray]:
        """The :data:`SIGNALS` columns this table has, by name."""
        return {n: getattr(self, n) for n in SIGNALS if getattr(self, n) is not None}

    def __len__(self) -> int:
        return len(self.archs)

    def subset(self, idx: Sequence[int] | np.ndarray) -> ArchTable:
        idx = np.asarray(idx, dtype=np.int64)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return ArchTable(tuple(self.archs[i] for i in idx), self.acc[idx], pick(self.loss),
                         pick(self.params), pick(self.macs), self.fingerprint, self.source,
                         train_speed=pick(self.train_speed), naswot=pick(self.naswot))

    def rows(self) -> list[dict[str, Any]]:
        """Rows as dicts (``arch`` as an :class:`Arch`), e.g. to extend and rewrite the table."""
        out = []
        for i, arch in enumerate(self.archs):
            row: dict[str, Any] = {"arch": arch, "acc": float(self.acc[i])}
            for name in _OPTIONAL_NUMERIC:
                col = getattr(self, name)
                if col is not None:
                    row[name] = col[i].item()
            out.append(row)
        return out


# ----------------------------------------------------------------------------- reading

def _records(source: Any) -> tuple[list[str], list[Mapping[str, Any]], str]:
    """(column names, row mappings, description) of a path, DataFrame or list of dicts."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ArtifactError(f"table not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"table {path} is not a UTF-8 CSV file") from None
        if not text.strip():
            raise ArtifactError(f"table {path} is empty (no header, no rows)")
        try:
            reader = csv.DictReader(io.StringIO(text))
            rows = list(reader)
        except csv.Error as e:
            raise ArtifactError(f"table {path} is malformed CSV: {e}") from None
        cols = list(reader.fieldnames or [])
        for i, row in enumerate(rows):
            if None in row or any(v is None for v in row.values()):
                raise ArtifactError(f"table {path}, row {i + 1}: has {len(row) - 1 if None in row else 'fewer'} "
                                    f"cells than the {len(reader.fieldnames or [])} columns; the "
                                    f"file is malformed or truncated")
        return cols, rows, f"table {path}"
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a pandas DataFrame
        return [str(c) for c in source.columns], source.to_dict("records"), "table (DataFrame)"
    if isinstance(source, Sequence) and all(isinstance(r, Mapping) for r in source):
        cols = list(dict.fromkeys(k for r in source for k in r))
        return cols, list(source), "table (rows)"
    raise ArtifactError(f"a table must be a CSV path, a pandas DataFrame or a list of row dicts, "
                        f"got {type(source).__name__}")


def _number(value: Any, what: str, col: str) -> float:
    if isinstance(value, bool):
        raise ArtifactError(f"{what}: {col} {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ArtifactError(f"{what}: {col} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ArtifactError(f"{what}: {col} is {value!r}; expected a finite number")
    return x


def _arch(value: Any, what: str) -> Arch:
    if isinstance(value, Arch):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{what}: arch is not valid JSON: {e}") from None
    try:
        return Arch.from_dict(value, source=what)
    except NasError as e:
        raise ArtifactError(f"{what}: bad arch: {e}") from None


def read_table(source: Any, *, space: SearchSpace | None = None) -> ArchTable:
    """Read and validate a table of evaluated archs.

    Args:
        source: CSV path, pandas DataFrame, list of row dicts, or an :class:`ArchTable`.
        space: when given, every arch must lie in it and the table's fingerprint must match.

    Raises:
        ArtifactError: missing file, no rows, missing columns, non-numeric or out-of-range
            values, archs of another space.
    """
    if isinstance(source, ArchTable):
        if space is not None:
            _check_fingerprint(source.fingerprint, space, source.source)
        return source
    cols, rows, what = _records(source)
    missing = [c for c in _REQUIRED if c not in cols]
    if missing:
        raise ArtifactError(f"{what}: missing column(s) {', '.join(missing)}; a table needs "
                            f"{', '.join(_REQUIRED)} (optional: {', '.join(BASE_COLUMNS[1:])})")
    if not rows:
        raise ArtifactError(f"{what} has no rows")
    fps = {str(r.get("space_fingerprint")) for r in rows} if "space_fingerprint" in cols else set()
    if len(fps) > 1:
        raise ArtifactError(f"{what}: rows of several search spaces ({', '.join(sorted(fps))})")
    fingerprint = fps.pop() if fps else None
    if space is not None:
        _check_fingerprint(fingerprint, space, what)
    archs, acc = [], []
    optional = {c: [] for c in _OPTIONAL_NUMERIC if c in cols}
    for i, row in enumerate(rows):
        where = f"{what}, row {i + 1}"
        arch = _arch(row["arch"], where)
        if space is not None:
            ok, reason = space_contains(space, arch)
            if not ok:
                raise ArtifactError(f"{where}: arch is not in search space {space.name}: {reason}")
        a = _number(row["acc"], where, "acc")
        if not 0.0 <= a <= 1.0:
            raise ArtifactError(f"{where}: acc {a} is outside [0, 1]; store accuracy as a fraction")
        archs.append(arch)
        acc.append(a)
        for c, values in optional.items():
            blank = row[c] is None or (isinstance(row[c], str) and not row[c].strip())
            values.append(None if blank else _number(row[c], where, c))
    # an optional column with blank cells is treated as absent
    arrays = {c: np.asarray(v, dtype=np.float64) for c, v in optional.items() if None not in v}
    return ArchTable(tuple(archs), np.asarray(acc, dtype=np.float64), arrays.get("loss"),
                     arrays.get("params"), arrays.get("macs"),
                     fingerprint or (space.fingerprint if space is not None else None), what,
                     train_speed=arrays.get("train_speed"), naswot=arrays.get("naswot"))


def _check_fingerprint(fingerprint: str | None, space: SearchSpace, what: str) -> None:
    if fingerprint is not None and fingerprint != space.fingerprint:
        raise ArtifactError(f"{what} belongs to search space {fingerprint}, not to "
                            f"{space.name} ({space.fingerprint})")


# ----------------------------------------------------------------------------- writing

def write_table(path: str | Path, rows: Iterable[Mapping[str, Any]], *, space: SearchSpace) -> None:
    """Atomically write ``rows`` (``arch`` as :class:`Arch`, ``acc``, ``loss``, ``params``,
    ``macs``, optionally the :data:`SIGNALS`) as a CSV table of ``space``, with the encoding
    columns."""
    names = encoding_names(space)
    rows = list(rows)
    # signal columns only when some row has them, so that plain tables keep their layout
    optional = [c for c in _OPTIONAL_NUMERIC
                if c in BASE_COLUMNS or any(r.get(c) is not None for r in rows)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(BASE_COLUMNS) + [c for c in optional if c not in BASE_COLUMNS] + names)
    for row in rows:
        arch = row["arch"]
        enc = encode_arch(space, arch)
        writer.writerow([arch.to_json(), space.fingerprint, repr(float(row["acc"]))]
                        + ["" if row.get(c) is None else int(row[c]) if c in ("params", "macs")
                           else repr(float(row[c])) for c in optional]
                        + [repr(float(v)) for v in enc])
    write_text(path, buf.getvalue())


def table_meta_path(path: str | Path) -> Path:
    """``runs/subnets.csv`` -> ``runs/subnets.meta.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def write_table_meta(path: str | Path, space: SearchSpace, info: Mapping[str, Any]) -> None:
    write_json(table_meta_path(path), {"format": "vitnas.subnet_table", "version": 1,
                                       "space": space_record(space), **info})


def read_table_meta(path: str | Path) -> dict[str, Any] | None:
    """The table's metadata, or ``None`` when it has none."""
    meta = table_meta_path(path)
    if not meta.is_file():
        return None
    data = read_json(meta, what="table metadata")
    if not isinstance(data, dict) or data.get("format") != "vitnas.subnet_table":
        raise ArtifactError(f"{meta} is not the metadata of a subnet table")
    return data


def table_space(path: str | Path) -> SearchSpace | None:
    """The search space recorded beside a CSV table, or ``None``."""
    meta = read_table_meta(path)
    if meta is None:
        return None
    return space_from_record(meta.get("space"), str(table_meta_path(path)))
