"""A local correction of the calibrated prediction, learned from measured subnets.

The linear calibration (:mod:`nas.latency.calibrate`) fits what all subnets share; what
is left differs from arch to arch by a few percent (sd ~4% at batch 1 on this project's
VM), and similar archs share it: on 120 held-out tiny32 subnets at batch 1, this
correction fed the 5 nearest other held-out subnets in the arch encoding
(:func:`nas.encoding.encode_arch`) as measured took MAPE from 3.55% to 2.09% (2.83% to
2.45% on another seed; ``bench/bench_residual.py``). A search
is drawn to exactly the archs the table predicts too fast (they fit the budget and are
more accurate), so that left-over error piles up in its picks: a `nas run` report measured
its 5 picks 5-12% slower than predicted.

So the table models the log residual ``log(measured / calibrated)`` of its measured
subnets (calibration samples, and the picks ``nas verify`` timed) as a Gaussian process
(Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, ch. 2 and 5)
over the arch encoding: an RBF kernel plus a noise term floored at :data:`NOISE_FLOOR`
(the ground truth's own repeatability), hyperparameters by marginal likelihood
(scikit-learn), zero mean. Near measured archs the prediction moves toward what they
measured; far from them the correction fades to zero and the linear calibration stands.
Samples the robust linear fit gave no weight are kept here: an arch far off the line is
what this correction is for.

Only the hyperparameters are stored (``calibration["residual"]``); the weights are
recomputed from the samples when a table loads, with numpy only.

Example:
    >>> res = Residual.fit(X, np.log(y / linear))  # doctest: +SKIP
    >>> pred = linear_q * np.exp(res(Xq))  # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["Residual", "MIN_SAMPLES", "NOISE_FLOOR"]

MIN_SAMPLES = 8  # fewer measured subnets than this: no correction
NOISE_FLOOR = 2.5e-4  # log-residual variance floor: (1.6%)^2, timing two copies of a model
MAX_AMPLITUDE = 0.05  # (22%)^2: a correction larger than this is not a residual


class Residual:
    """A fitted correction: ``self(X)`` is the predicted log residual of encoded archs.

    Args:
        params: ``amplitude`` (variance), ``length_scale``, ``noise`` (variance).
        X: encodings of the measured archs, ``(n, d)``.
        r: their log residuals, ``(n,)``.
    """

    def __init__(self, params: dict[str, float], *, X: np.ndarray, r: np.ndarray):
        self.params = {k: float(params[k]) for k in ("amplitude", "length_scale", "noise")}
        self.X = np.asarray(X, np.float64)
        self._sq = (self.X ** 2).sum(1)
        K = self._k(self.X) + self.params["noise"] * np.eye(len(self.X))
        self.alpha = np.linalg.solve(K, np.asarray(r, np.float64))

    def _k(self, A: np.ndarray) -> np.ndarray:
        d2 = (A ** 2).sum(1)[:, None] + self._sq[None, :] - 2 * A @ self.X.T
        return self.params["amplitude"] * np.exp(-0.5 * np.maximum(d2, 0.0)
                                                 / self.params["length_scale"] ** 2)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        if not len(X):
            return np.zeros(0)
        return self._k(X) @ self.alpha

    @classmethod
    def fit(cls, X: np.ndarray, r: np.ndarray) -> Residual | None:
        """Hyperparameters by marginal likelihood; None with fewer than :data:`MIN_SAMPLES`."""
        X, r = np.asarray(X, np.float64), np.asarray(r, np.float64)
        if len(r) < MIN_SAMPLES:
            return None
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, WhiteKernel
        from sklearn.gaussian_process.kernels import ConstantKernel as Const

        kernel = (Const(1e-3, (1e-6, MAX_AMPLITUDE)) * RBF(1.0, (0.3, 30.0))
                  + WhiteKernel(1e-3, (NOISE_FLOOR, 1e-1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=2, random_state=0).fit(X, r)
        k = gp.kernel_
        params = {"amplitude": k.k1.k1.constant_value, "length_scale": float(k.k1.k2.length_scale),
                  "noise": k.k2.noise_level}
        return cls(params, X=X, r=r)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: round(v, 8) for k, v in self.params.items()}, "n": int(len(self.X))}
