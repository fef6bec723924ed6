"""Token-grid arithmetic shared by the models, the supernet and the latency tables."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.arch import Arch

__all__ = ["stem_grid", "down_grid", "stage_grids", "kept_tokens", "conv_kernel_for_stride"]


def conv_kernel_for_stride(stride: int) -> tuple[int, int]:
    """(kernel, padding) of an overlapping strided conv: 2s-1 and s-1, so out = ceil(in/s)."""
    return 2 * stride - 1, stride - 1


def stem_grid(stem: str, stride: int, resolution: int) -> int:
    """Side of the token grid after the stem."""
    if stem == "patch":
        return resolution // stride
    return math.ceil(resolution / stride)  # overlap conv, or a stack of stride-2 convs


def down_grid(side: int, stride: int) -> int:
    return math.ceil(side / stride) if stride > 1 else side


def stage_grids(arch: Arch) -> list[tuple[int, int]]:
    """Token grid (H, W) inside every stage (after its entry downsampling)."""
    side = stem_grid(arch.stem, arch.stem_stride, arch.resolution)
    out = []
    for s in arch.stages:
        side = down_grid(side, s.stride)
        out.append((side, side))
    return out


def kept_tokens(n: int, keep_ratio: float) -> int:
    """Tokens left by in-stage reduction of ``n`` tokens at ``keep_ratio``."""
    return n if keep_ratio >= 1.0 else max(1, min(n, round(n * keep_ratio)))
