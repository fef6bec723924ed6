"""An ensemble averaging predictors of other families.

The mean is the average of the members' means. The standard deviation treats the
members as a mixture: ``sqrt(mean(var_k) + var(mean_k))`` over the members, where
members without their own uncertainty contribute only to the spread of the means.
Different model families make different errors, so the average often ranks better
than any single member (as in the NAS predictor study of White et al., 2021).

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3)); y = X[:, 0] + 0.1 * X[:, 1]
    >>> model = Ensemble(members=("ridge", "gp"), member_kwargs={"gp": {"restarts": 0}})
    >>> mean, std = model.fit(X, y).predict(X[:5])
    >>> mean.shape, std.shape
    ((5,), (5,))
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.errors import ArtifactError
from nas.predictors.base import (
    PREDICTORS,
    Predictor,
    PredictorError,
    make_predictor,
    need_key,
    predictor_names,
    register_predictor,
)

__all__ = ["Ensemble"]


@register_predictor
class Ensemble(Predictor):
    """Average of one predictor per family in ``members``.

    Args:
        members: family names (any registered family but ``ensemble``), no repeats.
        member_kwargs: hyperparameters per member family, e.g. ``{"mlp": {"epochs": 300}}``.
        seed: passed to every member that takes a ``seed``.
    """

    name = "ensemble"
    has_std = True

    def __init__(self, *, members: Sequence[str] = ("mlp", "gp", "ridge"),
                 member_kwargs: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0):
        members = tuple(members)
        valid = [n for n in predictor_names() if n != self.name]
        if not members or len(set(members)) != len(members) or any(m not in valid for m in members):
            raise PredictorError(f"ensemble: members must be distinct names among "
                                 f"{', '.join(valid)}, got {list(members)}")
        member_kwargs = {k: dict(v) for k, v in (member_kwargs or {}).items()}
        extra = sorted(set(member_kwargs) - set(members))
        if extra:
            raise PredictorError(f"ensemble: member_kwargs for {', '.join(extra)}, which are not "
                                 f"members ({', '.join(members)})")
        self.members, self.member_kwargs, self.seed = members, member_kwargs, int(seed)
        self.models: list[Predictor] = []
        for name in members:
            kw = dict(member_kwargs.get(name, {}))
            if "seed" in _takes(name) and "seed" not in kw:
                kw["seed"] = self.seed
            self.models.append(make_predictor(name, **kw))
        self._fitted = False

    def fit(self, X: np.ndarray, y: np.ndarray) -> Ensemble:
        X, y = self._check_xy(X, y)
        for model in self.models:
            model.fit(X, y)
        self._fitted = True
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted(self._fitted)
        means, variances = [], []
        for model in self.models:
            mean, std = model.predict(X)
            means.append(mean)
            if std is not None:
                variances.append(std**2)
        means = np.stack(means)
        var = means.var(0) + (np.mean(variances, axis=0) if variances else 0.0)
        return means.mean(0), np.sqrt(var)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted(self._fitted)
        tensors: dict[str, np.ndarray] = {}
        configs = []
        for i, model in enumerate(self.models):
            t, c = model.state()
            tensors.update({f"m{i}.{k}": v for k, v in t.items()})
            configs.append({"family": model.name, "config": c})
        return tensors, {"members": list(self.members), "member_kwargs": self.member_kwargs,
                         "seed": self.seed, "fitted": configs}

    @classmethod
    def from_state(cls, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> Ensemble:
        what = "ensemble predictor"
        model = cls(members=need_key(config, "members", what),
                    member_kwargs=need_key(config, "member_kwargs", what),
                    seed=need_key(config, "seed", what))
        fitted = need_key(config, "fitted", what)
        if not isinstance(fitted, list) or len(fitted) != len(model.members):
            raise ArtifactError(f"{what}: expected {len(model.members)} fitted members")
        for i, (name, entry) in enumerate(zip(model.members, fitted)):
            if not isinstance(entry, dict) or entry.get("family") != name:
                raise ArtifactError(f"{what}: member {i} is not a fitted {name!r} predictor")
            prefix = f"m{i}."
            sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            model.models[i] = PREDICTORS[name].from_state(sub, need_key(entry, "config", what))
        model._fitted = True
        return model


def _takes(name: str) -> set[str]:
    import inspect

    return set(inspect.signature(PREDICTORS[name].__init__).parameters)
