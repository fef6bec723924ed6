"""Entries timed only while the machine ran slow are found and timed again."""
from __future__ import annotations

import pytest

import nas.latency.profile as profile_mod
import nas.latency.rounds as rounds_mod
import nas.latency.slowphase as slowphase
from nas.latency import LatencyTable, Measurer, profile_space
from nas.latency.signatures import space_signatures
from nas.latency.slowphase import SlowPhases
from tests import test_latency as _lat
from tests.test_latency import FAST

_one_thread, tiny = _lat._one_thread, _lat.tiny  # the same fixtures (autouse, module scope)


class Readings:
    def __init__(self, values):
        self.values, self.k = list(values), 0

    def probe(self):
        self.k += 1
        return self.values[min(self.k - 1, len(self.values) - 1)]


def slow_host(monkeypatch, slow: set[str]) -> tuple[dict[str, bool], list[str]]:
    """A host that times the ``slow`` entries at 1.5 (others 1.0) and reads its reference
    kernel slow right after one, while ``state["host_slow"]``; every probe and retime
    allowed. Returns ``(state, the keys timed, in order)``."""
    state = {"host_slow": True}
    timed: list[str] = []

    def measure(self, ks):
        timed.extend(ks)
        return [{"min": 1.5 if k in slow and state["host_slow"] else 1.0, "median": 1.0,
                 "iqr": 0.0, "ops": 1} for k in ks]

    def probe(self):
        return 1.3 if state["host_slow"] and timed and timed[-1] in slow else 1.0

    monkeypatch.setattr(Measurer, "measure", measure)
    monkeypatch.setattr(Measurer, "probe", probe)
    monkeypatch.setattr(slowphase, "PROBE_GAP_S", 0.0)
    monkeypatch.setattr(profile_mod, "RETIME_SHARE", 1e6)
    return state, timed


def test_a_chunk_is_clean_only_between_two_fast_readings():
    phases = SlowPhases(Readings([1.0, 1.0, 1.3, 1.0]), gap_s=0.0)
    for keys in (["a", "b"], ["c"], ["d"]):
        phases.before_chunk()
        phases.after_chunk(keys)
    phases.probe()
    # a, b: between 1.0 and 1.0; c: between 1.0 and 1.3; d: between 1.3 and 1.0
    assert phases.clean_keys() == {"a", "b"}
    assert phases.unclean(["a", "b", "c", "d", "never timed"]) == ["c", "d"]
    # a later clean measurement of c makes it clean
    phases.before_chunk()
    phases.after_chunk(["c"])
    phases.probe()
    assert phases.unclean(["a", "b", "c", "d"]) == ["d"]


def test_probes_are_spaced_by_the_gap():
    readings = Readings([1.0])
    phases = SlowPhases(readings, gap_s=3600.0)
    for _ in range(5):
        phases.before_chunk()
        phases.after_chunk(["x"])
    assert readings.k == 1  # the first chunk needs a reading; the others are within the gap
    assert phases.unclean(["x"]) == []  # judged by the reading before, none after yet


def test_profile_retimes_entries_timed_only_in_slow_phases(tiny, tmp_path, monkeypatch):
    keys = [g.key for g in space_signatures(tiny)]
    slow = set(keys[::5])  # these come out 1.5x whenever the main round times them
    state = {"retiming": False}
    timed: list[str] = []

    def measure(self, ks):
        timed.extend(ks)
        return [{"min": 1.5 if k in slow and not state["retiming"] else 1.0,
                 "median": 1.0, "iqr": 0.0, "ops": 1} for k in ks]

    def probe(self):  # reads slow right after a slow entry: the phase it was timed in
        return 1.3 if timed and timed[-1] in slow and not state["retiming"] else 1.0

    original = SlowPhases.unclean

    def unclean(self, ks):
        out = original(self, ks)
        state["retiming"] = True  # the machine is fast again from the first re-time on
        return out

    monkeypatch.setattr(Measurer, "measure", measure)
    monkeypatch.setattr(Measurer, "probe", probe)
    monkeypatch.setattr(SlowPhases, "unclean", unclean)
    monkeypatch.setattr(slowphase, "PROBE_GAP_S", 0.0)  # a reading between every two entries
    monkeypatch.setattr(profile_mod, "RETIME_SHARE", 1e6)  # no time limit here
    out = tmp_path / "t.json"
    table = profile_space(tiny, out=out, calibrate=0, **{**FAST, "retime": 2, "save_every": 1})
    main, again = timed[:len(keys)], timed[len(keys):]
    # a slow reading between two entries leaves both unclean: the slow ones and the next
    expected = {k for i, k in enumerate(main) if k in slow or (i and main[i - 1] in slow)}
    assert sorted(again) == sorted(expected) and slow <= set(again)
    assert all(table.lookup(g) == 1.0 for g in space_signatures(tiny))
    assert LatencyTable.load(out).scope["retimed"] == {"slow_entries": len(expected),
                                                       "still_slow": 0}


def test_retiming_stops_at_its_share_of_the_time(tiny, tmp_path, monkeypatch):
    readings = iter([1.0] + [2.0] * 100_000)  # fast once, then slow to the end
    monkeypatch.setattr(Measurer, "probe", lambda self: next(readings))
    monkeypatch.setattr(profile_mod, "RETIME_SHARE", 0.0)
    seen = []
    original = Measurer.measure
    monkeypatch.setattr(Measurer, "measure", lambda self, ks: seen.extend(ks) or original(self, ks))
    table = profile_space(tiny, out=tmp_path / "t.json", calibrate=0, **{**FAST, "retime": 2})
    n = len(space_signatures(tiny))
    assert len(seen) == n  # the rounds only: no time was left to time anything again
    assert table.scope["retimed"] == {"slow_entries": n, "still_slow": n}


def test_the_fast_speed_ignores_a_lucky_reading():
    # one reading far below the rest must not make every chunk look slow
    phases = SlowPhases(Readings([0.5] + [1.0] * 30 + [1.2, 1.0, 1.0]), gap_s=0.0)
    for keys in [["w"]] * 30 + [["x"], ["y"]]:
        phases.before_chunk()
        phases.after_chunk(keys)
    phases.probe()
    assert phases.fastest == 0.5 and phases.fast == 1.0
    assert phases.unclean(["w", "x", "y"]) == ["x", "y"]  # next to the 1.2 reading only
    # the slowest first
    phases = SlowPhases(Readings([1.0] * 12 + [1.1, 1.0, 1.4, 1.0]), gap_s=0.0)
    for keys in [["w"]] * 12 + [["a"], ["b"], ["c"]]:
        phases.before_chunk()
        phases.after_chunk(keys)
    phases.probe()
    assert phases.unclean(["a", "b", "c", "w"]) == ["b", "c", "a"]


def test_without_retime_slow_entries_stay_and_are_counted(tiny, tmp_path, monkeypatch):
    readings = iter([1.0] + [2.0] * 100_000)  # fast once, then slow to the end
    monkeypatch.setattr(Measurer, "probe", lambda self: next(readings))
    table = profile_space(tiny, out=tmp_path / "t.json", calibrate=0, **{**FAST, "retime": 0})
    assert table.scope["retimed"]["slow_entries"] == 0  # none looked at
    assert table.scope["retimed"]["still_slow"] == len(space_signatures(tiny))


@pytest.mark.parametrize("gap", [0.0])
def test_readings_before_any_chunk_do_not_break(gap):
    phases = SlowPhases(Readings([1.0]), gap_s=gap)
    assert phases.clean_keys() == set() and phases.unclean(["a"]) == []
    phases.after_chunk(["a"])  # a chunk with no reading before it
    phases.probe()
    assert phases.unclean(["a"]) == []  # judged by the reading after alone


def test_nas_profile_says_what_it_timed_again(tiny, tmp_path, monkeypatch, capsys):
    import json

    from nas.cli import main

    readings = iter([1.0] + [2.0] * 100_000)  # fast once, then slow to the end
    monkeypatch.setattr(Measurer, "probe", lambda self: next(readings))
    space = tmp_path / "s.json"
    space.write_text(json.dumps(_lat.TINY))
    assert main(["profile", "--space", str(space), "--threads", "1", "--min-run-time", "0.002",
                 "--warmup", "1", "--rounds", "1", "--calibrate", "0", "--quiet",
                 "--out", str(tmp_path / "t.json")]) == 0
    n = len(space_signatures(tiny))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("slow phase"))
    assert f"{n} entries" in line and f"{n} never timed at full speed" in line
    assert "earlier run" not in line and "profiling into this table again" in line
    # the same command again: the flagged entries are timed again, and it says so
    assert main(["profile", "--space", str(space), "--threads", "1", "--min-run-time", "0.002",
                 "--warmup", "1", "--rounds", "1", "--calibrate", "0", "--quiet",
                 "--out", str(tmp_path / "t.json")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("slow phase"))
    assert line.startswith(f"slow phase {n} entries an earlier run never timed at full speed "
                           "were timed again")


def test_entries_never_timed_fast_are_flagged_and_a_rerun_times_them_again(tiny, tmp_path,
                                                                           monkeypatch):
    import json

    from nas.errors import ArtifactError

    keys = [g.key for g in space_signatures(tiny)]
    slow = set(keys[::4])
    state, timed = slow_host(monkeypatch, slow)
    out = tmp_path / "t.json"
    table = profile_space(tiny, out=out, calibrate=0, **{**FAST, "retime": 1, "save_every": 1})
    flagged = set(table.slow_keys())
    assert slow <= flagged and table.scope["retimed"]["still_slow"] == len(flagged)
    sig = {g.key: g for g in space_signatures(tiny)}
    assert all(table.lookup(sig[k]) == 1.5 for k in slow)
    on_disk = json.loads(out.read_text())["entries"]
    assert sum(e.get("slow", False) for e in on_disk) == len(flagged)

    state["host_slow"], timed[:] = False, []  # the same command later, on a quiet host
    table = profile_space(tiny, out=out, calibrate=0, **{**FAST, "retime": 1, "save_every": 1})
    assert sorted(timed) == sorted(flagged)  # only the flagged entries, once each
    assert table.slow_keys() == []
    assert table.scope["retimed"] == {"slow_entries": 0, "still_slow": 0,
                                      "earlier": len(flagged)}
    assert all(table.lookup(sig[k]) == 1.0 for k in keys)
    assert LatencyTable.load(out).slow_keys() == []

    doc = json.loads(out.read_text())
    doc["entries"][0]["slow"] = "yes"
    out.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"entries\[0\]\.slow must be true or false"):
        LatencyTable.load(out)


def test_a_session_slow_throughout_is_judged_by_the_earlier_fast_speed():
    def session(reference):
        phases = SlowPhases(Readings([2.0] * 20), gap_s=0.0, reference=reference)
        for keys in (["a"], ["b"]):
            phases.before_chunk()
            phases.after_chunk(keys)
        phases.probe()
        return phases

    assert session(None).unclean(["a", "b"]) == []  # by its own readings it looks clean
    phases = session(1.0)  # the table's earlier run saw the machine at 1.0
    assert phases.fast == 1.0 and phases.unclean(["a", "b"]) == ["a", "b"]
    assert session(3.0).fast == 2.0  # a slower reference never hides a faster session


def test_a_partial_run_flags_too_and_later_runs_keep_entries_once_timed_fast(
        tiny, tmp_path, monkeypatch):
    readings = iter([1.0] * 10 + [2.0] * 100_000)  # fast at first, then slow to the end
    monkeypatch.setattr(Measurer, "probe", lambda self: next(readings))
    monkeypatch.setattr(slowphase, "PROBE_GAP_S", 0.0)
    out = tmp_path / "t.json"
    keys = {g.key for g in space_signatures(tiny)}
    n, kw = len(keys), {**FAST, "retime": 0, "save_every": 1}
    table = profile_space(tiny, out=out, calibrate=0, max_entries=n // 2, **kw)
    assert not table.complete and table.scope["probe_fast_ms"] == 1.0
    timed = {k for k in keys if table.rounds(k)}
    first = set(table.slow_keys())
    assert len(timed) == n // 2 and first and first < timed  # fast at first, slow later
    fast_before = timed - first
    # resumed, slow throughout: judged by the first run's speed, the new entries are flagged
    table = profile_space(tiny, out=out, calibrate=0, **kw)
    assert table.complete and table.scope["probe_fast_ms"] == 1.0  # the first run's, kept
    assert set(table.slow_keys()) == keys - fast_before
    # one more round, still slow: entries timed at full speed before are not flagged now
    table = profile_space(tiny, out=out, calibrate=0, **{**kw, "rounds": 2})
    assert all(table.rounds(k) == 2 for k in fast_before)  # timed again, in a slow phase
    assert set(table.slow_keys()) == keys - fast_before


def test_calibration_without_a_valid_end_keeps_the_rest(tiny, monkeypatch):
    from nas.arch import extreme_arch
    from nas.errors import ArchError
    from nas.latency.profile import calibration_archs

    def no_max(space, which, mixers=None):
        if which == "max":
            raise ArchError("the max arch has a vanishing token grid")
        return extreme_arch(space, which, mixers)

    rand = calibration_archs(tiny, 8, 0, strategy="random")
    monkeypatch.setattr(profile_mod, "extreme_arch", no_max)
    ext = calibration_archs(tiny, 8, 0)
    assert ext[0] == extreme_arch(tiny, "min") and len(set(ext)) == 8
    assert ext[1:] == [a for a in rand if a != ext[0]][:7]
    assert calibration_archs(tiny, 3, 0) == ext[:3]


def test_entries_the_outlier_passes_time_fast_are_no_longer_flagged(tiny, tmp_path, monkeypatch):
    import nas.latency.outliers as outliers

    slow = {g.key for g in space_signatures(tiny)[::7]}
    state, _ = slow_host(monkeypatch, slow)
    original = profile_mod.retime_outliers

    def quiet_then_retime(*args, **kwargs):  # the host turns quiet before the outlier passes
        state["host_slow"] = False
        return original(*args, **kwargs)

    monkeypatch.setattr(profile_mod, "retime_outliers", quiet_then_retime)
    monkeypatch.setattr(outliers, "MIN_ENTRIES", 5)
    out = tmp_path / "t.json"
    table = profile_space(tiny, out=out, calibrate=0, **{**FAST, "retime": 1, "save_every": 1})
    assert table.scope["outliers"]["lowered"] == len(slow)  # the passes timed them at 1.0
    # timed again at full speed: no longer flagged (entries the passes did not time again,
    # e.g. those right after a slow one, stay as they were)
    flagged = set(table.slow_keys())
    assert not flagged & slow and table.scope["retimed"]["still_slow"] == len(flagged)
    assert table.scope["retimed"]["slow_entries"] >= len(slow)
    assert set(LatencyTable.load(out).slow_keys()) == flagged


def slow_calibration_host(monkeypatch) -> tuple[dict[str, bool], list[dict]]:
    """A host whose components time at 1.0 always, and whose whole subnets time at 1.5
    with the reference kernel reading slow right after one, while ``state["slow"]``.
    Returns ``(state, the archs timed end to end, in order)``."""
    state = {"slow": True, "last": "component"}
    timed: list[dict] = []

    def measure(self, ks):
        state["last"] = "component"
        return [{"min": 1.0, "median": 1.0, "iqr": 0.0, "ops": 1} for _ in ks]

    def measure_archs(self, archs, **kw):
        timed.extend(archs)
        state["last"] = "subnet"
        ms = 1.5 if state["slow"] else 1.0
        return [{"min": ms, "median": ms, "iqr": 0.0} for _ in archs]

    def probe(self):
        return 1.3 if state["slow"] and state["last"] == "subnet" else 1.0

    monkeypatch.setattr(Measurer, "measure", measure)
    monkeypatch.setattr(Measurer, "measure_archs", measure_archs)
    monkeypatch.setattr(Measurer, "probe", probe)
    monkeypatch.setattr(slowphase, "PROBE_GAP_S", 0.0)
    monkeypatch.setattr(profile_mod, "RETIME_SHARE", 1e6)
    return state, timed


def test_calibration_subnets_timed_only_in_slow_phases_are_timed_again(tiny, tmp_path,
                                                                       monkeypatch):
    state, timed = slow_calibration_host(monkeypatch)
    original = rounds_mod.measure_calibration

    def measure_calibration(*args, **kw):  # the machine is fast again once re-timing starts
        if kw.get("desc", "").startswith("re-time"):
            state["slow"] = False
        return original(*args, **kw)

    monkeypatch.setattr(rounds_mod, "measure_calibration", measure_calibration)
    out = tmp_path / "t.json"
    table = profile_space(tiny, out=out, calibrate=3, **{**FAST, "retime": 1})
    samples = table.calibration["samples"]
    assert len(samples) == 3 and all(s["ms"] == 1.0 for s in samples)
    assert len(timed) == 3 * profile_mod.CALIBRATION_ROUNDS + 3  # the rounds, then once each
    assert table.slow_calibration_archs() == []
    assert LatencyTable.load(out).scope["retimed"]["calibration"] == 3
    assert LatencyTable.load(out).scope["retimed"]["calibration_still_slow"] == 0


def test_calibration_subnets_never_timed_fast_are_flagged_and_a_rerun_times_them(
        tiny, tmp_path, monkeypatch):
    import json

    from nas.errors import ArtifactError

    state, timed = slow_calibration_host(monkeypatch)
    out = tmp_path / "t.json"
    table = profile_space(tiny, out=out, calibrate=3, **{**FAST, "retime": 1})
    cal = table.calibration_archs()
    # timed again every pass the budget allowed, slow every time: all flagged, on disk too
    assert len(timed) == 3 * profile_mod.CALIBRATION_ROUNDS + 3 * rounds_mod.CALIBRATION_RETIMES
    assert sorted(map(str, table.slow_calibration_archs())) == sorted(map(str, cal))
    assert sum(s.get("slow", False) for s in json.loads(out.read_text())["calibration"]["samples"]) == 3
    assert table.scope["retimed"]["calibration_still_slow"] == 3

    state["slow"], timed[:] = False, []  # the same command later, on a quiet host
    table = profile_space(tiny, out=out, calibrate=3, **{**FAST, "retime": 1})
    assert sorted(map(str, timed)) == sorted(str(a.to_dict()) for a in cal)  # once each
    assert table.slow_calibration_archs() == []
    assert all(s["ms"] == 1.0 for s in table.calibration["samples"])
    assert table.scope["retimed"]["calibration"] == 3
    assert table.scope["retimed"]["calibration_still_slow"] == 0

    doc = json.loads(out.read_text())
    doc["calibration"]["samples"][0]["slow"] = 1
    out.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"calibration\.samples\[0\]\.slow must be true or false"):
        LatencyTable.load(out)


def test_without_retime_slow_calibration_subnets_are_flagged_not_timed_again(tiny, tmp_path,
                                                                            monkeypatch):
    state, timed = slow_calibration_host(monkeypatch)
    table = profile_space(tiny, out=tmp_path / "t.json", calibrate=3, **FAST)
    assert len(timed) == 3 * profile_mod.CALIBRATION_ROUNDS
    assert len(table.slow_calibration_archs()) == 3
    assert table.scope["retimed"]["calibration"] == 0  # none looked at


def test_nas_profile_says_which_calibration_subnets_stayed_slow(tiny, tmp_path, monkeypatch,
                                                                capsys):
    import json

    from nas.cli import main

    slow_calibration_host(monkeypatch)
    space = tmp_path / "s.json"
    space.write_text(json.dumps(_lat.TINY))
    assert main(["profile", "--space", str(space), "--threads", "1", "--min-run-time", "0.002",
                 "--warmup", "1", "--rounds", "1", "--calibrate", "3", "--quiet",
                 "--out", str(tmp_path / "t.json")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("slow phase"))
    assert "3 calibration subnets timed only while it ran slow were timed again" in line
    assert "3 calibration subnets never timed at full speed" in line
