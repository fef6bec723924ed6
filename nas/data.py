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

Example:
    >>> ds = load_dataset("digits", split="train", image_size=32)
    >>> x, y = to_tensors(ds)
    >>> tuple(x.shape), ds.num_classes
    ((1442, 3, 32, 32), 10)
    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(x[:8], generator=g, max_shift=4).shape
    torch.Size([8, 3, 32, 32])
"""
from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nas.errors import DataError
from nas.imagecache import IMAGE_EXTENSIONS, load_image_cache

__all__ = [
    "DATASETS", "SPLITS", "IMAGE_EXTENSIONS", "DataSpec", "DatasetKind", "ClassificationDataset",
    "parse_data_spec", "register_dataset", "load_dataset", "to_tensors", "make_loader",
    "augment_batch", "shifted_views", "check_views", "VIEW_SHIFTS", "subset_indices",
]

SPLITS = ("train", "val")

# Mean/std of sklearn's digits scaled to [0, 1] (all pixels of the 8x8 images).
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# ----------------------------------------------------------------------------- specs, registry


@dataclass(frozen=True)
class DataSpec:
    """A parsed dataset spec: the registered ``kind`` and its ``path`` (or None)."""

    kind: str
    path: str | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


Builder = Callable[[Path | None, str, int], "ClassificationDataset"]


@dataclass(frozen=True)
class DatasetKind:
    """A registered dataset kind: whether its spec takes a path, and its builder.

    The builder is called as ``build(path, split, image_size)``.
    """

    name: str
    takes_path: bool
    build: Builder

    @property
    def usage(self) -> str:
        return f"{self.name}:PATH" if self.takes_path else self.name


DATASETS: dict[str, DatasetKind] = {}


def register_dataset(name: str, *, takes_path: bool) -> Callable[[Builder], Builder]:
    """Decorator registering ``build(path, split, image_size)`` as dataset kind ``name``."""

    def decorate(build: Builder) -> Builder:
        if name in DATASETS:
            raise DataError(f"dataset kind {name!r} is already registered")
        if not name or ":" in name:
            raise DataError(f"dataset kind must be a non-empty name without ':', got {name!r}")
        DATASETS[name] = DatasetKind(name=name, takes_path=takes_path, build=build)
        return build

    return decorate


def _valid_kinds() -> str:
    return ", ".join(DATASETS[k].usage for k in sorted(DATASETS))


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``"digits"``, ``"imagefolder:PATH"`` or ``"cifar10:PATH"`` into a :class:`DataSpec`.

    Example:
        >>> parse_data_spec("cifar10:/data/cifar")
        DataSpec(kind='cifar10', path='/data/cifar')
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"dataset spec must be a non-empty string; valid: {_valid_kinds()}")
    kind, sep, path = spec.strip().partition(":")
    if kind not in DATASETS:
        raise DataError(f"unknown dataset kind {kind!r} in {spec!r}; valid: {_valid_kinds()}")
    entry = DATASETS[kind]
    if entry.takes_path and not path:
        raise DataError(f"dataset spec {spec!r} needs a path: use {entry.usage}")
    if not entry.takes_path and sep:
        raise DataError(f"dataset {kind!r} takes no path, got {spec!r}: use {entry.usage}")
    return DataSpec(kind=kind, path=path if entry.takes_path else None)


def load_dataset(spec: str | DataSpec, *, split: str, image_size: int) -> ClassificationDataset:
    """Load one split of the dataset named by ``spec``, un-augmented.

    Args:
        spec: ``"digits"``, ``"imagefolder:PATH"``, ``"cifar10:PATH"`` or a :class:`DataSpec`.
        split: ``"train"`` or ``"val"``.
        image_size: side length S of the square ``(3, S, S)`` images.

    Example:
        >>> ds = load_dataset("digits", split="val", image_size=16)
        >>> len(ds), ds.classes[:3], ds[0][0].shape
        (355, ['0', '1', '2'], torch.Size([3, 16, 16]))
    """
    parsed = parse_data_spec(str(spec))  # re-checks a hand-made DataSpec too
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive int, got {image_size!r}")
    path = None if parsed.path is None else Path(parsed.path).expanduser()
    return DATASETS[parsed.kind].build(path, split, image_size)


# ----------------------------------------------------------------------------- dataset bases


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


class _InMemoryDataset(ClassificationDataset):
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


def _normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _resize(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# ----------------------------------------------------------------------------- digits


class _DigitsDataset(_InMemoryDataset):
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


# ----------------------------------------------------------------------------- image folders


class _ImageFolderDataset(_InMemoryDataset):
    """Decoded uint8 ``(N, 3, S, S)`` images (see :mod:`nas.imagecache`), ImageNet-normalised."""

    def _prepare(self, batch: Tensor) -> Tensor:
        return _normalise(batch.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)


@register_dataset("imagefolder", takes_path=True)
def _build_imagefolder(path: Path | None, split: str, image_size: int) -> ClassificationDataset:
    assert path is not None
    cache = load_image_cache(path, image_size)
    images, labels = cache.splits[split]
    return _ImageFolderDataset(base=images, classes=cache.classes, targets=labels,
                               image_size=image_size)


# ----------------------------------------------------------------------------- CIFAR-10


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``codecs.encode`` as pickled byte strings use it, refusing any other codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"refusing to decode pickled bytes with codec {encoding!r}")
    return codecs.encode(text, encoding)


def _allowed_pickle_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch may reference: numpy array reconstruction."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,  # protocol <= 2 pickles store bytes this way
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles
            allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, *, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _allowed_pickle_globals()

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._allowed:
            raise DataError(f"refusing to load {self._path}: it references {module}.{name} "
                            "which is not allowed")
        return self._allowed[(module, name)]


def _read_batch_pickle(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            obj = _NumpyOnlyUnpickler(f, path=path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError, MemoryError, OverflowError,
            RecursionError) as e:
        raise DataError(f"cannot read {path}: corrupted or not a CIFAR pickle "
                        f"({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_root(path: Path) -> Path:
    if not path.is_dir():
        raise DataError(f"dataset path not found: {path}")
    nested = path / "cifar-10-batches-py"
    return nested if nested.is_dir() and not (path / "batches.meta").exists() else path


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_batch_pickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{path}: missing key {key!r} (has {sorted(batch)})")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be uint8 of shape (n, 3072), got {got}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be {len(data)} ints, got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in [0, {num_classes}), "
                        f"got [{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


class _Cifar10Dataset(_InMemoryDataset):
    """uint8 ``(N, 3, 32, 32)`` images; items are scaled, resized and normalised on access."""

    def _prepare(self, batch: Tensor) -> Tensor:
        x = _resize(batch.float() / 255.0, self.image_size)
        return _normalise(x, CIFAR10_MEAN, CIFAR10_STD)


CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_VAL_FILES = ("test_batch",)


@register_dataset("cifar10", takes_path=True)
def _build_cifar10(path: Path | None, split: str, image_size: int) -> ClassificationDataset:
    assert path is not None
    root = _cifar_root(path)
    for name in ("batches.meta", *CIFAR10_TRAIN_FILES, *CIFAR10_VAL_FILES):
        if not (root / name).is_file():
            raise DataError(f"CIFAR-10 file missing: {root / name}")
    meta = _read_batch_pickle(root / "batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{root / 'batches.meta'}: 'label_names' must list 10 class names")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    files = CIFAR10_TRAIN_FILES if split == "train" else CIFAR10_VAL_FILES
    parts = [_read_cifar_batch(root / name, len(classes)) for name in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    targets = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return _Cifar10Dataset(base=images, classes=classes, targets=targets, image_size=image_size)


# ----------------------------------------------------------------------------- batches


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
    if isinstance(dataset, _InMemoryDataset):
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
