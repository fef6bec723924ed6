"""Which table entries were timed only in a slow phase of the machine, to time them again.

A profile keeps each entry's fastest round, which is enough while slow phases are short
beside a round. On a busier host they are not: in one batch-8 profile the reference
kernel's median read 20% above its fastest, and 4 of 120 held-out subnets were predicted
16-38% too slow because components they use had been timed slow in all 4 rounds (timed
again minutes later: 0.82 ms where the table held 1.27 ms).
:class:`SlowPhases` probes the reference kernel (:mod:`nas.latency.speedprobe`) between
chunks of entries, at most every :data:`PROBE_GAP_S` seconds, and remembers which chunk
came between which probes. An entry is *clean* once one of its chunks lies between two
probes within :data:`~nas.latency.speedprobe.SLOW` of the session's fast speed, the
:data:`FAST_QUANTILE` quantile of its readings (the fastest single reading of hundreds is
a lucky outlier: against it, 872 of 876 batch-64 entries counted as slow).
:func:`nas.latency.profile.profile_space` re-times the entries with no clean
measurement, slowest first, up to :data:`RETIME_ROUNDS` more rounds and
:data:`RETIME_SHARE` of the time the rounds took.

Example:
    >>> phases = SlowPhases(measurer)  # doctest: +SKIP
    >>> phases.before_chunk(); stats = measurer.measure(keys); phases.after_chunk(keys)  # doctest: +SKIP
    >>> phases.unclean(keys)  # doctest: +SKIP
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.latency.speedprobe import SLOW

__all__ = ["SlowPhases", "PROBE_GAP_S", "RETIME_ROUNDS", "RETIME_SHARE", "FAST_QUANTILE"]

PROBE_GAP_S = 3.0  # at most one probe per this many seconds (a batch-64 probe takes ~0.13 s)
RETIME_ROUNDS = 2  # extra rounds for entries that have no clean measurement
RETIME_SHARE = 0.1  # ... taking at most this share of the time the rounds took
FAST_QUANTILE = 0.1  # the machine's fast speed: this quantile of the session's readings


class SlowPhases:
    """Probe readings and the chunks of entries timed between them, in order.

    Args:
        measurer: anything with ``probe() -> float`` (ms of the reference workload).
        gap_s: the least time between two probes (default :data:`PROBE_GAP_S`).
        reference: the fast speed an earlier session on the same table saw (its
            :attr:`fast`), if any: a session slow from start to end would otherwise judge
            itself by its own slow readings and find every entry clean.
    """

    def __init__(self, measurer: Any, gap_s: float | None = None,
                 reference: float | None = None):
        self.measurer = measurer
        self.gap_s = PROBE_GAP_S if gap_s is None else gap_s
        self.reference = reference
        self.readings: list[float] = []
        self.chunks: list[tuple[list[str], int, int | None]] = []  # keys, probe before, after
        self._open: list[list[str]] = []  # chunks since the last probe
        self._last = float("-inf")

    def probe(self) -> float:
        """Read the reference kernel now; closes the chunks timed since the last reading."""
        reading = float(self.measurer.probe())
        self.readings.append(reading)
        self._last = time.perf_counter()
        i = len(self.readings) - 1
        self.chunks += [(keys, i - 1, i) for keys in self._open]
        self._open = []
        return reading

    def before_chunk(self) -> None:
        """Probe unless the last reading is recent (a chunk always follows a reading)."""
        if not self.readings or time.perf_counter() - self._last >= self.gap_s:
            self.probe()

    def after_chunk(self, keys: Sequence[str]) -> None:
        """Record that ``keys`` were just timed (judged by the next reading too)."""
        self._open.append(list(keys))

    @property
    def fastest(self) -> float | None:
        return min(self.readings) if self.readings else None

    @property
    def fast(self) -> float | None:
        """The machine's fast speed: the :data:`FAST_QUANTILE` quantile of this session's
        readings (their minimum while there are fewer than 10), or the ``reference`` if
        that is faster."""
        own = self.own_fast
        if own is None or self.reference is None:
            return self.reference if own is None else own
        return min(own, self.reference)

    @property
    def own_fast(self) -> float | None:
        """The fast speed by this session's readings alone (what a table records)."""
        if not self.readings:
            return None
        if len(self.readings) < 10:
            return min(self.readings)
        return float(np.quantile(self.readings, FAST_QUANTILE))

    def slowness(self) -> dict[str, float]:
        """Per key timed this session: its best chunk's slower bracketing reading over
        :attr:`fast` (a chunk with no reading after it yet counts by the one before)."""
        if not self.readings:
            return {}
        fast, last = self.fast, len(self.readings) - 1
        out: dict[str, float] = {}
        for keys, before, after in [*self.chunks, *[(k, last, None) for k in self._open]]:
            around = [self.readings[i] for i in (before, after) if i is not None and i >= 0]
            if around:
                ratio = max(around) / fast
                for k in keys:
                    out[k] = min(out.get(k, ratio), ratio)
        return out

    def clean_keys(self) -> set[str]:
        """Keys with at least one chunk between readings within SLOW of :attr:`fast`."""
        return {k for k, ratio in self.slowness().items() if ratio <= SLOW}

    def unclean(self, keys: Sequence[str]) -> list[str]:
        """Those of ``keys`` timed in this session with no clean measurement, the slowest
        first (ties in the order given)."""
        slow = self.slowness()
        out = [k for k in keys if slow.get(k, 0.0) > SLOW]
        return sorted(out, key=lambda k: -slow[k])
