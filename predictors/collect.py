"""Collecting predictor training data: evaluate sampled subnets of a trained supernet.

:func:`collect_table` samples ``n`` distinct archs uniformly from the run's space
(plus the largest and smallest), evaluates each with weights inherited from the
supernet on the validation split (:func:`nas.training.evaluate`, BatchNorm
recalibrated when the space has BatchNorm), counts params and MACs, and writes the
rows to a CSV table (:mod:`nas.predictors.table`), rewritten atomically after every
chunk. A rerun with the same seed samples the same archs and skips those already in
the table, so a killed job resumes; a larger ``n`` extends the table.

Parallelism uses Ray, never a home-made scheduler: one actor per worker loads the run
once and evaluates chunks of archs (``ray.util.ActorPool``), on a local Ray sized by
``workers`` or on a cluster (``address`` or ``RAY_ADDRESS``; the run dir must then be
readable from the workers, e.g. on a shared filesystem). ``workers=1`` evaluates in
this process without starting Ray.

Example:
    >>> summary = collect_table("runs/tiny", 400, "runs/subnets.csv", seed=0, workers=2)  # doctest: +SKIP
    >>> summary["rows"]  # doctest: +SKIP
    402
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, extreme_arch, sample_arch
from nas.errors import ArtifactError, NasError
from nas.predictors.table import read_table, read_table_meta, write_table, write_table_meta
from nas.space import SearchSpace

__all__ = ["collect_table", "plan_archs", "SubnetEvaluator", "run_scorer"]

TRAIN_SPEED_IMAGES = 10000  # the training subset the train_speed batches are drawn from


def plan_archs(space: SearchSpace, n: int, seed: int) -> list[Arch]:
    """The largest and smallest arch, then ``n`` distinct uniform samples (seeded).

    The plan for ``n`` is a prefix of the plan for any larger ``n``. Stops early
    (with fewer archs) when the space has no more distinct archs to give.
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise NasError(f"n must be an integer >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    plan = list(dict.fromkeys([extreme_arch(space, "max"), extreme_arch(space, "min")]))
    seen = set(plan)
    misses = 0
    while len(plan) < n + 2 and misses < 1000 + 20 * n:
        arch = sample_arch(space, rng)
        if arch in seen:
            misses += 1
            continue
        seen.add(arch)
        plan.append(arch)
    return plan


class SubnetEvaluator:
    """Loads a run once, then evaluates chunks of archs (in-process or as a Ray actor).

    Args:
        run_dir: the training run directory.
        calib_images: training images for BatchNorm recalibration (used only when the
            space has BatchNorm).
        threads: torch threads to use (``None`` leaves the setting alone).
        run: an already loaded :class:`nas.training.Run` of ``run_dir``.
        views: score every validation image in this many shifted views
            (:func:`nas.data.shifted_views`); accuracy and loss average over them.
        refit_images: refit each subnet's classifier on its features of this many
            training images before scoring it (:func:`nas.training.refit_classifier`);
            0 scores the inherited classifier.
        train_speed_steps: also score each subnet's training speed from its own
            initialisation over this many steps (:mod:`nas.predictors.proxies`, the run's
            optimizer settings and augmentation); 0 skips it.
        naswot: also score each subnet's NASWOT signal at its own initialisation.
    """

    def __init__(self, run_dir: str, *, calib_images: int = 256, threads: int | None = None,
                 run: Any = None, views: int = 1, refit_images: int = 0,
                 train_speed_steps: int = 0, naswot: bool = False):
        import torch

        from nas import training
        from nas.data import shifted_views

        if threads is not None:
            torch.set_num_threads(threads)
        self.run = run if run is not None else training.load_run(run_dir)
        if getattr(self.run, "arch", None) is not None:
            from nas.errors import ArtifactError

            raise ArtifactError(f"{self.run.run_dir} is a standalone run (one arch trained "
                                "alone); collecting subnets needs a supernet run")
        x, y = training.load_val_data(self.run.config, split="val")
        self.x_val, self.y_val = shifted_views(x, views), y.repeat(views)
        space = self.run.space
        self.calibrate = None
        if calib_images and any("batchnorm" in s.norm for s in space.stages):
            self.calibrate = (training.load_calib_data(self.run.config, calib_images),)
        self.refit = None
        if refit_images:
            self.refit = training.load_train_subset(self.run.config, refit_images)
        self.signals = (["train_speed"] if train_speed_steps else []) + (["naswot"] if naswot else [])
        self.scorer = _scorer(self.run, train_speed_steps or 1) if self.signals else None

    def evaluate(self, arch_jsons: list[str]) -> list[dict[str, Any]]:
        """Rows (``arch`` JSON, acc, loss, params, macs, seconds) of the given archs."""
        import torch

        from nas import training
        from nas.complexity import count_macs, count_params

        space = self.run.space
        kw = {"num_classes": space.num_classes, "in_chans": space.in_chans}
        rows = []
        for text in arch_jsons:
            arch = Arch.from_dict(json.loads(text))
            t0 = time.perf_counter()
            with torch.no_grad():
                res = training.evaluate(self.run.supernet, arch, self.x_val, self.y_val,
                                        calibrate=self.calibrate, refit=self.refit)
            row = {"arch": text, "acc": float(res["acc"]), "loss": float(res["loss"]),
                   "params": int(count_params(arch, **kw)), "macs": int(count_macs(arch, **kw))}
            for name in self.signals:
                row[name] = self.scorer.score(arch, name)
            rows.append(row | {"seconds": time.perf_counter() - t0})
        return rows


def _scorer(run: Any, steps: int) -> Any:
    """The run's :class:`nas.predictors.proxies.ProxyScorer` (its recipe and augmentation)."""
    return run_scorer(run.config, run.space, steps)


def run_scorer(config: dict[str, Any], space: SearchSpace, steps: int) -> Any:
    """A :class:`nas.predictors.proxies.ProxyScorer` with a training run's recipe (``lr``,
    ``weight_decay``, augmentation) on a fixed :data:`TRAIN_SPEED_IMAGES`-image subset of
    its training images: the setting the predictors' ``train_speed`` column is scored in."""
    from nas import training
    from nas.predictors.proxies import ProxyScorer

    x_tr, y_tr = training.load_train_subset(config, TRAIN_SPEED_IMAGES)
    return ProxyScorer(space, x_tr, y_tr, seed=0, steps=steps, lr=float(config.get("lr", 2e-3)),
                       weight_decay=float(config.get("weight_decay", 0.05)),
                       max_shift=int(config.get("max_shift", 0)),
                       hflip=bool(config.get("hflip", False)))


def _backfill_naswot(rows: list[dict[str, Any]], run: Any, say: Callable[[str], None]) -> int:
    """Score ``naswot`` for the rows that lack it (a table collected without ``--naswot``);
    cheap (one forward pass per subnet), so it runs in this process. Returns the count."""
    todo = [r for r in rows if r.get("naswot") is None]
    if todo:
        say(f"collect: adding naswot to {len(todo)} rows already in the table")
        scorer = _scorer(run, 1)
        for r in todo:
            r["naswot"] = scorer.score(r["arch"], "naswot")
    return len(todo)


def _check_resume(out: Path, space: SearchSpace, run_dir: Path, epoch: int,
                  views: int, refit_images: int, train_speed_steps: int,
                  naswot: bool) -> list[dict[str, Any]]:
    """Rows already in ``out`` (empty if it does not exist), after checking it fits this run."""
    if not out.exists():
        return []
    meta = read_table_meta(out)
    if meta is not None:
        run = meta.get("run") or {}
        if run.get("run_dir") != str(run_dir) or run.get("epoch") != epoch:
            raise ArtifactError(
                f"table {out} was collected from run {run.get('run_dir')} (epoch {run.get('epoch')}), "
                f"not from {run_dir} (epoch {epoch}); give another --out or remove the table")
        if int(meta.get("views", 1)) != views:
            raise ArtifactError(f"table {out} was collected with --views {meta.get('views', 1)}, "
                                f"not {views}; give the same --views, another --out, or remove it")
        if int(meta.get("refit_images", 0)) != refit_images:
            raise ArtifactError(
                f"table {out} was collected with --refit-images {meta.get('refit_images', 0)}, "
                f"not {refit_images}; give the same --refit-images, another --out, or remove it")
        if int(meta.get("train_speed_steps", 0)) != train_speed_steps:
            raise ArtifactError(
                f"table {out} was collected with --train-speed-steps "
                f"{meta.get('train_speed_steps', 0)}, not {train_speed_steps}; give the same "
                "--train-speed-steps, another --out, or remove it")
        if meta.get("naswot") and not naswot:
            raise ArtifactError(f"table {out} has a naswot column: give --naswot to extend it, "
                                "another --out, or remove it")
    return read_table(out, space=space).rows()


def collect_table(run_dir: str | os.PathLike, n: int, out: str | os.PathLike, *, seed: int = 0,
                  workers: int | None = None, address: str | None = None,
                  chunk_size: int | None = None, calib_images: int = 256, views: int = 1,
                  refit_images: int = 0, train_speed_steps: int = 0, naswot: bool = False,
                  log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Evaluate ``n`` sampled subnets (plus largest/smallest) of a run into a CSV table.

    Args:
        run_dir: training run directory (``nas train --out``).
        n: uniformly sampled archs, besides the largest and smallest.
        out: CSV table to create or resume (``OUT.meta.json`` is written beside it).
        seed: seeds the arch sampling (keep it to resume or extend a table).
        workers: parallel evaluators; 1 runs in this process, more start a local Ray
            with that many CPUs. Default: the machine's CPU count, or the cluster's
            when ``address``/``RAY_ADDRESS`` is set.
        address: Ray cluster address to attach to (default ``RAY_ADDRESS``).
        chunk_size: archs per task; the table is rewritten after each chunk.
        calib_images: BatchNorm recalibration images (only for spaces with BatchNorm).
        views: evaluate every validation image in this many shifted views (1-9, see
            :func:`nas.data.shifted_views`): less label noise on a small validation
            split, at the cost of ``views`` times the inference.
        refit_images: refit every subnet's classifier on its features of this many
            training images (a fixed subset) before scoring it. The classifier is the
            one tensor all subnets share whatever their shape; refitting it removes most
            of what sharing costs a subnet's score (on CIFAR-10, Kendall tau against
            standalone training went from -0.02 to 0.43). 0 (default) keeps it.
        train_speed_steps: add a ``train_speed`` column: minus the summed training loss
            of each subnet over this many steps from its own initialisation
            (:mod:`nas.predictors.proxies`); ``nas predictor fit`` then regresses on the
            combined target. Costs about as much as this many training steps per subnet.
        naswot: add a ``naswot`` column (NASWOT at each subnet's own initialisation, one
            forward pass: ~0.05-0.13 CPU s per subnet); ``nas predictor fit`` then
            regresses on the combined target. Rows of an existing table that lack it get
            it on resume.
        log: progress lines (``None`` for silence).

    Returns:
        ``{"rows", "new", "skipped", "planned", "wall_s", "eval_s_per_arch", "workers"}``.
    """
    from nas import training
    from nas.data import check_views

    say = log or (lambda _msg: None)
    run_dir, out = Path(run_dir).resolve(), Path(out)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
        raise NasError(f"workers must be an integer >= 1, got {workers!r}")
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise NasError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    check_views(views)
    for name, value in (("refit_images", refit_images), ("train_speed_steps", train_speed_steps)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise NasError(f"{name} must be an integer >= 0, got {value!r}")
    run = training.load_run(run_dir)
    space = run.space
    rows = _check_resume(out, space, run_dir, run.epoch, views, refit_images, train_speed_steps,
                         naswot)
    backfilled = _backfill_naswot(rows, run, say) if naswot else 0
    done = {r["arch"] for r in rows}
    plan = plan_archs(space, n, seed)
    if len(plan) < n + 2:
        say(f"note: space {space.name} has only {len(plan)} distinct archs to sample")
    todo = [a for a in plan if a not in done]
    say(f"collect: {len(plan)} planned, {len(plan) - len(todo)} already in {out}, "
        f"{len(todo)} to evaluate")
    use_ray = address is not None or (workers or os.cpu_count() or 1) > 1
    n_workers = workers or (None if address else os.cpu_count() or 1)
    info = {"run": {"run_dir": str(run_dir), "epoch": run.epoch, "data": run.config.get("data")},
            "seed": seed, "n": n, "planned": len(plan), "views": views,
            "refit_images": refit_images, "train_speed_steps": train_speed_steps,
            "naswot": bool(naswot)}
    t0 = time.perf_counter()
    eval_seconds: list[float] = []

    def commit(new_rows: list[dict[str, Any]]) -> None:
        for r in new_rows:
            arch = Arch.from_dict(json.loads(r["arch"]))
            eval_seconds.append(r["seconds"])
            rows.append({k: v for k, v in r.items() if k != "seconds"} | {"arch": arch})
        write_table(out, rows, space=space)
        write_table_meta(out, space, {**info, "rows": len(rows), "last_session": {
            "workers": n_workers, "evaluated": len(eval_seconds),
            "wall_s": round(time.perf_counter() - t0, 2),
            "eval_s_per_arch": round(float(np.mean(eval_seconds)), 4) if eval_seconds else None}})
        say(f"  {len(rows)}/{len(plan) + len(done - set(plan))} rows "
            f"({time.perf_counter() - t0:.0f}s)")

    if todo:
        jsons = [a.to_json() for a in todo]
        if use_ray:
            n_workers = _collect_ray(str(run_dir), jsons, commit, workers=workers, address=address,
                                     chunk_size=chunk_size, calib_images=calib_images, views=views,
                                     refit_images=refit_images,
                                     train_speed_steps=train_speed_steps, naswot=naswot)
        else:
            evaluator = SubnetEvaluator(str(run_dir), calib_images=calib_images, run=run,
                                        views=views, refit_images=refit_images,
                                        train_speed_steps=train_speed_steps, naswot=naswot)
            size = chunk_size or 8
            for i in range(0, len(jsons), size):
                commit(evaluator.evaluate(jsons[i:i + size]))
    elif backfilled or not out.exists():
        write_table(out, rows, space=space)
        write_table_meta(out, space, {**info, "rows": len(rows)})
    wall = time.perf_counter() - t0
    return {"rows": len(rows), "new": len(todo), "skipped": len(plan) - len(todo),
            "planned": len(plan), "wall_s": wall, "workers": n_workers,
            "eval_s_per_arch": float(np.mean(eval_seconds)) if eval_seconds else math.nan}


def _collect_ray(run_dir: str, jsons: list[str], commit: Callable[[list[dict[str, Any]]], None], *,
                 workers: int | None, address: str | None, chunk_size: int | None,
                 calib_images: int, views: int, refit_images: int,
                 train_speed_steps: int, naswot: bool) -> int:
    """Evaluate ``jsons`` on Ray actors, committing each finished chunk; return the actor count."""
    import ray
    from ray.exceptions import RayTaskError
    from ray.util import ActorPool

    from nas.raysession import ray_session

    with ray_session(address, num_cpus=workers):
        n_actors = workers or max(1, int(ray.available_resources().get("CPU", 1)))
        n_actors = min(n_actors, len(jsons))
        size = chunk_size or max(1, min(16, math.ceil(len(jsons) / (4 * n_actors))))
        Actor = ray.remote(num_cpus=1)(SubnetEvaluator)
        actors = [Actor.remote(run_dir, calib_images=calib_images, threads=1, views=views,
                               refit_images=refit_images, train_speed_steps=train_speed_steps,
                               naswot=naswot)
                  for _ in range(n_actors)]
        pool = ActorPool(actors)
        chunks = [jsons[i:i + size] for i in range(0, len(jsons), size)]
        for chunk in chunks:
            pool.submit(lambda a, c: a.evaluate.remote(c), chunk)
        try:
            while pool.has_next():
                commit(pool.get_next_unordered())
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, NasError):
                raise cause from None
            raise
        return n_actors
