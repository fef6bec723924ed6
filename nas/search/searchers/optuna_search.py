"""Bayesian and evolutionary searchers from Optuna samplers, through Ray's ``OptunaSearch``.

* ``tpe`` -- Tree-structured Parzen Estimator (Bergstra et al., NeurIPS 2011; Watanabe,
  2023), multivariate, with the constant liar for the archs still running.
* ``gp`` -- Gaussian-process Bayesian optimisation with constrained log-EI (Optuna's
  ``GPSampler``). Each proposal fits a GP and optimises the acquisition over the
  categorical dimensions: seconds per proposal after ~50 trials on a 2-core CPU, so
  it is meant for expensive objectives (``supernet``) and a few hundred trials.
* ``nsga2`` -- NSGA-II (Deb et al., 2002) on two objectives, accuracy (max) and
  latency (min), for the Pareto front.

The arch is a define-by-run space: :class:`ArchParams` suggests every searchable
dimension with ``trial.suggest_categorical(f"{where}.{name}", choices)`` -- the *full*
static choice list of that dimension, so every trial of the study shares one
distribution per name -- then builds the arch with :func:`nas.arch.walk_arch`,
repairing a value that is not valid given the earlier picks to the nearest valid
choice (deterministic, so equal parameters give equal archs). Inactive dimensions
are suggested too and ignored, which keeps the parameter set fixed for GP and NSGA-II.

The latency budget is an Optuna constraint: each trial gets
``trial.set_constraint("latency_ms", latency - budget)`` (Optuna 5; feasible when
<= 0) as soon as it is asked, from the latency table. TPE, GP and NSGA-II all read
``FrozenTrial.constraints``: TPE ranks infeasible trials last, GP multiplies the
acquisition by the probability of feasibility, NSGA-II uses constrained domination.

With ``reject_infeasible`` (default for TPE and NSGA-II) an over-budget proposal is
not evaluated: it is told as PRUNED (with its constraint) and the sampler asked
again, at most ``max_resample`` times; the trial log's ``tries`` counts the asks.

Several archs are asked before any is told (one batch per Ray trial). The searcher
state is saved as JSON (the completed trials), never as a pickle.
"""
from __future__ import annotations

import math
import threading
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from ray.tune.search.optuna import OptunaSearch

from nas.arch import Arch, space_contains, walk_arch
from nas.search.searchers.base import ArchSearcher, LatencyFn, Proposal, sample_feasible
from nas.space import SearchSpace

__all__ = ["ArchParams", "OptunaArchSearcher", "TPESearcher", "GPSearcher", "NSGA2Searcher"]

CONSTRAINT = "latency_ms"


def _key(where: str, name: str) -> str:
    return name if where == name else f"{where}.{name}"


class ArchParams:
    """The arch of a space as a fixed set of Optuna categorical parameters.

    ``choices`` maps ``"stages[1].mixer"``-style names to the full static choice list
    of every dimension a walk can meet with more than one choice. It is found by
    deterministic walks (every choice index in turn, forwards and backwards, plus 256
    seeded random walks), recording the valid choices offered at each dimension.
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        offered: dict[str, list] = {}

        def record(where: str, name: str, valid: tuple) -> None:
            seen = offered.setdefault(_key(where, name), [])
            seen.extend(v for v in valid if v not in seen)

        widest = max(len(getattr(space, d)) for d in ("resolution", "stem", "stem_stride"))
        widest = max([widest] + [len(s.choices(n)) for s in space.stages
                                 for n in s.__dataclass_fields__])
        for k in range(widest):
            for step in (k, -1 - k):  # the k-th choice from the front, then from the back
                walk_arch(space, lambda w, n, v, i=step: record(w, n, v) or v[i % len(v)])
        rng = np.random.default_rng(0)
        for _ in range(256):
            walk_arch(space, lambda w, n, v: record(w, n, v) or v[int(rng.integers(len(v)))])
        self.choices: dict[str, tuple] = {}
        for key, values in offered.items():
            declared = self._declared(key)
            ordered = [v for v in declared if v in values] + [v for v in values if v not in declared]
            if len(ordered) > 1:
                self.choices[key] = tuple(ordered)
        self.distributions = {k: CategoricalDistribution(list(v)) for k, v in self.choices.items()}

    def _declared(self, key: str) -> tuple:
        if not key.startswith("stages["):
            return tuple(getattr(self.space, key))
        where, name = key.split(".", 1)
        return self.space.stages[int(where[7:-1])].choices(name)

    def define(self, trial: optuna.trial.Trial) -> None:
        """The define-by-run space function: suggest every parameter."""
        for key, choices in self.choices.items():
            trial.suggest_categorical(key, list(choices))

    def build(self, params: dict[str, Any]) -> Arch:
        """The arch of a parameter dict; invalid values repaired to the nearest valid choice."""
        def pick(where: str, name: str, valid: tuple) -> Any:
            key = _key(where, name)
            if key not in params or key not in self.choices:
                return valid[0]
            return repair(params[key], valid, self.choices[key])

        return walk_arch(self.space, pick)


def repair(value: Any, valid: tuple, full: tuple) -> Any:
    """``value`` if valid, else the valid choice nearest to it in the static list ``full``."""
    if value in valid:
        return value
    i = full.index(value) if value in full else 0
    rank = {c: full.index(c) if c in full else len(full) for c in valid}
    return min(valid, key=lambda c: (abs(rank[c] - i), rank[c]))


class OptunaArchSearcher(ArchSearcher, OptunaSearch):
    """Ray's :class:`OptunaSearch` with batched asks, a budget constraint and arch params.

    Subclasses choose the sampler (:meth:`make_sampler`) and the objectives.

    Args:
        reject_infeasible: ask again (at most ``max_resample`` times) when the table says a
            proposal is over budget, telling it to the study as PRUNED with its
            constraint instead of evaluating it. Default: on for TPE and NSGA-II, off for
            GP (whose constraint model learns only from evaluated trials).
        max_resample: asks per proposal at most; then the last proposal is evaluated
            anyway, or a random feasible arch if none had a valid token grid.
        **sampler_options: options of the subclass's sampler.
    """

    name = "optuna"
    two_objectives = False
    reject_by_default = True

    def __init__(self, *, space: SearchSpace, budget_ms: float, latency: LatencyFn, trials: int,
                 batch_size: int, seed: int, reject_infeasible: bool | None = None,
                 max_resample: int = 20, **sampler_options: Any):
        if max_resample < 1:
            raise ValueError(f"max_resample must be >= 1, got {max_resample}")
        self.arch_params = ArchParams(space)
        self.seed = seed
        self.max_resample = max_resample
        self.reject_infeasible = (self.reject_by_default if reject_infeasible is None
                                  else bool(reject_infeasible))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = self.make_sampler(seed, **sampler_options)
        metric: Any = ["acc", "latency_ms"] if self.two_objectives else "acc"
        mode: Any = ["max", "min"] if self.two_objectives else "max"
        OptunaSearch.__init__(self, space=self.arch_params.define, metric=metric, mode=mode,
                              sampler=sampler, study_name=f"nas-{self.name}")
        self._init_batch(space=space, budget_ms=budget_ms, latency=latency, trials=trials,
                         batch_size=batch_size)

    @abstractmethod
    def make_sampler(self, seed: int, **options: Any) -> optuna.samplers.BaseSampler:
        """The Optuna sampler, seeded with ``seed``."""

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    # ------------------------------------------------------------------ ask / tell

    def ask(self, n: int) -> list[Proposal]:
        return [self._ask_one() for _ in range(n)]

    def _ask_one(self) -> Proposal:
        over = 0
        for tries in range(1, self.max_resample + 1):
            trial = self.study.ask()
            with warnings.catch_warnings():  # "define-by-run took N s": GP samples there
                warnings.filterwarnings("ignore", message="Define-by-run function")
                params = self._suggest_from_define_by_run_func(self._space, trial)
            arch = self.arch_params.build(params)
            if not space_contains(self.space, arch)[0]:  # only a vanishing token grid can fail
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            lat = float(self.latency([arch])[0])
            trial.set_constraint(CONSTRAINT, lat - self.budget_ms)
            if lat <= self.budget_ms or not self.reject_infeasible or tries == self.max_resample:
                return Proposal(arch, {"op": self.name, "tries": tries, "over_budget": over,
                                       "params": params}, handle=trial)
            # Over budget: never evaluated. PRUNED keeps its constraint, so TPE counts it
            # among the bad trials; NSGA-II and GP only learn from evaluated trials.
            self.study.tell(trial, state=TrialState.PRUNED)
            over += 1
        d = sample_feasible(self.space, np.random.default_rng([self.seed, self.done]),
                            self.latency, self.budget_ms, tries=100)
        return Proposal(d.arch, {"op": "fallback", "tries": self.max_resample + d.tries,
                                 "over_budget": over + d.over_budget})

    def _values(self, row: dict[str, Any]) -> list[float] | None:
        acc, lat = float(row["acc"]), float(row["latency_ms"])
        if not (math.isfinite(acc) and math.isfinite(lat)):
            return None
        return [acc, lat] if self.two_objectives else [acc]

    def tell(self, proposals: Sequence[Proposal], rows: Sequence[dict[str, Any]]) -> None:
        for p, row in zip(proposals, rows):
            if p.handle is None:
                continue
            values = self._values(row)
            if values is None:
                self.study.tell(p.handle, state=TrialState.FAIL)
            else:
                self.study.tell(p.handle, values)

    def abandon(self, proposals: Sequence[Proposal]) -> None:
        for p in proposals:
            if p.handle is not None:
                self.study.tell(p.handle, state=TrialState.FAIL)

    def replay(self, records: Sequence[dict[str, Any]]) -> None:
        super().replay(records)  # counters; the proposals carry no Optuna trial
        for r in records:
            params = (r.get("meta") or {}).get("params")
            if params:
                self._add(params, self._values(r), r["latency_ms"] - self.budget_ms)

    def _add(self, params: dict[str, Any], values: list[float] | None, violation: float) -> None:
        dists = {k: self.arch_params.distributions[k] for k in params}
        if values is None:
            trial = create_trial(state=TrialState.FAIL, params=params, distributions=dists)
        else:
            trial = create_trial(params=params, distributions=dists, values=values,
                                 constraints={CONSTRAINT: float(violation)})
        self.study.add_trial(trial)

    # ------------------------------------------------------------------ state (JSON)

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["trials"] = [
            {"params": t.params, "values": t.values, "violation": t.constraints.get(CONSTRAINT, 0.0)}
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._ot_trials = {}
        self._setup_study(self._mode)  # a fresh in-memory study with the same sampler
        for t in state["trials"]:
            self._add(t["params"], t["values"], t["violation"])


class TPESearcher(OptunaArchSearcher):
    """Multivariate TPE with the constant liar.

    Args:
        n_startup_trials: random trials before the Parzen estimators are used.
        n_ei_candidates: candidates scored per proposal.
        multivariate: model the parameters jointly.
    """

    name = "tpe"

    def make_sampler(self, seed: int, *, n_startup_trials: int = 10, n_ei_candidates: int = 24,
                     multivariate: bool = True) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials,
                                          n_ei_candidates=n_ei_candidates,
                                          multivariate=multivariate, constant_liar=True)


class GPSearcher(OptunaArchSearcher):
    """Gaussian-process BO (Optuna's ``GPSampler``); slow per proposal, see the module doc.

    Args:
        n_startup_trials: random trials before the GP is used.
    """

    name = "gp"
    reject_by_default = False  # GP learns the constraint only from evaluated trials

    def make_sampler(self, seed: int, *, n_startup_trials: int = 10) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials,
                                         deterministic_objective=True)


class NSGA2Searcher(OptunaArchSearcher):
    """NSGA-II on (accuracy, latency) under the budget constraint.

    Args:
        population_size: individuals per generation.
        crossover_prob: probability of a crossover child (else a copy, then mutation).
        mutation_prob: per-parameter mutation probability (default ``1 / #params``).
    """

    name = "nsga2"
    two_objectives = True

    def make_sampler(self, seed: int, *, population_size: int = 50, crossover_prob: float = 0.9,
                     mutation_prob: float | None = None) -> optuna.samplers.BaseSampler:
        return _NSGAIISampler(seed=seed, population_size=population_size,
                              crossover_prob=crossover_prob, mutation_prob=mutation_prob)


class _NSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II that pickles: Ray Tune ships the searcher, and optuna 5.1's genetic
    samplers hold a thread lock (not picklable), which is made anew on unpickling."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
