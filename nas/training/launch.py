"""Entry point of supernet training: check the run directory, then run the loop here or on Ray.

Without ``workers`` (and without ``address``) the loop runs in this process. With
``workers=N`` it runs as N Ray Train data-parallel workers (see
:mod:`nas.training.ray_train`); the loop body is the same. Every check that can fail
on user input (space, dataset, run directory, checkpoint, resume compatibility)
happens here, before anything is written or launched.

Example:
    >>> cfg = TrainConfig(space="tiny32", data="digits", out="runs/tiny", epochs=2)  # doctest: +SKIP
    >>> run_dir = train(cfg)  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import torch

from nas.arch import canonicalize, load_arch
from nas.data import load_dataset, parse_data_spec
from nas.errors import ArtifactError
from nas.io import read_json, remove_dead_temps
from nas.space import SearchSpace, load_space
from nas.threads import num_threads
from nas.training.checkpoint import load_checkpoint
from nas.training.config import TrainConfig, auto_threads, check_resume_compatible
from nas.training.loop import LoopContext, train_loop
from nas.training.rundir import checkpoint_path, write_run_config

__all__ = ["train", "resolve_config", "saved_config"]


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Device chosen, run dir and dataset path made absolute (workers may run elsewhere)."""
    cfg = cfg.resolved()
    spec = parse_data_spec(cfg.data)
    data = cfg.data if spec.path is None else f"{spec.kind}:{Path(spec.path).expanduser().resolve()}"
    return cfg.replace(out=str(Path(cfg.out).expanduser().resolve()), data=data)


def saved_config(run_dir: str | Path) -> tuple[dict, TrainConfig] | None:
    """``config.json`` of an existing run (raw dict and parsed config), or None."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    raw = read_json(path, what="run config")
    try:
        return raw, TrainConfig.from_dict(raw, source=str(path))
    except ValueError as e:
        raise ArtifactError(f"{path} is not a valid run config: {e}") from None


def _check_run_dir(cfg: TrainConfig, space: SearchSpace, resume: bool) -> int:
    """Validate ``cfg.out`` for a fresh or resumed run; returns the epochs already done."""
    run_dir = Path(cfg.out)
    ckpt = checkpoint_path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ArtifactError(f"--out {run_dir} exists and is not a directory")
    if not resume:
        if ckpt.is_file():
            raise ArtifactError(f"{run_dir} already holds a training run ({ckpt.name}); pass "
                                "--resume to continue it, or choose another --out")
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise ArtifactError(f"{run_dir} exists and is not empty; choose a new or empty --out "
                                "(or pass --resume to continue a run there)")
        return 0
    saved = saved_config(run_dir)
    if saved is not None:
        raw, saved_cfg = saved
        space.check_arch_compat(str(raw.get("fingerprint")), f"run {run_dir}")
        check_resume_compatible(saved_cfg, cfg, str(run_dir))
    if not ckpt.is_file():
        return 0
    state = load_checkpoint(ckpt, fingerprint=space.fingerprint, space_name=space.name)
    return state.epoch


def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
          verbose: bool = True) -> Path:
    """Train the supernet of ``cfg`` (or, with ``cfg.arch``, that arch alone) and return
    the run directory.

    Args:
        cfg: training settings.
        resume: continue from ``RUN_DIR/checkpoints/last.safetensors`` when it exists.
        stop_after: train at most this many epochs in this call, then return (as if
            interrupted); ``--resume`` continues to ``cfg.epochs``.
        verbose: print the per-epoch log and a progress bar.

    Raises:
        ArtifactError: the run dir holds another run (without ``resume``), its checkpoint
            is corrupted or of another search space, or its settings differ.
        DataError, SpaceError, ConfigError: invalid dataset, space or settings.
    """
    cfg = resolve_config(cfg)
    space = load_space(cfg.space)
    if cfg.arch is not None:  # the arch itself goes into config.json, canonical
        cfg = cfg.replace(arch=canonicalize(space, load_arch(cfg.arch)).to_json())
    done = _check_run_dir(cfg, space, resume)
    # the data is checked (and an image folder decoded into its cache) before anything is
    # written, so a wrong --data leaves no run directory behind
    load_dataset(cfg.data, split="val", image_size=max(space.resolution))
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    for name in ("last.safetensors", "last.json"):  # what a kill -9 mid-write left
        remove_dead_temps(run_dir / "checkpoints", name)
    write_run_config(run_dir, cfg, space)
    if done >= cfg.epochs:
        if verbose:
            print(f"{run_dir}: all {cfg.epochs} epochs are already done")
        return run_dir
    if cfg.workers is None and cfg.address is None:
        _in_process(cfg, space, resume=resume, stop_after=stop_after, verbose=verbose)
    else:
        from nas.training.ray_train import train_on_ray

        train_on_ray(cfg, space.to_dict(), resume=resume, stop_after=stop_after, verbose=verbose)
    return run_dir


def _in_process(cfg: TrainConfig, space: SearchSpace, *, resume: bool, stop_after: int | None,
                verbose: bool) -> None:
    with num_threads(cfg.threads or auto_threads(1)):
        ctx = LoopContext(rank=0, world=1, device=torch.device(cfg.device), resume=resume,
                          stop_after=stop_after, verbose=verbose)
        train_loop(cfg, space.to_dict(), ctx)
