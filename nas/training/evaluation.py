"""Evaluating subnets with inherited weights, and BatchNorm recalibration.

A subnet is evaluated on its standalone copy (``supernet.extract(arch)``) in eval
mode: faster than the sliced forward, and it leaves the supernet untouched. BatchNorm
statistics stored in the supernet are shared slices mixed by every subnet trained,
so subnets that use BatchNorm are recalibrated first on a few training images
(cumulative averages over the calibration batches, as in OFA/BigNAS).

Example:
    >>> run = load_run("runs/tiny")  # doctest: +SKIP
    >>> x, y = load_val_data(run.config)  # doctest: +SKIP
    >>> evaluate(run.supernet, arch, x, y)  # doctest: +SKIP
    {'acc': 0.97, 'loss': 0.12}
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Subset

from nas.arch import Arch
from nas.data import SPLITS, load_dataset, subset_indices, to_tensors
from nas.errors import DataError
from nas.space import load_space
from nas.supernet import Supernet
from nas.training.batches import fit_resolution
from nas.training.config import TrainConfig

__all__ = ["evaluate", "evaluate_model", "calibrate_bn", "refit_classifier", "load_val_data",
           "load_train_subset", "load_calib_data", "load_run_calib_data"]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def calibrate_bn(supernet: Supernet, arch: Arch, x_calib: Tensor, *,
                 batch_size: int = 256) -> nn.Module:
    """Extract ``arch`` and recompute its BatchNorm statistics on ``x_calib``.

    The supernet is not modified. Returns the standalone model in eval mode (its
    statistics untouched when it has no BatchNorm).

    Args:
        supernet: the trained supernet.
        arch: an arch of the supernet's space.
        x_calib: ``(N, C, H, W)`` un-augmented training images.
        batch_size: calibration batch size.
    """
    model = supernet.extract(arch)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    model.train()
    device = _device(model)
    for batch in x_calib.split(batch_size):
        model(fit_resolution(batch.to(device), arch))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def _resize(x: Tensor, resolution: int | None) -> Tensor:
    """``x`` resized to ``resolution`` (antialiased bilinear) when it differs."""
    if resolution is None or x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=True)


@torch.no_grad()
def evaluate_model(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256,
                   resolution: int | None = None) -> dict[str, float]:
    """Top-1 accuracy in [0, 1] and mean cross-entropy of ``model`` (in eval mode) on ``(x, y)``."""
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"evaluation needs as many images as labels (> 0), got {len(x)} and {len(y)}")
    was_training = model.training
    model.eval()
    device = _device(model)
    loss, correct = 0.0, 0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        xb, yb = _resize(xb.to(device), resolution), yb.to(device)
        logits = model(xb).float()
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += int((logits.argmax(-1) == yb).sum())
    model.train(was_training)
    return {"acc": correct / len(y), "loss": loss / len(y)}


def refit_classifier(model: nn.Module, x_train: Tensor, y_train: Tensor, *, l2: float = 1e-3,
                     batch_size: int = 256, resolution: int | None = None,
                     max_iter: int = 100) -> nn.Module:
    """Refit ``model``'s linear classifier on its frozen features of ``(x_train, y_train)``.

    A calibration step for the one tensor every subnet of a supernet shares whatever
    its shape: the classifier. Multinomial logistic regression (mean cross-entropy +
    ``l2`` * squared weight norm, L-BFGS from the inherited weights; the problem is
    convex, so the result does not depend on them). The rest of the model keeps its
    inherited weights. Returns ``model`` in eval mode, its classifier replaced in place.
    """
    if len(x_train) == 0 or len(x_train) != len(y_train):
        raise DataError(f"refitting needs as many images as labels (> 0), got {len(x_train)} "
                        f"and {len(y_train)}")
    model.eval()
    device = _device(model)
    with torch.no_grad():
        feats = []
        for xb in x_train.split(batch_size):
            xb = _resize(xb.to(device), resolution)
            feats.append(model.forward_head(model.forward_features(xb), pre_logits=True).float())
        feats = torch.cat(feats)
    fc = model.get_classifier()
    y = y_train.to(device)
    w = fc.weight.detach().float().clone().requires_grad_(True)
    b = fc.bias.detach().float().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, feats, w.t()), y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        fc.weight.copy_(w)
        fc.bias.copy_(b)
    return model


def evaluate(supernet: Supernet, arch: Arch, x_val: Tensor, y_val: Tensor, *,
             batch_size: int = 256, calibrate: tuple[Tensor, ...] | None = None,
             refit: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
    """Accuracy and loss of ``arch`` with weights inherited from ``supernet``.

    Args:
        supernet: the trained supernet.
        arch: an arch of its space.
        x_val: validation images at the space's largest resolution.
        y_val: validation labels.
        batch_size: evaluation batch size.
        calibrate: ``(x_calib,)`` training images to recalibrate BatchNorm with
            (only used when ``arch`` has BatchNorm layers).
        refit: ``(x_train, y_train)``: refit the classifier on the subnet's features of
            these training images first (:func:`refit_classifier`).

    Returns:
        ``{"acc": float in [0, 1], "loss": float}``.

    Example:
        >>> evaluate(run.supernet, extreme_arch(run.space, "max"), x, y)  # doctest: +SKIP
    """
    if calibrate is not None:
        model = calibrate_bn(supernet, arch, calibrate[0], batch_size=batch_size)
    else:
        model = supernet.extract(arch).eval()
    if refit is not None:
        refit_classifier(model, *refit, batch_size=batch_size, resolution=arch.resolution)
    return evaluate_model(model, x_val, y_val, batch_size=batch_size, resolution=arch.resolution)


def _settings(config: dict[str, Any] | TrainConfig) -> tuple[str, int, int, int]:
    """(data spec, image size, limit_train, limit_val) of a run config."""
    if isinstance(config, TrainConfig):
        size = max(load_space(config.space).resolution)
        return config.data, size, config.limit_train, config.limit_val
    if not isinstance(config, dict) or "data" not in config:
        raise DataError("expected a run config (Run.config or TrainConfig) with a 'data' entry")
    if "image_size" in config:
        size = int(config["image_size"])
    else:
        size = max(load_space(config["space"]).resolution)
    return config["data"], size, int(config.get("limit_train", 0)), int(config.get("limit_val", 0))


def load_val_data(config: dict[str, Any] | TrainConfig, split: str = "val") -> tuple[Tensor, Tensor]:
    """The ``split`` of a run's dataset as ``(x, y)`` tensors, as the run saw it.

    Honours the run's ``limit_train`` / ``limit_val``. Images are at the space's
    largest resolution; :func:`evaluate` resizes them per arch.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    data, size, limit_train, limit_val = _settings(config)
    limit = limit_val if split == "val" else limit_train
    dataset = load_dataset(data, split=split, image_size=size)
    keep = subset_indices(len(dataset), limit)
    if hasattr(dataset, "batch"):  # in-memory datasets convert in one vectorised step
        return dataset.batch(keep)
    if len(keep) < len(dataset):
        dataset = Subset(dataset, keep.tolist())
    return to_tensors(dataset)


def load_train_subset(config: dict[str, Any] | TrainConfig, size: int, *,
                      seed: int = 0) -> tuple[Tensor, Tensor]:
    """``size`` training images and labels of a run (a fixed random subset of the images
    the run trained on, un-augmented), e.g. for BatchNorm recalibration or a classifier refit."""
    data, image_size, limit_train, _ = _settings(config)
    dataset = load_dataset(data, split="train", image_size=image_size)
    keep = subset_indices(len(dataset), limit_train)
    idx = keep[np.sort(np.random.default_rng(seed).permutation(len(keep))[:size])]
    if hasattr(dataset, "batch"):
        return dataset.batch(idx)
    return to_tensors(Subset(dataset, idx.tolist()))


def load_calib_data(config: dict[str, Any] | TrainConfig, size: int, *, seed: int = 0) -> Tensor:
    """``size`` training images (a fixed random subset, un-augmented) for BN recalibration."""
    return load_train_subset(config, size, seed=seed)[0]


def load_run_calib_data(config: dict[str, Any] | TrainConfig) -> Tensor:
    """The BatchNorm recalibration images of a run, as its training validated with: its
    ``calib_size`` images drawn with its ``seed`` (the TrainConfig defaults when a saved
    config lacks them)."""
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    size = int(config.get("calib_size", defaults["calib_size"]))
    return load_calib_data(config, size, seed=int(config.get("seed", defaults["seed"])))
