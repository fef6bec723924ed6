"""Time a finished search's picks end to end, and let the latency table learn from them.

A search is drawn to the archs its latency table predicts too fast: they fit the budget
and, being larger than they look, they are more accurate. Errors the table makes at
random (sd ~4% per arch at batch 1) pile up in its picks: a `nas run` report on this
project's VM measured the 5 picks 5-12% slower than predicted. Timing a handful of them
is cheap (a few seconds), so:

1. take the ``top`` distinct archs of the trial log that the table predicts within the
   budget (and whose timing, if any, did not break it), most accurate per the predictor
   first;
2. time those not timed yet end to end, with the table's setting (rounds, speed check
   against the table's reference kernel, as ``nas measure``), beside the 3 calibration
   subnets of the profile nearest them in latency; while those read more than 3% slower
   than at the profile the machine is in a slow phase the table never saw, and all are
   timed again (twice at most, each keeping its fastest; a phase that lasts is kept and
   warned about, ``anchors_ratio`` in the log); add them to a copy of the
   table as calibration samples (``source: verify``) and refit its local correction
   (:mod:`nas.latency.residual`), which moves predictions near a measured arch toward
   what it measured (the linear calibration stays fitted on the samples that stand for
   the whole space). The copy (``table.verified.json`` in the search dir) is rewritten
   atomically after each round, so an interrupted verify resumes from it and later
   searches can start from what it learned; the search's own table is left as it is
   (the search's config holds its checksum). ``verify.jsonl`` logs every timing with
   the prediction made just before it (from the second round on, a prediction for an
   arch the refitted table had not seen; ``again``: a pick timed in an earlier round);
3. again, with the refitted table, up to ``rounds`` times, until the ``top`` candidates
   are all timed; the archs timed in earlier rounds are timed again beside the new ones
   (each keeps its fastest timing: on this project's VM one pick read 1.48 ms in one
   round and 1.28 ms in another run);
4. pick the most accurate arch of the search whose timing fits the budget (if none does,
   the most accurate the table predicts to fit, untimed, and the summary says so); write
   ``verified.csv`` (the final candidates and the pick, most accurate first: trial,
   predicted accuracy, the search's latency, the refitted prediction, the timing) and
   ``best_verified.yaml`` (the pick, read by :func:`nas.arch.load_arch`, e.g. ``nas
   export --arch``).

The search's own ``best.yaml``, trial log and table are left as they are.

Example:
    >>> result = verify("runs/search", top=5)  # doctest: +SKIP
    >>> result.best["trial"], result.best["measured_ms"]  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, space_contains
from nas.errors import ArtifactError, NasError
from nas.io import write_text, write_yaml
from nas.latency.anchors import nearest_anchors, shift_warning, time_with_anchors
from nas.search.rundir import append_line, read_search

__all__ = ["verify", "VerifyResult", "VERIFIED_CSV", "VERIFIED_TABLE", "VERIFY_LOG",
           "BEST_VERIFIED"]

VERIFIED_CSV = "verified.csv"
VERIFIED_TABLE = "table.verified.json"  # the search's table, refitted on the timed picks
VERIFY_LOG = "verify.jsonl"  # every timing: the prediction just before it, and the measurement
BEST_VERIFIED = "best_verified.yaml"
COLUMNS = ("rank", "trial", "acc", "search_ms", "predicted_ms", "measured_ms")

Measure = Callable[[Sequence[Arch]], list[float]]


@dataclass
class VerifyResult:
    """``rows``: the final candidates, most accurate first; ``best``: the pick (a row);
    ``measured``: archs timed by this call; ``summary``: what ``nas verify`` prints."""

    rows: list[dict[str, Any]]
    best: dict[str, Any]
    measured: int
    summary: str


def _distinct(space, records: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], Arch]]:
    """Every distinct arch of the log in ``space``, most accurate first (earlier trial on ties)."""
    out, seen = [], set()
    for r in sorted(records, key=lambda r: (-r["acc"], r["trial"])):
        arch = Arch.from_dict(r["arch"])
        if arch not in seen and space_contains(space, arch)[0]:
            seen.add(arch)
            out.append((r, arch))
    return out


def _timed(table: Any) -> tuple[dict[Arch, float], list[Arch]]:
    """ms of every arch the table holds a calibration timing of, and those ``nas verify`` timed."""
    archs, samples = table.calibration_archs(), table.calibration["samples"]
    return ({a: float(s["ms"]) for a, s in zip(archs, samples)},
            [a for a, s in zip(archs, samples) if s.get("source") == "verify"])


def _candidates(archs: Sequence[Arch], pred: np.ndarray, timed: dict[Arch, float],
                budget: float, top: int) -> list[int]:
    """Indices of the ``top`` most accurate archs predicted within ``budget`` (``archs`` is
    most accurate first), leaving out those whose timing broke it."""
    return [i for i, a in enumerate(archs)
            if pred[i] <= budget and timed.get(a, 0.0) <= budget][:top]


def table_measurer(table: Any, space: Any, say: Callable[[str], None]) -> Measure:
    """Ground truth with ``table``'s setting and speed check (what ``nas measure`` does);
    refuses a table profiled on another device or software stack than this machine's (its
    timings would mix two machines)."""
    from nas.latency.measure import measure_archs_checked
    from nas.latency.quiet import quiet_timing
    from nas.latency.speedprobe import speed_verdict, table_reference

    diff = table.diff_from_here()
    if diff:
        raise ArtifactError(f"latency table {table.source} was profiled on another machine or "
                            f"software ({'; '.join(diff)}; table vs here); run nas verify where "
                            "it was profiled")
    kw = table.measure_kwargs()
    reference = table_reference(table.scope, kw["batch_size"])

    def measure(archs: Sequence[Arch]) -> list[float]:
        (times, speed), busy = quiet_timing(
            lambda: measure_archs_checked(archs, space, reference_ms=reference, **kw),
            threads=kw["threads"], attempts=2, max_wait_s=10.0)
        if busy:
            say(f"verify: warning: the machine was busy while timing ({busy})")
        slow = speed_verdict(speed)
        if slow:
            say(f"verify: warning: {slow}")
        return list(times)

    return measure


def verify(search_dir: str | Path, *, table: str | Path | None = None,
           out: str | Path | None = None, top: int = 5, rounds: int = 3,
           echo: Callable[[str], None] | None = print,
           measure: Measure | None = None) -> VerifyResult:
    """Time the search's ``top`` candidates and refit a copy of its table, up to ``rounds``
    times; see the module doc. ``table``: the table to start from (default: the
    search's); ``out``: where the refitted table goes (default ``SEARCH_DIR/``
    :data:`VERIFIED_TABLE`; when it exists, verify resumes from it). ``measure``: ms of a
    list of archs (default: :func:`table_measurer`; tests)."""
    from nas.latency import LatencyTable

    for name, value in (("top", top), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NasError(f"{name} must be an integer >= 1, got {value!r}")
    say = echo or (lambda line: None)
    search_dir = Path(search_dir)
    config, space, records = read_search(search_dir)
    start = table if table is not None else config.table
    if start is None:
        raise NasError(f"the search in {search_dir} used no latency table; pass --table")
    path = Path(out) if out is not None else search_dir / VERIFIED_TABLE
    if path.exists() and Path(start).resolve() == path.resolve():
        raise NasError(f"--out {path} is the table verify starts from; give another file")
    tbl = LatencyTable.load(path if path.is_file() else start, space=space)
    if not tbl.calibration or not tbl.calibration.get("features"):
        raise ArtifactError(f"latency table {start} is not calibrated (profile it with "
                            "--calibrate > 0): its picks cannot be corrected")
    budget = config.budget_ms
    pool = _distinct(space, records)
    archs = [a for _, a in pool]
    measure = measure or table_measurer(tbl, space, say)
    index = {a: i for i, a in enumerate(archs)}
    n_measured = 0
    for it in range(rounds):
        timed, mine = _timed(tbl)
        pred = tbl.predict(archs)
        cands = _candidates(archs, pred, timed, budget, top)
        todo = [i for i in cands if archs[i] not in timed]
        if not todo:
            break
        # the picks timed before are timed again beside the new ones (each keeps its
        # fastest round): one round of a few models can sit in a slow phase of the machine
        again = [index[a] for a in mine if a in index and index[a] not in todo]
        # beside a few of the table's own calibration subnets: verify's timings become
        # calibration samples, and a slow phase of the VM during them (a `nas run` verify
        # read its picks 8% slower than the report timed them a minute later) would teach
        # the table that phase; while the anchors read it, time again
        anchors = nearest_anchors(tbl, float(np.median(pred[todo])))
        ms, shift = time_with_anchors(measure, [archs[i] for i in todo + again],
                                      [a for a, _ in anchors], [t for _, t in anchors])
        warn = shift_warning(shift, "the picks' timings")
        if warn:
            say(f"verify: warning: {warn}")
        for i, m in zip(todo + again, ms, strict=True):
            tbl.add_calibration_sample(archs[i], m, source="verify")
        n_measured += len(todo)
        tbl.calibrate(tbl.calibration["features"])
        tbl.save(path)
        for k, (i, m) in enumerate(zip(todo + again, ms, strict=True)):
            append_line(search_dir / VERIFY_LOG, {
                "round": it + 1, "trial": pool[i][0]["trial"], "predicted_ms": float(pred[i]),
                "measured_ms": float(m), "again": k >= len(todo),
                "anchors_ratio": round(shift, 4), "arch": archs[i].to_json()})
            if k < len(todo):
                say(f"verify: round {it + 1}: trial {pool[i][0]['trial']} predicted "
                    f"{pred[i]:.4f} ms, measured {m:.4f} ms ({100 * (pred[i] - m) / m:+.1f}%)")
    timed, _ = _timed(tbl)
    pred = tbl.predict(archs)
    cands = _candidates(archs, pred, timed, budget, top)
    fits = [i for i in range(len(archs)) if timed.get(archs[i], np.inf) <= budget]
    if not cands and not fits:
        raise NasError(f"no trial of {search_dir} fits its budget {budget:g} ms once the table "
                       "learned from the timed picks; search again with the refitted table")
    pick = fits[0] if fits else cands[0]
    rows = [{"rank": k + 1, "trial": pool[i][0]["trial"], "acc": pool[i][0]["acc"],
             "search_ms": pool[i][0]["latency_ms"], "predicted_ms": round(float(pred[i]), 6),
             "measured_ms": timed.get(archs[i]), "arch": archs[i]}
            for k, i in enumerate(sorted(set(cands) | {pick}))]
    best = next(r for r in rows if r["arch"] == archs[pick])
    write_text(search_dir / VERIFIED_CSV, ",".join(COLUMNS) + "\n" + "".join(
        ",".join("" if r[c] is None else str(r[c]) for c in COLUMNS) + "\n" for r in rows))
    write_yaml(search_dir / BEST_VERIFIED, {
        "space": space.name, "fingerprint": space.fingerprint,
        "picked_by": ("the most accurate arch of the search timed within the budget "
                      if fits else "no timed arch fits the budget: the most accurate predicted "
                      "to fit, not timed ") + f"({n_measured} timed by this verify)",
        "trial": best["trial"], "acc": best["acc"], "latency_ms": best["predicted_ms"],
        "measured_ms": best["measured_ms"], "budget_ms": budget, "arch": best["arch"].to_dict()})
    m = best["measured_ms"]
    summary = (f"verify      {n_measured} archs timed end to end, table {path} refitted on "
               f"{len(tbl.calibration['samples'])} samples\n"
               f"best        trial {best['trial']}: predicted acc {best['acc']:.4f}, latency "
               f"{best['predicted_ms']:.4f} ms (search: {best['search_ms']:.4f} ms), measured "
               + (f"{m:.4f} ms" if m is not None else "n/a (no timed arch fits the budget)")
               + f", budget {budget:g} ms -> {search_dir / BEST_VERIFIED}\n"
               f"candidates  {search_dir / VERIFIED_CSV}")
    return VerifyResult(rows=rows, best=best, measured=n_measured, summary=summary)
