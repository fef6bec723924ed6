"""Latency tables: signatures, profiling round trip, resume, prediction, refusals, CLI."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from nas.arch import extreme_arch, sample_arch
from nas.cli import main
from nas.errors import ArtifactError, NasError
from nas.latency import (
    DeviceError,
    DeviceSpec,
    LatencyTable,
    Measurer,
    arch_signatures,
    measure_arch,
    merge_tables,
    profile_space,
    space_signatures,
)
from nas.latency.components import build_component
from nas.latency.device import num_threads
from nas.latency.measure import Timing
from nas.latency.profile import CALIBRATION_ROUNDS
from nas.model import build_model
from nas.space import parse_space

FAST = {"min_run_time": 0.002, "warmup": 1, "threads": 1, "progress": False, "rounds": 1,
        "retime": 0}  # exact measurement counts: no re-timing of slow-phase entries

TINY = {
    "name": "lat-tiny",
    "num_classes": 4,
    "resolution": [16],
    "stem_stride": [4],
    "stages": [
        {"depth": [1, 2], "embed_dim": [16], "mixer": ["mhsa", "pool"], "heads": [2],
         "mlp_ratio": [2], "pos_embed": ["none", "absolute"]},
        {"depth": [1, 2], "embed_dim": [16, 24], "stride": [2], "mixer": ["mhsa", "mlp"],
         "heads": [2], "mlp_ratio": [2], "keep_ratio": [1.0, 0.5], "reduce_at": [0],
         "reduce_method": ["prune", "merge"]},
    ],
}

# Every component kind and most block options, still small enough to enumerate.
RICH = {
    "name": "lat-rich", "num_classes": 3, "resolution": [32], "stem": ["patch", "overlap", "convs"],
    "stem_stride": [4, 8],
    "stages": [
        {"depth": [1, 2], "embed_dim": [16, 24], "stride": [1, 2], "mixer": ["cga", "attention", "sra"],
         "heads": [2], "pattern": ["block", "local"], "window": [2], "shift": [False, True], "density": [0.5],
         "local_fraction": [0.5, 1.0], "sr_ratio": [2], "sandwich": [0, 1],
         "token_interaction": [False, True], "pos_embed": ["none", "conv", "absolute"],
         "keep_ratio": [1.0, 0.5], "reduce_at": [0, 1], "norm": ["layernorm", "batchnorm"],
         "act": ["gelu", "relu"], "mlp_ratio": [2]},
        {"depth": [1, 2], "embed_dim": [24, 32], "stride": [1, 2], "downsample": ["conv", "merge"],
         "mixer": ["linear", "dwconv", "identity", "mhsa"], "heads": [2], "ffn_conv": [False, True],
         "low_rank": [0.5, 1.0], "sparsity": ["dense", "2:4"], "layer_scale": [False, True],
         "mlp_ratio": [2], "keep_ratio": [1.0, 0.75], "reduce_method": ["prune", "merge"],
         "reduce_at": [0], "norm": ["groupnorm", "layernorm"]},
    ],
}


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a CPU shared with other jobs wait on each other for a whole
    # scheduler slice per op; these tests only need correct results, fast.
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny():
    return parse_space(TINY)


@pytest.fixture(scope="module")
def table_path(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "tiny.json"
    profile_space(tiny, out=path, calibrate=6, **FAST)
    return path


def _archs(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_arch(space, rng) for _ in range(n)]


# ----------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("name", ["lat-tiny", "lat-rich", "tiny32"])
def test_enumeration_covers_every_sampled_arch(name, tiny, spaces):
    space = {"lat-tiny": tiny, "lat-rich": parse_space(RICH)}.get(name) or spaces[name]
    sigs = set(space_signatures(space))
    for a in _archs(space, 300):
        missing = [g.key for g in arch_signatures(a, num_classes=space.num_classes,
                                                  in_chans=space.in_chans) if g not in sigs]
        assert not missing, missing[:3]


def test_tiny32_signature_count_is_manageable(spaces):
    assert 500 < len(space_signatures(spaces["tiny32"])) < 2000


def test_huge_space_asks_for_an_arch_list(spaces):
    with pytest.raises(NasError, match="--archs"):
        space_signatures(spaces["imagenet224"], limit=500)


def test_every_component_builds_and_runs(tiny):
    rich = space_signatures(parse_space(RICH))
    picks = [rich[i] for i in np.random.default_rng(0).choice(len(rich), 60, replace=False)]
    picks += [g for g in rich if g.kind != "block"][::4]
    for sig in space_signatures(tiny) + picks:
        module, inputs = build_component(sig, batch_size=2)
        with torch.no_grad():
            out = module(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        assert out.shape[0] == 2 and torch.isfinite(out).all(), sig.key


def _macs(module, inputs):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops()


def test_components_add_up_to_the_model():
    """The decomposition mirrors the model: component MACs sum to the whole model's."""
    space = parse_space(RICH)
    for a in _archs(space, 12, seed=3):
        parts = sum(_macs(*build_component(g, batch_size=1, device="meta"))
                    for g in arch_signatures(a, num_classes=3, in_chans=3))
        model = build_model(a, num_classes=3, device="meta").eval()
        assert parts == _macs(model, (torch.empty(1, 3, 32, 32, device="meta"),)), a.to_json()


def test_signature_keys_round_trip(tiny):
    from nas.latency import Signature

    for sig in space_signatures(tiny):
        assert Signature.from_key(sig.key) == sig


# ----------------------------------------------------------------------------- profile


def test_profile_round_trip(tiny, table_path):
    table = LatencyTable.load(table_path, space=tiny)
    assert table.complete and len(table) == len(space_signatures(tiny))
    assert table.device["threads"] == 1 and table.device["type"] == "cpu"
    assert table.device["kernels_version"]
    cal = table.calibration
    assert len(cal["samples"]) == 6 and cal["coef"] and cal["fit"]["n"] == 6
    raw = json.loads(table_path.read_text())
    assert raw["space"]["fingerprint"] == tiny.fingerprint and raw["created"]


def test_resume_measures_only_the_rest(tiny, tmp_path, monkeypatch):
    # a steady machine: no entry is flagged as timed in a slow phase (those a resumed run
    # times again; tests/test_slowphase.py)
    monkeypatch.setattr(Measurer, "probe", lambda self: 1.0)
    out = tmp_path / "t.json"
    first = profile_space(tiny, out=out, calibrate=0, max_entries=5, **FAST)
    assert len(first) == 5 and not first.complete
    assert not LatencyTable.load(out).complete
    seen = []
    original = Measurer.measure

    def counting(self, keys):
        seen.extend(keys)
        return original(self, keys)

    monkeypatch.setattr(Measurer, "measure", counting)
    second = profile_space(tiny, out=out, calibrate=0, **FAST)
    total = len(space_signatures(tiny))
    assert len(seen) == total - 5 and second.complete and len(second) == total
    assert not set(seen) & {g.key for g in space_signatures(tiny)[:5]}
    # asking for a second round resumes the same table: every entry is timed once more
    seen.clear()
    third = profile_space(tiny, out=out, calibrate=0, **{**FAST, "rounds": 2})
    assert sorted(seen) == sorted(g.key for g in space_signatures(tiny))
    assert third.complete and all(third.rounds(g) == 2 for g in space_signatures(tiny))
    assert third.timing["rounds"] == 2


def test_rounds_keep_the_fastest_measurement(tiny):
    table = LatencyTable.new(tiny, {"type": "cpu", "name": "x", "dtype": "fp32", "batch_size": 1,
                                    "threads": 1}, {"stat": "min", "clock": "thread"})
    sig = space_signatures(tiny)[0]
    table.add(sig, {"min": 2.0, "median": 2.5, "iqr": 0.1})
    table.add(sig, {"min": 1.5, "median": 3.0, "iqr": 0.2}, merge=True)
    table.add(sig, {"min": 4.0, "median": 4.0, "iqr": 0.3}, merge=True)
    assert table.lookup(sig) == 1.5 and table.rounds(sig) == 3
    rec = table.to_dict()["entries"][0]
    assert (rec["min"], rec["median"], rec["iqr"]) == (1.5, 2.5, 0.2)
    table.add(sig, {"min": 9.0, "median": 9.0})  # without merge: replaced
    assert table.lookup(sig) == 9.0 and table.rounds(sig) == 1
    arch = extreme_arch(tiny, "min")
    table.add_calibration_sample(arch, {"min": 3.0, "median": 3.0})
    table.add_calibration_sample(arch, {"min": 2.0, "median": 5.0})
    (sample,) = table.to_dict()["calibration"]["samples"]
    assert (sample["ms"], sample["median"], sample["rounds"]) == (2.0, 3.0, 2)
    assert table.calibration_rounds(arch) == 2


def test_recalibrate_times_only_the_calibration_subnets(tiny, table_path, tmp_path,
                                                       monkeypatch):
    out = tmp_path / "t.json"
    unflagged = LatencyTable.load(table_path, space=tiny)
    unflagged.set_slow(unflagged.slow_keys(), [])  # else they are timed again (tested elsewhere)
    unflagged.save(out)
    calls = {"measure": 0, "measure_archs": 0}
    for name in calls:
        original = getattr(Measurer, name)

        def counting(self, items, _name=name, _original=original, **kw):
            calls[_name] += len(items)
            return _original(self, items, **kw)

        monkeypatch.setattr(Measurer, name, counting)
    table = profile_space(tiny, out=out, calibrate=6, recalibrate=True, **FAST)
    # each calibration subnet is timed CALIBRATION_ROUNDS times per component round
    assert calls == {"measure": 0, "measure_archs": 6 * CALIBRATION_ROUNDS}
    assert len(table.calibration["samples"]) == 6 and table.calibration["coef"]
    assert {s["rounds"] for s in table.calibration["samples"]} == {CALIBRATION_ROUNDS}
    assert table.timing["calibration_rounds"] == CALIBRATION_ROUNDS


def test_predict_many_is_fast_and_positive(tiny, table_path):
    table = LatencyTable.load(table_path, space=tiny)
    archs = _archs(tiny, 3000, seed=1)
    t0 = time.perf_counter()
    pred = table.predict(archs)
    assert time.perf_counter() - t0 < 3.0  # thousands per second even on a busy CPU
    assert pred.shape == (3000,) and (pred > 0).all()
    assert table.predict_one(archs[0]) == pytest.approx(pred[0])
    assert table.raw_sum(archs[0]) == pytest.approx(sum(ms for _, ms in table.breakdown(archs[0])))


def test_other_space_refused_unless_forced(table_path):
    other = parse_space({**TINY, "num_classes": 5})
    with pytest.raises(ArtifactError, match="built for search space"):
        LatencyTable.load(table_path, space=other)
    assert len(LatencyTable.load(table_path, space=other, force=True)) > 0


def test_other_device_setting_refused_unless_forced(table_path):
    with pytest.raises(ArtifactError, match="threads"):
        LatencyTable.load(table_path, device=DeviceSpec.parse("cpu", threads=2))
    LatencyTable.load(table_path, device=DeviceSpec.parse("cpu", threads=2), force=True)
    LatencyTable.load(table_path, device=DeviceSpec.parse("cpu", threads=1))


def test_resume_into_table_of_other_space_refused(tiny, table_path, tmp_path):
    out = tmp_path / "t.json"
    out.write_bytes(table_path.read_bytes())
    with pytest.raises(ArtifactError, match="cannot resume"):
        profile_space(parse_space({**TINY, "num_classes": 5}), out=out, calibrate=0, **FAST)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_entries", "bad_entry", "edited"])
def test_corrupted_table_is_an_artifact_error(table_path, tmp_path, damage):
    text = table_path.read_text()
    data = json.loads(text)
    if damage == "truncate":
        text = text[: len(text) // 2]
    elif damage == "garbage":
        text = "\x00\x01 not json"
    elif damage == "no_entries":
        del data["entries"]
        text = json.dumps(data)
    elif damage == "bad_entry":
        data["entries"][0]["ms"] = "fast"
        text = json.dumps(data)
    else:
        data["space"]["spec"]["num_classes"] = 99
        text = json.dumps(data)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ArtifactError, match="bad.json"):
        LatencyTable.load(bad)


def test_missing_entry_names_the_signature(tiny, table_path, tmp_path):
    data = json.loads(table_path.read_text())
    data["entries"] = [e for e in data["entries"] if e["kind"] != "head"]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="no entry for head"):
        LatencyTable.load(path).predict(_archs(tiny, 1))


def test_merge_two_halves(tiny, table_path, tmp_path):
    data = json.loads(table_path.read_text())
    half = len(data["entries"]) // 2
    a, b = dict(data, entries=data["entries"][:half]), dict(data, entries=data["entries"][half:])
    merged = merge_tables(LatencyTable(a), LatencyTable(b))
    full = LatencyTable.load(table_path)
    assert len(merged) == len(full)
    archs = _archs(tiny, 20)
    np.testing.assert_allclose(merged.predict(archs), full.predict(archs), rtol=1e-6)


# ----------------------------------------------------------------------------- devices


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", "gpu", ""])
def test_unknown_device_is_an_error(device):
    with pytest.raises(DeviceError, match="unknown device"):
        DeviceSpec.parse(device)


def test_bad_dtype_and_batch_are_errors():
    with pytest.raises(DeviceError, match="dtype"):
        DeviceSpec.parse("cpu", dtype="fp8")
    with pytest.raises(DeviceError, match="batch size"):
        DeviceSpec.parse("cpu", batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_an_error(tiny, tmp_path):
    with pytest.raises(DeviceError, match="no usable GPU"):
        profile_space(tiny, out=tmp_path / "t.json", device="cuda", calibrate=0, **FAST)
    assert not (tmp_path / "t.json").exists()


def test_measure_arch_positive(tiny):
    a = _archs(tiny, 1)[0]
    assert measure_arch(a, tiny, threads=1, min_run_time=0.002, warmup=1) > 0


def test_whole_models_get_longer_measurements_at_large_batches(tiny, monkeypatch):
    import nas.latency.measure as measure

    seen = []

    def fake_time(module, inputs, spec, timing):
        seen.append((type(module).__name__, inputs[0].shape[0], timing.min_run_time))
        return {"min": 1.0, "median": 1.0, "iqr": 0.0, "blocks": 1}

    monkeypatch.setattr(measure, "time_module", fake_time)
    arch = extreme_arch(tiny, "min").to_dict()
    for batch, model_s in ((1, 0.05), (16, 0.05), (64, 0.2)):
        m = Measurer(DeviceSpec.parse("cpu", batch_size=batch, threads=1).to_dict(),
                     {"min_run_time": 0.05}, num_classes=tiny.num_classes,
                     in_chans=tiny.in_chans)
        seen.clear()
        m.measure_archs([arch])
        m.measure([space_signatures(tiny)[0].key])
        (_, b_model, s_model), (_, b_comp, s_comp) = seen
        assert (b_model, b_comp) == (batch, batch)
        assert s_model == pytest.approx(model_s) and s_comp == 0.05  # components unchanged
        assert m.timing_record()["model_min_run_time"] == pytest.approx(model_s)


def test_bf16_component_timing(tiny):
    m = Measurer(DeviceSpec.parse("cpu", dtype="bf16", threads=1).to_dict(),
                 {"min_run_time": 0.002, "warmup": 1}, num_classes=4, in_chans=3)
    sig = space_signatures(tiny)[1]
    stats = m.measure([sig.key])[0]
    assert stats["min"] <= stats["median"] and stats["min"] > 0


def test_timing_validates():
    with pytest.raises(ValueError, match="min_run_time"):
        Timing(min_run_time=0)
    with pytest.raises(NasError, match="clock"):
        Timing(clock="tsc")


def test_clock_resolution():
    one, two = DeviceSpec.parse("cpu", threads=1), DeviceSpec.parse("cpu", threads=2)
    assert Timing().resolve(one).clock == "thread"
    assert Timing().resolve(two).clock == "wall"
    assert Timing(clock="wall").resolve(one).clock == "wall"
    with pytest.raises(NasError, match="--threads 1"):
        Timing(clock="thread").resolve(two)
    assert Timing().resolve(DeviceSpec.parse("cuda")).clock == "cuda"


def test_table_records_how_it_was_timed(table_path):
    timing = LatencyTable.load(table_path).timing
    assert timing["clock"] == "thread" and timing["stat"] == "min"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_profile_and_measure(tiny, tmp_path):
    table = profile_space(tiny, out=tmp_path / "g.json", device="cuda", dtype="fp16",
                          calibrate=4, min_run_time=0.01, warmup=2, progress=False)
    assert table.complete and table.device["type"] == "cuda"
    a = _archs(tiny, 1)[0]
    assert table.predict_one(a) > 0
    assert measure_arch(a, tiny, device="cuda", dtype="fp16", min_run_time=0.01) > 0


# ----------------------------------------------------------------------------- CLI


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_profile_unknown_device(tiny, tmp_path, capsys):
    space = tmp_path / "s.json"
    space.write_text(json.dumps(TINY))
    code = main(["profile", "--space", str(space), "--device", "tpu:0",
                 "--out", str(tmp_path / "t.json")])
    assert code == 2 and "unknown device" in _one_line_error(capsys)


def test_cli_profile_latency_measure(tmp_path, capsys):
    space = tmp_path / "s.yaml"
    space.write_text(json.dumps(TINY))
    out = tmp_path / "t.json"
    assert main(["profile", "--space", str(space), "--threads", "1", "--min-run-time", "0.002",
                 "--warmup", "1", "--calibrate", "4", "--out", str(out), "--quiet",
                 "--max-entries", "3"]) == 0
    assert "incomplete" in capsys.readouterr().out
    assert main(["profile", "--space", str(space), "--threads", "1", "--min-run-time", "0.002",
                 "--warmup", "1", "--calibrate", "4", "--out", str(out), "--quiet"]) == 0
    assert "calibrated on 4 subnets" in capsys.readouterr().out
    arch = tmp_path / "a.json"
    arch.write_text(_archs(parse_space(TINY), 1)[0].to_json())
    assert main(["latency", "--table", str(out), "--arch", str(arch), "--breakdown",
                 "--space", str(space)]) == 0
    text = capsys.readouterr().out
    assert "predicted" in text and "stem" in text and "head" in text
    assert main(["measure", "--arch", str(arch), "--space", str(space), "--threads", "1",
                 "--min-run-time", "0.002", "--table", str(out)]) == 0
    assert "measured" in capsys.readouterr().out
    merged = tmp_path / "m.json"
    assert main(["latency", "merge", str(out), str(out), "--out", str(merged)]) == 0
    assert LatencyTable.load(merged).complete


def test_cli_latency_errors_are_one_line(table_path, tmp_path, capsys):
    arch = tmp_path / "a.json"
    arch.write_text(_archs(parse_space(TINY), 1)[0].to_json())
    bad = tmp_path / "bad.json"
    bad.write_text(table_path.read_text()[:100])
    assert main(["latency", "--table", str(bad), "--arch", str(arch)]) == 2
    assert "corrupted or truncated" in _one_line_error(capsys)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY, "num_classes": 5}))
    assert main(["latency", "--table", str(table_path), "--arch", str(arch),
                 "--space", str(other)]) == 2
    assert "built for search space" in _one_line_error(capsys)
    assert main(["latency", "--table", str(table_path), "--arch", str(arch), "--space",
                 str(other), "--force"]) == 0
    capsys.readouterr()
    assert main(["latency", "--table", str(tmp_path / "none.json"), "--arch", str(arch)]) == 2
    assert "not found" in _one_line_error(capsys)
    assert main(["latency", "--table", str(table_path), "--arch", str(arch),
                 "--device", "cpu", "--threads", "2"]) == 2
    assert "threads" in _one_line_error(capsys)
    assert main(["measure", "--arch", str(arch), "--space", str(other), "--dtype", "fp64"]) == 2
    assert "dtype" in _one_line_error(capsys)


# ----------------------------------------------------------------------------- arch lists


def test_profile_restricted_to_archs(tiny, tmp_path):
    a = _archs(tiny, 1)[0]
    b = next(x for x in _archs(tiny, 40, seed=5) if x.stages[1] != a.stages[1])
    table = profile_space(tiny, out=tmp_path / "r.json", archs=[a], calibrate=0, **FAST)
    assert table.scope["kind"] == "archs" and table.complete
    assert len(table) == len(set(arch_signatures(a, num_classes=4, in_chans=3)))
    assert table.predict_one(a) > 0
    assert table.missing([b])
    with pytest.raises(ArtifactError, match="--archs"):
        table.predict([b])


def test_read_archs_formats(tiny, tmp_path):
    from nas.latency.archs import read_archs

    archs = _archs(tiny, 3)
    lines = tmp_path / "a.jsonl"
    lines.write_text("\n".join(a.to_json() for a in archs) + "\n")
    docs = tmp_path / "a.yaml"
    docs.write_text("---\n".join(a.to_yaml() for a in archs))
    wrapped = tmp_path / "w.yaml"
    wrapped.write_text(yaml.safe_dump({"space": "x", "arch": archs[0].to_dict()}))
    listed = tmp_path / "l.json"
    listed.write_text(json.dumps([a.to_dict() for a in archs]))
    for path, n in ((lines, 3), (docs, 3), (wrapped, 1), (listed, 3)):
        assert read_archs(str(path)) == archs[:n]
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [")
    with pytest.raises(NasError):
        read_archs(str(bad))
    with pytest.raises(NasError, match="not found"):
        read_archs(str(tmp_path / "none.yaml"))


@pytest.mark.slow
def test_profile_through_a_local_ray_cluster(tiny, tmp_path):
    table = profile_space(tiny, out=tmp_path / "ray.json", calibrate=3, address="local", **FAST)
    assert table.complete and len(table) == len(space_signatures(tiny))


BUSY = {"wall_s": 1.0, "cpus": 2, "loadavg": 1.9, "others_cores": 0.9, "steal_frac": 0.0}
QUIET = {"wall_s": 1.0, "cpus": 2, "loadavg": 0.1, "others_cores": 0.02, "steal_frac": 0.0}


def test_busy_reason_reads_other_processes_steal_and_load():
    from nas.latency.quiet import busy_reason

    assert busy_reason(QUIET) is None
    assert "0.90 cores busy" in busy_reason(BUSY)
    assert "stole 9%" in busy_reason({**QUIET, "steal_frac": 0.09})
    no_proc = {**QUIET, "others_cores": None, "steal_frac": None}
    assert busy_reason({**no_proc, "loadavg": 0.5}, 1) is None
    assert "load average 3.50" in busy_reason({**no_proc, "loadavg": 3.5}, 1)


def test_quiet_timing_waits_and_retimes_when_others_were_busy(monkeypatch):
    """Busy probes are waited out; a run the monitor saw busy is run again; a machine busy
    throughout gives the last result with its reason."""
    import nas.latency.quiet as quiet

    probes = iter([BUSY, BUSY, QUIET] + [QUIET] * 10)
    monkeypatch.setattr(quiet, "probe", lambda seconds=1.0: dict(next(probes)))
    readings = iter([BUSY, QUIET])

    class FakeMonitor:
        def read(self):
            return dict(next(readings))

    monkeypatch.setattr(quiet, "LoadMonitor", FakeMonitor)
    calls = []
    result, reason = quiet.quiet_timing(lambda: calls.append(1) or len(calls), attempts=3)
    assert (result, reason, len(calls)) == (2, None, 2)
    monkeypatch.setattr(quiet, "probe", lambda seconds=1.0: dict(BUSY))
    monkeypatch.setattr(quiet.time, "monotonic", iter(range(0, 1000, 30)).__next__)
    assert "cores busy" in quiet.wait_for_quiet(20.0)
    monkeypatch.setattr(quiet, "LoadMonitor", lambda: type("M", (), {"read": lambda self: BUSY})())
    result, reason = quiet.quiet_timing(lambda: "t", attempts=2)
    assert result == "t" and "cores busy" in reason


def test_load_monitor_sees_another_process(tmp_path):
    """A child process spinning for a second shows up as about one other core busy."""
    import subprocess
    import sys as _sys

    from nas.latency.quiet import LoadMonitor, _proc_stat

    if _proc_stat() is None:
        pytest.skip("no /proc/stat on this platform")
    monitor = LoadMonitor()
    subprocess.run([_sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1: pass"],
                   check=True)
    got = monitor.read()
    assert got["others_cores"] > 0.5, got


def test_profile_refuses_a_busy_machine_and_flags_one_that_turns_busy(tiny, tmp_path,
                                                                       monkeypatch, caplog,
                                                                       capsys):
    import nas.latency.quiet as quiet

    monkeypatch.delenv("NAS_ALLOW_BUSY")
    monkeypatch.setattr(quiet, "probe", lambda seconds=1.0: dict(BUSY))
    out = tmp_path / "t.json"
    with pytest.raises(NasError, match="the machine is busy: other processes kept 0.90 cores"):
        profile_space(tiny, out=out, calibrate=0, **FAST)
    assert not out.exists()
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(TINY))
    rc = main(["profile", "--space", str(space_file), "--out", str(out), "--quiet"])
    assert rc == 2 and "--allow-busy" in _one_line_error(capsys) and not out.exists()
    # quiet before, busy during: the table is written, flagged and the log says so
    monkeypatch.setattr(quiet, "probe", lambda seconds=1.0: dict(QUIET))
    monkeypatch.setattr(quiet.LoadMonitor, "read", lambda self: dict(BUSY))
    with caplog.at_level("WARNING"):
        table = profile_space(tiny, out=out, calibrate=0, max_entries=None, **FAST)
    assert "0.90 cores" in table.scope["busy"] and table.scope["load"]["others_cores"] == 0.9
    assert "busy while profiling" in caplog.text
    assert LatencyTable.load(out).scope["busy"] == table.scope["busy"]
    # --allow-busy (or NAS_ALLOW_BUSY=1) times anyway
    monkeypatch.setattr(quiet, "probe", lambda seconds=1.0: dict(BUSY))
    monkeypatch.setattr(quiet.LoadMonitor, "read", lambda self: dict(QUIET))
    table = profile_space(tiny, out=tmp_path / "u.json", calibrate=0, allow_busy=True, **FAST)
    assert table.scope["busy"] is None
