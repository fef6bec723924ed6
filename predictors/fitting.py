"""Fitting accuracy predictors on a table: cross-validation, model selection, final fit.

:func:`cross_validate` scores one family by k-fold cross-validation (Kendall tau,
Spearman, RMSE, top-k precision on each held-out fold, then mean and std over
folds). :func:`fit_predictor` optionally runs it (``folds``), picks the family with
the best tau when ``model="auto"``, fits on all rows and returns an
:class:`nas.predictors.ArchPredictor` that carries the CV metrics.

Example:
    >>> pred = fit_predictor("runs/subnets.csv", model="auto", space=space, seed=0)  # doctest: +SKIP
    >>> pred.info["cv"]["selected"], pred.predict(archs[:3])  # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors.arch_predictor import ArchPredictor
from nas.predictors.base import PREDICTORS, PredictorError, make_predictor, predictor_names
from nas.predictors.features import ArchEncoder
from nas.predictors.metrics import METRICS, kfold_indices, ranking_metrics
from nas.predictors.table import ArchTable, read_table, table_space
from nas.predictors.target import TARGETS, TargetMap
from nas.space import SearchSpace

__all__ = ["fit_predictor", "cross_validate", "table_features", "resolve_target", "AUTO_FAMILIES"]

AUTO_FAMILIES = ("mlp", "gp", "ridge", "trees", "ensemble")


def _resolve_space(source: Any, space: SearchSpace | None) -> SearchSpace:
    if space is not None:
        return space
    if isinstance(source, (str, Path)):
        found = table_space(source)
        if found is not None:
            return found
    raise PredictorError("no search space: pass space= (or --space), or use a table written by "
                         "'nas predictor collect', which records its space")


def table_features(table: ArchTable, encoder: ArchEncoder) -> np.ndarray:
    """Raw (unstandardised) features of every row, reusing the table's params/MACs."""
    if encoder.complexity and table.params is not None and table.macs is not None \
            and (table.params > 0).all() and (table.macs > 0).all():
        encoder.seed_complexity(table.archs, table.params, table.macs)
    return encoder.encode(table.archs)


def _model_kwargs(family: str, seed: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    kw = dict(kwargs)
    if family in PREDICTORS and "seed" in inspect.signature(PREDICTORS[family].__init__).parameters:
        kw.setdefault("seed", seed)
    return kw


def _fit_arrays(X: np.ndarray, acc: np.ndarray, loss: np.ndarray | None, target: str, family: str,
                kwargs: dict[str, Any], signals: dict[str, np.ndarray] | None = None):
    tmap, y = TargetMap.fit(target, acc, loss, signals)
    x_mean, x_std = X.mean(0), X.std(0)
    x_std = np.where(x_std > 1e-12, x_std, 1.0)
    y_mean, y_std = float(y.mean()), float(y.std())
    y_std = y_std if y_std > 1e-12 else 1.0
    model = make_predictor(family, **kwargs).fit((X - x_mean) / x_std, (y - y_mean) / y_std)
    return model, x_mean, x_std, y_mean, y_std, tmap


def _cv(X: np.ndarray, acc: np.ndarray, loss: np.ndarray | None, target: str, family: str,
        kwargs: dict[str, Any], folds: int, seed: int, top_frac: float,
        signals: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Metrics against the measured accuracy of each held-out fold; for the ``combined``
    and ``signals`` targets, against the target's score of the whole table (in accuracy units), since that
    score, not the inherited accuracy alone, is what the predictor is meant to rank by."""
    truth = acc
    if target in ("combined", "signals"):
        full, z = TargetMap.fit(target, acc, loss, signals)
        truth = full.to_acc(z)
    per_fold = []
    for train, test in kfold_indices(len(acc), folds, np.random.default_rng(seed)):
        model, xm, xs, ym, ys, tmap = _fit_arrays(
            X[train], acc[train], None if loss is None else loss[train], target, family, kwargs,
            {k: v[train] for k, v in (signals or {}).items()})
        mean, _ = model.predict((X[test] - xm) / xs)
        per_fold.append(ranking_metrics(truth[test], tmap.to_acc(mean * ys + ym),
                                        top_frac=top_frac))
    summary: dict[str, Any] = {"family": family, "folds": folds, "top_frac": top_frac,
                               "per_fold": per_fold, "mean": {}, "std": {}}
    for m in METRICS:
        vals = np.array([f[m] for f in per_fold], dtype=np.float64)
        ok = vals[np.isfinite(vals)]
        summary["mean"][m] = float(ok.mean()) if ok.size else math.nan
        summary["std"][m] = float(ok.std()) if ok.size else math.nan
    return summary


def _check_folds(folds: int, n: int) -> None:
    if isinstance(folds, bool) or int(folds) != folds or folds < 2:
        raise PredictorError(f"folds must be an integer >= 2 (or 0 to skip cross-validation), "
                             f"got {folds!r}")
    if folds > n:
        raise PredictorError(f"folds={folds} is more than the {n} rows of the table")


def resolve_target(target: str, tab: ArchTable) -> str:
    """``auto`` is ``combined`` when the table has losses and init signals, ``blend``
    when it has losses, else ``rank``; others are checked."""
    if target == "auto":
        if tab.loss is not None and tab.signals:
            return "combined"
        return "blend" if tab.loss is not None else "rank"
    if target not in TARGETS:
        raise PredictorError(f"target must be auto or one of {', '.join(TARGETS)}, got {target!r}")
    if target == "blend" and tab.loss is None:
        raise PredictorError(f"{tab.source}: target 'blend' needs a loss column (or use --target "
                             f"rank / acc)")
    if target == "combined" and (tab.loss is None or not tab.signals):
        raise PredictorError(f"{tab.source}: target 'combined' needs a loss column and a signal "
                             "column (nas predictor collect --naswot or --train-speed-steps N)")
    if target == "signals" and not tab.signals:
        raise PredictorError(f"{tab.source}: target 'signals' needs a signal column (nas predictor "
                             "collect --train-speed-steps N or --naswot)")
    return target


def cross_validate(table: Any, *, space: SearchSpace | None = None, model: str = "mlp",
                   folds: int = 5, seed: int = 0, complexity: bool = False, top_frac: float = 0.1,
                   target: str = "auto", **kwargs: Any) -> dict[str, Any]:
    """k-fold cross-validation of one family on a table.

    Returns:
        ``{"family", "folds", "per_fold": [metrics...], "mean": {...}, "std": {...}}``
        with the metrics of :data:`nas.predictors.metrics.METRICS`.
    """
    space = _resolve_space(table, space)
    if model not in PREDICTORS:
        raise PredictorError(f"unknown predictor family {model!r}; valid: {', '.join(predictor_names())}")
    tab = read_table(table, space=space)
    _check_folds(folds, len(tab))
    X = table_features(tab, ArchEncoder(space, complexity=complexity))
    return _cv(X, tab.acc, tab.loss, resolve_target(target, tab), model,
               _model_kwargs(model, seed, kwargs), folds, seed, top_frac, tab.signals)


def fit_predictor(table: Any, *, model: str = "mlp", space: SearchSpace | None = None, seed: int = 0,
                  folds: int = 5, complexity: bool = False, top_frac: float = 0.1,
                  target: str = "auto", log: Callable[[str], None] | None = None,
                  **kwargs: Any) -> ArchPredictor:
    """Fit an accuracy predictor on a table of evaluated archs.

    Args:
        table: CSV path, pandas DataFrame, list of row dicts or :class:`ArchTable`.
        model: a family of :data:`nas.predictors.PREDICTORS`, or ``"auto"`` to cross-validate
            :data:`AUTO_FAMILIES` and keep the one with the best Kendall tau.
        space: the search space; read from the table's metadata when omitted.
        seed: seeds the folds and every family that takes a ``seed``.
        folds: k of the k-fold cross-validation; 0 skips it (not allowed with ``auto``).
        complexity: add ``log(params)``/``log(MACs)`` features (slow to predict on new archs).
        top_frac: the share of best archs scored by top-k precision.
        target: what the model regresses on (:mod:`nas.predictors.target`): ``acc``, ``rank``,
            ``blend`` (accuracy and loss ranks), or ``auto`` (``blend`` when the table has
            a loss column, else ``rank``). Predictions are accuracies whatever the target.
        log: called with one line per cross-validated family.
        **kwargs: hyperparameters of the family (not allowed with ``auto``).

    Example:
        >>> pred = fit_predictor("subnets.csv", model="gp", space=space, folds=5)  # doctest: +SKIP
        >>> pred.save("acc_predictor")  # doctest: +SKIP
    """
    space = _resolve_space(table, space)
    families = AUTO_FAMILIES if model == "auto" else (model,)
    if model != "auto" and model not in PREDICTORS:
        raise PredictorError(f"unknown predictor family {model!r}; valid: auto, "
                             f"{', '.join(predictor_names())}")
    if model == "auto" and kwargs:
        raise PredictorError(f"model='auto' takes no hyperparameters, got {', '.join(sorted(kwargs))}")
    if model == "auto" and not folds:
        raise PredictorError("model='auto' needs cross-validation: give folds >= 2")
    tab = read_table(table, space=space)
    if folds:
        _check_folds(folds, len(tab))
    elif len(tab) < 2:
        raise PredictorError(f"{tab.source}: need at least 2 rows to fit, got {len(tab)}")
    make_predictor(families[0], **_model_kwargs(families[0], seed, kwargs))  # reject bad kwargs early
    encoder = ArchEncoder(space, complexity=complexity)
    X = table_features(tab, encoder)
    y = tab.acc
    target = resolve_target(target, tab)
    results: dict[str, Any] = {}
    if folds:
        for fam in families:
            results[fam] = _cv(X, y, tab.loss, target, fam, _model_kwargs(fam, seed, kwargs),
                               folds, seed, top_frac, tab.signals)
            if log is not None:
                m = results[fam]["mean"]
                log(f"{fam}: kendall_tau {m['kendall_tau']:.3f}")
    if model == "auto":
        def score(fam: str) -> float:
            t = results[fam]["mean"]["kendall_tau"]
            return t if math.isfinite(t) else -math.inf

        chosen = max(families, key=score)
    else:
        chosen = model
    fitted, xm, xs, ym, ys, tmap = _fit_arrays(X, y, tab.loss, target, chosen,
                                               _model_kwargs(chosen, seed, kwargs), tab.signals)
    info = {
        "seed": seed,
        "data": {"source": tab.source, "rows": len(tab), "acc_min": float(y.min()),
                 "acc_max": float(y.max()), "acc_mean": float(y.mean())},
        "cv": {"selected": chosen, "requested": model, "families": results} if folds else None,
    }
    pred = ArchPredictor(space=space, model=fitted, x_mean=xm, x_std=xs, y_mean=ym, y_std=ys,
                         target=tmap, complexity=complexity, info=info)
    pred.encoder = encoder  # keep the warm cache
    return pred
