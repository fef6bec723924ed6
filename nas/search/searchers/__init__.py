"""Arch searchers, registered by name; each is a Ray Tune ``Searcher`` proposing batches.

* ``evolution`` -- regularized evolution with constraint repair (:mod:`.evolution`);
* ``tpe``, ``gp``, ``nsga2`` -- Optuna samplers through Ray's ``OptunaSearch``, the
  budget as an Optuna constraint (:mod:`.optuna_search`);
* ``random`` -- uniform random feasible archs, the baseline (:mod:`.random_search`).

Every searcher takes ``space, budget_ms, latency, trials, batch_size, seed`` plus its
own keyword options; :func:`make_searcher` rejects unknown names and options.

Example:
    >>> s = make_searcher("evolution", space=space, budget_ms=1.0, latency=table.predict,
    ...                   trials=500, batch_size=10, seed=0, population_size=32)  # doctest: +SKIP
"""
from __future__ import annotations

import inspect
from typing import Any

from nas.search.searchers.base import ArchSearcher, Draw, Proposal, fitness, sample_feasible
from nas.search.searchers.evolution import EvolutionSearcher
from nas.search.searchers.optuna_search import GPSearcher, NSGA2Searcher, TPESearcher
from nas.search.searchers.random_search import RandomSearcher

__all__ = ["SEARCHERS", "make_searcher", "searcher_options", "ArchSearcher", "Proposal",
           "Draw", "fitness", "sample_feasible"]

SEARCHERS: dict[str, type[ArchSearcher]] = {
    "evolution": EvolutionSearcher,
    "tpe": TPESearcher,
    "gp": GPSearcher,
    "nsga2": NSGA2Searcher,
    "random": RandomSearcher,
}
_COMMON = ("space", "budget_ms", "latency", "trials", "batch_size", "seed")


def searcher_options(name: str) -> list[str]:
    """The searcher-specific keyword options of ``name`` (its own and its sampler's)."""
    cls = SEARCHERS[name]
    params = list(inspect.signature(cls.__init__).parameters)
    if hasattr(cls, "make_sampler"):
        params += list(inspect.signature(cls.make_sampler).parameters)
    return sorted({p for p in params if p not in ("self", "sampler_options") + _COMMON})


def make_searcher(name: str, **kwargs: Any) -> ArchSearcher:
    """Build searcher ``name``; an unknown name or option is a ``ValueError`` listing the valid ones."""
    from nas.search.config import SearchError

    if name not in SEARCHERS:
        raise SearchError(f"unknown searcher {name!r}; valid: {', '.join(SEARCHERS)}")
    allowed = searcher_options(name)
    unknown = [k for k in kwargs if k not in _COMMON and k not in allowed]
    if unknown:
        raise SearchError(f"searcher {name!r} has no option {', '.join(map(repr, unknown))}; "
                          f"its options: {', '.join(allowed) or 'none'}")
    try:
        return SEARCHERS[name](**kwargs)
    except ValueError as e:
        raise SearchError(f"searcher {name!r}: {e}") from None
