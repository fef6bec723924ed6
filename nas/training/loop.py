"""The supernet training loop: sandwich rule with in-place distillation (BigNAS, Yu et al. 2020).

Each step trains the largest subnet on the labels (label-smoothed cross-entropy), then
the smallest and ``num_random`` random subnets on the largest subnet's detached soft
labels (in-place distillation, Yu & Huang 2019). With the ``family`` sandwich rule
the "smallest" is widened to a family sandwich: each step draws one token-mixer
family per stage and trains that family's largest and smallest subnets, so pooling
or convolution blocks are trained at full width as often as attention ones (the
global largest stays the teacher). Gradients of the whole sandwich are
accumulated, all-reduced across workers when there are several, and applied in one
AdamW step with a cosine schedule (timm). All workers draw the same subnets from a
shared seeded ``numpy.random.Generator``.

With ``cfg.arch`` (standalone training) every step trains that one architecture on the
labels: the same weights, data, augmentation, optimizer, schedule, checkpoints and
metrics, with no sandwich and no distillation. Its weights live in the supernet's
tensors (the arch's slices; nothing else is touched), so everything that reads a
run (``nas eval``, ``nas export``) reads a standalone run too.

:func:`train_loop` is the single loop body for every launch mode: in this process
(rank 0 of 1) or inside a Ray Train worker (rank r of N, ``torch.distributed``
already initialised). Rank 0 writes the run directory.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm import tqdm

from nas.arch import (
    REDUCTION_DIMS,
    Arch,
    canonicalize,
    extreme_arch,
    load_arch,
    resample_dims,
    sample_arch,
    sample_mixers,
)
from nas.space import SearchSpace, parse_space
from nas.supernet import Supernet
from nas.training.batches import TrainBatches, fit_resolution
from nas.training.checkpoint import (
    TrainState,
    load_checkpoint,
    numpy_rng_state,
    restore_numpy_rng,
    restore_torch_rng,
    save_checkpoint,
    torch_rng_state,
)
from nas.training.config import TrainConfig
from nas.training.evaluation import evaluate, load_calib_data, load_val_data
from nas.training.rundir import RunWriter, checkpoint_path, metric_fields, run_config_dict

__all__ = ["LoopContext", "train_loop", "sandwich_step", "distill_loss"]


@dataclass(frozen=True)
class LoopContext:
    """Where the loop runs: this worker's rank, the world size, the device, a metrics sink."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    report: Callable[[dict[str, Any]], None] | None = None
    resume: bool = False
    stop_after: int | None = None  # epochs to run in this call (simulates an interruption)
    verbose: bool = True


def distill_loss(student: torch.Tensor, teacher_probs: torch.Tensor, kind: str) -> torch.Tensor:
    """KL(teacher || student) or soft cross-entropy; both have the same gradient."""
    logp = F.log_softmax(student, dim=-1)
    if kind == "kl":
        return F.kl_div(logp, teacher_probs, reduction="batchmean")
    return -(teacher_probs * logp).sum(-1).mean()


def sandwich_step(net: Supernet, archs: list[Arch], x: torch.Tensor, y: torch.Tensor, *,
                  cfg: TrainConfig, autocast: Callable[[], Any], labelled: int = 1
                  ) -> list[torch.Tensor]:
    """Forward/backward every subnet of the sandwich (teachers first); returns detached losses.

    The first ``labelled`` subnets learn from the labels; the others from the soft
    labels of the last of those (the step's teacher).
    """
    losses = []
    for arch in archs[:labelled]:
        with autocast():
            logits = net(fit_resolution(x, arch), arch).float()
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        loss.backward()
        losses.append(loss.detach())
    soft = logits.detach().softmax(-1)
    for arch in archs[labelled:]:
        with autocast():
            out = net(fit_resolution(x, arch), arch).float()
        loss = distill_loss(out, soft, cfg.distill)
        loss.backward()
        losses.append(loss.detach())
    return losses


def _all_reduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over workers in one flat all-reduce.

    Every worker trains the same subnets, so the same parameters hold gradients.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _average_buffers(net: Supernet, world: int) -> None:
    for b in net.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world


class _Trainer:
    """The state of one training process; :func:`train_loop` drives it."""

    def __init__(self, cfg: TrainConfig, space: SearchSpace, ctx: LoopContext):
        self.cfg, self.space, self.ctx = cfg, space, ctx
        self.run_dir = Path(cfg.out)
        self.main = ctx.rank == 0
        self.batches = TrainBatches(cfg, image_size=max(space.resolution), rank=ctx.rank,
                                    world=ctx.world)
        self.net = Supernet(space, generator=torch.Generator().manual_seed(cfg.seed),
                            block_sharing=cfg.block_sharing).to(ctx.device)
        self.params = [p for p in self.net.parameters()]
        self.optimizer = create_optimizer_v2(self.net, opt="adamw", lr=cfg.lr,
                                             weight_decay=cfg.weight_decay)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
            warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False,
            updates_per_epoch=self.batches.steps_per_epoch)
        self.arch_rng = np.random.default_rng(cfg.seed)
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        self.largest, self.smallest = extreme_arch(space, "max"), extreme_arch(space, "min")
        self.arch = canonicalize(space, load_arch(cfg.arch)) if cfg.standalone else None
        self._family: dict[tuple[str, ...], tuple[Arch, Arch]] = {}
        self.epoch, self.step, self.wall = 0, 0, 0.0
        self.labelled = 1  # subnets of the step trained on labels (set by archs())
        cuda = ctx.device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda \
            else contextlib.nullcontext

    def restore(self) -> None:
        path = checkpoint_path(self.run_dir)
        if not (self.ctx.resume and path.is_file()):
            return
        state = load_checkpoint(path, fingerprint=self.space.fingerprint, space_name=self.space.name)
        self.net.load_state_dict(state.model, strict=True)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.arch_rng = restore_numpy_rng(state.numpy_rng)
        restore_torch_rng(self.shuffle_gen, state.torch_rng)
        self.epoch, self.step = state.epoch, state.step
        self.wall = float(state.extra.get("wall_time_s", 0.0))
        self.scheduler.step_update(num_updates=self.step)

    def archs(self) -> tuple[list[Arch], int]:
        """This step's subnets, largest first, and how many of them are "small" ends.

        ``classic``: ``[largest, smallest, *random]``; ``family``: ``[largest,
        family largest, smallest, family smallest, *random]`` (a family end that is
        the global largest or smallest is not repeated). Sets ``self.labelled``, the
        number of leading subnets trained on the labels: 2 with ``distill_from:
        family`` (the family largest is the others' teacher), else 1. Standalone:
        ``[arch]`` and no ends.
        """
        self.labelled = 1
        if self.arch is not None:
            return [self.arch], 0
        ends = [self.smallest]
        if self.cfg.sandwich_rule == "family":
            mixers = sample_mixers(self.space, self.arch_rng)
            if mixers not in self._family:
                self._family[mixers] = (extreme_arch(self.space, "max", mixers),
                                        extreme_arch(self.space, "min", mixers))
            big, small = self._family[mixers]
            if self.cfg.end_reduction == "random":
                big, small = (resample_dims(self.space, a, REDUCTION_DIMS, self.arch_rng)
                              for a in (big, small))
            ends = [big, self.smallest, small]
            ends = [a for i, a in enumerate(ends) if a != self.largest and a not in ends[:i]]
        self.labelled = 1
        if self.cfg.sandwich_rule == "family" and self.cfg.distill_from == "family":
            # the family largest is this step's teacher: trained on the labels beside the
            # global largest, and the family smallest and random subnets of the same
            # families learn from it
            if big != self.largest:  # then ends[0] is big
                self.labelled = 2
            rand = [sample_arch(self.space, self.arch_rng, mixers=mixers)
                    for _ in range(self.cfg.num_random)]
        else:
            rand = [sample_arch(self.space, self.arch_rng) for _ in range(self.cfg.num_random)]
        return [self.largest, *ends, *rand], len(ends)

    def train_epoch(self) -> dict[str, float]:
        self.net.train()
        sums = torch.zeros(3, dtype=torch.float64)
        steps = self.batches.steps_per_epoch
        bar = tqdm(self.batches.epoch(self.shuffle_gen, epoch=self.epoch), total=steps,
                   desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=not (self.main and self.ctx.verbose) or None)
        for x, y in bar:
            x, y = x.to(self.ctx.device, non_blocking=True), y.to(self.ctx.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            archs, n_ends = self.archs()
            losses = sandwich_step(self.net, archs, x, y, cfg=self.cfg, autocast=self.autocast,
                                   labelled=self.labelled)
            if self.ctx.world > 1:
                _all_reduce_grads(self.params, self.ctx.world)
            if self.cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad)
            self.optimizer.step()
            self.step += 1
            self.scheduler.step_update(num_updates=self.step)
            ends, rand = losses[1:1 + n_ends], losses[1 + n_ends:]
            nan = losses[0] * math.nan
            sums += torch.stack([losses[0], torch.stack(ends).mean() if ends else nan,
                                 torch.stack(rand).mean() if rand else nan]).double().cpu()
        bar.close()
        sums /= max(1, steps)
        if self.ctx.world > 1:
            dist.all_reduce(sums)
            sums /= self.ctx.world
            _average_buffers(self.net, self.ctx.world)
        if self.arch is not None:
            return {"loss": sums[0].item()}
        return dict(zip(("loss_largest", "loss_smallest", "loss_random"), sums.tolist()))

    def validate(self, x_val, y_val, calib) -> dict[str, float]:
        if self.arch is not None:  # its BatchNorm statistics are its own: no recalibration
            r = evaluate(self.net, self.arch, x_val, y_val, batch_size=self.cfg.eval_batch_size)
            return {"val_acc": r["acc"], "val_loss": r["loss"]}
        kw = {"batch_size": self.cfg.eval_batch_size, "calibrate": calib}
        big = evaluate(self.net, self.largest, x_val, y_val, **kw)
        small = evaluate(self.net, self.smallest, x_val, y_val, **kw)
        return {"val_acc_largest": big["acc"], "val_acc_smallest": small["acc"],
                "val_loss_largest": big["loss"], "val_loss_smallest": small["loss"]}

    def save(self) -> None:
        state = TrainState(
            epoch=self.epoch, step=self.step, fingerprint=self.space.fingerprint,
            config=run_config_dict(self.cfg, self.space), model=self.net.state_dict(),
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            numpy_rng=numpy_rng_state(self.arch_rng), torch_rng=torch_rng_state(self.shuffle_gen),
            extra={"wall_time_s": self.wall, "world": self.ctx.world})
        save_checkpoint(checkpoint_path(self.run_dir), state)


def _summary(row: dict[str, Any]) -> str:
    if "val_acc" in row:  # standalone
        return f"loss {row['loss']:.3f} val acc {row['val_acc']:.4f} val loss {row['val_loss']:.4f}"
    return (f"loss {row['loss_largest']:.3f}/{row['loss_smallest']:.3f}/{row['loss_random']:.3f} "
            f"val acc largest {row['val_acc_largest']:.4f} smallest {row['val_acc_smallest']:.4f}")


def train_loop(cfg: TrainConfig, space_dict: dict[str, Any], ctx: LoopContext) -> dict[str, Any]:
    """Train (or continue training) the supernet of ``cfg`` up to ``cfg.epochs``.

    Args:
        cfg: the resolved config (absolute ``out``).
        space_dict: ``SearchSpace.to_dict()`` of the space (workers need no YAML file).
        ctx: rank, world size, device and options of this process.

    Returns:
        The last epoch's metrics row (empty if there was nothing left to train).
    """
    space = parse_space(space_dict, source="config.json")
    trainer = _Trainer(cfg, space, ctx)
    trainer.restore()
    if ctx.world > 1:
        for t in [*trainer.net.parameters(), *trainer.net.buffers()]:
            dist.broadcast(t.data, src=0)
    writer = RunWriter(trainer.run_dir, start_epoch=trainer.epoch, verbose=ctx.verbose,
                       fields=metric_fields(cfg)) if trainer.main else None
    x_val = y_val = calib = None
    if trainer.main:
        run_config = run_config_dict(cfg, space)  # has the image size: no YAML file needed
        x_val, y_val = load_val_data(run_config)
        if "batchnorm" in {n for s in space.stages for n in s.norm} and not cfg.standalone:
            calib = (load_calib_data(run_config, cfg.calib_size, seed=cfg.seed),)
        what = "one arch of " if cfg.standalone else ""
        writer.log(f"training {what}{space.name} ({space.fingerprint}) on {cfg.data}: epochs "
                   f"{trainer.epoch + 1}..{cfg.epochs}, {trainer.batches.steps_per_epoch} steps of "
                   f"{trainer.batches.global_batch} images, {ctx.world} worker(s) on {ctx.device}, "
                   f"{torch.get_num_threads()} threads")
    last: dict[str, Any] = {}
    end = cfg.epochs if ctx.stop_after is None else min(cfg.epochs, trainer.epoch + ctx.stop_after)
    try:
        while trainer.epoch < end:
            t0 = time.perf_counter()
            row: dict[str, Any] = trainer.train_epoch()
            trainer.epoch += 1
            if trainer.main:
                row.update(trainer.validate(x_val, y_val, calib))
                trainer.wall += time.perf_counter() - t0
                row.update(epoch=trainer.epoch, step=trainer.step,
                           lr=trainer.optimizer.param_groups[0]["lr"],
                           epoch_time_s=time.perf_counter() - t0, wall_time_s=trainer.wall)
                writer.metrics(row)
                trainer.save()
                writer.log(f"epoch {trainer.epoch}/{cfg.epochs} step {trainer.step} "
                           f"lr {row['lr']:.2e} {_summary(row)} ({row['epoch_time_s']:.1f}s)")
            if ctx.report is not None:
                ctx.report({k: v for k, v in row.items() if isinstance(v, (int, float))})
            last = row
    finally:
        if writer is not None:
            writer.close()
    return last
