"""Timing table entries and calibration subnets in chunks, saved as they come in.

:func:`measure_signatures` and :func:`measure_calibration` time one list each, writing
the table at most every :data:`SAVE_GAP` write-durations (:class:`Saver`), and tell a
:class:`~nas.latency.slowphase.SlowPhases` what they timed between which readings of the
reference kernel. :func:`retime_calibration` times again the calibration subnets that
were only ever timed in slow phases. Before it, their timings were the one part of a
table no slow-phase check covered: in one batch-64 profile on a host whose reference
kernel read 28% above its fastest, the 30 calibration subnets read 2-11% slower against
their summed components than held-out subnets of the same size, the correction learned a
scale of 1.136 where the held-out subnets needed ~1.09, and the table predicted 7% too
slow (``bench/results/latency_b8_b64_seed10_cpu.md``).

Example:
    >>> measure_calibration(measurer, table, archs, out, seed=0, phases=phases)  # doctest: +SKIP
    >>> retime_calibration(measurer, table, archs, phases, out, seed=0, budget_s=30)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.arch import Arch
from nas.latency.signatures import Signature
from nas.latency.slowphase import SlowPhases
from nas.latency.table import LatencyTable
from nas.progress import progress as show_progress

__all__ = ["Saver", "measure_signatures", "measure_calibration", "retime_calibration",
           "calibration_key", "SAVE_GAP", "CALIBRATION_RETIMES"]

log = logging.getLogger("nas.latency")

SAVE_GAP = 50  # seconds between table writes, in units of the last write's duration
CALIBRATION_RETIMES = 8  # passes, at most, over the calibration subnets still unclean


class Saver:
    """Writes the table as measurements come in, spending at most ~1/:data:`SAVE_GAP` of
    the time on it: a full batch-64 table takes ~30 ms to write, and saving after every
    chunk of 8 entries and every calibration subnet wrote it ~920 times (~40 s of a
    688 s profile). An interrupted profile loses at most ``SAVE_GAP`` writes' worth of
    measuring (~1.5 s)."""

    def __init__(self, table: LatencyTable, out: Path):
        self.table, self.out = table, out
        self.last, self.cost = float("-inf"), 0.0

    def __call__(self, force: bool = False) -> None:
        start = time.perf_counter()
        if force or start - self.last >= SAVE_GAP * self.cost:
            self.table.save(self.out)
            self.last = time.perf_counter()
            self.cost = self.last - start


def calibration_key(arch: Arch) -> str:
    """The name a calibration subnet's timings go by in a :class:`SlowPhases` (distinct
    from every signature key)."""
    return "calibration " + json.dumps(arch.to_dict(), sort_keys=True)


def measure_signatures(measurer: Any, table: LatencyTable, todo: list[Signature], out: Path,
                       save_every: int, progress: bool, desc: str = "profile",
                       phases: SlowPhases | None = None, deadline: float | None = None
                       ) -> None:
    """Time ``todo`` in chunks of ``save_every`` (until ``deadline``); the table keeps each
    entry's fastest round."""
    bar = show_progress(len(todo), desc, unit="sig", enabled=progress)
    save = Saver(table, out)
    try:
        for i in range(0, len(todo), save_every):
            if deadline is not None and time.perf_counter() >= deadline:
                break
            chunk = todo[i:i + save_every]
            if phases is not None:
                phases.before_chunk()
            for g, stats in zip(chunk, measurer.measure([g.key for g in chunk]), strict=True):
                table.add(g, stats, merge=True)
            if phases is not None:
                phases.after_chunk([g.key for g in chunk])
            save()
            bar.update(len(chunk))
    finally:
        save(force=True)
        bar.close()


def measure_calibration(measurer: Any, table: LatencyTable, todo: Sequence[Arch], out: Path,
                        seed: int, progress: bool, desc: str = "calibrate",
                        phases: SlowPhases | None = None, deadline: float | None = None
                        ) -> None:
    """Time every subnet of ``todo`` end to end once more (until ``deadline``); the table
    keeps each one's fastest round. Each subnet's model is built once and kept by the
    measurer for its later rounds, as the ground truth times a model (``keep`` of
    :meth:`nas.latency.measure.Measurer.measure_archs`); one call per subnet, so the
    reference kernel judges each on its own (:mod:`nas.latency.slowphase`)."""
    bar = show_progress(len(todo), desc, unit="arch", enabled=progress)
    save = Saver(table, out)
    try:
        for a in todo:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            if phases is not None:
                phases.before_chunk()
            stats, = measurer.measure_archs([a.to_dict()], keep=True)
            table.add_calibration_sample(a, stats, seed=seed)
            if phases is not None:
                phases.after_chunk([calibration_key(a)])
            save()
            bar.update(1)
    finally:
        save(force=True)
        bar.close()


def retime_calibration(measurer: Any, table: LatencyTable, archs: Sequence[Arch],
                       phases: SlowPhases, out: Path, *, seed: int, budget_s: float,
                       passes: int = CALIBRATION_RETIMES, progress: bool = False
                       ) -> dict[str, int]:
    """Time again, up to ``passes`` times and ``budget_s`` seconds, slowest first, the
    subnets of ``archs`` that this session timed only while the reference kernel read slow,
    and first those an earlier session flagged and this one did not time; flag (``slow``
    on the sample) those still never timed at full speed. Returns (and the caller records
    in ``scope.retimed``) how many were slow (``calibration``, counting the earlier
    flagged ones too) and how many still are (``calibration_still_slow``)."""
    by_key = {calibration_key(a): a for a in archs}
    flagged = {calibration_key(a) for a in table.slow_calibration_archs()} & set(by_key)
    deadline = time.perf_counter() + budget_s
    first = None
    for p in range(passes):
        phases.probe()  # closes the chunks timed before
        seen = phases.slowness()
        todo = [k for k in flagged if k not in seen] + phases.unclean(list(by_key))
        if first is None:
            first = len(todo)
        if not todo or time.perf_counter() >= deadline:
            break
        log.info("%d calibration subnets were timed only while the machine ran slow; timing "
                 "them again (%d/%d)", len(todo), p + 1, passes)
        measure_calibration(measurer, table, [by_key[k] for k in todo], out, seed, progress,
                            desc=f"re-time calibration {p + 1}/{passes}", phases=phases,
                            deadline=deadline)
    phases.probe()
    seen = phases.slowness()
    slow = set(phases.unclean(list(by_key))) | {k for k in flagged if k not in seen}
    table.set_calibration_slow(list(by_key.values()), [by_key[k] for k in slow])
    if slow:
        log.warning("%d of %d calibration subnets were never timed while the machine ran at "
                    "full speed; the correction may predict too slow. Profiling into the same "
                    "table again when the machine is quieter times them again", len(slow),
                    len(by_key))
    return {"calibration": first or 0, "calibration_still_slow": len(slow)}
