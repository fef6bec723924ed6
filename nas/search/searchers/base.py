"""The base of every arch searcher: batches of proposals as Ray Tune trials.

One Ray trial evaluates a *batch* of archs (a Tune trial costs ~0.1 s of overhead
even with actor reuse, an arch from a predictor ~0.1 ms), so a searcher hands Tune
a config ``{"batch": [arch dict, ...], "meta": [dict, ...]}`` and gets back one row
per arch (``result["rows"]``).

Call order, driven by Tune: :meth:`ArchSearcher.replay` (a resumed search, before
anything else) -> :meth:`suggest` -> :meth:`ask` -> (the trial runs) ->
:meth:`on_trial_complete` -> :meth:`tell`, or :meth:`abandon` if the trial failed.
A subclass implements ``ask`` and ``tell``; ``replay`` defaults to ``tell``.

``suggest`` returns :attr:`Searcher.FINISHED` once ``trials`` archs are done and
``None`` (wait) while the last batches run, so a failed batch can be proposed again
and the search never evaluates more than ``trials`` archs.
"""
from __future__ import annotations

import json
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from ray.tune.search import Searcher

from nas.arch import Arch, extreme_arch, sample_arch
from nas.space import SearchSpace

__all__ = ["ArchSearcher", "SampledArchSearcher", "Proposal", "LatencyFn", "Draw",
           "sample_feasible", "fitness"]

LatencyFn = Callable[[Sequence[Arch]], np.ndarray]


@dataclass
class Proposal:
    """An arch to evaluate, with JSON-able notes for the trial log.

    ``meta`` holds at least ``op`` (how it was made), ``tries`` (candidates drawn for it,
    itself included) and ``over_budget`` (candidates among them rejected for latency).
    """

    arch: Arch
    meta: dict[str, Any] = field(default_factory=dict)
    handle: Any = None  # searcher-private (an Optuna trial); never logged


def fitness(row: dict[str, Any], budget_ms: float) -> float:
    """Accuracy when within budget; below any accuracy, by the relative excess, when not."""
    if row["latency_ms"] <= budget_ms:
        return float(row["acc"])
    return -1.0 - (row["latency_ms"] - budget_ms) / budget_ms


class Draw(NamedTuple):
    """An arch drawn by :func:`sample_feasible`, with the candidates it took."""

    arch: Arch
    tries: int  # candidates drawn, this one included
    over_budget: int  # candidates rejected for their latency


def sample_feasible(space: SearchSpace, rng: np.random.Generator, latency: LatencyFn,
                    budget_ms: float, *, tries: int, seen: set[Arch] | frozenset = frozenset()
                    ) -> Draw:
    """A uniform random arch within the budget and not in ``seen``, in at most ``tries`` draws.

    When no draw qualifies: a feasible seen arch, else the smallest arch of the space if
    feasible, else the cheapest draw (which the trial log will show as infeasible) --
    never an endless loop.
    """
    cands: list[Arch] = []
    lats: list[float] = []
    chunk = 1
    while len(cands) < tries:  # growing chunks: one draw usually suffices
        new = [sample_arch(space, rng) for _ in range(min(chunk, tries - len(cands)))]
        lat = latency(new)
        for a, v in zip(new, lat):
            cands.append(a)
            lats.append(float(v))
            if v <= budget_ms and a not in seen:
                return Draw(a, len(cands), sum(x > budget_ms for x in lats))
        chunk *= 2
    over = sum(x > budget_ms for x in lats)
    feasible = [a for a, v in zip(cands, lats) if v <= budget_ms]
    if feasible:
        return Draw(feasible[0], tries, over)
    smallest = extreme_arch(space, "min")
    if latency([smallest])[0] <= budget_ms:
        return Draw(smallest, tries, over)
    return Draw(cands[int(np.argmin(lats))], tries, over)


class ArchSearcher(Searcher, metaclass=ABCMeta):
    """A Tune ``Searcher`` that proposes batches of archs (see the module docstring).

    Subclasses call :meth:`_init_batch` from their constructor and implement
    :meth:`ask` and :meth:`tell`.
    """

    name = "base"

    def _init_batch(self, *, space: SearchSpace, budget_ms: float, latency: LatencyFn,
                    trials: int, batch_size: int) -> None:
        self.space = space
        self.budget_ms = float(budget_ms)
        self.latency = latency
        self.trials = int(trials)
        self.batch_size = int(batch_size)
        self.done = 0
        self.infeasible_proposed = 0
        self._pending: dict[str, list[Proposal]] = {}

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def ask(self, n: int) -> list[Proposal]:
        """Propose ``n`` archs."""

    @abstractmethod
    def tell(self, proposals: Sequence[Proposal], rows: Sequence[dict[str, Any]]) -> None:
        """Learn from evaluated proposals (``rows[i]`` belongs to ``proposals[i]``)."""

    def abandon(self, proposals: Sequence[Proposal]) -> None:
        """Proposals whose trial failed; they will not be told."""

    def replay(self, records: Sequence[dict[str, Any]]) -> None:
        """Feed a resumed search the trials it already ran (trial-log records, in order)."""
        if not records:
            return
        props = [Proposal(Arch.from_dict(r["arch"]), dict(r.get("meta") or {})) for r in records]
        self.done += len(props)
        self.infeasible_proposed += sum(r["latency_ms"] > self.budget_ms for r in records)
        self.tell(props, records)

    # ------------------------------------------------------------------ Tune interface

    @property
    def pending(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.done >= self.trials:
            return Searcher.FINISHED
        n = min(self.batch_size, self.trials - self.done - self.pending)
        if n <= 0:
            return None  # wait for the running batches
        props = self.ask(n)
        self.infeasible_proposed += int((self.latency([p.arch for p in props])
                                         > self.budget_ms).sum())
        self._pending[trial_id] = props
        return {"batch": [p.arch.to_dict() for p in props], "meta": [p.meta for p in props]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # one result per trial; handled at completion

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        props = self._pending.pop(trial_id, None)
        if props is None:
            return
        rows = (result or {}).get("rows")
        if error or not isinstance(rows, list) or len(rows) != len(props):
            self.abandon(props)
            return
        self.done += len(props)
        self.tell(props, rows)

    # ------------------------------------------------------------------ state (JSON, no pickle)

    def get_state(self) -> dict[str, Any]:
        return {"searcher": self.name, "done": self.done,
                "infeasible_proposed": self.infeasible_proposed}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("searcher") != self.name:
            raise ValueError(f"state of searcher {state.get('searcher')!r}, not {self.name!r}")
        self.done = int(state["done"])
        self.infeasible_proposed = int(state["infeasible_proposed"])
        self._pending = {}  # Tune reruns unfinished trials; their archs are proposed anew

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, encoding="utf-8") as f:
            self.set_state(json.load(f))


class SampledArchSearcher(ArchSearcher):
    """An :class:`ArchSearcher` that draws archs itself: its own generator and the set of
    archs it proposed (kept across replay and save/restore), and uniform feasible draws.

    Subclasses call :meth:`_init_sampling` from their constructor.
    """

    def _init_sampling(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seen: set[Arch] = set()

    def _random_proposal(self, tries: int) -> Proposal:
        """A uniform feasible arch not proposed before (see :func:`sample_feasible`)."""
        d = sample_feasible(self.space, self.rng, self.latency, self.budget_ms, tries=tries,
                            seen=self.seen)
        return Proposal(d.arch, {"op": "random", "tries": d.tries, "over_budget": d.over_budget})

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
