"""Per-family offsets from standalone anchors (nas.predictors.calibration) and their
place in a saved predictor."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import kendalltau

from nas.arch import sample_arch
from nas.errors import ArtifactError
from nas.predictors import fit_predictor, load_predictor
from nas.predictors.anchors import anchor_paths, calibrate_with_anchors
from nas.predictors.base import PredictorError
from nas.predictors.calibration import (
    FamilyOffsets,
    choose_offsets,
    describe_calibration,
    fit_offsets,
)
from nas.predictors.table import write_table


def _families(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    fam = rng.choice(["conv", "attn", "pool"], size=n)
    return fam, list(fam)


def test_offsets_recover_family_levels_the_scores_miss():
    """Quality = within-family part + family level; the score sees only the first."""
    rng = np.random.default_rng(0)
    fam, names = _families(60, rng)
    within = rng.normal(size=60)
    level = {"conv": 2.0, "attn": 0.0, "pool": -2.0}
    quality = within + np.array([level[f] for f in fam])
    loss = -quality
    off = fit_offsets(within, loss, names)
    assert off["conv"] > off["attn"] > off["pool"]
    cal = choose_offsets(within, loss, names)
    assert cal.report["kept"] and cal.report["tau_loo"] > cal.report["tau_plain"]
    before = kendalltau(within, quality).statistic
    after = kendalltau(cal.apply(within, names), quality).statistic
    assert after > before + 0.2
    assert "-> kept (attn" in describe_calibration({**cal.report, "offsets": cal.offsets})


def test_offsets_are_dropped_when_families_do_not_matter():
    rng = np.random.default_rng(1)
    fam, names = _families(40, rng)
    quality = rng.normal(size=40)
    score = quality + 0.3 * rng.normal(size=40)  # already ranks well, no family effect
    cal = choose_offsets(score, -quality, names)
    assert not cal.report["kept"] and cal.offsets == {}
    np.testing.assert_array_equal(cal.apply(score, names), score)
    assert describe_calibration(cal.report).endswith("-> not kept")


def test_offsets_shrink_a_family_seen_once_and_skip_unseen_ones():
    score = np.array([0.0, 0.0, 0.0, 0.0])
    loss = np.array([0.0, 1.0, 2.0, 3.0])  # the first is best
    off = fit_offsets(score, loss, ["a", "b", "b", "b"])
    z = ndtri((np.array([4, 3, 2, 1]) - 0.5) / 4)  # rank scores of -loss
    # family mean residual times n / (n + 1): the one "a" anchor moves half-way
    assert off["a"] == pytest.approx(z[0] / 2)
    assert off["b"] == pytest.approx(z[1:].mean() * 3 / 4)
    assert FamilyOffsets(off).apply(np.zeros(2), ["a", "c"]).tolist() == [off["a"], 0.0]


def test_bad_anchor_input_is_refused():
    with pytest.raises(PredictorError, match="at least 3"):
        choose_offsets(np.zeros(2), np.zeros(2), ["a", "b"])
    with pytest.raises(PredictorError, match="same length"):
        fit_offsets(np.zeros(3), np.zeros(4), ["a", "b", "c"])
    with pytest.raises(PredictorError, match="finite"):
        fit_offsets(np.array([0.0, np.nan, 1.0]), np.zeros(3), ["a", "b", "c"])
    with pytest.raises(PredictorError, match="unknown calibration kind"):
        FamilyOffsets.from_state({"kind": "temperature"})


def _anchor_rows(space, n, seed, level):
    """Archs whose standalone loss is set by their stage-0 mixer alone."""
    rng = np.random.default_rng(seed)
    rows = []
    seen = set()
    while len(rows) < n:
        arch = sample_arch(space, rng)
        if arch in seen:
            continue
        seen.add(arch)
        loss = level[arch.stages[0].mixer] + 0.01 * rng.normal()
        rows.append({"arch": arch, "acc": float(np.clip(1 - loss / 4, 0, 1)), "loss": loss})
    return rows


def test_fit_calibrates_a_predictor_with_anchors_and_the_file_round_trips(spaces, tmp_path):
    """A predictor fitted on rows that carry no family signal gets the anchors' levels;
    the offsets are saved (format version 3), load back and change predictions."""
    space = spaces["tiny32"]
    mixers = list(space.stages[0].mixer)
    level = {m: float(i) for i, m in enumerate(mixers)}  # the first mixer is best
    rng = np.random.default_rng(0)
    rows = []
    for r in _anchor_rows(space, 80, 1, {m: 0.0 for m in mixers}):
        rows.append(r | {"acc": float(rng.uniform(0.5, 0.9)), "loss": float(rng.uniform(0, 1))})
    table = tmp_path / "subnets.csv"
    write_table(table, rows, space=space)
    anchors = anchor_paths(table)[0]
    write_table(anchors, _anchor_rows(space, 16, 2, level), space=space)
    pred = fit_predictor(str(table), model="ridge", space=space, folds=0)
    got = calibrate_with_anchors(pred, anchors)
    assert got["calibration"]["kept"] and pred.calibration is not None
    offs = got["calibration"]["offsets"]
    assert offs[mixers[0]] > offs[mixers[-1]]
    path = pred.save(tmp_path / "p")
    cfg = json.loads(path.read_text())
    assert cfg["version"] == 3 and cfg["calibration"]["offsets"] == pytest.approx(offs)
    back = load_predictor(tmp_path / "p", space=space)
    test = [r["arch"] for r in _anchor_rows(space, 20, 3, level)]
    np.testing.assert_allclose(back.predict(test), pred.predict(test))
    np.testing.assert_allclose(back.scores(test, calibrated=False) + [offs[a.stages[0].mixer]
                                                                      for a in test],
                               back.scores(test))
    # a version-2 file (no calibration) still loads and predicts without offsets
    cfg.pop("calibration")
    cfg["version"] = 2
    path.write_text(json.dumps(cfg))
    old = load_predictor(tmp_path / "p", space=space)
    assert old.calibration is None
    np.testing.assert_allclose(old.predict(test), pred.target.to_acc(pred.scores(
        test, calibrated=False)))
    cfg["version"] = 3
    cfg["calibration"] = {"kind": "stage0_family_offsets", "offsets": {"mhsa": "x"}}
    path.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="corrupted"):
        load_predictor(tmp_path / "p", space=space)
