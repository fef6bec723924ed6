"""Tests for predictors/target.py: target transforms of accuracy predictors and their back-maps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nas.arch import sample_arch
from nas.cli import main
from nas.encoding import encode_arch
from nas.predictors import PredictorError, fit_predictor, load_predictor
from nas.predictors import table as predictors_table
from nas.predictors.metrics import kendall_tau
from nas.predictors.table import write_table, write_table_meta
from nas.predictors.target import TargetMap, normal_scores


def test_normal_scores_are_centred_ranks():
    z = normal_scores(np.array([3.0, 1.0, 2.0, 2.0]))
    assert z[1] < z[2] == z[3] < z[0]
    assert abs(z.sum()) < 1e-12


@pytest.mark.parametrize("kind", ["rank", "blend"])
def test_back_map_is_strictly_increasing_and_spans_the_accuracies(kind):
    rng = np.random.default_rng(0)
    acc = np.round(rng.uniform(0.7, 0.99, 200), 2)  # many ties, as measured accuracies have
    loss = 1 - acc + 0.05 * rng.normal(size=200)
    tmap, z = TargetMap.fit(kind, acc, loss)
    grid = np.linspace(z.min() - 3, z.max() + 3, 2001)  # beyond both ends too
    out = tmap.to_acc(grid)
    assert np.all(np.diff(out) > 0)
    assert tmap.to_acc(np.array([z.min()]))[0] == pytest.approx(acc.min(), abs=1e-4)
    assert tmap.to_acc(np.array([z.max()]))[0] == pytest.approx(acc.max(), abs=1e-4)
    # a median score maps to about the median accuracy
    assert tmap.to_acc(np.array([np.median(z)]))[0] == pytest.approx(np.median(acc), abs=0.02)
    std = tmap.std_to_acc(z, np.full_like(z, 0.1))
    assert np.all(std > 0)


def test_acc_target_is_the_identity():
    acc = np.array([0.5, 0.7, 0.6])
    tmap, z = TargetMap.fit("acc", acc)
    np.testing.assert_array_equal(z, acc)
    np.testing.assert_array_equal(tmap.to_acc(z), acc)
    assert tmap.state() == ({}, {"name": "acc"})


def test_bad_targets_are_refused():
    with pytest.raises(PredictorError, match="target must be"):
        TargetMap.fit("loss", np.ones(3))
    with pytest.raises(PredictorError, match="needs a loss"):
        TargetMap.fit("blend", np.array([0.1, 0.2]))
    with pytest.raises(PredictorError, match="strictly increasing"):
        TargetMap("rank", np.array([0.0, 0.0]), np.array([0.1, 0.2]))
    with pytest.raises(PredictorError, match="knots are missing"):
        TargetMap.from_state({}, {"name": "rank"})


@pytest.fixture(scope="module")
def noisy(spaces):
    """tiny32 archs with a hidden quality; the accuracy is that quality seen through few
    images (coarse, noisy), the loss the same quality with less noise: the blend should
    recover the quality better than the accuracy alone."""
    space = spaces["tiny32"]
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(sample_arch(space, rng) for _ in range(600)))[:400]
    enc = np.stack([encode_arch(space, a) for a in archs])
    quality = enc @ np.random.default_rng(1).normal(size=enc.shape[1])
    quality = (quality - quality.mean()) / quality.std()
    noise = np.random.default_rng(2)
    acc = np.clip(np.round(0.9 + 0.03 * quality + 0.03 * noise.normal(size=len(archs)), 2), 0, 1)
    loss = 0.4 - 0.1 * quality + 0.03 * noise.normal(size=len(archs))
    rows = [{"arch": a, "acc": float(x), "loss": float(y)} for a, x, y in zip(archs, acc, loss)]
    return space, rows, quality


def test_blend_recovers_the_hidden_quality_better_than_the_accuracy(noisy):
    space, rows, quality = noisy
    taus = {}
    for target in ("acc", "rank", "blend"):
        pred = fit_predictor(rows[:300], model="ridge", space=space, folds=0, target=target)
        assert pred.target.kind == target
        taus[target] = kendall_tau(quality[300:], pred.predict([r["arch"] for r in rows[300:]]))
    assert taus["blend"] > taus["acc"] + 0.05, taus
    # predictions stay in accuracy units
    mean = pred.predict([r["arch"] for r in rows[300:]])
    assert 0.7 < mean.mean() < 1.0


def test_auto_target_follows_the_table(noisy):
    space, rows, _ = noisy
    assert fit_predictor(rows[:50], model="ridge", space=space, folds=0).target.kind == "blend"
    no_loss = [{"arch": r["arch"], "acc": r["acc"]} for r in rows[:50]]
    assert fit_predictor(no_loss, model="ridge", space=space, folds=0).target.kind == "rank"
    with pytest.raises(PredictorError, match="needs a loss column"):
        fit_predictor(no_loss, model="ridge", space=space, folds=0, target="blend")


def test_saved_target_round_trips_and_version_1_files_load(noisy, tmp_path):
    space, rows, _ = noisy
    archs = [r["arch"] for r in rows[300:]]
    pred = fit_predictor(rows[:100], model="mlp", space=space, folds=0, target="blend",
                         members=2, epochs=50)
    mean, std = pred.predict_with_std(archs)
    path = pred.save(tmp_path / "p")
    back = load_predictor(tmp_path / "p", space=space)
    assert back.target.kind == "blend"
    got_mean, got_std = back.predict_with_std(archs)
    np.testing.assert_array_equal(got_mean, mean)
    np.testing.assert_array_equal(got_std, std)
    # A version-1 file (plain accuracy target, no knots) still loads as one.
    plain = fit_predictor(rows[:100], model="ridge", space=space, folds=0, target="acc")
    path = plain.save(tmp_path / "v1")
    cfg = json.loads(path.read_text())
    cfg["version"], cfg["target"] = 1, {"name": "acc", "mean": cfg["target"]["mean"],
                                        "std": cfg["target"]["std"]}
    path.write_text(json.dumps(cfg))
    np.testing.assert_array_equal(load_predictor(tmp_path / "v1").predict(archs), plain.predict(archs))


def test_cli_fit_target_flag(noisy, tmp_path, capsys):
    space, rows, _ = noisy
    table = tmp_path / "t.csv"
    write_table(table, [{"arch": r["arch"], "acc": r["acc"]} for r in rows[:60]], space=space)
    write_table_meta(table, space, {"note": "test"})
    rc = main(["predictor", "fit", "--data", str(table), "--model", "ridge", "--folds", "3",
               "--target", "rank", "--out", str(tmp_path / "p")])
    assert rc == 0 and "target rank" in capsys.readouterr().out
    rc = main(["predictor", "fit", "--data", str(table), "--model", "ridge", "--folds", "0",
               "--target", "blend", "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs a loss column" in err and err.count("\n") == 1
    assert not (tmp_path / "q").exists()


def test_combined_target_joins_loss_and_train_speed(noisy, tmp_path):
    """Two independent noisy views of a quality (loss, train_speed): their combined ranks
    recover it better than the loss alone; the column survives a CSV round trip and
    ``auto`` picks the combined target when the table has it."""
    space, rows, quality = noisy
    speed = quality + 0.6 * np.random.default_rng(3).normal(size=len(rows))
    rows = [r | {"loss": 0.4 - 0.1 * q + 0.06 * e, "train_speed": float(s)} for r, q, s, e in
            zip(rows, quality, speed, np.random.default_rng(4).normal(size=len(rows)))]
    table = tmp_path / "t.csv"
    write_table(table, rows[:300], space=space)
    back = predictors_table.read_table(table, space=space)
    np.testing.assert_allclose(back.train_speed, [r["train_speed"] for r in rows[:300]])
    assert back.subset([2, 0]).train_speed.tolist() == [rows[2]["train_speed"], rows[0]["train_speed"]]
    plain = tmp_path / "plain.csv"
    write_table(plain, [{k: v for k, v in r.items() if k != "train_speed"} for r in rows[:5]],
                space=space)
    assert "train_speed" not in plain.read_text().splitlines()[0]
    held = [r["arch"] for r in rows[300:]]
    combined = fit_predictor(str(table), model="ridge", space=space, folds=3)
    assert combined.target.kind == "combined"
    blend = fit_predictor(str(table), model="ridge", space=space, folds=0, target="blend")
    t_comb = kendall_tau(quality[300:], combined.predict(held))
    t_blend = kendall_tau(quality[300:], blend.predict(held))
    assert t_comb > t_blend + 0.03, (t_comb, t_blend)
    # cross-validation scores against the combined score, not the accuracy alone
    assert combined.info["cv"]["families"]["ridge"]["mean"]["kendall_tau"] > 0.3
    combined.save(tmp_path / "p")
    np.testing.assert_array_equal(load_predictor(tmp_path / "p", space=space).predict(held),
                                  combined.predict(held))
    no_speed = [{k: v for k, v in r.items() if k != "train_speed"} for r in rows[:50]]
    with pytest.raises(PredictorError, match="needs a loss column and a signal column"):
        fit_predictor(no_speed, model="ridge", space=space, folds=0, target="combined")


def test_combined_target_averages_every_signal_the_table_has():
    """Loss plus any of train_speed / naswot: the mean of their rank scores, equal weights."""
    rng = np.random.default_rng(5)
    acc, loss = rng.uniform(0.5, 0.9, 50), rng.uniform(0.1, 1.0, 50)
    speed, nw = rng.normal(size=50), rng.normal(size=50)
    _, z1 = TargetMap.fit("combined", acc, loss, {"naswot": nw})
    np.testing.assert_allclose(z1, (normal_scores(-loss) + normal_scores(nw)) / 2)
    _, z2 = TargetMap.fit("combined", acc, loss, {"train_speed": speed, "naswot": nw})
    np.testing.assert_allclose(
        z2, (normal_scores(-loss) + normal_scores(speed) + normal_scores(nw)) / 3)
    with pytest.raises(PredictorError, match="needs a loss column and a signal column"):
        TargetMap.fit("combined", acc, loss, {})


def test_signals_target_ranks_by_the_signals_alone(noisy, tmp_path):
    """``signals`` leaves the loss out: a table whose loss ranks the archs backwards and
    whose train_speed ranks them right gives a predictor that ranks them right (the
    combined target, averaging the two, does not); it needs a signal column."""
    space, rows, quality = noisy
    rows = [r | {"loss": 1.0 + 0.1 * q, "train_speed": float(q)} for r, q in zip(rows, quality)]
    table = tmp_path / "t.csv"
    write_table(table, rows[:300], space=space)
    held = [r["arch"] for r in rows[300:]]
    signals = fit_predictor(str(table), model="ridge", space=space, folds=3, target="signals")
    assert signals.target.kind == "signals"
    assert kendall_tau(quality[300:], signals.predict(held)) > 0.5
    combined = fit_predictor(str(table), model="ridge", space=space, folds=0, target="combined")
    assert abs(kendall_tau(quality[300:], combined.predict(held))) < 0.3
    signals.save(tmp_path / "p")
    np.testing.assert_array_equal(load_predictor(tmp_path / "p", space=space).predict(held),
                                  signals.predict(held))
    plain = tmp_path / "plain.csv"
    write_table(plain, [{k: v for k, v in r.items() if k != "train_speed"} for r in rows[:50]],
                space=space)
    with pytest.raises(PredictorError, match="target 'signals' needs a signal column"):
        fit_predictor(str(plain), model="ridge", space=space, folds=0, target="signals")
    with pytest.raises(PredictorError, match="target 'signals' needs a signal column"):
        TargetMap.fit("signals", np.array([0.5, 0.6]), None, {})
