"""Datasets for search and training, chosen by a spec string: ``KIND`` or ``KIND:PATH``.

Three kinds are registered in :data:`DATASETS`:

* ``digits`` -- scikit-learn's bundled handwritten digits (1,797 real 8x8 images,
  no download), upscaled once and held in memory; a fixed stratified 80/20 split.
* ``imagefolder:PATH`` -- ``PATH/train/<class>/*`` and ``PATH/val/<class>/*``, or a
  single ``PATH/<class>/*`` tree split 90/10 per class by sorted file name; ``PATH``
  may also be a ``.tar``/``.tar.gz``/``.tar.xz`` archive of either. Decoded once into
  a uint8 cache on disk (:mod:`nas.imagecache`) and held in memory.
* ``cifar10:PATH`` -- the CIFAR-10 "python version" batches, read with a restricted
  unpickler that only rebuilds numpy arrays and never runs code from the file.

Every dataset yields ``(image, label)``: a normalised float32 ``(3, S, S)`` tensor and
an int64 label, and carries ``num_classes``, ``in_chans`` (always 3, grey images are
replicated) and ``classes``. Augmentation is not done per item: the trainer calls
:func:`augment_batch` on a batch with its own seeded ``torch.Generator``.

Layout: :mod:`~nas.data.registry` (specs, kinds, :func:`load_dataset`),
:mod:`~nas.data.base` (the dataset base classes), one module per kind
(:mod:`~nas.data.digits`, :mod:`~nas.data.folder`, :mod:`~nas.data.cifar`),
:mod:`~nas.data.loader` (tensors, subsets, loaders) and :mod:`~nas.data.augment`.

Example:
    >>> import torch
    >>> ds = load_dataset("digits", split="train", image_size=32)
    >>> x, y = to_tensors(ds)
    >>> tuple(x.shape), ds.num_classes
    ((1442, 3, 32, 32), 10)
    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(x[:8], generator=g, max_shift=4).shape
    torch.Size([8, 3, 32, 32])
"""
from __future__ import annotations

from nas.data.augment import VIEW_SHIFTS, augment_batch, check_views, shifted_views
from nas.data.base import ClassificationDataset

# isort: off
# Each kind module registers its kind in DATASETS on import, in this order.
from nas.data.digits import DIGITS_MEAN, DIGITS_STD
from nas.data.folder import IMAGENET_MEAN, IMAGENET_STD
from nas.data.cifar import CIFAR10_MEAN, CIFAR10_STD
# isort: on

from nas.data.loader import make_loader, subset_indices, to_tensors
from nas.data.registry import (
    DATASETS,
    SPLITS,
    DatasetKind,
    DataSpec,
    load_dataset,
    parse_data_spec,
    register_dataset,
)
from nas.imagecache import IMAGE_EXTENSIONS

__all__ = [
    "DATASETS", "SPLITS", "IMAGE_EXTENSIONS", "DataSpec", "DatasetKind", "ClassificationDataset",
    "parse_data_spec", "register_dataset", "load_dataset", "to_tensors", "make_loader",
    "augment_batch", "shifted_views", "check_views", "VIEW_SHIFTS", "subset_indices",
    "DIGITS_MEAN", "DIGITS_STD", "IMAGENET_MEAN", "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD",
]
