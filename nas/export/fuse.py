"""Inference twins of the attention mixers: one projection GEMM instead of three.

The training-time mixers of :mod:`nas.model.mixers` keep separate ``q``, ``k`` and ``v``
linears, because the supernet slices each of them on its own. For inference the
three weights are concatenated into one ``qkv`` linear (timm's layout), so the input
is read once and one large GEMM replaces three small ones; the heads are then views
of the GEMM's output. PVT's spatial-reduction attention keeps ``q`` on the full grid
and fuses ``k`` and ``v`` (both read the reduced grid) into ``kv``. Cascaded group
attention fuses each head's three projections into one.

:func:`fuse_attention` swaps every mixer of a standalone model for its twin, in
place; the result computes the same function (up to GEMM rounding) and its structure
depends on the architecture only, so a loader can rebuild it before loading weights.
The plain mixers stay the reference path.

Example:
    >>> fused = fuse_attention(copy.deepcopy(model))  # doctest: +SKIP
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.kernels import Pattern, linear_attention, sparse_attention
from nas.model.layers import to_img, to_tokens
from nas.model.mixers import Attention, CascadedGroupAttention, LinearAttention, SRAttention

__all__ = ["QKVAttention", "KVSRAttention", "FusedCascadedGroupAttention", "fuse_attention"]


def _cat_linears(linears: list[nn.Linear]) -> nn.Linear:
    w = torch.cat([m.weight for m in linears])
    bias = all(m.bias is not None for m in linears)
    out = nn.Linear(w.shape[1], w.shape[0], bias=bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if bias:
            out.bias.copy_(torch.cat([m.bias for m in linears]))
    return out


def _heads(x: torch.Tensor, b: int, n: int, heads: int) -> torch.Tensor:
    return x.view(b, n, heads, -1).transpose(1, 2)


class QKVAttention(nn.Module):
    """Global, sparse-pattern or linear attention with one fused ``qkv`` projection.

    Args:
        dim: channels.
        heads: attention heads.
        qk_dim: query/key channels per head.
        kind: ``"softmax"`` (SDPA, or the sparse kernel when ``pattern`` is given) or
            ``"linear"`` (kernelised linear attention).
        pattern: sparse pattern of the first ``local_heads`` heads (softmax only).
        local_heads: heads that use ``pattern``.
    """

    def __init__(self, dim: int, *, heads: int, qk_dim: int, kind: str = "softmax",
                 pattern: Pattern | None = None, local_heads: int | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        if kind not in ("softmax", "linear"):
            raise ValueError(f"kind must be 'softmax' or 'linear', got {kind!r}")
        # Python ints throughout, so tracing exporters (ONNX, TorchScript) see constants.
        self.heads, self.kind, self.pattern = heads, kind, pattern
        self.local_heads = heads if local_heads is None else int(local_heads)
        self.splits = (heads * qk_dim, heads * qk_dim, dim)
        self.qkv = nn.Linear(dim, sum(self.splits), device=device)
        self.proj = nn.Linear(dim, dim, device=device)

    @classmethod
    def from_mixer(cls, src: Attention | LinearAttention | SRAttention) -> QKVAttention:
        """The fused twin of ``src`` (an SRA without reduction is plain attention)."""
        if isinstance(src, SRAttention) and src.sr is not None:
            raise ValueError("an SRA with spatial reduction fuses into KVSRAttention")
        heads, dim = src.heads, src.v.in_features
        out = cls(dim, heads=heads, qk_dim=src.q.out_features // heads,
                  kind="linear" if isinstance(src, LinearAttention) else "softmax",
                  pattern=getattr(src, "pattern", None),
                  local_heads=getattr(src, "local_heads", None), device="meta")
        out.qkv = _cat_linears([src.q, src.k, src.v])
        out.proj = src.proj
        return out

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (_heads(t, b, n, self.heads) for t in self.qkv(x).split(self.splits, dim=-1))
        if self.kind == "linear":
            o = linear_attention(q, k, v)
        elif self.pattern is None:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = sparse_attention(q, k, v, pattern=self.pattern, hw=hw or (1, n),
                                 local_heads=self.local_heads)
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))


class KVSRAttention(nn.Module):
    """PVT spatial-reduction attention with ``k`` and ``v`` fused into one ``kv`` linear."""

    def __init__(self, src: SRAttention):
        super().__init__()
        if src.sr is None:
            raise ValueError("an SRA without spatial reduction fuses into QKVAttention")
        self.heads = src.heads
        self.kv_splits = (src.k.out_features, src.v.out_features)
        self.q, self.proj, self.sr, self.sr_norm = src.q, src.proj, src.sr, src.sr_norm
        self.kv = _cat_linears([src.k, src.v])

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        b, n, _ = x.shape
        img = to_img(x, hw)
        r = self.sr.stride[0]
        if img.shape[2] < r or img.shape[3] < r:  # grid smaller than the reduction window
            img = F.pad(img, (0, max(0, r - img.shape[3]), 0, max(0, r - img.shape[2])))
        kv = self.sr_norm(to_tokens(self.sr(img)))
        m = kv.shape[1]
        k, v = (_heads(t, b, m, self.heads) for t in self.kv(kv).split(self.kv_splits, dim=-1))
        o = F.scaled_dot_product_attention(_heads(self.q(x), b, n, self.heads), k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))


class FusedCascadedGroupAttention(nn.Module):
    """EfficientViT cascaded group attention with each head's q, k, v in one weight."""

    def __init__(self, src: CascadedGroupAttention):
        super().__init__()
        self.heads, self.qk_dim, self.window = src.heads, src.qk_dim, src.window
        self.pattern = Pattern("local", window=src.window)
        self.splits = (src.qk_dim, src.qk_dim, src.v.shape[1])
        self.qkv = nn.Parameter(torch.cat([src.q, src.k, src.v], dim=1).detach())
        self.qkv_bias = nn.Parameter(torch.cat([src.q_bias, src.k_bias, src.v_bias], 1).detach())
        self.dw_kernel = nn.Parameter(src.dw_kernel.detach().unsqueeze(2))
        self.dw_bias = src.dw_bias
        self.proj = src.proj

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        pad = self.dw_kernel.shape[-1] // 2
        splits = x.chunk(self.heads, dim=-1)
        outs: list[torch.Tensor] = []
        for i in range(self.heads):
            feat = splits[i] if i == 0 else splits[i] + outs[-1]
            q, k, v = F.linear(feat, self.qkv[i], self.qkv_bias[i]).split(self.splits, dim=-1)
            q = to_tokens(F.conv2d(to_img(q, hw), self.dw_kernel[i], self.dw_bias[i],
                                   padding=pad, groups=self.qk_dim))
            o = sparse_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                 pattern=self.pattern, hw=hw, local_heads=1)
            outs.append(o.squeeze(1))
        return self.proj(F.relu(torch.cat(outs, dim=-1)))


def _fused(mixer: nn.Module) -> nn.Module | None:
    if isinstance(mixer, SRAttention):
        return KVSRAttention(mixer) if mixer.sr is not None else QKVAttention.from_mixer(mixer)
    if isinstance(mixer, (Attention, LinearAttention)):
        return QKVAttention.from_mixer(mixer)
    if isinstance(mixer, CascadedGroupAttention):
        return FusedCascadedGroupAttention(mixer)
    return None


@torch.no_grad()
def fuse_attention(model: nn.Module) -> nn.Module:
    """Replace every attention mixer of a standalone model by its fused twin, in place."""
    for stage in model.stages:
        for block in stage.blocks:
            fused = _fused(block.mixer)
            if fused is not None:
                block.mixer = fused
    return model
