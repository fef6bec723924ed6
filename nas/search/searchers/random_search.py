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

from ray.tune.search import Searcher

from nas.search.searchers.base import LatencyFn, Proposal, SampledArchSearcher
from nas.space import SearchSpace

__all__ = ["RandomSearcher"]


class RandomSearcher(SampledArchSearcher):
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
        self._init_sampling(seed)

    def ask(self, n: int) -> list[Proposal]:
        out = []
        for _ in range(n):
            out.append(self._random_proposal(self.tries))
            self.seen.add(out[-1].arch)
        return out

    def tell(self, proposals: Sequence[Proposal], rows: Sequence[dict[str, Any]]) -> None:
        pass
