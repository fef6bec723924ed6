"""Accuracy predictors for architectures of a search space.

Families (one per module, registered by name in :data:`PREDICTORS`): ``mlp`` (deep
ensemble of small MLPs with a ranking loss), ``gp`` (Gaussian process), ``ridge``
(linear baseline), ``trees`` (gradient-boosted regression trees) and ``ensemble``
(average of other families). Every family
implements :class:`Predictor`; :class:`ArchPredictor` binds a fitted one to a search
space and saves it without pickle. A :class:`TargetMap` (:mod:`nas.predictors.target`)
sets what a family regresses on (by default a blend of accuracy and loss ranks,
less noisy than the accuracy alone) and maps predictions back to accuracy.

Pipeline: ``nas predictor collect`` evaluates subnets of a trained supernet into a
table (:mod:`nas.predictors.collect`), ``nas predictor fit`` cross-validates and fits
(:func:`fit_predictor`), the search loads the result (:func:`load_predictor`).

Example:
    >>> pred = fit_predictor("subnets.csv", model="auto", space=space)  # doctest: +SKIP
    >>> pred.save("acc_predictor")  # doctest: +SKIP
    >>> pred = load_predictor("acc_predictor", space=space)  # doctest: +SKIP
    >>> acc, std = pred.predict_with_std(archs)  # doctest: +SKIP
"""
from __future__ import annotations

from nas.predictors import ensemble, gp, mlp, ridge, trees  # noqa: F401  (register the families)
from nas.predictors.arch_predictor import ArchPredictor, load_predictor
from nas.predictors.base import (
    PREDICTORS,
    Predictor,
    PredictorError,
    make_predictor,
    register_predictor,
)
from nas.predictors.collect import collect_table
from nas.predictors.fitting import AUTO_FAMILIES, cross_validate, fit_predictor
from nas.predictors.metrics import ranking_metrics
from nas.predictors.table import ArchTable, read_table
from nas.predictors.target import TARGETS, TargetMap

__all__ = [
    "Predictor", "PredictorError", "PREDICTORS", "register_predictor", "make_predictor",
    "ArchPredictor", "load_predictor", "fit_predictor", "cross_validate", "AUTO_FAMILIES",
    "ArchTable", "read_table", "ranking_metrics", "collect_table", "TargetMap", "TARGETS",
]
