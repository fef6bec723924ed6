"""Whole models keep their k-th fastest round (``round_statistic``), in the ground truth and
in a table's calibration samples alike, so the correction learns the level it is judged on."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from nas.arch import extreme_arch
from nas.errors import ArtifactError
from nas.latency import LatencyTable, Measurer, profile_space
from nas.latency.measure import ROUNDS_PER_RANK, Timing, round_statistic
from tests import test_latency as _lat
from tests.test_latency import FAST, _archs

_one_thread, tiny = _lat._one_thread, _lat.tiny  # the same fixtures (autouse, module scope)

CPU = {"type": "cpu", "name": "x", "dtype": "fp32", "batch_size": 1, "threads": 1}


def test_round_statistic_is_the_kth_fastest_for_a_share_of_the_rounds():
    assert ROUNDS_PER_RANK == 8
    assert round_statistic([3.0]) == 3.0
    assert round_statistic([4.0, 2.0, 3.0] * 2 + [1.0]) == 1.0  # 7 rounds: the fastest
    assert round_statistic([float(x) for x in range(16, 0, -1)]) == 2.0
    assert round_statistic([float(x) for x in range(33)]) == 3.0  # 33 // 8 = 4th fastest
    with pytest.raises(ValueError, match="at least one round"):
        round_statistic([])


def test_measure_archs_keeps_each_archs_kth_fastest_round_and_its_rounds(tiny, monkeypatch):
    import nas.latency.measure as measure_mod

    calls: dict[int, int] = {}
    order: dict[int, int] = {}

    def fake(model, inputs, spec, timing):
        # every model runs 16, 15, ..., 1 ms in its successive rounds (+ 100 ms per model)
        calls[id(model)] = calls.get(id(model), 0) + 1
        order.setdefault(id(model), len(order) + 1)
        ms = 17.0 - calls[id(model)] + 100 * order[id(model)]
        return {"min": ms, "median": ms + 0.5}

    monkeypatch.setattr(measure_mod, "time_module", fake)
    m = Measurer(CPU, asdict(Timing(min_run_time=0.002, warmup=1)),
                 num_classes=tiny.num_classes, in_chans=tiny.in_chans)
    archs = [a.to_dict() for a in _archs(tiny, 2, seed=8)]
    one, two = m.measure_archs(archs, rounds=16)
    assert (one["min"], one["median"]) == (102.0, 102.5)  # 2nd fastest of 16
    assert two["min"] == 202.0
    assert one["rounds_min"] == [116.0 - r for r in range(16)]
    assert one["rounds_median"] == [116.5 - r for r in range(16)]


def test_calibration_samples_keep_their_rounds_and_the_kth_fastest(tiny, tmp_path):
    table = LatencyTable.new(tiny, CPU, {"stat": "min", "clock": "thread"})
    arch = extreme_arch(tiny, "min")
    for r in range(16):  # a profile's single-round calls
        table.add_calibration_sample(arch, {"min": 20.0 - r, "median": 30.0 - r})
    (sample,) = table.to_dict()["calibration"]["samples"]
    assert (sample["ms"], sample["min"], sample["median"]) == (6.0, 6.0, 16.0)
    assert sample["rounds"] == 16 and len(sample["by_round"]["min"]) == 16
    # a call that timed several rounds counts each of them
    table.add_calibration_sample(arch, {"min": 1.0, "median": 2.0,
                                        "rounds_min": [1.0, 1.5], "rounds_median": [2.0, 2.5]})
    assert table.calibration_rounds(arch) == 18
    path = tmp_path / "t.json"
    table.save(path)
    again = LatencyTable.load(path, space=tiny)
    (sample,) = again.to_dict()["calibration"]["samples"]
    assert sample["ms"] == 1.5 and sample["by_round"]["min"][-2:] == [1.0, 1.5]
    again.add_calibration_sample(arch, 0.5)  # one figure: one round of the table's stat
    (sample,) = again.to_dict()["calibration"]["samples"]
    assert sample["ms"] == 1.0 and len(sample["by_round"]["min"]) == 19


def test_a_sample_without_rounds_keeps_its_fastest(tiny, tmp_path):
    """Tables written before ``by_round`` load, and their samples merge as they did."""
    table = LatencyTable.new(tiny, CPU, {"stat": "min", "clock": "thread"})
    arch = extreme_arch(tiny, "min")
    table.add_calibration_sample(arch, {"min": 3.0, "median": 3.0})
    path = tmp_path / "old.json"
    table.save(path)
    data = json.loads(path.read_text())
    data["calibration"]["samples"][0].pop("by_round")
    path.write_text(json.dumps(data))
    old = LatencyTable.load(path, space=tiny)
    for ms in (5.0, 4.0, 2.5) * 4:
        old.add_calibration_sample(arch, {"min": ms, "median": ms})
    (sample,) = old.to_dict()["calibration"]["samples"]
    assert sample["ms"] == 2.5 and sample["rounds"] == 13 and "by_round" not in sample


@pytest.mark.parametrize("by_round", [[1.0], {"mean": [1.0]}, {"min": []}, {"min": ["x"]}])
def test_malformed_rounds_are_refused_at_load(tiny, tmp_path, by_round):
    table = LatencyTable.new(tiny, CPU, {"stat": "min", "clock": "thread"})
    table.add_calibration_sample(extreme_arch(tiny, "min"), 3.0)
    path = tmp_path / "t.json"
    table.save(path)
    data = json.loads(path.read_text())
    data["calibration"]["samples"][0]["by_round"] = by_round
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"samples\[0\]\.by_round"):
        LatencyTable.load(path, space=tiny)


def test_profile_calibration_samples_hold_the_kth_fastest_round(tiny, tmp_path, monkeypatch):
    """4 component rounds x 4 calibration rounds: each sample keeps its 2nd fastest of 16."""
    import nas.latency.measure as measure_mod

    calls: dict[int, int] = {}

    def fake(model, inputs, spec, timing):
        calls[id(model)] = calls.get(id(model), 0) + 1
        n = calls[id(model)]
        ms = 1.0 if n == 7 else 1.5 + 0.1 * (n % 3)  # one fast round; 1.5 five times
        return {"min": ms, "median": ms, "iqr": 0.0, "blocks": 1, "ops": 1}

    monkeypatch.setattr(Measurer, "measure", lambda self, keys: [
        {"min": 1.0, "median": 1.0, "iqr": 0.0, "ops": 1} for _ in keys])
    monkeypatch.setattr(measure_mod, "time_module", fake)
    table = profile_space(tiny, out=tmp_path / "t.json", calibrate=2,
                          **{**FAST, "rounds": 4, "retime": 0})
    samples = table.calibration["samples"]
    assert [s["rounds"] for s in samples] == [16, 16]
    assert [s["ms"] for s in samples] == [1.5, 1.5]  # the 2nd fastest, not the fastest 1.0
    assert [sorted(s["by_round"]["min"])[:2] for s in samples] == [[1.0, 1.5]] * 2
