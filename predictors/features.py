"""Architecture features for the predictors: cached encodings and complexity.

:class:`ArchEncoder` turns archs into the fixed-length vectors of
:func:`nas.encoding.encode_arch` (one-hot categoricals, rank-scaled numbers), caching
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

from nas.arch import Arch, active_dims
from nas.encoding import encoding_names
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
    """Batch encoder of one space's archs, equal to :func:`nas.encoding.encode_arch` but cached.

    An arch's encoding is the concatenation of a segment for the global choices and
    one segment per stage, and a stage's segment depends only on that stage and the
    previous stage's width. Segments are cached per stage in LRU dicts, so a batch
    costs a few dict look-ups per arch; a miss walks only that stage
    (:func:`nas.arch.active_dims`). The layout is read from
    :func:`nas.encoding.encoding_names`; a test checks equality with ``encode_arch``.

    Args:
        space: the search space the archs belong to (they are not validated here).
        complexity: append ``log(params)`` and ``log(MACs)`` columns.
        cache_size: entries kept per cache.
    """

    def __init__(self, space: SearchSpace, *, complexity: bool = False, cache_size: int = 200_000):
        self.space = space
        self.complexity = complexity
        enc_names = encoding_names(space)
        self.names = enc_names + (list(COMPLEXITY_FEATURES) if complexity else [])
        self._n_enc = len(enc_names)
        # group -> list of (column in group, dim name, cat value or None, numeric choices)
        self._layout: dict[int | None, list[tuple[int, str, Any, tuple]]] = {None: []}
        self._cols: dict[int | None, list[int]] = {None: []}
        for i in range(len(space.stages)):
            self._layout[i], self._cols[i] = [], []
        for col, full in enumerate(enc_names):
            key, _, cat = full.partition("=")
            group: int | None = None
            name = key
            if key.startswith("stages["):
                group = int(key[7:key.index("]")])
                name = key[key.index("].") + 2:]
                choices = space.stages[group].choices(name)
            else:
                choices = getattr(space, name)
            self._layout[group].append((len(self._cols[group]), name, cat if _ else None,
                                        tuple(choices)))
            self._cols[group].append(col)
        self._stage_cache = [_LRU(cache_size) for _ in space.stages]
        self._global_cache = _LRU(cache_size)
        self._complexity_cache = _LRU(cache_size)

    @property
    def dim(self) -> int:
        return len(self.names)

    @staticmethod
    def _segment(obj: Any, layout: list, active: set[str] | None) -> np.ndarray:
        seg = np.zeros(len(layout), dtype=np.float32)
        for j, name, cat, choices in layout:
            if active is not None and name not in active:
                continue
            value = getattr(obj, name)
            if cat is not None:
                seg[j] = 1.0 if value == cat else 0.0
            elif value in choices:
                seg[j] = (choices.index(value) + 1) / len(choices)
        return seg

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        """Features of ``archs`` as a float64 array (len(archs), dim)."""
        n = len(archs)
        out = np.empty((n, self.dim), dtype=np.float64)
        glob = []
        stages: list[list[np.ndarray]] = [[] for _ in self.space.stages]
        n_stages = len(self.space.stages)
        for i, arch in enumerate(archs):
            if not isinstance(arch, Arch) or len(arch.stages) != n_stages:
                raise NasError(f"position {i}: expected an Arch with {n_stages} stages, got "
                               f"{arch if isinstance(arch, Arch) else type(arch).__name__}")
            gkey = (arch.resolution, arch.stem, arch.stem_stride)
            seg = self._global_cache.get(gkey)
            if seg is None:
                seg = self._segment(arch, self._layout[None], None)
                self._global_cache.put(gkey, seg)
            glob.append(seg)
            prev = None
            for k, stage in enumerate(arch.stages):
                cache = self._stage_cache[k]
                skey = (stage, prev)
                seg = cache.get(skey)
                if seg is None:
                    seg = self._segment(stage, self._layout[k], active_dims(stage, prev))
                    cache.put(skey, seg)
                stages[k].append(seg)
                prev = stage.embed_dim
        if n:
            for group, segs in [(None, glob)] + list(enumerate(stages)):
                if self._cols[group]:
                    out[:, self._cols[group]] = np.stack(segs)
        if self.complexity:
            for i, arch in enumerate(archs):
                row = self._complexity_cache.get(arch)
                if row is None:
                    row = complexity_features(self.space, arch)
                    self._complexity_cache.put(arch, row)
                out[i, self._n_enc:] = row
        return out

    def seed_complexity(self, archs: Sequence[Arch], params: np.ndarray, macs: np.ndarray) -> None:
        """Cache the complexity of archs whose params/MACs are already known (from a table)."""
        for arch, p, m in zip(archs, params, macs):
            self._complexity_cache.put(arch, np.array([math.log(max(p, 1)), math.log(max(m, 1))]))


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
