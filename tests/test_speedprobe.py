"""The reference kernel: the table records the machine's speed, and ground truth timed in a
slow phase is left out or reported instead of being passed off as latency."""
from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

import nas.latency.measure as measure_mod
from nas.latency import LatencyTable, Measurer, profile_space
from nas.latency.device import DeviceSpec
from nas.latency.measure import Timing
from nas.latency.speedprobe import SLOW, SpeedProbe, speed_verdict, table_reference, workload_name
from tests import test_latency as _lat
from tests.test_latency import FAST, _archs

_one_thread, tiny = _lat._one_thread, _lat.tiny  # the same fixtures (autouse, module scope)
CPU1 = {"type": "cpu", "name": "x", "dtype": "fp32", "batch_size": 1, "threads": 1}


def test_the_probe_times_a_fixed_workload():
    probe = SpeedProbe(DeviceSpec.parse("cpu", threads=1).resolve(), Timing())
    a, b = probe(), probe()
    assert 0 < a < 50 and 0 < b < 50 and math.isfinite(a)
    assert probe.timing.min_run_time < Timing().min_run_time  # cheap beside a round


def test_the_workload_grows_with_the_batch():
    # as much memory as the models it stands for: at batch 64 a batch-1 workload read the
    # VM's slow phases at half their depth
    small = SpeedProbe(DeviceSpec.parse("cpu", threads=1, batch_size=1).resolve(), Timing())
    big = SpeedProbe(DeviceSpec.parse("cpu", threads=1, batch_size=64).resolve(), Timing())
    assert big.x.numel() == 64 * small.x.numel() and small.x.shape == (16, 16, 128)
    assert (small.name, big.name) == (workload_name(1), workload_name(64)) and small.name != big.name


class Scripted:
    """A Measurer whose rounds and probes read from scripts: round ``r`` times every arch
    at ``rounds[r]`` ms, probe ``k`` reads ``probes[k]`` ms (the last value repeats)."""

    def __init__(self, tiny, monkeypatch, rounds, probes):
        self.calls, self.k = 0, 0
        self.m = Measurer(CPU1, asdict(Timing(min_run_time=0.002, warmup=1)),
                          num_classes=tiny.num_classes, in_chans=tiny.in_chans)
        self.archs = [a.to_dict() for a in _archs(tiny, 3, seed=4)]

        def fake(model, inputs, spec, timing):
            ms = rounds[min(self.calls // len(self.archs), len(rounds) - 1)]
            self.calls += 1
            return {"min": ms, "median": ms}

        def probe():
            self.k += 1
            return probes[min(self.k - 1, len(probes) - 1)]

        monkeypatch.setattr(measure_mod, "time_module", fake)
        self.m.probe = probe

    def run(self, **kw):
        return [s["min"] for s in self.m.measure_archs(self.archs, check_speed=True, **kw)]

    @property
    def rounds(self):
        return self.calls // len(self.archs)


def test_timing_goes_on_through_a_slow_phase_and_keeps_the_fastest_round(tiny, monkeypatch):
    # a slow phase begins during round 0 (its closing probe reads 20% slow) and lasts
    # through round 3; rounds are added until two are bracketed by fast probes (4 and 5).
    # Every round counts: a slow phase only raises timings, and keeping only the 2 clean
    # rounds of 47 once read a report's pick 31% slow
    s = Scripted(tiny, monkeypatch, rounds=[1.0, 1.2, 1.2, 1.2, 1.05, 1.05],
                 probes=[1.0, 1.2, 1.2, 1.2, 1.0, 1.0])
    assert s.run(rounds=2) == [1.0] * 3
    info = s.m.last_speed
    assert s.rounds == 6 and info["clean_rounds"] == 2 and info["probe_ms"] == 1.0
    assert info["slower"] is None and speed_verdict(info) is None


def test_timing_waits_for_the_speed_the_table_was_profiled_at(tiny, monkeypatch):
    # every probe of this session reads 10% above the table's: the rounds go on until the
    # time limit, and the verdict says so
    s = Scripted(tiny, monkeypatch, rounds=[1.1], probes=[1.1])
    assert s.run(rounds=2, reference_ms=1.0, max_span_s=0.0, max_rounds=7) == [1.1] * 3
    assert s.rounds == 2  # the time limit (0 s) ends it after the required rounds
    info = s.m.last_speed
    assert info["slower"] == pytest.approx(1.1) and info["clean_rounds"] == 2
    verdict = speed_verdict(info)
    assert verdict and "10% slower" in verdict
    s2 = Scripted(tiny, monkeypatch, rounds=[1.1], probes=[1.1])
    s2.run(rounds=2, reference_ms=1.0, max_span_s=60.0, max_rounds=7)
    assert s2.rounds == 7  # no time limit reached: up to max_rounds
    # once the machine is back at the table's speed the timing stops
    s3 = Scripted(tiny, monkeypatch, rounds=[1.1, 1.1, 1.1, 1.0], probes=[1.1, 1.1, 1.1, 1.0, 1.0])
    assert s3.run(rounds=2, reference_ms=1.0, max_span_s=60.0) == [1.0] * 3
    assert s3.rounds == 5 and s3.m.last_speed["clean_rounds"] == 2  # 2 at full speed
    assert speed_verdict(s3.m.last_speed) is None


def test_no_clean_round_still_gives_the_fastest_round(tiny, monkeypatch):
    # the only fast probe is the first: every round is bracketed by a slow one
    s = Scripted(tiny, monkeypatch, rounds=[1.3, 1.2, 1.25], probes=[1.0, 1.2])
    assert s.run(rounds=2, max_span_s=0.0) == [1.2] * 3
    assert s.m.last_speed["clean_rounds"] == 0 and s.rounds == 2


def test_speed_verdict_threshold():
    base = {"probe_ms": 1.0, "reference_ms": 1.0, "span_s": 6.0}
    assert speed_verdict({**base, "slower": SLOW}) is None
    assert speed_verdict({**base, "slower": None}) is None and speed_verdict(None) is None
    assert "12% slower" in speed_verdict({**base, "slower": 1.12})
    assert speed_verdict({**base, "slower": 1 / SLOW}) is None
    faster = speed_verdict({**base, "probe_ms": 0.84, "slower": 0.84})
    assert "16% faster" in faster and "never saw" in faster


def test_the_table_records_the_fastest_probe(tiny, tmp_path, monkeypatch):
    readings = iter([0.9, 0.7, 0.8] + [0.75] * 100)
    monkeypatch.setattr(Measurer, "probe", lambda self: next(readings))
    out = tmp_path / "t.json"
    profile_space(tiny, out=out, calibrate=2, **{**FAST, "rounds": 1})
    assert LatencyTable.load(out).scope["probe_ms"] == 0.7
    table = LatencyTable.load(out)
    table.set_scope(probe_ms=0.9)  # a resumed profile keeps the fastest of its sessions
    assert table.scope["probe_ms"] == 0.7
    table.set_scope(probe_ms=0.5)
    table.save(out)
    assert LatencyTable.load(out).scope["probe_ms"] == 0.5


def test_readings_are_compared_only_with_the_same_workload(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(Measurer, "probe", lambda self: 0.7)
    out = tmp_path / "t.json"
    profile_space(tiny, out=out, calibrate=0, batch_size=4, **{**FAST, "rounds": 1})
    scope = LatencyTable.load(out).scope
    assert scope["probe"] == workload_name(4)
    assert table_reference(scope, 4) == 0.7
    assert table_reference(scope, 1) is None and table_reference(scope, 8) is None
    # a table from before the workload grew with the batch ran the batch-1 workload
    legacy = {"probe_ms": 0.4}
    assert table_reference(legacy, 1) == 0.4 and table_reference(legacy, 64) is None
    # resumed with another workload: the old reading is dropped, not mixed in
    table = LatencyTable.load(out)
    table.set_scope(probe_ms=0.9, probe=workload_name(8))
    assert table.scope["probe_ms"] == 0.9 and table.scope["probe"] == workload_name(8)
    table.set_scope(probe_ms=0.95, probe=workload_name(8))
    assert table.scope["probe_ms"] == 0.9


def test_nas_measure_waits_only_for_a_reading_of_its_own_workload(tiny, tmp_path, monkeypatch):
    import nas.cli._latency as cli_latency
    from nas.cli import main

    monkeypatch.setattr(Measurer, "probe", lambda self: 0.7)
    table = tmp_path / "t.json"
    profile_space(tiny, out=table, calibrate=0, **{**FAST, "rounds": 1})
    arch, space = tmp_path / "a.json", tmp_path / "s.json"
    arch.write_text(_archs(tiny, 1, seed=2)[0].to_json())
    space.write_text(json.dumps(_lat.TINY))
    seen = []

    def checked(archs, space, *, reference_ms, **kw):
        seen.append((reference_ms, kw["batch_size"]))
        return [1.0], {}

    monkeypatch.setattr(cli_latency, "measure_archs_checked", checked)
    monkeypatch.setattr(cli_latency, "measure_arch",
                        lambda *a, **kw: seen.append((None, kw["batch_size"])) or 1.0)
    common = ["measure", "--space", str(space), "--arch", str(arch), "--table", str(table),
              "--min-run-time", "0.002", "--warmup", "1", "--rounds", "1", "--threads", "1"]
    assert main(common) == 0
    assert main([*common, "--batch-size", "8"]) == 0
    assert seen == [(0.7, 1), (None, 8)]
