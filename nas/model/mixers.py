"""Token mixers: the ``token_mixer`` of a MetaFormer block (Yu et al., CVPR 2022).

Every mixer maps ``(B, N, C)`` tokens to ``(B, N, C)``; ``hw`` is the token grid, or
``None`` after in-stage token reduction (only grid-free mixers run there). The
attention variants follow the taxonomy: global MHSA (ViT/DeiT), sparse patterns
with heterogeneous heads (Swin / MaxViT / BigBird, HiLo), PVT spatial-reduction
attention, kernelised linear attention (Katharopoulos et al. 2020), EfficientViT
cascaded group attention (Liu et al., CVPR 2023); and the attention-free ones:
pooling (PoolFormer), depthwise conv, token MLP (ResMLP) and identity.

Each mixer is declared in :mod:`nas.mixer_registry`, whose spec names its builder
``(stage_arch, dim, tokens) -> nn.Module`` (the ``build_*`` functions at the end of
this file); ``MIXERS`` is a dict of the builders registered at the time it is read.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.kernels import Pattern, linear_attention, sparse_attention
from nas.mixer_registry import get_mixer, mixer_names
from nas.model.layers import TokenNorm, to_img, to_tokens

__all__ = ["Attention", "SRAttention", "LinearAttention", "CascadedGroupAttention", "Pooling",
           "DWConvMixer", "TokenMLP", "IdentityMixer", "build_mixer"]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def mark_heads(heads: int, *, rows: tuple[nn.Module, ...] = (), cols: tuple[nn.Module, ...] = ()) -> None:
    """Tell the supernet which linears are laid out head by head.

    ``rows``: output features are ``heads`` consecutive groups (q, k, v); ``cols``: the
    input features are (the output projection). The supernet slices these per head,
    so a subnet with smaller heads keeps every head's leading dims instead of
    regrouping other heads' rows. The standalone model ignores the marks.
    """
    for m in rows:
        m.heads_out = heads
    for m in cols:
        m.heads_in = heads


class _QKVMixer(nn.Module):
    """Base of the attention mixers: ``q``/``k`` project to ``heads * qk_dim`` (a small QK
    is the EfficientViT compression), ``v`` and the output ``proj`` keep the width; all
    four are marked head by head for the supernet."""

    def __init__(self, dim: int, *, heads: int, qk_dim: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, heads * qk_dim)
        self.k = nn.Linear(dim, heads * qk_dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        mark_heads(heads, rows=(self.q, self.k, self.v), cols=(self.proj,))

    def _qkv(self, x: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries from ``x``, keys and values from ``kv``, each ``(B, heads, N, d)``."""
        return (_heads(self.q(x), self.heads), _heads(self.k(kv), self.heads),
                _heads(self.v(kv), self.heads))


class Attention(_QKVMixer):
    """Multi-head self-attention with small QK (EfficientViT) and an optional sparse pattern.

    With ``pattern=None`` every head is global (``mhsa``). Otherwise the first
    ``local_heads`` heads use the pattern and the rest stay global.
    """

    variant = "attn"

    def __init__(self, dim: int, *, heads: int, qk_dim: int, pattern: Pattern | None = None,
                 local_heads: int | None = None):
        super().__init__(dim, heads=heads, qk_dim=qk_dim)
        self.pattern, self.local_heads = pattern, local_heads

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        q, k, v = self._qkv(x, x)
        if self.pattern is None:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = sparse_attention(q, k, v, pattern=self.pattern, hw=hw or (1, x.shape[1]),
                                 local_heads=self.local_heads)
        return self.proj(_merge_heads(o))


class SRAttention(_QKVMixer):
    """PVT spatial-reduction attention: keys and values from a strided-conv-reduced grid."""

    variant = "sra"

    def __init__(self, dim: int, *, heads: int, qk_dim: int, sr_ratio: int, norm: str = "layernorm"):
        super().__init__(dim, heads=heads, qk_dim=qk_dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.sr.variant = f"sr{sr_ratio}"
            self.sr_norm = TokenNorm(norm, dim)
        else:
            self.sr, self.sr_norm = None, None

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        kv = x
        if self.sr is not None:
            img = to_img(x, hw)
            r = self.sr.stride[0]
            if img.shape[2] < r or img.shape[3] < r:  # grid smaller than the reduction window
                img = F.pad(img, (0, max(0, r - img.shape[3]), 0, max(0, r - img.shape[2])))
            kv = self.sr_norm(to_tokens(self.sr(img)))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(*self._qkv(x, kv))))


class LinearAttention(_QKVMixer):
    """Kernelised linear attention with the elu+1 feature map: O(N) in tokens."""

    variant = "linear"

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return self.proj(_merge_heads(linear_attention(*self._qkv(x, x))))


class CascadedGroupAttention(nn.Module):
    """EfficientViT cascaded group attention inside local windows.

    Head ``i`` sees channel split ``i`` plus the output of head ``i-1``; its query
    passes a depthwise conv; attention runs in ``window x window`` windows; the
    concatenated heads pass ReLU and a projection.
    """

    variant = "cga"

    def __init__(self, dim: int, *, heads: int, qk_dim: int, window: int, kernel: int):
        super().__init__()
        hd = dim // heads
        self.heads, self.qk_dim, self.window = heads, qk_dim, window
        self.q = nn.Parameter(torch.empty(heads, qk_dim, hd))
        self.k = nn.Parameter(torch.empty(heads, qk_dim, hd))
        self.v = nn.Parameter(torch.empty(heads, hd, hd))
        self.q_bias = nn.Parameter(torch.zeros(heads, qk_dim))
        self.k_bias = nn.Parameter(torch.zeros(heads, qk_dim))
        self.v_bias = nn.Parameter(torch.zeros(heads, hd))
        self.dw_kernel = nn.Parameter(torch.empty(heads, qk_dim, kernel, kernel))
        self.dw_bias = nn.Parameter(torch.zeros(heads, qk_dim))
        self.proj = nn.Linear(dim, dim)
        mark_heads(heads, cols=(self.proj,))
        for w in (self.q, self.k, self.v, self.dw_kernel):
            nn.init.trunc_normal_(w, std=0.02)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        h, dqk = self.heads, self.qk_dim
        pattern = Pattern("local", window=self.window)
        splits = x.chunk(h, dim=-1)
        pad = self.dw_kernel.shape[-1] // 2
        outs: list[torch.Tensor] = []
        for i in range(h):
            feat = splits[i] if i == 0 else splits[i] + outs[-1]
            q = F.linear(feat, self.q[i], self.q_bias[i])
            k = F.linear(feat, self.k[i], self.k_bias[i])
            v = F.linear(feat, self.v[i], self.v_bias[i])
            q = to_tokens(F.conv2d(to_img(q, hw), self.dw_kernel[i].unsqueeze(1), self.dw_bias[i],
                                   padding=pad, groups=dqk))
            o = sparse_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                 pattern=pattern, hw=hw)
            outs.append(o.squeeze(1))
        return self.proj(F.relu(torch.cat(outs, dim=-1)))


class Pooling(nn.Module):
    """PoolFormer token mixer: ``avgpool(x) - x`` (no weights)."""

    variant = "pool"

    def __init__(self, kernel: int):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel, 1, kernel // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return to_tokens(self.pool(to_img(x, hw))) - x


class DWConvMixer(nn.Module):
    """Depthwise ``k x k`` convolution as token mixer (ConvNeXt / RepMixer style)."""

    variant = "dwconv"

    def __init__(self, dim: int, *, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel, 1, kernel // 2, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return to_tokens(self.conv(to_img(x, hw)))


class TokenMLP(nn.Module):
    """Cross-token linear layer (ResMLP): mixes the ``N`` tokens of each channel."""

    variant = "mlp"

    def __init__(self, tokens: int):
        super().__init__()
        self.fc = nn.Linear(tokens, tokens)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return self.fc(x.transpose(1, 2)).transpose(1, 2)


class IdentityMixer(nn.Module):
    """No token mixing (IdentityFormer baseline)."""

    variant = "identity"

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return x


def _pattern(s) -> Pattern:
    return Pattern(s.pattern, window=s.window, shift=s.shift, density=s.density)


# Builders of the built-in mixers, named by their specs in nas.mixer_registry.

def build_mhsa(s, dim: int, tokens: int) -> nn.Module:
    return Attention(dim, heads=s.heads, qk_dim=s.qk_dim)


def build_attention(s, dim: int, tokens: int) -> nn.Module:
    return Attention(dim, heads=s.heads, qk_dim=s.qk_dim, pattern=_pattern(s),
                     local_heads=s.local_heads)


def build_sra(s, dim: int, tokens: int) -> nn.Module:
    return SRAttention(dim, heads=s.heads, qk_dim=s.qk_dim, sr_ratio=s.sr_ratio, norm=s.norm)


def build_linear(s, dim: int, tokens: int) -> nn.Module:
    return LinearAttention(dim, heads=s.heads, qk_dim=s.qk_dim)


def build_cga(s, dim: int, tokens: int) -> nn.Module:
    return CascadedGroupAttention(dim, heads=s.heads, qk_dim=s.qk_dim, window=s.window,
                                  kernel=s.kernel)


def build_pool(s, dim: int, tokens: int) -> nn.Module:
    return Pooling(s.kernel)


def build_dwconv(s, dim: int, tokens: int) -> nn.Module:
    return DWConvMixer(dim, kernel=s.kernel)


def build_mlp(s, dim: int, tokens: int) -> nn.Module:
    return TokenMLP(tokens)


def build_identity(s, dim: int, tokens: int) -> nn.Module:
    return IdentityMixer()


def __getattr__(name: str):
    if name == "MIXERS":  # kept for compatibility: name -> builder, as registered now
        return {m: get_mixer(m).resolve_builder() for m in mixer_names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_mixer(stage, tokens: int) -> nn.Module:
    """Build the mixer of ``stage`` (a :class:`nas.arch.StageArch`) for ``tokens`` tokens."""
    return get_mixer(stage.mixer).build(stage, tokens)
