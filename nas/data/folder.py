"""``imagefolder:PATH``: class sub-folders of images, decoded once into a uint8 cache.

``PATH/train/<class>/*`` and ``PATH/val/<class>/*``, or a single ``PATH/<class>/*``
tree split 90/10 per class by sorted file name; ``PATH`` may also be a
``.tar``/``.tar.gz``/``.tar.xz`` archive of either. Decoding and the on-disk cache are
:mod:`nas.imagecache`'s; the images are held in memory and ImageNet-normalised.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from nas.data.base import ClassificationDataset, InMemoryDataset, normalise
from nas.data.registry import register_dataset
from nas.imagecache import load_image_cache

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _ImageFolderDataset(InMemoryDataset):
    """Decoded uint8 ``(N, 3, S, S)`` images (see :mod:`nas.imagecache`), ImageNet-normalised."""

    def _prepare(self, batch: Tensor) -> Tensor:
        return normalise(batch.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)


@register_dataset("imagefolder", takes_path=True)
def _build_imagefolder(path: Path | None, split: str, image_size: int) -> ClassificationDataset:
    assert path is not None
    cache = load_image_cache(path, image_size)
    images, labels = cache.splits[split]
    return _ImageFolderDataset(base=images, classes=cache.classes, targets=labels,
                               image_size=image_size)
