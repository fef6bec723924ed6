"""Anchors: a latency table's own calibration subnets, timed beside new models, to tell a
slow phase of the machine from a slow model.

A shared VM runs through phases several % slower than the one a table was profiled in,
and the reference kernel's speed check does not always flag them: a `nas run` verify
read its picks 8% slower than the report timed them a minute later, and an export read
the model it chose 13% over its prediction. The table knows what its calibration
subnets measured when it was profiled, so a few of them timed in the same rounds as the
new models say which phase the machine is in now:

- :func:`nearest_anchors`: the ``k`` calibration subnets of the profile nearest a
  latency, with their profile timing;
- :func:`time_with_anchors`: the models timed beside the anchors; while the anchors read
  more than :data:`SHIFT` slower than at the profile (median ratio), everything is timed
  again, up to :data:`RETRIES` times, each keeping its fastest timing. Faster is not
  retried: a fastest timing cannot come out slower.

Example:
    >>> anchors = nearest_anchors(table, near_ms=1.2)  # doctest: +SKIP
    >>> ms, ratio = time_with_anchors(measure, archs, [a for a, _ in anchors],
    ...                               [t for _, t in anchors])  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from nas.arch import Arch

__all__ = ["ANCHORS", "SHIFT", "RETRIES", "nearest_anchors", "shift_warning",
           "time_with_anchors"]

ANCHORS = 3  # calibration subnets timed beside the models
SHIFT = 0.03  # anchors this much slower (median ratio) than their profile timing: a slow phase
RETRIES = 2  # timings again, each model keeping its fastest, while the anchors read shifted

T = TypeVar("T")


def nearest_anchors(table: Any, near_ms: float, k: int = ANCHORS,
                    exclude: Iterable[Arch] = ()) -> list[tuple[Arch, float]]:
    """The ``k`` calibration subnets of ``table`` that its profile timed (not ``nas
    verify``'s picks, nor those in ``exclude``) nearest ``near_ms`` in latency, with their
    profile timing (ms)."""
    c = table.calibration or {}
    skip = set(exclude)
    samples = [(a, float(s["ms"])) for a, s in zip(table.calibration_archs(),
                                                   c.get("samples", []), strict=True)
               if s.get("source") != "verify" and a not in skip and float(s["ms"]) > 0]
    return sorted(samples, key=lambda t: abs(np.log(t[1] / near_ms)))[:k]


def time_with_anchors(measure: Callable[[list[T]], Sequence[float]], items: Sequence[T],
                      anchors: Sequence[T], anchor_ms: Sequence[float], *,
                      retries: int = RETRIES, shift: float = SHIFT) -> tuple[list[float], float]:
    """``items`` timed beside ``anchors`` by ``measure`` (ms of each of a list, in order),
    again while the anchors' median ratio to ``anchor_ms`` (their profile timings) is
    above ``1 + shift``, up to ``retries`` times; each keeps its fastest timing. Returns
    the items' timings and the anchors' last ratio (1.0 without anchors)."""
    if len(anchors) != len(anchor_ms):
        raise ValueError(f"{len(anchors)} anchors but {len(anchor_ms)} profile timings")
    best = np.full(len(items) + len(anchors), np.inf)
    ratio = 1.0
    for _ in range(1 + max(0, retries)):
        best = np.minimum(best, np.asarray(measure(list(items) + list(anchors)), dtype=float))
        if not anchors:
            break
        ratio = float(np.median(best[len(items):] / np.asarray(anchor_ms, dtype=float)))
        if ratio <= 1.0 + shift:
            break
    return [float(x) for x in best[:len(items)]], ratio


def shift_warning(ratio: float, what: str) -> str | None:
    """The warning for anchors that read ``ratio`` through every retry (None within
    :data:`SHIFT`); ``what``: the timings that carry the phase, in words."""
    if ratio <= 1.0 + SHIFT:
        return None
    return (f"the table's own calibration subnets ran {100 * (ratio - 1):.0f}% slower than "
            f"when it was profiled, through {1 + RETRIES} timings: {what} carry that; if it "
            "lasts, rebuild the table or nas profile --recalibrate it")
