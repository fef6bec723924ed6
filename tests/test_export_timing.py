"""Export timing: which inference rewrites to keep, timed side by side in interleaved
rounds, and the last timing beside a latency table's calibration subnets
(:mod:`nas.export.timing`)."""
from __future__ import annotations

import pytest
import torch

from nas.arch import canonicalize, load_arch
from nas.export.timing import (
    choose_rewrite_set,
    decide_rewrites,
    measure_side_by_side,
    rewrite_name,
)
from nas.model import build_model
from nas.space import load_space

from .conftest import ROOT


def test_choose_rewrite_set_keeps_only_the_rewrites_that_pay(monkeypatch):
    from types import SimpleNamespace

    import nas.export.timing as ex

    cost = {"fold_bn": -1.0, "fuse_qkv": 0.5, "onednn_linears": -2.0}  # fusing does not pay
    monkeypatch.setattr(ex, "optimize_for_inference", lambda model, **flags: SimpleNamespace(f=flags))
    monkeypatch.setattr(ex, "measure_latency", lambda m, arch, **kw: (
        10 + sum(cost[k] for k, v in m.f.items() if v), "fake"))
    allowed = {"fold_bn": True, "fuse_qkv": True, "onednn_linears": True}
    flags, timed, effects = ex.choose_rewrite_set(None, None, allowed, in_chans=3,
                                                  min_span_s=0.0)
    assert flags == {"fold_bn": True, "fuse_qkv": False, "onednn_linears": True}
    assert effects["fuse_qkv"] > 1 > effects["onednn_linears"] and effects["fold_bn"] < 0.98
    assert len(timed) == 8 and timed["none"] == 10 and timed["fold_bn+onednn_linears"] == 7
    # a rewrite the user switched off is never tried
    flags, timed, effects = ex.choose_rewrite_set(None, None, {**allowed, "fold_bn": False},
                                                  in_chans=3, min_span_s=0.0)
    assert not flags["fold_bn"] and len(timed) == 4 and "fold_bn" not in effects


def test_rewrites_that_change_nothing_are_timed_once(monkeypatch):
    """A model without BatchNorm: every subset with fold_bn is its twin without it."""
    import nas.export.timing as ex

    space = load_space("imagenet224")
    arch = canonicalize(space, load_arch(ROOT / "search_spaces/reference/deit_tiny.yaml"))
    model = build_model(arch, num_classes=10).eval()
    timed_models = []

    def fake_measure(m, arch, **_kw):
        timed_models.append(repr(m))
        return 1.0 - 0.1 * len(timed_models) / 100, "fake"  # later calls look faster

    monkeypatch.setattr(ex, "measure_latency", fake_measure)
    allowed = {"fold_bn": True, "fuse_qkv": True, "onednn_linears": False}
    flags, timed, effects = ex.choose_rewrite_set(model, arch, allowed, in_chans=3, rounds=3,
                                                  min_span_s=0.0)
    assert effects["fold_bn"] == 1.0  # every pair is one model timed once
    assert len(timed_models) == 2 * 3 and len(set(timed_models)) == 2  # none, fuse_qkv
    assert timed["fold_bn"] == timed["none"] and timed["fold_bn+fuse_qkv"] == timed["fuse_qkv"]
    assert not flags["fold_bn"]  # never chosen for a tie with a smaller subset


@pytest.mark.parametrize("gain, kept", [(0.01, "none"), (0.10, "fuse_qkv")])
def test_rewrites_are_kept_only_when_they_beat_the_plain_model(monkeypatch, gain, kept):
    """Interleaved rounds, fastest round each; a gain inside the margin keeps the plain model."""
    from nas.export import timing as export_mod

    calls = []

    def fake_measure(model, arch, **_kw):
        name = model.tag
        calls.append(name)
        jitter = 0.5 if len(calls) == 3 else 0.0  # one slow measurement: the min ignores it
        return (1.0 - gain if name == "fuse_qkv" else 1.0) + jitter, "fake"

    def fake_optimize(model, **flags):
        m = torch.nn.Identity()
        m.tag = rewrite_name(flags)
        m.extra_repr = lambda: m.tag  # a distinct model per subset
        return m

    monkeypatch.setattr(export_mod, "measure_latency", fake_measure)
    monkeypatch.setattr(export_mod, "optimize_for_inference", fake_optimize)
    allowed = {"fold_bn": True, "fuse_qkv": True, "onednn_linears": False}
    flags, timed, _ = choose_rewrite_set(torch.nn.Identity(), None, allowed, in_chans=3,
                                         rounds=3, min_span_s=0.0)
    assert rewrite_name(flags) == kept and flags["onednn_linears"] is False
    assert sorted(timed) == ["fold_bn", "fold_bn+fuse_qkv", "fuse_qkv", "none"]
    assert len(calls) == 12 and calls[:4] != calls[4:8]  # every round, order rotated
    assert timed["fuse_qkv"] == pytest.approx(1.0 - gain)


@pytest.mark.parametrize("choose", [True, False])
def test_decide_rewrites_drops_a_set_slower_than_the_plain_model(monkeypatch, choose):
    import nas.export.timing as timing

    on = {"fold_bn": True, "fuse_qkv": False, "onednn_linears": True}
    chosen = []
    monkeypatch.setattr(timing, "choose_rewrite_set", lambda model, arch, allowed, **kw: (
        chosen.append(allowed) or (on, {"none": 1.0}, {"fold_bn": 0.9})))
    monkeypatch.setattr(timing, "optimize_for_inference", lambda model, **flags: rewrite_name(flags))
    side = {"fast": 0.9}
    monkeypatch.setattr(timing, "measure_side_by_side", lambda models, *a, **kw: (
        [side["fast"] if models[0] != "none" else 1.0, 1.0], "fake setting"))
    allowed = {"fold_bn": True, "fuse_qkv": True, "onednn_linears": True}
    d = decide_rewrites("plain", None, allowed, in_chans=3, choose=choose)
    assert d.flags == (on if choose else allowed) and d.dropped is None
    assert (d.measured, d.measured_plain, d.setting) == (0.9, 1.0, "fake setting")
    assert (d.timed, d.effects) == (({"none": 1.0}, {"fold_bn": 0.9}) if choose else ({}, {}))
    assert len(chosen) == int(choose)
    side["fast"] = 1.01  # slower than the plain model side by side: dropped
    d = decide_rewrites("plain", None, allowed, in_chans=3, choose=choose)
    assert d.dropped == rewrite_name(on if choose else allowed)
    assert not any(d.flags.values()) and d.measured == d.measured_plain == 1.0


def test_with_no_rewrite_kept_the_plain_model_is_timed_alone(monkeypatch):
    """No rewrite kept: the export computes what the plain model does, so one timing
    stands for both (two copies timed side by side read 5% apart in a slow phase)."""
    import nas.export.timing as timing

    none = {"fold_bn": False, "fuse_qkv": False, "onednn_linears": False}
    monkeypatch.setattr(timing, "choose_rewrite_set", lambda *a, **kw: (
        dict(none), {"none": 1.0}, {"fold_bn": 1.0}))
    timed = []
    monkeypatch.setattr(timing, "measure_side_by_side", lambda models, *a, **kw: (
        timed.append(list(models)) or ([1.0 + 0.05 * i for i in range(len(models))], "s")))
    d = decide_rewrites("plain", None, dict.fromkeys(none, True), in_chans=3)
    assert timed == [["plain"]]
    assert (d.flags, d.measured, d.measured_plain, d.dropped) == (none, 1.0, 1.0, None)
    assert (d.timed, d.effects, d.setting) == ({"none": 1.0}, {"fold_bn": 1.0}, "s")
    timed.clear()
    d = decide_rewrites("plain", None, none, in_chans=3, choose=False)
    assert timed == [["plain"]] and d.measured == d.measured_plain == 1.0


@pytest.mark.parametrize("kept", [True, False])
def test_the_final_timing_runs_beside_anchors_and_again_in_a_slow_phase(monkeypatch, kept):
    """The table's calibration subnets are timed in the same rounds as the export (each
    with its own arch); while they read 10% over their profile timing, all is timed again,
    each model keeping its fastest."""
    import nas.export.timing as timing

    flags = {"fold_bn": kept, "fuse_qkv": False, "onednn_linears": False}
    monkeypatch.setattr(timing, "choose_rewrite_set", lambda *a, **kw: (dict(flags), {}, {}))
    monkeypatch.setattr(timing, "optimize_for_inference", lambda model, **f: "fast")
    true = {"fast": 0.9, "plain": 1.0, "m1": 2.0, "m2": 0.5, "m3": 1.2}
    calls = []

    def side_by_side(models, archs, **kw):
        k = 1.1 if len(calls) < 2 else 1.0  # the first two timings in a slow phase
        calls.append((list(models), list(archs)))
        return [k * true[m] for m in models], "setting"

    monkeypatch.setattr(timing, "measure_side_by_side", side_by_side)
    anchors = [("m1", "a1", 2.0), ("m2", "a2", 0.5), ("m3", "a3", 1.2)]
    d = decide_rewrites("plain", "arch", dict.fromkeys(flags, True), in_chans=3,
                        anchors=anchors)
    mine = ["fast", "plain"] if kept else ["plain"]
    assert [c[0] for c in calls] == [mine + ["m1", "m2", "m3"]] * 3
    assert calls[0][1] == ["arch"] * len(mine) + ["a1", "a2", "a3"]
    assert (d.measured, d.measured_plain) == ((0.9, 1.0) if kept else (1.0, 1.0))
    assert d.anchors_ratio == pytest.approx(1.0) and d.setting == "setting"
    calls.clear()
    true.update(m1=2.4, m2=0.6, m3=1.44)  # a phase that lasts: kept after 2 retries
    d = decide_rewrites("plain", "arch", dict.fromkeys(flags, True), in_chans=3,
                        anchors=anchors)
    assert len(calls) == 3 and d.anchors_ratio == pytest.approx(1.2)
    assert decide_rewrites("plain", "arch", flags, in_chans=3, choose=False).anchors_ratio is None


def test_exported_and_plain_are_timed_side_by_side_over_the_span(monkeypatch):
    """Interleaved rounds until they span the minimum, each model keeping its fastest:
    one slow stretch (a burst of VM slowness) cannot land on one model only."""
    import time

    import nas.export.timing as export_mod

    calls: list[str] = []

    def fake(model, arch, **kw):
        calls.append(model)
        time.sleep(0.005)
        return (3.0 if len(calls) <= 2 else 1.0 + (model == "b")), "setting"

    monkeypatch.setattr(export_mod, "measure_latency", fake)
    (a, b), setting = measure_side_by_side(["a", "b"], None, in_chans=3, min_span_s=0.15)
    assert (a, b, setting) == (1.0, 2.0, "setting")
    assert len(calls) >= 2 * 10 and calls[:4] == ["a", "b", "b", "a"]  # order rotates
    calls.clear()
    measure_side_by_side(["a", "b"], None, in_chans=3, min_span_s=0.0, rounds=3)
    assert len(calls) == 6
