"""Accuracy/latency Pareto fronts and their 2-D hypervolume.

A point dominates another when it is at least as accurate and at most as slow, and
strictly better in one of the two. The hypervolume is the area dominated by the
front inside the box bounded by a reference point ``(acc_ref, latency_ref)`` (worse
than every point counted): the larger, the better the front.

Example:
    >>> idx = pareto_front([0.9, 0.8, 0.85], [2.0, 1.0, 2.5]); idx.tolist()
    [1, 0]
    >>> round(hypervolume([0.9, 0.8], [2.0, 1.0], ref=(0.5, 3.0)), 6)
    0.7
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pareto_front", "hypervolume"]


def pareto_front(acc: Sequence[float], latency: Sequence[float]) -> np.ndarray:
    """Indices of the non-dominated points, sorted by increasing latency (first of duplicates)."""
    acc = np.asarray(acc, dtype=np.float64)
    latency = np.asarray(latency, dtype=np.float64)
    if acc.shape != latency.shape or acc.ndim != 1:
        raise ValueError(f"acc and latency must be 1-D of one length, got {acc.shape} and "
                         f"{latency.shape}")
    order = np.lexsort((np.arange(len(acc)), -acc, latency))  # fastest first, then most accurate
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(int(i))
            best = acc[i]
    return np.asarray(front, dtype=np.int64)


def hypervolume(acc: Sequence[float], latency: Sequence[float], *, ref: tuple[float, float]
                ) -> float:
    """Area dominated by the points (max acc, min latency) within ``ref = (acc_ref, lat_ref)``."""
    acc = np.asarray(acc, dtype=np.float64)
    latency = np.asarray(latency, dtype=np.float64)
    a_ref, l_ref = ref
    keep = (acc > a_ref) & (latency < l_ref)
    acc, latency = acc[keep], latency[keep]
    if not len(acc):
        return 0.0
    idx = pareto_front(acc, latency)
    a, lat = acc[idx], latency[idx]  # latency increasing, accuracy increasing
    widths = np.diff(np.append(lat, l_ref))
    # between lat[i] and lat[i+1] the best accuracy reached is a[i]
    return float(np.sum(widths * (a - a_ref)))
