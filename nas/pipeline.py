"""``nas run``: the whole hardware-aware NAS job in one command, resumable stage by stage.

Stages, each writing into its own part of the run directory ``RUN``:

1. ``train``    ``RUN/train/``                 weight-sharing supernet (:func:`nas.training.train`)
2. ``profile``  ``RUN/latency/table.json``     latency table of this machine (:func:`nas.latency.profile_space`)
3. ``collect``  ``RUN/predictor/subnets.csv``  inherited-weight accuracy of sampled subnets
4. ``fit``      ``RUN/predictor/model/``       accuracy predictor (:func:`nas.predictors.fit_predictor`)
5. ``search``   ``RUN/search/``                Ray Tune search under the latency budget, then its
                                               picks timed and the table refitted (``nas verify``)
6. ``export``   ``RUN/export/model/``          the best subnet as a model directory
7. ``report``   ``RUN/report.html``            Pareto plot, best subnets, references, commands

``RUN/pipeline.json`` records the resolved settings and every finished stage (time,
results, the command that reproduces it). Rerunning the same command skips finished
stages and resumes the interrupted one (each stage's own API resumes its artefact);
a run directory holding other settings is refused. Settings are frozen dataclasses
(:class:`PipelineConfig`), overridden by a YAML file; unknown keys are errors.

Example:
    >>> run_pipeline(PipelineConfig(), "runs/default")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import datetime
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import ArtifactError
from nas.io import read_json, write_json
from nas.pipeline_config import (
    FORMAT,
    ExportSection,
    PipelineConfig,
    PipelineError,
    PredictorSection,
    ProfileSection,
    SearchSection,
    TrainSection,
    find_pipeline_config,
    load_pipeline_config,
    with_defaults,
)
from nas.settings import to_flags

__all__ = ["PipelineError", "PipelineConfig", "TrainSection", "ProfileSection",
           "PredictorSection", "SearchSection", "ExportSection", "STAGES", "load_pipeline_config",
           "find_pipeline_config", "run_pipeline"]

STAGES = ("train", "profile", "collect", "fit", "search", "export", "report")


@dataclass
class _Ctx:
    """One pipeline run: settings, paths, the status file and the progress printer."""

    cfg: PipelineConfig
    out: Path
    say: Callable[[str], None]
    status: dict[str, Any]

    @property
    def train_dir(self) -> Path:
        return self.out / "train"

    @property
    def table(self) -> Path:
        return self.out / "latency" / "table.json"

    @property
    def subnets(self) -> Path:
        return self.out / "predictor" / "subnets.csv"

    @property
    def predictor(self) -> Path:
        return self.out / "predictor" / "model"

    @property
    def search_dir(self) -> Path:
        return self.out / "search"

    @property
    def best_arch(self) -> Path:
        """The search's pick: re-ranked by training speed when ``search.rerank`` is on, else
        timed end to end when ``search.verify`` is on."""
        c = self.cfg.search
        return self.search_dir / ("best_rerank.yaml" if c.rerank else
                                  "best_verified.yaml" if c.verify else "best.yaml")

    @property
    def final_table(self) -> Path:
        """The table the export and report predict with: the search's picks timed and the
        table refitted on them (``nas verify``) when ``search.verify`` is on."""
        from nas.search.verify import VERIFIED_TABLE

        verified = self.search_dir / VERIFIED_TABLE
        return verified if self.cfg.search.verify and verified.is_file() else self.table

    @property
    def model_dir(self) -> Path:
        return self.out / "export" / "model"

    def stage(self, name: str) -> dict[str, Any]:
        return self.status["stages"].setdefault(name, {})

    def save(self) -> None:
        self.status["updated"] = _now()
        write_json(self.out / "pipeline.json", self.status)


# the predictor section's fields that are nas predictor collect's flags
_COLLECT_FLAGS = ("workers", "views", "refit_images", "train_speed_steps", "naswot", "anchors",
                  "anchor_epochs")


def _now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S UTC}"


def _space_arg(cfg: PipelineConfig) -> str:
    from nas.space import find_space

    return str(find_space(cfg.space))


def _stage_train(ctx: _Ctx) -> dict[str, Any]:
    from nas.training import TrainConfig, train

    c = ctx.cfg.train
    tc = TrainConfig(space=_space_arg(ctx.cfg), data=ctx.cfg.data, out=str(ctx.train_dir),
                     seed=ctx.cfg.seed, **dataclasses.asdict(c))
    train(tc, resume=True)
    cmd = (f"nas train --space {ctx.cfg.space} --data {ctx.cfg.data} --seed {ctx.cfg.seed} "
           f"{to_flags(c, changed=True)} --out {ctx.train_dir}")
    return {"command": cmd}


def _stage_profile(ctx: _Ctx) -> dict[str, Any]:
    from nas.latency import profile_space
    from nas.space import load_space

    c = ctx.cfg.profile
    table = profile_space(load_space(ctx.cfg.space), out=ctx.table, device="cpu",
                          batch_size=c.batch_size, threads=c.threads, calibrate=c.calibrate,
                          seed=ctx.cfg.seed, min_run_time=c.min_run_time, rounds=c.rounds,
                          allow_busy=c.allow_busy or None)
    if not table.complete:
        raise ArtifactError(f"latency table {ctx.table} is incomplete; rerun to resume")
    cmd = (f"nas profile --space {ctx.cfg.space} --seed {ctx.cfg.seed} {to_flags(c)} "
           f"--out {ctx.table}")
    return {"command": cmd, "entries": len(table), "busy": table.scope.get("busy")}


def _stage_collect(ctx: _Ctx) -> dict[str, Any]:
    from nas.predictors.collect import collect_table

    c = ctx.cfg.predictor
    summary = collect_table(ctx.train_dir, c.collect, ctx.subnets, seed=ctx.cfg.seed,
                            workers=c.workers, views=c.views, refit_images=c.refit_images,
                            train_speed_steps=c.train_speed_steps, naswot=c.naswot, log=ctx.say)
    cmd = (f"nas predictor collect --run {ctx.train_dir} -n {c.collect} --seed {ctx.cfg.seed} "
           f"{to_flags(c, only=_COLLECT_FLAGS)} --out {ctx.subnets}")
    if c.anchors:
        from nas.predictors.anchors import train_anchors

        train_anchors(ctx.train_dir, c.anchors, ctx.subnets, epochs=c.anchor_epochs,
                      seed=ctx.cfg.seed, workers=c.workers, log=ctx.say)
    return {"command": cmd, "rows": summary["rows"]}


def _stage_fit(ctx: _Ctx) -> dict[str, Any]:
    from nas.predictors import fit_predictor
    from nas.predictors.anchors import anchor_paths, calibrate_with_anchors
    from nas.predictors.calibration import describe_calibration

    c = ctx.cfg.predictor
    pred = fit_predictor(str(ctx.subnets), model=c.model, seed=ctx.cfg.seed, folds=c.folds,
                         log=ctx.say)
    anchors = anchor_paths(ctx.subnets)[0]
    if anchors.is_file():
        pred.info["anchors"] = calibrate_with_anchors(pred, anchors)
        ctx.say(f"predictor vs {pred.info['anchors']['anchors']} standalone anchors: Kendall tau "
                f"{pred.info['anchors']['kendall_tau']}")
        ctx.say(describe_calibration(pred.info["anchors"]["calibration"]))
    pred.save(ctx.predictor)
    cv = pred.info.get("cv") or {}
    fam = (cv.get("families") or {}).get(cv.get("selected", pred.family), {})
    cmd = (f"nas predictor fit --data {ctx.subnets} {to_flags(c, only=('model', 'folds'))} "
           f"--seed {ctx.cfg.seed} --out {ctx.predictor}")
    return {"command": cmd, "family": pred.family,
            "kendall_tau": (fam.get("mean") or {}).get("kendall_tau")}


def default_budget(table: Any, space: Any, *, samples: int, quantile: float, seed: int) -> float:
    """The ``quantile`` of the table latencies of ``samples`` random archs of ``space`` (ms)."""
    from nas.arch import sample_arch

    rng = np.random.default_rng(seed)
    lat = table.predict([sample_arch(space, rng) for _ in range(samples)])
    return float(np.quantile(lat, quantile))


def _stage_search(ctx: _Ctx) -> dict[str, Any]:
    from nas.latency import LatencyTable
    from nas.search import SearchConfig, run_search
    from nas.space import load_space

    c = ctx.cfg.search
    space = load_space(ctx.cfg.space)
    budget = c.budget_ms
    if budget is None:
        table = LatencyTable.load(ctx.table, space=space)
        budget = round(default_budget(table, space, samples=c.budget_samples,
                                      quantile=c.budget_quantile, seed=ctx.cfg.seed), 4)
        ctx.say(f"budget {budget} ms: the {c.budget_quantile:g} quantile of the predicted "
                f"latency of {c.budget_samples} random archs")
    sc = SearchConfig(space=_space_arg(ctx.cfg), budget_ms=budget, out=str(ctx.search_dir),
                      searcher=c.searcher, trials=c.trials, objective="predictor",
                      table=str(ctx.table), predictor=str(ctx.predictor), seed=ctx.cfg.seed,
                      workers=c.workers)
    result = run_search(sc, echo=ctx.say)
    if result.best is None:
        raise PipelineError(f"the search found no arch within {budget} ms; give a larger "
                            "search.budget_ms")
    cmd = (f"nas search --space {ctx.cfg.space} --table {ctx.table} --predictor {ctx.predictor} "
           f"--budget-ms {budget} {to_flags(c, only=('searcher', 'trials', 'workers'))} --seed "
           f"{ctx.cfg.seed} --out {ctx.search_dir}")
    out = {"command": cmd, "budget_ms": budget, "best_acc": result.best["acc"],
           "best_latency_ms": result.best["latency_ms"]}
    if c.verify:
        from nas.search.verify import verify

        checked = verify(ctx.search_dir, table=ctx.table, top=c.verify, rounds=c.verify_rounds,
                         echo=ctx.say)
        ctx.say(checked.summary)
        out["command"] += (f" && nas verify {ctx.search_dir} --table {ctx.table} --top "
                           f"{c.verify} --rounds {c.verify_rounds}")
        out.update(verified_trial=checked.best["trial"], verified_acc=checked.best["acc"],
                   verified_ms=checked.best["measured_ms"], verify_timed=checked.measured)
    if c.rerank:
        from nas.search.rerank import rerank

        picked = rerank(ctx.search_dir, ctx.train_dir, top=c.rerank, steps=c.rerank_steps,
                        echo=ctx.say)
        ctx.say(picked.summary)
        out["command"] += (f" && nas rerank {ctx.search_dir} --run {ctx.train_dir} --top "
                           f"{c.rerank} --steps {c.rerank_steps}")
        out.update(rerank_trial=picked.best["trial"], rerank_acc=picked.best["acc"],
                   rerank_latency_ms=picked.best["latency_ms"])
    return out


def _stage_export(ctx: _Ctx) -> dict[str, Any]:
    from nas.arch import load_arch
    from nas.export import ExportFormatError, ModelConfig, export_subnet, is_model_dir

    c = ctx.cfg.export
    best = ctx.best_arch
    formats, skipped = list(c.formats), {}
    cmd = (f"nas export --run {ctx.train_dir} --arch {best} --out {ctx.model_dir} "
           f"{to_flags(c, only=('formats', 'finetune_epochs'))} --table {ctx.final_table}")
    if is_model_dir(ctx.model_dir) and ModelConfig.load(ctx.model_dir).arch == load_arch(best):
        return {"command": cmd, "skipped_formats": skipped}  # written before a kill
    while True:
        try:
            export_subnet(ctx.train_dir, best, ctx.model_dir, formats=tuple(formats),
                          finetune_epochs=c.finetune_epochs, table=ctx.final_table, overwrite=True,
                          seed=ctx.cfg.seed, command=cmd)
            break
        except ExportFormatError as e:
            if e.fmt in (None, "safetensors") or e.fmt not in formats:
                raise
            ctx.say(f"warning: {e}; exporting without {e.fmt}")
            skipped[e.fmt] = str(e)
            formats.remove(e.fmt)
    return {"command": cmd, "skipped_formats": skipped}


def _stage_report(ctx: _Ctx) -> dict[str, Any]:
    from nas.report import write_report

    path = write_report(ctx.out, ctx.cfg, ctx.status, say=ctx.say, table=ctx.final_table)
    return {"command": f"nas run --out {ctx.out}  # rewrites {path.name}", "path": str(path)}


_RUNNERS: dict[str, Callable[[_Ctx], dict[str, Any]]] = {
    "train": _stage_train, "profile": _stage_profile, "collect": _stage_collect,
    "fit": _stage_fit, "search": _stage_search, "export": _stage_export, "report": _stage_report}
_ARTEFACTS: dict[str, Callable[[_Ctx], Path]] = {
    "train": lambda c: c.train_dir / "checkpoints" / "last.safetensors",
    "profile": lambda c: c.table, "collect": lambda c: c.subnets, "fit": lambda c: c.predictor,
    "search": lambda c: c.best_arch,
    "export": lambda c: c.model_dir / "model.safetensors",
    "report": lambda c: c.out / "report.html"}


def _open(cfg: PipelineConfig, out: Path, say: Callable[[str], None]) -> _Ctx:
    """Load (or start) ``out/pipeline.json``; refuse a run dir of other settings."""
    from nas.space import load_space

    space = load_space(cfg.space)
    path = out / "pipeline.json"
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} exists and is not a directory")
    if path.is_file():
        status = read_json(path, what="pipeline status")
        if not isinstance(status, dict) or status.get("format") != FORMAT:
            raise ArtifactError(f"{path} is not a nas run status file")
        diff = _diff(with_defaults(status.get("config", {})), cfg.to_dict())
        if diff or status.get("space_fingerprint") != space.fingerprint:
            shown = "; ".join(diff[:4]) + (f"; {len(diff) - 4} more" if len(diff) > 4 else "") \
                if diff else "the search space file changed"
            raise PipelineError(f"{out} holds a nas run with other settings ({shown}); rerun "
                                "with the same settings to resume, or choose another --out")
        say(f"resuming {out}")
    else:
        if out.is_dir() and any(out.iterdir()):
            raise PipelineError(f"--out {out} exists, is not empty and holds no nas run "
                                "(pipeline.json); choose a new or empty directory")
        status = {"format": FORMAT, "version": 1, "config": cfg.to_dict(),
                  "space": space.name, "space_fingerprint": space.fingerprint,
                  "command": command_line(), "created": _now(), "stages": {}}
    ctx = _Ctx(cfg=cfg, out=out, say=say, status=status)
    try:
        out.mkdir(parents=True, exist_ok=True)
        ctx.save()
    except OSError as e:
        raise ArtifactError(f"cannot write {out}: {e.strerror}") from None
    return ctx


def _diff(saved: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(given)):
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} != {b!r}")
    return out


def _check_data(cfg: PipelineConfig) -> None:
    """Load the dataset (an image folder is decoded into its cache) before anything is
    written: a wrong ``data`` must not leave a run directory behind."""
    from nas.data import load_dataset
    from nas.space import load_space

    load_dataset(cfg.data, split="val", image_size=max(load_space(cfg.space).resolution))


def run_pipeline(cfg: PipelineConfig, out: str | Path, *, until: str | None = None,
                 echo: Callable[[str], None] | None = print) -> Path:
    """Run (or resume) every stage of ``nas run`` into ``out``; returns ``out/report.html``.

    Args:
        cfg: the settings.
        out: the run directory (created; a directory of the same settings is resumed).
        until: stop after this stage (one of :data:`STAGES`).
        echo: where progress lines go (``None``: nowhere).

    Raises:
        PipelineError: bad settings, or ``out`` holds a run with other settings.
        NasError: any stage's error (its artefacts so far are kept for the rerun).
    """
    if until is not None and until not in STAGES:
        raise PipelineError(f"unknown stage {until!r}; valid: {', '.join(STAGES)}")
    say = echo or (lambda line: None)
    _check_data(cfg)
    ctx = _open(cfg, Path(out), say)
    t_start = time.perf_counter()
    redo = False
    for i, name in enumerate(STAGES):
        st = ctx.stage(name)
        done = st.get("done") and _ARTEFACTS[name](ctx).exists() and not redo
        if done and name != "report":
            say(f"[{i + 1}/{len(STAGES)}] {name}: done ({st.get('seconds', 0):.0f} s), skipped")
        else:
            redo = name != "report"  # a redone stage invalidates the ones after it
            say(f"[{i + 1}/{len(STAGES)}] {name}: started {_now()}")
            t0 = time.perf_counter()
            st.clear()
            result = _RUNNERS[name](ctx)
            st.update(result, done=True, seconds=round(time.perf_counter() - t0, 1),
                      finished=_now())
            ctx.save()
            say(f"[{i + 1}/{len(STAGES)}] {name}: finished in {st['seconds']:.0f} s")
        if name == until:
            break
    total = sum(s.get("seconds", 0) for s in ctx.status["stages"].values())
    say(f"nas run: {ctx.out} ({total / 60:.1f} min of stage time, "
        f"{(time.perf_counter() - t_start) / 60:.1f} min this session)")
    return ctx.out / "report.html"


def command_line() -> str:
    """This process's command line, for the records."""
    return "nas " + shlex.join(sys.argv[1:])
