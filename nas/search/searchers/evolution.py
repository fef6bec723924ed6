"""Regularized (aging) evolution under a latency budget, as a Ray Tune ``Searcher``.

Real, Aggarwal, Huang and Le, "Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019: a population of the ``population_size`` most
recently evaluated archs; each child is a mutation (or, with ``crossover_prob``, a
crossover then mutation) of the winner of a tournament among ``sample_size`` random
members; the oldest member dies. Works asynchronously: every child of a batch comes
from the population as it stands when the batch is asked.

Constraint handling: a child whose table latency exceeds the budget, or that was
already proposed, is drawn again from fresh tournaments, at most ``repair_tries``
times; then a random feasible arch is drawn (:func:`sample_feasible`, bounded too).
Fitness is the accuracy when feasible, and ranks infeasible archs below every
feasible one. Mutation and crossover are :func:`nas.arch.mutate_arch` and
:func:`nas.arch.crossover_arch`, so every child is a valid arch of the space.

Example:
    >>> s = EvolutionSearcher(space=space, budget_ms=1.0, latency=table.predict,
    ...                       trials=500, batch_size=10, seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from ray.tune.search import Searcher

from nas.arch import Arch, crossover_arch, mutate_arch
from nas.search.searchers.base import (
    LatencyFn,
    Proposal,
    SampledArchSearcher,
    fitness,
    sample_feasible,
)
from nas.space import SearchSpace

__all__ = ["EvolutionSearcher"]


class EvolutionSearcher(SampledArchSearcher):
    """Aging evolution with tournament selection and bounded constraint repair.

    Args:
        space: the search space.
        budget_ms: latency budget.
        latency: table latency of a list of archs (ms).
        trials: archs to evaluate in total.
        batch_size: archs per Ray trial.
        seed: seeds the searcher's own generator.
        population_size: archs kept alive; the first ones are random feasible archs.
        sample_size: tournament size (default: a fifth of the population, at least 2).
        mutation_prob: per-dimension resampling probability of a mutation.
        crossover_prob: probability that a child is a crossover of two winners.
        repair_tries: children drawn at most per proposal before a random feasible one
            (itself at most ``4 * repair_tries`` uniform draws).
    """

    name = "evolution"

    def __init__(self, *, space: SearchSpace, budget_ms: float, latency: LatencyFn, trials: int,
                 batch_size: int, seed: int, population_size: int = 50,
                 sample_size: int | None = None,
                 mutation_prob: float = 0.1, crossover_prob: float = 0.25, repair_tries: int = 20):
        Searcher.__init__(self, metric="acc", mode="max")
        self._init_batch(space=space, budget_ms=budget_ms, latency=latency, trials=trials,
                         batch_size=batch_size)
        if population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        if sample_size is None:
            sample_size = max(2, population_size // 5)
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"sample_size must be in 1..population_size ({population_size}), "
                             f"got {sample_size}")
        if not 0 < mutation_prob <= 1:
            raise ValueError(f"mutation_prob must be in (0, 1], got {mutation_prob}")
        if not 0 <= crossover_prob <= 1:
            raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob}")
        if repair_tries < 1:
            raise ValueError(f"repair_tries must be >= 1, got {repair_tries}")
        self.population_size = population_size
        self.sample_size = sample_size
        self.mutation_prob = mutation_prob
        self.crossover_prob = crossover_prob
        self.repair_tries = repair_tries
        self.random_tries = 4 * repair_tries
        self._init_sampling(seed)
        self.population: deque[tuple[Arch, float]] = deque(maxlen=population_size)
        self.proposed = 0

    # ------------------------------------------------------------------ ask / tell

    def ask(self, n: int) -> list[Proposal]:
        out = []
        for _ in range(n):
            if self.proposed < self.population_size or len(self.population) < 2:
                prop = self._random_proposal(self.random_tries)
            else:
                prop = self._child()
            self.seen.add(prop.arch)
            self.proposed += 1
            out.append(prop)
        return out

    def tell(self, proposals: Sequence[Proposal], rows: Sequence[dict[str, Any]]) -> None:
        for p, row in zip(proposals, rows):
            self.population.append((p.arch, fitness(row, self.budget_ms)))

    def replay(self, records: Sequence[dict[str, Any]]) -> None:
        super().replay(records)
        self.proposed += len(records)

    def abandon(self, proposals: Sequence[Proposal]) -> None:
        self.proposed -= len(proposals)

    # ------------------------------------------------------------------ children

    def _winner(self) -> Arch:
        idx = self.rng.choice(len(self.population), size=min(self.sample_size, len(self.population)),
                              replace=False)
        return max((self.population[int(i)] for i in idx), key=lambda m: m[1])[0]

    def _child(self) -> Proposal:
        best: tuple[float, Arch, str] | None = None
        over = 0
        for t in range(1, self.repair_tries + 1):
            parent = self._winner()
            op = "mutation"
            if self.rng.random() < self.crossover_prob:
                op = "crossover"
                child = crossover_arch(self.space, parent, self._winner(), self.rng)
                if child in self.seen:
                    child = mutate_arch(self.space, child, self.rng, prob=self.mutation_prob)
            else:
                child = mutate_arch(self.space, parent, self.rng, prob=self.mutation_prob)
            excess = max(0.0, float(self.latency([child])[0]) - self.budget_ms)
            if not excess and child not in self.seen:
                return Proposal(child, {"op": op, "tries": t, "over_budget": over})
            over += excess > 0
            # fallbacks ranked: feasible before over budget, then the least excess
            if best is None or excess < best[0]:
                best = (excess, child, op)
        d = sample_feasible(self.space, self.rng, self.latency, self.budget_ms,
                            tries=self.random_tries, seen=self.seen)
        meta = {"tries": self.repair_tries + d.tries, "over_budget": over + d.over_budget}
        excess = max(0.0, float(self.latency([d.arch])[0]) - self.budget_ms)
        if best is not None and (best[0], best[1] in self.seen) < (excess, d.arch in self.seen):
            return Proposal(best[1], {"op": best[2], **meta})
        return Proposal(d.arch, {"op": "resample", **meta})

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["population"] = [[a.to_dict(), f] for a, f in self.population]
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.proposed = self.done  # unfinished proposals are made anew
        self.population = deque(((Arch.from_dict(a), float(f)) for a, f in state["population"]),
                                maxlen=self.population_size)
