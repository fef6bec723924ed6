"""Calibration: a linear correction from summed component latencies to end-to-end latency.

Sums of standalone components miss what only the whole model pays (the stage and
model ``forward`` bodies, tensors handed between blocks, colder caches), as noted
for layer-wise lookup tables by nn-Meter (Zhang et al., MobiSys 2021). A few whole
subnets measured end to end fit

    latency ~= a * raw_sum + b * ops + c * n_blocks + d * n_components + e + f * reduce_ms

(any subset of the terms; by default ``raw_sum, ops, const, reduce_ms``) by non-negative
least squares on the *relative* error, so small and large subnets weigh alike and
no prediction can turn negative however far it extrapolates. ``ops`` counts the
torch calls of one forward: a component timed in a tight loop keeps its dispatch
path hot in the instruction cache and branch predictors, while in the whole model
each op pays more (about 1 us per op on a busy x86 core). ``reduce_ms`` (the
summed latency of in-stage token pruning/merging) lets the fit scale those
components on their own: their gathers and sorts sit between blocks, where the
tight-loop timing of a standalone component is least representative.
Leave-one-out error is reported as the fit residual.

The fit is robust: a calibration subnet whose end-to-end time is far off the line
the others agree on (a component entry that came out slow, a burst of load during
that one model) would otherwise bend the line for every prediction. Iteratively
reweighted least squares with Tukey's biweight on the relative residuals (scale from
their median absolute deviation, floored at ``MIN_SCALE``) gives such samples zero
weight; on well-behaved samples it is the plain least-squares fit.

Example:
    >>> coef = fit(X, y, ("raw_ms", "ops", "const"))  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import nnls

__all__ = ["FEATURES", "DEFAULT_FEATURES", "fit", "apply", "fit_report", "outliers",
           "robust_weights"]

# Columns of the feature matrix a table computes for every arch.
FEATURES = ("raw_ms", "ops", "n_blocks", "n_components", "const", "reduce_ms")
DEFAULT_FEATURES = ("raw_ms", "ops", "const", "reduce_ms")
TUKEY_C = 4.685   # biweight constant: 95% efficiency on Gaussian residuals
MIN_SCALE = 0.01  # residual scale floor (1%): never reject samples of a near-exact fit


def _cols(features: Sequence[str]) -> list[int]:
    bad = [f for f in features if f not in FEATURES]
    if bad or not features:
        raise ValueError(f"calibration features must be a non-empty subset of "
                         f"{', '.join(FEATURES)}; got {list(features)}")
    return [FEATURES.index(f) for f in features]


def usable_features(features: Sequence[str], n_samples: int) -> tuple[str, ...]:
    """``features`` when there are enough samples to fit them, else a plain scale (or none)."""
    if n_samples >= len(features) + 2:
        return tuple(features)
    return ("raw_ms",) if n_samples >= 1 else ()


def _nnls(A: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Non-negative ``coef`` minimising ``sum(w * (A @ coef - 1) ** 2)``."""
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0  # keep the problem well conditioned (ops ~ 100s, raw_ms ~ 1)
    sw = np.sqrt(w)[:, None]
    coef, _ = nnls(A / scale * sw, sw[:, 0])
    return coef / scale


def robust_weights(residuals: np.ndarray) -> np.ndarray:
    """Tukey biweight of relative residuals (1 near the bulk, 0 for gross outliers)."""
    r = residuals - np.median(residuals)
    scale = max(1.4826 * float(np.median(np.abs(r))), MIN_SCALE)
    u = r / (TUKEY_C * scale)
    return np.where(np.abs(u) < 1, (1 - u ** 2) ** 2, 0.0)


def fit(X: np.ndarray, y: np.ndarray, features: Sequence[str], *, robust: bool = True,
        max_iter: int = 50) -> np.ndarray:
    """Non-negative coefficients for ``features`` minimising the squared relative error.

    Args:
        X: ``(n, len(FEATURES))`` feature matrix (all columns).
        y: ``(n,)`` measured latencies (ms), positive.
        features: the columns to use.
        robust: down-weight outlying samples (Tukey biweight IRLS, see module doc);
            falls back to plain least squares when too few samples keep weight.
    """
    A = X[:, _cols(features)] / y[:, None]
    coef = _nnls(A, np.ones(len(y)))
    if not robust or len(y) < len(features) + 2:
        return coef
    for _ in range(max_iter):
        w = robust_weights(A @ coef - 1)
        if np.count_nonzero(w) < len(features) + 2:
            break
        new = _nnls(A, w)
        done = np.allclose(new, coef, rtol=1e-6, atol=1e-9)
        coef = new
        if done:
            break
    return coef


def outliers(X: np.ndarray, y: np.ndarray, features: Sequence[str], coef: Sequence[float]
             ) -> np.ndarray:
    """Indices of the samples the robust fit gave zero weight."""
    pred = apply(X, features, coef)
    return np.flatnonzero(robust_weights(pred / y - 1) == 0)


def apply(X: np.ndarray, features: Sequence[str], coef: Sequence[float]) -> np.ndarray:
    """Calibrated latency of every row of ``X`` (raw sum when ``features`` is empty)."""
    if not features:
        return X[:, 0].copy()
    return X[:, _cols(features)] @ np.asarray(coef, dtype=np.float64)


def _errors(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    rel = np.abs(pred - y) / y
    return {"mape": float(rel.mean() * 100), "max_pct": float(rel.max() * 100)}


def fit_report(X: np.ndarray, y: np.ndarray, features: Sequence[str]
               ) -> tuple[tuple[str, ...], list[float], dict[str, float]]:
    """Fit and describe it: the features used, coefficients, and in-sample / LOO / raw errors."""
    used = usable_features(features, len(y))
    if not used:
        return (), [], {"n": 0}
    coef = fit(X, y, used)
    stats = {"n": int(len(y)), **{f"fit_{k}": v for k, v in _errors(apply(X, used, coef), y).items()},
             **{f"raw_{k}": v for k, v in _errors(X[:, 0], y).items()},
             "outliers": [int(i) for i in outliers(X, y, used, coef)]}
    if len(y) > len(used) + 1:
        loo = np.empty(len(y))
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            loo[i] = apply(X[i:i + 1], used, fit(X[keep], y[keep], used))[0]
        stats.update({f"loo_{k}": v for k, v in _errors(loo, y).items()})
    return used, [float(c) for c in coef], stats
