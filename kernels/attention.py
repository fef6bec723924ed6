"""Sparse attention with heterogeneous heads, and kernelised linear attention.

:func:`sparse_attention` computes softmax attention restricted to a
:class:`~kernels.patterns.Pattern` (Swin local windows, MaxViT dilated grid, BigBird-like
blocks) on the first ``local_heads`` heads and dense global attention on the others,
as in HiLo (Pan et al., NeurIPS 2022) and Shunted attention (Ren et al., CVPR 2022).
Every fast path is tested against ``impl="reference"``, which materialises
:func:`~kernels.patterns.pattern_mask` and runs a masked softmax in fp32.

``impl`` names (:data:`IMPLS`):

* ``reference``: explicit ``(N, N)`` masked softmax in fp32 (slow, the definition).
* ``sdpa_mask``: :func:`torch.nn.functional.scaled_dot_product_attention` with the
  dense boolean mask (the usual "masked dense" baseline).
* ``window`` / ``grid`` / ``block``: partition paths of :mod:`nas.kernels.partition` for the
  ``local`` / ``dilated`` / ``block`` kinds respectively.
* ``flex``: compiled FlexAttention with a ``BlockMask`` (:mod:`nas.kernels.flex`), any kind.
* ``auto``: :func:`auto_impl`; the rule is below and ``bench/bench_kernels.py`` checks it.

:func:`linear_attention` is the non-causal linear transformer of Katharopoulos et al.
(ICML 2020) with ``phi(x) = elu(x) + 1``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from nas.kernels.flex import flex_sparse_attention
from nas.kernels.partition import block_attention, grid_attention, window_attention
from nas.kernels.patterns import Pattern, check_hw, is_dense, pattern_mask

__all__ = ["IMPLS", "LINEAR_IMPLS", "auto_impl", "sparse_attention", "linear_attention"]

IMPLS = ("auto", "reference", "sdpa_mask", "window", "grid", "block", "flex")
LINEAR_IMPLS = ("auto", "reference", "linear")

# partition impl -> (pattern kind it computes, function)
_PARTITION = {"window": ("local", window_attention), "grid": ("dilated", grid_attention),
              "block": ("block", block_attention)}
_AUTO = {"local": "window", "dilated": "grid", "block": "block"}


def auto_impl(pattern: Pattern, hw: tuple[int, int], device: torch.device | str = "cpu") -> str:
    """The path ``impl="auto"`` takes for ``pattern`` on grid ``hw``.

    Rule: a pattern that is dense on this grid runs plain SDPA without a mask
    (``"dense"``); otherwise the partition path of its kind (``window`` for local,
    ``grid`` for dilated, ``block`` for block). Partition paths do ``1 / sparsity`` of
    the dense work with the same fused SDPA kernel and need no ``(N, N)`` mask; on CPU
    they beat masked dense SDPA at every size in ``bench/results/kernels_cpu.md``
    (196 to 3136 tokens), and compiled FlexAttention is slower there. CUDA uses the
    same rule until ``bench/bench_kernels.py --device cuda`` says otherwise; ``device``
    is accepted so the rule can become device-specific without changing callers.
    """
    del device  # same rule on every device for now
    return "dense" if is_dense(pattern, hw) else _AUTO[pattern.kind]


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, same_n: bool = True) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (B, heads, N, dim); got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[:2] != v.shape[:2] or k.shape[2] != v.shape[2] \
            or q.shape[-1] != k.shape[-1] or (same_n and q.shape[2] != k.shape[2]):
        raise ValueError(f"q, k: (B, h, N, dqk) and v: (B, h, N, dv) must agree; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


_cached_mask = functools.lru_cache(maxsize=8)(pattern_mask)


def _reference(q, k, v, pattern: Pattern, hw: tuple[int, int], nl: int) -> torch.Tensor:
    n = q.shape[2]
    mask = torch.ones(q.shape[1], n, n, dtype=torch.bool, device=q.device)
    mask[:nl] = pattern_mask(pattern, hw, q.device)
    scores = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(v.dtype)


def _dense(q, k, v) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def _patterned(impl: str, q, k, v, pattern: Pattern, hw: tuple[int, int]) -> torch.Tensor:
    """All heads of ``q, k, v`` under ``pattern`` with a resolved, non-dense ``impl``."""
    if impl == "sdpa_mask":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_cached_mask(pattern, hw, q.device))
    if impl == "flex":
        return flex_sparse_attention(q, k, v, pattern=pattern, hw=hw)
    return _PARTITION[impl][1](q, k, v, pattern=pattern, hw=hw)


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, pattern: Pattern,
                     hw: tuple[int, int], local_heads: int | None = None,
                     impl: str = "auto") -> torch.Tensor:
    """Softmax attention: ``pattern`` on heads ``[:local_heads]``, global on the rest.

    Args:
        q: queries ``(B, h, N, dqk)``; tokens in row-major order of ``hw``.
        k: keys ``(B, h, N, dqk)``.
        v: values ``(B, h, N, dv)``.
        pattern: the sparse pattern of the local heads.
        hw: token grid ``(H, W)`` with ``H * W == N`` (use ``(1, N)`` for grid-free tokens).
        local_heads: number of leading heads that use ``pattern``, in ``[0, h]``;
            ``None`` means all of them.
        impl: one of :data:`IMPLS` (see the module docstring).

    Returns:
        ``(B, h, N, dv)`` in the dtype of ``v``; the scale is ``dqk ** -0.5``.

    Example:
        >>> q = k = v = torch.randn(2, 4, 49, 16)
        >>> o = sparse_attention(q, k, v, pattern=Pattern("local", window=4), hw=(7, 7),
        ...                      local_heads=2)
        >>> tuple(o.shape)
        (2, 4, 49, 16)
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
    if not isinstance(pattern, Pattern):
        raise ValueError(f"pattern must be a kernels.Pattern; got {type(pattern).__name__}")
    _check_qkv(q, k, v)
    hw = check_hw(tuple(hw), q.shape[2])
    heads = q.shape[1]
    nl = heads if local_heads is None else local_heads
    if isinstance(nl, bool) or not isinstance(nl, int) or not 0 <= nl <= heads:
        raise ValueError(f"local_heads must be None or an int in [0, {heads}]; got {local_heads!r}")
    if impl in _PARTITION and pattern.kind not in (_PARTITION[impl][0], "dense"):
        raise ValueError(f"impl={impl!r} computes pattern kind {_PARTITION[impl][0]!r}; got kind "
                         f"{pattern.kind!r} (use impl='auto', 'sdpa_mask', 'flex' or 'reference')")
    if impl == "reference":
        return _reference(q, k, v, pattern, hw, nl)
    if nl == 0 or is_dense(pattern, hw):
        return _dense(q, k, v)
    if impl == "auto":
        impl = auto_impl(pattern, hw, q.device)
    if nl == heads:
        return _patterned(impl, q, k, v, pattern, hw)
    local = _patterned(impl, q[:, :nl], k[:, :nl], v[:, :nl], pattern, hw)
    return torch.cat([local, _dense(q[:, nl:], k[:, nl:], v[:, nl:])], dim=1)


def _phi(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1`` as ``max(x, 0) + exp(min(x, 0))``: same values, and 10x faster on
    CPU than ``F.elu``, whose ``expm1`` is not vectorised there."""
    x = x.float()
    return x.clamp(min=0) + torch.exp(x.clamp(max=0))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, eps: float = 1e-6,
                     impl: str = "auto") -> torch.Tensor:
    """Non-causal kernelised linear attention with ``phi(x) = elu(x) + 1``.

    ``out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j) + eps)``,
    accumulated in fp32 and returned in the dtype of ``v``.

    Args:
        q: queries ``(B, h, Nq, d)``.
        k: keys ``(B, h, N, d)``.
        v: values ``(B, h, N, dv)``.
        eps: added to the normaliser, ``>= 0``.
        impl: ``"reference"`` (explicit ``(Nq, N)`` kernel matrix), ``"linear"``
            (``O(N d dv)``: keys and values summarised first) or ``"auto"`` (= ``"linear"``).

    Example:
        >>> q = k = v = torch.randn(1, 2, 196, 32)
        >>> tuple(linear_attention(q, k, v).shape)
        (1, 2, 196, 32)
    """
    if impl not in LINEAR_IMPLS:
        raise ValueError(f"impl must be one of {', '.join(LINEAR_IMPLS)}; got {impl!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be a number >= 0; got {eps!r}")
    _check_qkv(q, k, v, same_n=False)
    fq, fk, fv = _phi(q), _phi(k), v.float()
    if impl == "reference":
        a = fq @ fk.transpose(-2, -1)
        out = (a @ fv) / (a.sum(dim=-1, keepdim=True) + eps)
    else:
        kv = fk.transpose(-2, -1) @ fv  # (B, h, d, dv)
        z = fk.sum(dim=-2).unsqueeze(-1)  # (B, h, d, 1)
        out = (fq @ kv) / (fq @ z + eps)
    return out.to(v.dtype)
