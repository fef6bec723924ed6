"""The base of every dataset: ``(float32 (3, S, S) image, int64 label)`` items, held in memory."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ClassificationDataset"]


class ClassificationDataset(Dataset):
    """Base of every dataset here: items are ``(float32 (3, S, S) image, int64 label)``.

    Attributes:
        classes: class names; label ``i`` is ``classes[i]``.
        num_classes: ``len(classes)``.
        in_chans: image channels, always 3.
        targets: int64 tensor of every item's label, in item order.
    """

    in_chans = 3

    def __init__(self, *, classes: list[str], targets: Tensor, image_size: int) -> None:
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.targets = targets.to(torch.int64)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.targets)


class InMemoryDataset(ClassificationDataset):
    """A dataset held as one tensor; ``_prepare`` turns a stored batch into model input."""

    def __init__(self, *, base: Tensor, classes: list[str], targets: Tensor, image_size: int):
        super().__init__(classes=classes, targets=targets, image_size=image_size)
        assert len(base) == len(targets)
        self._base = base

    def _prepare(self, batch: Tensor) -> Tensor:
        """Stored batch -> model input; the stored tensors are model input unless overridden."""
        return batch

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._prepare(self._base[index].unsqueeze(0))[0], self.targets[index]

    def tensors(self) -> tuple[Tensor, Tensor]:
        return self._prepare(self._base), self.targets.clone()

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Items ``index`` as model input: the stored batch prepared in one step."""
        return self._prepare(self._base[index]), self.targets[index]


def normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Per-channel ``(x - mean) / std`` of a ``(B, C, H, W)`` batch."""
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def resize(x: Tensor, size: int) -> Tensor:
    """A ``(B, C, H, W)`` batch resized to ``size x size`` (antialiased bilinear; no-op if equal)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
