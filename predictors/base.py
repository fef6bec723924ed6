"""The predictor plugin interface and its registry.

A :class:`Predictor` is a regression model on fixed-length feature vectors, in the
spirit of optuna's samplers: an ABC with four abstract methods and no hidden state
beyond its fitted parameters. Families register themselves by name in
:data:`PREDICTORS`; :func:`make_predictor` builds one from its name and keyword
hyperparameters, rejecting unknown names and unknown arguments with the valid ones.

Predictors never see architectures: :class:`nas.predictors.ArchPredictor` turns archs
into standardised feature vectors and standardises the target, so every family can
assume inputs and targets of roughly unit scale.

Example:
    >>> model = make_predictor("ridge", alphas=(1.0,))
    >>> model = model.fit(np.eye(4), np.arange(4.0))
    >>> mean, std = model.predict(np.eye(4))
    >>> std is None
    True
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from nas.errors import ArtifactError, NasError

__all__ = ["Predictor", "PredictorError", "PREDICTORS", "register_predictor", "make_predictor",
           "predictor_names", "need_tensor", "need_key"]


class PredictorError(NasError):
    """A predictor family, hyperparameter or input is invalid."""


class Predictor(ABC):
    """A regressor ``X (n, d) -> y (n,)`` with optional predictive uncertainty.

    Call order: ``__init__`` (keyword hyperparameters only, validated there), then
    :meth:`fit` once, then :meth:`predict` any number of times. :meth:`state` of a
    fitted predictor and :meth:`from_state` round-trip it exactly: the rebuilt
    predictor returns bit-identical predictions. The state holds only arrays and
    JSON values, so it is saved without pickle.

    Subclasses set :attr:`name` (the registry key) and ``has_std`` (whether
    :meth:`predict` returns a standard deviation).
    """

    name: ClassVar[str] = ""
    has_std: bool = False

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray) -> Predictor:
        """Fit on features ``X`` (n, d) and targets ``y`` (n,); return ``self``."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictive mean (n,) and standard deviation (n,) or ``None``."""

    @abstractmethod
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (saved as safetensors) and a JSON-able config that rebuild the fitted model."""

    @classmethod
    @abstractmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> Predictor:
        """Rebuild a fitted predictor from :meth:`state`; raise ``ArtifactError`` if inconsistent."""

    # -- helpers shared by the families -------------------------------------------------

    @staticmethod
    def _check_xy(X: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise PredictorError(f"X must be a 2-d array (n, d), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise PredictorError("X contains NaN or infinite values")
        if y is None:
            return X, None
        y = np.asarray(y, dtype=np.float64).ravel()
        if y.shape[0] != X.shape[0]:
            raise PredictorError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
        if X.shape[0] < 2:
            raise PredictorError(f"need at least 2 training points, got {X.shape[0]}")
        if not np.isfinite(y).all():
            raise PredictorError("y contains NaN or infinite values")
        return X, y

    def _check_fitted(self, fitted: bool) -> None:
        if not fitted:
            raise PredictorError(f"predictor {self.name!r} is not fitted; call fit(X, y) first")


PREDICTORS: dict[str, type[Predictor]] = {}


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator adding a :class:`Predictor` family to :data:`PREDICTORS`."""
    if not cls.name or cls.name in PREDICTORS:
        raise PredictorError(f"predictor family name {cls.name!r} is empty or already registered")
    PREDICTORS[cls.name] = cls
    return cls


def predictor_names() -> list[str]:
    return sorted(PREDICTORS)


def _hyperparameters(cls: type[Predictor]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind == p.KEYWORD_ONLY]


def make_predictor(name: str, **kwargs: Any) -> Predictor:
    """Build an unfitted predictor of family ``name``.

    Raises:
        PredictorError: unknown family (the message lists the registered ones) or an
            unknown hyperparameter (the message lists the allowed ones).
    """
    if name not in PREDICTORS:
        raise PredictorError(f"unknown predictor family {name!r}; valid: {', '.join(predictor_names())}")
    cls = PREDICTORS[name]
    allowed = _hyperparameters(cls)
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise PredictorError(f"predictor {name!r}: unknown argument(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(allowed)}")
    return cls(**kwargs)


def need_key(config: Mapping[str, Any], key: str, what: str) -> Any:
    """``config[key]`` or an :class:`ArtifactError` naming the missing key."""
    if key not in config:
        raise ArtifactError(f"{what}: config has no {key!r}; the file is corrupted or from "
                            f"another version")
    return config[key]


def need_tensor(tensors: Mapping[str, np.ndarray], key: str, what: str,
                shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """``tensors[key]`` checked against ``shape`` (``None`` entries match any size)."""
    if key not in tensors:
        raise ArtifactError(f"{what}: weights have no tensor {key!r}; the file is corrupted")
    t = np.asarray(tensors[key])
    if shape is not None and (t.ndim != len(shape) or any(
            s is not None and s != n for s, n in zip(shape, t.shape))):
        raise ArtifactError(f"{what}: tensor {key!r} has shape {t.shape}, expected {shape}")
    return t
