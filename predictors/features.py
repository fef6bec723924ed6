"""Architecture features for the predictors: cached encodings and complexity.

:class:`ArchEncoder` turns archs into the fixed-length vectors of
:func:`nas.arch.encode_arch` (one-hot categoricals, rank-scaled numbers), caching
each arch's vector in an LRU dict: a search re-scores the same archs many times,
and ``encode_arch`` is per-arch Python. Optional complexity features are
``log(params)`` and ``log(MACs)`` from :mod:`nas.complexity`, also cached; they cost
a meta-device model build per new arch, so they are off by default.

The search space travels inside tables and predictor files as its canonical dict
(:meth:`nas.space.SearchSpace.to_dict`); :func:`space_from_record` rebuilds it and
checks the fingerprint.

Example:
    >>> enc = ArchEncoder(space)  # doctest: +SKIP
    >>> enc.encode([arch_a, arch_b]).shape  # doctest: +SKIP
    (2, 27)
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.arch import Arch, encode_arch, encoding_names
from nas.errors import ArtifactError, NasError
from nas.space import SearchSpace, parse_space

__all__ = ["ArchEncoder", "COMPLEXITY_FEATURES", "complexity_features", "space_record",
           "space_from_record"]

COMPLEXITY_FEATURES = ("log_params", "log_macs")


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self.data[key] = value
        if len(self.data) > self.size:
            self.data.popitem(last=False)


class ArchEncoder:
    """Batch encoder of one space's archs, with an LRU cache per arch.

    Args:
        space: the search space the archs belong to (they are not validated here).
        complexity: append ``log(params)`` and ``log(MACs)`` columns.
        cache_size: archs kept in the cache.
    """

    def __init__(self, space: SearchSpace, *, complexity: bool = False, cache_size: int = 200_000):
        self.space = space
        self.complexity = complexity
        self.names = encoding_names(space) + (list(COMPLEXITY_FEATURES) if complexity else [])
        self._cache = _LRU(cache_size)

    @property
    def dim(self) -> int:
        return len(self.names)

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        """Features of ``archs`` as a float64 array (len(archs), dim)."""
        out = np.empty((len(archs), self.dim), dtype=np.float64)
        for i, arch in enumerate(archs):
            row = self._cache.get(arch)
            if row is None:
                if not isinstance(arch, Arch):
                    raise NasError(f"expected an Arch, got {type(arch).__name__} at position {i}")
                row = encode_arch(self.space, arch).astype(np.float64)
                if self.complexity:
                    row = np.concatenate([row, complexity_features(self.space, arch)])
                self._cache.put(arch, row)
            out[i] = row
        return out

    def seed_complexity(self, archs: Sequence[Arch], params: np.ndarray, macs: np.ndarray) -> None:
        """Cache features of archs whose params/MACs are already known (from a table)."""
        if not self.complexity:
            return
        for arch, p, m in zip(archs, params, macs):
            row = encode_arch(self.space, arch).astype(np.float64)
            self._cache.put(arch, np.concatenate([row, [math.log(max(p, 1)), math.log(max(m, 1))]]))


def complexity_features(space: SearchSpace, arch: Arch) -> np.ndarray:
    """``[log(params), log(MACs)]`` of ``arch`` (built on the meta device)."""
    from nas.complexity import count_macs, count_params

    kw = {"num_classes": space.num_classes, "in_chans": space.in_chans}
    return np.array([math.log(max(count_params(arch, **kw), 1)),
                     math.log(max(count_macs(arch, **kw), 1))])


def space_record(space: SearchSpace) -> dict[str, Any]:
    """The space as stored in tables and predictor files."""
    return {"name": space.name, "fingerprint": space.fingerprint, "definition": space.to_dict()}


def space_from_record(record: Mapping[str, Any], what: str) -> SearchSpace:
    """Rebuild the space stored by :func:`space_record`, checking its fingerprint."""
    if not isinstance(record, Mapping) or "definition" not in record or "fingerprint" not in record:
        raise ArtifactError(f"{what}: no search space definition stored; the file is corrupted")
    try:
        space = parse_space(record["definition"], source=what)
    except NasError as e:
        raise ArtifactError(f"{what}: stored search space is invalid: {e}") from None
    if space.fingerprint != record["fingerprint"]:
        raise ArtifactError(f"{what}: stored search space has fingerprint {space.fingerprint}, "
                            f"the file says {record['fingerprint']}; the file is corrupted")
    return space
