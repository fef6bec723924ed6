"""Fine-tuning an extracted subnet with knowledge distillation from the largest subnet.

Inherited weights are a compromise shared with every other subnet; a few epochs
alone recover part of the gap (OFA, BigNAS). The student is the extracted subnet, the
teacher the supernet's largest subnet (frozen, eval mode), the loss
``alpha * KL(student || teacher, T) * T^2 + (1 - alpha) * CE(student, labels)``
(Hinton et al., 2015), the optimiser timm's AdamW with a per-step cosine schedule.
Augmentation is the trainer's random translation (:func:`nas.data.augment_batch`).

Example:
    >>> teacher = run.supernet.extract(extreme_arch(run.space, "max")).eval()  # doctest: +SKIP
    >>> history = finetune(student, teacher, x_train, y_train, epochs=3)  # doctest: +SKIP
"""
from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torch import Tensor, nn

from nas.data import augment_batch

__all__ = ["finetune"]


def _resize(x: Tensor, side: int) -> Tensor:
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                         antialias=True)


def finetune(student: nn.Module, teacher: nn.Module, x: Tensor, y: Tensor, *, epochs: int,
             batch_size: int = 128, lr: float = 5e-4, weight_decay: float = 0.05,
             alpha: float = 0.5, temperature: float = 1.0, max_shift: int = 3, seed: int = 0,
             verbose: bool = True) -> list[dict[str, float]]:
    """Fine-tune ``student`` in place; returns one ``{"epoch", "loss"}`` row per epoch.

    Args:
        student: the subnet to train (its own resolution: ``student.arch.resolution``).
        teacher: the frozen teacher (``teacher.arch.resolution``).
        x: training images ``(N, C, H, W)``; resized per model as needed.
        y: labels ``(N,)``.
        epochs: passes over ``x`` (0 returns at once).
        batch_size: images per step.
        lr: peak learning rate of the cosine schedule.
        weight_decay: AdamW weight decay (not on norms and biases).
        alpha: weight of the distillation term, in [0, 1].
        temperature: softmax temperature of the distillation term (> 0).
        max_shift: random translation in pixels (0: none).
        seed: seeds shuffling and augmentation.
        verbose: print one line per epoch.
    """
    for name, ok, rule in (("epochs", epochs >= 0, ">= 0"), ("batch_size", batch_size >= 1, ">= 1"),
                           ("lr", lr > 0, "> 0"), ("alpha", 0 <= alpha <= 1, "in [0, 1]"),
                           ("temperature", temperature > 0, "> 0")):
        if not ok:
            raise ValueError(f"finetune: {name} must be {rule}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"finetune: need as many labels as images (> 0), got {len(x)}, {len(y)}")
    history: list[dict[str, float]] = []
    if epochs == 0:
        return history
    g = torch.Generator().manual_seed(seed)
    opt = create_optimizer_v2(student, "adamw", lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    teacher.eval().requires_grad_(False)
    s_side, t_side = student.arch.resolution, teacher.arch.resolution
    student.train()
    for epoch in range(epochs):
        total, seen = 0.0, 0
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            xb = augment_batch(x[idx], generator=g, max_shift=max_shift) if max_shift else x[idx]
            with torch.no_grad():
                soft = F.log_softmax(teacher(_resize(xb, t_side)) / temperature, dim=-1)
            logits = student(_resize(xb, s_side))
            kd = F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft, log_target=True,
                          reduction="batchmean") * temperature ** 2
            loss = alpha * kd + (1 - alpha) * F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.append({"epoch": epoch + 1, "loss": total / seen})
        if verbose:
            print(f"finetune epoch {epoch + 1}/{epochs}: loss {total / seen:.4f}", file=sys.stderr,
                  flush=True)
    return history
