"""The run directory of ``nas train`` and how later stages load it.

Layout::

    RUN_DIR/config.json                 resolved TrainConfig + search space (canonical) + fingerprint
    RUN_DIR/metrics.csv                 one row per epoch
    RUN_DIR/log.txt                     human-readable log
    RUN_DIR/tb/                         TensorBoard events (``tensorboard --logdir RUN_DIR/tb``)
    RUN_DIR/checkpoints/last.safetensors (+ last.json sidecar), rewritten atomically each epoch

Example:
    >>> run = load_run("runs/tiny")  # doctest: +SKIP
    >>> run.space.name, run.supernet.training  # doctest: +SKIP
    ('tiny32', False)
"""
from __future__ import annotations

import csv
import io
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.arch import Arch, canonicalize, load_arch
from nas.errors import ArchError, ArtifactError, NasError
from nas.io import read_json, write_json, write_text
from nas.space import SearchSpace, parse_space
from nas.supernet import Supernet
from nas.training.checkpoint import load_checkpoint
from nas.training.config import TrainConfig

__all__ = ["Run", "RunWriter", "load_run", "run_config_dict", "checkpoint_path", "METRIC_FIELDS",
           "STANDALONE_METRIC_FIELDS", "metric_fields", "read_metrics"]

METRIC_FIELDS = ("epoch", "step", "lr", "loss_largest", "loss_smallest", "loss_random",
                 "val_acc_largest", "val_acc_smallest", "val_loss_largest", "val_loss_smallest",
                 "epoch_time_s", "wall_time_s")
# a standalone run (one arch trained alone): its train loss and val metrics
STANDALONE_METRIC_FIELDS = ("epoch", "step", "lr", "loss", "val_acc", "val_loss", "epoch_time_s",
                            "wall_time_s")


def metric_fields(cfg: TrainConfig) -> tuple[str, ...]:
    """The columns of ``metrics.csv`` for a run of ``cfg``."""
    return STANDALONE_METRIC_FIELDS if cfg.standalone else METRIC_FIELDS


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.safetensors"


def run_config_dict(cfg: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """What ``config.json`` holds: the config fields, the space and software versions."""
    import timm

    return {**cfg.to_dict(), "search_space": space.to_dict(), "fingerprint": space.fingerprint,
            "image_size": max(space.resolution), "num_classes": space.num_classes,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "timm": timm.__version__}}


def read_metrics(run_dir: str | Path) -> list[dict[str, str]]:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class RunWriter:
    """Rank-0 writer of a run dir's log, metrics CSV and TensorBoard events."""

    def __init__(self, run_dir: str | Path, *, start_epoch: int, verbose: bool = True,
                 fields: tuple[str, ...] = METRIC_FIELDS):
        self.run_dir = Path(run_dir)
        self.verbose = verbose
        self.fields = fields
        # A run killed after its metrics row but before its checkpoint redoes that epoch.
        self.rows = [r for r in read_metrics(self.run_dir) if int(r["epoch"]) <= start_epoch]
        self._log = (self.run_dir / "log.txt").open("a", encoding="utf-8")
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            pass  # a dependency, but a trimmed install still trains: metrics.csv has it all
        else:
            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_epoch + 1)

    def log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        self._log.write(line + "\n")
        self._log.flush()
        if self.verbose:  # not print(): Ray Train workers patch print and would echo it twice
            sys.stdout.write(message + "\n")
            sys.stdout.flush()

    def metrics(self, row: dict[str, Any]) -> None:
        self.rows.append({k: _fmt(row[k]) for k in self.fields})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.run_dir / "metrics.csv", buf.getvalue())
        if self._tb is not None:
            for k in self.fields[2:]:
                if isinstance(row[k], float) and not math.isnan(row[k]):
                    self._tb.add_scalar(k, row[k], global_step=row["epoch"])
            self._tb.flush()

    def close(self) -> None:
        self._log.close()
        if self._tb is not None:
            self._tb.close()


@dataclass
class Run:
    """A trained supernet loaded from its run directory.

    Attributes:
        space: the search space it was trained on (a standalone run: the space its
            arch belongs to).
        supernet: the supernet, weights loaded, in eval mode.
        config: ``config.json`` as a dict (TrainConfig fields, ``search_space``,
            ``fingerprint``, ``image_size``, ``num_classes``, ``versions``).
        run_dir: the run directory.
        epoch: epochs completed by the checkpoint.
    """

    space: SearchSpace
    supernet: Supernet
    config: dict[str, Any]
    run_dir: Path
    epoch: int

    @property
    def arch(self) -> Arch | None:
        """The one architecture a standalone run trained (None for a supernet run)."""
        raw = self.config.get("arch")
        return None if raw is None else canonicalize(self.space, load_arch(raw))

    def check_arch(self, arch: Arch) -> None:
        """Refuse an arch whose weights this run did not train (a standalone run's other
        subnets are untrained slices)."""
        own = self.arch
        if own is not None and canonicalize(self.space, arch) != own:
            raise ArchError(f"run {self.run_dir} trained one arch alone (standalone); its "
                            "weights are only meaningful for that arch (see its config.json)")


def read_run_config(run_dir: str | Path) -> tuple[dict[str, Any], SearchSpace]:
    """``config.json`` of a run and its search space, checked against the fingerprint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"run directory not found: {run_dir}")
    config = read_json(run_dir / "config.json", what="run config")
    if not isinstance(config, dict) or "search_space" not in config or "fingerprint" not in config:
        raise ArtifactError(f"{run_dir / 'config.json'} is not a training run config "
                            "(no search_space/fingerprint)")
    try:
        space = parse_space(config["search_space"], source=str(run_dir / "config.json"))
    except NasError as e:
        raise ArtifactError(f"{run_dir / 'config.json'}: invalid search space: {e}") from None
    space.check_arch_compat(config["fingerprint"], f"run {run_dir} (config.json)")
    return config, space


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu") -> Run:
    """Load a run's supernet from ``checkpoints/last.safetensors`` (eval mode).

    Raises:
        ArtifactError: missing or corrupted config/checkpoint, or a checkpoint of
            another search space.
    """
    run_dir = Path(run_dir)
    config, space = read_run_config(run_dir)
    state = load_checkpoint(checkpoint_path(run_dir), fingerprint=space.fingerprint,
                            space_name=space.name)
    supernet = Supernet(space, block_sharing=str(config.get("block_sharing", "mixer")))
    try:
        supernet.load_state_dict(state.model, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ArtifactError(f"checkpoint of {run_dir} does not fit its supernet: {first}") from None
    return Run(space=space, supernet=supernet.to(device).eval(), config=config, run_dir=run_dir,
               epoch=state.epoch)


def write_run_config(run_dir: Path, cfg: TrainConfig, space: SearchSpace) -> None:
    write_json(run_dir / "config.json", run_config_dict(cfg, space))
