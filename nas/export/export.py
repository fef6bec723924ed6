"""``export_subnet``: from a trained supernet and an architecture to a model directory.

Order of work (every check on user input comes first, before anything heavy):
formats, output path, run directory, architecture (must be in the run's space),
latency table; then extract the subnet with BatchNorm recalibrated on training
images, optionally fine-tune it with distillation, fold and fuse it, measure
accuracy and latency, and write the directory atomically with its model card.
"""
from __future__ import annotations

import datetime
import shlex
import sys
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
from nas.export.timing import decide_rewrites
from nas.latency.anchors import nearest_anchors, shift_warning

__all__ = ["ExportResult", "export_subnet"]


@dataclass(frozen=True)
class ExportResult:
    """Where the model went, its config, and each graph format's read-back difference."""

    out: Path
    config: ModelConfig
    checks: dict[str, float]


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"export: {message}", file=sys.stderr, flush=True)


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
            with / without ratio has a median below 0.98
            (:func:`nas.export.timing.choose_rewrite_set`); the timings are recorded in
            ``metrics.latency_ms.rewrites`` and the ratios in
            ``metrics.latency_ms.rewrite_effects``. Off: every allowed rewrite is applied.
            Either way, with ``measure`` the kept set is then timed side by side with the
            plain model and dropped if slower (``metrics.latency_ms.dropped``), so the
            export is not slower than the model the budget was searched for.

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
    latency: dict[str, Any] = {}
    if lat_table is not None:
        latency["predicted"] = float(lat_table.predict([arch])[0])
    if measure:
        from nas.latency.quiet import wait_for_quiet

        busy = wait_for_quiet(10.0, threads=(device or {}).get("threads"))
        if busy:
            _log(verbose, f"warning: the machine is busy ({busy}); timings are upper bounds")
        _log(verbose, "timing the rewrites on this machine" if choose_rewrites else
             "timing on this machine")
        d = decide_rewrites(model, arch, choice, in_chans=space.in_chans, device=device,
                            timing=timing, choose=choose_rewrites,
                            anchors=_anchor_models(lat_table, arch, space, verbose))
        choice = d.flags
        if d.anchors_ratio is not None:
            latency["anchors_ratio"] = d.anchors_ratio
            warn = shift_warning(d.anchors_ratio, "the measured ms")
            if warn:
                _log(verbose, f"warning: {warn}")
        if d.timed:
            latency["rewrites"] = d.timed
        latency.update(measured=d.measured, measured_plain=d.measured_plain, setting=d.setting)
        if d.effects:
            latency["rewrite_effects"] = d.effects  # median time with / without, same round
        if d.dropped:
            # the last word is the side-by-side timing: the budget was searched for the plain
            # model
            _log(verbose, f"the rewrites ({d.dropped}) measured slower than the plain model "
                          "side by side; exporting without them")
            latency["dropped"] = d.dropped
    fast = optimize_for_inference(model, **choice)
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


def _anchor_models(table: Any, arch: Arch, space: Any, verbose: bool
                   ) -> list[tuple[torch.nn.Module, Arch, float]]:
    """The table's calibration subnets nearest ``arch``'s predicted latency, built, to be
    timed beside it (:mod:`nas.latency.anchors`); none for a table without them or one
    profiled on another machine or software (its timings would not compare)."""
    from nas.model import build_model

    if table is None or not (table.calibration or {}).get("samples"):
        return []
    # the export times on CPU: a GPU table's timings never compare
    diff = (["type: " + repr(table.device.get("type")) + " vs 'cpu'"]
            if table.device.get("type") != "cpu" else table.diff_from_here())
    if diff:
        _log(verbose, f"the table was profiled on another machine or software "
                      f"({'; '.join(diff)}; table vs here): timed without its calibration "
                      "subnets beside")
        return []
    near = float(table.predict([arch])[0])
    return [(build_model(a, num_classes=space.num_classes, in_chans=space.in_chans).eval(), a, ms)
            for a, ms in nearest_anchors(table, near, exclude=(arch,))]


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
