"""The standalone vision transformer built from an :class:`nas.arch.Arch`.

A hierarchical MetaFormer: stem, stages (entry downsampling, positional encoding,
blocks, optional in-stage token reduction), head. Each block is EfficientViT's
sandwich ``N x FFN, mixer, N x FFN`` (``N = 0`` gives the plain MetaFormer block
``x + mixer(norm(x)); x + ffn(norm(x))``). This is what ``supernet.extract`` returns
and what ``nas export`` saves: plain modules, no supernet code.

Example:
    >>> model = build_model(arch, num_classes=10, in_chans=3)  # doctest: +SKIP
    >>> model(torch.randn(2, 3, arch.resolution, arch.resolution)).shape  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from nas.arch import Arch, StageArch
from nas.kernels import merge_tokens, prune_tokens, token_scores, unmerge_tokens, unprune_tokens
from nas.model.layers import (
    AbsPosEmbed,
    ConvDownsample,
    ConvPosEmbed,
    FFNUnit,
    Head,
    LayerScale,
    MergeDownsample,
    Stem,
    TokenNorm,
)
from nas.model.mixers import build_mixer
from nas.model.shapes import kept_tokens, stage_grids, stem_grid

__all__ = ["Block", "Stage", "VisionTransformer", "build_model"]


class Block(nn.Module):
    """``sandwich`` FFN units, the token mixer, then ``max(1, sandwich)`` FFN units."""

    def __init__(self, s: StageArch, tokens: int):
        super().__init__()
        dim = s.embed_dim

        def unit() -> FFNUnit:
            return FFNUnit(dim, s.hidden_dim, norm=s.norm, act=s.act,
                           rank=s.rank if s.low_rank < 1.0 else None,
                           sparse=s.sparsity == "2:4", conv=s.ffn_conv,
                           interaction=s.token_interaction, layer_scale=s.layer_scale)

        self.family = s.mixer  # the supernet may give each mixer family its own block weights
        self.pre = nn.ModuleList([unit() for _ in range(s.sandwich)])
        self.norm = TokenNorm(s.norm, dim)
        self.mixer = build_mixer(s, tokens)
        self.ls = LayerScale(dim) if s.layer_scale else None
        self.post = nn.ModuleList([unit() for _ in range(max(1, s.sandwich))])

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        for u in self.pre:
            x = u(x, hw)
        y = self.mixer(self.norm(x), hw)
        x = x + (self.ls(y) if self.ls is not None else y)
        for u in self.post:
            x = u(x, hw)
        return x


class Stage(nn.Module):
    """Entry downsampling, positional encoding, blocks, static token reduction."""

    def __init__(self, s: StageArch, cin: int, grid: tuple[int, int]):
        super().__init__()
        dim = s.embed_dim
        self.downsample: nn.Module | None = None
        if s.stride > 1 or cin != dim:
            if s.downsample == "merge":
                self.downsample = MergeDownsample(cin, dim, s.stride, mlp_ratio=s.mlp_ratio,
                                                  norm=s.norm, act=s.act)
            else:
                self.downsample = ConvDownsample(cin, dim, s.stride, norm=s.norm)
        self.pos: nn.Module | None = {"none": lambda: None,
                                      "absolute": lambda: AbsPosEmbed(dim, grid),
                                      "conv": lambda: ConvPosEmbed(dim)}[s.pos_embed]()
        self.grid = (int(grid[0]), int(grid[1]))  # static: kernels and tracers need ints
        n = grid[0] * grid[1]
        self.keep = kept_tokens(n, s.keep_ratio)
        self.reduce_at = s.reduce_at if self.keep < n else s.depth
        self.reduce_method = s.reduce_method
        # ToMe merges at most half the tokens per round: the rounds are fixed by the grid,
        # so they are computed here (static shapes also let ONNX/torch.export trace them).
        self.merge_rounds: tuple[int, ...] = _merge_rounds(n, self.keep)
        self.blocks = nn.ModuleList(
            [Block(s, self.keep if j >= self.reduce_at else n) for j in range(s.depth)])

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.downsample is not None:
            x, _ = self.downsample(x, hw)
        hw = self.grid
        if self.pos is not None:
            x = self.pos(x, hw)
        full, state = None, None
        for j, blk in enumerate(self.blocks):
            if j == self.reduce_at:
                full = x
                x, state = self._reduce(x)
            x = blk(x, hw if full is None else None)
        if full is not None:
            x = self._restore(x, state, full)
        return x, hw

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reduce_method == "prune":
            return prune_tokens(x, self.keep, token_scores(x))
        assign = torch.arange(x.shape[1], device=x.device).expand_as(x[:, :, 0])  # batch-agnostic
        size = None
        for r in self.merge_rounds:
            x, size, step = merge_tokens(x, r, size)
            assign = step.gather(1, assign)
        return x, assign

    def _restore(self, x: torch.Tensor, state: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        if self.reduce_method == "prune":
            return unprune_tokens(x, state, full)
        return unmerge_tokens(x, state)


def _merge_rounds(n: int, keep: int) -> tuple[int, ...]:
    """Tokens merged in each ToMe round to go from ``n`` to ``keep`` tokens."""
    rounds = []
    while n > keep:
        r = min(n - keep, n // 2)
        rounds.append(r)
        n -= r
    return tuple(rounds)


class VisionTransformer(nn.Module):
    """Stem, stages, head; ``forward(images) -> logits``."""

    def __init__(self, arch: Arch, *, num_classes: int, in_chans: int = 3):
        super().__init__()
        self.arch, self.num_classes, self.in_chans = arch, num_classes, in_chans
        s0 = arch.stages[0]
        self.stem = Stem(arch.stem, in_chans, s0.embed_dim, arch.stem_stride,
                         norm=s0.norm, act=s0.act)
        grids = stage_grids(arch)
        side = stem_grid(arch.stem, arch.stem_stride, arch.resolution)
        self.stem_grid = (side, side)
        stages, cin = [], s0.embed_dim
        for s, grid in zip(arch.stages, grids):
            stages.append(Stage(s, cin, grid))
            cin = s.embed_dim
        self.stages = nn.ModuleList(stages)
        last = arch.stages[-1]
        self.num_features = last.embed_dim
        self.head = Head(last.embed_dim, num_classes, norm=last.norm)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != (self.arch.resolution,) * 2:
            raise ValueError(f"expected {self.arch.resolution}x{self.arch.resolution} images "
                             f"(the arch's resolution), got {tuple(x.shape[-2:])}")
        x, _ = self.stem(x)
        hw = self.stem_grid
        for stage in self.stages:
            x, hw = stage(x, hw)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, normalise and classify the tokens (``pre_logits``: stop before the classifier)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    # timm's classifier interface, so timm's training and fine-tuning tools apply.
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new (freshly initialised) classifier for ``num_classes`` classes (0: none)."""
        w = self.head.fc.weight
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes, device=w.device, dtype=w.dtype) \
            if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_weights(self.head.fc)


def init_weights(m: nn.Module) -> None:
    """timm-style init: truncated normal linears, fan-out normal convs, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, AbsPosEmbed):
        nn.init.trunc_normal_(m.pos, std=0.02)


def build_model(arch: Arch, *, num_classes: int, in_chans: int = 3,
                device: torch.device | str | None = None) -> VisionTransformer:
    """Build the standalone model of ``arch`` (``device="meta"`` allocates nothing)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return VisionTransformer(arch, num_classes=num_classes, in_chans=in_chans)
