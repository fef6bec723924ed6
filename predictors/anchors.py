"""Anchors: a few subnets per mixer family trained alone, to check a predictor against.

A predictor learns from weight-sharing scores, and weight sharing erases part of what
sets subnets apart when each is trained alone (most of all between mixer families).
Anchors measure how far that matters for a user's own space and data:
``nas predictor collect ... --anchors K [--anchor-epochs E]`` trains ``K`` subnets of
every stage-0 mixer family standalone from scratch, with the supernet run's recipe
(:func:`nas.training.config.standalone_recipe`) for ``E`` epochs, and writes their
standalone val accuracy and loss as an ordinary table beside the collected one
(``TABLE.anchors.csv``; run directories in ``TABLE.anchors/``, so an interrupted
anchor resumes from its last epoch). ``nas predictor fit`` then reports the
predictor's Kendall tau against the anchors' standalone loss, overall and for pairs of
the same and of different families, and calibrates the predictor's family levels with
them (:func:`calibrate_with_anchors`).

The anchors never refit the model or the weights of its target: on CIFAR-10, weights
fitted on up to 20 anchors ranked held-out subnets worse than equal weights
(``bench/bench_combined.py``). What they may add is one offset per stage-0 family, and
only where leave-one-out on the anchors shows it ranks them better
(:func:`nas.predictors.calibration.choose_offsets`): on digits that rule keeps offsets
in most splits and lifts the held-out tau; on CIFAR-10 it mostly drops them.

Training runs on Ray tasks of one CPU each when ``workers`` > 1 (or on a cluster),
else in this process.

Example:
    >>> train_anchors("runs/c10/train", 2, "runs/c10/subnets.csv", epochs=5)  # doctest: +SKIP
    {'rows': 12, 'new': 12, ...}
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, sample_arch
from nas.errors import ArtifactError, NasError
from nas.predictors.calibration import choose_offsets
from nas.predictors.metrics import kendall_tau
from nas.predictors.table import read_table, read_table_meta, write_table, write_table_meta
from nas.space import SearchSpace

__all__ = ["anchor_paths", "plan_anchors", "train_anchors", "anchor_metrics", "family_taus",
           "calibrate_with_anchors"]


def anchor_paths(table: str | os.PathLike) -> tuple[Path, Path]:
    """(anchors table, anchors run folder) of a collected table:
    ``runs/subnets.csv`` -> ``runs/subnets.anchors.csv``, ``runs/subnets.anchors/``."""
    table = Path(table)
    return (table.with_name(table.stem + ".anchors.csv"),
            table.with_name(table.stem + ".anchors"))


def plan_anchors(space: SearchSpace, k: int, seed: int = 0) -> list[Arch]:
    """``k`` distinct archs for each stage-0 mixer of ``space`` (seeded; the plan for ``k``
    is, family by family, a prefix of the plan for any larger ``k``)."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise NasError(f"anchors must be an integer >= 1, got {k!r}")
    plan = []
    for family in space.stages[0].mixer:
        rng = np.random.default_rng([seed, sum(map(ord, family))])
        got: list[Arch] = []
        for _ in range(200 * k):
            if len(got) == k:
                break
            arch = sample_arch(space, rng)
            if arch.stages[0].mixer == family and arch not in got:
                got.append(arch)
        plan += got
    return plan


def _key(arch: Arch, recipe: dict[str, Any], seed: int) -> str:
    blob = json.dumps([arch.to_dict(), recipe, seed], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _train_one(arch_json: str, recipe: dict[str, Any], seed: int, out: str,
               threads: int) -> dict[str, Any]:
    """Train (or resume) one anchor; its final val accuracy and loss."""
    from nas.training import TrainConfig, read_metrics, train

    cfg = TrainConfig.from_dict({**recipe, "arch": arch_json, "seed": seed, "out": out,
                                 "threads": threads}, source="anchor recipe")
    t0 = time.perf_counter()
    train(cfg, resume=True, verbose=False)
    last = read_metrics(out)[-1]
    return {"arch": arch_json, "acc": float(last["val_acc"]), "loss": float(last["val_loss"]),
            "seconds": time.perf_counter() - t0}


def train_anchors(run_dir: str | os.PathLike, k: int, table: str | os.PathLike, *,
                  epochs: int, seed: int = 0, workers: int | None = 1,
                  address: str | None = None,
                  log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train ``k`` anchors per stage-0 mixer family of a supernet run's space.

    Args:
        run_dir: the supernet run (its recipe is the anchors' recipe, ``epochs`` aside).
        k: anchors per stage-0 mixer family.
        table: the collected table the anchors go beside (:func:`anchor_paths`).
        epochs: standalone training epochs of each anchor.
        seed: seeds the anchors' sampling and their training.
        workers: parallel trainings (Ray tasks of one CPU each when > 1).
        address: Ray cluster address (default ``RAY_ADDRESS``).
        log: progress lines (``None`` for silence).

    Returns:
        ``{"rows", "new", "planned", "wall_s"}``.
    """
    from nas import training
    from nas.training.config import standalone_recipe

    say = log or (lambda _msg: None)
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise NasError(f"anchor epochs must be an integer >= 1, got {epochs!r}")
    run = training.load_run(Path(run_dir))
    if getattr(run, "arch", None) is not None:
        raise ArtifactError(f"{run.run_dir} is a standalone run; anchors need a supernet run")
    space = run.space
    recipe = standalone_recipe(run.config, epochs=int(epochs))
    out, runs = anchor_paths(table)
    rows = read_table(out, space=space).rows() if out.exists() else []
    meta = read_table_meta(out) if out.exists() else None
    if meta is not None and (meta.get("recipe") != recipe or meta.get("seed") != seed):
        raise ArtifactError(f"anchors {out} were trained with another recipe or seed; give "
                            "the same --anchor-epochs and --seed, or remove them")
    done = {r["arch"] for r in rows}
    plan = plan_anchors(space, k, seed)
    todo = [a for a in plan if a not in done]
    say(f"anchors: {len(plan)} planned ({k} per stage-0 mixer), {len(plan) - len(todo)} "
        f"already in {out}, {len(todo)} to train for {epochs} epochs each")
    t0 = time.perf_counter()
    info = {"kind": "anchors", "run": {"run_dir": str(Path(run_dir).resolve()),
                                       "epoch": run.epoch}, "recipe": recipe, "seed": seed,
            "k": k}

    def commit(result: dict[str, Any]) -> None:
        arch = Arch.from_dict(json.loads(result["arch"]))
        rows.append({"arch": arch, "acc": result["acc"], "loss": result["loss"]})
        write_table(out, rows, space=space)
        write_table_meta(out, space, {**info, "rows": len(rows)})
        say(f"  anchor {len(rows)}/{len(plan)}: {arch.stages[0].mixer}, standalone acc "
            f"{result['acc']:.4f} ({result['seconds']:.0f}s)")

    jobs = [(a.to_json(), str(runs / _key(a, recipe, seed))) for a in todo]
    use_ray = address is not None or os.environ.get("RAY_ADDRESS") or (workers or 1) > 1
    if jobs and use_ray:
        import ray

        from nas.raysession import ray_session

        with ray_session(address, num_cpus=workers):
            task = ray.remote(num_cpus=1)(_train_one)
            pending = [task.remote(a, recipe, seed, o, 1) for a, o in jobs]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                commit(ray.get(ready[0]))
    else:
        for a, o in jobs:
            commit(_train_one(a, recipe, seed, o, 0))
    if not rows and not out.exists():
        raise NasError(f"space {space.name}: no anchors to train")
    return {"rows": len(rows), "new": len(todo), "planned": len(plan),
            "wall_s": time.perf_counter() - t0}


def family_taus(truth: np.ndarray, pred: np.ndarray, families: list[str]) -> dict[str, float]:
    """Kendall tau overall, and over pairs of the same / of different ``families`` only
    (tau-a on those pairs: concordant minus discordant over untied pairs)."""
    truth, pred = np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    fam = np.asarray(families)
    i, j = np.triu_indices(len(truth), 1)
    sign = np.sign(truth[i] - truth[j]) * np.sign(pred[i] - pred[j])
    same = fam[i] == fam[j]

    def tau(mask: np.ndarray) -> float:
        s = sign[mask]
        s = s[s != 0]
        return float(s.mean()) if s.size else float("nan")

    return {"all": kendall_tau(truth, pred), "same_family": tau(same),
            "across_families": tau(~same)}


def _read_anchors(predictor: Any, anchors: str | os.PathLike) -> Any:
    table = read_table(anchors, space=predictor.space)
    if table.loss is None:
        raise ArtifactError(f"anchors {anchors} have no loss column")
    return table


def _metrics(table: Any, score: np.ndarray, anchors: str | os.PathLike) -> dict[str, Any]:
    families = [a.stages[0].mixer for a in table.archs]
    taus = family_taus(-table.loss, score, families)
    return {"anchors": len(table), "source": str(anchors),
            "kendall_tau": {k: (None if np.isnan(v) else v) for k, v in taus.items()}}


def anchor_metrics(predictor: Any, anchors: str | os.PathLike) -> dict[str, Any]:
    """A fitted predictor's Kendall taus against the anchors' standalone val loss (lower
    loss = better, so truth is minus the loss), overall and within / across families."""
    table = _read_anchors(predictor, anchors)
    return _metrics(table, predictor.predict(list(table.archs)), anchors)


def calibrate_with_anchors(predictor: Any, anchors: str | os.PathLike) -> dict[str, Any]:
    """Check ``predictor`` against the anchors, then give it per-family offsets if
    leave-one-out on the anchors says they rank better (else none).

    Returns :func:`anchor_metrics` of the uncalibrated predictor plus ``calibration``:
    the choice's report (``tau_plain``, ``tau_loo``, ``kept``, ``offsets``).
    """
    table = _read_anchors(predictor, anchors)
    # scores rank exactly like the predicted accuracies (the back-map is increasing)
    score = predictor.scores(list(table.archs), calibrated=False)
    metrics = _metrics(table, score, anchors)
    predictor.calibration = None
    if len(table) < 3:
        metrics["calibration"] = {"anchors": len(table), "kept": False,
                                  "why": "fewer than 3 anchors"}
        return metrics
    cal = choose_offsets(score, table.loss, [a.stages[0].mixer for a in table.archs])
    predictor.calibration = cal if cal.offsets else None
    metrics["calibration"] = {**cal.report, "offsets": dict(cal.offsets)}
    return metrics
