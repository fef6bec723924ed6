"""Supernet training (sandwich rule + in-place distillation), checkpoints and subnet evaluation.

Public API:

* :class:`TrainConfig` and :func:`train` -- train a supernet into a run directory,
  in this process or on Ray Train workers (``workers=N``).
* :func:`load_run` -> :class:`Run` (``space``, ``supernet`` in eval mode, ``config``,
  ``run_dir``) for later stages.
* :func:`evaluate`, :func:`evaluate_model`, :func:`calibrate_bn`,
  :func:`load_val_data` -- inherited-weight accuracy of subnets.

The names are re-exported lazily (PEP 562): a submodule is imported when one of its
names is first used, so ``nas.training.config`` (the settings, which ``nas train
--help`` reads) loads without torch.

Example:
    >>> run_dir = train(TrainConfig(space="tiny32", data="digits", out="runs/t"))  # doctest: +SKIP
    >>> run = load_run(run_dir); x, y = load_val_data(run.config)  # doctest: +SKIP
    >>> evaluate(run.supernet, extreme_arch(run.space, "min"), x, y)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas.lazy import lazy_exports

if TYPE_CHECKING:
    from nas.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
    from nas.training.config import ConfigError, TrainConfig
    from nas.training.evaluation import (
        calibrate_bn,
        evaluate,
        evaluate_model,
        load_calib_data,
        load_run_calib_data,
        load_train_subset,
        load_val_data,
        refit_classifier,
    )
    from nas.training.launch import train
    from nas.training.rundir import Run, load_run, read_metrics

# public name -> the submodule that defines it
_EXPORTS = {
    "TrainState": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "ConfigError": "config", "TrainConfig": "config",
    "calibrate_bn": "evaluation", "evaluate": "evaluation", "evaluate_model": "evaluation",
    "load_calib_data": "evaluation", "load_run_calib_data": "evaluation",
    "load_train_subset": "evaluation", "load_val_data": "evaluation",
    "refit_classifier": "evaluation",
    "train": "launch",
    "Run": "rundir", "load_run": "rundir", "read_metrics": "rundir",
}

__all__ = [
    "ConfigError", "TrainConfig", "train", "Run", "load_run", "read_metrics", "evaluate",
    "evaluate_model", "calibrate_bn", "refit_classifier", "load_val_data", "load_calib_data",
    "load_train_subset", "load_run_calib_data", "TrainState", "save_checkpoint", "load_checkpoint",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__, globals())
