"""FlexAttention fast path: any pattern as a compiled ``BlockMask``.

Uses :func:`torch.nn.attention.flex_attention.flex_attention` (PyTorch >= 2.5,
"FlexAttention", Dong et al. 2024) with a ``mask_mod`` read from the same group / block
ids that define :func:`nas.kernels.patterns.pattern_mask`, so whole key tiles outside the
pattern are skipped. The kernel is compiled once per process (``torch.compile``);
compiling takes tens of seconds, so this path is opt-in (``impl="flex"``) and is not
picked by ``impl="auto"``.
"""
from __future__ import annotations

import functools

import torch

from nas.kernels.patterns import Pattern, block_stride, group_ids

__all__ = ["flex_available", "flex_sparse_attention"]

_TILE = 128  # FlexAttention's default sparse block size


def flex_available() -> bool:
    """Whether this PyTorch ships FlexAttention."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _padded(ids: torch.Tensor, fill: int) -> torch.Tensor:
    """Extend a lookup table past ``N`` so padded tile indices stay in bounds."""
    n = ids.shape[0]
    extra = -(-n // _TILE) * _TILE + _TILE - n
    return torch.cat([ids, ids.new_full((extra,), fill)])


@functools.lru_cache(maxsize=32)
def _block_mask(pattern: Pattern, hw: tuple[int, int], device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    n = hw[0] * hw[1]
    if pattern.kind in ("local", "dilated"):
        gid = _padded(group_ids(pattern, hw, device), -1)

        def mask_mod(b, h, qi, kj):
            return gid[qi] == gid[kj]
    elif pattern.kind == "block":
        b, nb, s = block_stride(pattern, n)
        blk = _padded(torch.arange(n, device=device) // b, nb)

        def mask_mod(b, h, qi, kj):
            return (blk[kj] == 0) | ((blk[qi] - blk[kj]) % s == 0)
    else:
        return None
    return create_block_mask(mask_mod, None, None, n, n, device=device)


def flex_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, pattern: Pattern,
                          hw: tuple[int, int]) -> torch.Tensor:
    """``pattern`` attention on all heads of ``q, k, v`` with compiled FlexAttention."""
    if not flex_available():
        raise ValueError("impl='flex' needs torch.nn.attention.flex_attention (PyTorch >= 2.5); "
                         "use impl='auto' instead")
    block_mask = _block_mask(pattern, tuple(hw), q.device)
    return _compiled_flex()(q, k, v, block_mask=block_mask, scale=q.shape[-1] ** -0.5)
