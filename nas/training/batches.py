"""Training batches: a shared seeded shuffle, one shard of each global batch per worker.

Every worker draws the same permutation from the shared shuffle generator, cuts it
into global batches (the last partial one is dropped) and keeps its own contiguous
shard of each, so N workers together see exactly what one process sees. In-memory
datasets (digits, decoded image folders, CIFAR batches) are indexed as stored tensors
and prepared one batch at a time; any other dataset is read through
:func:`nas.data.make_loader` over the shard's indices.
Augmentation (:func:`nas.data.augment_batch`) uses a per-epoch, per-worker generator
derived from the run seed, so it needs no state in the checkpoint.

Example:
    >>> batches = TrainBatches(cfg, image_size=32)  # doctest: +SKIP
    >>> for x, y in batches.epoch(shuffle_gen, epoch=0): ...  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Subset

from nas.arch import Arch
from nas.data import augment_batch, load_dataset, make_loader, subset_indices
from nas.errors import DataError
from nas.training.config import TrainConfig

__all__ = ["TrainBatches", "derived_generator", "fit_resolution"]


def derived_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, *keys)`` via numpy's SeedSequence."""
    value = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(value))


def fit_resolution(x: Tensor, arch: Arch) -> Tensor:
    """Resize a batch to the arch's input resolution (a no-op when it already matches)."""
    if x.shape[-1] == arch.resolution and x.shape[-2] == arch.resolution:
        return x
    return F.interpolate(x, size=(arch.resolution, arch.resolution), mode="bilinear",
                         align_corners=False, antialias=True)


class TrainBatches:
    """The training split of ``cfg.data`` as sharded, augmented global batches.

    Args:
        cfg: the run config (``data``, ``batch_size``, ``limit_train``, ``max_shift``, ``seed``).
        image_size: side of the loaded images (the space's largest resolution).
        rank: this worker's index.
        world: number of workers.
    """

    def __init__(self, cfg: TrainConfig, *, image_size: int, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        dataset = load_dataset(cfg.data, split="train", image_size=image_size)
        self.index = subset_indices(len(dataset), cfg.limit_train)
        n = len(self.index)
        if n < world:
            raise DataError(f"{cfg.data}: {n} training images cannot be split over {world} workers")
        self.n = n
        self.local_batch = max(1, min(cfg.batch_size, n) // world)
        self.global_batch = self.local_batch * world
        self.steps_per_epoch = n // self.global_batch
        self.dataset = dataset

    def _order(self, shuffle_gen: torch.Generator) -> Tensor:
        """This worker's indices for one epoch, ``steps_per_epoch * local_batch`` of them."""
        perm = torch.randperm(self.n, generator=shuffle_gen)
        used = self.index[perm[: self.steps_per_epoch * self.global_batch]]
        per_step = used.view(self.steps_per_epoch, self.world, self.local_batch)
        return per_step[:, self.rank].reshape(-1)

    def epoch(self, shuffle_gen: torch.Generator, *, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(images, labels)`` shards (on CPU) for one epoch.

        The permutation is drawn from ``shuffle_gen`` before the first batch, so the
        generator's state after the call does not depend on how far it is iterated.
        """
        order = self._order(shuffle_gen)
        aug = derived_generator(self.cfg.seed, epoch, self.rank)
        if hasattr(self.dataset, "batch"):  # in memory: index, then prepare the batch
            batches = (self.dataset.batch(idx) for idx in order.split(self.local_batch))
        else:
            batches = make_loader(Subset(self.dataset, order.tolist()),
                                  batch_size=self.local_batch, shuffle=False, generator=None)
        for x, y in batches:
            yield augment_batch(x, generator=aug, max_shift=self.cfg.max_shift,
                                hflip=self.cfg.hflip), y
