"""Hardware-aware architecture search on Ray Tune under a latency budget.

Searchers (:data:`SEARCHERS`): regularized ``evolution``, Optuna's ``tpe``, ``gp`` and
``nsga2`` (through Ray's ``OptunaSearch``, the budget as an Optuna constraint), and
``random``. Each Ray trial evaluates a batch of archs with an :class:`Objective`
(``predictor``: latency table + accuracy predictor; ``supernet``: inherited weights;
``synthetic``: a formula for tests). A run dir holds ``config.json``, the trial log
``trials.jsonl`` (resumable), ``trials.csv``, ``pareto.csv``, ``pareto.png`` and
``best.yaml``.

Example:
    >>> from nas.search import SearchConfig, run_search
    >>> cfg = SearchConfig(space="tiny32", table="t.json", predictor="acc_pred",
    ...                    budget_ms=0.9, searcher="evolution", trials=1000,
    ...                    out="runs/search")  # doctest: +SKIP
    >>> run_search(cfg).best["acc"]  # doctest: +SKIP
"""
from __future__ import annotations

from nas.search.config import OBJECTIVE_NAMES, SearchConfig, SearchError
from nas.search.objective import (
    Objective,
    PredictorObjective,
    SupernetObjective,
    SyntheticObjective,
)
from nas.search.pareto import hypervolume, pareto_front
from nas.search.runner import SearchResult, resume_search, run_search

__all__ = [
    "SearchConfig", "SearchError", "SearchResult", "run_search", "resume_search", "SEARCHERS",
    "make_searcher", "OBJECTIVE_NAMES", "Objective", "PredictorObjective", "SupernetObjective",
    "SyntheticObjective", "pareto_front", "hypervolume",
]


def __getattr__(name: str):
    # The searchers import Ray Tune's search and Optuna; a Ray worker that only runs the
    # trainable (nas.search.runner.evaluate_batch) is spared those imports.
    if name in ("SEARCHERS", "make_searcher"):
        from nas.search import searchers

        return getattr(searchers, name)
    raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
