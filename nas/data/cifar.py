"""``cifar10:PATH``: the CIFAR-10 "python version" batches, read without running pickled code.

The batches are pickles; they are read with a restricted unpickler that only rebuilds
numpy arrays (any other global is refused with a :class:`~nas.errors.DataError`). The
uint8 images are held in memory and scaled, resized and normalised on access.
"""
from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nas.data.base import ClassificationDataset, InMemoryDataset, normalise, resize
from nas.data.registry import register_dataset
from nas.errors import DataError

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_TRAIN_FILES", "CIFAR10_VAL_FILES"]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


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


class _Cifar10Dataset(InMemoryDataset):
    """uint8 ``(N, 3, 32, 32)`` images; items are scaled, resized and normalised on access."""

    def _prepare(self, batch: Tensor) -> Tensor:
        x = resize(batch.float() / 255.0, self.image_size)
        return normalise(x, CIFAR10_MEAN, CIFAR10_STD)


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
