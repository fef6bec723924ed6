"""``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, no download).

Upscaled once and held in memory; a fixed stratified 80/20 split without an RNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.data.base import ClassificationDataset, InMemoryDataset
from nas.data.registry import register_dataset

__all__ = ["DIGITS_MEAN", "DIGITS_STD"]

# Mean/std of sklearn's digits scaled to [0, 1] (all pixels of the 8x8 images).
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760


class _DigitsDataset(InMemoryDataset):
    """Grey digits stored once at ``(N, 1, S, S)``; items expand them to 3 channels (a view)."""

    def __init__(self, *, indices: np.ndarray, base: Tensor, targets: Tensor, image_size: int):
        super().__init__(base=base, classes=[str(i) for i in range(10)], targets=targets,
                         image_size=image_size)
        self.indices = indices  # positions in sklearn's load_digits order

    def _prepare(self, batch: Tensor) -> Tensor:
        return batch.expand(-1, 3, -1, -1)


def _digits_split(targets: np.ndarray, split: str) -> np.ndarray:
    """Fixed stratified 80/20 split without an RNG: every 5th image of each class is val."""
    picked = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        is_val = np.arange(len(members)) % 5 == 4
        picked.append(members[is_val] if split == "val" else members[~is_val])
    return np.sort(np.concatenate(picked))


@register_dataset("digits", takes_path=False)
def _build_digits(path: Path | None, split: str, image_size: int) -> ClassificationDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    indices = _digits_split(bunch.target, split)
    pixels = torch.from_numpy(bunch.data[indices] / 16.0).float().view(-1, 1, 8, 8)
    pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear",
                           align_corners=False)
    base = ((pixels - DIGITS_MEAN) / DIGITS_STD).contiguous()
    targets = torch.from_numpy(bunch.target[indices].astype(np.int64))
    return _DigitsDataset(indices=indices, base=base, targets=targets, image_size=image_size)
