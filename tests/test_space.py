"""Search-space parsing, validation errors and fingerprints."""
from __future__ import annotations

import copy

import pytest
import yaml

from nas.cli import main
from nas.encoding import count_archs
from nas.errors import SpaceError
from nas.space import STAGE_DIMS, load_space, parse_space

from .conftest import ROOT

BASE = {
    "name": "t",
    "num_classes": 4,
    "resolution": [16],
    "stem_stride": [4],
    "stages": [{"depth": [1, 2], "embed_dim": [16, 32], "heads": [1, 2],
                "mixer": ["mhsa", "pool"]}],
}


def test_shipped_spaces_load(spaces):
    for space in spaces.values():
        assert count_archs(space) > 1000
        assert len(space.fingerprint) == 16


def test_every_dimension_is_searchable_in_full32(spaces):
    full = spaces["full32"]
    for d in STAGE_DIMS:
        assert any(len(s.choices(d.name)) > 1 for s in full.stages) or d.name in (
            "density", "sr_ratio", "downsample", "reduce_method", "reduce_at", "keep_ratio",
            "pos_embed", "pattern"), d.name


def test_fingerprint_stable_and_sensitive():
    a = parse_space(BASE)
    b = parse_space(copy.deepcopy(BASE))
    assert a.fingerprint == b.fingerprint
    shuffled = copy.deepcopy(BASE)
    shuffled["stages"][0]["embed_dim"] = [32, 16]  # order of choices does not matter
    assert parse_space(shuffled).fingerprint == a.fingerprint
    changed = copy.deepcopy(BASE)
    changed["stages"][0]["embed_dim"] = [16, 48]
    assert parse_space(changed).fingerprint != a.fingerprint


def test_defaults_fill_stages():
    raw = copy.deepcopy(BASE)
    raw["stage_defaults"] = {"mlp_ratio": [2, 4]}
    space = parse_space(raw)
    assert space.stages[0].mlp_ratio == (2.0, 4.0)
    assert space.stages[0].norm == ("layernorm",)


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r["stages"][0].update(mixer=["mhsa", "nope"]), "stages[0].mixer[1]: got 'nope'"),
    (lambda r: r["stages"][0].update(depth=[]), "stages[0].depth: empty choice list"),
    (lambda r: r["stages"][0].update(bogus=[1]), "stages[0].bogus: unknown key"),
    (lambda r: r.update(colour="red"), "colour: unknown key"),
    (lambda r: r["stages"][0].update(kernel=[4]), "stages[0].kernel[0]: got 4, allowed: odd"),
    (lambda r: r["stages"][0].update(qk_ratio=[1.5]), "stages[0].qk_ratio[0]"),
    (lambda r: r["stages"][0].update(embed_dim=[30], heads=[4]), "no choice divides embed_dim 30"),
    (lambda r: r.pop("stages"), "missing required key 'stages'"),
    (lambda r: r["stages"][0].update(keep_ratio=[0.5]), "keep_ratio: token reduction"),
])
def test_invalid_spaces_name_the_key(mutate, needle):
    raw = copy.deepcopy(BASE)
    mutate(raw)
    with pytest.raises(SpaceError) as e:
        parse_space(raw, source="x.yaml")
    assert needle in str(e.value)
    assert str(e.value).startswith("x.yaml")


def test_malformed_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nstages: [\n")
    with pytest.raises(SpaceError, match=r"bad.yaml: malformed YAML \(line"):
        load_space(p)


def test_unknown_shipped_name():
    with pytest.raises(SpaceError, match="tiny32"):
        load_space("no_such_space")


def test_cli_space_commands(capsys, tmp_path):
    assert main(["space", "validate", "tiny32"]) == 0
    assert "fingerprint" in capsys.readouterr().out
    assert main(["space", "show", str(ROOT / "search_spaces" / "tiny32.yaml")]) == 0
    assert "size" in capsys.readouterr().out
    assert main(["space", "sample", "tiny32", "-n", "3", "--seed", "1"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(docs) == 3 and all("stages" in d for d in docs)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [{mixer: [nope]}]\n")
    assert main(["space", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stages[0].mixer[0]" in err and "allowed: mhsa" in err
