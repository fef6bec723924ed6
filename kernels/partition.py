"""Partition fast paths: gather each attention group into a dense tile, then run SDPA.

Every sparse pattern of :mod:`nas.kernels.patterns` except ``dense`` is a union of
independent groups of tokens, so it can be computed as a batch of small dense
attentions over permuted (and zero-padded) tokens, with a key mask only where the
padding needs one:

* ``window`` (``local``): Swin window partition (Liu et al., ICCV 2021). The grid is
  padded at the bottom/right up to a multiple of the window and cut into windows.
  Shifted windows use Swin's cyclic shift: the padded grid is rolled by
  ``window // 2`` so every shifted window lies inside one tile (the first tile holds
  the first and the wrapped-around last window of each axis), and a per-tile mask
  built from the pattern's group ids keeps them apart. This needs as few tiles as the
  unshifted case, instead of one extra row and column of tiles.
* ``grid`` (``dilated``): MaxViT grid partition (Tu et al., ECCV 2022): the grid is
  padded to ``d * ceil(H / d)`` rows (same for columns) and strided by the dilation.
* ``block`` (``block``): query blocks with the same residue modulo the stride attend
  exactly the key blocks of that residue plus block 0, so each residue class is one
  tile whose keys are its own blocks and a copy of block 0 (masked for residue 0,
  which already holds block 0).

Each function takes ``q, k: (B, h, N, dqk)``, ``v: (B, h, N, dv)`` and returns
``(B, h, N, dv)``; heads are folded into the batch. Padded queries are computed and
dropped; every padded query still sees at least one real key, so no row is all-masked
(which would give NaN gradients).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from nas.kernels.patterns import Pattern, block_stride, group_ids, local_axis

__all__ = ["window_attention", "grid_attention", "block_attention"]


class _Layout(NamedTuple):
    """How a grid padded by ``bottom`` rows and ``right`` columns is split into groups.

    Rows are viewed as ``(r_outer, r_inner)`` and columns as ``(c_outer, c_inner)``;
    ``group_outer`` says whether the group index is the outer factor (windows) or the
    inner one (dilated grid). The padded grid is rolled by ``roll`` before the split.
    """

    bottom: int
    right: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    group_outer: bool
    roll: tuple[int, int] = (0, 0)


def _window_layout(pattern: Pattern, hw: tuple[int, int]) -> _Layout:
    h, w = hw
    wh, oh = local_axis(h, pattern.window, pattern.shift)
    ww, ow = local_axis(w, pattern.window, pattern.shift)
    nh, nw = math.ceil(h / wh), math.ceil(w / ww)
    return _Layout(nh * wh - h, nw * ww - w, (nh, wh), (nw, ww), True, (oh, ow))


def _grid_layout(pattern: Pattern, hw: tuple[int, int]) -> _Layout:
    h, w = hw
    dh, dw = math.ceil(h / pattern.window), math.ceil(w / pattern.window)
    gh, gw = math.ceil(h / dh), math.ceil(w / dw)
    return _Layout(dh * gh - h, dw * gw - w, (gh, dh), (gw, dw), False)


def _perm(lay: _Layout) -> tuple[int, ...]:
    # view: (BL, r_outer, r_inner, c_outer, c_inner, d) -> (BL, groups..., tokens..., d)
    return (0, 1, 3, 2, 4, 5) if lay.group_outer else (0, 2, 4, 1, 3, 5)


def _split(x: torch.Tensor, hw: tuple[int, int], lay: _Layout, fill=0) -> torch.Tensor:
    """``(B, h, N, d) -> (B*h, groups, tokens, d)``; padding takes the value ``fill``."""
    b, nh, _, d = x.shape
    x = x.reshape(b * nh, hw[0], hw[1], d)
    if lay.bottom or lay.right:
        x = F.pad(x, (0, 0, 0, lay.right, 0, lay.bottom), value=fill)
    if lay.roll != (0, 0):
        x = torch.roll(x, shifts=lay.roll, dims=(1, 2))
    x = x.view(b * nh, *lay.rows, *lay.cols, d).permute(_perm(lay))
    groups = lay.rows[0] * lay.cols[0] if lay.group_outer else lay.rows[1] * lay.cols[1]
    return x.reshape(b * nh, groups, -1, d)


def _merge(o: torch.Tensor, b: int, hw: tuple[int, int], lay: _Layout) -> torch.Tensor:
    """Inverse of :func:`_split`: ``(B*h, groups, tokens, d) -> (B, h, N, d)``."""
    bh, d = o.shape[0], o.shape[-1]
    (ro, ri), (co, ci) = lay.rows, lay.cols
    if lay.group_outer:
        o = o.view(bh, ro, co, ri, ci, d).permute(0, 1, 3, 2, 4, 5)
    else:
        o = o.view(bh, ri, ci, ro, co, d).permute(0, 3, 1, 4, 2, 5)
    o = o.reshape(bh, ro * ri, co * ci, d)
    if lay.roll != (0, 0):
        o = torch.roll(o, shifts=(-lay.roll[0], -lay.roll[1]), dims=(1, 2))
    o = o[:, :hw[0], :hw[1]]
    return o.reshape(b, bh // b, hw[0] * hw[1], d)


@functools.lru_cache(maxsize=64)
def _tile_mask(pattern: Pattern, hw: tuple[int, int], lay: _Layout,
               device: torch.device) -> torch.Tensor | None:
    """SDPA mask of the tiles, or None when every tile is one whole group.

    Without a roll, only padded keys are masked: ``(1, groups, 1, tokens)``. With a
    roll, a tile may hold several groups: ``(1, groups, tokens, tokens)`` from the group
    ids, where padded queries (dropped later) may attend anything so no row is empty.
    """
    if lay.roll == (0, 0):
        if not (lay.bottom or lay.right):
            return None
        real = torch.ones(1, 1, hw[0] * hw[1], 1, dtype=torch.bool, device=device)
        return _split(real, hw, lay, fill=False).squeeze(-1).unsqueeze(2)
    ids = group_ids(pattern, hw, device).view(1, 1, -1, 1)
    ids = _split(ids, hw, lay, fill=-1).squeeze(-1)  # (1, groups, tokens)
    same = (ids.unsqueeze(-1) == ids.unsqueeze(-2)) & (ids.unsqueeze(-2) >= 0)
    return same | (ids.unsqueeze(-1) < 0)


def _grouped(q, k, v, pattern: Pattern, hw, lay: _Layout) -> torch.Tensor:
    mask = _tile_mask(pattern, hw, lay, q.device)
    o = F.scaled_dot_product_attention(_split(q, hw, lay), _split(k, hw, lay), _split(v, hw, lay),
                                       attn_mask=mask)
    return _merge(o, q.shape[0], hw, lay)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, pattern: Pattern,
                     hw: tuple[int, int]) -> torch.Tensor:
    """``local`` pattern by window partition (+ padding and cyclic shift, masked as needed)."""
    return _grouped(q, k, v, pattern, hw, _window_layout(pattern, hw))


def grid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, pattern: Pattern,
                   hw: tuple[int, int]) -> torch.Tensor:
    """``dilated`` pattern by MaxViT grid partition (+ padding, + key mask when padded)."""
    return _grouped(q, k, v, pattern, hw, _grid_layout(pattern, hw))


@functools.lru_cache(maxsize=64)
def _block_key_mask(n: int, b: int, s: int, m: int, device: torch.device) -> torch.Tensor:
    """``(1, s, 1, (m + 1) * b)``: real keys of each residue tile; its block-0 copy is last."""
    pos = torch.arange(m * s * b, device=device).view(m, s, b).transpose(0, 1).reshape(s, m * b)
    extra = torch.ones(s, b, dtype=torch.bool, device=device)
    extra[0] = False  # residue 0 already holds block 0
    return torch.cat([pos < n, extra], dim=1)[None, :, None, :]


def _block_split(x: torch.Tensor, n: int, b: int, s: int, m: int) -> torch.Tensor:
    bh, d = x.shape[0] * x.shape[1], x.shape[-1]
    x = x.reshape(bh, n, d)
    if m * s * b > n:
        x = F.pad(x, (0, 0, 0, m * s * b - n))
    return x.view(bh, m, s, b, d).transpose(1, 2).reshape(bh, s, m * b, d)


def block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, pattern: Pattern,
                    hw: tuple[int, int]) -> torch.Tensor:
    """``block`` pattern: one tile per residue class of query blocks modulo the stride."""
    bsz, nh, n, dv = v.shape
    b, nb, s = block_stride(pattern, n)
    m = math.ceil(nb / s)
    qs = _block_split(q, n, b, s, m)
    ks, vs = _block_split(k, n, b, s, m), _block_split(v, n, b, s, m)
    # append block 0 (always complete when s > 1, since then nb >= 2) to every tile's keys
    ks = torch.cat([ks, ks[:, :1, :b].expand(-1, s, -1, -1)], dim=2)
    vs = torch.cat([vs, vs[:, :1, :b].expand(-1, s, -1, -1)], dim=2)
    o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=_block_key_mask(n, b, s, m, q.device))
    o = o.view(bsz * nh, s, m, b, dv).transpose(1, 2).reshape(bsz * nh, m * s * b, dv)
    return o[:, :n].reshape(bsz, nh, n, dv)
