"""From a dataset to model input: fixed subsets, whole-split tensors and seeded loaders."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nas.data.base import InMemoryDataset
from nas.errors import DataError

__all__ = ["subset_indices", "to_tensors", "make_loader"]


def subset_indices(n: int, limit: int) -> Tensor:
    """The items a ``limit_train`` / ``limit_val`` of ``limit`` keeps out of ``n``.

    All of them when ``limit`` is 0 or at least ``n``; else a fixed random subset
    (seed 0, in item order), the same in every run and every stage, so that a subset of
    a class-sorted folder keeps every class in proportion.

    Example:
        >>> subset_indices(10, 0).tolist(), len(subset_indices(10, 4))
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    """
    if not limit or limit >= n:
        return torch.arange(n)
    picked = np.sort(np.random.default_rng(0).permutation(n)[:limit])
    return torch.from_numpy(picked)


def to_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """Return the whole dataset as ``(X float32 (N, 3, S, S), y int64 (N,))``.

    In-memory datasets (digits, CIFAR-10) convert in one vectorised step; for digits
    ``X`` is a channel-expanded view, so index it (``X[idx]``) rather than writing to
    it. Any other dataset is read item by item, so keep this to small ones.
    """
    if isinstance(dataset, InMemoryDataset):
        return dataset.tensors()
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("cannot stack an empty dataset")
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    images = torch.stack([x for x, _ in items]).float()
    labels = torch.as_tensor([int(y) for _, y in items], dtype=torch.int64)
    return images, labels


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool,
                generator: torch.Generator | None, num_workers: int = 0) -> DataLoader:
    """A ``DataLoader`` whose shuffling (and worker seeds) come from ``generator``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise DataError(f"num_workers must be a non-negative int, got {num_workers!r}")
    if shuffle and generator is None:
        raise DataError("shuffle=True needs a seeded torch.Generator (generator=None given)")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=torch.cuda.is_available())
