"""Entries that read above what the other entries predict are found and timed again."""
from __future__ import annotations

import numpy as np
import pytest

import nas.latency.outliers as outliers
from nas.latency import LatencyTable, Measurer, profile_space
from nas.latency.outliers import signature_features, suspects
from nas.latency.signatures import Signature, space_signatures
from nas.space import load_space
from tests import test_latency as _lat
from tests.test_latency import FAST

_one_thread, tiny = _lat._one_thread, _lat.tiny  # the same fixtures (autouse, module scope)


class FakeTable:
    def __init__(self, ms: dict[str, float]):
        self.ms = ms

    def __contains__(self, sig: Signature) -> bool:
        return sig.key in self.ms

    def lookup(self, sig: Signature) -> float:
        return self.ms[sig.key]


def smooth_ms(sig: Signature) -> float:
    """A latency that grows smoothly with the component's size, like a real table's."""
    p = dict(sig.params)
    dim = p.get("embed_dim") or p.get("dim") or p.get("cout") or 32
    tokens = np.prod(p["grid"]) if p.get("grid") else p.get("tokens", 16)
    return 0.01 * dim * tokens * (1 + p.get("mlp_ratio", 1.0)) ** 0.5 / 64


@pytest.fixture(scope="module")
def tiny32_sigs():
    return space_signatures(load_space("tiny32"))


def test_inflated_entries_are_the_suspects(tiny32_sigs):
    rng = np.random.default_rng(0)
    ms = {g.key: smooth_ms(g) for g in tiny32_sigs}
    inflated = set(rng.choice(sorted(ms), size=len(ms) // 25, replace=False))
    for k in inflated:
        ms[k] *= float(rng.uniform(1.3, 1.8))
    got = suspects(FakeTable(ms), tiny32_sigs)
    assert len(got) <= outliers.SHARE * len(tiny32_sigs)
    assert len(inflated & set(got)) >= 0.9 * len(inflated)
    # furthest above first: the first suspects are all inflated ones
    assert set(got[:len(inflated) // 2]) <= inflated


def test_a_clean_table_has_few_suspects(tiny32_sigs):
    ms = {g.key: smooth_ms(g) for g in tiny32_sigs}
    assert len(suspects(FakeTable(ms), tiny32_sigs)) <= 0.02 * len(tiny32_sigs)


def test_too_few_entries_to_judge(tiny32_sigs):
    few = tiny32_sigs[:outliers.MIN_ENTRIES - 1]
    ms = {g.key: 1.0 for g in few}
    ms[few[0].key] = 100.0
    assert suspects(FakeTable(ms), few) == []
    # entries missing from the table are not judged, nor counted toward the minimum
    assert suspects(FakeTable(ms), tiny32_sigs) == []


def test_features_cover_every_parameter_kind():
    a = Signature.make("block", mixer="mhsa", embed_dim=64, grid=(4, 4), layer_scale=True,
                       tokens=None)
    b = Signature.make("head", dim=32, classes=10)
    x = signature_features([a, b])
    assert x.shape[0] == 2 and np.isfinite(x).all()
    assert signature_features([a]).shape[1] == 1 + 1 + 2 + 1 + 1 + 1  # kind, mixer, dim, grid, bool, none


def test_profile_times_outliers_again(tiny, tmp_path, monkeypatch):
    keys = [g.key for g in space_signatures(tiny)]
    slow = set(keys[::7])  # these read 1.5x in the rounds, 1.0x when timed again
    timed: list[str] = []

    def measure(self, ks):
        first = [k not in timed for k in ks]
        timed.extend(ks)
        return [{"min": 1.5 if k in slow and f else 1.0, "median": 1.0, "iqr": 0.0, "ops": 1}
                for k, f in zip(ks, first, strict=True)]

    monkeypatch.setattr(Measurer, "measure", measure)
    monkeypatch.setattr(outliers, "MIN_ENTRIES", 5)
    out = tmp_path / "t.json"
    table = profile_space(tiny, out=out, calibrate=0, **FAST)
    again = timed[len(keys):]
    assert set(again) == slow  # only the inflated entries, each once (the second pass finds none)
    assert all(table.lookup(g) == 1.0 for g in space_signatures(tiny))
    assert LatencyTable.load(out).scope["outliers"] == {"entries": len(slow),
                                                        "timings": len(slow),
                                                        "lowered": len(slow)}


def test_no_outlier_passes(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(outliers, "MIN_ENTRIES", 5)
    seen: list[str] = []
    original = Measurer.measure
    monkeypatch.setattr(Measurer, "measure", lambda self, ks: seen.extend(ks) or original(self, ks))
    table = profile_space(tiny, out=tmp_path / "t.json", calibrate=0,
                          **{**FAST, "outlier_passes": 0})
    assert len(seen) == len(space_signatures(tiny)) and "outliers" not in table.scope
