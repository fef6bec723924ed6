"""Sparse attention patterns over a token grid, and their reference boolean masks.

Tokens are always a sequence of ``N = H * W`` entries in row-major order of the grid
``hw = (H, W)``. A :class:`Pattern` says which keys each query may attend:

* ``dense``: every key (ViT, Dosovitskiy et al., ICLR 2021).
* ``local``: non-overlapping ``window x window`` windows (Swin, Liu et al., ICCV 2021),
  optionally shifted by ``window // 2``. The grid is conceptually padded up to a
  multiple of the window; padded tokens do not exist, so edge windows are smaller.
  Shifted windows do *not* wrap around cyclically: the window of row ``r`` is
  ``(r + window // 2) // window``. An axis not longer than the window is a single
  window along that axis and is never shifted (as timm's Swin does per axis), so a
  window covering the whole grid is dense attention.
* ``dilated``: MaxViT "grid" attention (Tu et al., ECCV 2022). With dilations
  ``d_h = ceil(H / window)`` and ``d_w = ceil(W / window)``, tokens ``(r, c)`` and
  ``(r', c')`` share a group iff ``r % d_h == r' % d_h`` and ``c % d_w == c' % d_w``;
  every group holds at most ``window x window`` tokens spread over the whole image.
* ``block``: deterministic block-sparse attention in the spirit of BigBird (Zaheer et
  al., NeurIPS 2020). The sequence is cut in blocks of ``b = window * window``
  consecutive tokens (the last may be shorter); with stride
  ``s = max(1, round(1 / density))`` (Python ``round``), query block ``i`` attends key
  block ``j`` iff ``j == i`` or ``j == 0`` (a global block) or ``(i - j) % s == 0``.
  Only the sequence order matters, so the pattern also works on grid-free tokens.

:func:`pattern_mask` materialises the ``(N, N)`` mask; it is the reference every fast
path in :mod:`nas.kernels.attention` is tested against.

Example:
    >>> m = pattern_mask(Pattern("local", window=2), (4, 4))
    >>> int(m.sum())  # four 2x2 windows, 4 x 4 pairs each
    64
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

__all__ = ["PATTERNS", "Pattern", "pattern_mask", "is_dense", "group_ids", "block_stride"]

PATTERNS = ("dense", "local", "dilated", "block")


@dataclass(frozen=True)
class Pattern:
    """Which keys a query may attend (see the module docstring for the exact rules).

    Args:
        kind: one of :data:`PATTERNS`.
        window: window side for ``local`` / ``dilated``; block side (``window**2``
            tokens per block) for ``block``. A positive int.
        shift: shift the windows by ``window // 2`` (``local`` only).
        density: fraction of key blocks a query block attends, in ``(0, 1]``
            (``block`` only; 1.0 is dense).
    """

    kind: str
    window: int = 7
    shift: bool = False
    density: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in PATTERNS:
            raise ValueError(f"Pattern.kind must be one of {', '.join(PATTERNS)}; got {self.kind!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"Pattern.window must be an int >= 1; got {self.window!r}")
        if not isinstance(self.shift, bool):
            raise ValueError(f"Pattern.shift must be True or False; got {self.shift!r}")
        if self.shift and self.kind != "local":
            raise ValueError(f"Pattern.shift=True is only allowed for kind 'local'; got kind {self.kind!r}")
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)) \
                or not 0.0 < self.density <= 1.0:
            raise ValueError(f"Pattern.density must be a float in (0, 1]; got {self.density!r}")
        if self.density != 1.0 and self.kind != "block":
            raise ValueError(f"Pattern.density != 1.0 is only allowed for kind 'block'; "
                             f"got kind {self.kind!r} with density {self.density!r}")


def check_hw(hw: tuple[int, int], n: int | None = None) -> tuple[int, int]:
    """Validate a grid ``(H, W)`` (and that ``H * W == n`` when ``n`` is given)."""
    if len(hw) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                           for s in hw):
        raise ValueError(f"hw must be a pair of ints >= 1 (H, W); got {hw!r}")
    if n is not None and hw[0] * hw[1] != n:
        raise ValueError(f"hw={tuple(hw)} has {hw[0] * hw[1]} tokens but the input has N={n}")
    return int(hw[0]), int(hw[1])


def local_axis(length: int, window: int, shift: bool) -> tuple[int, int]:
    """Window size and leading offset of a ``local`` pattern along one grid axis."""
    if length <= window:
        return length, 0
    return window, (window // 2 if shift else 0)


def block_stride(pattern: Pattern, n: int) -> tuple[int, int, int]:
    """``(block_size, n_blocks, stride)`` of a ``block`` pattern on ``n`` tokens.

    The stride is capped at the number of blocks: with ``s >= n_blocks`` the rule
    ``(i - j) % s == 0`` only ever holds for ``j == i``, exactly as with ``s == n_blocks``.
    """
    b = pattern.window * pattern.window
    nb = math.ceil(n / b)
    return b, nb, min(max(1, round(1.0 / pattern.density)), nb)


def is_dense(pattern: Pattern, hw: tuple[int, int]) -> bool:
    """True when ``pattern`` lets every query attend every key on grid ``hw``."""
    h, w = hw
    if pattern.kind == "dense":
        return True
    if pattern.kind in ("local", "dilated"):
        return pattern.window >= h and pattern.window >= w
    _, nb, s = block_stride(pattern, h * w)
    return s == 1


def group_ids(pattern: Pattern, hw: tuple[int, int], device=None) -> torch.Tensor:
    """Group id of every token (``(N,)`` long) for ``local`` / ``dilated`` patterns.

    Two tokens may attend each other iff they have the same id.
    """
    h, w = check_hw(hw)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    if pattern.kind == "local":
        wh, oh = local_axis(h, pattern.window, pattern.shift)
        ww, ow = local_axis(w, pattern.window, pattern.shift)
        rid, cid = (rows + oh) // wh, (cols + ow) // ww
        ncols = (w + ow + ww - 1) // ww
    elif pattern.kind == "dilated":
        dh, dw = math.ceil(h / pattern.window), math.ceil(w / pattern.window)
        rid, cid, ncols = rows % dh, cols % dw, dw
    else:
        raise ValueError(f"group_ids needs kind 'local' or 'dilated'; got {pattern.kind!r}")
    return (rid[:, None] * ncols + cid[None, :]).reshape(-1)


def pattern_mask(pattern: Pattern, hw: tuple[int, int], device=None) -> torch.Tensor:
    """Reference boolean mask ``(N, N)``: ``True`` where query ``i`` may attend key ``j``.

    Args:
        pattern: the sparse pattern.
        hw: token grid ``(H, W)``; ``N = H * W`` tokens in row-major order.
        device: device of the returned mask.

    Example:
        >>> pattern_mask(Pattern("block", window=1, density=0.5), (1, 3)).int().tolist()
        [[1, 0, 1], [1, 1, 0], [1, 0, 1]]
    """
    if not isinstance(pattern, Pattern):
        raise ValueError(f"pattern must be a kernels.Pattern; got {type(pattern).__name__}")
    h, w = check_hw(hw)
    n = h * w
    if pattern.kind == "dense":
        return torch.ones(n, n, dtype=torch.bool, device=device)
    if pattern.kind in ("local", "dilated"):
        g = group_ids(pattern, hw, device)
        return g[:, None] == g[None, :]
    b, _, s = block_stride(pattern, n)
    blk = torch.arange(n, device=device) // b
    qi, kj = blk[:, None], blk[None, :]
    return (kj == 0) | ((qi - kj) % s == 0)
