"""Ranking and regression metrics for accuracy predictors, and k-fold splits.

NAS uses a predictor to order architectures, so the headline metric is Kendall's
tau-b between predicted and measured accuracy (as in the NAS-Bench predictor
studies); Spearman's rho, RMSE and top-k precision (the share of the truly best
``frac`` of the archs that the predictor also puts in its best ``frac``) complete
the picture.

Example:
    >>> m = ranking_metrics(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.1, 0.3, 0.2, 0.4]))
    >>> round(m["kendall_tau"], 3), m["rmse"] > 0
    (0.667, True)
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["kendall_tau", "spearman", "rmse", "top_k_precision", "ranking_metrics",
           "kfold_indices", "METRICS"]

METRICS = ("kendall_tau", "spearman", "rmse", "top_k_precision")


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kendall's tau-b (ties handled); NaN when either side is constant."""
    if len(y_true) < 2 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return math.nan
    return float(stats.kendalltau(y_true, y_pred).statistic)


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side is constant."""
    if len(y_true) < 2 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return math.nan
    return float(stats.spearmanr(y_true, y_pred).statistic)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))


def top_k_precision(y_true: np.ndarray, y_pred: np.ndarray, frac: float = 0.1) -> float:
    """Share of the true top ``frac`` (at least one arch) also in the predicted top ``frac``."""
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    k = max(1, int(round(frac * len(y_true))))
    true_top = set(np.argsort(-np.asarray(y_true), kind="stable")[:k].tolist())
    pred_top = set(np.argsort(-np.asarray(y_pred), kind="stable")[:k].tolist())
    return len(true_top & pred_top) / k


def ranking_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, top_frac: float = 0.1) -> dict[str, float]:
    """All of :data:`METRICS` for one set of predictions."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return {"kendall_tau": kendall_tau(y_true, y_pred), "spearman": spearman(y_true, y_pred),
            "rmse": rmse(y_true, y_pred), "top_k_precision": top_k_precision(y_true, y_pred, top_frac)}


def kfold_indices(n: int, folds: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled ``(train, test)`` index pairs of ``folds``-fold cross-validation."""
    if folds < 2 or folds > n:
        raise ValueError(f"folds must be in 2..{n} (the number of rows), got {folds}")
    perm = rng.permutation(n)
    parts = np.array_split(perm, folds)
    return [(np.sort(np.concatenate(parts[:k] + parts[k + 1:])), np.sort(parts[k]))
            for k in range(folds)]
