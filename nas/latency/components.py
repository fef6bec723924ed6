"""Standalone modules for component signatures, built from the same classes as the model.

Each builder returns the module (initialised like :func:`nas.model.vit.build_model`
does, in eval mode) and example inputs, so a component is timed exactly as it runs
inside :class:`nas.model.vit.VisionTransformer`.

Example:
    >>> module, inputs = build_component(sig, batch_size=1)  # doctest: +SKIP
    >>> module(*inputs)  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas.arch import StageArch
from nas.latency.signatures import STAGE_LEVEL_DIMS, Signature
from nas.model.layers import AbsPosEmbed, ConvDownsample, ConvPosEmbed, Head, MergeDownsample, Stem
from nas.model.vit import Block, Stage, init_weights

__all__ = ["TokenReduction", "build_component", "BUILDERS"]


class TokenReduction(nn.Module):
    """In-stage token reduction followed by its restore, run by a real :class:`Stage`.

    The stage is built for ``tokens`` tokens reduced to ``keep`` from block 0 on (its
    single block is never run), so its ``_reduce``/``_restore`` are exactly the model's.
    """

    def __init__(self, method: str, tokens: int, keep: int, dim: int):
        super().__init__()
        s = StageArch(depth=1, embed_dim=dim, mixer="identity", mlp_ratio=0.25,
                      keep_ratio=keep / tokens, reduce_method=method, reduce_at=0)
        self.stage = Stage(s, dim, (1, tokens))
        if self.stage.keep != keep:
            raise ValueError(f"reduce signature: {tokens} tokens at ratio {keep / tokens} keep "
                             f"{self.stage.keep}, not {keep}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, state = self.stage._reduce(x)
        return self.stage._restore(y, state, x)


def _tokens(b: int, n: int, c: int) -> torch.Tensor:
    return torch.randn(b, n, c)


def _stem(p: dict, b: int) -> tuple[nn.Module, tuple]:
    m = Stem(p["kind"], p["in_chans"], p["dim"], p["stride"], norm=p.get("norm", "layernorm"),
             act=p.get("act", "gelu"))
    return m, (torch.randn(b, p["in_chans"], p["resolution"], p["resolution"]),)


def _down(p: dict, b: int) -> tuple[nn.Module, tuple]:
    h, w = p["grid"]
    if p["kind"] == "merge":
        m: nn.Module = MergeDownsample(p["cin"], p["cout"], p["stride"], mlp_ratio=p["mlp_ratio"],
                                       norm=p["norm"], act=p["act"])
    else:
        m = ConvDownsample(p["cin"], p["cout"], p["stride"], norm=p["norm"])
    return m, (_tokens(b, h * w, p["cin"]), (h, w))


def _pos(p: dict, b: int) -> tuple[nn.Module, tuple]:
    grid = tuple(p["grid"])
    m = AbsPosEmbed(p["dim"], grid) if p["kind"] == "absolute" else ConvPosEmbed(p["dim"])
    return m, (_tokens(b, grid[0] * grid[1], p["dim"]), grid)


def _block(p: dict, b: int) -> tuple[nn.Module, tuple]:
    dims = {k: v for k, v in p.items() if k not in ("tokens", "grid")}
    bad = sorted(set(dims) & STAGE_LEVEL_DIMS)
    if bad:
        raise ValueError(f"block signature holds stage-level dims {bad}")
    s = StageArch(**dims)
    grid = tuple(p["grid"]) if p["grid"] is not None else None
    return Block(s, p["tokens"]), (_tokens(b, p["tokens"], s.embed_dim), grid)


def _reduce(p: dict, b: int) -> tuple[nn.Module, tuple]:
    return (TokenReduction(p["method"], p["tokens"], p["keep"], p["dim"]),
            (_tokens(b, p["tokens"], p["dim"]),))


def _head(p: dict, b: int) -> tuple[nn.Module, tuple]:
    return Head(p["dim"], p["classes"], norm=p["norm"]), (_tokens(b, p["tokens"], p["dim"]),)


BUILDERS: dict[str, Callable[[dict, int], tuple[nn.Module, tuple]]] = {
    "stem": _stem, "down": _down, "pos": _pos, "block": _block, "reduce": _reduce, "head": _head,
}


def build_component(sig: Signature, *, batch_size: int, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, tuple[Any, ...]]:
    """The eval-mode fp32 module of ``sig`` and inputs for one forward at ``batch_size``.

    ``device="meta"`` allocates nothing (for shape and FLOP checks).
    """
    with torch.device(device):
        module, inputs = BUILDERS[sig.kind](dict(sig.params), batch_size)
        module.apply(init_weights)
    return module.eval(), inputs
