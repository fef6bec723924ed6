"""Scale a table to the machine's speed now, from a few of its own calibration subnets.

On a shared VM the speed at which whole models run drifts by several percent over tens
of minutes, and the reference kernel (:mod:`nas.latency.speedprobe`) does not follow it:
on this project's 2-core AMD VM, batch-64 subnets ran 4-7% faster 10-40 minutes after
their profile than during it while the kernel read the same or slower, and each of three
tables predicted that much too slow (``bench/LATENCY.md``, seeds 13-15). The same
subnets' calibration, timed again beside the ground truth and refitted, predicted within
2-3%. A re-timed calibration (``nas profile --recalibrate``) takes minutes at batch 64;
:func:`rescale_table` takes seconds: it times :data:`ANCHORS` of the table's calibration
subnets (spread over their latencies, :func:`anchor_archs`) the way the profile timed
them (same time per measurement, same number of rounds) and scales every prediction by
the median of now / then (:meth:`nas.latency.LatencyTable.set_rescale`). It holds while
the machine keeps that speed; run it in the session that searches or measures.

Example:
    >>> info = rescale_table(table)  # doctest: +SKIP
    >>> info["ratio"]  # the machine runs 6% faster than when the table was profiled  # doctest: +SKIP
    0.94
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import NasError
from nas.latency.table import LatencyTable
from nas.latency.tablefile import now

__all__ = ["ANCHORS", "anchor_archs", "rescale_table"]

ANCHORS = 5  # calibration subnets timed again per rescale


def anchor_archs(table: LatencyTable, k: int = ANCHORS) -> list[Arch]:
    """``k`` of the table's calibration subnets, at evenly spaced quantiles of their
    timings (so the drift is read on small and large models alike), leaving out picks
    ``nas verify`` added and samples never timed at full speed."""
    samples = (table.calibration or {}).get("samples") or []
    pool = [(s["ms"], a) for a, s in zip(table.calibration_archs(), samples, strict=True)
            if s.get("source") != "verify" and not s.get("slow")]
    if not pool or k < 1:
        return []
    pool.sort(key=lambda p: p[0])
    picks = sorted({min(len(pool) - 1, int((i + 0.5) * len(pool) / k)) for i in range(k)})
    return [pool[i][1] for i in picks]


def rescale_table(table: LatencyTable, *, k: int = ANCHORS, measurer: Any = None
                  ) -> dict[str, Any]:
    """Time ``k`` anchor subnets (:func:`anchor_archs`) now, as the profile timed them,
    and scale ``table`` (in memory; the caller saves it) by the median ratio of their
    timings now to the timings the table holds. Returns what it recorded: ``ratio``,
    ``anchors``, ``rounds``, ``ratios`` (per anchor), ``seconds``, ``at``.

    ``measurer``: a :class:`nas.latency.measure.Measurer` in the table's setting (default:
    one built from the table's device and timing records).

    Raises:
        NasError: the table has no calibration subnets, or was profiled with another time
            per whole-model measurement than this version takes (``--recalibrate`` it).
    """
    from nas.latency.measure import GROUND_TRUTH_SPAN_S, Measurer

    anchors = anchor_archs(table, k)
    if not anchors:
        raise NasError(f"latency table {table.source} has no calibration subnets to rescale "
                       "by; profile it with --calibrate N (N > 0)")
    if measurer is None:
        measurer = Measurer(table.device, table.timing, num_classes=table.space.num_classes,
                            in_chans=table.space.in_chans)
    recorded = table.timing.get("model_min_run_time", table.timing.get("min_run_time"))
    mrt = measurer.model_timing().min_run_time
    if recorded is None or not np.isclose(recorded, mrt):
        raise NasError(f"latency table {table.source} timed its calibration subnets for "
                       f"{recorded} s per measurement, this version for {mrt:g} s: their "
                       "timings would not compare; run nas profile --recalibrate instead")
    rounds = int(table.timing.get("calibration_rounds") or table.timing.get("rounds", 1))
    t0 = time.perf_counter()
    dicts = [a.to_dict() for a in anchors]
    measurer.measure_archs(dicts)  # warm the CPU up, untimed
    stats = measurer.measure_archs(dicts, rounds=rounds, min_span_s=GROUND_TRUTH_SPAN_S)
    by_arch = {a: s["ms"] for a, s in zip(table.calibration_archs(),
                                          table.calibration["samples"], strict=True)}
    ratios = [st[table.stat] / by_arch[a] for a, st in zip(anchors, stats, strict=True)]
    info = {"ratio": round(float(np.median(ratios)), 5), "anchors": len(anchors),
            "rounds": rounds, "ratios": [round(float(r), 4) for r in ratios],
            "seconds": round(time.perf_counter() - t0, 1), "at": now()}
    table.set_rescale(info)
    return info
