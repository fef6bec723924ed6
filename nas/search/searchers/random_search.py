"""Random search under a latency budget: the baseline every searcher must beat.

Each proposal is a uniform :func:`nas.arch.sample_arch` draw, redrawn (at most
``tries`` times, see :func:`sample_feasible`) while it exceeds the budget or was
already proposed -- the fair baseline: uniform over the *feasible* archs, as the
reference optimum of ``bench/bench_search.py`` is.

Example:
    >>> s = RandomSearcher(space=space, budget_ms=1.0, latency=table.predict,
    ...                    trials=500, batch_size=10, seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from nas.arch import Arch
from nas.search.searchers.base import ArchSearcher, LatencyFn, Proposal, sample_feasible
from nas.space import SearchSpace

__all__ = ["RandomSearcher"]


class RandomSearcher(ArchSearcher):
    """Uniform random feasible archs.

    Args:
        space: the search space.
        budget_ms: latency budget.
        latency: table latency of a list of archs (ms).
        trials: archs to evaluate in total.
        batch_size: archs per Ray trial.
        seed: seeds the searcher's own generator.
        tries: uniform draws at most per proposal.
    """

    name = "random"

    def __init__(self, *, space: SearchSpace, budget_ms: float, latency: LatencyFn, trials: int,
                 batch_size: int, seed: int, tries: int = 100):
        Searcher.__init__(self, metric="acc", mode="max")
        self._init_batch(space=space, budget_ms=budget_ms, latency=latency, trials=trials,
                         batch_size=batch_size)
        if tries < 1:
            raise ValueError(f"tries must be >= 1, got {tries}")
        self.tries = tries
        self.rng = np.random.default_rng(seed)
        self.seen: set[Arch] = set()

    def ask(self, n: int) -> list[Proposal]:
        out = []
        for _ in range(n):
            d = sample_feasible(self.space, self.rng, self.latency, self.budget_ms,
                                tries=self.tries, seen=self.seen)
            self.seen.add(d.arch)
            out.append(Proposal(d.arch, {"op": "random", "tries": d.tries,
                                         "over_budget": d.over_budget}))
        return out

    def tell(self, proposals: Sequence[Proposal], rows: Sequence[dict[str, Any]]) -> None:
        pass

    def replay(self, records: Sequence[dict[str, Any]]) -> None:
        super().replay(records)
        self.seen.update(Arch.from_dict(r["arch"]) for r in records)

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.update({"seen": [a.to_dict() for a in self.seen], "rng": self.rng.bit_generator.state})
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.seen = {Arch.from_dict(a) for a in state["seen"]}
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
