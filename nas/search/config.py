"""The resolved configuration of one search, saved as ``config.json`` in its run dir.

A :class:`SearchConfig` says *what* is searched (space, objective and its artefacts,
budget, searcher, number of trials, seed); where it runs (``address``, ``workers``)
is a runtime choice that a resumed search may change.

Example:
    >>> cfg = SearchConfig(space="tiny32", objective="synthetic", budget_ms=1.0,
    ...                    searcher="evolution", trials=200, out="runs/s")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.settings import setting

__all__ = ["SearchError", "SearchConfig", "OBJECTIVE_NAMES", "RUNTIME_FIELDS"]

OBJECTIVE_NAMES = ("predictor", "supernet", "synthetic")
# Fields a resumed search may change: where it runs, not what it searches.
RUNTIME_FIELDS = ("address", "workers", "out")


class SearchError(NasError):
    """A search configuration, budget or run directory is invalid."""


@dataclass(frozen=True)
class SearchConfig:
    """Everything needed to (re)build a search.

    Args:
        space: search space YAML path or shipped name.
        budget_ms: latency budget; an arch is feasible when its table latency is at most this.
        out: the run directory.
        searcher: a name of :data:`nas.search.SEARCHERS`.
        trials: number of archs to evaluate.
        objective: ``predictor`` (table + predictor), ``supernet`` (inherited weights on
            the run's val split, latency from the table) or ``synthetic`` (a formula;
            tests and benchmarks).
        table: latency table (``nas profile``); needed by ``predictor`` and ``supernet``.
        predictor: accuracy predictor (``nas predictor fit``); needed by ``predictor``.
        run: supernet run dir (``nas train``); needed by ``supernet``.
        seed: seeds the searcher.
        workers: concurrent Ray trials (default: CPUs of the Ray cluster).
        batch_size: archs per Ray trial (default: chosen from ``trials`` and the objective).
        gpus_per_trial: GPUs each Ray trial requests (default: 1 for ``supernet`` when the
            cluster has GPUs, else 0).
        address: Ray cluster to attach to (default: ``RAY_ADDRESS``, else an embedded one).
        options: keyword arguments of the searcher (e.g. ``population_size``).
    """

    space: str
    budget_ms: float
    out: str
    searcher: str = setting("evolution", "a searcher of nas.search.SEARCHERS (evolution, "
                            "tpe, gp, nsga2, random)")
    trials: int = setting(1000, "archs to evaluate", check=lambda v: v >= 1, rule=">= 1")
    objective: str = "predictor"
    table: str | None = None
    predictor: str | None = None
    run: str | None = None
    seed: int = 0
    workers: int | None = setting(None, "concurrent Ray trials (default: the cluster's CPUs)",
                                  check=lambda v: v >= 1, rule=">= 1")
    batch_size: int | None = None
    gpus_per_trial: float | None = None
    address: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from nas.search.searchers import SEARCHERS

        if self.searcher not in SEARCHERS:
            raise SearchError(f"unknown searcher {self.searcher!r}; valid: {', '.join(SEARCHERS)}")
        if self.objective not in OBJECTIVE_NAMES:
            raise SearchError(f"unknown objective {self.objective!r}; valid: "
                              f"{', '.join(OBJECTIVE_NAMES)}")
        _positive_number(self.budget_ms, "budget_ms (--budget-ms)")
        _positive_int(self.trials, "trials (--trials)")
        for name in ("workers", "batch_size"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), f"{name} (--{name.replace('_', '-')})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SearchError(f"seed (--seed) must be a non-negative integer, got {self.seed!r}")
        if self.gpus_per_trial is not None and (
                isinstance(self.gpus_per_trial, bool) or not isinstance(self.gpus_per_trial, (int, float))
                or self.gpus_per_trial < 0):
            raise SearchError(f"gpus_per_trial (--gpus-per-trial) must be >= 0, "
                              f"got {self.gpus_per_trial!r}")
        needs = {"predictor": ("table", "predictor"), "supernet": ("table", "run"),
                 "synthetic": ()}[self.objective]
        missing = [n for n in needs if not getattr(self, n)]
        if missing:
            flags = ", ".join(f"--{n}" for n in missing)
            raise SearchError(f"objective {self.objective!r} needs {' and '.join(missing)} ({flags})")
        extra = [n for n in ("table", "predictor", "run") if getattr(self, n) and n not in needs]
        if extra:
            raise SearchError(f"objective {self.objective!r} takes no {' or '.join(extra)} "
                              f"({', '.join('--' + n for n in extra)})")
        if not isinstance(self.options, Mapping):
            raise SearchError(f"options must be a mapping, got {type(self.options).__name__}")

    def resolved(self) -> SearchConfig:
        """The config with every path absolute, so a resume works from any directory."""
        from nas.space import find_space

        def absolute(p: str | None) -> str | None:
            return None if p is None else str(Path(p).expanduser().resolve())

        return dataclasses.replace(
            self, space=str(Path(find_space(self.space)).resolve()), out=absolute(self.out),
            table=absolute(self.table), predictor=absolute(self.predictor), run=absolute(self.run))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "search config") -> SearchConfig:
        """Parse a dict, rejecting unknown keys."""
        if not isinstance(raw, dict):
            raise SearchError(f"{source}: expected a mapping")
        allowed = [f.name for f in fields(cls)]
        for key in raw:
            if key not in allowed:
                raise SearchError(f"{source}: {key}: unknown key; allowed: {', '.join(allowed)}")
        try:
            return cls(**raw)
        except TypeError as e:
            raise SearchError(f"{source}: {e}") from None

    def same_search(self, other: SearchConfig) -> list[str]:
        """Names of the fields (runtime ones aside) in which two configs differ."""
        return [f.name for f in fields(self) if f.name not in RUNTIME_FIELDS
                and _norm(getattr(self, f.name)) != _norm(getattr(other, f.name))]


def _norm(v: Any) -> Any:
    return dict(v) if isinstance(v, Mapping) else v


def _positive_int(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SearchError(f"{name} must be a positive integer, got {v!r}")


def _positive_number(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
        raise SearchError(f"{name} must be a positive finite number, got {v!r}")
