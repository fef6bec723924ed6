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
from nas.kernels.patterns import is_dense
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


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
            ) -> torch.Tensor:
    """Dense softmax attention, ``(..., N, d)`` in and out; ``scale`` defaults to ``dqk ** -0.5``.

    SDPA, except for fp32 on CPU when the query/key head size differs from the value's:
    CPU SDPA then leaves its fused kernel for the generic math path (q and k scaled
    apart, a softmax that checks every row for full masking), and the three plain ops
    run faster. EfficientViT's cascaded heads (q, k 16 channels, v 64) went 8-12% faster
    as a whole model at batch 1 (``bench/bench_vs_timm.py``, Intel Xeon, 1 thread).
    """
    if q.device.type != "cpu" or q.dtype != torch.float32 or q.shape[-1] == v.shape[-1]:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax((q if scale == 1.0 else q * scale) @ k.transpose(-2, -1), dim=-1) @ v


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
            o = _attend(q, k, v)
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
        o = _attend(_heads(self.q(x), b, n, self.heads), k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))


class FusedCascadedGroupAttention(nn.Module):
    """EfficientViT cascaded group attention with each head's q, k, v in one weight.

    At batch 1 this mixer is bound by the number of ops, not by arithmetic: for
    inference without autograd the per-head weight views, and the query conv's weights
    times the attention scale (used where one window covers the grid), are cached
    until a parameter changes, so a forward pass indexes nothing and scales nothing.
    The state dict holds the parameters only.
    """

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
        self._cache: tuple[tuple, list[tuple[torch.Tensor, ...]]] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = None  # views of this instance's parameters: never copied
        return state

    def _split_heads(self) -> list[tuple[torch.Tensor, ...]]:
        s = self.qk_dim ** -0.5
        return [(w, b, k, kb, k * s, kb * s) for w, b, k, kb in zip(
            self.qkv.unbind(0), self.qkv_bias.unbind(0), self.dw_kernel.unbind(0),
            self.dw_bias.unbind(0))]

    def _per_head(self) -> list[tuple[torch.Tensor, ...]]:
        """Per head: qkv weight and bias, query conv kernel and bias, the two scaled."""
        params = (self.qkv, self.qkv_bias, self.dw_kernel, self.dw_bias)
        if (torch.jit.is_tracing() or torch.compiler.is_compiling()  # exporters: plain ops
                or torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self._split_heads()
        key = tuple((p.data_ptr(), p._version, p.shape) for p in params)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._split_heads())
        return self._cache[1]

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        pad = self.dw_kernel.shape[-1] // 2
        splits = x.chunk(self.heads, dim=-1)
        dense = is_dense(self.pattern, hw)  # one window covers the grid: no partition
        outs: list[torch.Tensor] = []
        for i, (w, b, dwk, dwb, dwk_s, dwb_s) in enumerate(self._per_head()):
            feat = splits[i] if i == 0 else splits[i] + outs[-1]
            q, k, v = F.linear(feat, w, b).split(self.splits, dim=-1)
            if dense:  # the scale rides on the query conv
                q = to_tokens(F.conv2d(to_img(q, hw), dwk_s, dwb_s, padding=pad,
                                       groups=self.qk_dim))
                outs.append(_attend(q, k, v, scale=1.0))
            else:
                q = to_tokens(F.conv2d(to_img(q, hw), dwk, dwb, padding=pad, groups=self.qk_dim))
                outs.append(sparse_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                             pattern=self.pattern, hw=hw, local_heads=1).squeeze(1))
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
