"""Folding eval-mode BatchNorm into a neighbouring linear layer or convolution.

In eval mode a BatchNorm is a per-channel affine map ``y = s * x + t`` with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``, so it disappears into

* the convolution *before* it (output side): ``W' = s W``, ``b' = s b + t``
  (conv + BN in the stems, :class:`~nas.model.layers.ConvDownsample`,
  :class:`~nas.model.layers.PatchMerging`, the SRA reduction conv);
* the linear layer *after* it (input side, pre-norm blocks): ``W' = W diag(s)``,
  ``b' = b + W t`` (FFN ``fc1``, attention ``q``/``k``/``v``);
* a convolution after it, only when nothing pads its input (zero padding would be
  applied after the norm in the original and before it in the folded one).

:func:`fold_batchnorm` applies every fold the architecture allows to a standalone
:class:`~nas.model.VisionTransformer` and replaces the folded norms by ``nn.Identity``.
Norms that cannot fold (LayerNorm, GroupNorm, BatchNorm before a pooling / depthwise
conv / token-MLP / cascaded-group mixer, and the head's norm, which is kept so that
``reset_classifier`` leaves normalised features) stay as they are. The structure it
produces depends on the architecture only, so a loader can rebuild it before loading
folded weights.

Example:
    >>> folded = fold_batchnorm(copy.deepcopy(model).eval())  # doctest: +SKIP
    >>> torch.allclose(folded(x), model.eval()(x), atol=1e-5)  # doctest: +SKIP
    True
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from nas.model.layers import (
    FFNUnit,
    LowRankLinear,
    MergeDownsample,
    PatchMerging,
    Stem,
    TokenNorm,
)
from nas.model.mixers import Attention, LinearAttention, SRAttention
from nas.model.shapes import stage_grids

__all__ = ["bn_affine", "fold_conv_bn", "fold_bn_linear", "fold_bn_conv", "fold_batchnorm"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of an eval-mode BatchNorm (or a batch-norm :class:`TokenNorm`)."""
    if isinstance(bn, TokenNorm):
        bn = bn.norm
    if not isinstance(bn, _BN) or bn.running_var is None:
        raise ValueError(f"expected a BatchNorm with running statistics, got {type(bn).__name__}")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.weight is not None:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    return scale, shift


def _with_bias(conv: nn.Conv2d) -> nn.Conv2d:
    """An (empty) copy of ``conv`` that has a bias, on the same device and dtype."""
    w = conv.weight
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, bias=True,
                     padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """``conv`` followed by ``bn`` as one convolution with a bias."""
    scale, shift = bn_affine(bn)
    out = _with_bias(conv)
    out.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias * scale if conv.bias is not None else torch.zeros_like(shift)
    out.bias.copy_(bias + shift)
    return out


@torch.no_grad()
def fold_bn_conv(bn: nn.Module, conv: nn.Conv2d) -> nn.Conv2d:
    """``bn`` followed by an unpadded, ungrouped ``conv`` as one convolution."""
    if conv.groups != 1 or any(p != 0 for p in conv.padding):
        raise ValueError("only an unpadded convolution with groups=1 absorbs a preceding norm")
    scale, shift = bn_affine(bn)
    out = _with_bias(conv)
    out.weight.copy_(conv.weight * scale.view(1, -1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels,
                                                              device=shift.device)
    out.bias.copy_(bias + (conv.weight * shift.view(1, -1, 1, 1)).sum((1, 2, 3)))
    return out


@torch.no_grad()
def fold_bn_linear(bn: nn.Module, linear: nn.Module) -> nn.Module:
    """``bn`` followed by ``linear`` (plain, 2:4-sparse or low-rank) as one layer.

    Scaling the input columns keeps a 2:4 pattern; a low-rank pair keeps its first
    factor bias-free (the shift goes through both factors into the second one's bias).
    """
    scale, shift = bn_affine(bn)
    if isinstance(linear, LowRankLinear):
        out = copy.deepcopy(linear)
        out.v = fold_bn_linear_weights(linear.v, scale, None)
        out.u.bias.add_(linear.u.weight @ (linear.v.weight @ shift))
        return out
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"cannot fold a norm into {type(linear).__name__}")
    return fold_bn_linear_weights(linear, scale, shift)


def fold_bn_linear_weights(linear: nn.Linear, scale: torch.Tensor | None,
                           shift: torch.Tensor | None) -> nn.Linear:
    """A copy of ``linear`` (same class) computing ``linear(scale * x + shift)``."""
    w = linear.weight
    out = type(linear)(linear.in_features, linear.out_features, bias=linear.bias is not None
                       or shift is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w * scale.view(1, -1) if scale is not None else w)
        if out.bias is not None:
            bias = linear.bias if linear.bias is not None else torch.zeros_like(out.bias)
            out.bias.copy_(bias + w @ shift if shift is not None else bias)
    return out


def _is_bn(norm: nn.Module | None) -> bool:
    return isinstance(norm, TokenNorm) and norm.kind == "batchnorm"


def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold every ``Conv2d, BatchNorm2d`` pair of ``seq`` in place."""
    for i in range(len(seq) - 1):
        if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
            seq[i] = fold_conv_bn(seq[i], seq[i + 1])
            seq[i + 1] = nn.Identity()


def _fold_unit(unit: FFNUnit) -> None:
    if _is_bn(unit.norm):
        unit.ffn.fc1 = fold_bn_linear(unit.norm, unit.ffn.fc1)
        unit.norm = nn.Identity()


def _fold_mixer(block: nn.Module, grid: tuple[int, int]) -> None:
    mixer, norm = block.mixer, block.norm
    if isinstance(mixer, SRAttention) and mixer.sr is not None and _is_bn(mixer.sr_norm):
        mixer.sr = fold_conv_bn(mixer.sr, mixer.sr_norm)
        mixer.sr_norm = nn.Identity()
    if not _is_bn(norm):
        return
    if isinstance(mixer, (Attention, LinearAttention, SRAttention)):
        readers = ("q", "k", "v")  # the linears that read the normalised tokens
        if isinstance(mixer, SRAttention) and mixer.sr is not None:
            r = mixer.sr.stride[0]
            if grid[0] < r or grid[1] < r:
                return  # the reduction pads the normalised grid: zeros would change meaning
            mixer.sr = fold_bn_conv(norm, mixer.sr)
            readers = ("q",)  # k and v read the reduced grid
        for name in readers:
            setattr(mixer, name, fold_bn_linear(norm, getattr(mixer, name)))
        block.norm = nn.Identity()


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every foldable eval-mode BatchNorm of a standalone model, in place.

    Args:
        model: a :class:`~nas.model.VisionTransformer` in eval mode (its statistics
            are what gets folded).

    Returns:
        ``model`` itself, with folded norms replaced by ``nn.Identity``.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval() first)")
    stem: Stem = model.stem
    if isinstance(stem.proj, nn.Sequential):
        _fold_sequential(stem.proj)
    elif _is_bn(stem.norm):
        stem.proj = fold_conv_bn(stem.proj, stem.norm)
        stem.norm = None
    for stage, grid in zip(model.stages, stage_grids(model.arch)):
        down = stage.downsample
        if isinstance(down, MergeDownsample):
            _fold_unit(down.pre)
            _fold_unit(down.post)
            merge: PatchMerging = down.merge
            for seq in (merge.conv1, merge.conv2, merge.conv3):
                _fold_sequential(seq)
        elif down is not None and _is_bn(down.norm):
            down.proj = fold_conv_bn(down.proj, down.norm)
            down.norm = nn.Identity()
        for block in stage.blocks:
            for unit in [*block.pre, *block.post]:
                _fold_unit(unit)
            _fold_mixer(block, grid)  # SRA (the only mixer that pads) never follows a reduction
    return model
