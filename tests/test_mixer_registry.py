"""The mixer registry: a mixer registered in a few lines works everywhere, and the
built-in specs agree with the stage schema and with the tuples they replaced."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from nas.arch import StageArch, active_dims, extreme_arch, sample_arch, space_contains, walk_arch
from nas.costmodel import analytic_cost
from nas.encoding import count_archs, decode_arch, encode_arch, encoding_names
from nas.errors import SpaceError
from nas.latency.signatures import _all_paths, arch_signatures, space_signatures
from nas.mixer_registry import (
    MIXER_DIMS,
    MixerSpec,
    get_mixer,
    mixer_names,
    register_mixer,
    unregister_mixer,
)
from nas.model.mixers import MIXERS as BUILDERS
from nas.space import (
    ATTENTION_MIXERS,
    GRID_FREE_MIXERS,
    MIXERS,
    STAGE_DIMS,
    StageSpace,
    parse_space,
)
from nas.supernet import Supernet

TOY = "toy_conv1d"
RAW = {
    "name": "toy", "num_classes": 4, "resolution": [16], "stem_stride": [4],
    "stage_defaults": {"heads": [1, 2], "kernel": [3, 5], "mlp_ratio": [2]},
    "stages": [
        {"depth": [1, 2], "embed_dim": [16, 32], "mixer": ["mhsa", TOY],
         "keep_ratio": [1.0, 0.5], "reduce_at": [1]},
        {"depth": [1], "embed_dim": [32], "stride": [2], "mixer": [TOY, "pool"]},
    ],
}


class TokenConv1d(nn.Module):
    """Toy mixer: a depthwise 1-D convolution along the token sequence (any token set)."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


@pytest.fixture
def toy():
    """The toy mixer, registered for one test only."""
    spec = register_mixer(MixerSpec(
        name=TOY, builder=lambda s, dim, tokens: TokenConv1d(dim, s.kernel), dims=("kernel",),
        grid_free=True, cost=lambda s, t, d: (t * d * s.kernel, d * s.kernel)))
    try:
        yield spec
    finally:
        unregister_mixer(TOY)


def _agree(net: Supernet, arch) -> None:
    x = torch.randn(2, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = net(x, arch)
        model = net.extract(arch).eval()
        b = model(x)
    assert a.shape == (2, 4) and torch.isfinite(a).all()
    assert (a - b).abs().max().item() <= 1e-5
    assert any(isinstance(m, TokenConv1d) for m in model.modules())


def test_toy_mixer_everywhere(toy):
    space = parse_space(RAW)
    assert TOY in space.stages[0].mixer
    rng = np.random.default_rng(0)
    archs = [sample_arch(space, rng) for _ in range(80)]
    toys = [a for a in archs if a.stages[0].mixer == TOY]
    assert toys and any(a.stages[0].keep_ratio < 1 for a in toys)  # grid-free: reduction allowed
    assert {a.stages[0].kernel for a in toys} == {3, 5}
    for a in toys:
        dims = active_dims(a.stages[0], None)
        assert "kernel" in dims and "heads" not in dims
        assert space_contains(space, a) == (True, "")

    names = encoding_names(space)
    assert f"stages[0].mixer={TOY}" in names and "stages[0].kernel" in names
    for a in archs:
        assert decode_arch(space, encode_arch(space, a)) == a
    every = set(_all_paths(lambda choose: walk_arch(space, lambda w, n, valid: choose(valid))))
    assert len(every) == count_archs(space)
    assert analytic_cost(toys[0])[0] > 0

    net = Supernet(space, generator=torch.Generator().manual_seed(0)).eval()
    assert any(f"@{TOY}/" in k for k in net.shared_keys())
    for which in ("min", "max"):
        _agree(net, extreme_arch(space, which, mixers=(TOY, TOY)))
    _agree(net, next(a for a in toys if a.stages[0].keep_ratio < 1))

    sigs = arch_signatures(toys[0], num_classes=4, in_chans=3)
    assert any(s.kind == "block" and s.get("mixer") == TOY for s in sigs)
    blocks = [s for s in space_signatures(space) if s.kind == "block" and s.get("mixer") == TOY]
    assert {s.get("kernel") for s in blocks} == {3, 5}
    assert any(s.get("grid") is None for s in blocks)  # blocks after token reduction


def test_toy_mixer_is_gone_after_the_test():
    assert TOY not in mixer_names()
    with pytest.raises(SpaceError, match=f"stages\\[0\\].mixer\\[1\\]: got '{TOY}', allowed: mhsa"):
        parse_space(RAW)


def test_grid_bound_mixer_blocks_token_reduction(toy):
    spec = dataclasses.replace(toy, name="toy_grid", grid_free=False)
    register_mixer(spec)
    try:
        raw = {**RAW, "stages": [{**RAW["stages"][0], "mixer": ["toy_grid"], "keep_ratio": [0.5]}]}
        with pytest.raises(SpaceError, match=r"keep_ratio: token reduction breaks the token grid "
                                             r"that \['toy_grid'\]"):
            parse_space(raw)
    finally:
        unregister_mixer("toy_grid")


def test_registry_errors_name_the_allowed_values(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_mixer(toy)
    with pytest.raises(ValueError, match="unknown mixer 'nope'; registered: mhsa, attention"):
        get_mixer("nope")
    with pytest.raises(ValueError, match="unknown mixer dimension 'mlp_ratio'; allowed: pattern"):
        MixerSpec(name="bad", builder=TokenConv1d, dims=("mlp_ratio",))
    with pytest.raises(ValueError, match="variant_dims"):
        MixerSpec(name="bad", builder=TokenConv1d, variant_dims=("kernel",))
    with pytest.raises(TypeError, match="builder"):
        MixerSpec(name="bad", builder=3)


def test_builtins_reproduce_the_tuples_they_replaced():
    builtins = ("mhsa", "attention", "sra", "linear", "cga", "pool", "dwconv", "mlp", "identity")
    assert mixer_names()[:len(builtins)] == MIXERS == builtins  # the encoding's order
    assert ATTENTION_MIXERS == ("mhsa", "attention", "sra", "linear", "cga")
    assert GRID_FREE_MIXERS == ("mhsa", "linear", "mlp", "identity")
    for name in builtins:
        assert callable(BUILDERS[name])


def test_registry_matches_the_stage_schema():
    names = [d.name for d in STAGE_DIMS]
    assert [n for n in names if n in MIXER_DIMS] == list(MIXER_DIMS)
    assert [f.name for f in dataclasses.fields(StageSpace)] == names
    defaults = {f.name: f.default for f in dataclasses.fields(StageArch)}
    assert list(defaults) == names
    for d in STAGE_DIMS:
        assert defaults[d.name] == d.default, d.name
    assert StageArch().mixer in mixer_names()
    for name in mixer_names():
        spec = get_mixer(name)
        assert set(spec.all_dims) <= set(MIXER_DIMS)
        # the walk activates exactly the spec's dims among the mixer dims
        active = active_dims(StageArch(mixer=name, pattern="local"), None) & set(MIXER_DIMS)
        expected = set(spec.all_dims) - ({"density"} if name == "attention" else set())
        assert active == expected, name
