"""One config mechanism: rules, parsing, flags and derived sections agree (nas.settings)."""
from __future__ import annotations

import argparse
import dataclasses
import shlex
from dataclasses import dataclass, fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.latency.config import ProfileConfig
from nas.pipeline_config import (
    PipelineConfig,
    PipelineError,
    PredictorSection,
    ProfileSection,
    SearchSection,
    TrainSection,
)
from nas.predictors.config import CollectConfig, FitConfig
from nas.search.config import SearchConfig
from nas.settings import (
    SettingsError,
    add_flags,
    check_settings,
    given_flags,
    parse_settings,
    setting,
    to_flags,
)
from nas.training.config import ConfigError, TrainConfig


@dataclass(frozen=True, kw_only=True)
class Demo:
    epochs: int = setting(3, "epochs", check=lambda v: v >= 1, rule=">= 1")
    lr: float = setting(0.1, "learning rate", check=lambda v: v > 0, rule="> 0")
    mode: str = setting("a", "mode", choices=("a", "b"))
    hflip: bool = setting(False, "flips")
    workers: int | None = setting(None, "workers", check=lambda v: v >= 1, rule=">= 1")
    formats: tuple[str, ...] = setting(("x", "y"), "formats", choices=("x", "y", "z"))

    def __post_init__(self) -> None:
        check_settings(self, "demo")


@pytest.mark.parametrize("change, match", [
    ({"epochs": 0}, "demo: epochs must be >= 1, got 0"),
    ({"epochs": "3"}, "epochs: expected int"),
    ({"epochs": True}, "epochs: expected int"),
    ({"epochs": 2.5}, "epochs: expected int"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"mode": "c"}, "mode must be one of a, b"),
    ({"hflip": 1}, "hflip: expected bool"),
    ({"workers": 0}, "workers must be >= 1"),
    ({"formats": ("x", "w")}, "formats must be one of x, y, z, got 'w'"),
    ({"formats": "x"}, "formats: expected a list of names"),
    ({"formats": ()}, "formats: expected a list of names"),
])
def test_rules_reject_bad_values_in_one_line(change, match):
    with pytest.raises(SettingsError, match=match) as e:
        Demo(**change)
    assert "\n" not in str(e.value)


def test_values_are_coerced_and_none_allowed_only_where_nullable():
    d = Demo(lr=1, workers=None, formats=["z"])
    assert isinstance(d.lr, float) and d.lr == 1.0 and d.formats == ("z",)
    with pytest.raises(SettingsError, match="epochs must be int"):
        Demo(epochs=None)


def test_parse_settings_rejects_unknown_keys_and_non_mappings():
    assert parse_settings(Demo, {"epochs": 5}, "f.yaml") == Demo(epochs=5)
    assert parse_settings(Demo, None, "f.yaml") == Demo()
    with pytest.raises(SettingsError, match="f.yaml: unknown key.*epoch; allowed: epochs"):
        parse_settings(Demo, {"epoch": 5}, "f.yaml")
    with pytest.raises(SettingsError, match="f.yaml: expected a mapping, got list"):
        parse_settings(Demo, [1], "f.yaml")
    with pytest.raises(SettingsError, match="f.yaml: epochs must be >= 1"):
        parse_settings(Demo, {"epochs": 0}, "f.yaml")


def _parser(cls, **kw) -> tuple[argparse.ArgumentParser, list[str]]:
    p = argparse.ArgumentParser(exit_on_error=False)
    return p, add_flags(p, cls, **kw)


demos = st.builds(Demo, epochs=st.integers(1, 99), lr=st.floats(1e-6, 10),
                  mode=st.sampled_from(("a", "b")), hflip=st.booleans(),
                  workers=st.none() | st.integers(1, 8),
                  formats=st.lists(st.sampled_from(("x", "y", "z")), min_size=1, max_size=3,
                                   unique=True).map(tuple))


@settings(max_examples=60, deadline=None)
@given(demos)
def test_flags_written_from_settings_parse_back_to_the_same_settings(d):
    p, names = _parser(Demo)
    for changed in (False, True):
        args = p.parse_args(shlex.split(to_flags(d, changed=changed)))
        assert Demo(**given_flags(args, names)) == d


def test_flags_left_out_override_nothing():
    p, names = _parser(Demo)
    assert given_flags(p.parse_args([]), names) == {}
    assert given_flags(p.parse_args(["--no-hflip"]), names) == {"hflip": False}


def test_train_config_flags_round_trip_every_field():
    """nas train's flags cover the TrainConfig fields (hidden ones too)."""
    p, names = _parser(TrainConfig)
    cfg = TrainConfig(space="tiny32", data="digits", out="r", epochs=7, weight_decay=0.01,
                      sandwich_rule="classic", hflip=True, workers=2, limit_train=64)
    args = p.parse_args(shlex.split(to_flags(cfg)))
    assert TrainConfig.from_dict(given_flags(args, names)) == cfg
    assert {f.name for f in fields(TrainConfig)} == set(names)


@pytest.mark.parametrize("section, sources", [
    (TrainSection, (TrainConfig,)), (ProfileSection, (ProfileConfig,)),
    (PredictorSection, (CollectConfig, FitConfig)), (SearchSection, (SearchConfig,))])
def test_sections_embed_the_commands_fields(section, sources):
    """One set of defaults: a section's field has its command's default, rule and help,
    except the few nas run decides for itself (documented in nas.pipeline_config)."""
    own = {PredictorSection: {"views": 9, "workers": 1, "refit_images": 1000, "naswot": True},
           ProfileSection: {"min_run_time": 0.025}}.get(section, {})  # nas.pipeline_config's
    for f in fields(section):
        src = [s for s in sources if f.name in {g.name for g in fields(s)}]
        if not src or f.name == "budget_ms":  # nas run's own (budget_ms: null = a quantile)
            continue
        g = {g.name: g for g in fields(src[0])}[f.name]
        assert f.metadata == g.metadata, f.name
        expected = own.get(f.name, g.default)
        assert f.default == expected, f.name


def test_section_errors_name_the_file_and_section():
    with pytest.raises(PipelineError, match="c.yaml: train: epochs must be >= 1, got 0"):
        PipelineConfig.from_dict({"train": {"epochs": 0}}, source="c.yaml")
    with pytest.raises(PipelineError, match="c.yaml: train: unknown key.*learning_rate"):
        PipelineConfig.from_dict({"train": {"learning_rate": 1}}, source="c.yaml")
    with pytest.raises(PipelineError, match="profile: rounds must be >= 1"):
        PipelineConfig.from_dict({"profile": {"rounds": 0}})
    with pytest.raises(ConfigError, match="train config: calib_size must be >= 1"):
        TrainConfig(space="s", data="digits", out="o", calib_size=0)


def test_saved_pipeline_config_loads_into_the_same_dataclasses():
    cfg = PipelineConfig.from_dict({"train": {"epochs": 4, "weight_decay": 0.01},
                                    "search": {"budget_ms": 1}})
    again = PipelineConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.train, TrainSection)
    assert again.search.budget_ms == 1.0
    tc = TrainConfig(space="s", data="digits", out="o", **dataclasses.asdict(again.train))
    assert (tc.epochs, tc.weight_decay) == (4, 0.01)


def _cli(argv: list[str]):
    from nas.cli import build_parser

    return build_parser().parse_args(argv)


def test_hand_written_flags_have_the_settings_defaults():
    """collect, fit and search keep hand-written flags (their modules stay light to import):
    their defaults must be the settings dataclasses' own."""
    a = _cli(["predictor", "collect", "--run", "r", "-n", "3", "--out", "o.csv"])
    for f in fields(CollectConfig):
        assert getattr(a, f.name) == f.default, f.name
    a = _cli(["predictor", "fit", "--data", "t.csv", "--out", "p"])
    for f in fields(FitConfig):
        assert getattr(a, f.name) == f.default, f.name
    a = _cli(["search", "--space", "tiny32", "--out", "s"])
    for name in ("searcher", "trials", "workers"):
        assert getattr(a, name) == {f.name: f.default for f in fields(SearchConfig)}[name], name


@settings(max_examples=25, deadline=None)
@given(epochs=st.integers(1, 50), lr=st.floats(1e-5, 1e-1), hflip=st.booleans(),
       wd=st.sampled_from((0.0, 0.05, 0.1)), rule=st.sampled_from(("family", "classic")),
       limit=st.integers(0, 1000))
def test_the_train_command_nas_run_prints_trains_the_same_config(epochs, lr, hflip, wd, rule,
                                                                 limit):
    from nas.cli._train import config_from_args

    sec = TrainSection(epochs=epochs, lr=lr, hflip=hflip, weight_decay=wd, sandwich_rule=rule,
                       limit_train=limit)
    cmd = f"nas train --space tiny32 --data digits --seed 3 {to_flags(sec, changed=True)} --out r"
    got = config_from_args(_cli(shlex.split(cmd)[1:]))
    want = TrainConfig(space="tiny32", data="digits", out="r", seed=3, **dataclasses.asdict(sec))
    assert got == want


def test_the_profile_command_nas_run_prints_profiles_the_same_setting():
    sec = ProfileSection(threads=2, batch_size=8, rounds=3, allow_busy=True)
    args = _cli(shlex.split(f"profile --space tiny32 {to_flags(sec)} --out t.json"))
    cfg = ProfileConfig(**given_flags(args, args.settings))
    assert all(getattr(cfg, f.name) == getattr(sec, f.name) for f in fields(sec))
