"""Architectures: one choice per search-space dimension.

An :class:`Arch` is a frozen dataclass. Dimensions that a choice makes irrelevant
(the window of a pooling mixer, the reduction method when no token is dropped) are
*inactive* and always hold their default, so two archs that build the same network
compare equal. Every operation that creates archs (sampling, mutation, crossover,
decoding, membership) goes through one dependency-ordered walk over the
dimensions, :func:`walk_arch`, so they all agree on what is valid.

Example:
    >>> rng = np.random.default_rng(0)  # doctest: +SKIP
    >>> arch = sample_arch(space, rng); space_contains(space, arch)  # doctest: +SKIP
    (True, '')
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nas.errors import ArchError, ArtifactError
from nas.io import parse_yaml, read_text
from nas.mixer_registry import get_mixer, local_fractions, mixer_names, sparse_patterns
from nas.space import GLOBAL_DIMS, SearchSpace, StageSpace, stage_dim

__all__ = [
    "StageArch", "Arch", "walk_arch", "sample_arch", "space_contains", "canonicalize",
    "mutate_arch", "crossover_arch", "extreme_arch", "extreme_pick", "sample_mixers",
    "resample_dims", "REDUCTION_DIMS", "load_arch", "active_dims", "stage_grid_free",
]


@dataclass(frozen=True)
class StageArch:
    """One stage of an architecture (see ``nas.space.STAGE_DIMS`` for meanings)."""

    depth: int = 1
    embed_dim: int = 64
    stride: int = 1
    downsample: str = "conv"
    mixer: str = "mhsa"
    heads: int = 1
    qk_ratio: float = 1.0
    pattern: str = "dense"
    window: int = 7
    shift: bool = False
    density: float = 1.0
    local_fraction: float = 1.0
    sr_ratio: int = 1
    kernel: int = 3
    mlp_ratio: float = 4.0
    low_rank: float = 1.0
    sparsity: str = "dense"
    ffn_conv: bool = False
    sandwich: int = 0
    token_interaction: bool = False
    keep_ratio: float = 1.0
    reduce_method: str = "prune"
    reduce_at: int = 0
    norm: str = "layernorm"
    act: str = "gelu"
    layer_scale: bool = False
    pos_embed: str = "none"

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def qk_dim(self) -> int:
        """QK channels per head (EfficientViT-style small QK, full V)."""
        return max(1, round(self.head_dim * self.qk_ratio))

    @property
    def local_heads(self) -> int:
        """Heads that use the sparse pattern; the others attend globally."""
        return min(self.heads, max(1, round(self.heads * self.local_fraction)))

    @property
    def hidden_dim(self) -> int:
        return max(1, round(self.embed_dim * self.mlp_ratio))

    @property
    def rank(self) -> int:
        """Rank of the FFN's factorised linear layers (full rank when low_rank == 1)."""
        return max(1, round(min(self.embed_dim, self.hidden_dim) * self.low_rank))


@dataclass(frozen=True)
class Arch:
    """A full architecture: global choices plus one :class:`StageArch` per stage."""

    resolution: int
    stem: str
    stem_stride: int
    stages: tuple[StageArch, ...]

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """Plain dict; only active dimensions unless ``full``."""
        out: dict[str, Any] = {d.name: getattr(self, d.name) for d in GLOBAL_DIMS}
        prev = None
        stages = []
        for s in self.stages:
            keep = None if full else active_dims(s, prev)
            stages.append({k: v for k, v in asdict(s).items() if full or k in keep})
            prev = s.embed_dim
        out["stages"] = stages
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "arch") -> Arch:
        """Parse a dict, rejecting unknown keys and badly typed values."""
        if not isinstance(raw, dict):
            raise ArchError(f"{source}: expected a mapping with resolution, stem, stem_stride, stages")
        allowed = [d.name for d in GLOBAL_DIMS] + ["stages"]
        for key in raw:
            if key not in allowed:
                raise ArchError(f"{source}: {key}: unknown key; allowed: {', '.join(allowed)}")
        glob = {}
        for d in GLOBAL_DIMS:
            try:
                glob[d.name] = d.validate(raw.get(d.name, d.default))
            except ValueError as e:
                raise ArchError(f"{source}: {d.name}: {e}") from None
        stages_raw = raw.get("stages")
        if not isinstance(stages_raw, list) or not stages_raw:
            raise ArchError(f"{source}: stages: expected a non-empty list")
        stages = []
        names = [f.name for f in fields(StageArch)]
        for i, st in enumerate(stages_raw):
            if not isinstance(st, dict):
                raise ArchError(f"{source}: stages[{i}]: expected a mapping")
            vals = {}
            for key, value in st.items():
                if key not in names:
                    raise ArchError(f"{source}: stages[{i}].{key}: unknown key; allowed: "
                                    f"{', '.join(names)}")
                try:
                    vals[key] = stage_dim(key).validate(value)
                except ValueError as e:
                    raise ArchError(f"{source}: stages[{i}].{key}: {e}") from None
            stages.append(StageArch(**vals))
        return cls(stages=tuple(stages), **glob)


def load_arch(text_or_path: str | Path) -> Arch:
    """Load an arch from a YAML/JSON file path, or parse inline YAML/JSON text."""
    text = str(text_or_path)
    looks_inline = isinstance(text_or_path, str) and (
        "\n" in text or text.lstrip().startswith(("{", "[")) or ":" in text and
        not text.endswith((".yaml", ".yml", ".json")))
    p = None if looks_inline else Path(text_or_path)
    if p is not None and not p.is_file():
        raise ArchError(f"arch file not found: {p}")
    source = "inline arch" if p is None else str(p)
    try:
        if p is not None:
            text = read_text(p, what="arch file")
        raw = parse_yaml(text, source=source)
    except ArtifactError as e:
        raise ArchError(str(e)) from None
    if isinstance(raw, dict) and "arch" in raw and "stages" not in raw:
        raw = raw["arch"]  # files written by search/export wrap the arch
    return Arch.from_dict(raw, source=source)


# --------------------------------------------------------------------------- the walk

Pick = Callable[[str, str, tuple], Any]  # (where, name, valid choices) -> value


def _loc(where: str, name: str) -> str:
    return name if where == name else f"{where}.{name}"


def effective_mixers(ss: StageSpace) -> tuple[str, ...]:
    """Mixers reachable in canonical form: ``attention`` with a dense pattern is ``mhsa``.

    The one mixer-specific rule outside :mod:`nas.mixer_registry`: ``attention`` whose
    pattern is ``dense`` (or whose patterned-head fraction is 0) computes exactly what
    ``mhsa`` computes, so the space lists it once, as ``mhsa`` (here and in
    :func:`canonicalize`); two archs that build the same network compare equal.
    """
    out = list(ss.mixer)
    if "attention" in out:
        if not sparse_patterns(ss) or not local_fractions(ss):
            out.remove("attention")
            if "mhsa" not in out:
                out.insert(0, "mhsa")
        elif ("dense" in ss.pattern or 0.0 in ss.local_fraction) and "mhsa" not in out:
            out.insert(0, "mhsa")
    return tuple(out)


def _grid_free(values: dict[str, Any]) -> bool:
    """Whether in-stage token reduction may precede blocks with these stage values."""
    return get_mixer(values["mixer"]).is_grid_free(values) and not values["ffn_conv"] \
        and not values["token_interaction"]


def stage_grid_free(s: StageArch) -> bool:
    """Whether in-stage token reduction may precede the blocks of ``s`` (mixer and FFN)."""
    return _grid_free(vars(s))


def _walk_stage(ss: StageSpace | None, prev_dim: int | None, pick: Pick, where: str) -> StageArch:
    def p(name: str, valid: tuple | None = None):
        if valid is None:
            valid = ss.choices(name) if ss is not None else None
        return pick(where, name, valid)

    v: dict[str, Any] = {}
    v["depth"] = p("depth")
    dim = v["embed_dim"] = p("embed_dim")
    v["stride"] = p("stride")
    if v["stride"] > 1 or (prev_dim is not None and prev_dim != dim):
        v["downsample"] = p("downsample")
    m = v["mixer"] = p("mixer", effective_mixers(ss) if ss else None)
    v.update(get_mixer(m).pick_dims(p, ss, dim))
    for name in ("mlp_ratio", "low_rank", "sparsity", "ffn_conv", "sandwich", "token_interaction"):
        v[name] = p(name)
    grid_free = _grid_free(v)
    if ss is not None:
        reduce_ats = tuple(r for r in ss.reduce_at if r < v["depth"])
        keeps = ss.keep_ratio if grid_free and reduce_ats else \
            tuple(k for k in ss.keep_ratio if k == 1.0)
    else:
        reduce_ats = keeps = None
    v["keep_ratio"] = p("keep_ratio", keeps)
    if v["keep_ratio"] < 1.0:
        if not grid_free:
            free = [n if get_mixer(n).grid_free is True else f"{n} with some settings"
                    for n in mixer_names() if get_mixer(n).grid_free is not False]
            raise ArchError(f"{where}.keep_ratio: token reduction needs a grid-free stage "
                            f"(mixer {', '.join(free)}; no ffn_conv, no token_interaction)")
        v["reduce_method"] = p("reduce_method")
        v["reduce_at"] = p("reduce_at", reduce_ats)
        if v["reduce_at"] >= v["depth"]:
            raise ArchError(f"{where}.reduce_at: {v['reduce_at']} must be below depth {v['depth']}")
    for name in ("norm", "act", "layer_scale", "pos_embed"):
        v[name] = p(name)
    return StageArch(**v)


def walk_arch(space: SearchSpace | None, pick: Pick, num_stages: int | None = None) -> Arch:
    """Build an arch by asking ``pick(where, name, valid)`` for each active dimension.

    ``valid`` is the tuple of choices allowed given the earlier picks (``None`` when
    ``space`` is None). Inactive dimensions keep their defaults.
    """
    glob = {d.name: pick(d.name, d.name, getattr(space, d.name) if space else None)
            for d in GLOBAL_DIMS}
    n = len(space.stages) if space is not None else num_stages
    stages, prev = [], None
    for i in range(n):
        s = _walk_stage(space.stages[i] if space else None, prev, pick, f"stages[{i}]")
        stages.append(s)
        prev = s.embed_dim
    return Arch(stages=tuple(stages), **glob)


def active_dims(stage: StageArch, prev_dim: int | None) -> set[str]:
    """Names of the dimensions that matter for ``stage``."""
    names: set[str] = set()

    def pick(where, name, valid):
        names.add(name)
        return getattr(stage, name)

    _walk_stage(None, prev_dim, pick, "stage")
    return names


def _grid_ok(space: SearchSpace | None, arch: Arch) -> str:
    from nas.model.shapes import stage_grids

    grids = stage_grids(arch)
    for i, (h, w) in enumerate(grids):
        if h < 1 or w < 1:
            return f"stages[{i}]: the token grid vanishes ({h}x{w}); use fewer strides"
    return ""


def sample_mixers(space: SearchSpace, rng: np.random.Generator) -> tuple[str, ...]:
    """One token-mixer family per stage, each uniform among the stage's mixers."""
    out = []
    for ss in space.stages:
        mixers = effective_mixers(ss)
        out.append(mixers[int(rng.integers(len(mixers)))])
    return tuple(out)


def sample_arch(space: SearchSpace, rng: np.random.Generator,
                mixers: tuple[str, ...] | None = None) -> Arch:
    """Sample an arch: each active dimension uniformly among its valid choices.

    ``mixers`` (one per stage) fixes each stage's token mixer family.
    """
    pick = lambda where, name, valid: valid[int(rng.integers(len(valid)))]  # noqa: E731
    if mixers is not None:
        pick = _fixed_mixers(pick, mixers)
    for _ in range(100):
        arch = walk_arch(space, pick)
        if not _grid_ok(space, arch):
            return arch
    raise ArchError(f"space {space.name}: could not sample an arch whose token grid stays >= 1x1")


def space_contains(space: SearchSpace, arch: Arch) -> tuple[bool, str]:
    """Whether ``arch`` is a point of ``space``; when not, the reason."""
    if len(arch.stages) != len(space.stages):
        return False, f"arch has {len(arch.stages)} stages, the space has {len(space.stages)}"

    def pick(where, name, valid):
        value = _value_at(arch, where, name)
        if value not in valid:
            shown = ", ".join(map(str, valid)) if valid else "none (no valid choice)"
            raise ArchError(f"{_loc(where, name)} = {value!r} is not allowed here; allowed: {shown}")
        return value

    try:
        canon = walk_arch(space, pick)
    except ArchError as e:
        return False, str(e)
    if canon != arch:
        diff = _first_diff(arch, canon)
        return False, f"{diff}: inactive dimension differs from its default (call canonicalize)"
    reason = _grid_ok(space, arch)
    return (not reason), reason


def canonicalize(space: SearchSpace, arch: Arch) -> Arch:
    """Reset inactive dimensions to defaults; raise :class:`ArchError` if outside the space."""
    def pick(where, name, valid):
        value = _value_at(arch, where, name)
        if value not in valid:
            shown = ", ".join(map(str, valid)) if valid else "none (no valid choice)"
            raise ArchError(f"{_loc(where, name)} = {value!r} is not in the space {space.name}; "
                            f"allowed: {shown}")
        return value

    if len(arch.stages) != len(space.stages):
        raise ArchError(f"arch has {len(arch.stages)} stages, space {space.name} has "
                        f"{len(space.stages)}")
    arch = replace(arch, stages=tuple(  # dense attention is mhsa (see effective_mixers)
        replace(s, mixer="mhsa") if s.mixer == "attention"
        and (s.pattern == "dense" or s.local_fraction == 0) else s for s in arch.stages))
    canon = walk_arch(space, pick)
    reason = _grid_ok(space, canon)
    if reason:
        raise ArchError(reason)
    return canon


def _value_at(arch: Arch, where: str, name: str) -> Any:
    if where.startswith("stages["):
        return getattr(arch.stages[int(where[7:where.index("]")])], name)
    return getattr(arch, name)


def _first_diff(a: Arch, b: Arch) -> str:
    for i, (sa, sb) in enumerate(zip(a.stages, b.stages)):
        for f in fields(StageArch):
            if getattr(sa, f.name) != getattr(sb, f.name):
                return f"stages[{i}].{f.name}"
    return "arch"


def _propose(space: SearchSpace, proposal: Callable[[str, str], Any], rng: np.random.Generator) -> Arch:
    """Walk taking ``proposal(where, name)`` when valid, else a uniform valid choice."""
    def pick(where, name, valid):
        value = proposal(where, name)
        if value is not None and value in valid:
            return value
        return valid[int(rng.integers(len(valid)))]

    for _ in range(100):
        arch = walk_arch(space, pick)
        if not _grid_ok(space, arch):
            return arch
        proposal = lambda where, name: None  # noqa: E731 - fall back to plain sampling
    raise ArchError(f"space {space.name}: no valid arch found")


def mutate_arch(space: SearchSpace, arch: Arch, rng: np.random.Generator, *, prob: float = 0.1) -> Arch:
    """Resample each dimension with probability ``prob``; invalid leftovers are repaired.

    At least one dimension is resampled, so the child differs whenever possible.
    """
    if not 0 < prob <= 1:
        raise ValueError(f"prob must be in (0, 1], got {prob}")
    forced = {"done": False}

    def proposal(where, name):
        if rng.random() < prob:
            forced["done"] = True
            return None
        return _value_at(arch, where, name)

    child = _propose(space, proposal, rng)
    if child == arch:  # guarantee progress: resample one random active dimension
        names = [(f"stages[{i}]", n) for i, s in enumerate(arch.stages)
                 for n in sorted(active_dims(s, arch.stages[i - 1].embed_dim if i else None))]
        names += [(d.name, d.name) for d in GLOBAL_DIMS]
        for _ in range(64):
            tw, tn = names[int(rng.integers(len(names)))]
            child = _propose(space, lambda w, n, tw=tw, tn=tn: None if (w, n) == (tw, tn)
                             else _value_at(arch, w, n), rng)
            if child != arch:
                break
    return child


REDUCTION_DIMS = ("keep_ratio", "reduce_method", "reduce_at")  # in-stage token reduction


def resample_dims(space: SearchSpace, arch: Arch, names: tuple[str, ...],
                  rng: np.random.Generator) -> Arch:
    """``arch`` with the stage dimensions ``names`` drawn uniformly anew (the rest kept).

    Example: ``resample_dims(space, extreme_arch(space, "max"), REDUCTION_DIMS, rng)``
    is the largest subnet with a random token pruning/merging setting.
    """
    return _propose(space, lambda where, name: None if name in names and where.startswith("stages[")
                    else _value_at(arch, where, name), rng)


def crossover_arch(space: SearchSpace, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    """Uniform crossover: each dimension from either parent, repaired where invalid."""
    return _propose(space, lambda where, name: _value_at(a if rng.random() < 0.5 else b, where, name),
                    rng)


_CAT_ORDER = {  # most to least expensive, for extreme_arch (mixers: their size_rank)
    "sparsity": ("dense", "2:4"),
    "pos_embed": ("absolute", "conv", "none"),
}


def extreme_pick(which: str) -> Pick:
    """The pick rule of :func:`extreme_arch` (largest or smallest valid choice)."""
    if which not in ("max", "min"):
        raise ValueError(f"which must be 'max' or 'min', got {which!r}")
    ranked = sorted((s.size_rank, s.name) for s in map(get_mixer, mixer_names())
                    if s.size_rank is not None)
    orders = {**_CAT_ORDER, "mixer": tuple(name for _, name in ranked)}

    def pick(where, name, valid):
        if name in orders:
            order = orders[name] if which == "max" else orders[name][::-1]
            return min(valid, key=lambda v: order.index(v) if v in order else len(order))
        if name in ("stride", "stem_stride", "sr_ratio"):
            return min(valid) if which == "max" else max(valid)
        if isinstance(valid[0], str):
            return valid[0]
        return max(valid) if which == "max" else min(valid)

    return pick


def _fixed_mixers(pick: Pick, mixers: tuple[str, ...]) -> Pick:
    """``pick`` with each stage's mixer fixed to ``mixers[i]``."""
    def fixed(where, name, valid):
        if name != "mixer":
            return pick(where, name, valid)
        m = mixers[int(where[len("stages["):-1])]
        if m not in valid:
            raise ArchError(f"{where}.mixer: {m!r} is not allowed here; allowed: {', '.join(valid)}")
        return m

    return fixed


def extreme_arch(space: SearchSpace, which: str, mixers: tuple[str, ...] | None = None) -> Arch:
    """The largest (``"max"``) or smallest (``"min"``) subnet, for the sandwich rule.

    ``mixers`` (one per stage) fixes each stage's token mixer: the largest or smallest
    subnet of that mixer family (the family sandwich of :mod:`nas.training.loop`).
    """
    pick = extreme_pick(which)
    if mixers is not None:
        if len(mixers) != len(space.stages):
            raise ArchError(f"mixers: expected {len(space.stages)} (one per stage), got {len(mixers)}")
        pick = _fixed_mixers(pick, mixers)
    arch = walk_arch(space, pick)
    if _grid_ok(space, arch):
        raise ArchError(f"space {space.name}: the {which} arch has a vanishing token grid")
    return arch

