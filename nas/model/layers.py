"""Building blocks of the standalone models (tokens are ``(B, N, C)``, row-major grid).

Modules whose weights are *not* shared across choices in the supernet carry a
``variant`` attribute (the norm kind, the mixer family, the stem kind...); the
supernet keys its storage by it. Everything else shares weights by slicing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.model.shapes import conv_kernel_for_stride

__all__ = [
    "to_img", "to_tokens", "make_act", "TokenNorm", "LayerScale", "SparseLinear", "LowRankLinear",
    "FFN", "FFNUnit", "Stem", "ConvDownsample", "PatchMerging", "MergeDownsample",
    "AbsPosEmbed", "ConvPosEmbed", "Head",
]


def to_img(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``(B, N, C)`` tokens as a ``(B, C, H, W)`` image: a channels-last view, no copy.

    Going through ``(B, H, W, C)`` keeps a true batch stride even when ``B == 1``, so
    convolutions recognise the channels-last layout and do not copy it to NCHW.
    """
    b, n, c = x.shape
    return x.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def make_act(name: str) -> nn.Module:
    return {"gelu": nn.GELU, "relu": nn.ReLU}[name]()


class TokenNorm(nn.Module):
    """LayerNorm, BatchNorm or GroupNorm(1 group) over ``(B, N, C)`` tokens."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind  # affine weights are shared across kinds in the supernet
        if kind == "layernorm":
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        elif kind == "batchnorm":
            self.norm = nn.BatchNorm1d(dim)
        elif kind == "groupnorm":
            self.norm = nn.GroupNorm(1, dim, eps=1e-5)
        else:
            raise ValueError(f"norm must be layernorm, batchnorm or groupnorm, got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return self.norm(x)
        if self.kind == "batchnorm":
            return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        # GroupNorm(1) ignores the spatial layout: view the tokens as a channels-last
        # (B, C, N, 1) image, which the CPU kernel normalises in place of layout, so no
        # transpose is copied and the result is contiguous tokens again.
        b, n, c = x.shape
        g = self.norm
        y = F.group_norm(x.reshape(b, n, 1, c).permute(0, 3, 1, 2), 1, g.weight, g.bias, g.eps)
        return y.permute(0, 2, 3, 1).reshape(b, n, c)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1e-2):
        super().__init__()
        self.variant = "ls"
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class SparseLinear(nn.Linear):
    """A linear layer whose weight has a 2:4 pattern (2 non-zeros in every 4 inputs).

    The weight is stored pruned; the forward is a plain linear. The supernet applies
    the magnitude 2:4 mask to its shared weight when it slices one out.
    """


class LowRankLinear(nn.Module):
    """``W ~= U V``: ``in -> rank -> out`` (the second factor carries the bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, *, sparse: bool = False):
        super().__init__()
        self.variant = "lowrank"
        lin = SparseLinear if sparse else nn.Linear
        self.v = lin(in_features, rank, bias=False)
        self.u = lin(rank, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.u(self.v(x))


def _linear(cin: int, cout: int, rank: int | None, sparse: bool) -> nn.Module:
    if rank is not None:
        return LowRankLinear(cin, cout, rank, sparse=sparse)
    return SparseLinear(cin, cout) if sparse else nn.Linear(cin, cout)


class FFN(nn.Module):
    """Channel MLP, optionally low-rank, 2:4-sparse, or with a depthwise conv (PVTv2)."""

    def __init__(self, dim: int, hidden: int, *, act: str = "gelu", rank: int | None = None,
                 sparse: bool = False, conv: bool = False):
        super().__init__()
        self.fc1 = _linear(dim, hidden, rank, sparse)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden) if conv else None
        self.act = make_act(act)
        self.fc2 = _linear(hidden, dim, rank, sparse)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        x = self.fc1(x)
        if self.dw is not None:
            x = to_tokens(self.dw(to_img(x, hw)))
        return self.fc2(self.act(x))


class FFNUnit(nn.Module):
    """``[x + dwconv(x)]; x + ls(ffn(norm(x)))``: one channel-mixing sub-block."""

    def __init__(self, dim: int, hidden: int, *, norm: str, act: str, rank: int | None = None,
                 sparse: bool = False, conv: bool = False, interaction: bool = False,
                 layer_scale: bool = False):
        super().__init__()
        self.interaction = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) if interaction else None
        self.norm = TokenNorm(norm, dim)
        self.ffn = FFN(dim, hidden, act=act, rank=rank, sparse=sparse, conv=conv)
        self.ls = LayerScale(dim) if layer_scale else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        if self.interaction is not None:
            x = x + to_tokens(self.interaction(to_img(x, hw)))
        y = self.ffn(self.norm(x), hw)
        return x + (self.ls(y) if self.ls is not None else y)


class Stem(nn.Module):
    """Patchify conv (ViT), overlapping conv + norm (PVT/PoolFormer), or a stride-2 conv stack."""

    def __init__(self, kind: str, in_chans: int, dim: int, stride: int, *, norm: str, act: str):
        super().__init__()
        self.variant = kind
        if kind == "patch":
            self.proj = nn.Conv2d(in_chans, dim, stride, stride)
            self.norm = None
        elif kind == "overlap":
            k, p = conv_kernel_for_stride(stride)
            self.proj = nn.Conv2d(in_chans, dim, k, stride, p)
            self.norm = TokenNorm(norm, dim)
        elif kind == "convs":
            n = stride.bit_length() - 1
            layers: list[nn.Module] = []
            cin = in_chans
            for i in range(n):
                cout = max(1, dim >> (n - 1 - i))
                layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout)]
                if i < n - 1:
                    layers.append(make_act(act))
                cin = cout
            self.proj = nn.Sequential(*layers)
            self.norm = None
        else:
            raise ValueError(f"stem must be patch, overlap or convs, got {kind!r}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        # Row-major tokens from here on: every later conv then sees a channels-last view
        # and returns channels-last, so the token stream never goes channel-major (which
        # would make each norm copy and each residual add strided).
        x = to_tokens(x).contiguous()
        return (self.norm(x) if self.norm is not None else x), hw


class ConvDownsample(nn.Module):
    """Overlapping strided conv + norm (PVTv2, PoolFormer)."""

    def __init__(self, cin: int, cout: int, stride: int, *, norm: str):
        super().__init__()
        self.variant = "conv"
        k, p = conv_kernel_for_stride(stride) if stride > 1 else (1, 0)
        self.proj = nn.Conv2d(cin, cout, k, stride, p)
        self.norm = TokenNorm(norm, cout)

    def forward(self, x, hw):
        x = self.proj(to_img(x, hw))
        hw = (x.shape[2], x.shape[3])
        return self.norm(to_tokens(x)), hw


class PatchMerging(nn.Module):
    """EfficientViT patch merging: 1x1 expand, strided depthwise, squeeze-excite, 1x1 project."""

    def __init__(self, cin: int, cout: int, stride: int, *, act: str):
        super().__init__()
        hid = cin * 4
        k, p = conv_kernel_for_stride(stride) if stride > 1 else (3, 1)
        self.conv1 = nn.Sequential(nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid))
        self.conv2 = nn.Sequential(nn.Conv2d(hid, hid, k, stride, p, groups=hid, bias=False),
                                   nn.BatchNorm2d(hid))
        self.se_reduce = nn.Conv2d(hid, cin, 1)
        self.se_expand = nn.Conv2d(cin, hid, 1)
        self.conv3 = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        s = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        return self.conv3(x * s)


class MergeDownsample(nn.Module):
    """EfficientViT downsampling: FFN sub-blocks around a :class:`PatchMerging`."""

    def __init__(self, cin: int, cout: int, stride: int, *, mlp_ratio: float, norm: str, act: str):
        super().__init__()
        self.variant = "merge"
        self.pre = FFNUnit(cin, max(1, round(cin * mlp_ratio)), norm=norm, act=act, interaction=True)
        self.merge = PatchMerging(cin, cout, stride, act=act)
        self.post = FFNUnit(cout, max(1, round(cout * mlp_ratio)), norm=norm, act=act,
                            interaction=True)

    def forward(self, x, hw):
        x = self.pre(x, hw)
        y = self.merge(to_img(x, hw))
        hw = (y.shape[2], y.shape[3])
        return self.post(to_tokens(y), hw), hw


class AbsPosEmbed(nn.Module):
    """Learned absolute positional embedding for one token grid."""

    def __init__(self, dim: int, hw: tuple[int, int]):
        super().__init__()
        self.variant = "absolute"
        self.pos = nn.Parameter(torch.zeros(1, dim, hw[0], hw[1]))

    def forward(self, x, hw):
        return x + self.pos.flatten(2).transpose(1, 2)


class ConvPosEmbed(nn.Module):
    """Conditional positional encoding: residual 3x3 depthwise conv (CPVT)."""

    def __init__(self, dim: int):
        super().__init__()
        self.variant = "conv"
        self.proj = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, hw):
        return x + to_tokens(self.proj(to_img(x, hw)))


class Head(nn.Module):
    """Global average pooling, norm, linear classifier."""

    def __init__(self, dim: int, num_classes: int, *, norm: str):
        super().__init__()
        self.norm = TokenNorm(norm, dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean(1, keepdim=True)).squeeze(1)
        return x if pre_logits else self.fc(x)
