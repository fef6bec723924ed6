"""Predicting an arch's latency from a table: the calibrated sum of its components.

An arch's components (:mod:`nas.latency.signatures`: stem, every stage's blocks and
token reductions, head) are looked up in the table and summed into one row of the
calibration features (:data:`nas.latency.calibrate.FEATURES`: raw sum, ops, blocks,
components, a constant, token-reduction ms); the table's linear calibration turns the
row into the predicted end-to-end latency. Per-stage sums and the stem and head are
cached, so thousands of archs a second are cheap.

:class:`ComponentSum` is what :class:`nas.latency.LatencyTable` predicts with; the
table rebuilds it whenever its entries or calibration change.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import nas.latency.calibrate as cal
from nas.arch import Arch, StageArch
from nas.errors import ArchError
from nas.latency.signatures import Signature, head_signature, stage_signatures, stem_signature
from nas.model.shapes import stem_grid
from nas.space import SearchSpace

__all__ = ["ComponentSum"]


class ComponentSum:
    """Sums archs' component latencies and applies a calibration, caching per stage.

    Args:
        lookup: measured latency (ms) of one component; raises when the table lacks it.
        ops: torch calls of each component's forward, by signature key (0 when absent).
        space: the table's search space (stage count, classes, input channels).
        space_name: the name the table records for its space, for error messages.
        calibration: the table's calibration (``features`` and ``coef``), or None for the
            raw sum.
    """

    def __init__(self, *, lookup: Callable[[Signature], float], ops: Mapping[str, int],
                 space: SearchSpace, space_name: str, calibration: dict[str, Any] | None):
        self._lookup, self._ops = lookup, ops
        self._space, self._space_name = space, space_name
        self._stage_cache: dict[tuple, tuple[float, int, int, int, float, tuple[int, int]]] = {}
        self._end_cache: dict[tuple, tuple[float, int]] = {}
        if calibration and calibration.get("features"):
            self._features = tuple(calibration["features"])
            self._coef = np.asarray(calibration["coef"], np.float64)
        else:
            self._features, self._coef = (), np.zeros(0)

    def feature_matrix(self, archs: Sequence[Arch]) -> np.ndarray:
        """``(len(archs), len(cal.FEATURES))`` float64 rows; column 0 is the raw sum (ms)."""
        n_stages = len(self._space.stages)
        rows = []
        for a in archs:
            if len(a.stages) != n_stages:
                raise ArchError(f"arch has {len(a.stages)} stages; the table's space "
                                f"{self._space_name} has {n_stages}")
            rows.append(self._row(a))
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(cal.FEATURES))

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Calibrated latency (ms) of every arch (the raw sum when uncalibrated)."""
        return cal.apply(self.feature_matrix(archs), self._features, self._coef)

    def _cost(self, sig: Signature) -> tuple[float, int]:
        """(ms, ops) of one component."""
        return self._lookup(sig), self._ops.get(sig.key, 0)

    def _stage(self, s: StageArch, cin: int, grid: tuple[int, int]
               ) -> tuple[float, int, int, int, float, tuple[int, int]]:
        """(ms, ops, blocks, components, token-reduction ms, output grid) of one stage, cached."""
        key = (s, cin, grid)
        hit = self._stage_cache.get(key)
        if hit is None:
            sigs, out_grid = stage_signatures(s, cin, grid)
            costs = [self._cost(g) for g in sigs]
            reduce_ms = sum(c[0] for g, c in zip(sigs, costs) if g.kind == "reduce")
            hit = (sum(c[0] for c in costs), sum(c[1] for c in costs), s.depth, len(sigs),
                   reduce_ms, out_grid)
            self._stage_cache[key] = hit
        return hit

    def _row(self, arch: Arch) -> tuple[float, int, int, int, float, float]:
        """One row of the feature matrix (see ``calibrate.FEATURES``), from cached pieces."""
        s0 = arch.stages[0]
        skey = ("stem", arch.resolution, arch.stem, arch.stem_stride, s0.embed_dim, s0.norm, s0.act)
        ms, ops = self._end_cache.get(skey) or self._end_cache.setdefault(skey, self._cost(
            stem_signature(kind=arch.stem, stride=arch.stem_stride, resolution=arch.resolution,
                           dim=s0.embed_dim, norm=s0.norm, act=s0.act,
                           in_chans=self._space.in_chans)))
        blocks, comps, reduce_ms = 0, 2, 0.0
        side = stem_grid(arch.stem, arch.stem_stride, arch.resolution)
        grid, cin = (side, side), s0.embed_dim
        for s in arch.stages:
            t, o, b, c, r, grid = self._stage(s, cin, grid)
            ms, ops, blocks, comps, cin = ms + t, ops + o, blocks + b, comps + c, s.embed_dim
            reduce_ms += r
        last = arch.stages[-1]
        hkey = ("head", last.embed_dim, last.norm, grid)
        t, o = self._end_cache.get(hkey) or self._end_cache.setdefault(hkey, self._cost(
            head_signature(dim=last.embed_dim, norm=last.norm, tokens=grid[0] * grid[1],
                           num_classes=self._space.num_classes)))
        return ms + t, ops + o, blocks, comps, 1.0, reduce_ms
