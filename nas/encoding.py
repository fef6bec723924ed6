"""Fixed-length numeric encodings of architectures, and the size of a space.

The encoding (for accuracy predictors and Bayesian searchers) has one slot per
dimension with more than one choice: categoricals one-hot, numbers rank-scaled to
(0, 1], inactive dimensions zero. :func:`decode_arch` inverts it exactly for
canonical archs and snaps arbitrary vectors to the nearest valid arch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nas.arch import Arch, _loc, _value_at, active_dims, effective_mixers, walk_arch
from nas.errors import ArchError
from nas.mixer_registry import get_mixer
from nas.space import GLOBAL_DIMS, STAGE_DIMS, SearchSpace, StageSpace

__all__ = ["encoding_names", "encode_arch", "decode_arch", "count_archs"]


def _enc_dims(space: SearchSpace) -> list[tuple[str, str, Any, tuple]]:
    """(where, name, dim, choices) for every dimension with more than one choice."""
    out = []
    for d in GLOBAL_DIMS:
        ch = getattr(space, d.name)
        if len(ch) > 1:
            out.append((d.name, d.name, d, ch))
    for i, ss in enumerate(space.stages):
        for d in STAGE_DIMS:
            ch = ss.choices(d.name)
            if d.name == "mixer":
                ch = effective_mixers(ss)
            if len(ch) > 1:
                out.append((f"stages[{i}]", d.name, d, ch))
    return out


def encoding_names(space: SearchSpace) -> list[str]:
    """Names of the encoding's columns (``stages[1].mixer=pool``, ``stages[0].depth``...)."""
    names = []
    for where, name, d, ch in _enc_dims(space):
        key = name if where == name else f"{where}.{name}"
        if d.kind == "cat":
            names += [f"{key}={c}" for c in ch]
        else:
            names.append(key)
    return names


def encode_arch(space: SearchSpace, arch: Arch) -> np.ndarray:
    """Fixed-length float32 vector: one-hot categoricals, rank-scaled numbers in (0, 1].

    Inactive dimensions encode as zeros. Dimensions with a single choice are left out.
    """
    out: list[float] = []
    prev = None
    active = {}
    for i, s in enumerate(arch.stages):
        active[f"stages[{i}]"] = active_dims(s, prev)
        prev = s.embed_dim
    for where, name, d, ch in _enc_dims(space):
        value = _value_at(arch, where, name)
        on = where == name or name in active[where]
        if d.kind == "cat":
            out += [1.0 if on and value == c else 0.0 for c in ch]
        else:
            out.append((ch.index(value) + 1) / len(ch) if on and value in ch else 0.0)
    return np.asarray(out, dtype=np.float32)


def decode_arch(space: SearchSpace, vec: np.ndarray | list[float], *, strict: bool = True) -> Arch:
    """Inverse of :func:`encode_arch`. Non-strict decoding snaps to the nearest valid choice."""
    vec = np.asarray(vec, dtype=np.float64).ravel()
    dims = _enc_dims(space)
    expected = sum(len(ch) if d.kind == "cat" else 1 for _, _, d, ch in dims)
    if vec.shape[0] != expected:
        raise ArchError(f"encoding has length {vec.shape[0]}, space {space.name} expects {expected}")
    slots: dict[tuple[str, str], np.ndarray] = {}
    pos = 0
    for where, name, d, ch in dims:
        n = len(ch) if d.kind == "cat" else 1
        slots[(where, name)] = vec[pos:pos + n]
        pos += n

    def pick(where, name, valid):
        key = (where, name)
        if key not in slots:
            return valid[0]
        _, _, d, ch = next(x for x in dims if (x[0], x[1]) == key)
        seg = slots[key]
        if d.kind == "cat":
            order = np.argsort(-seg, kind="stable")
            cands = [ch[j] for j in order]
        else:
            rank = seg[0] * len(ch) - 1
            cands = sorted(ch, key=lambda c: abs(ch.index(c) - rank))
        if strict:
            if cands[0] not in valid:
                raise ArchError(f"encoding: {_loc(where, name)} decodes to {cands[0]!r}, "
                                f"not valid here")
            return cands[0]
        for c in cands:
            if c in valid:
                return c
        return valid[0]

    return walk_arch(space, pick)


# --------------------------------------------------------------------------- size

def count_archs(space: SearchSpace) -> int:
    """Exact number of canonical archs (grid-size feasibility aside)."""
    total = 0
    counts_prev: dict[int | None, int] = {None: 1}
    for ss in space.stages:
        counts: dict[int | None, int] = {}
        for prev, c in counts_prev.items():
            for dim, n in _count_stage(ss, prev).items():
                counts[dim] = counts.get(dim, 0) + c * n
        counts_prev = counts
    total = sum(counts_prev.values())
    for d in GLOBAL_DIMS:
        total *= len(getattr(space, d.name))
    return total


def _count_stage(ss: StageSpace, prev: int | None) -> dict[int, int]:
    tail = len(ss.norm) * len(ss.act) * len(ss.layer_scale) * len(ss.pos_embed)
    ffn = len(ss.mlp_ratio) * len(ss.low_rank) * len(ss.sparsity) * len(ss.sandwich)
    out = {}
    for dim in ss.embed_dim:
        mixes = [_count_mixer(ss, m, dim) for m in effective_mixers(ss)]
        n = 0
        for depth in ss.depth:
            for stride in ss.stride:
                ds = len(ss.downsample) if stride > 1 or (prev is not None and prev != dim) else 1
                for mix in mixes:
                    reduce_ats = sum(1 for r in ss.reduce_at if r < depth)
                    for ffn_conv in ss.ffn_conv:
                        for ti in ss.token_interaction:
                            for mixer_free, k in mix.items():
                                grid_free = mixer_free and not ffn_conv and not ti
                                keeps = 0
                                for kr in ss.keep_ratio:
                                    if kr == 1.0:
                                        keeps += 1
                                    elif grid_free and reduce_ats:
                                        keeps += len(ss.reduce_method) * reduce_ats
                                n += ds * k * keeps
        out[dim] = n * ffn * tail
    return out


def _count_mixer(ss: StageSpace, m: str, dim: int) -> dict[bool, int]:
    """Settings of mixer ``m`` at width ``dim``, counted by whether they are grid-free."""
    spec = get_mixer(m)
    out: dict[bool, int] = {}
    for v in spec.settings(ss, dim):
        free = spec.is_grid_free(v)
        out[free] = out.get(free, 0) + 1
    return out

