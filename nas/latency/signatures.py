"""Component signatures: the distinct pieces a latency table times, and which an arch uses.

A standalone model (:mod:`nas.model.vit`) is a sequence of components, each timed
alone and summed, as in the layer-wise lookup tables of ProxylessNAS (Cai et al.,
ICLR 2019) and FBNet (Wu et al., CVPR 2019):

* ``stem``   - kind, stride, resolution, output dim (and the norm/act it uses);
* ``down``   - stage-entry downsampling: kind, cin, cout, stride, input grid, norm (act, mlp_ratio);
* ``pos``    - positional encoding: kind, dim, grid;
* ``block``  - one block: every active block dimension of the stage (from
  :func:`nas.arch.active_dims` minus the stage-level ones; a mixer's are the ones its
  :class:`nas.mixer_registry.MixerSpec` activates) plus its token count and grid
  (``null`` when it runs on a reduced token set, only after grid-free blocks);
* ``reduce`` - in-stage token reduction and its restore: method, tokens, kept, dim;
* ``head``   - pooling, norm, classifier: dim, classes, norm, tokens.

:func:`arch_signatures` lists the components of one arch; :func:`space_signatures`
walks the space's choices (no sampling) to list every signature it can produce.

Example:
    >>> sigs = arch_signatures(arch, num_classes=10, in_chans=3)  # doctest: +SKIP
    >>> sigs[0].key  # doctest: +SKIP
    'stem:{"dim":32,"in_chans":3,"kind":"patch","resolution":32,"stride":4}'
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nas.arch import Arch, StageArch, active_dims, stage_grid_free, walk_arch
from nas.errors import ArtifactError, NasError, SpaceError
from nas.model.shapes import down_grid, kept_tokens, stem_grid
from nas.space import SearchSpace

__all__ = ["KINDS", "STAGE_LEVEL_DIMS", "Signature", "block_dims", "stem_signature",
           "stage_signatures", "head_signature", "arch_signatures", "space_signatures",
           "archs_signatures"]

KINDS = ("stem", "down", "pos", "block", "reduce", "head")
# Stage dimensions that do not change what one block computes.
STAGE_LEVEL_DIMS = frozenset({"depth", "stride", "downsample", "pos_embed", "keep_ratio",
                              "reduce_method", "reduce_at"})


@dataclass(frozen=True)
class Signature:
    """A component kind and its parameters (sorted ``(name, value)`` pairs); hashable."""

    kind: str
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def make(cls, component: str, /, **params: Any) -> Signature:
        if component not in KINDS:
            raise ValueError(f"unknown component kind {component!r}; valid: {', '.join(KINDS)}")
        return cls(component, tuple(sorted((k, _freeze(v)) for k, v in params.items())))

    @property
    def key(self) -> str:
        """Stable text form, used as the table key: ``kind:{sorted compact JSON}``."""
        body = json.dumps(self.params_dict(), sort_keys=True, separators=(",", ":"))
        return f"{self.kind}:{body}"

    @classmethod
    def from_key(cls, key: str) -> Signature:
        kind, sep, body = key.partition(":")
        try:
            params = json.loads(body) if sep else None
        except json.JSONDecodeError:
            params = None
        if kind not in KINDS or not isinstance(params, dict):
            raise ArtifactError(f"malformed component signature {key[:80]!r}; expected "
                                f"KIND:{{json}} with KIND one of {', '.join(KINDS)}")
        return cls.make(kind, **params)

    def params_dict(self) -> dict[str, Any]:
        """Parameters as a JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    @property
    def label(self) -> str:
        """Short human-readable form for breakdowns."""
        p = dict(self.params)
        if self.kind == "block":
            grid = p.get("grid")
            where = f"{grid[0]}x{grid[1]}" if grid else f"{p['tokens']} reduced tokens"
            return f"block {p.get('mixer')} dim {p.get('embed_dim')} @ {where}"
        if self.kind == "reduce":
            return f"reduce {p['method']} {p['tokens']}->{p['keep']} tokens"
        if self.kind == "head":
            return f"head dim {p['dim']} -> {p['classes']}"
        if self.kind == "stem":
            return f"stem {p['kind']}/{p['stride']} -> dim {p['dim']}"
        if self.kind == "down":
            return f"down {p['kind']} {p['cin']}->{p['cout']} /{p['stride']}"
        return f"pos {p['kind']} dim {p['dim']}"


def _freeze(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def block_dims(s: StageArch) -> dict[str, Any]:
    """The dimensions of ``s`` that change what one of its blocks computes."""
    return {k: getattr(s, k) for k in sorted(active_dims(s, None) - STAGE_LEVEL_DIMS)}


def stem_signature(*, kind: str, stride: int, resolution: int, dim: int, norm: str, act: str,
                   in_chans: int) -> Signature:
    extra = {"norm": norm} if kind == "overlap" else {"act": act} if kind == "convs" else {}
    return Signature.make("stem", kind=kind, stride=stride, resolution=resolution, dim=dim,
                          in_chans=in_chans, **extra)


def _down_signature(s: StageArch, cin: int, grid_in: tuple[int, int]) -> Signature:
    extra = {"mlp_ratio": s.mlp_ratio, "act": s.act} if s.downsample == "merge" else {}
    return Signature.make("down", kind=s.downsample, cin=cin, cout=s.embed_dim, stride=s.stride,
                          grid=grid_in, norm=s.norm, **extra)


def stage_signatures(s: StageArch, cin: int, grid_in: tuple[int, int]
                     ) -> tuple[list[Signature], tuple[int, int]]:
    """Components of one stage in execution order, and the stage's token grid.

    Mirrors :class:`nas.model.vit.Stage`: downsampling when the stride or width
    changes, the positional encoding, ``reduce_at`` blocks on the full grid, the
    rest on the kept tokens, and the reduction (with its restore) when tokens drop.
    """
    grid = (down_grid(grid_in[0], s.stride), down_grid(grid_in[1], s.stride))
    out: list[Signature] = []
    if s.stride > 1 or cin != s.embed_dim:
        out.append(_down_signature(s, cin, grid_in))
    if s.pos_embed != "none":
        out.append(Signature.make("pos", kind=s.pos_embed, dim=s.embed_dim, grid=grid))
    n = grid[0] * grid[1]
    keep = kept_tokens(n, s.keep_ratio)
    reduce_at = min(s.reduce_at, s.depth) if keep < n else s.depth
    bd = block_dims(s)
    out += [Signature.make("block", **bd, tokens=n, grid=grid)] * reduce_at
    if keep < n:
        out.append(Signature.make("reduce", method=s.reduce_method, tokens=n, keep=keep,
                                  dim=s.embed_dim))
        out += [Signature.make("block", **bd, tokens=keep, grid=None)] * (s.depth - reduce_at)
    return out, grid


def head_signature(*, dim: int, norm: str, tokens: int, num_classes: int) -> Signature:
    return Signature.make("head", dim=dim, norm=norm, tokens=tokens, classes=num_classes)


def arch_signatures(arch: Arch, *, num_classes: int, in_chans: int) -> list[Signature]:
    """Every component of the standalone model of ``arch``, in execution order (with repeats)."""
    s0 = arch.stages[0]
    out = [stem_signature(kind=arch.stem, stride=arch.stem_stride, resolution=arch.resolution,
                          dim=s0.embed_dim, norm=s0.norm, act=s0.act, in_chans=in_chans)]
    side = stem_grid(arch.stem, arch.stem_stride, arch.resolution)
    grid, cin = (side, side), s0.embed_dim
    for s in arch.stages:
        sigs, grid = stage_signatures(s, cin, grid)
        out += sigs
        cin = s.embed_dim
    last = arch.stages[-1]
    out.append(head_signature(dim=last.embed_dim, norm=last.norm, tokens=grid[0] * grid[1],
                              num_classes=num_classes))
    return out


def archs_signatures(archs, *, num_classes: int, in_chans: int) -> list[Signature]:
    """Distinct signatures of several archs, in first-seen order."""
    seen: dict[Signature, None] = {}
    for a in archs:
        for sig in arch_signatures(a, num_classes=num_classes, in_chans=in_chans):
            seen.setdefault(sig)
    return list(seen)


# --------------------------------------------------------------------------- enumeration

class _Odometer:
    """Replays a walk choosing ``prefix[k]`` at decision ``k`` (0 past the prefix)."""

    def __init__(self, prefix: list[int]):
        self.prefix, self.sizes = prefix, []

    def __call__(self, valid: tuple) -> Any:
        k = len(self.sizes)
        self.sizes.append(len(valid))
        return valid[self.prefix[k] if k < len(self.prefix) else 0]

    def next_prefix(self) -> list[int] | None:
        """The next choice sequence in depth-first order, or None when all are done."""
        idx = (self.prefix + [0] * len(self.sizes))[:len(self.sizes)]
        while idx and idx[-1] + 1 >= self.sizes[len(idx) - 1]:
            idx.pop()
        if not idx:
            return None
        idx[-1] += 1
        return idx


def _all_paths(run: Callable[[Callable[[tuple], Any]], Any]) -> Iterator[Any]:
    """Every outcome of ``run(choose)`` over all choice sequences (an odometer walk).

    ``run`` calls ``choose(valid)`` for each decision; later ``valid`` tuples may
    depend on earlier choices, so the tree is explored depth first by replaying.
    """
    prefix: list[int] | None = []
    while prefix is not None:
        choose = _Odometer(prefix)
        yield run(choose)
        prefix = choose.next_prefix()


def _stage_block_configs(space: SearchSpace, i: int, limit: int) -> list[StageArch]:
    """Distinct stage archs of stage ``i`` that differ in a block dimension (depth at max)."""
    where = f"stages[{i}]"

    def run(choose):
        def pick(w, name, valid):
            if not valid:
                raise SpaceError(f"{space.source}: {w}.{name}: no valid choice")
            if w != where:
                return valid[0]
            if name == "depth":
                return max(valid)
            if name == "keep_ratio":
                return 1.0 if 1.0 in valid else valid[0]
            if name in STAGE_LEVEL_DIMS:
                return valid[0]
            return choose(valid)
        return walk_arch(space, pick).stages[i]

    out: dict[tuple, StageArch] = {}
    for s in _all_paths(run):
        out.setdefault(tuple(block_dims(s).items()), s)
        if len(out) > limit:
            raise NasError(f"space {space.name} has more than {limit} block signatures in stage "
                           f"{i} alone; profile only what a list of archs needs (--archs FILE), "
                           f"or raise --max-signatures")
    return list(out.values())


def _grids(space: SearchSpace) -> tuple[set[int], list[set[tuple[int, int]]]]:
    """Stem sides, and for every stage the reachable (side_in, stride) pairs."""
    stem_sides = {stem_grid(k, st, r) for r in space.resolution for k in space.stem
                  for st in space.stem_stride} - {0}
    per_stage, sides = [], stem_sides
    for ss in space.stages:
        pairs = {(side, st) for side in sides for st in ss.stride if down_grid(side, st) >= 1}
        per_stage.append(pairs)
        sides = {down_grid(side, st) for side, st in pairs}
    return stem_sides, per_stage


def space_signatures(space: SearchSpace, *, limit: int = 20000) -> list[Signature]:
    """Every distinct signature any arch of ``space`` can produce, by walking its choices.

    A superset at worst (a token grid that no full arch reaches is still listed).
    Raises :class:`NasError` when there are more than ``limit``.
    """
    out: dict[Signature, None] = {}

    def add(sig: Signature) -> None:
        out.setdefault(sig)
        if len(out) > limit:
            raise NasError(f"space {space.name} has more than {limit} component signatures; "
                           f"profile only what a list of archs needs (--archs FILE), or raise "
                           f"--max-signatures")

    s0 = space.stages[0]
    for r in space.resolution:
        for kind in space.stem:
            for st in space.stem_stride:
                if stem_grid(kind, st, r) < 1:
                    continue
                for dim in s0.embed_dim:
                    for norm in (s0.norm if kind == "overlap" else s0.norm[:1]):
                        for act in (s0.act if kind == "convs" else s0.act[:1]):
                            add(stem_signature(kind=kind, stride=st, resolution=r, dim=dim,
                                               norm=norm, act=act, in_chans=space.in_chans))
    _, pairs = _grids(space)
    prev_dims: tuple[int | None, ...] = (None,)
    sides: set[int] = set()
    for i, ss in enumerate(space.stages):
        configs = _stage_block_configs(space, i, limit)
        sides = {down_grid(side, st) for side, st in pairs[i]}
        for side_in, st in sorted(pairs[i]):
            for cin in prev_dims:
                for dim in ss.embed_dim:
                    if st == 1 and cin in (None, dim):
                        continue
                    for ds in ss.downsample:
                        for mlp in (ss.mlp_ratio if ds == "merge" else ss.mlp_ratio[:1]):
                            for norm in ss.norm:
                                for act in (ss.act if ds == "merge" else ss.act[:1]):
                                    s = StageArch(embed_dim=dim, stride=st, downsample=ds,
                                                  mlp_ratio=mlp, norm=norm, act=act)
                                    add(_down_signature(s, dim if cin is None else cin,
                                                        (side_in, side_in)))
        for side in sorted(sides):
            for pe in ss.pos_embed:
                if pe != "none":
                    for dim in ss.embed_dim:
                        add(Signature.make("pos", kind=pe, dim=dim, grid=(side, side)))
        reducible = [k for k in ss.keep_ratio if k < 1.0] if min(ss.reduce_at) < max(ss.depth) \
            else []
        for side in sorted(sides):
            n = side * side
            for c in configs:
                bd = block_dims(c)
                add(Signature.make("block", **bd, tokens=n, grid=(side, side)))
                if not stage_grid_free(c):
                    continue
                for keep in reducible:
                    kt = kept_tokens(n, keep)
                    if kt < n:
                        add(Signature.make("block", **bd, tokens=kt, grid=None))
            if any(stage_grid_free(c) for c in configs):
                for keep in reducible:
                    kt = kept_tokens(n, keep)
                    if kt < n:
                        for method in ss.reduce_method:
                            for dim in ss.embed_dim:
                                add(Signature.make("reduce", method=method, tokens=n, keep=kt,
                                                   dim=dim))
        prev_dims = ss.embed_dim
    last = space.stages[-1]
    for side in sorted(sides):
        for dim in last.embed_dim:
            for norm in last.norm:
                add(head_signature(dim=dim, norm=norm, tokens=side * side,
                                   num_classes=space.num_classes))
    return list(out)
