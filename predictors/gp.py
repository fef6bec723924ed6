"""Gaussian-process regression on architecture encodings (Rasmussen & Williams, 2006).

scikit-learn's ``GaussianProcessRegressor`` with a scaled Matern or RBF kernel plus
a ``WhiteKernel`` for evaluation noise. Automatic relevance determination (one length
scale per feature, ``ard=True``, as in BO-based NAS) is optional: on the tiny32/digits
benchmark it ranked no better than one shared length scale and fitted ~30x slower.
The predictive standard deviation includes the noise term.

On small, noisy training sets the marginal likelihood can peak at a *flat* fit: all of
the variance called noise (or a length scale far beyond the data), a posterior mean that
is the same for every architecture, so the predictor ranks nothing (one draw of three
at 25 and at 50 training-speed labels in ``bench/results/train_speed_learn_cifar10-jpeg_cpu.md``).
:meth:`GaussianProcess.fit` therefore keeps every local optimum of the likelihood (the
first start, the random restarts, and one start at the median distance between training
points) and takes the most likely one whose posterior mean over the training points
varies by more than :data:`FLAT` of the targets' spread. When every optimum is flat it
fits again with the noise bounded by :data:`NOISE_FALLBACK` of the targets' variance (a
prior that the targets carry signal: seed noise is ~1% of the variance of CIFAR-10
training-speed labels); only if that is flat too does it keep the most likely fit, and
says so in :attr:`GaussianProcess.flat`. Whenever the most likely fit is not flat, it
is the one kept (the median start only adds a candidate).

Saved without pickle: the state is the training inputs and targets plus the fitted
kernel hyperparameters (``theta``, log scale). Loading rebuilds the same kernel with
that ``theta`` and re-runs the (deterministic) Cholesky fit with the optimizer off.
:meth:`GaussianProcess.fit` itself ends with that same rebuild, so a model predicts
bit-identically before and after a save/load round trip.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(40, 2)); y = np.sin(3 * X[:, 0]) + X[:, 1]
    >>> mean, std = GaussianProcess(restarts=0).fit(X, y).predict(X[:3])
    >>> mean.shape, bool((std > 0).all())
    ((3,), True)
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.optimize
from scipy.spatial.distance import pdist
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, Matern, WhiteKernel
from threadpoolctl import threadpool_limits

from nas.errors import ArtifactError
from nas.predictors.base import Predictor, PredictorError, need_key, need_tensor, register_predictor

__all__ = ["GaussianProcess", "KERNELS", "FLAT", "NOISE_FALLBACK"]

KERNELS = ("matern", "rbf")
_NUS = (0.5, 1.5, 2.5)
FLAT = 1e-2  # a fit whose training-point means spread less than this share of y's: flat
NOISE_FALLBACK = 0.5  # noise bound (share of y's variance) of the refit when every fit is flat


def _kernel(kind: str, nu: float, ard: bool, dim: int, noise: float,
            length: float = 1.0, noise_max: float = 1.0) -> Kernel:
    scale = np.full(dim, length) if ard else length
    base = Matern(length_scale=scale, length_scale_bounds=(1e-2, 1e3), nu=nu) if kind == "matern" \
        else RBF(length_scale=scale, length_scale_bounds=(1e-2, 1e3))
    return (ConstantKernel(1.0, (1e-3, 1e3)) * base
            + WhiteKernel(min(noise, noise_max), (1e-6, noise_max)))


def _recorder(optima: list[tuple[float, np.ndarray]]):
    """An optimizer for ``GaussianProcessRegressor``: scikit-learn's own L-BFGS-B run, which
    also appends each local optimum to ``optima`` (scikit-learn keeps only the best)."""
    def optimize(obj_func, initial_theta, bounds):
        res = scipy.optimize.minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True,
                                      bounds=bounds)
        fun = float(res.fun) if np.isfinite(res.fun) else float("inf")
        optima.append((fun, np.asarray(res.x, dtype=np.float64)))
        return res.x, res.fun
    return optimize


@register_predictor
class GaussianProcess(Predictor):
    """GP regression with predictive std; hyperparameters by marginal likelihood.

    Args:
        kernel: ``"matern"`` or ``"rbf"``.
        nu: Matern smoothness, 0.5, 1.5 or 2.5.
        ard: one length scale per feature instead of one shared.
        noise: initial WhiteKernel noise level (relative to a unit-variance target).
        restarts: extra random restarts of the likelihood optimiser.
        seed: seeds the restarts.
    """

    name = "gp"
    has_std = True

    def __init__(self, *, kernel: str = "matern", nu: float = 2.5, ard: bool = False,
                 noise: float = 0.1, restarts: int = 2, seed: int = 0):
        if kernel not in KERNELS:
            raise PredictorError(f"gp: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if float(nu) not in _NUS:
            raise PredictorError(f"gp: nu must be one of {_NUS}, got {nu!r}")
        if not 0 < noise <= 1:
            raise PredictorError(f"gp: noise must be in (0, 1], got {noise!r}")
        if int(restarts) != restarts or restarts < 0:
            raise PredictorError(f"gp: restarts must be an integer >= 0, got {restarts!r}")
        self.kernel, self.nu, self.ard = kernel, float(nu), bool(ard)
        self.noise, self.restarts, self.seed = float(noise), int(restarts), int(seed)
        self._gpr: GaussianProcessRegressor | None = None
        self._X: np.ndarray | None = None
        self._y: np.ndarray | None = None
        self.theta: np.ndarray | None = None
        self.flat = False  # every likelihood optimum found predicts a constant

    def _config(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "nu": self.nu, "ard": self.ard, "noise": self.noise,
                "restarts": self.restarts, "seed": self.seed}

    def _rebuild(self, X: np.ndarray, y: np.ndarray, theta: np.ndarray) -> None:
        """Exact fit with fixed hyperparameters: the one path shared by fit and load."""
        kern = _kernel(self.kernel, self.nu, self.ard, X.shape[1], self.noise)
        if theta.shape != kern.theta.shape:
            raise ArtifactError(f"gp predictor: theta has {theta.shape[0]} values, the kernel "
                                f"needs {kern.theta.shape[0]}; the file is corrupted")
        gpr = GaussianProcessRegressor(kern.clone_with_theta(theta), optimizer=None,
                                       normalize_y=True)
        with threadpool_limits(limits=1, user_api="blas"):
            gpr.fit(X, y)
        self._gpr, self._X, self._y, self.theta = gpr, X, y, theta

    def fit(self, X: np.ndarray, y: np.ndarray) -> GaussianProcess:
        X, y = self._check_xy(X, y)
        dist = pdist(X) if len(X) > 1 else np.zeros(1)
        median = float(np.median(dist[dist > 0])) if (dist > 0).any() else 1.0
        optima: list[tuple[float, np.ndarray]] = []
        for noise_max in (1.0, NOISE_FALLBACK):
            found = self._optima(X, y, float(np.clip(median, 1e-2, 1e3)), noise_max)
            optima += found
            for _, theta in found:  # the most likely first
                self._rebuild(X, y, theta)
                self.flat = self._is_flat(X, y)
                if not self.flat:
                    return self
        self._rebuild(X, y, min(optima, key=lambda o: o[0])[1])  # all flat: the most likely
        return self

    def _optima(self, X: np.ndarray, y: np.ndarray, median: float,
                noise_max: float) -> list[tuple[float, np.ndarray]]:
        """(-log likelihood, theta) of every local optimum found from the default start, the
        random restarts and a start at the median distance, the most likely first."""
        optima: list[tuple[float, np.ndarray]] = []
        starts = [(1.0, self.restarts, np.random.RandomState(self.seed)), (median, 0, None)]
        # small matrices: one BLAS thread is fastest and immune to CPU contention
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            for length, restarts, rng in starts:
                kern = _kernel(self.kernel, self.nu, self.ard, X.shape[1], self.noise, length,
                               noise_max)
                GaussianProcessRegressor(kern, normalize_y=True, optimizer=_recorder(optima),
                                         n_restarts_optimizer=restarts,
                                         random_state=rng).fit(X, y)
        return sorted(optima, key=lambda o: o[0])  # stable: earlier runs win ties

    def _is_flat(self, X: np.ndarray, y: np.ndarray) -> bool:
        """Does the fitted posterior mean hardly vary over the training points?"""
        spread = float(np.std(y))
        if spread == 0:
            return False  # constant targets: a constant prediction is the right answer
        return float(np.std(self._gpr.predict(X))) < FLAT * spread

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted(self._gpr is not None)
        X, _ = self._check_xy(X)
        if X.shape[1] != self._X.shape[1]:
            raise PredictorError(f"gp: X has {X.shape[1]} features, fitted on {self._X.shape[1]}")
        mean, std = self._gpr.predict(X, return_std=True)
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def fitted_kernel(self) -> str:
        """The fitted kernel, as scikit-learn prints it (for reports)."""
        self._check_fitted(self._gpr is not None)
        return str(self._gpr.kernel_)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted(self._gpr is not None)
        return ({"X": self._X, "y": self._y, "theta": self.theta},
                {**self._config(), "fitted_kernel": self.fitted_kernel()})

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray],
                   config: Mapping[str, Any]) -> GaussianProcess:
        what = "gp predictor"
        try:
            model = cls(**{k: need_key(config, k, what) for k in
                           ("kernel", "nu", "ard", "noise", "restarts", "seed")})
        except PredictorError as e:
            raise ArtifactError(f"{what}: bad hyperparameters in the file: {e}") from None
        X = need_tensor(tensors, "X", what, (None, None)).astype(np.float64)
        y = need_tensor(tensors, "y", what, (X.shape[0],)).astype(np.float64)
        theta = need_tensor(tensors, "theta", what, (None,)).astype(np.float64)
        if not (np.isfinite(X).all() and np.isfinite(y).all() and np.isfinite(theta).all()):
            raise ArtifactError(f"{what}: stored arrays contain NaN or infinite values")
        model._rebuild(X, y, theta)
        model.flat = model._is_flat(X, y)
        return model
