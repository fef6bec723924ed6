"""Batch augmentation and evaluation views, driven by a passed-in ``torch.Generator``.

Augmentation is not done per item: the trainer calls :func:`augment_batch` on a batch
with its own seeded generator. :func:`shifted_views` makes the deterministic shifted
copies that evaluation may average over.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.errors import DataError

__all__ = ["augment_batch", "VIEW_SHIFTS", "check_views", "shifted_views"]


def augment_batch(images: Tensor, *, generator: torch.Generator, max_shift: int,
                  hflip: bool = False) -> Tensor:
    """Randomly translate each image by up to ``max_shift`` pixels in x and y, and flip it.

    Each image is padded by ``max_shift`` on every side (repeating its border, so the
    fill is background whatever the normalisation) and a window of the original size
    is cropped at a per-image random offset: the standard CIFAR "pad 4 + random crop"
    with ``max_shift=4``. With ``hflip`` each image is also mirrored left-right with
    probability 1/2 (off by default: digits and text are chiral).

    Args:
        images: ``(B, C, H, W)`` batch on any device.
        generator: source of the offsets and flips; the same seed gives the same result.
        max_shift: largest shift in pixels; 0 shifts nothing.
        hflip: random horizontal flips.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> augment_batch(torch.randn(4, 3, 16, 16), generator=g, max_shift=2).shape
        torch.Size([4, 3, 16, 16])
    """
    if images.ndim != 4:
        raise DataError(f"augment_batch expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise DataError(f"max_shift must be a non-negative int, got {max_shift!r}")
    b, _, h, w = images.shape
    if max_shift == 0:
        out = images.clone()
    else:
        padded = F.pad(images, (max_shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator,
                                device=generator.device).to(images.device)
        rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # (B, H)
        cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # (B, W)
        batch = torch.arange(b, device=images.device)[:, None, None]
        # Advanced indices split by a slice put their dims first: (B, H, W, C).
        out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        out = out.contiguous()
    if hflip:
        flip = (torch.rand(b, generator=generator, device=generator.device) < 0.5)
        flip = flip.to(images.device)
        out[flip] = out[flip].flip(-1)
    return out


# (dx, dy) of the evaluation views: the image itself, then 1-pixel shifts.
VIEW_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1))


def check_views(views: int) -> None:
    """Raise :class:`DataError` unless ``views`` is a valid :func:`shifted_views` count."""
    if isinstance(views, bool) or not isinstance(views, int) or not 1 <= views <= len(VIEW_SHIFTS):
        raise DataError(f"views must be an integer in [1, {len(VIEW_SHIFTS)}], got {views!r}")


def shifted_views(images: Tensor, views: int) -> Tensor:
    """``views`` deterministic copies of a batch, concatenated: the images, then 1-pixel shifts.

    Scoring a subnet on every view (and averaging) measures its accuracy with less
    noise when the validation split is small: a borderline image counts as a
    fraction instead of all or nothing. View ``k`` of image ``i`` is row
    ``k * len(images) + i``; borders repeat as in :func:`augment_batch`.

    Example:
        >>> shifted_views(torch.zeros(4, 3, 8, 8), 5).shape
        torch.Size([20, 3, 8, 8])
    """
    if images.ndim != 4:
        raise DataError(f"shifted_views expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    check_views(views)
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return torch.cat([padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                      for dx, dy in VIEW_SHIFTS[:views]])
