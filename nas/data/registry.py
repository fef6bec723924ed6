"""The dataset registry: spec strings (``KIND`` or ``KIND:PATH``), kinds and :func:`load_dataset`.

A dataset kind registers its builder with :func:`register_dataset`; the kinds shipped
(``digits``, ``imagefolder``, ``cifar10``) do so when :mod:`nas.data` is imported.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nas.errors import DataError

if TYPE_CHECKING:
    from nas.data.base import ClassificationDataset

__all__ = ["SPLITS", "DataSpec", "DatasetKind", "DATASETS", "register_dataset",
           "parse_data_spec", "load_dataset"]

SPLITS = ("train", "val")


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
