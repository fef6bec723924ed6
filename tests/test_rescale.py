"""``nas profile --rescale``: a table scaled to the machine's speed by its own calibration subnets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nas.arch import sample_arch
from nas.cli import main
from nas.errors import ArtifactError, NasError
from nas.latency import LatencyTable, Measurer, profile_space
from nas.latency.device import num_threads
from nas.latency.rescale import anchor_archs, rescale_table
from nas.space import parse_space
from tests.test_latency import FAST, TINY


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny():
    return parse_space(TINY)


@pytest.fixture(scope="module")
def table_path(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("rescale") / "tiny.json"
    profile_space(tiny, out=path, calibrate=8, **FAST)
    return path


def _archs(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_arch(space, rng) for _ in range(n)]


class _Scaled:
    """A measurer whose whole models read ``factor`` x the table's calibration timings."""

    def __init__(self, table, factor, model_min_run_time=None):
        self.by_arch = {a.to_json(): s["ms"] for a, s in zip(
            table.calibration_archs(), table.calibration["samples"], strict=True)}
        self.factor, self.calls = factor, []
        self.mrt = model_min_run_time or table.timing["model_min_run_time"]

    def model_timing(self):
        return type("T", (), {"min_run_time": self.mrt})()

    def measure_archs(self, dicts, *, rounds=1, min_span_s=0.0):
        self.calls.append((len(dicts), rounds))
        out = []
        for i, d in enumerate(dicts):
            from nas.arch import Arch

            ms = self.by_arch[Arch.from_dict(d).to_json()]
            f = self.factor if np.isscalar(self.factor) else self.factor[i]
            out.append({"min": ms * f, "median": ms * f})
        return out


def test_anchors_spread_over_the_calibration_and_skip_verify_and_slow(tiny, table_path):
    table = LatencyTable.load(table_path, space=tiny)
    ms = sorted(s["ms"] for s in table.calibration["samples"])
    anchors = anchor_archs(table, 3)
    by = {a: s["ms"] for a, s in zip(table.calibration_archs(), table.calibration["samples"],
                                     strict=True)}
    picked = sorted(by[a] for a in anchors)
    assert len(anchors) == 3 and picked[0] <= np.median(ms) <= picked[-1]
    assert picked[0] != ms[0] or len(ms) < 3  # quantiles, not the extremes
    assert len(anchor_archs(table, 50)) == len(ms)  # never more than there are
    slow = [anchors[1]]
    table.set_calibration_slow(table.calibration_archs(), slow)
    assert anchors[1] not in anchor_archs(table, len(ms))
    table.add_calibration_sample(_archs(tiny, 1, seed=99)[0], 0.5, source="verify")
    assert _archs(tiny, 1, seed=99)[0] not in anchor_archs(table, 50)


def test_rescale_scales_predictions_by_the_median_ratio(tiny, table_path, tmp_path):
    table = LatencyTable.load(table_path, space=tiny)
    archs = _archs(tiny, 20, seed=3)
    plain = table.predict(archs)
    fake = _Scaled(table, [0.9, 0.95, 0.5, 0.93, 0.94])  # one anchor off: the median holds
    info = rescale_table(table, k=5, measurer=fake)
    assert info["ratio"] == pytest.approx(0.93, abs=1e-4) and info["anchors"] == 5
    # timed as the profile timed them: warm-up pass, then the calibration's rounds
    assert fake.calls == [(5, 1), (5, table.timing["calibration_rounds"])]
    np.testing.assert_allclose(table.predict(archs), plain * 0.93, rtol=1e-4)
    # saved and loaded, the rescale holds
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json", space=tiny)
    np.testing.assert_allclose(again.predict(archs), plain * 0.93, rtol=1e-4)
    # a refit on the same samples keeps it; new calibration timings drop it
    again.calibrate(again.calibration["features"])
    np.testing.assert_allclose(again.predict(archs), plain * 0.93, rtol=1e-4)
    again.add_calibration_sample(again.calibration_archs()[0],
                                 again.calibration["samples"][0]["ms"] * 2)
    assert again.rescale is None
    assert again.restat("median").rescale is None


def test_rescale_refuses_tables_timed_another_way(tiny, table_path):
    table = LatencyTable.load(table_path, space=tiny)
    with pytest.raises(NasError, match="--recalibrate"):
        rescale_table(table, measurer=_Scaled(table, 1.0, model_min_run_time=0.2))
    bare = LatencyTable(json.loads(table_path.read_text()) | {"calibration": None})
    with pytest.raises(NasError, match="--calibrate"):
        rescale_table(bare)
    with pytest.raises(ArtifactError, match="ratio"):
        table.set_rescale({"ratio": 0.0})


def test_malformed_rescale_in_a_file_is_refused(table_path, tmp_path):
    data = json.loads(table_path.read_text())
    data["calibration"]["rescale"] = {"ratio": "fast"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="rescale malformed"):
        LatencyTable.load(bad)


def test_rescale_with_a_real_measurer_reads_this_machine(tiny, table_path):
    table = LatencyTable.load(table_path, space=tiny)
    m = Measurer(table.device, table.timing, num_classes=tiny.num_classes,
                 in_chans=tiny.in_chans)
    info = rescale_table(table, k=2, measurer=m)
    # the same machine and settings, moments later: not far from the profile's speed
    assert 0.3 < info["ratio"] < 3 and len(info["ratios"]) == 2


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_rescale(tiny, table_path, tmp_path, capsys):
    space = tmp_path / "s.json"
    space.write_text(json.dumps(TINY))
    out = tmp_path / "t.json"
    out.write_bytes(table_path.read_bytes())
    base = ["profile", "--space", str(space), "--threads", "1", "--out", str(out)]
    assert main([*base, "--rescale", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "rescaled" in text and "2 calibration subnets" in text
    assert LatencyTable.load(out).rescale["anchors"] == 2
    before = out.read_bytes()
    for extra, msg in ((["--rescale", "0"], "K >= 1"),
                       (["--rescale", "--recalibrate"], "drop --recalibrate"),
                       (["--rescale", "--batch-size", "8"], "batch_size")):
        assert main([*base, *extra]) == 2
        assert msg in _one_line_error(capsys)
    assert out.read_bytes() == before  # a refused rescale leaves the table alone
    missing = tmp_path / "none.json"
    assert main(["profile", "--space", str(space), "--out", str(missing), "--rescale"]) == 2
    assert "no table at" in _one_line_error(capsys) and not missing.exists()
