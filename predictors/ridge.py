"""Ridge regression on architecture encodings: the cheap baseline family.

Closed-form ridge (Hoerl & Kennard, 1970) with the penalty chosen per fit by exact
leave-one-out error over a grid, computed from one SVD (the generalised
cross-validation trick of Golub, Heath & Wahba, 1979, without the approximation).
``degree=2`` adds all pairwise products of the features, a second-order model of
interactions between choices. No uncertainty is returned.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3)); y = X @ [1.0, -2.0, 0.5]
    >>> model = Ridge().fit(X, y)
    >>> float(np.abs(model.predict(X)[0] - y).max()) < 0.1
    True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.predictors.base import Predictor, PredictorError, need_key, need_tensor, register_predictor

__all__ = ["Ridge", "poly2"]


def poly2(X: np.ndarray) -> np.ndarray:
    """``X`` followed by the products ``x_i * x_j`` for ``i <= j``."""
    i, j = np.triu_indices(X.shape[1])
    return np.concatenate([X, X[:, i] * X[:, j]], axis=1)


@register_predictor
class Ridge(Predictor):
    """Linear (or quadratic) ridge regression; penalty picked by leave-one-out error.

    Args:
        alphas: candidate L2 penalties; the one with the lowest exact LOO error wins.
        degree: 1 for linear features, 2 to add pairwise products.
    """

    name = "ridge"
    has_std = False

    def __init__(self, *, alphas: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
                 degree: int = 1):
        alphas = tuple(float(a) for a in alphas)
        if not alphas or any(not a > 0 for a in alphas):
            raise PredictorError(f"ridge: alphas must be a non-empty list of positive numbers, "
                                 f"got {list(alphas)}")
        if degree not in (1, 2):
            raise PredictorError(f"ridge: degree must be 1 or 2, got {degree!r}")
        self.alphas, self.degree = alphas, degree
        self.coef: np.ndarray | None = None
        self.intercept = 0.0
        self.alpha: float | None = None

    def _design(self, X: np.ndarray) -> np.ndarray:
        return poly2(X) if self.degree == 2 else X

    def fit(self, X: np.ndarray, y: np.ndarray) -> Ridge:
        X, y = self._check_xy(X, y)
        Z = self._design(X)
        zm, ym = Z.mean(0), y.mean()
        Zc, yc = Z - zm, y - ym
        U, s, Vt = np.linalg.svd(Zc, full_matrices=False)
        Uty = U.T @ yc
        best = None
        for a in self.alphas:
            shrink = s**2 / (s**2 + a)
            fitted = U @ (shrink * Uty)
            hat = (U**2) @ shrink + 1.0 / len(y)  # the intercept adds 1/n to the leverage
            loo = (yc - fitted) / np.clip(1.0 - hat, 1e-9, None)
            err = float(np.mean(loo**2))
            if best is None or err < best[0] - 1e-12:
                best = (err, a)
        self.alpha = best[1]
        self.coef = Vt.T @ (s / (s**2 + self.alpha) * Uty)
        self.intercept = float(ym - zm @ self.coef)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, None]:
        self._check_fitted(self.coef is not None)
        X, _ = self._check_xy(X)
        Z = self._design(X)
        if Z.shape[1] != self.coef.shape[0]:
            raise PredictorError(f"ridge: X has {X.shape[1]} features, the model was fitted on "
                                 f"another number")
        return Z @ self.coef + self.intercept, None

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted(self.coef is not None)
        return ({"coef": self.coef.astype(np.float64)},
                {"alphas": list(self.alphas), "degree": self.degree, "alpha": self.alpha,
                 "intercept": self.intercept})

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> Ridge:
        what = "ridge predictor"
        model = cls(alphas=need_key(config, "alphas", what), degree=need_key(config, "degree", what))
        model.coef = need_tensor(tensors, "coef", what, (None,)).astype(np.float64)
        model.alpha = float(need_key(config, "alpha", what))
        model.intercept = float(need_key(config, "intercept", what))
        return model
