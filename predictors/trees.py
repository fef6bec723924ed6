"""Gradient-boosted regression trees on architecture encodings.

Least-squares boosting (Friedman, 2001) of depth-limited trees with shrinkage and
optional row subsampling (stochastic gradient boosting, Friedman, 2002). Trees are
grown level by level with exact greedy splits and stored as complete binary trees,
so the whole ensemble is three arrays (split feature, split threshold, leaf value)
and prediction is a vectorised walk of ``max_depth`` steps. A node that does not
split sends every point left (threshold ``+inf``), so its subtree repeats its value.

Trees pick up what the linear and smooth families miss on architecture encodings:
interactions between choices (a mixer that only helps at some width) and thresholds
on rank-scaled numbers. On CIFAR-10 training-speed labels they ranked held-out
subnets better than ridge and GP (``bench/train_speed_report.py``). No uncertainty
is returned.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); y = np.where(X[:, 0] > 0, 1.0, -1.0) * X[:, 1]
    >>> model = BoostedTrees(n_trees=100, learning_rate=0.1).fit(X, y)
    >>> float(np.mean((model.predict(X)[0] - y) ** 2)) < 0.1 * float(np.var(y))
    True
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nas.errors import ArtifactError
from nas.predictors.base import Predictor, PredictorError, need_key, need_tensor, register_predictor

__all__ = ["BoostedTrees"]


def _best_split(r: np.ndarray, order: np.ndarray, sorted_x: np.ndarray, rows: np.ndarray,
                min_leaf: int) -> tuple[int, float] | None:
    """(feature, threshold) of the split of ``rows`` that most reduces the squared error of
    residuals ``r``, each side keeping ``min_leaf`` rows; ``None`` if none reduces it.

    ``order`` is the argsort of every column of the features over all rows and
    ``sorted_x`` the sorted columns, both computed once per fit: the node's rows are
    picked out of them in sorted order, with no sort per node."""
    m = len(rows)
    if m < 2 * min_leaf:
        return None
    member = np.zeros(len(r), dtype=bool)
    member[rows] = True
    keep = member[order].T
    d = order.shape[1]
    node_order = order.T[keep].reshape(d, m).T  # (m, d): the node's rows, sorted per column
    xs = sorted_x.T[keep].reshape(d, m).T
    left = np.cumsum(r[node_order], axis=0)[min_leaf - 1:m - min_leaf]  # sums up to the cut
    n_left = np.arange(min_leaf, m - min_leaf + 1, dtype=np.float64)[:, None]
    total = r[rows].sum()
    gain = left**2 / n_left + (total - left) ** 2 / (m - n_left)
    distinct = xs[min_leaf - 1:m - min_leaf] < xs[min_leaf:m - min_leaf + 1]
    gain = np.where(distinct, gain, -np.inf)
    i, f = np.unravel_index(int(np.argmax(gain)), gain.shape)
    if not gain[i, f] > total**2 / m * (1 + 1e-12) + 1e-12:
        return None
    row = i + min_leaf - 1
    return int(f), float((xs[row, f] + xs[row + 1, f]) / 2)


@register_predictor
class BoostedTrees(Predictor):
    """Gradient-boosted regression trees (least squares, shrinkage, row subsampling).

    Args:
        n_trees: boosting rounds.
        learning_rate: shrinkage of each tree's contribution.
        max_depth: depth of every tree (2**max_depth leaves at most).
        min_leaf: fewest training rows in a leaf.
        subsample: share of rows each tree is grown on (1.0: all).
        seed: seeds the row subsampling.
    """

    name = "trees"
    has_std = False

    def __init__(self, *, n_trees: int = 200, learning_rate: float = 0.05, max_depth: int = 3,
                 min_leaf: int = 5, subsample: float = 0.8, seed: int = 0):
        for key, value, low in (("n_trees", n_trees, 1), ("max_depth", max_depth, 1),
                                ("min_leaf", min_leaf, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise PredictorError(f"trees: {key} must be an integer >= {low}, got {value!r}")
        if max_depth > 8:
            raise PredictorError(f"trees: max_depth must be <= 8, got {max_depth}")
        if not 0 < learning_rate <= 1:
            raise PredictorError(f"trees: learning_rate must be in (0, 1], got {learning_rate!r}")
        if not 0 < subsample <= 1:
            raise PredictorError(f"trees: subsample must be in (0, 1], got {subsample!r}")
        self.n_trees, self.learning_rate, self.max_depth = int(n_trees), float(learning_rate), int(max_depth)
        self.min_leaf, self.subsample, self.seed = int(min_leaf), float(subsample), int(seed)
        self.feature: np.ndarray | None = None  # (n_trees, 2**depth - 1) split features
        self.threshold: np.ndarray | None = None  # (n_trees, 2**depth - 1), +inf: no split
        self.leaf: np.ndarray | None = None  # (n_trees, 2**depth) leaf values
        self.init = 0.0
        self.n_features = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> BoostedTrees:
        X, y = self._check_xy(X, y)
        n, d = X.shape
        rng = np.random.default_rng(self.seed)
        n_inner, n_leaf = 2**self.max_depth - 1, 2**self.max_depth
        feature = np.zeros((self.n_trees, n_inner), dtype=np.int64)
        threshold = np.full((self.n_trees, n_inner), np.inf)
        leaf = np.zeros((self.n_trees, n_leaf))
        self.init = float(y.mean())
        pred = np.full(n, self.init)
        n_rows = max(2 * self.min_leaf, int(round(self.subsample * n)))
        order = np.argsort(X, axis=0, kind="stable")
        sorted_x = np.take_along_axis(X, order, axis=0)
        for t in range(self.n_trees):
            resid = y - pred
            grow = np.sort(rng.choice(n, n_rows, replace=False)) if n_rows < n else np.arange(n)
            grow_mask = np.zeros(n, dtype=bool)
            grow_mask[grow] = True
            node = np.zeros(n, dtype=np.int64)  # position of each row within its level
            for depth in range(self.max_depth):
                base = 2**depth - 1
                for j in range(2**depth):
                    rows = np.flatnonzero(grow_mask & (node == j))
                    split = _best_split(resid, order, sorted_x, rows, self.min_leaf)
                    if split is not None:
                        feature[t, base + j], threshold[t, base + j] = split
                h = base + node
                node = 2 * node + (X[np.arange(n), feature[t, h]] > threshold[t, h])
            sums = np.bincount(node[grow], weights=resid[grow], minlength=n_leaf)
            counts = np.bincount(node[grow], minlength=n_leaf)
            leaf[t] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
            pred += self.learning_rate * leaf[t, node]
        self.feature, self.threshold, self.leaf, self.n_features = feature, threshold, leaf, d
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, None]:
        self._check_fitted(self.leaf is not None)
        X, _ = self._check_xy(X)
        if X.shape[1] != self.n_features:
            raise PredictorError(f"trees: X has {X.shape[1]} features, the model was fitted on "
                                 f"{self.n_features}")
        n, trees = len(X), np.arange(self.n_trees)[None, :]
        node = np.zeros((n, self.n_trees), dtype=np.int64)
        for depth in range(self.max_depth):
            h = 2**depth - 1 + node
            go_right = X[np.arange(n)[:, None], self.feature[trees, h]] > self.threshold[trees, h]
            node = 2 * node + go_right
        return self.init + self.learning_rate * self.leaf[trees, node].sum(1), None

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted(self.leaf is not None)
        return ({"feature": self.feature.astype(np.int64), "threshold": self.threshold.astype(np.float64),
                 "leaf": self.leaf.astype(np.float64)},
                {"n_trees": self.n_trees, "learning_rate": self.learning_rate,
                 "max_depth": self.max_depth, "min_leaf": self.min_leaf,
                 "subsample": self.subsample, "seed": self.seed, "init": self.init,
                 "n_features": self.n_features})

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> BoostedTrees:
        what = "trees predictor"
        try:
            model = cls(**{k: need_key(config, k, what) for k in (
                "n_trees", "learning_rate", "max_depth", "min_leaf", "subsample", "seed")})
        except PredictorError as e:
            raise ArtifactError(f"{what}: {e}") from None
        n_inner, n_leaf = 2**model.max_depth - 1, 2**model.max_depth
        model.feature = need_tensor(tensors, "feature", what, (model.n_trees, n_inner)).astype(np.int64)
        model.threshold = need_tensor(tensors, "threshold", what, (model.n_trees, n_inner)).astype(np.float64)
        model.leaf = need_tensor(tensors, "leaf", what, (model.n_trees, n_leaf)).astype(np.float64)
        model.init = float(need_key(config, "init", what))
        model.n_features = int(need_key(config, "n_features", what))
        if model.feature.size and not (0 <= model.feature.min() and model.feature.max() < model.n_features):
            raise ArtifactError(f"{what}: split features out of range 0..{model.n_features - 1}; "
                                f"the file is corrupted")
        return model
