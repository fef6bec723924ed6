"""What a predictor regresses on, and the way back to accuracy.

The measured val accuracy of a subnet is a noisy label: a few hundred val images
score each subnet, the accuracy moves in steps of one image, and a few catastrophic
subnets (say, half the tokens pruned before the first block) sit far below the
rest. Regressing on it with a squared loss spends the model on that low tail and on
the noise. A :class:`TargetMap` turns the table's columns into a better target and
maps predictions back to accuracy:

- ``acc``: the measured accuracy as it is.
- ``rank``: the normal scores of the accuracy ranks (a rank-Gaussian transform), so
  the fit weighs the crowded top of the range like the tail.
- ``blend`` (default): the mean of the normal scores of the accuracy ranks and of the
  negated loss ranks. The val loss is measured on the same images but is continuous,
  so it carries what the accuracy rounds away; on the tiny32 digits table this
  raises the held-out Kendall tau against the *measured accuracy* from 0.67 to 0.73
  (``bench/bench_predictors.py``).
- ``combined``: the equal-weight mean of the normal scores of the negated loss ranks
  and of the ranks of every signal the table has from each subnet's own
  initialisation (``train_speed``, ``naswot``; :mod:`nas.predictors.proxies`). On
  CIFAR-10 the classifier-refit loss and the training speed each rank standalone
  training at Kendall tau ~0.45, their average at ~0.54 on held-out subnets; on digits,
  where families differ most, refit loss + naswot reaches 0.48 where the refit loss
  alone has 0.21. Weights fitted on up to 20 standalone anchors did worse on both
  (``bench/bench_combined.py``); per-family offsets are a separate, checked step
  (:mod:`nas.predictors.calibration`).
- ``signals``: the equal-weight mean of the normal scores of the init signals alone,
  for a training speed run long enough to beat the shared weights: on the CIFAR-10
  references ``train_speed`` over 1000 steps ranks standalone training at tau 0.76
  alone and 0.65 averaged with the refit loss (over 100 steps: 0.47 alone, 0.54
  averaged; ``bench/bench_combined.py --train-speed-budgets``).

Scores go back to accuracy through a monotone quantile map fitted on the training
rows: the ``q``-quantile of the scores maps to the ``q``-quantile of the accuracies,
linear in between and beyond the ends, strictly increasing, so predicted accuracies
rank exactly like the scores.

Example:
    >>> acc = np.array([0.9, 0.8, 0.95, 0.7]); loss = np.array([0.3, 0.5, 0.2, 0.9])
    >>> tmap, z = TargetMap.fit("blend", acc, loss)
    >>> bool(np.all(np.argsort(tmap.to_acc(z)) == np.argsort(acc)))
    True
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from nas.predictors.base import PredictorError

__all__ = ["TargetMap", "TARGETS", "normal_scores"]

TARGETS = ("acc", "rank", "blend", "combined", "signals")
_KNOTS = 17  # quantiles of the back-map (0, 1/16, ..., 1)


def normal_scores(v: np.ndarray) -> np.ndarray:
    """Rank-Gaussian scores ``Phi^-1((rank - 0.5) / n)`` (ties share their mean rank)."""
    v = np.asarray(v, dtype=np.float64)
    return ndtri((rankdata(v) - 0.5) / len(v))


class TargetMap:
    """A fitted target transform: :meth:`fit` on training rows, :meth:`to_acc` on predictions.

    Args:
        kind: one of :data:`TARGETS`.
        knots_z, knots_acc: the back-map's knots (strictly increasing), unused for ``acc``.
    """

    def __init__(self, kind: str, knots_z: np.ndarray | None = None,
                 knots_acc: np.ndarray | None = None):
        if kind not in TARGETS:
            raise PredictorError(f"target must be one of {', '.join(TARGETS)}, got {kind!r}")
        self.kind = kind
        if kind != "acc":
            kz = np.asarray(knots_z, dtype=np.float64)
            ka = np.asarray(knots_acc, dtype=np.float64)
            if kz.ndim != 1 or kz.shape != ka.shape or kz.size < 2 or not (
                    np.all(np.isfinite(kz)) and np.all(np.isfinite(ka))
                    and np.all(np.diff(kz) > 0) and np.all(np.diff(ka) > 0)):
                raise PredictorError("target map: knots must be two finite, strictly increasing "
                                     "arrays of the same length >= 2")
            self.knots_z, self.knots_acc = kz, ka

    @classmethod
    def fit(cls, kind: str, acc: np.ndarray, loss: np.ndarray | None = None,
            signals: Mapping[str, np.ndarray] | None = None) -> tuple[TargetMap, np.ndarray]:
        """The map for training rows ``acc`` (``loss``, ``signals`` by name) and their targets."""
        if kind not in TARGETS:
            raise PredictorError(f"target must be one of {', '.join(TARGETS)}, got {kind!r}")
        acc = np.asarray(acc, dtype=np.float64)
        if kind == "acc":
            return cls("acc"), acc.copy()
        if kind == "blend":
            if loss is None:
                raise PredictorError("target 'blend' needs a loss column in the table "
                                     "(or use --target rank / acc)")
            z = (normal_scores(acc) + normal_scores(-np.asarray(loss, dtype=np.float64))) / 2
        elif kind == "combined":
            if loss is None or not signals:
                raise PredictorError("target 'combined' needs a loss column and a signal column "
                                     "(nas predictor collect --naswot or --train-speed-steps N)")
            parts = [normal_scores(-np.asarray(loss, dtype=np.float64))]
            parts += [normal_scores(np.asarray(v, dtype=np.float64)) for v in signals.values()]
            z = np.mean(parts, axis=0)
        elif kind == "signals":
            if not signals:
                raise PredictorError("target 'signals' needs a signal column (nas predictor "
                                     "collect --train-speed-steps N or --naswot)")
            z = np.mean([normal_scores(np.asarray(v, dtype=np.float64))
                         for v in signals.values()], axis=0)
        else:
            z = normal_scores(acc)
        q = np.linspace(0.0, 1.0, _KNOTS)
        kz, ka = np.quantile(z, q), np.quantile(acc, q)
        # Strictly increasing knots: drop repeated scores, then lift repeated accuracies by
        # a hair (1e-6 of the range), so the map never flattens and never ties two archs.
        kz, first = np.unique(kz, return_index=True)
        ka = ka[first]
        if kz.size < 2:  # every row scored the same: any increasing map will do
            kz, ka = np.array([z[0] - 1.0, z[0] + 1.0]), np.array([acc[0] - 1e-6, acc[0] + 1e-6])
        eps = 1e-6 * max(float(np.ptp(acc)), 1e-6)
        for i in range(1, ka.size):
            ka[i] = max(ka[i], ka[i - 1] + eps)
        return cls(kind, kz, ka), z

    def to_acc(self, z: np.ndarray) -> np.ndarray:
        """Map target-space predictions back to accuracy (identity for ``acc``)."""
        z = np.asarray(z, dtype=np.float64)
        if self.kind == "acc":
            return z
        kz, ka = self.knots_z, self.knots_acc
        out = np.interp(z, kz, ka)
        lo, hi = z < kz[0], z > kz[-1]
        out[lo] = ka[0] + (z[lo] - kz[0]) * (ka[1] - ka[0]) / (kz[1] - kz[0])
        out[hi] = ka[-1] + (z[hi] - kz[-1]) * (ka[-1] - ka[-2]) / (kz[-1] - kz[-2])
        return out

    def std_to_acc(self, z: np.ndarray, std: np.ndarray) -> np.ndarray:
        """A target-space standard deviation in accuracy units (the map's slope over z ± std)."""
        std = np.asarray(std, dtype=np.float64)
        if self.kind == "acc":
            return std
        return (self.to_acc(z + std) - self.to_acc(z - std)) / 2

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(tensors, JSON config) to save; :meth:`from_state` rebuilds the map exactly."""
        if self.kind == "acc":
            return {}, {"name": self.kind}
        return {"target.knots_z": self.knots_z, "target.knots_acc": self.knots_acc}, \
            {"name": self.kind}

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> TargetMap:
        kind = config.get("name")
        if kind == "acc":
            return cls("acc")
        if "target.knots_z" not in tensors or "target.knots_acc" not in tensors:
            raise PredictorError(f"target {kind!r}: the back-map knots are missing")
        return cls(kind, tensors["target.knots_z"], tensors["target.knots_acc"])
