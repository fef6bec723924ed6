"""The token-mixer registry: everything that depends on a mixer, declared once per mixer.

A :class:`MixerSpec` holds a mixer's name, whether it is an attention mixer (it then
searches ``heads`` and ``qk_ratio``), the further stage dimensions it activates,
whether it can run without the token grid (so in-stage token reduction may precede
it), its module builder, its analytic cost and its place in the size order. The
search space (:mod:`nas.space`), the walk over dimensions (:mod:`nas.arch`), the
encoding, the supernet, the standalone models (:mod:`nas.model.mixers`), the latency
signatures (a block's signature is its active dimensions), the synthetic objective
and the reports all read the registry, as timm's model registry is read by everything
that needs a model's config. Adding a mixer therefore means its module class and one
:func:`register_mixer` call (for a built-in: one entry at the end of this file). Only
the optional inference rewrites of :mod:`nas.export` (fused QKV, folded norms) name
mixer classes; a mixer without one is exported as it is.

This module imports no torch (the CLI reads it at start-up): builders may be given
as ``"module:function"`` and are imported when a model is first built.

Example:
    >>> register_mixer(MixerSpec(name="scale", builder=lambda s, dim, tokens: Scale(dim),
    ...                          grid_free=True))  # doctest: +SKIP
    >>> get_mixer("scale").grid_free, "scale" in mixer_names()  # doctest: +SKIP
    (True, True)
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from nas.arch import StageArch
    from nas.space import StageSpace

__all__ = ["MixerSpec", "MIXER_DIMS", "register_mixer", "unregister_mixer", "get_mixer",
           "mixer_names", "sparse_patterns", "local_fractions"]

# Stage dimensions that only a mixer activates (names from nas.space.STAGE_DIMS, in
# that order). ``heads`` and ``qk_ratio`` come with ``attention=True``.
MIXER_DIMS = ("heads", "qk_ratio", "pattern", "window", "shift", "density", "local_fraction",
              "sr_ratio", "kernel")

Builder = Callable[["StageArch", int, int], "nn.Module"]  # (stage, embed_dim, tokens)
Pick = Callable[..., Any]  # pick(name, valid=None): valid None = the space's choices
Walk = Callable[[Pick, "StageSpace | None"], dict[str, Any]]
Cost = Callable[["StageArch", int, int], tuple[float, float]]  # (stage, tokens, dim)


@dataclass(frozen=True, kw_only=True)
class MixerSpec:
    """One token mixer and everything the package needs to know about it.

    Args:
        name: the value of the ``mixer`` stage dimension.
        builder: ``(stage_arch, embed_dim, tokens) -> nn.Module`` mapping ``(B, N, C)``
            tokens and the grid ``hw`` (``None`` after token reduction) to ``(B, N, C)``;
            or ``"module:function"`` naming one, imported when first used.
        attention: searches ``heads`` (dividing ``embed_dim``) and ``qk_ratio``; its
            q/k/v/proj weights are head-structured, so the supernet covers every width
            and head count.
        dims: further mixer dimensions it activates (from :data:`MIXER_DIMS`), picked
            in this order. They are the block's latency signature too, with ``heads``
            and ``qk_ratio``.
        walk: ``walk(pick, stage_space) -> {dim: value}`` when the dimensions depend on
            each other (``attention``: ``shift`` only with the local pattern); it must
            pick only from ``dims``. ``stage_space`` is ``None`` when replaying an arch.
        grid_free: whether it runs on any token set, so in-stage token reduction may
            precede it; or a predicate on the values of its dimensions (``attention``
            is grid-free with the block pattern only).
        variant_dims: dimensions (from ``dims``) whose every value has its own
            supernet weights (the reduction conv of each SRA ratio).
        cost: ``(stage_arch, tokens, dim) -> (MACs, params)`` of one mixer, for the
            synthetic objective; ``None`` counts it as free.
        size_rank: place in the most-to-least expensive order that ``extreme_arch``
            uses (0 = largest); ``None`` is never preferred.
        help: one line for listings.
    """

    name: str
    builder: Builder | str
    attention: bool = False
    dims: tuple[str, ...] = ()
    walk: Walk | None = None
    grid_free: bool | Callable[[Mapping[str, Any]], bool] = False
    variant_dims: tuple[str, ...] = ()
    cost: Cost | None = None
    size_rank: int | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"mixer name must be an identifier-like string, got {self.name!r}")
        if not (callable(self.builder) or isinstance(self.builder, str) and ":" in self.builder):
            raise TypeError(f"mixer {self.name}: builder must be a callable or 'module:function', "
                            f"got {self.builder!r}")
        own = MIXER_DIMS[2:]  # heads and qk_ratio come with attention=True
        for name in self.dims:
            if name not in own:
                raise ValueError(f"mixer {self.name}: dims: unknown mixer dimension {name!r}; "
                                 f"allowed: {', '.join(own)} (heads, qk_ratio: attention=True)")
        for name in self.variant_dims:
            if name not in self.dims:
                raise ValueError(f"mixer {self.name}: variant_dims: {name!r} is not one of its "
                                 f"dims {list(self.dims)}")
        if not (isinstance(self.grid_free, bool) or callable(self.grid_free)):
            raise TypeError(f"mixer {self.name}: grid_free must be a bool or a predicate")

    @property
    def all_dims(self) -> tuple[str, ...]:
        """Every dimension the mixer may activate (``heads``/``qk_ratio`` included)."""
        return (("heads", "qk_ratio") if self.attention else ()) + self.dims

    def pick_dims(self, pick: Pick, ss: StageSpace | None, dim: int) -> dict[str, Any]:
        """The mixer's active dimensions, chosen through ``pick`` (the walk of :mod:`nas.arch`).

        ``ss`` is the stage's space (``None`` when replaying an arch); ``dim`` the width.
        """
        v = self._pick_heads(pick, ss, dim) if self.attention else {}
        v.update(self._pick_own(pick, ss))
        return v

    def _pick_heads(self, pick: Pick, ss: StageSpace | None, dim: int) -> dict[str, Any]:
        h = pick("heads", tuple(h for h in ss.heads if dim % h == 0) if ss else None)
        hd = dim // h if dim % h == 0 else dim
        q = pick("qk_ratio", tuple(q for q in ss.qk_ratio if round(hd * q) >= 1) if ss else None)
        return {"heads": h, "qk_ratio": q}

    def _pick_own(self, pick: Pick, ss: StageSpace | None) -> dict[str, Any]:
        if self.walk is not None:
            return self.walk(pick, ss)
        return {name: pick(name) for name in self.dims}

    def settings(self, ss: StageSpace, dim: int) -> list[dict[str, Any]]:
        """Every setting of the mixer's dimensions in stage space ``ss`` at width ``dim``."""
        heads = _enumerate(ss, lambda pick: self._pick_heads(pick, ss, dim)) \
            if self.attention else [{}]
        own = _enumerate(ss, lambda pick: self._pick_own(pick, ss))
        return [{**h, **o} for h in heads for o in own]

    def is_grid_free(self, values: Mapping[str, Any]) -> bool:
        """Whether the mixer with these stage values (a dict or ``vars(stage)``) is grid-free."""
        return self.grid_free if isinstance(self.grid_free, bool) else bool(self.grid_free(values))

    def grid_free_in(self, ss: StageSpace) -> bool:
        """Whether every setting of the mixer in stage space ``ss`` is grid-free."""
        if isinstance(self.grid_free, bool):
            return self.grid_free
        return all(self.is_grid_free(v) for v in _enumerate(ss, lambda p: self._pick_own(p, ss)))

    def resolve_builder(self) -> Builder:
        """The builder callable (imported now if it was given as ``"module:function"``)."""
        if callable(self.builder):
            return self.builder
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, stage: StageArch, tokens: int) -> nn.Module:
        """The mixer module of ``stage`` for ``tokens`` tokens.

        A module without a ``variant`` gets the mixer's name as one, so its weights are
        its own in the supernet (``mhsa`` and ``attention`` share theirs: both ``attn``).
        """
        module = self.resolve_builder()(stage, stage.embed_dim, tokens)
        if getattr(module, "variant", None) is None:
            module.variant = self.name
        return module


class _NoChoice(Exception):
    """A dimension has no valid choice (inside :func:`_enumerate`)."""


def _enumerate(ss: StageSpace, run: Callable[[Pick], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every outcome of ``run(pick)`` over the choices of ``ss``, depth first.

    Later choices may depend on earlier ones, so each path is replayed with an
    odometer over the decisions (paths with an empty choice are skipped).
    """
    out: list[dict[str, Any]] = []
    prefix: list[int] | None = []
    while prefix is not None:
        sizes: list[int] = []

        def pick(name: str, valid: tuple | None = None, prefix=prefix, sizes=sizes):
            valid = ss.choices(name) if valid is None else valid
            k = len(sizes)
            sizes.append(len(valid))
            if not valid:
                raise _NoChoice(name)
            return valid[prefix[k] if k < len(prefix) else 0]

        try:
            out.append(run(pick))
        except _NoChoice:
            pass
        idx = (prefix + [0] * len(sizes))[:len(sizes)]
        while idx and idx[-1] + 1 >= sizes[len(idx) - 1]:
            idx.pop()
        prefix = idx[:-1] + [idx[-1] + 1] if idx else None
    return out


_REGISTRY: dict[str, MixerSpec] = {}


def register_mixer(spec: MixerSpec) -> MixerSpec:
    """Add a mixer; its name must be new. Returns ``spec``."""
    if not isinstance(spec, MixerSpec):
        raise TypeError(f"register_mixer expects a MixerSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise ValueError(f"mixer {spec.name!r} is already registered; registered: "
                         f"{', '.join(_REGISTRY)}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_mixer(name: str) -> MixerSpec:
    """Remove a mixer (for plugins and tests); returns its spec."""
    get_mixer(name)
    return _REGISTRY.pop(name)


def get_mixer(name: str) -> MixerSpec:
    """The spec of mixer ``name``; ``ValueError`` listing the registered ones if unknown."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mixer {name!r}; registered: {', '.join(_REGISTRY)}") from None


def mixer_names() -> tuple[str, ...]:
    """Registered mixer names, in registration order (the order of encodings and listings)."""
    return tuple(_REGISTRY)


# --------------------------------------------------------------------------- built-ins

def sparse_patterns(ss: StageSpace) -> tuple[str, ...]:
    """Patterns of the ``attention`` mixer (``dense`` is ``mhsa``, see nas.arch)."""
    return tuple(p for p in ss.pattern if p != "dense")


def local_fractions(ss: StageSpace) -> tuple[float, ...]:
    """Fractions of patterned heads of the ``attention`` mixer (0 is ``mhsa``)."""
    return tuple(f for f in ss.local_fraction if f > 0)


def _sparse_attention_dims(pick: Pick, ss: StageSpace | None) -> dict[str, Any]:
    pat = pick("pattern", sparse_patterns(ss) if ss else None)
    v = {"pattern": pat, "window": pick("window")}
    if pat == "local":
        v["shift"] = pick("shift")
    if pat == "block":
        v["density"] = pick("density")
    v["local_fraction"] = pick("local_fraction", local_fractions(ss) if ss else None)
    return v


def _qkv_cost(s, t: int, d: int) -> tuple[int, int, int]:
    """(QK width, MACs, params) of the q/k/v/proj projections of an attention mixer."""
    qk = max(1, round(d // s.heads * s.qk_ratio)) * s.heads
    par = d * (2 * qk + 2 * d)
    return qk, t * par, par


def _mhsa_cost(s, t, d):
    qk, mix, par = _qkv_cost(s, t, d)
    return mix + t * t * (qk + d), par


def _attention_cost(s, t, d):
    qk, mix, par = _qkv_cost(s, t, d)
    ctx = s.local_fraction * min(t, s.window ** 2) + (1 - s.local_fraction) * t
    return mix + t * ctx * (qk + d), par


def _sra_cost(s, t, d):
    qk, mix, par = _qkv_cost(s, t, d)
    kv = max(1, t // s.sr_ratio ** 2)
    return mix + (t * kv * (qk + d) + t * d * d / s.sr_ratio ** 2), par + d * d


def _linear_cost(s, t, d):
    qk, mix, par = _qkv_cost(s, t, d)
    return mix + 2 * t * qk * d, par


def _cga_cost(s, t, d):
    qk, mix, par = _qkv_cost(s, t, d)
    return mix + (t * min(t, s.window ** 2) * (qk + d) + t * d * s.kernel ** 2), par


_M = "nas.model.mixers:"
for _spec in (
    MixerSpec(name="mhsa", builder=_M + "build_mhsa", attention=True, grid_free=True,
              cost=_mhsa_cost, size_rank=0, help="global multi-head self-attention (ViT)"),
    MixerSpec(name="attention", builder=_M + "build_attention", attention=True,
              dims=("pattern", "window", "shift", "density", "local_fraction"),
              walk=_sparse_attention_dims, grid_free=lambda v: v["pattern"] == "block",
              cost=_attention_cost, size_rank=1,
              help="sparse-pattern attention with global heads (Swin, MaxViT, BigBird)"),
    MixerSpec(name="sra", builder=_M + "build_sra", attention=True, dims=("sr_ratio",),
              variant_dims=("sr_ratio",), cost=_sra_cost, size_rank=2,
              help="PVT spatial-reduction attention"),
    MixerSpec(name="linear", builder=_M + "build_linear", attention=True, grid_free=True,
              cost=_linear_cost, size_rank=4, help="kernelised linear attention"),
    MixerSpec(name="cga", builder=_M + "build_cga", attention=True, dims=("window", "kernel"),
              cost=_cga_cost, size_rank=3, help="EfficientViT cascaded group attention"),
    MixerSpec(name="pool", builder=_M + "build_pool", dims=("kernel",),
              cost=lambda s, t, d: (0.25 * t * d * s.kernel ** 2, 0.0), size_rank=7,
              help="PoolFormer average pooling"),
    MixerSpec(name="dwconv", builder=_M + "build_dwconv", dims=("kernel",),
              cost=lambda s, t, d: (t * d * (s.kernel ** 2 + d), d * (s.kernel ** 2 + d)),
              size_rank=6, help="depthwise convolution"),
    MixerSpec(name="mlp", builder=_M + "build_mlp", grid_free=True,
              cost=lambda s, t, d: (2.0 * t * t * d, 2.0 * t * t), size_rank=5,
              help="cross-token MLP (ResMLP)"),
    MixerSpec(name="identity", builder=_M + "build_identity", grid_free=True, size_rank=8,
              help="no token mixing (IdentityFormer)"),
):
    register_mixer(_spec)
del _spec
