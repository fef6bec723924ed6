"""Data-parallel supernet training on Ray Train (``ray.train.torch.TorchTrainer``).

N workers run :func:`nas.training.loop.train_loop`, the same loop as a single
process, with ``torch.distributed`` set up by Ray (gloo on CPU, NCCL on GPU). Each
worker takes its shard of every global batch; gradients are averaged in one
all-reduce per step. Locally, ``ray.init`` is sized to the machine; ``address`` (or
``RAY_ADDRESS``) attaches to an existing cluster, whose workers must see the run
directory (shared storage, as Ray Train itself requires on several nodes). Rank 0
writes the run directory; every worker reports its epoch metrics to Ray.

Example:
    >>> train(TrainConfig(space="tiny32", data="digits", out="runs/ddp", workers=2))  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Any

from nas.errors import NasError
from nas.raysession import ray_session
from nas.threads import usable_cpus
from nas.training.config import TrainConfig, auto_threads

__all__ = ["TrainingFailed", "train_on_ray"]


class TrainingFailed(NasError):
    """The Ray Train workers failed (the message carries the workers' error)."""


def _worker(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch

    from nas.training.loop import LoopContext, train_loop

    cfg = TrainConfig.from_dict(config["cfg"])
    context = ray.train.get_context()
    world = context.get_world_size()
    torch.set_num_threads(cfg.threads or auto_threads(world))
    ctx = LoopContext(rank=context.get_world_rank(), world=world,
                      device=ray.train.torch.get_device(), report=ray.train.report,
                      resume=config["resume"], stop_after=config["stop_after"],
                      verbose=config["verbose"])
    train_loop(cfg, config["space"], ctx)


def train_on_ray(cfg: TrainConfig, space_dict: dict[str, Any], *, resume: bool,
                 stop_after: int | None, verbose: bool) -> None:
    """Run the loop on ``cfg.workers`` (default 1) Ray Train workers and wait for them."""
    workers = cfg.workers or 1
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    with ray_session(address, num_cpus=max(usable_cpus(), workers), verbose=verbose):
        result = _fit(cfg, space_dict, resume, stop_after, verbose, workers, address)
    if result.error is not None:
        raise TrainingFailed(f"Ray Train workers failed: {_first_line(result.error)}")


def _fit(cfg: TrainConfig, space_dict: dict[str, Any], resume: bool, stop_after: int | None,
         verbose: bool, workers: int, address: str | None) -> Any:
    """``TorchTrainer.fit`` inside an open Ray session."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = cfg.device == "cuda"
    cpus = 1 if address else max(1, usable_cpus() // workers)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"cfg": cfg.to_dict(), "space": space_dict, "resume": resume,
                           "stop_after": stop_after, "verbose": verbose},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name="ray", storage_path=cfg.out),
    )
    try:
        return trainer.fit()
    except Exception as e:  # Ray wraps worker failures in its own error types
        raise TrainingFailed(f"Ray Train workers failed: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    cause = e
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
