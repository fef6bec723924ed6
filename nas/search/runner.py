"""Run a search as a Ray Tune experiment, resume it, and write its run dir.

Flow of :func:`run_search`:

1. check the config, load the space, build the objective and check its artefacts
   (another space's table/predictor/run is refused) and the budget (below the
   cheapest subnet's latency is refused, naming that latency);
2. build the searcher (bad options fail here, before anything is written), then write
   ``config.json`` (config, space fingerprint, artefact paths and sha256) once; an
   existing run dir of the *same* search is resumed, of another one refused;
3. replay ``trials.jsonl`` into a fresh searcher, then run the remaining trials as
   one Tune experiment (``tune/attempt-K``, removed once one succeeds: Tune's pickled
   state is not needed to resume): one Ray trial evaluates a batch of archs, actors
   are reused, ``workers`` trials run at once;
4. write ``trials.csv``, ``pareto.csv``, ``pareto.png``, ``best.yaml`` and
   ``summary.json``, and return a :class:`SearchResult` with the printed summary.

Ray is embedded (``ray.init(num_cpus=<this machine>)``, no dashboard, quiet) unless
``address`` or ``RAY_ADDRESS`` names a cluster; a Ray session already started by the
caller is used as is. Resuming replays the trial log rather than ``Tuner.restore``:
the log is written per completed trial, so nothing finished is lost or duplicated
whenever the driver dies (Tune's experiment snapshots lag behind by design).

Example:
    >>> cfg = SearchConfig(space="tiny32", objective="synthetic", budget_ms=0.35,
    ...                    searcher="evolution", trials=300, out="runs/search")  # doctest: +SKIP
    >>> result = run_search(cfg); print(result.summary)  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, extreme_arch, mutate_arch, sample_arch
from nas.errors import ArtifactError, NasError
from nas.io import read_json, write_json
from nas.raysession import ray_session
from nas.search.config import SearchConfig, SearchError
from nas.search.objective import (
    Objective,
    PredictorObjective,
    SupernetObjective,
    SyntheticObjective,
)
from nas.search.report import (
    best_feasible,
    check_best,
    format_table,
    reference_archs,
    write_outputs,
)
from nas.search.trial_log import TrialLog
from nas.space import SearchSpace, load_space

__all__ = ["SearchResult", "run_search", "resume_search", "build_objective", "min_latency",
           "auto_batch_size", "evaluate_batch", "ray_session"]

FORMAT = "vitnas.search"
VERSION = 1
# Test hook: SIGKILL the driver once this many trials are logged (a driver killed mid-search).
KILL_AFTER_ENV = "NAS_SEARCH_KILL_AFTER"


@dataclass(frozen=True)
class SearchResult:
    """What a search produced (the files are in ``out``)."""

    out: Path
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    front: list[dict[str, Any]]
    trials_per_s: float | None
    summary: str


# --------------------------------------------------------------------------- objective, budget

def build_objective(config: SearchConfig, space: SearchSpace) -> Objective:
    """The objective named by ``config.objective`` (paths as in the config)."""
    if config.objective == "predictor":
        return PredictorObjective(space, table=config.table, predictor=config.predictor)
    if config.objective == "supernet":
        return SupernetObjective(space, run=config.run, table=config.table)
    return SyntheticObjective(space)


def min_latency(space: SearchSpace, objective: Objective, *, samples: int = 64, seed: int = 0
                ) -> tuple[float, Arch]:
    """The smallest latency found among the space's smallest arch, its light mutations and
    random archs: an estimate (from above) of the cheapest subnet's latency."""
    rng = np.random.default_rng(seed)
    smallest = extreme_arch(space, "min")
    cands = [smallest] + [mutate_arch(space, smallest, rng, prob=0.05) for _ in range(samples // 2)]
    cands += [sample_arch(space, rng) for _ in range(samples // 2)]
    lat = np.asarray(objective.latency_ms(cands), dtype=np.float64)
    i = int(np.argmin(lat))
    return float(lat[i]), cands[i]


def auto_batch_size(trials: int, objective: str) -> int:
    """Archs per Ray trial: ~50 Ray trials per search, at most 32 archs (4 for the supernet).

    A Ray trial costs ~0.05-0.1 s of Tune overhead with actor reuse; a predicted arch
    ~0.1 ms, a supernet evaluation ~0.1-1 s.
    """
    cap = 4 if objective == "supernet" else 32
    return max(1, min(cap, trials // 50))


def _seed(seed: int, done: int) -> int:
    return int(np.random.SeedSequence([seed, done]).generate_state(1)[0])


# --------------------------------------------------------------------------- Ray

def evaluate_batch(config: dict[str, Any], objective: Objective) -> None:
    """The Ray trainable: evaluate one batch of archs and report one row per arch."""
    from ray import tune

    archs = [Arch.from_dict(d) for d in config["batch"]]
    rows = objective.evaluate(archs)
    # "acc" and "latency_ms" summarise the batch for Tune's metric check; searchers read "rows"
    tune.report({"rows": rows, "acc": max(r["acc"] for r in rows),
                 "latency_ms": min(r["latency_ms"] for r in rows)})


def _log_callback(log: TrialLog, *, start: int, attempt: int, budget_ms: float,
                  kill_after: int | None):
    from ray import tune

    class TrialLogCallback(tune.Callback):
        """Appends each completed batch to the trial log (driver side)."""

        def __init__(self) -> None:
            self.n = start

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            rows = (trial.last_result or {}).get("rows") or []
            batch, meta = trial.config["batch"], trial.config["meta"]
            if len(rows) != len(batch):
                return
            records = []
            for arch, m, row in zip(batch, meta, rows):
                rec = {"trial": self.n, "attempt": attempt}
                rec.update(row)
                rec.update({"feasible": bool(row["latency_ms"] <= budget_ms), "meta": m,
                            "arch": arch})
                records.append(rec)
                self.n += 1
            log.append(records)
            if kill_after is not None and self.n >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    return TrialLogCallback()


def _trial_name(trial) -> str:
    return f"batch_{trial.trial_id}"


def _trial_error(grid) -> NasError:
    """The first failed trial's error: a NasError as is, anything else as one line."""
    failed = [r for r in grid if r.error is not None]
    err = failed[0].error if failed else grid.errors[0]
    cause = getattr(err, "cause", None) or err
    if isinstance(cause, NasError):
        return cause
    first = (str(cause).strip().splitlines() or [""])[-1]
    where = f" (traceback: {failed[0].path}/error.txt)" if failed and failed[0].path else ""
    return SearchError(f"a Ray trial failed: {type(cause).__name__}: {first}{where}")


def _run_tune(config: SearchConfig, objective: Objective, searcher, log: TrialLog, *,
              start: int, attempt: int, echo: Callable[[str], None]) -> tuple[int, float, int]:
    """Run the remaining trials; return (archs evaluated, seconds, workers)."""
    import ray
    from ray import tune

    workers = config.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    resources: dict[str, float] = {"cpu": 1}
    if config.objective == "supernet":
        gpus = config.gpus_per_trial
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        if gpus:
            resources["gpu"] = gpus
    elif config.gpus_per_trial:
        resources["gpu"] = config.gpus_per_trial
    kill = os.environ.get(KILL_AFTER_ENV)
    trainable = tune.with_resources(tune.with_parameters(evaluate_batch, objective=objective),
                                    resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1,
                                    max_concurrent_trials=workers, reuse_actors=True,
                                    trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=f"attempt-{attempt}", storage_path=str(Path(config.out) / "tune"), verbose=0,
            failure_config=tune.FailureConfig(fail_fast=True),
            callbacks=[_log_callback(log, start=start, attempt=attempt,
                                     budget_ms=config.budget_ms,
                                     kill_after=int(kill) if kill else None)]))
    echo(f"running {config.trials - start} trials on Ray: {workers} workers, "
         f"{searcher.batch_size} archs per Ray trial, resources {resources}")
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.CRITICAL)  # a failed trial is reported once, by _trial_error
    t0 = time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        tune_log.setLevel(level)
    seconds = time.perf_counter() - t0
    if grid.errors:
        raise _trial_error(grid)  # Tune's dir stays, with the trial's error.txt
    # Tune's experiment state (pickles), of this and of killed earlier attempts, is not
    # needed to resume: the trial log is.
    shutil.rmtree(Path(config.out) / "tune", ignore_errors=True)
    return len(log.read()) - start, seconds, workers


# --------------------------------------------------------------------------- run dir

def _describe(objective: Objective) -> dict[str, Any]:
    describe = getattr(objective, "describe", None)
    return describe() if describe is not None else {"objective": type(objective).__name__}


def _check_artefacts(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    for key in ("table", "predictor"):
        a, b = (saved.get(key) or {}).get("sha256"), (now.get(key) or {}).get("sha256")
        if a and b and a != b:
            raise SearchError(f"the {key} {now[key]['path']} changed since the search in {out} "
                              f"started (sha256 {a} -> {b}); start a new search (another --out)")


def _check_run_dir(config: SearchConfig, space: SearchSpace, artefacts: dict[str, Any]) -> bool:
    """True when ``config.out`` holds this very search (to resume); refuse another one."""
    out = Path(config.out)
    path = out / "config.json"
    if not path.exists():
        if (out / "trials.jsonl").exists():
            raise ArtifactError(f"{out} has a trial log but no config.json; use another --out")
        return False
    saved = read_json(path, what="search config")
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a search config; use another --out")
    previous = SearchConfig.from_dict(saved.get("config"), source=str(path))
    diff = previous.same_search(config)
    if diff:
        raise SearchError(f"{out} holds another search (it differs in {', '.join(diff)}); "
                          f"use another --out, or --resume {out}")
    space.check_arch_compat(str((saved.get("space") or {}).get("fingerprint")),
                            f"the search in {out} (the space file changed since it started)")
    _check_artefacts(saved.get("artefacts") or {}, artefacts, out)
    return True


def _write_config(config: SearchConfig, space: SearchSpace, artefacts: dict[str, Any]) -> None:
    import optuna
    import ray

    write_json(Path(config.out) / "config.json", {
        "format": FORMAT, "version": VERSION, "config": config.to_dict(),
        "space": {"name": space.name, "fingerprint": space.fingerprint, "path": config.space},
        "artefacts": artefacts,
        "versions": {"python": platform.python_version(), "ray": ray.__version__,
                     "optuna": optuna.__version__, "numpy": np.__version__}})


def _attempt(out: Path, records: Sequence[dict[str, Any]]) -> int:
    """Index of this run of the search: after every earlier one, logged or not."""
    tune_dir = out / "tune"
    dirs = [int(p.name.split("-")[1]) for p in tune_dir.glob("attempt-*")] if tune_dir.is_dir() else []
    return max([-1] + dirs + [int(r.get("attempt", 0)) for r in records]) + 1


# --------------------------------------------------------------------------- entry points

def run_search(config: SearchConfig, *, objective: Objective | None = None,
               echo: Callable[[str], None] | None = print) -> SearchResult:
    """Run (or resume, if ``config.out`` holds the same search) a search; see the module doc.

    Args:
        config: the search.
        objective: an objective to use instead of the one ``config`` names (tests, benches).
        echo: where progress lines go (``None``: nowhere).
    """
    import optuna

    from nas.search.searchers import make_searcher

    say = echo or (lambda line: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per Optuna trial
    config = config.resolved()
    out = Path(config.out)
    space = load_space(config.space)
    objective = objective if objective is not None else build_objective(config, space)
    artefacts = _describe(objective)
    lowest, _ = min_latency(space, objective)
    if config.budget_ms < lowest:
        raise SearchError(
            f"budget {config.budget_ms:g} ms is below the smallest subnet's latency: the "
            f"cheapest arch found (the space's smallest arch and 64 variants) takes "
            f"{lowest:.4g} ms per the latency table; give --budget-ms >= {lowest:.4g}")
    resuming = _check_run_dir(config, space, artefacts)
    batch = config.batch_size or auto_batch_size(config.trials, config.objective)
    log = TrialLog(out / "trials.jsonl")
    records = log.read() if resuming else []
    searcher = make_searcher(  # before anything is written: bad options fail first
        config.searcher, space=space, budget_ms=config.budget_ms, latency=objective.latency_ms,
        trials=config.trials, batch_size=batch, seed=_seed(config.seed, len(records)),
        **config.options)
    if not resuming:
        _write_config(config, space, artefacts)
    if len(records) > config.trials:
        raise ArtifactError(f"{log.path} holds {len(records)} trials, more than the "
                            f"{config.trials} of its config")
    if resuming:
        say(f"resuming {out}: {len(records)} of {config.trials} trials done")
    rate = None
    run_info = ""
    if len(records) < config.trials:
        searcher.replay(records)
        attempt = _attempt(out, records)
        t0 = time.perf_counter()
        with ray_session(config.address):
            ray_start = time.perf_counter() - t0
            n, seconds, workers = _run_tune(config, objective, searcher, log,
                                            start=len(records), attempt=attempt, echo=say)
        rate = n / seconds if seconds > 0 else None
        run_info = (f"{n} evaluated in {seconds:.1f} s = {rate or 0:.1f} trials/s "
                    f"(Ray start {ray_start:.1f} s), {workers} workers, batch {batch}")
        records = log.read()
    return _finish(config, space, objective, records, rate, run_info)


def resume_search(run_dir: str | Path, *, address: str | None = None, workers: int | None = None,
                  objective: Objective | None = None,
                  echo: Callable[[str], None] | None = print) -> SearchResult:
    """Continue the search in ``run_dir`` (after its driver died); a finished one is re-reported."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ArtifactError(f"{run_dir} is not a search run dir (no config.json)")
    saved = read_json(path, what="search config")
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a search config")
    config = SearchConfig.from_dict(saved.get("config"), source=str(path))
    config = dataclasses.replace(config, out=str(run_dir), address=address,
                                 workers=workers if workers is not None else config.workers)
    return run_search(config, objective=objective, echo=echo)


def _finish(config: SearchConfig, space: SearchSpace, objective: Objective,
            records: list[dict[str, Any]], rate: float | None, run_info: str) -> SearchResult:
    out = Path(config.out)
    best = best_feasible(space, records, config.budget_ms)
    if best is not None:
        check_best(space, best, float(objective.latency_ms([Arch.from_dict(best["arch"])])[0]),
                   config.budget_ms)
    refs = reference_archs(space)
    ref_rows = list(zip([n for n, _ in refs], objective.evaluate([a for _, a in refs]))) if refs else []
    front = write_outputs(out, space, records, budget_ms=config.budget_ms,
                          searcher=config.searcher, best=best, references=ref_rows)
    feasible = sum(r["feasible"] for r in records)
    rejected = sum(int((r.get("meta") or {}).get("over_budget", 0)) for r in records)
    summary = _summary(config, space, records, best, front, ref_rows, feasible, rejected, run_info)
    write_json(out / "summary.json", {
        "trials": len(records), "feasible": feasible,
        "over_budget_rejected_before_evaluation": rejected,
        "trials_per_s_last_attempt": rate, "pareto_size": len(front),
        "best": None if best is None else {k: best[k] for k in ("trial", "acc", "latency_ms",
                                                                  "params")},
        "references": [{"name": n, **row} for n, row in ref_rows]})
    return SearchResult(out=out, records=records, best=best, front=front, trials_per_s=rate,
                        summary=summary)


def _summary(config: SearchConfig, space: SearchSpace, records: Sequence[dict[str, Any]],
             best, front, ref_rows, feasible: int, rejected: int, run_info: str) -> str:
    lines = [
        f"search      {config.searcher} on {space.name} ({space.fingerprint}), objective "
        f"{config.objective}, budget {config.budget_ms:g} ms, seed {config.seed}",
        f"trials      {len(records)} of {config.trials}" + (f"; this run: {run_info}" if run_info else ""),
        f"budget      {len(records) - feasible} of {len(records)} evaluated archs over budget; "
        f"{rejected} over-budget candidates rejected before evaluation",
    ]
    if best is None:
        lines.append("best        no feasible arch found (best.yaml not written)")
    else:
        lines.append(f"best        trial {best['trial']}: acc {best['acc']:.4f}, latency "
                     f"{best['latency_ms']:.4f} ms, params {int(best['params']):,} -> "
                     f"{Path(config.out) / 'best.yaml'}")
    for name, row in ref_rows:
        lines.append(f"reference   {name}: acc {row['acc']:.4f}, latency {row['latency_ms']:.4f} ms"
                     f"{'' if row['latency_ms'] <= config.budget_ms else ' (over budget)'}")
    lines.append(f"pareto      {len(front)} archs -> pareto.csv, pareto.png, trials.csv in "
                 f"{config.out}")
    lines.append("")
    lines.append("Pareto front, most accurate first:")
    lines.append(format_table(front[::-1]))
    return "\n".join(lines)
