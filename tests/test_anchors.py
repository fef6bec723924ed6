"""Anchors (:mod:`nas.latency.anchors`): a table's calibration subnets timed beside new
models, and the timing repeated while they read a slower phase than the profile's."""
from __future__ import annotations

import numpy as np
import pytest

from nas.arch import sample_arch
from nas.latency.anchors import RETRIES, SHIFT, nearest_anchors, shift_warning, time_with_anchors


class Table:
    """What :func:`nearest_anchors` reads of a latency table."""

    def __init__(self, archs, ms, sources):
        self.archs = archs
        self.calibration = {"samples": [{"ms": m, **({"source": s} if s else {})}
                                        for m, s in zip(ms, sources)]}

    def calibration_archs(self):
        return list(self.archs)


@pytest.fixture()
def archs(spaces):
    rng = np.random.default_rng(3)
    return list(dict.fromkeys(sample_arch(spaces["tiny32"], rng) for _ in range(8)))[:6]


def test_nearest_anchors_are_the_profiles_subnets_nearest_in_log_latency(archs):
    ms = [0.5, 0.9, 1.1, 2.0, 1.0, 4.0]
    table = Table(archs, ms, [None, None, None, None, "verify", None])
    got = nearest_anchors(table, 1.0, k=3)
    # 1.0 is verify's pick, not the profile's; 1.1 and 0.9 are nearest (in log: 1.1 is
    # nearer), then 0.5 and 2.0 tie at 2x off: the earlier sample stays first
    assert got == [(archs[2], 1.1), (archs[1], 0.9), (archs[0], 0.5)]
    assert nearest_anchors(table, 1.0, k=2, exclude=[archs[2]]) == [(archs[1], 0.9),
                                                                     (archs[0], 0.5)]
    assert nearest_anchors(table, 3.5, k=1) == [(archs[5], 4.0)]
    assert nearest_anchors(Table([], [], []), 1.0) == []


class Phased:
    """Times items by their true ms, ``k`` times slower for the first ``slow`` calls."""

    def __init__(self, true, slow, k):
        self.true, self.slow, self.k, self.calls = true, slow, k, []

    def __call__(self, items):
        k = self.k if len(self.calls) < self.slow else 1.0
        self.calls.append(list(items))
        return [k * self.true[i] for i in items]


TRUE = {"a": 1.0, "b": 2.0, "x": 1.5, "y": 0.8, "z": 3.0}


@pytest.mark.parametrize("slow,k,calls,ratio", [
    (0, 1.0, 1, 1.0),                       # the machine as profiled: timed once
    (1, 1.1, 2, 1.0),                       # a slow phase that passes: timed again once
    (99, 1.1, 1 + RETRIES, 1.1),            # one that lasts: kept after the retries
    (99, 1.0 + SHIFT / 2, 1, 1.0 + SHIFT / 2),  # within the tolerance: not retried
    (99, 0.9, 1, 0.9),                      # faster: a fastest timing cannot get slower
])
def test_time_with_anchors_retries_while_the_anchors_read_a_slow_phase(slow, k, calls, ratio):
    m = Phased(TRUE, slow, k)
    ms, got = time_with_anchors(m, ["a", "b"], ["x", "y", "z"], [1.5, 0.8, 3.0])
    assert len(m.calls) == calls and all(c == ["a", "b", "x", "y", "z"] for c in m.calls)
    assert got == pytest.approx(ratio)
    # the items carry what the anchors read in their last timing
    assert ms == pytest.approx([ratio * 1.0, ratio * 2.0])


def test_time_with_anchors_keeps_each_items_fastest_and_checks_its_input():
    seq = iter([[1.2, 2.0, 1.65, 0.88, 3.3], [1.0, 2.3, 1.5, 0.8, 3.0]])
    ms, ratio = time_with_anchors(lambda items: next(seq), ["a", "b"], ["x", "y", "z"],
                                  [1.5, 0.8, 3.0])
    assert ms == [1.0, 2.0] and ratio == pytest.approx(1.0)
    m = Phased(TRUE, 99, 1.5)
    assert time_with_anchors(m, ["a"], [], []) == ([1.5], 1.0) and len(m.calls) == 1
    with pytest.raises(ValueError, match="2 anchors but 1 profile timings"):
        time_with_anchors(m, ["a"], ["x", "y"], [1.5])


def test_shift_warning_words_a_lasting_phase_only():
    assert shift_warning(1.0 + SHIFT, "the picks") is None
    assert shift_warning(0.8, "the picks") is None
    msg = shift_warning(1.12, "the measured ms")
    assert "ran 12% slower than when it was profiled" in msg and "the measured ms carry" in msg
    assert "--recalibrate" in msg


def test_the_reports_timing_runs_beside_anchors_and_again_in_a_slow_phase(spaces, tmp_path,
                                                                         monkeypatch):
    """``nas run``'s report: its rows are timed beside the table's 3 calibration subnets
    nearest their predictions (none of the rows), again while those read slow."""
    import nas.latency.measure as measure_mod
    import nas.latency.quiet as quiet_mod
    from nas.report import time_rows

    from .test_verify import _table, _true_ms

    space = spaces["tiny32"]
    rng = np.random.default_rng(1)
    rows = list(dict.fromkeys(sample_arch(space, rng) for _ in range(4)))
    table = _table(space, rows, tmp_path / "t.json")
    calls = []

    def timed(archs, space, *, reference_ms, **kw):
        k = 1.2 if len(calls) < 2 else 1.0  # the first two timings in a slow phase
        calls.append(list(archs))
        return [k * _true_ms(table, a) for a in archs], {"slower": k, "rounds": len(calls)}

    monkeypatch.setattr(measure_mod, "measure_archs_checked", timed)
    monkeypatch.setattr(quiet_mod, "quiet_timing", lambda fn, **kw: (fn(), None))
    got = time_rows(rows, list(table.predict(rows)), table, space)
    calib = table.calibration_archs()
    assert len(calls) == 3 and all(c[:len(rows)] == rows for c in calls)
    anchors = calls[0][len(rows):]
    assert len(anchors) == 3 and set(anchors) <= set(calib) and not set(anchors) & set(rows)
    assert got["ms"] == pytest.approx([_true_ms(table, a) for a in rows])
    assert got["anchors_ratio"] == pytest.approx(1.0) and got["shifted"] is None
    assert got["speed"] == {"slower": 1.0, "rounds": 3} and got["busy"] is None
