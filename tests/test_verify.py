"""``nas verify`` and the table's local correction: a search's picks timed end to end, the
table refitted on them, and predictions near a timed arch moved toward what it measured."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from nas.arch import Arch, load_arch, sample_arch
from nas.cli import main
from nas.encoding import encode_arch
from nas.errors import ArtifactError, NasError
from nas.io import read_json, write_json
from nas.latency import LatencyTable
from nas.latency.device import DeviceSpec, device_fingerprint
from nas.latency.measure import Timing
from nas.latency.residual import MIN_SAMPLES, Residual
from nas.latency.signatures import arch_signatures
from nas.search import SearchConfig
from nas.search.trial_log import TrialLog
from nas.search.verify import BEST_VERIFIED, VERIFIED_CSV, VERIFIED_TABLE, VERIFY_LOG, verify

SLOW_MIXER = "mhsa"  # the table misses what these archs pay: they run 25% slower


def _key_ms(key: str) -> float:
    return 0.01 + (sum(key.encode()) % 97) / 1000


def _true_ms(table: LatencyTable, arch: Arch) -> float:
    """The 'machine': 1.2x the component sum, and 25% more when stage 0 runs SLOW_MIXER."""
    raw = table.raw_sum(arch)
    return 1.2 * raw * (1.25 if arch.stages[0].mixer == SLOW_MIXER else 1.0)


def _table(space, archs, path, n_calib=16, seed=1) -> LatencyTable:
    """A table with made-up entries for ``archs`` and ``n_calib`` random calibration subnets
    (timed by :func:`_true_ms`), calibrated linearly only (as a table the search's
    neighbourhood has not corrected yet)."""
    spec = DeviceSpec.parse("cpu", threads=1).resolve()
    table = LatencyTable.new(space, device_fingerprint(spec), Timing().to_dict())
    rng = np.random.default_rng(seed)
    calib = [sample_arch(space, rng) for _ in range(n_calib)]
    for a in list(archs) + calib:
        for g in arch_signatures(a, num_classes=space.num_classes, in_chans=space.in_chans):
            table.add(g, _key_ms(g.key))
    for a in calib:
        table.add_calibration_sample(a, _true_ms(table, a))
    table.set_scope(complete=True)
    table.calibrate(("raw_ms", "const"), residual=False)
    table.save(path)
    return LatencyTable.load(path, space=space)


@pytest.fixture()
def setup(spaces, tmp_path):
    space = spaces["tiny32"]
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(sample_arch(space, rng) for _ in range(80)))
    table = _table(space, archs, tmp_path / "table.json")
    pred = table.predict(archs)
    budget = float(np.median(pred))
    records = [{"trial": i, "attempt": 0, "arch": a.to_dict(), "acc": round(0.99 - 0.001 * i, 4),
                "latency_ms": float(p), "params": 1000, "feasible": bool(p <= budget), "meta": {}}
               for i, (a, p) in enumerate(zip(archs, pred))]
    out = tmp_path / "search"
    cfg = SearchConfig(space="tiny32", objective="predictor", budget_ms=budget, trials=len(records),
                       out=str(out), table=str(tmp_path / "table.json"), predictor="unused")
    write_json(out / "config.json", {"format": "nas-search", "config": cfg.to_dict()})
    TrialLog(out / "trials.jsonl").append(records)
    return space, table, out, budget


class Machine:
    """Times archs as :func:`_true_ms`; ``slow_first``: 30% slower the first time an arch is
    timed (a slow phase of the machine)."""

    def __init__(self, table, slow_first=False):
        self.table, self.calls, self.slow_first = table, [], slow_first

    def __call__(self, archs):
        seen = {a for call in self.calls for a in call}
        self.calls.append(list(archs))
        return [_true_ms(self.table, a) * (1.3 if self.slow_first and a not in seen else 1.0)
                for a in archs]


def test_verify_times_the_picks_refits_the_table_and_resumes(setup, tmp_path):
    space, table, out, budget = setup
    machine = Machine(table)
    before = len(table.calibration["samples"])
    original = (tmp_path / "table.json").read_bytes()
    top = [Arch.from_dict(r["arch"]) for r in TrialLog(out / "trials.jsonl").read()
           if r["feasible"]][:5]
    assert any(a.stages[0].mixer == SLOW_MIXER and _true_ms(table, a) > budget for a in top), \
        "the fixture must put an arch that breaks the budget among the search's picks"
    res = verify(out, top=5, rounds=4, echo=None, measure=machine)
    # the pick was timed and fits the budget; every final candidate was timed
    assert res.best["measured_ms"] is not None and res.best["measured_ms"] <= budget
    assert all(r["measured_ms"] is not None for r in res.rows) and len(res.rows) == 5
    # every timing ran beside 3 of the profile's calibration subnets (anchors)
    calib = set(table.calibration_archs())
    assert all(len(set(call) & calib) == 3 for call in machine.calls)
    picks = [[a for a in call if a not in calib] for call in machine.calls]
    timed = list(dict.fromkeys(a for call in picks for a in call))
    assert len(timed) == res.measured > 5  # a second round found new picks
    # ... and timed the first round's picks again beside them
    assert len(picks) >= 2 and set(picks[0]) <= set(picks[1])
    # the search's table is left as it is (its config holds its checksum); the copy in the
    # search dir learned the timed archs and predicts them near what they measured
    assert (tmp_path / "table.json").read_bytes() == original
    refit = LatencyTable.load(out / VERIFIED_TABLE, space=space)
    assert len(refit.calibration["samples"]) == before + res.measured
    assert sum(s.get("source") == "verify" for s in refit.calibration["samples"]) == res.measured
    assert refit.calibration["fit"]["n"] == before  # the global line: the spread samples only
    assert refit.calibration["coef"] == pytest.approx(table.calibration["coef"])
    assert refit.calibration["residual"]["n"] >= before
    for a in timed:
        assert refit.predict_one(a) == pytest.approx(_true_ms(table, a), rel=0.06)
    # files: the csv lists the candidates, the yaml loads as an arch
    rows = (out / VERIFIED_CSV).read_text().splitlines()
    assert rows[0].startswith("rank,trial,acc") and len(rows) == 6
    assert load_arch(out / BEST_VERIFIED) == res.best["arch"]
    log = [json.loads(line) for line in (out / VERIFY_LOG).read_text().splitlines()]
    first = [r for r in log if not r["again"]]
    assert len(first) == res.measured and {r["round"] for r in first} >= {1, 2}
    assert len(log) > len(first)  # the re-timings are logged too
    for r in log:
        arch = Arch.from_dict(json.loads(r["arch"]))
        assert r["measured_ms"] == pytest.approx(_true_ms(table, arch))
        assert r["anchors_ratio"] == pytest.approx(1.0)  # the machine as profiled: once each
    assert len(machine.calls) == len({r["round"] for r in log})
    # rerun: nothing new to time
    again = Machine(table)
    res2 = verify(out, top=5, rounds=4, echo=None, measure=again)
    assert again.calls == [] and res2.best["trial"] == res.best["trial"]


def test_verify_refuses_bad_input(setup, tmp_path, capsys):
    space, table, out, budget = setup
    with pytest.raises(NasError, match="top must be"):
        verify(out, top=0, measure=Machine(table))
    with pytest.raises(ArtifactError, match="not a search run dir"):
        verify(tmp_path / "nowhere", measure=Machine(table))
    bare = read_json(tmp_path / "table.json")
    bare["calibration"] = None
    write_json(tmp_path / "bare.json", bare)
    with pytest.raises(ArtifactError, match="not calibrated"):
        verify(out, table=tmp_path / "bare.json", measure=Machine(table))
    elsewhere = read_json(tmp_path / "table.json")
    elsewhere["device"]["name"] = "another CPU"
    write_json(tmp_path / "elsewhere.json", elsewhere)
    with pytest.raises(ArtifactError, match="profiled on another machine"):
        verify(out, table=tmp_path / "elsewhere.json")  # the real measurer checks the device
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a search run dir" in err[0]


def test_residual_learns_a_local_offset_and_fades_far_away(spaces):
    space = spaces["tiny32"]
    rng = np.random.default_rng(3)
    archs = list(dict.fromkeys(sample_arch(space, rng) for _ in range(120)))
    X = np.array([encode_arch(space, a) for a in archs])
    slow = np.array([a.stages[0].mixer == SLOW_MIXER for a in archs])
    r = np.where(slow, 0.15, 0.0) + 0.005 * rng.standard_normal(len(archs))
    res = Residual.fit(X[:80], r[:80])
    got = res(X[80:])
    assert np.abs(got - r[80:]).mean() < 0.5 * np.abs(r[80:]).mean()  # learned, held out
    far = np.full((1, X.shape[1]), 50.0)
    assert abs(res(far)[0]) < 1e-6  # nothing measured near: no correction
    assert Residual.fit(X[:MIN_SAMPLES - 1], r[:MIN_SAMPLES - 1]) is None
    again = Residual(res.to_dict(), X=X[:80], r=r[:80])  # what a loaded table rebuilds
    np.testing.assert_allclose(again(X[80:]), got, rtol=1e-5, atol=1e-7)


def test_table_round_trips_its_local_correction_and_rejects_a_bad_one(setup, tmp_path):
    space, table, out, budget = setup
    archs = [Arch.from_dict(r["arch"]) for r in TrialLog(out / "trials.jsonl").read()]
    assert table.calibration["residual"] is None
    table.calibrate(("raw_ms", "const"))
    assert table.calibration["residual"]["n"] == 16
    path = tmp_path / "again.json"
    table.save(path)
    np.testing.assert_allclose(LatencyTable.load(path).predict(archs), table.predict(archs))
    # without the correction (a table written before it existed): the linear calibration
    data = read_json(path)
    data["calibration"].pop("residual")
    write_json(path, data)
    linear = LatencyTable.load(path).predict(archs)
    assert not np.allclose(linear, table.predict(archs))
    data["calibration"]["residual"] = {"amplitude": -1, "length_scale": 1, "noise": 1}
    write_json(path, data)
    with pytest.raises(ArtifactError, match="residual malformed"):
        LatencyTable.load(path)


def test_local_correction_follows_the_samples_and_skips_unmeasurable_ones(setup, tmp_path):
    space, table, out, budget = setup
    archs = [Arch.from_dict(r["arch"]) for r in TrialLog(out / "trials.jsonl").read()]
    table.calibrate(("raw_ms", "const"))
    a = archs[0]
    before = table.predict_one(a)
    # a new timing of an arch moves its prediction at once, as a reload would
    table.add_calibration_sample(a, 1.5 * before)
    moved = table.predict_one(a)
    assert moved > before
    table.save(tmp_path / "moved.json")
    assert LatencyTable.load(tmp_path / "moved.json").predict_one(a) == pytest.approx(moved)
    # a calibration sample whose components the table lacks: skipped, predictions still work
    data = read_json(tmp_path / "moved.json")
    lost = Arch.from_dict(data["calibration"]["samples"][0]["arch"])
    lost_keys = {g.key for g in arch_signatures(lost, num_classes=space.num_classes,
                                                 in_chans=space.in_chans)}
    mine = {g.key for g in arch_signatures(a, num_classes=space.num_classes,
                                           in_chans=space.in_chans)}
    gone = next(iter(lost_keys - mine))
    data["entries"] = [e for e in data["entries"]
                       if LatencyTable(data, source="x")._records.get(gone) is not e]
    data["complete"] = False
    write_json(tmp_path / "partial.json", data)
    partial = LatencyTable.load(tmp_path / "partial.json")
    assert partial.predict([]).shape == (0,)
    assert np.isfinite(partial.predict_one(a))


def test_picks_alone_calibrate_the_line_only_when_nothing_else_does(setup, tmp_path):
    space, table, out, budget = setup
    archs = [Arch.from_dict(r["arch"]) for r in TrialLog(out / "trials.jsonl").read()]
    data = read_json(tmp_path / "table.json")
    data["calibration"]["samples"] = data["calibration"]["samples"][:4]
    write_json(tmp_path / "few.json", data)
    few = LatencyTable.load(tmp_path / "few.json")
    for a in archs[:10]:
        few.add_calibration_sample(a, _true_ms(table, a), source="verify")
    stats = few.calibrate(("raw_ms", "const"))
    assert stats["n"] == 4 and stats["verified"] == 10  # 4 spread samples fit the line
    data["calibration"]["samples"] = data["calibration"]["samples"][:2]
    write_json(tmp_path / "fewer.json", data)
    fewer = LatencyTable.load(tmp_path / "fewer.json")
    for a in archs[:10]:
        fewer.add_calibration_sample(a, _true_ms(table, a), source="verify")
    assert fewer.calibrate(("raw_ms", "const"))["n"] == 12  # too few: all of them


def test_report_lists_verifys_candidates(spaces, tmp_path):
    import csv

    from nas.report import _top_trials

    rng = np.random.default_rng(5)
    archs = list(dict.fromkeys(sample_arch(spaces["tiny32"], rng) for _ in range(4)))
    with (tmp_path / "trials.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "acc", "feasible", "arch"])
        for i, a in enumerate(archs):
            w.writerow([i, 0.9 - 0.01 * i, i != 0, a.to_json()])
    (tmp_path / "verified.csv").write_text("rank,trial\n1,3\n2,0\n")
    plain = [a for _, a, _ in _top_trials(tmp_path / "trials.csv", 5)]
    assert plain == archs[1:]  # the search's feasible trials, most accurate first
    checked = [a for _, a, _ in _top_trials(tmp_path / "trials.csv", 5, verified=True)]
    assert checked == [archs[3], archs[0]]  # verify's candidates, in its order


def test_verify_keeps_each_picks_fastest_timing(setup, tmp_path):
    # every first timing of an arch lands in a slow phase (30% slow): the picks timed again
    # in later rounds keep their fastest timing, and the pick's timing is its true one
    space, table, out, budget = setup
    machine = Machine(table, slow_first=True)
    res = verify(out, top=5, rounds=4, echo=None, measure=machine)
    # (the anchors beside them read the slow phase too, so each round is timed again at
    # once; without anchors, the picks re-timed in later rounds)
    calib = set(table.calibration_archs())
    picks = [[a for a in call if a not in calib] for call in machine.calls]
    again = set(picks[0]) & set(picks[1])
    assert again
    samples = {Arch.from_dict(s["arch"]): s for s in
               LatencyTable.load(out / VERIFIED_TABLE).calibration["samples"]
               if s.get("source") == "verify"}
    for a in again:
        assert samples[a]["ms"] == pytest.approx(_true_ms(table, a), rel=1e-5)
    assert res.best["measured_ms"] <= budget


def test_verify_times_again_while_the_tables_own_subnets_read_another_phase(setup, tmp_path):
    """A slow phase that the table's calibration subnets, timed beside the picks, also
    read: timed again until it passes, the picks keep their fastest (true) timing; a
    phase that lasts through every retry is kept, with a warning."""
    space, table, out, budget = setup

    class Phases(Machine):
        def __init__(self, table, slow_calls, k=1.1):
            super().__init__(table)
            self.slow_calls, self.k = slow_calls, k

        def __call__(self, archs):
            k = self.k if len(self.calls) < self.slow_calls else 1.0
            self.calls.append(list(archs))
            return [k * _true_ms(self.table, a) for a in archs]

    passing = Phases(table, slow_calls=2)  # the first two timings in a 10% slow phase
    said = []
    res = verify(out, top=5, rounds=1, echo=said.append, measure=passing)
    assert len(passing.calls) == 3 and passing.calls[0] == passing.calls[2]
    samples = [s for s in LatencyTable.load(out / VERIFIED_TABLE).calibration["samples"]
               if s.get("source") == "verify"]
    assert len(samples) == res.measured == 5
    for smp in samples:
        assert smp["ms"] == pytest.approx(_true_ms(table, Arch.from_dict(smp["arch"])))
    assert not any("warning" in line for line in said)
    log = [json.loads(line) for line in (out / VERIFY_LOG).read_text().splitlines()]
    assert {r["anchors_ratio"] for r in log} == {1.0}

    for f in (VERIFY_LOG, VERIFIED_TABLE, VERIFIED_CSV, BEST_VERIFIED):
        (out / f).unlink()
    lasting = Phases(table, slow_calls=99)
    said.clear()
    verify(out, top=5, rounds=1, echo=said.append, measure=lasting)
    assert len(lasting.calls) == 3  # 1 + 2 retries, then kept
    assert any("ran 10% slower than when it was profiled" in line for line in said)
    log = [json.loads(line) for line in (out / VERIFY_LOG).read_text().splitlines()]
    assert all(r["anchors_ratio"] == pytest.approx(1.1) for r in log)
    for r in log:
        arch = Arch.from_dict(json.loads(r["arch"]))
        assert r["measured_ms"] == pytest.approx(1.1 * _true_ms(table, arch))

    for f in (VERIFY_LOG, VERIFIED_TABLE, VERIFIED_CSV, BEST_VERIFIED):
        (out / f).unlink()
    faster = Phases(table, slow_calls=99, k=0.9)  # a fastest timing cannot get slower
    said.clear()
    verify(out, top=5, rounds=1, echo=said.append, measure=faster)
    assert len(faster.calls) == 1 and not any("warning" in line for line in said)
    log = [json.loads(line) for line in (out / VERIFY_LOG).read_text().splitlines()]
    assert all(r["anchors_ratio"] == pytest.approx(0.9) for r in log)


def test_verify_without_a_timed_fit_picks_the_predicted_one_and_says_so(setup, tmp_path):
    # a machine 3x slower than the table: nothing timed fits the budget, and an arch whose
    # timing broke the budget is never the pick
    space, table, out, budget = setup

    def slow(archs):
        return [3 * _true_ms(table, a) for a in archs]

    res = verify(out, top=3, rounds=1, echo=None, measure=slow)
    assert res.best["measured_ms"] is None and "no timed arch fits" in res.summary
    untimed = [r for r in res.rows if r["measured_ms"] is None]
    assert res.best is untimed[0] and res.best["predicted_ms"] <= budget
    saved = yaml.safe_load((out / BEST_VERIFIED).read_text())
    assert saved["trial"] == res.best["trial"] and saved["measured_ms"] is None
    assert saved["picked_by"].startswith("no timed arch fits the budget")
