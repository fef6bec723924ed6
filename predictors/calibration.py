"""Per-family offsets learnt from standalone anchors, kept only when they help.

Weight sharing erases the level differences between mixer families that standalone
training shows (on digits, conv-like first stages fit small data faster), so a
predictor fitted on inherited-weight scores can rank subnets well inside a family and
still put the families in the wrong order. A few anchors (subnets of each stage-0
family trained alone, :mod:`nas.predictors.anchors`) measure those levels.

:func:`fit_offsets` learns one offset per stage-0 family from the anchors: the mean
residual of the anchors' standalone rank scores against the predictor's standardised
scores, shrunk towards 0 by ``n / (n + 1)`` (a family seen once moves half-way). A
family without anchors gets no offset. Ranks, not losses, are compared, so a heavy
tail of bad subnets does not drag the fit.

:func:`choose_offsets` decides on the anchors alone whether offsets help: it scores
every anchor with offsets fitted on the *other* anchors (leave-one-out) and keeps the
offsets only if that ranks the anchors better (Kendall tau against their standalone
loss) than the predictor alone. On the cached references (``bench/bench_combined.py``)
offsets help on digits, where families differ most, and hurt on CIFAR-10; the choice
is made per user space and data, never assumed.

Example:
    >>> score = np.array([0.1, 0.2, 0.3, 0.4]); loss = np.array([0.4, 0.3, 1.0, 0.9])
    >>> cal = choose_offsets(score, loss, ["conv", "conv", "attn", "attn"])
    >>> sorted(cal.offsets)
    ['attn', 'conv']
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from nas.predictors.base import PredictorError
from nas.predictors.target import normal_scores

__all__ = ["FamilyOffsets", "fit_offsets", "choose_offsets", "describe_calibration"]


@dataclass(frozen=True)
class FamilyOffsets:
    """Offsets (in the predictor's score units) added to the score of each stage-0 family.

    Attributes:
        offsets: family -> offset; families not listed get 0.
        report: how the offsets were chosen (JSON-able: anchor counts, taus).
    """

    offsets: Mapping[str, float] = field(default_factory=dict)
    report: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, score: np.ndarray, families: Sequence[str]) -> np.ndarray:
        """``score`` plus each arch's family offset."""
        add = np.array([self.offsets.get(f, 0.0) for f in families], dtype=np.float64)
        return np.asarray(score, dtype=np.float64) + add

    def state(self) -> dict[str, Any]:
        return {"kind": "stage0_family_offsets", "offsets": dict(self.offsets),
                "report": dict(self.report)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FamilyOffsets:
        if state.get("kind") != "stage0_family_offsets":
            raise PredictorError(f"unknown calibration kind {state.get('kind')!r}")
        offsets = {str(k): float(v) for k, v in dict(state.get("offsets") or {}).items()}
        if not all(np.isfinite(v) for v in offsets.values()):
            raise PredictorError("calibration offsets must be finite")
        return cls(offsets, dict(state.get("report") or {}))


def _check(score: np.ndarray, loss: np.ndarray, families: Sequence[str]) -> None:
    if score.ndim != 1 or score.shape != loss.shape or len(families) != score.size:
        raise PredictorError("anchors: scores, losses and families must have the same length")
    if score.size < 3:
        raise PredictorError(f"anchors: need at least 3 to fit offsets, got {score.size}")
    if not (np.all(np.isfinite(score)) and np.all(np.isfinite(loss))):
        raise PredictorError("anchors: scores and losses must be finite")


def fit_offsets(score: np.ndarray, loss: np.ndarray, families: Sequence[str]) -> dict[str, float]:
    """Per-family offsets (score units) from anchors' predicted ``score`` (higher: better)
    and standalone ``loss`` (lower: better)."""
    score, loss = np.asarray(score, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    _check(score, loss, families)
    sd = float(score.std()) or 1.0
    resid = normal_scores(-loss) - (score - score.mean()) / sd
    fam = np.asarray(families)
    out = {}
    for f in np.unique(fam):
        m = fam == f
        out[str(f)] = float(resid[m].mean() * m.sum() / (m.sum() + 1) * sd)
    return out


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    t = kendalltau(a, b).statistic
    return float(t) if np.isfinite(t) else 0.0


def choose_offsets(score: np.ndarray, loss: np.ndarray, families: Sequence[str]) -> FamilyOffsets:
    """Offsets fitted on all anchors if leave-one-out says they rank anchors better, else none.

    The returned report holds ``anchors``, ``tau_plain`` (the predictor's scores vs
    standalone loss over the anchors), ``tau_loo`` (with offsets fitted without the
    scored anchor) and ``kept``.
    """
    score, loss = np.asarray(score, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    _check(score, loss, families)
    fam = list(families)
    loo = np.empty_like(score)
    for i in range(score.size):
        rest = np.arange(score.size) != i
        off = fit_offsets(score[rest], loss[rest], [f for f, r in zip(fam, rest) if r])
        loo[i] = score[i] + off.get(fam[i], 0.0)
    tau_plain, tau_loo = _tau(score, -loss), _tau(loo, -loss)
    kept = tau_loo > tau_plain
    report = {"anchors": int(score.size), "families": len(set(fam)),
              "tau_plain": round(tau_plain, 4), "tau_loo": round(tau_loo, 4), "kept": bool(kept)}
    return FamilyOffsets(fit_offsets(score, loss, fam) if kept else {}, report)


def describe_calibration(report: Mapping[str, Any]) -> str:
    """One line on what :func:`choose_offsets` (or its caller) decided."""
    if "why" in report:
        return f"family offsets: none ({report['why']})"
    head = (f"family offsets from {report['anchors']} anchors: leave-one-out tau "
            f"{report['tau_loo']:.3f} vs {report['tau_plain']:.3f} without")
    if not report.get("kept"):
        return head + " -> not kept"
    offs = ", ".join(f"{f} {v:+.3f}" for f, v in sorted(report.get("offsets", {}).items()))
    return head + f" -> kept ({offs})"
