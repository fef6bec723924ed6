"""Timing rounds: each round in its own order, and ground truth spanning a minimum time,
so a burst of a shared VM's slowness cannot hit the same entries in every round."""
from __future__ import annotations

import time
from dataclasses import asdict

from nas.latency import Measurer, profile_space, space_signatures
from nas.latency.measure import Timing
from tests import test_latency as _lat
from tests.test_latency import FAST, _archs

_one_thread, tiny = _lat._one_thread, _lat.tiny  # the same fixtures (autouse, module scope)


def test_each_round_visits_the_entries_in_its_own_order(tiny, tmp_path, monkeypatch):
    """A burst of machine slowness that recurs with the round's period must not hit the
    same entries in every round: rounds are permutations, different ones, reproducible."""
    orders: list[list[str]] = []
    original = Measurer.measure

    def recording(self, keys):
        orders.append(list(keys))
        return original(self, keys)

    monkeypatch.setattr(Measurer, "measure", recording)
    monkeypatch.setattr(Measurer, "measure_archs", lambda self, archs, rounds=1, keep=False: [
        {"min": 1.0, "median": 1.0, "iqr": 0.0} for _ in archs])
    profile_space(tiny, out=tmp_path / "t.json", calibrate=4,
                  **{**FAST, "rounds": 2, "save_every": 10_000})
    keys = [g.key for g in space_signatures(tiny)]
    first, second = orders
    assert sorted(first) == sorted(second) == sorted(keys)
    assert first != second and first != keys
    orders.clear()
    profile_space(tiny, out=tmp_path / "u.json", calibrate=4,
                  **{**FAST, "rounds": 2, "save_every": 10_000})
    assert orders == [first, second]  # seeded: the same profile visits the same way
    from nas.latency.profile import round_order
    assert round_order(list(range(50)), 0, 1) != round_order(list(range(50)), 0, 2)
    assert sorted(round_order(list(range(50)), -3, 7)) == list(range(50))


def test_ground_truth_rounds_after_the_first_are_shuffled(tiny, monkeypatch):
    import nas.latency.measure as measure_mod

    seen: list[int] = []
    monkeypatch.setattr(measure_mod, "time_module", lambda model, inputs, spec, timing: (
        seen.append(id(model)) or {"min": float(len(seen)), "median": float(len(seen))}))
    m = Measurer({"type": "cpu", "name": "x", "dtype": "fp32", "batch_size": 1, "threads": 1},
                 asdict(Timing(min_run_time=0.002, warmup=1)), num_classes=tiny.num_classes,
                 in_chans=tiny.in_chans)
    archs = [a.to_dict() for a in _archs(tiny, 12, seed=3)]
    stats = m.measure_archs(archs, rounds=3)
    rounds = [seen[i * 12:(i + 1) * 12] for i in range(3)]
    assert sorted(rounds[1]) == sorted(rounds[2]) == sorted(rounds[0])
    assert rounds[1] != rounds[0] and rounds[2] != rounds[1]
    # every arch keeps its fastest (here: first) round, in the order it was given
    assert [s["min"] for s in stats] == [float(i + 1) for i in range(12)]


def test_short_ground_truth_lists_get_rounds_until_they_span_the_minimum(tiny, monkeypatch):
    """7 subnets in 4 quick rounds fit inside one burst of VM slowness: rounds are added
    until they span ``min_span_s``, each arch keeping its fastest."""
    import nas.latency.measure as measure_mod

    calls: list[int] = []

    def fake(model, inputs, spec, timing):
        calls.append(id(model))
        time.sleep(0.005)
        ms = 1.0 if len(calls) > 3 * 3 else 2.0  # the first three rounds are "slow"
        return {"min": ms, "median": ms}

    monkeypatch.setattr(measure_mod, "time_module", fake)
    m = Measurer({"type": "cpu", "name": "x", "dtype": "fp32", "batch_size": 1, "threads": 1},
                 asdict(Timing(min_run_time=0.002, warmup=1)), num_classes=tiny.num_classes,
                 in_chans=tiny.in_chans)
    archs = [a.to_dict() for a in _archs(tiny, 3, seed=4)]
    stats = m.measure_archs(archs, rounds=2, min_span_s=0.2)
    assert len(calls) % 3 == 0 and len(calls) // 3 >= 10  # >= 0.2 s at ~15 ms a round
    assert [s["min"] for s in stats] == [1.0] * 3
    calls.clear()
    assert [s["min"] for s in m.measure_archs(archs, rounds=2)] == [2.0] * 3  # no span: 2 rounds
    assert len(calls) == 6
    calls.clear()
    m.measure_archs(archs, rounds=1, min_span_s=60.0, max_rounds=5)
    assert len(calls) == 15  # capped


def test_kept_models_are_built_once_and_timed_again(tiny, monkeypatch):
    """``keep``: a later call times the very model an earlier call built (as the rounds of
    one ground-truth call do); without it every call builds afresh."""
    import nas.latency.measure as measure_mod

    seen: list = []
    monkeypatch.setattr(measure_mod, "time_module", lambda model, inputs, spec, timing: (
        seen.append((model, inputs[0])) or {"min": 1.0, "median": 1.0}))
    m = Measurer({"type": "cpu", "name": "x", "dtype": "fp32", "batch_size": 2, "threads": 1},
                 asdict(Timing(min_run_time=0.002, warmup=1)), num_classes=tiny.num_classes,
                 in_chans=tiny.in_chans)
    a, b = (x.to_dict() for x in _archs(tiny, 2, seed=5))
    m.measure_archs([a], keep=True)
    m.measure_archs([b], keep=True)
    m.measure_archs([dict(reversed(list(a.items())))], keep=True)  # same arch, keys reordered
    m.measure_archs([a])
    (ma, xa), (mb, _), (ma2, xa2), (fresh, _) = seen
    assert ma2 is ma and xa2 is xa and mb is not ma
    assert fresh is not ma and xa.shape[0] == 2


def test_profile_builds_each_calibration_subnet_once(tiny, tmp_path, monkeypatch):
    """Calibration subnets are timed like the ground truth: built once, the same model in
    every round; above batch 16 twice the rounds."""
    import nas.latency.measure as measure_mod
    from nas.latency.profile import (
        CALIBRATION_ROUNDS,
        CALIBRATION_ROUNDS_LARGE,
        calibration_rounds_per_round,
    )

    built: list = []
    original = measure_mod.build_model
    monkeypatch.setattr(measure_mod, "build_model",
                        lambda *a, **kw: built.append(a[0]) or original(*a, **kw))
    monkeypatch.setattr(Measurer, "measure", lambda self, keys: [
        {"min": 1.0, "median": 1.0, "iqr": 0.0, "ops": 1} for _ in keys])
    monkeypatch.setattr(measure_mod, "time_module", lambda model, inputs, spec, timing: {
        "min": 1.0, "median": 1.0, "iqr": 0.0, "blocks": 1, "ops": 1})
    table = profile_space(tiny, out=tmp_path / "t.json", calibrate=3,
                          **{**FAST, "rounds": 2, "retime": 0})
    assert len(built) == 3 and len(set(map(str, built))) == 3
    assert {s["rounds"] for s in table.calibration["samples"]} == {2 * CALIBRATION_ROUNDS}
    assert calibration_rounds_per_round(16) == CALIBRATION_ROUNDS
    assert calibration_rounds_per_round(17) == CALIBRATION_ROUNDS_LARGE > CALIBRATION_ROUNDS
    built.clear()
    table = profile_space(tiny, out=tmp_path / "b32.json", calibrate=2, batch_size=32,
                          **{**FAST, "rounds": 1, "retime": 0})
    assert len(built) == 2
    assert table.timing["calibration_rounds"] == CALIBRATION_ROUNDS_LARGE
    assert {s["rounds"] for s in table.calibration["samples"]} == {CALIBRATION_ROUNDS_LARGE}


def test_default_calibration_count_drops_above_batch_16(tiny, tmp_path, monkeypatch, caplog):
    """30 calibration subnets by default, 20 (the same set's first 20) above batch 16; a
    table holding more of the same set keeps them quietly, another set with a warning."""
    import logging

    import nas.latency.measure as measure_mod
    from nas.latency.profile import (
        CALIBRATION_SUBNETS,
        CALIBRATION_SUBNETS_LARGE,
        calibration_archs,
        calibration_subnets,
    )

    assert calibration_subnets(16) == CALIBRATION_SUBNETS == 30
    assert calibration_subnets(17) == CALIBRATION_SUBNETS_LARGE == 20
    monkeypatch.setattr(Measurer, "measure", lambda self, keys: [
        {"min": 1.0, "median": 1.0, "iqr": 0.0, "ops": 1} for _ in keys])
    monkeypatch.setattr(measure_mod, "time_module", lambda model, inputs, spec, timing: {
        "min": 1.0, "median": 1.0, "iqr": 0.0, "blocks": 1, "ops": 1})
    kw = {**FAST, "rounds": 1, "retime": 0, "outlier_passes": 0}
    big = profile_space(tiny, out=tmp_path / "b32.json", batch_size=32, **kw)
    assert set(big.calibration_archs()) == set(calibration_archs(tiny, 20, 0))
    small = profile_space(tiny, out=tmp_path / "b1.json", **kw)
    assert set(small.calibration_archs()) == set(calibration_archs(tiny, 30, 0))
    with caplog.at_level(logging.INFO, logger="nas.latency.profile"):
        again = profile_space(tiny, out=tmp_path / "b1.json", calibrate=20, **kw)
    assert len(again.calibration_archs()) == 30
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nas.latency.profile"):
        other = profile_space(tiny, out=tmp_path / "b1.json", seed=5, **kw)
    assert set(other.calibration_archs()) == set(small.calibration_archs())
    assert any("another set of subnets" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
