"""Search spaces: the taxonomy of efficient vision transformers as YAML-backed dataclasses.

A space is a list of stages plus global choices (input resolution, stem). Every
stage dimension is a tuple of allowed values; one choice per dimension is an
:class:`nas.arch.Arch`. The dimensions follow ``shared/TAXONOMY.md``: token count
(stride at stage entry, in-stage pruning/merging), token mixer and sparse pattern,
head grouping, compression ratios (QK, FFN, low rank, 2:4 sparsity), EfficientViT's
sandwich layout, and the block details the reference models need.

Example:
    >>> space = load_space("search_spaces/tiny32.yaml")  # doctest: +SKIP
    >>> space.fingerprint[:8], len(space.stages)  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nas.errors import ArtifactError, SpaceError
from nas.io import read_yaml
from nas.mixer_registry import get_mixer, mixer_names

__all__ = [
    "MIXERS", "ATTENTION_MIXERS", "GRID_FREE_MIXERS", "PATTERNS", "NORMS", "ACTS", "STEMS", "DOWNSAMPLES",
    "POS_EMBEDS", "REDUCE_METHODS", "SPARSITIES", "Dim", "STAGE_DIMS", "GLOBAL_DIMS",
    "StageSpace", "SearchSpace", "load_space", "parse_space", "find_space",
]

# Snapshots of the built-in mixers, kept for compatibility: the code reads the registry
# (nas.mixer_registry), which also sees mixers registered later.
MIXERS = mixer_names()
ATTENTION_MIXERS = tuple(m for m in MIXERS if get_mixer(m).attention)
# Mixers that work on any token set, so in-stage token reduction may precede them.
GRID_FREE_MIXERS = tuple(m for m in MIXERS if get_mixer(m).grid_free is True)
PATTERNS = ("dense", "local", "dilated", "block")
NORMS = ("layernorm", "batchnorm", "groupnorm")
ACTS = ("gelu", "relu")
STEMS = ("patch", "overlap", "convs")
DOWNSAMPLES = ("conv", "merge")
POS_EMBEDS = ("none", "absolute", "conv")
REDUCE_METHODS = ("prune", "merge")
SPARSITIES = ("dense", "2:4")


@dataclass(frozen=True)
class Dim:
    """One searchable dimension: its type, allowed values and value when inactive."""

    name: str
    kind: str  # "int" | "float" | "bool" | "cat"
    default: Any
    rule: str
    check: Callable[[Any], bool] | None = None
    values: tuple[str, ...] = ()
    help: str = ""
    values_from: Callable[[], tuple[str, ...]] | None = None  # live values (a registry)

    def allowed(self) -> tuple[str, ...]:
        """The categorical values, read from the registry behind the dim where there is one."""
        return self.values_from() if self.values_from is not None else self.values

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to the dim's type, or raise ``ValueError`` with the rule."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind == "cat":
            allowed = self.allowed()
            if value not in allowed:
                raise ValueError(f"got {value!r}, allowed: {', '.join(allowed)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number ({self.rule}), got {value!r}")
        if self.kind == "int":
            if float(value) != int(value):
                raise ValueError(f"expected an integer ({self.rule}), got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if self.check is not None and not self.check(value):
            raise ValueError(f"got {value!r}, allowed: {self.rule}")
        return value

    def sort_key(self, value: Any) -> Any:
        return self.allowed().index(value) if self.kind == "cat" else value


def _int(name, default, rule, check, help=""):
    return Dim(name, "int", default, rule, check, help=help)


def _float(name, default, rule, check, help=""):
    return Dim(name, "float", default, rule, check, help=help)


def _cat(name, values, default, help=""):
    return Dim(name, "cat", default, "one of " + ", ".join(values), None, values, help)


def _bool(name, default, help=""):
    return Dim(name, "bool", default, "true or false", help=help)


_unit = "0 < x <= 1"

# Order matters: a dimension may depend on the ones before it (see nas.arch).
STAGE_DIMS: tuple[Dim, ...] = (
    _int("depth", 1, "integer 1..32", lambda v: 1 <= v <= 32, "blocks in the stage"),
    _int("embed_dim", 64, "integer 8..2048", lambda v: 8 <= v <= 2048, "channels"),
    _int("stride", 1, "1, 2 or 4", lambda v: v in (1, 2, 4), "downsampling at stage entry"),
    _cat("downsample", DOWNSAMPLES, "conv", "conv3x3+norm, or EfficientViT patch merging"),
    Dim("mixer", "cat", "mhsa", "one of the registered mixers", help="token mixer",
        values_from=mixer_names),
    _int("heads", 1, "integer 1..64", lambda v: 1 <= v <= 64, "attention heads / groups"),
    _float("qk_ratio", 1.0, _unit, lambda v: 0 < v <= 1, "QK dim per head / head dim"),
    _cat("pattern", PATTERNS, "dense", "sparse pattern of the attention mixer"),
    _int("window", 7, "integer 1..64", lambda v: 1 <= v <= 64, "window / group / block side"),
    _bool("shift", False, "Swin shifted windows (local pattern)"),
    _float("density", 1.0, _unit, lambda v: 0 < v <= 1, "key-block density (block pattern)"),
    _float("local_fraction", 1.0, "0 <= x <= 1", lambda v: 0 <= v <= 1,
           "fraction of heads using the pattern; the rest are global"),
    _int("sr_ratio", 1, "integer 1..16", lambda v: 1 <= v <= 16, "PVT K/V spatial reduction"),
    _int("kernel", 3, "odd integer 1..13", lambda v: v % 2 == 1 and 1 <= v <= 13,
         "pool / dwconv / CGA query kernel"),
    _float("mlp_ratio", 4.0, "0 < x <= 16", lambda v: 0 < v <= 16, "FFN expansion"),
    _float("low_rank", 1.0, _unit, lambda v: 0 < v <= 1, "FFN low-rank ratio (1 = full rank)"),
    _cat("sparsity", SPARSITIES, "dense", "FFN weight sparsity"),
    _bool("ffn_conv", False, "3x3 depthwise conv inside the FFN (PVTv2)"),
    _int("sandwich", 0, "integer 0..4", lambda v: 0 <= v <= 4,
         "FFN sub-blocks before and after the mixer (EfficientViT N:1:N); 0 = MetaFormer"),
    _bool("token_interaction", False, "residual 3x3 depthwise conv before each FFN"),
    _float("keep_ratio", 1.0, _unit, lambda v: 0 < v <= 1, "tokens kept by in-stage reduction"),
    _cat("reduce_method", REDUCE_METHODS, "prune", "token pruning or ToMe merging"),
    _int("reduce_at", 0, "integer 0..31", lambda v: 0 <= v <= 31, "block index of the reduction"),
    _cat("norm", NORMS, "layernorm", "normalisation layer"),
    _cat("act", ACTS, "gelu", "activation"),
    _bool("layer_scale", False, "learnable per-channel residual scale"),
    _cat("pos_embed", POS_EMBEDS, "none", "positional encoding at stage entry"),
)
GLOBAL_DIMS: tuple[Dim, ...] = (
    _int("resolution", 224, "integer 8..1024", lambda v: 8 <= v <= 1024, "input side"),
    _cat("stem", STEMS, "patch", "patchify conv, overlapping conv+norm, or conv stack"),
    _int("stem_stride", 4, "1, 2, 4, 8, 16 or 32", lambda v: v in (1, 2, 4, 8, 16, 32),
         "stem downsampling"),
)
_STAGE_BY_NAME = {d.name: d for d in STAGE_DIMS}
_GLOBAL_BY_NAME = {d.name: d for d in GLOBAL_DIMS}
_SETTINGS = ("name", "description", "num_classes", "in_chans", "stage_defaults", "stages")


@dataclass(frozen=True)
class StageSpace:
    """Allowed values of every stage dimension (sorted tuples, never empty)."""

    depth: tuple[int, ...]
    embed_dim: tuple[int, ...]
    stride: tuple[int, ...]
    downsample: tuple[str, ...]
    mixer: tuple[str, ...]
    heads: tuple[int, ...]
    qk_ratio: tuple[float, ...]
    pattern: tuple[str, ...]
    window: tuple[int, ...]
    shift: tuple[bool, ...]
    density: tuple[float, ...]
    local_fraction: tuple[float, ...]
    sr_ratio: tuple[int, ...]
    kernel: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    low_rank: tuple[float, ...]
    sparsity: tuple[str, ...]
    ffn_conv: tuple[bool, ...]
    sandwich: tuple[int, ...]
    token_interaction: tuple[bool, ...]
    keep_ratio: tuple[float, ...]
    reduce_method: tuple[str, ...]
    reduce_at: tuple[int, ...]
    norm: tuple[str, ...]
    act: tuple[str, ...]
    layer_scale: tuple[bool, ...]
    pos_embed: tuple[str, ...]

    def choices(self, name: str) -> tuple:
        return getattr(self, name)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build it with :func:`load_space` or :func:`parse_space`."""

    name: str
    num_classes: int
    in_chans: int
    resolution: tuple[int, ...]
    stem: tuple[str, ...]
    stem_stride: tuple[int, ...]
    stages: tuple[StageSpace, ...]
    description: str = ""
    source: str = field(default="<memory>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Canonical form: every dimension explicit, choices sorted."""
        out: dict[str, Any] = {"name": self.name, "num_classes": self.num_classes,
                               "in_chans": self.in_chans}
        for d in GLOBAL_DIMS:
            out[d.name] = list(getattr(self, d.name))
        out["stages"] = [{d.name: list(s.choices(d.name)) for d in STAGE_DIMS} for s in self.stages]
        return out

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical form (name and description excluded): 16 hex digits."""
        body = self.to_dict()
        body.pop("name")
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def max_tokens(self, stage: int) -> tuple[int, int]:
        """Largest token grid (H, W) stage ``stage`` can see, over every choice."""
        side = max(self.resolution) / min(self.stem_stride)
        for s in self.stages[: stage + 1]:
            side = side / min(s.stride)
        side = math.ceil(side)
        return side, side

    def check_arch_compat(self, other_fingerprint: str, what: str) -> None:
        """Raise :class:`ArtifactError` if an artefact belongs to another space."""
        if other_fingerprint != self.fingerprint:
            raise ArtifactError(
                f"{what} belongs to search space {other_fingerprint}, not to "
                f"{self.name} ({self.fingerprint})")


def _choices(dim: Dim, raw: Any, where: str, src: str) -> tuple:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise SpaceError(f"{src}: {where}: empty choice list; give at least one value ({dim.rule})")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(dim.validate(item))
        except ValueError as e:
            loc = f"{where}[{i}]" if isinstance(raw, list) else where
            raise SpaceError(f"{src}: {loc}: {e}") from None
    return tuple(sorted(set(out), key=dim.sort_key))


def _check_keys(obj: Any, allowed: tuple[str, ...], where: str, src: str) -> dict:
    if not isinstance(obj, dict):
        raise SpaceError(f"{src}: {where or 'top level'}: expected a mapping, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            loc = f"{where}.{key}" if where else str(key)
            raise SpaceError(f"{src}: {loc}: unknown key; allowed: {', '.join(allowed)}")
    return obj


def _stage(raw: dict, defaults: dict, where: str, src: str) -> StageSpace:
    vals = {}
    for d in STAGE_DIMS:
        if d.name in raw:
            vals[d.name] = _choices(d, raw[d.name], f"{where}.{d.name}", src)
        elif d.name in defaults:
            vals[d.name] = _choices(d, defaults[d.name], f"stage_defaults.{d.name}", src)
        else:
            vals[d.name] = (d.default,)
    stage = StageSpace(**vals)
    _check_stage(stage, where, src)
    return stage


def _check_stage(s: StageSpace, where: str, src: str) -> None:
    specs = [get_mixer(m) for m in s.mixer]
    attn = [m.name for m in specs if m.attention]
    if attn:
        for dim in s.embed_dim:
            if not any(dim % h == 0 for h in s.heads):
                raise SpaceError(f"{src}: {where}.heads: no choice divides embed_dim {dim} "
                                 f"(heads {list(s.heads)}); attention mixers {attn} need one")
    if 1.0 not in s.keep_ratio:
        grid_bound = [m.name for m in specs if not m.grid_free_in(s)]
        if grid_bound or True in s.ffn_conv or True in s.token_interaction:
            raise SpaceError(
                f"{src}: {where}.keep_ratio: token reduction breaks the token grid that "
                f"{grid_bound or 'ffn_conv/token_interaction'} need; add 1.0 to keep_ratio")
        if min(s.reduce_at) >= min(s.depth):
            raise SpaceError(f"{src}: {where}.reduce_at: no choice is below depth {min(s.depth)}; "
                             f"add 1.0 to keep_ratio or a smaller reduce_at")


def parse_space(raw: Any, *, source: str = "<memory>") -> SearchSpace:
    """Validate a parsed YAML mapping and build a :class:`SearchSpace`."""
    raw = _check_keys(raw, _SETTINGS + tuple(_GLOBAL_BY_NAME), "", source)
    for key in ("name", "stages"):
        if key not in raw:
            raise SpaceError(f"{source}: missing required key '{key}'")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise SpaceError(f"{source}: name: expected a non-empty string")
    settings = {}
    for key, default in (("num_classes", 1000), ("in_chans", 3)):
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpaceError(f"{source}: {key}: expected a positive integer, got {v!r}")
        settings[key] = v
    defaults = _check_keys(raw.get("stage_defaults") or {}, tuple(_STAGE_BY_NAME),
                           "stage_defaults", source)
    stages_raw = raw["stages"]
    if not isinstance(stages_raw, list) or not stages_raw:
        raise SpaceError(f"{source}: stages: expected a non-empty list of stage mappings")
    stages = tuple(
        _stage(_check_keys(st, tuple(_STAGE_BY_NAME), f"stages[{i}]", source), defaults,
               f"stages[{i}]", source)
        for i, st in enumerate(stages_raw))
    glob = {d.name: (_choices(d, raw[d.name], d.name, source) if d.name in raw else (d.default,))
            for d in GLOBAL_DIMS}
    if "convs" in glob["stem"] and any(s & (s - 1) or s < 2 for s in glob["stem_stride"]):
        raise SpaceError(f"{source}: stem_stride: the 'convs' stem needs powers of two >= 2, "
                         f"got {list(glob['stem_stride'])}")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise SpaceError(f"{source}: description: expected a string")
    return SearchSpace(name=raw["name"], description=desc, stages=stages, source=source,
                       **settings, **glob)


def find_space(name_or_path: str | Path) -> Path:
    """Resolve a shipped space name (``tiny32``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    from nas.search_spaces import shipped_dir  # package data (nas.search_spaces)

    shipped = shipped_dir() / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    names = sorted(q.stem for q in shipped.parent.glob("*.yaml"))
    raise SpaceError(f"search space not found: {name_or_path!r}; give a YAML path or one of: "
                     f"{', '.join(names)}")


def load_space(path: str | Path) -> SearchSpace:
    """Load and validate a search space from a YAML file (``yaml.safe_load``)."""
    path = find_space(path)
    try:
        raw = read_yaml(path, what="search space")
    except ArtifactError as e:
        raise SpaceError(str(e)) from None
    return parse_space(raw, source=str(path))


def stage_dim(name: str) -> Dim:
    return _STAGE_BY_NAME[name]


assert [f.name for f in fields(StageSpace)] == [d.name for d in STAGE_DIMS]
