"""Architectures: sampling, membership, mutation, encoding, counting, files."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.arch import (
    Arch,
    canonicalize,
    crossover_arch,
    extreme_arch,
    load_arch,
    mutate_arch,
    sample_arch,
    sample_mixers,
    space_contains,
    walk_arch,
)
from nas.cli import main
from nas.complexity import count_macs, count_params
from nas.encoding import count_archs, decode_arch, encode_arch, encoding_names
from nas.errors import ArchError
from nas.space import parse_space

from .conftest import SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_sampling_is_reproducible_and_valid(spaces, name):
    space = spaces[name]
    a = [sample_arch(space, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    archs = [sample_arch(space, rng) for _ in range(100)]
    assert len(set(archs)) > 90
    for arch in archs:
        assert space_contains(space, arch) == (True, "")


@pytest.mark.parametrize("name", SHIPPED)
def test_encode_decode_roundtrip(spaces, name):
    space = spaces[name]
    rng = np.random.default_rng(1)
    n = len(encoding_names(space))
    for _ in range(100):
        arch = sample_arch(space, rng)
        vec = encode_arch(space, arch)
        assert vec.shape == (n,) and vec.dtype == np.float32
        assert decode_arch(space, vec) == arch


@pytest.mark.parametrize("name", SHIPPED)
def test_mutation_and_crossover_stay_in_space(spaces, name):
    space = spaces[name]
    rng = np.random.default_rng(2)
    for _ in range(50):
        a, b = sample_arch(space, rng), sample_arch(space, rng)
        m = mutate_arch(space, a, rng, prob=0.05)
        c = crossover_arch(space, a, b, rng)
        assert m != a
        assert space_contains(space, m)[0] and space_contains(space, c)[0]


def test_dict_yaml_json_roundtrip(spaces, tmp_path):
    space = spaces["full32"]
    rng = np.random.default_rng(3)
    for _ in range(20):
        arch = sample_arch(space, rng)
        assert Arch.from_dict(arch.to_dict()) == arch
        assert Arch.from_dict(arch.to_dict(full=True)) == arch
        p = tmp_path / "a.yaml"
        p.write_text(arch.to_yaml())
        assert load_arch(p) == arch
        assert load_arch(arch.to_json()) == arch


def test_contains_explains(spaces):
    space = spaces["tiny32"]
    arch = sample_arch(space, np.random.default_rng(0))
    from dataclasses import replace
    bad = replace(arch, stages=(replace(arch.stages[0], embed_dim=40),) + arch.stages[1:])
    ok, reason = space_contains(space, bad)
    assert not ok and "stages[0].embed_dim = 40" in reason and "32, 48, 64" in reason
    with pytest.raises(ArchError, match="stages"):
        canonicalize(space, bad)
    short = replace(arch, stages=arch.stages[:1])
    assert "1 stages" in space_contains(space, short)[1]


def test_attention_with_dense_pattern_is_mhsa(spaces):
    space = spaces["full32"]
    arch = sample_arch(space, np.random.default_rng(0))
    from dataclasses import replace
    s0 = replace(arch.stages[0], mixer="attention", pattern="dense", heads=2, qk_ratio=1.0)
    canon = canonicalize(space, replace(arch, stages=(s0,) + arch.stages[1:]))
    assert canon.stages[0].mixer == "mhsa"


def test_bad_arch_files(tmp_path):
    with pytest.raises(ArchError, match="not found"):
        load_arch(tmp_path / "missing.yaml")
    with pytest.raises(ArchError, match="unknown key"):
        Arch.from_dict({"resolution": 32, "stages": [{"depht": 2}]})
    with pytest.raises(ArchError, match="stages"):
        Arch.from_dict({"resolution": 32})
    with pytest.raises(ArchError, match="malformed"):
        load_arch("{stages: [")


def test_count_matches_enumeration():
    space = parse_space({
        "name": "enum", "num_classes": 3, "resolution": [16], "stem_stride": [4],
        "stage_defaults": {"heads": [1, 2], "qk_ratio": [0.5, 1.0]},
        "stages": [
            {"depth": [1, 2], "embed_dim": [8, 16], "mixer": ["mhsa", "attention", "pool"],
             "pattern": ["dense", "local", "block"], "density": [0.5, 1.0], "kernel": [3, 5],
             "local_fraction": [0.5, 1.0]},
            {"depth": [1, 2], "embed_dim": [16], "stride": [1, 2], "downsample": ["conv", "merge"],
             "mixer": ["linear", "identity"], "keep_ratio": [1.0, 0.5],
             "reduce_method": ["prune", "merge"], "reduce_at": [0, 1], "ffn_conv": [False, True]},
        ]})
    seen = set()

    def enumerate_all():
        # depth-first over every pick, replaying a prefix of choices
        stack = [[]]
        while stack:
            prefix = stack.pop()
            pos = [0]

            def pick(where, name, valid, prefix=prefix, pos=pos):
                i = pos[0]
                pos[0] += 1
                if i < len(prefix):
                    return valid[prefix[i]]
                for j in range(1, len(valid)):
                    stack.append(prefix + [j])
                prefix.append(0)
                return valid[0]

            yield walk_arch(space, pick)

    for arch in enumerate_all():
        seen.add(arch)
    assert len(seen) == count_archs(space)


def test_complexity_counts(spaces):
    space = spaces["tiny32"]
    arch = sample_arch(space, np.random.default_rng(0))
    p = count_params(arch, num_classes=10)
    assert p > 10_000
    assert count_macs(arch, num_classes=10) > p  # every weight is used at least once per token
    assert count_macs(arch, num_classes=10, batch_size=2) == 2 * count_macs(arch, num_classes=10)


def test_cli_arch_info(tmp_path, capsys, spaces):
    arch = sample_arch(spaces["tiny32"], np.random.default_rng(0))
    p = tmp_path / "a.yaml"
    p.write_text(arch.to_yaml())
    assert main(["arch", "info", str(p), "--space", "tiny32"]) == 0
    out = capsys.readouterr().out
    assert "in space    yes" in out and "params" in out
    assert main(["arch", "info", str(p), "--space", "full32"]) == 2
    assert main(["arch", "info", str(tmp_path / "nope.yaml"), "--space", "tiny32"]) == 2
    assert "arch file not found" in capsys.readouterr().err
    _ = itertools  # noqa


@pytest.mark.parametrize("name", SHIPPED)
def test_family_extremes_bracket_their_family(spaces, name):
    """The largest/smallest subnet of a mixer family keeps the family, stays in the
    space, and brackets every sampled subnet of that family in parameters."""
    space = spaces[name]
    rng = np.random.default_rng(0)
    for _ in range(5):
        mixers = sample_mixers(space, rng)
        top, bottom = extreme_arch(space, "max", mixers), extreme_arch(space, "min", mixers)
        for a in (top, bottom):
            assert tuple(s.mixer for s in a.stages) == mixers
            assert space_contains(space, a)[0]
        hi, lo = (count_params(a, num_classes=space.num_classes) for a in (top, bottom))
        assert hi > lo
    global_max = extreme_arch(space, "max")
    assert extreme_arch(space, "max", tuple(s.mixer for s in global_max.stages)) == global_max


def test_family_extremes_reject_bad_mixers(spaces):
    space = spaces["tiny32"]
    with pytest.raises(ArchError, match="one per stage"):
        extreme_arch(space, "max", ("mhsa",))
    with pytest.raises(ArchError, match=r"stages\[1\]\.mixer: 'pool' is not allowed"):
        extreme_arch(space, "max", ("mhsa", "pool"))
