"""Parameter and FLOP counts of an architecture, without allocating its weights.

The standalone model is built on PyTorch's ``meta`` device (shapes only) and run
under :class:`torch.utils.flop_counter.FlopCounterMode`. FLOPs are reported as
multiply-accumulates (MACs), the unit papers and timm quote; sparse attention
patterns are counted at the cost of the kernel that runs them.

Example:
    >>> count_params(arch, num_classes=1000), count_macs(arch, num_classes=1000)  # doctest: +SKIP
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.arch import Arch
from nas.model import build_model

__all__ = ["count_params", "count_macs", "complexity"]


def count_params(arch: Arch, *, num_classes: int, in_chans: int = 3) -> int:
    """Number of parameters of the standalone model of ``arch``."""
    model = build_model(arch, num_classes=num_classes, in_chans=in_chans, device="meta")
    return sum(p.numel() for p in model.parameters())


def count_macs(arch: Arch, *, num_classes: int, in_chans: int = 3, batch_size: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``batch_size``."""
    model = build_model(arch, num_classes=num_classes, in_chans=in_chans, device="meta").eval()
    x = torch.empty(batch_size, in_chans, arch.resolution, arch.resolution, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def complexity(arch: Arch, *, num_classes: int, in_chans: int = 3) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` for batch size 1."""
    return {"params": count_params(arch, num_classes=num_classes, in_chans=in_chans),
            "macs": count_macs(arch, num_classes=num_classes, in_chans=in_chans)}

