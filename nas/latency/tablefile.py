"""The latency table file: its JSON layout, format version, validation and writer.

A table file belongs to one search space (its fingerprint and canonical spec are
stored) and one measurement setting (device fingerprint). Layout (JSON, written
atomically by :meth:`nas.latency.LatencyTable.save`)::

    {"format": "vitnas.latency-table", "version": 1, "created": ..., "updated": ...,
     "space": {"name", "fingerprint", "spec"}, "device": {...}, "timing": {...},
     "scope": {"kind": "space" | "archs", "signatures": N}, "complete": bool,
     "entries": [{"kind": "block", "ms": 0.12, "median": 0.12, "min": 0.11, "iqr": 0.004,
                  "ops": 31, "params": {...}, "slow": true (only if never timed at
                  full speed, see nas.latency.slowphase)}, ...],
     "calibration": {"features": [...], "coef": [...], "samples": [{"ms", ..., "arch", "slow": true
                                                                (as entries), "by_round":
                                                                {"min": [ms per round], ...}}],
                     "fit": {"n", "fit_mape", "loo_mape", "raw_mape", ...}, "seed": 0,
                     "residual": {"amplitude", "length_scale", "noise", "n"} or null}}

:func:`validate_table` checks a loaded document field by field and names the first
problem (an :class:`~nas.errors.ArtifactError`); :func:`dumps_table` writes one entry
or calibration sample per line, so tables diff well.

Example:
    >>> entries = [{"kind": "head", "ms": 0.1}, {"kind": "stem", "ms": 0.2}]
    >>> print(dumps_table({"format": FORMAT, "entries": entries}, width=40), end="")
    {
      "format": "vitnas.latency-table",
      "entries": [
        {"kind": "head", "ms": 0.1},
        {"kind": "stem", "ms": 0.2}
      ]
    }
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

import nas.latency.calibrate as cal
from nas.errors import ArtifactError, NasError
from nas.latency.signatures import KINDS, Signature
from nas.space import SearchSpace, parse_space

__all__ = ["FORMAT", "VERSION", "validate_table", "dumps_table", "now"]

FORMAT = "vitnas.latency-table"
VERSION = 1


def now() -> str:
    """The current UTC time as the table's ``created``/``updated`` stamps write it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _bad(source: str, what: str) -> ArtifactError:
    return ArtifactError(f"latency table {source} is not a valid table: {what}")


def _check_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ms_problem(ms: Any) -> str:
    """What is wrong with a stored latency ("" when nothing)."""
    if ms is None:
        return "missing"
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return "not a number"
    if not math.isfinite(ms):
        return "not finite"
    return "negative" if ms < 0 else ""


def validate_table(data: Any, source: str) -> tuple[SearchSpace, dict[str, dict[str, Any]]]:
    """Check a loaded table document; return its space (rebuilt from the stored spec) and
    its entries by signature key.

    Raises:
        ArtifactError: naming ``source`` and the first field that is wrong.
    """
    if not isinstance(data, dict):
        raise _bad(source, f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise _bad(source, f"format is {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("version") != VERSION:
        raise _bad(source, f"version {data.get('version')!r} is not supported (this code reads "
                           f"version {VERSION})")
    for key, typ in (("space", dict), ("device", dict), ("timing", dict), ("entries", list),
                     ("scope", dict), ("complete", bool)):
        if not isinstance(data.get(key), typ):
            raise _bad(source, f"missing or malformed {key!r}")
    space = _stored_space(data["space"], source)
    for key in ("type", "name", "dtype", "batch_size", "threads"):
        if key not in data["device"]:
            raise _bad(source, f"device lacks {key!r}")
    records = _entry_records(data["entries"], source)
    _check_calibration(data.get("calibration"), source)
    return space, records


def _stored_space(sp: dict[str, Any], source: str) -> SearchSpace:
    if not isinstance(sp.get("fingerprint"), str) or not isinstance(sp.get("spec"), dict):
        raise _bad(source, "space needs a fingerprint and a spec")
    try:
        space = parse_space(sp["spec"], source=f"{source} (stored space)")
    except NasError as e:
        raise _bad(source, f"stored space: {e}") from None
    if space.fingerprint != sp["fingerprint"]:
        raise _bad(source, f"stored space hashes to {space.fingerprint}, not to the recorded "
                           f"{sp['fingerprint']} (edited or corrupted)")
    return space


def _entry_records(entries: list[Any], source: str) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(entries):
        if not (isinstance(r, dict) and r.get("kind") in KINDS and isinstance(r.get("params"), dict)):
            raise _bad(source, f"entries[{i}] needs a kind ({', '.join(KINDS)}) and params")
        problem = _ms_problem(r.get("ms"))
        if problem:
            raise _bad(source, f"entries[{i}].ms is {problem} ({str(r.get('ms'))[:40]}); a "
                               "latency is a non-negative number of milliseconds")
        if not (isinstance(r.get("ops", 0), int) and not isinstance(r.get("ops", 0), bool)
                and r.get("ops", 0) >= 0):
            raise _bad(source, f"entries[{i}].ops must be a non-negative integer, got "
                               f"{str(r.get('ops'))[:40]}")
        if not isinstance(r.get("slow", False), bool):
            raise _bad(source, f"entries[{i}].slow must be true or false, got "
                               f"{str(r.get('slow'))[:40]}")
        try:
            records[Signature.make(r["kind"], **r["params"]).key] = r
        except (TypeError, ValueError) as e:
            raise _bad(source, f"entries[{i}].params: {str(e)[:120]}") from None
    return records


def _check_calibration(c: Any, source: str) -> None:
    if c is None:
        return
    if not isinstance(c, dict) or not isinstance(c.get("samples"), list):
        raise _bad(source, "calibration needs a list of samples")
    for i, sample in enumerate(c["samples"]):
        if isinstance(sample, dict) and not isinstance(sample.get("slow", False), bool):
            raise _bad(source, f"calibration.samples[{i}].slow must be true or false, got "
                               f"{str(sample.get('slow'))[:40]}")
        rounds = sample.get("by_round", {}) if isinstance(sample, dict) else {}
        if not (isinstance(rounds, dict) and all(
                k in ("median", "min") and isinstance(v, list) and v
                and all(_check_number(x) for x in v) for k, v in rounds.items())):
            raise _bad(source, f"calibration.samples[{i}].by_round must map median/min to "
                               f"non-empty lists of numbers")
    feats, coef = c.get("features"), c.get("coef")
    if feats is not None:
        if not (isinstance(feats, list) and set(feats) <= set(cal.FEATURES)
                and isinstance(coef, list) and len(coef) == len(feats)
                and all(_check_number(x) for x in coef)):
            raise _bad(source, f"calibration features/coef malformed (features must come "
                               f"from {', '.join(cal.FEATURES)}, one coefficient each)")
    res = c.get("residual")
    if res is not None and not (isinstance(res, dict) and all(
            _check_number(res.get(k)) and res[k] > 0 for k in ("amplitude", "length_scale", "noise"))):
        raise _bad(source, "calibration residual malformed (needs positive amplitude, "
                           "length_scale and noise)")


def dumps_table(data: dict[str, Any], *, width: int = 100) -> str:
    """The table document as indented JSON text (with a final newline): values that fit in
    ``width`` stay on one line, and so does every table entry and calibration sample."""
    return _pretty(data, width=width) + "\n"


def _pretty(obj: Any, indent: int = 0, width: int = 100, flat_items: bool = False) -> str:
    """Indented JSON: values that fit in ``width`` stay on one line, and so does every item
    of the lists named in ``_FLAT_ITEMS`` (table entries, calibration samples)."""
    text = json.dumps(obj, separators=(", ", ": "))
    if not isinstance(obj, (dict, list)) or not obj or indent + len(text) <= width:
        return text
    pad = " " * (indent + 2)
    if isinstance(obj, dict):
        body = [f"{pad}{json.dumps(k)}: {_pretty(v, indent + 2, width, k in _FLAT_ITEMS)}"
                for k, v in obj.items()]
        return "{\n" + ",\n".join(body) + "\n" + " " * indent + "}"
    body = [pad + (json.dumps(v, separators=(", ", ": ")) if flat_items
                   else _pretty(v, indent + 2, width)) for v in obj]
    return "[\n" + ",\n".join(body) + "\n" + " " * indent + "]"


_FLAT_ITEMS = ("entries", "samples")
