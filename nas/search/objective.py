"""Search objectives: what one Ray trial computes for a batch of archs.

A searcher never touches the predictor, the latency table or the supernet. It
proposes archs and reads back one row per arch, ``{"acc", "latency_ms", "params",
...}``, through the small :class:`Objective` protocol, so a fake is a few lines.
Constraint-aware searchers also ask :meth:`Objective.latency_ms` before proposing.

* :class:`PredictorObjective` -- accuracy from a fitted predictor
  (:func:`nas.predictors.load_predictor`), latency from a latency table
  (:class:`nas.latency.LatencyTable`): offline, thousands of archs a second.
* :class:`SupernetObjective` -- accuracy of the subnet with weights inherited from a
  trained supernet (:func:`nas.training.evaluate`) on the run's validation split;
  a trial may take a GPU.
* :class:`SyntheticObjective` -- a deterministic stand-in for tests and benchmarks:
  latency from a MAC/block-count formula, accuracy a fixed smooth function of
  capacity plus a seeded random function of the encoding.

Objects are pickled to the Ray workers as paths; the artefacts are loaded once per
worker process (``functools.lru_cache``) and checked against the search space.

Example:
    >>> obj = PredictorObjective(space, table="t.json", predictor="acc_pred")  # doctest: +SKIP
    >>> obj.evaluate([arch])  # doctest: +SKIP
    [{'acc': 0.91, 'latency_ms': 0.83, 'params': 412810, 'acc_std': 0.004}]
"""
from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from nas.arch import Arch
from nas.costmodel import analytic_cost
from nas.encoding import encode_arch
from nas.space import SearchSpace

__all__ = ["Objective", "PredictorObjective", "SupernetObjective", "SyntheticObjective",
           "file_digest"]


@runtime_checkable
class Objective(Protocol):
    """What the searchers see of an objective.

    ``evaluate`` returns one dict per arch with at least ``acc`` (higher is better),
    ``latency_ms`` and ``params``; other numeric keys (``acc_std``, ``loss``) are
    kept in the trial log. ``latency_ms`` must agree with ``evaluate``'s latencies.
    """

    space: SearchSpace

    def latency_ms(self, archs: Sequence[Arch]) -> np.ndarray: ...

    def evaluate(self, archs: Sequence[Arch]) -> list[dict[str, float]]: ...


def file_digest(path: str | Path) -> str:
    """sha256 (16 hex digits) of a file, or of every file under a directory."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        h.update(str(q.relative_to(p) if p.is_dir() else q.name).encode())
        h.update(q.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _table(path: str, space: SearchSpace):
    from nas.latency import LatencyTable

    return LatencyTable.load(path, space=space)


@functools.lru_cache(maxsize=4)
def _predictor(path: str, space: SearchSpace):
    from nas.predictors import load_predictor

    return load_predictor(path, space=space)


@functools.lru_cache(maxsize=1 << 16)
def _params(arch: Arch, num_classes: int, in_chans: int) -> int:
    from nas.complexity import count_params

    return count_params(arch, num_classes=num_classes, in_chans=in_chans)


def _rows(space: SearchSpace, archs: Sequence[Arch], acc: Sequence[float],
          latency: Sequence[float], **extra: Sequence[float] | None) -> list[dict[str, float]]:
    rows = []
    for i, a in enumerate(archs):
        row = {"acc": float(acc[i]), "latency_ms": float(latency[i]),
               "params": _params(a, space.num_classes, space.in_chans)}
        row.update({k: float(v[i]) for k, v in extra.items() if v is not None})
        rows.append(row)
    return rows


def _table_record(path: str, space: SearchSpace) -> dict[str, Any]:
    table = _table(path, space)
    return {"path": path, "sha256": file_digest(path), "space_fingerprint": table.space_fingerprint,
            "device": table.describe()}


@dataclass(frozen=True)
class PredictorObjective:
    """Predicted accuracy and table latency.

    Args:
        space: the search space; the table and the predictor must belong to it.
        table: latency table JSON.
        predictor: accuracy predictor (directory or ``NAME.json``).
    """

    space: SearchSpace
    table: str
    predictor: str

    def latency_ms(self, archs: Sequence[Arch]) -> np.ndarray:
        return _table(self.table, self.space).predict(list(archs))

    def evaluate(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        archs = list(archs)
        mean, std = _predictor(self.predictor, self.space).predict_with_std(archs)
        return _rows(self.space, archs, mean, self.latency_ms(archs), acc_std=std)

    def describe(self) -> dict[str, Any]:
        """Load and check both artefacts; their paths and fingerprints for ``config.json``."""
        table = _table_record(self.table, self.space)
        pred = _predictor(self.predictor, self.space)
        return {"objective": "predictor", "table": table,
                "predictor": {"path": self.predictor, "sha256": file_digest(self.predictor),
                              "space_fingerprint": pred.space_fingerprint, "family": pred.family}}


@functools.lru_cache(maxsize=2)
def _supernet(run: str, space: SearchSpace, device: str):
    from nas.training import load_run, load_run_calib_data, load_val_data

    loaded = load_run(run, device=device)
    space.check_arch_compat(loaded.space.fingerprint, f"supernet run {run}")
    x, y = load_val_data(loaded.config, split="val")
    calib = None
    if any("batchnorm" in s.norm for s in space.stages):
        calib = (load_run_calib_data(loaded.config),)
    return loaded, x, y, calib


@dataclass(frozen=True)
class SupernetObjective:
    """Inherited-weight accuracy on the run's validation split, and table latency.

    Args:
        space: the search space; the run and the table must belong to it.
        run: the supernet run directory.
        table: latency table JSON.

    Subnets are evaluated on CUDA when the process sees a GPU (a Ray trial sees one
    only when it requested it), else on the CPU.
    """

    space: SearchSpace
    run: str
    table: str

    def latency_ms(self, archs: Sequence[Arch]) -> np.ndarray:
        return _table(self.table, self.space).predict(list(archs))

    def evaluate(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        import torch

        from nas.training import evaluate

        archs = list(archs)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded, x, y, calib = _supernet(self.run, self.space, device)
        scores = [evaluate(loaded.supernet, a, x, y, calibrate=calib) for a in archs]
        return _rows(self.space, archs, [s["acc"] for s in scores], self.latency_ms(archs),
                     loss=[s["loss"] for s in scores])

    def describe(self) -> dict[str, Any]:
        from nas.training.rundir import read_run_config

        config, run_space = read_run_config(self.run)
        self.space.check_arch_compat(run_space.fingerprint, f"supernet run {self.run}")
        return {"objective": "supernet", "table": _table_record(self.table, self.space),
                "run": {"path": self.run, "space_fingerprint": run_space.fingerprint,
                        "data": config.get("data")}}


@dataclass(frozen=True)
class SyntheticObjective:
    """A deterministic stand-in objective (no artefacts), for tests and benchmarks.

    Latency grows with MACs and block count; accuracy saturates with capacity, with a
    seeded random preference over the encoding (mixers, ratios...) on top, so the
    best arch under a budget is not simply the largest one. Accuracy lies in [0, 1].
    """

    space: SearchSpace
    seed: int = 0

    def latency_ms(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([analytic_cost(a)[2] for a in archs], dtype=np.float64)

    def evaluate(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        w, q, centre, scale = _synthetic_weights(self.space, self.seed)
        rows = []
        for a in archs:
            macs, params, latency = analytic_cost(a)
            e = encode_arch(self.space, a).astype(np.float64)
            taste = float(np.tanh(e @ w + e @ q @ e))
            capacity = scale * (math.log(macs) - centre)
            acc = 0.5 + 0.4 / (1 + math.exp(-capacity)) + 0.04 * taste
            rows.append({"acc": min(1.0, max(0.0, acc)), "latency_ms": latency,
                         "params": int(params)})
        return rows

    def describe(self) -> dict[str, Any]:
        return {"objective": "synthetic", "seed": self.seed}


@functools.lru_cache(maxsize=8)
def _synthetic_weights(space: SearchSpace, seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Encoding weights (linear, pairwise) and the log-MAC centre and scale of the space."""
    from nas.arch import extreme_arch

    lo, hi = (math.log(analytic_cost(extreme_arch(space, w))[0]) for w in ("min", "max"))
    n = len(encode_arch(space, extreme_arch(space, "min")))
    rng = np.random.default_rng([seed, 7919])
    q = rng.normal(0, 0.25 / max(1, n) ** 0.5, (n, n))
    return rng.normal(0, 0.6, n), (q + q.T) / 2, (lo + hi) / 2, 5.0 / max(hi - lo, 1e-6)


