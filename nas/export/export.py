"""``export_subnet``: from a trained supernet and an architecture to a model directory.

Order of work (every check on user input comes first, before anything heavy):
formats, output path, run directory, architecture (must be in the run's space),
latency table; then extract the subnet with BatchNorm recalibrated on training
images, optionally fine-tune it with distillation, fold and fuse it, measure
accuracy and latency, and write the directory atomically with its model card.
"""
from __future__ import annotations

import dataclasses
import datetime
import itertools
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.arch import Arch, canonicalize, extreme_arch, load_arch
from nas.complexity import count_macs, count_params
from nas.errors import ArchError, NasError
from nas.export.card import model_card
from nas.export.config import ModelConfig, preprocessing_for
from nas.export.finetune import finetune
from nas.export.formats import parse_formats
from nas.export.inference import optimize_for_inference
from nas.export.model_dir import check_output_dir, write_model_dir

__all__ = ["ExportResult", "export_subnet", "measure_latency"]


@dataclass(frozen=True)
class ExportResult:
    """Where the model went, its config, and each graph format's read-back difference."""

    out: Path
    config: ModelConfig
    checks: dict[str, float]


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"export: {message}", file=sys.stderr, flush=True)


def measure_latency(model: torch.nn.Module, arch: Arch, *, in_chans: int,
                    device: dict[str, Any] | None = None, timing: dict[str, Any] | None = None,
                    ) -> tuple[float, str]:
    """Latency (ms) of ``model`` by the latency tables' method, and the setting in words.

    ``device`` and ``timing`` are a table's (batch size, threads, dtype; clock, statistic),
    so the figure compares with the table's prediction; by default batch 1 on CPU with
    the current thread count, median over blocks.
    """
    from nas.latency.device import DeviceSpec, describe_device, device_fingerprint
    from nas.latency.measure import Timing, time_module

    d, t = device or {}, {"stat": "median", "min_run_time": 0.3, **(timing or {})}
    spec = DeviceSpec.parse("cpu", dtype=d.get("dtype", "fp32"),
                            batch_size=int(d.get("batch_size", 1)), threads=d.get("threads"))
    names = [f.name for f in dataclasses.fields(Timing)]
    tm = Timing(**{k: v for k, v in t.items() if k in names})
    x = torch.randn(spec.batch_size, in_chans, arch.resolution, arch.resolution)
    time_module(model, (x,), spec, tm)  # untimed: a CPU that was idle a moment ago runs slow
    stats = time_module(model, (x,), spec, tm)
    return float(stats[tm.stat]), (f"{describe_device(device_fingerprint(spec))}, "
                                   f"{tm.stat} over blocks, {tm.clock} clock")


def rewrite_name(flags: dict[str, bool]) -> str:
    """``fold_bn+fuse_qkv`` for the rewrites switched on in ``flags`` (``none`` for none)."""
    return "+".join(k for k, v in flags.items() if v) or "none"


REWRITE_ROUNDS = 3  # interleaved timing rounds of every rewrite combination
REWRITE_MARGIN = 0.02  # a combination must beat the plain model by this much to be kept


def choose_rewrite_set(model: torch.nn.Module, arch: Arch, allowed: dict[str, bool], *,
                       in_chans: int, device: dict[str, Any] | None = None,
                       timing: dict[str, Any] | None = None, rounds: int = REWRITE_ROUNDS,
                       margin: float = REWRITE_MARGIN, min_span_s: float | None = None,
                       ) -> tuple[dict[str, bool], dict[str, float], dict[str, float]]:
    """The inference rewrites worth applying to ``model`` on this machine.

    Every subset of the rewrites switched on in ``allowed`` (keys of
    :func:`nas.export.inference.optimize_for_inference`) is built and timed side by side
    (:func:`time_rounds`: at least ``rounds`` interleaved rounds, the order rotated from
    round to round, rounds added until they span ``min_span_s``, default the ground
    truth's 6 s). Each rewrite is then decided on its own: it is kept if, over every
    round and every pair of subsets that differ in it alone, the median of (time with
    it / time without it) is below ``1 - margin``. Pairs are timed in the same round, so
    a slow phase of the machine that spans a round cancels out, and each decision rests
    on ``rounds x 2^(n-1)`` ratios instead of one subset's luckiest round: picking the
    fastest of 8 subsets by their fastest rounds kept a copy of the plain model for
    DeiT-Tiny (fold_bn, nothing to fold: 0.92-0.98x) and dropped EfficientViT-M0's
    BatchNorm folding in 1 of 4 exports on a noisy host (1.02x timm's folded model
    instead of 0.93x). Before that, timed once each, the fastest of 8 subsets was often
    noise, and exported models measured up to 3% (batch 1) and 7% (batch 16) slower than
    the plain model side by side (``bench/bench_export.py``); 3 rounds of medians, timed
    inside one slow phase of the VM right after a search, put all 8 at 1.5-1.9 ms for a
    model that measured 1.02 ms moments later. Returns the kept flags, every subset's
    fastest round (ms) by :func:`rewrite_name` (a subset that changes nothing over a
    smaller one is timed once and listed with its time), and each tried rewrite's
    median ratio (below 1: it makes the model faster)."""
    on = [k for k, v in allowed.items() if v]
    combos = [{k: False for k in allowed} | dict(zip(on, picks))
              for picks in itertools.product((False, True), repeat=len(on))]
    models = [optimize_for_inference(model, **flags) for flags in combos]
    # A rewrite with nothing to act on (no BatchNorm to fold, no attention to fuse) leaves
    # the same model: it is timed once, under its first (smallest) subset, since timing
    # copies of one model only lets noise pick between them (DeiT-Tiny's "fold_bn",
    # which changes nothing there, measured 0.92-0.98x "none" in 3-round choices).
    first: dict[str, int] = {}
    same = [first.setdefault(repr(m), i) for i, m in enumerate(models)]
    distinct = sorted(set(same))
    table, _ = time_rounds([models[i] for i in distinct], arch, in_chans=in_chans,
                           device=device, timing=timing, rounds=max(1, int(rounds)),
                           min_span_s=min_span_s)
    col = {i: c for c, i in enumerate(distinct)}
    fastest = [min(row[col[i]] for row in table) for i in same]
    timed = {rewrite_name(flags): round(t, 4) for flags, t in zip(combos, fastest)}
    flags, effects = {k: False for k in allowed}, {}
    for k in on:  # each rewrite's effect: with / without it, all else equal, same round
        effects[k] = round(statistics.median(row[col[same[i]]] / row[col[same[j]]]
                                             for row in table for i, j in _pairs(combos, k)), 4)
        flags[k] = effects[k] < 1 - margin
    return flags, timed, effects


def _pairs(combos: list[dict[str, bool]], key: str) -> list[tuple[int, int]]:
    """Index pairs (with ``key``, without it) of combinations that agree on all else."""
    index = {tuple(sorted(c.items())): i for i, c in enumerate(combos)}
    return [(i, index[tuple(sorted({**c, key: False}.items()))])
            for i, c in enumerate(combos) if c[key]]


def _is_dir(text: str | Path) -> bool:
    try:
        return Path(text).is_dir()
    except OSError:  # inline YAML/JSON longer than a file name can be
        return False


def _resolve_arch(arch: Arch | str | Path, space) -> Arch:
    """An Arch, an arch file or text, or a search run dir (its ``best.yaml``), canonicalised."""
    if isinstance(arch, (str, Path)) and _is_dir(arch) and (Path(arch) / "best.yaml").is_file():
        arch = Path(arch) / "best.yaml"
    return canonicalize(space, arch if isinstance(arch, Arch) else load_arch(arch))


def export_subnet(run: Any, arch: Arch | str | Path | None, out: str | Path, *,
                  formats: str | tuple[str, ...] = ("safetensors",), finetune_epochs: int = 0,
                  fold_bn: bool = True, fuse_qkv: bool = True, table: str | Path | None = None,
                  measure: bool = True, evaluate: bool = True, overwrite: bool = False,
                  command: str | None = None, seed: int = 0, verbose: bool = True,
                  choose_rewrites: bool = True) -> ExportResult:
    """Export ``arch`` of a trained supernet as a standalone model directory.

    Args:
        run: a run directory of ``nas train`` (or a loaded :class:`nas.training.Run`): a
            supernet, or one arch trained alone (``nas train --arch``).
        arch: the architecture: an :class:`~nas.arch.Arch`, a YAML/JSON file (a search's
            ``best.yaml``) or inline text; it must belong to the run's search space. For
            a standalone run, ``None`` (or its own arch).
        out: the model directory to create (atomically).
        formats: ``safetensors`` (always) plus any of ``onnx``, ``pt2``, ``torchscript``.
        finetune_epochs: epochs of distillation from the largest subnet (0: none).
        fold_bn: fold BatchNorm into neighbouring layers.
        fuse_qkv: fuse the attention projections.
        table: a latency table of the run's space, for the predicted latency.
        measure: time the exported model on this machine (table's setting if given).
        evaluate: compute validation accuracy.
        overwrite: replace an existing ``out``.
        command: the command line to record in the model card.
        seed: seeds fine-tuning.
        verbose: progress on stderr.
        choose_rewrites: with ``measure``, time the model with every combination of the
            allowed rewrites (BatchNorm folding, attention fusion, oneDNN linears) at the
            table's setting (interleaved rounds) and keep each rewrite whose paired
            with / without ratio has a median below 0.98, so the export is not slower than
            the model the budget was searched for (:func:`choose_rewrite_set`); the
            timings are recorded in ``metrics.latency_ms.rewrites`` and the ratios in
            ``metrics.latency_ms.rewrite_effects``. Off: every allowed rewrite is applied.

    Raises:
        ArtifactError: no checkpoint in ``run``, unwritable ``out``, a table of another space.
        ArchError: ``arch`` is not in the run's space.
        ExportFormatError: a graph format failed to export or to read back equal.

    Example:
        >>> export_subnet("runs/t/train", "runs/t/search/best.yaml", "runs/t/model",
        ...               formats="safetensors,onnx")  # doctest: +SKIP
    """
    from nas.training import calibrate_bn, evaluate_model, load_run, load_val_data

    formats = parse_formats(formats)
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) \
            or finetune_epochs < 0:
        raise NasError(f"finetune_epochs must be an integer >= 0, got {finetune_epochs!r}")
    run_dir = run.run_dir if hasattr(run, "run_dir") else Path(run)
    out = check_output_dir(out, overwrite=overwrite, keep=(run_dir,))
    run = load_run(run) if isinstance(run, (str, Path)) else run
    space = run.space
    if arch is None:
        if run.arch is None:
            raise ArchError(f"{run.run_dir} is a supernet run: give the arch to export")
        arch = run.arch
    arch = _resolve_arch(arch, space)
    run.check_arch(arch)
    lat_table = None
    if table is not None:
        from nas.latency import LatencyTable

        lat_table = LatencyTable.load(table, space=space)

    cfg = run.config
    _log(verbose, f"subnet of {space.name} from {run.run_dir} (epoch {run.epoch})")
    model, calib = _subnet_model(run, arch)
    x_val = y_val = None
    if evaluate or finetune_epochs:
        x_val, y_val = load_val_data(cfg)
    metrics: dict[str, Any] = {"params": count_params(arch, num_classes=space.num_classes,
                                                      in_chans=space.in_chans),
                               "macs": count_macs(arch, num_classes=space.num_classes,
                                                  in_chans=space.in_chans)}
    if evaluate:
        metrics["inherited_acc"] = evaluate_model(model, x_val, y_val,
                                                  resolution=arch.resolution)["acc"]
    if finetune_epochs and run.arch is not None:
        raise NasError("--finetune-epochs distils from the supernet's largest subnet; a "
                       "standalone run has none (train it longer with nas train --resume)")
    if finetune_epochs:
        _log(verbose, f"fine-tuning {finetune_epochs} epoch(s) with distillation")
        teacher = calibrate_bn(run.supernet, extreme_arch(space, "max"), calib)
        x_tr, y_tr = load_val_data(cfg, split="train")
        finetune(model, teacher, x_tr, y_tr, epochs=finetune_epochs, seed=seed, verbose=verbose)
        model = model.eval()
    device = lat_table.device if lat_table is not None else None
    timing = lat_table.timing if lat_table is not None else None
    choice = {"fold_bn": fold_bn, "fuse_qkv": fuse_qkv, "onednn_linears": True}
    rewrites: dict[str, float] = {}
    effects: dict[str, float] = {}
    if measure:
        from nas.latency.quiet import wait_for_quiet

        busy = wait_for_quiet(10.0, threads=(device or {}).get("threads"))
        if busy:
            _log(verbose, f"warning: the machine is busy ({busy}); timings are upper bounds")
    if measure and choose_rewrites:
        _log(verbose, "timing the rewrites on this machine")
        choice, rewrites, effects = choose_rewrite_set(model, arch, choice,
                                                       in_chans=space.in_chans, device=device,
                                                       timing=timing)
    fast = optimize_for_inference(model, **choice)
    latency = _latency_record(model, fast, arch, space.in_chans, lat_table, rewrites,
                              measure=measure, verbose=verbose)
    if effects:
        latency["rewrite_effects"] = effects  # median time with / without, same round
    if any(choice.values()) and latency.get("measured", 0.0) > latency.get("measured_plain",
                                                                            float("inf")):
        # the last word is the side-by-side timing: the budget was searched for the plain model
        _log(verbose, f"the rewrites ({rewrite_name(choice)}) measured slower than the plain "
                      "model side by side; exporting without them")
        latency["dropped"] = rewrite_name(choice)
        choice = {k: False for k in choice}
        fast = optimize_for_inference(model, **choice)
        latency["measured"] = latency["measured_plain"]
    if latency:
        metrics["latency_ms"] = latency
    if evaluate:
        res = evaluate_model(fast, x_val, y_val, resolution=arch.resolution)
        metrics.update(val_acc=res["acc"], val_loss=res["loss"], val_images=len(y_val))
    source = {"name": out.name, "run_dir": str(Path(run.run_dir).resolve()), "epoch": run.epoch,
              "data": cfg.get("data"), "finetune_epochs": finetune_epochs,
              "command": command or "nas " + shlex.join(sys.argv[1:]),
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
              "torch": torch.__version__}
    config = ModelConfig(arch=arch, num_classes=space.num_classes, in_chans=space.in_chans,
                         space_name=space.name, space_fingerprint=space.fingerprint,
                         preprocessing=preprocessing_for(cfg.get("data", "imagefolder:."),
                                                         arch.resolution),
                         bn_folded=choice["fold_bn"], qkv_fused=choice["fuse_qkv"],
                         onednn_linears=choice["onednn_linears"], source=source,
                         metrics=metrics)
    _log(verbose, f"writing {', '.join(formats)} to {out}")
    checks = write_model_dir(fast, config, out, formats=formats, overwrite=overwrite,
                             card=model_card, keep=(run_dir,))
    return ExportResult(out=out, config=config, checks=checks)


def _subnet_model(run: Any, arch: Arch) -> tuple[torch.nn.Module, Any]:
    """The subnet as a standalone model in eval mode, and the calibration images (or None).

    A supernet's subnet gets its BatchNorm statistics recomputed for it alone; a
    standalone run's model keeps its own.
    """
    from nas.training import calibrate_bn, load_run_calib_data

    if run.arch is None:
        calib = load_run_calib_data(run.config)
        return calibrate_bn(run.supernet, arch, calib), calib
    return run.supernet.extract(arch).eval(), None


def _latency_record(model: torch.nn.Module, fast: torch.nn.Module, arch: Arch, in_chans: int,
                    lat_table: Any, rewrites: dict[str, float], *, measure: bool,
                    verbose: bool) -> dict[str, Any]:
    """``metrics.latency_ms`` of config.json: the table's prediction, the exported and the
    plain model measured at the table's setting, and the rewrite timings."""
    device = lat_table.device if lat_table is not None else None
    timing = lat_table.timing if lat_table is not None else None
    latency: dict[str, Any] = {}
    if lat_table is not None:
        latency["predicted"] = float(lat_table.predict([arch])[0])
    if measure:
        _log(verbose, "timing on this machine")
        if rewrites:
            latency["rewrites"] = rewrites
        (latency["measured"], latency["measured_plain"]), latency["setting"] = \
            measure_side_by_side([fast, model], arch, in_chans=in_chans, device=device,
                                 timing=timing)
    return latency


def measure_side_by_side(models: list[torch.nn.Module], arch: Arch, *, in_chans: int,
                         device: dict[str, Any] | None = None,
                         timing: dict[str, Any] | None = None, rounds: int = 3,
                         min_span_s: float | None = None) -> tuple[list[float], str]:
    """Each model's fastest of interleaved rounds of :func:`measure_latency`, rounds added
    until they span ``min_span_s`` (default: the ground truth's): measured once each, an
    exported and a plain model both fell inside one burst of a shared VM's slowness and
    measured 37% over the table's prediction."""
    table, setting = time_rounds(models, arch, in_chans=in_chans, device=device, timing=timing,
                                 rounds=rounds, min_span_s=min_span_s)
    return [min(col) for col in zip(*table)], setting


def time_rounds(models: list[torch.nn.Module], arch: Arch, *, in_chans: int,
                device: dict[str, Any] | None = None, timing: dict[str, Any] | None = None,
                rounds: int = 3, min_span_s: float | None = None
                ) -> tuple[list[list[float]], str]:
    """Every round's ms of every model (``[round][model]``), the models timed in turn in
    an order rotated from round to round, and the setting in words; see
    :func:`measure_side_by_side`."""
    from nas.latency.measure import GROUND_TRUTH_SPAN_S

    span = GROUND_TRUTH_SPAN_S if min_span_s is None else min_span_s
    table: list[list[float]] = []
    setting, t0 = "", time.perf_counter()
    while len(table) < rounds or time.perf_counter() - t0 < span:
        row = [0.0] * len(models)
        for i in [(j + len(table)) % len(models) for j in range(len(models))]:
            row[i], setting = measure_latency(models[i], arch, in_chans=in_chans, device=device,
                                              timing=timing)
        table.append(row)
    return table, setting
