"""A closed-form cost model of an architecture: approximate MACs, params and latency.

Used where building models is too slow: the synthetic search objective (tests and
benchmarks) and the choice of latency calibration subnets that cover a space
(:func:`nas.latency.profile.calibration_archs`). For exact counts build the model:
:func:`nas.complexity.count_macs`.

Example:
    >>> from nas.arch import extreme_arch
    >>> from nas.space import load_space
    >>> space = load_space("tiny32")
    >>> small, big = (analytic_cost(extreme_arch(space, w))[0] for w in ("min", "max"))
    >>> small < big
    True
"""
from __future__ import annotations

from nas.arch import Arch
from nas.mixer_registry import get_mixer

__all__ = ["analytic_cost"]


def analytic_cost(arch: Arch) -> tuple[float, float, float]:
    """(MACs, params, latency ms) of a closed-form cost model of ``arch``.

    No model is built, so thousands of archs cost milliseconds; MACs and params are
    approximate (each mixer's own formula, ``MixerSpec.cost``), the latency a rough
    formula for tests and benchmarks (the synthetic objective)."""
    side = max(1, arch.resolution // arch.stem_stride)
    cin = arch.stages[0].embed_dim
    macs = 3.0 * cin * arch.stem_stride ** 2 * side * side
    params = 3.0 * cin * arch.stem_stride ** 2
    blocks = 0
    for s in arch.stages:
        side = max(1, -(-side // s.stride))
        tokens, d = side * side, s.embed_dim
        if s.stride > 1 or cin != d:
            k = 9 if s.downsample == "conv" else 4
            macs += tokens * cin * d * k
            params += cin * d * k
        for b in range(s.depth):
            reduced = s.keep_ratio < 1 and b >= s.reduce_at
            t = max(1, int(tokens * s.keep_ratio)) if reduced else tokens
            m, p = _block_cost(s, t, d)
            macs, params, blocks = macs + m, params + p, blocks + 1
        cin = d
    latency = 0.08 + 0.03 * blocks + macs / 2.0e7
    return macs, params, latency


def _block_cost(s, t: int, d: int) -> tuple[float, float]:
    cost = get_mixer(s.mixer).cost  # the mixer's own formula (nas.mixer_registry)
    mix, par = cost(s, t, d) if cost is not None else (0.0, 0.0)
    hidden = d * s.mlp_ratio
    rank = min(d, hidden) * s.low_rank
    ffn = 2 * d * hidden if s.low_rank >= 1 else 2 * rank * (d + hidden)
    if s.sparsity == "2:4":
        ffn *= 0.6
    ffn *= 1 + 2 * s.sandwich
    extra = 9 * hidden * s.ffn_conv + 9 * d * s.token_interaction * (1 + 2 * s.sandwich)
    return mix + t * (ffn + extra), par + ffn + extra
