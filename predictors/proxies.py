"""Cheap accuracy signals computed from a fresh initialisation, not from shared weights.

Weight sharing erases what sets mixer families apart when each is trained alone (a
conv-like first stage fits small data faster; see ``bench/bench_ranking.py``). These
signals look at a subnet *at its own initialisation*, so they keep that inductive
bias. Each is registered in :data:`PROXIES` and scored so that **higher means
predicted better**:

* ``train_speed`` -- minus the sum of training losses over the first ``steps``
  standalone steps from random init (the training-speed estimate of Ru et al.,
  NeurIPS 2021, "Speedy Performance Estimation for NAS"): the recipe's optimizer,
  a linear warmup to its learning rate, the run's augmentation.
* ``grad_norm`` -- L2 norm of the loss gradient of all weights on one batch (Abdelfattah
  et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS").
* ``synflow`` -- synaptic flow (Tanaka et al., NeurIPS 2020): ``sum |theta * dR/dtheta|``
  with every weight replaced by its absolute value and ``R`` the summed output for an
  all-ones input (float32: the token-reduction kernels are float32). Designed for CNNs; LayerNorm of a constant input is zero,
  so on ViTs it mostly measures the parts before the first norm.
* ``naswot`` -- NAS without training (Mellor et al., ICML 2021): ``log |K|`` of the kernel
  of binary activation codes (which GELU/ReLU inputs are positive) over one batch.

Every subnet starts from the same initialisation as standalone training
(``Supernet(space, generator=seed).extract(arch)``), so a signal and a standalone
result describe the same starting point.

Example:
    >>> scorer = ProxyScorer(space, x_train, y_train, seed=0)  # doctest: +SKIP
    >>> scorer.score(arch, "naswot")  # doctest: +SKIP
    412.7
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.arch import Arch
from nas.data import augment_batch
from nas.errors import NasError
from nas.space import SearchSpace
from nas.supernet import Supernet
from nas.training.batches import fit_resolution

__all__ = ["PROXIES", "ProxyScorer"]

Proxy = Callable[["ProxyScorer", nn.Module, Arch], float]
PROXIES: dict[str, Proxy] = {}


def _register(name: str) -> Callable[[Proxy], Proxy]:
    def decorate(fn: Proxy) -> Proxy:
        PROXIES[name] = fn
        return fn

    return decorate


class ProxyScorer:
    """Scores subnets of ``space`` at initialisation on a fixed sample of training images.

    Args:
        space: the search space.
        x_train: un-augmented training images ``(N, 3, S, S)`` (any N >= ``batch_size``).
        y_train: their labels.
        seed: initialisation seed (as standalone training's) and batch sampling seed.
        batch_size: images per batch of every signal.
        steps: training steps of ``train_speed``.
        lr: peak learning rate of ``train_speed`` (AdamW, linear warmup over the steps).
        max_shift: augmentation of ``train_speed``'s batches (pixels).
        hflip: horizontal flips in ``train_speed``'s batches.
    """

    def __init__(self, space: SearchSpace, x_train: Tensor, y_train: Tensor, *, seed: int = 0,
                 batch_size: int = 64, steps: int = 100, lr: float = 2e-3,
                 weight_decay: float = 0.05, max_shift: int = 0, hflip: bool = False):
        if len(x_train) < batch_size:
            raise NasError(f"proxies need at least {batch_size} training images, got "
                           f"{len(x_train)}")
        self.space, self.seed = space, seed
        self.x, self.y = x_train, y_train
        self.batch_size, self.steps, self.lr, self.weight_decay = batch_size, steps, lr, weight_decay
        self.max_shift, self.hflip = max_shift, hflip
        g = np.random.default_rng(seed)
        self._batch = torch.from_numpy(g.choice(len(x_train), batch_size, replace=False))
        self._init = Supernet(space, generator=torch.Generator().manual_seed(seed))
        self.seconds: dict[str, list[float]] = {}

    def model(self, arch: Arch) -> nn.Module:
        """A fresh copy of ``arch`` at the standalone initialisation (train mode)."""
        return self._init.extract(arch).train()

    def batch(self, arch: Arch) -> tuple[Tensor, Tensor]:
        return fit_resolution(self.x[self._batch], arch), self.y[self._batch]

    def score(self, arch: Arch, name: str) -> float:
        """``name``'s score of ``arch`` (higher: predicted more accurate); its CPU time is
        recorded in ``seconds[name]``."""
        if name not in PROXIES:
            raise NasError(f"unknown proxy {name!r}; valid: {', '.join(PROXIES)}")
        torch.manual_seed(self.seed)
        t0 = time.process_time()
        value = float(PROXIES[name](self, self.model(arch), arch))
        self.seconds.setdefault(name, []).append(time.process_time() - t0)
        return value if math.isfinite(value) else -math.inf


@_register("train_speed")
def _train_speed(s: ProxyScorer, model: nn.Module, arch: Arch) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    g = torch.Generator().manual_seed(s.seed)
    total = 0.0
    for step in range(s.steps):
        for group in opt.param_groups:
            group["lr"] = s.lr * (step + 1) / s.steps
        idx = torch.randint(0, len(s.x), (s.batch_size,), generator=g)
        x = augment_batch(s.x[idx], generator=g, max_shift=s.max_shift, hflip=s.hflip)
        loss = F.cross_entropy(model(fit_resolution(x, arch)), s.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
    return -total


@_register("grad_norm")
def _grad_norm(s: ProxyScorer, model: nn.Module, arch: Arch) -> float:
    x, y = s.batch(arch)
    F.cross_entropy(model(x), y).backward()
    return math.sqrt(sum(float(p.grad.double().square().sum())
                         for p in model.parameters() if p.grad is not None))


@_register("synflow")
def _synflow(s: ProxyScorer, model: nn.Module, arch: Arch) -> float:
    model = model.eval()  # eval: BatchNorm uses its (initial) running statistics
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    x = torch.ones(1, s.x.shape[1], arch.resolution, arch.resolution)
    model(x).sum().backward()
    return float(sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters()
                     if p.grad is not None))


@_register("naswot")
def _naswot(s: ProxyScorer, model: nn.Module, arch: Arch) -> float:
    x, _ = s.batch(arch)
    codes: list[Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
        codes.append((inputs[0].detach() > 0).reshape(len(x), -1).float())

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.GELU, nn.ReLU))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return 0.0
    c = torch.cat(codes, dim=1).double()
    k = c @ c.t() + (1 - c) @ (1 - c).t()  # agreements = units - Hamming distance
    return float(torch.linalg.slogdet(k)[1])
