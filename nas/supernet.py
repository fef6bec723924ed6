"""The weight-sharing supernet (OFA / AutoFormer / BigNAS weight sharing).

The supernet stores one tensor per *shared weight*, at the largest shape any arch
of the space needs. A subnet's weights are slices of them: widths, heads, QK and
FFN ratios, depth and token counts take the leading part ("largest first"); attention
projections are stored as the space's largest number of heads and sliced head by
head: a subnet takes every stored head's leading dims, so a smaller QK ratio or width
keeps each head's own rows, and with fewer heads each head is a group of whole stored
heads (2 heads of a 4-head store: heads 0+1 and 2+3), not rows regrouped across heads;
kernel sizes take the centre, an absolute positional embedding is interpolated to the
subnet's grid, and 2:4-sparse layers take the magnitude 2:4 mask of their slice.
Each mixer family (and each stem kind, downsampling kind, SRA reduction ratio, ...)
has its own weights, named by the ``variant`` of its module; sparse patterns and
token reduction add none. By default (``block_sharing="mixer"``) a whole block,
norms and FFNs included, is keyed by its mixer family: an FFN that follows pooling
sees other features than one that follows attention, and sharing it across
families cost ranking fidelity (``bench/bench_ranking.py``). ``"all"`` shares
everything but the mixers (a smaller supernet).

There is no hidden subnet state: ``supernet(x, arch)`` runs the standalone model's
own forward (:mod:`nas.model`) on sliced views through ``torch.func.functional_call``,
so gradients reach the shared weights and the result equals ``extract(arch)(x)``.

Example:
    >>> net = Supernet(space, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> logits = net(images, arch); model = net.extract(arch)  # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nas.arch import Arch, canonicalize, effective_mixers, extreme_pick, walk_arch
from nas.errors import ArchError
from nas.mixer_registry import get_mixer
from nas.model.layers import AbsPosEmbed, LayerScale, SparseLinear
from nas.model.vit import Block, VisionTransformer, build_model
from nas.space import SearchSpace

__all__ = ["Supernet", "mask_2_4", "BLOCK_SHARING"]

def mask_2_4(w: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude weights in every group of 4 inputs (zero-pads the tail)."""
    out_f, in_f = w.shape
    pad = (-in_f) % 4
    g = F.pad(w.detach().abs(), (0, pad)).view(out_f, -1, 4)
    idx = g.topk(2, dim=-1).indices
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return w * mask.view(out_f, -1)[:, :in_f]


@dataclass(frozen=True)
class _Entry:
    name: str       # name in the standalone model's state_dict
    key: str        # name of the shared tensor in the supernet
    shape: tuple[int, ...]
    how: str        # "slice" | "kernel" | "interp" | "sparse" | "scalar" | "heads_out" | "heads_in"
    init: str       # "zeros" | "ones" | "trunc" | "conv" | "conv_dw" | "gamma"
    buffer: bool
    heads: int = 0  # heads of the module (head rules only)
    size: int = 0   # length of the head-structured axis in the model (head rules only)


_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)


def _tensor_rule(mod: nn.Module, pname: str) -> tuple[str, str]:
    """(slicing rule, init rule) of tensor ``pname`` of module ``mod``."""
    if pname == "num_batches_tracked":
        return "scalar", "zeros"
    if getattr(mod, "heads_out", None):  # q/k/v rows, head by head (also the bias)
        return "heads_out", "zeros" if pname.endswith("bias") else "trunc"
    if getattr(mod, "heads_in", None) and pname == "weight":
        return "heads_in", "trunc"
    if pname == "running_var":
        return "slice", "ones"
    if pname == "running_mean" or pname.endswith("bias"):
        return "slice", "zeros"
    if isinstance(mod, _NORMS):
        return "slice", "ones"
    if isinstance(mod, LayerScale):
        return "slice", "gamma"
    if isinstance(mod, AbsPosEmbed):
        return "interp", "trunc"
    if isinstance(mod, SparseLinear) and pname == "weight":
        return "sparse", "trunc"
    if isinstance(mod, nn.Conv2d) and pname == "weight":
        return "kernel", "conv_dw" if mod.groups > 1 else "conv"
    if pname == "dw_kernel":
        return "kernel", "trunc"
    return "slice", "trunc"


BLOCK_SHARING = ("mixer", "all")


def _entries(model: nn.Module, *, covering: bool = False, blocks: str = "mixer",
             groups: dict[str, int] | None = None) -> list[_Entry]:
    """Map every tensor of a standalone model to its shared tensor and slicing rule.

    With ``covering``, every norm also lists BatchNorm buffers, since any norm of the
    space may be chosen as a BatchNorm by another arch. ``blocks="mixer"`` keys each
    block (its norms and FFNs too) by its mixer family; ``"all"`` shares them.
    ``groups`` gives the stored head count of each head-structured weight (default:
    the module's own).
    """
    out: list[_Entry] = []

    def rec(mod: nn.Module, std: str, sup: str) -> None:
        items = [(n, t, False) for n, t in mod.named_parameters(recurse=False)]
        items += [(n, t, True) for n, t in mod.named_buffers(recurse=False) if t is not None]
        if covering and isinstance(mod, _NORMS) and not isinstance(mod, nn.BatchNorm2d) \
                and not any(n == "running_mean" for n, _, _ in items):
            dim = mod.weight.shape[0]
            items += [("running_mean", torch.empty(dim, device="meta"), True),
                      ("running_var", torch.empty(dim, device="meta"), True),
                      ("num_batches_tracked", torch.empty((), device="meta"), True)]
        for pname, t, is_buf in items:
            how, init = _tensor_rule(mod, pname)
            shape, key = tuple(t.shape), sup + pname
            if how in ("heads_out", "heads_in"):
                h = mod.heads_out if how == "heads_out" else mod.heads_in
                size = shape[0] if how == "heads_out" else shape[1]
                g = (groups or {}).get(key, h)
                out.append(_Entry(std + pname, key, _head_shape(how, shape, g), how, init,
                                  is_buf, heads=h, size=size))
            else:
                out.append(_Entry(std + pname, key, shape, how, init, is_buf))
        for cname, child in mod.named_children():
            variant = getattr(child, "variant", None)
            if blocks == "mixer" and isinstance(child, Block):
                variant = child.family
            rec(child, f"{std}{cname}.", f"{sup}{cname}{'@' + variant if variant else ''}/")

    rec(model, "", "")
    return out


def _head_shape(how: str, shape: tuple[int, ...], groups: int) -> tuple[int, ...]:
    """The stored form of a head-structured tensor: its head axis split into ``groups``
    stored heads of ``ceil(size / groups)`` leading dims each."""
    if how == "heads_out":  # (h * d, ...) -> (G, ceil(h * d / G), ...)
        return (groups, -(-shape[0] // groups), *shape[1:])
    return (shape[0], groups, -(-shape[1] // groups))  # heads_in: (out, h * d) -> (out, G, ...)


def _slice(t: torch.Tensor, e: _Entry) -> torch.Tensor:
    if e.how == "scalar":
        return t
    if e.how == "heads_out":  # every stored head's leading dims, in head order
        v = t[tuple(slice(0, n) for n in e.shape)]
        return v.reshape(-1, *e.shape[2:])[:e.size]
    if e.how == "heads_in":
        return t[:e.shape[0], :e.shape[1], :e.shape[2]].reshape(e.shape[0], -1)[:, :e.size]
    if e.how == "interp":
        c = e.shape[1]
        src = t[:, :c]
        if tuple(src.shape[2:]) != e.shape[2:]:
            src = F.interpolate(src, size=e.shape[2:], mode="bilinear", align_corners=False)
        return src
    if e.how == "kernel":
        k0, k1 = e.shape[-2:]
        s0, s1 = (t.shape[-2] - k0) // 2, (t.shape[-1] - k1) // 2
        lead = tuple(slice(0, n) for n in e.shape[:-2])
        return t[lead + (slice(s0, s0 + k0), slice(s1, s1 + k1))]
    view = t[tuple(slice(0, n) for n in e.shape)]
    return mask_2_4(view) if e.how == "sparse" else view


def _init_shared(t: torch.Tensor, init: str, g: torch.Generator | None) -> None:
    with torch.no_grad():
        if init == "zeros":
            t.zero_()
        elif init == "ones":
            t.fill_(1.0)
        elif init == "gamma":
            t.fill_(1e-2)
        elif init in ("conv", "conv_dw"):
            k = t.shape[-1] * t.shape[-2]
            fan_out = k if init == "conv_dw" else k * t.shape[0]
            nn.init.normal_(t, std=math.sqrt(2.0 / fan_out), generator=g)
        else:
            nn.init.trunc_normal_(t, std=0.02, generator=g)


def _covering_archs(space: SearchSpace) -> list[Arch]:
    """Archs whose union of tensors (at their largest shapes) covers the whole space."""
    factors: list[list[dict[tuple[str, str], object]]] = [
        [{("stem", "stem"): st, ("stem_stride", "stem_stride"): ss}
         for st in space.stem for ss in space.stem_stride]]
    for i, ss in enumerate(space.stages):
        w = f"stages[{i}]"
        mix = []
        for m in effective_mixers(ss):
            spec = get_mixer(m)  # head-structured weights: every width and head count
            dims = ss.embed_dim if spec.attention else (max(ss.embed_dim),)
            heads = ss.heads if spec.attention else (None,)
            variants = list(itertools.product(*(ss.choices(n) for n in spec.variant_dims)))
            # blocks are keyed by mixer family, so the FFN variants are crossed with it
            mix += [{(w, "mixer"): m, (w, "embed_dim"): d, (w, "heads"): h,
                     **{(w, n): x for n, x in zip(spec.variant_dims, var)}, (w, "low_rank"): lr}
                    for d in dims for h in heads for var in variants for lr in ss.low_rank]
        factors.append(mix)
        factors.append([{(w, "downsample"): d, (w, "stride"): s}
                        for d in ss.downsample for s in ss.stride])
        factors.append([{(w, "pos_embed"): p} for p in ss.pos_embed])
    largest = extreme_pick("max")
    archs = [walk_arch(space, largest)]
    for k in range(max(len(f) for f in factors)):
        over: dict[tuple[str, str], object] = {}
        for f in factors:
            over.update(f[k % len(f)])

        def pick(where, name, valid, over=over):
            v = over.get((where, name))
            return v if v is not None and v in valid else largest(where, name, valid)

        archs.append(walk_arch(space, pick))
    return archs


class Supernet(nn.Module):
    """Shared weights for every arch of ``space``; ``forward(x, arch)`` and ``extract(arch)``."""

    def __init__(self, space: SearchSpace, *, generator: torch.Generator | None = None,
                 cache_size: int = 64, block_sharing: str = "mixer"):
        super().__init__()
        if block_sharing not in BLOCK_SHARING:
            raise ValueError(f"block_sharing must be one of {', '.join(BLOCK_SHARING)}; "
                             f"got {block_sharing!r}")
        self.space = space
        self.cache_size = cache_size
        self.block_sharing = block_sharing
        skeletons = [self._skeleton(arch) for arch in _covering_archs(space)]
        groups: dict[str, int] = {}  # head-structured weights are stored with the most heads
        for model in skeletons:
            for e in _entries(model, covering=True, blocks=block_sharing):
                if e.heads:
                    groups[e.key] = max(groups.get(e.key, 0), e.heads)
        self._groups = groups
        spec: dict[str, _Entry] = {}
        for model in skeletons:
            for e in _entries(model, covering=True, blocks=block_sharing, groups=groups):
                old = spec.get(e.key)
                if old is not None:
                    e = _Entry(e.name, e.key, tuple(max(a, b) for a, b in zip(old.shape, e.shape)),
                               e.how, e.init, e.buffer)
                spec[e.key] = e
        # shared key -> attribute (and state_dict) name: the key itself, the module path
        # of the weight in the standalone model with each variant after an "@"
        self._names: dict[str, str] = {}
        self._legacy: dict[str, str] = {}  # checkpoints before names by path: "w{index}"
        for i, (key, e) in enumerate(sorted(spec.items())):
            attr = key
            self._names[key] = attr
            self._legacy[f"w{i}"] = attr
            if e.buffer:
                dtype = torch.long if e.how == "scalar" else torch.float32
                t = torch.zeros(e.shape, dtype=dtype)
                _init_shared(t, e.init, generator)
                self.register_buffer(attr, t)
            else:
                p = nn.Parameter(torch.empty(e.shape))
                _init_shared(p, e.init, generator)
                self.register_parameter(attr, p)
        self._plans: OrderedDict[Arch, _Plan] = OrderedDict()

    def _skeleton(self, arch: Arch) -> VisionTransformer:
        return build_model(arch, num_classes=self.space.num_classes, in_chans=self.space.in_chans,
                           device="meta")

    def shared_keys(self) -> dict[str, str]:
        """Shared-tensor name -> attribute name (for inspection and tests)."""
        return dict(self._names)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; also reads checkpoints written when the shared
        tensors were named by position (``w0``, ``w1``, ... in sorted key order)."""
        if state_dict and all(k in self._legacy for k in state_dict):
            state_dict = {self._legacy[k]: v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _plan(self, arch: Arch) -> _Plan:
        plan = self._plans.get(arch)
        if plan is not None:
            self._plans.move_to_end(arch)
            return plan
        canon = canonicalize(self.space, arch)
        model = self._skeleton(canon)
        entries = _entries(model, blocks=self.block_sharing, groups=self._groups)
        for e in entries:
            attr = self._names.get(e.key)
            if attr is None:
                raise ArchError(f"supernet of space {self.space.name} has no weight {e.key}")
            have = tuple(getattr(self, attr).shape)
            if e.how not in ("scalar", "interp") and any(a > b for a, b in zip(e.shape, have)):
                raise ArchError(f"weight {e.key}: subnet needs {e.shape}, supernet has {have}")
        plan = _Plan(model, [(e, getattr(self, self._names[e.key])) for e in entries])
        self._plans[arch] = plan
        while len(self._plans) > self.cache_size:
            self._plans.popitem(last=False)
        return plan

    def subnet_tensors(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The standalone model's state, as (differentiable) views of the shared weights."""
        return {e.name: _slice(t, e) for e, t in self._plan(arch).entries}

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        plan = self._plan(arch)
        plan.model.train(self.training)
        if torch.is_grad_enabled():
            return functional_call(plan.model, self.subnet_tensors(arch), (x,))
        plan.refresh()  # no autograd: run the model whose weights alias the shared ones
        return plan.model(x)

    def extract(self, arch: Arch) -> VisionTransformer:
        """A standalone model of ``arch`` holding copies of the sliced weights."""
        arch = canonicalize(self.space, arch)
        model = self._skeleton(arch)
        state = {k: v.detach().clone() for k, v in self.subnet_tensors(arch).items()}
        model.load_state_dict(state, assign=True)
        return model.train(self.training)

    def _apply(self, fn, recurse=True):
        self._plans.clear()  # cached aliases point at the old tensors
        return super()._apply(fn, recurse)


_DERIVED = ("sparse", "interp", "heads_out", "heads_in")  # slices that may be copies


class _Plan:
    """A subnet's standalone model whose tensors alias slices of the shared weights.

    Slices are views, so they follow in-place updates of the shared weights; the few
    derived tensors (2:4 masks, interpolated positional embeddings, head-wise slices
    that are not contiguous) are recomputed when the version counter of their source
    changes.
    """

    def __init__(self, model: nn.Module, entries: list[tuple[_Entry, torch.Tensor]]):
        self.model, self.entries = model, entries
        self._derived: list[tuple[_Entry, torch.Tensor, int]] = []
        for e, t in entries:
            self._assign(e, _slice(t, e).detach())
            if e.how in _DERIVED:
                self._derived.append((e, t, t._version))

    def _assign(self, e: _Entry, value: torch.Tensor) -> None:
        mod_name, _, leaf = e.name.rpartition(".")
        mod = self.model.get_submodule(mod_name)
        if e.buffer:
            mod._buffers[leaf] = value
        else:
            mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)

    def refresh(self) -> None:
        for i, (e, t, version) in enumerate(self._derived):
            if t._version != version:
                with torch.no_grad():
                    self._assign(e, _slice(t, e).detach())
                self._derived[i] = (e, t, t._version)
