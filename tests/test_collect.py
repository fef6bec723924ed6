"""Tests for predictors/collect.py and predictors/anchors.py: scoring sampled subnets into
tables (resume, views, refit, init signals, Ray) and standalone anchors."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.errors import ArtifactError, NasError
from nas.predictors import fit_predictor, load_predictor, read_table
from nas.predictors.table import read_table_meta

# ----------------------------------------------------------------------------- collection


@pytest.fixture
def fake_run(monkeypatch, spaces, tmp_path):
    """An untrained tiny32 supernet served by a monkeypatched ``nas.training.load_run``."""
    from nas import training
    from nas.supernet import Supernet

    space = spaces["tiny32"]
    net = Supernet(space, generator=torch.Generator().manual_seed(0)).eval()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = SimpleNamespace(space=space, supernet=net, run_dir=run_dir, epoch=1,
                          config={"data": "digits", "image_size": 32, "limit_val": 12,
                                  "space": "tiny32"})
    calls = []
    real_evaluate = training.evaluate

    def evaluate(supernet, arch, x, y, **kw):
        calls.append(arch)
        if len(calls) == getattr(evaluate, "fail_at", -1):
            raise KeyboardInterrupt
        return real_evaluate(supernet, arch, x, y, **kw)

    monkeypatch.setattr(training, "load_run", lambda run_dir, **kw: run)
    monkeypatch.setattr(training, "evaluate", evaluate)
    return SimpleNamespace(run_dir=run_dir, calls=calls, evaluate=evaluate, space=space)


def test_collect_is_resumable(fake_run, tmp_path):
    from nas.predictors.collect import collect_table, plan_archs

    out = tmp_path / "subnets.csv"
    s = collect_table(fake_run.run_dir, 3, out, seed=1, workers=1, chunk_size=2, log=None)
    assert (s["rows"], s["new"]) == (5, 5)
    first = read_table(out, space=fake_run.space)
    assert first.archs[:2] == tuple(plan_archs(fake_run.space, 0, 1))  # largest, smallest
    assert first.params is not None and (first.macs > 0).all() and first.loss is not None

    fake_run.evaluate.fail_at = len(fake_run.calls) + 3  # killed during the 2nd new chunk
    with pytest.raises(KeyboardInterrupt):
        collect_table(fake_run.run_dir, 7, out, seed=1, workers=1, chunk_size=2, log=None)
    assert len(read_table(out)) == 7  # the finished chunk was committed

    fake_run.evaluate.fail_at = -1
    before = len(fake_run.calls)
    s = collect_table(fake_run.run_dir, 7, out, seed=1, workers=1, chunk_size=2, log=None)
    assert (s["rows"], s["new"], s["skipped"]) == (9, 2, 7)
    assert len(fake_run.calls) - before == 2
    table = read_table(out, space=fake_run.space)
    assert table.archs[:5] == first.archs and len(set(table.archs)) == 9
    assert set(table.archs) == set(plan_archs(fake_run.space, 7, 1))


def test_collect_refuses_a_table_of_another_run(fake_run, tmp_path, monkeypatch):
    from nas import training
    from nas.predictors.collect import collect_table

    out = tmp_path / "subnets.csv"
    collect_table(fake_run.run_dir, 0, out, workers=1, log=None)
    run = training.load_run(fake_run.run_dir)
    monkeypatch.setattr(training, "load_run",
                        lambda run_dir, **kw: SimpleNamespace(**{**vars(run), "epoch": 9}))
    with pytest.raises(ArtifactError, match="collected from run"):
        collect_table(fake_run.run_dir, 1, out, workers=1, log=None)


def test_collect_views_average_shifted_copies(fake_run, tmp_path):
    from nas.data import shifted_views
    from nas.predictors.collect import collect_table
    from nas.training import evaluate, load_val_data

    out = tmp_path / "v.csv"
    collect_table(fake_run.run_dir, 1, out, seed=0, workers=1, views=3, log=None)
    table = read_table(out, space=fake_run.space)
    run = SimpleNamespace(config={"data": "digits", "image_size": 32, "limit_val": 12,
                                  "space": "tiny32"})
    x, y = load_val_data(run.config)
    from nas import training
    net = training.load_run(fake_run.run_dir).supernet
    want = evaluate(net, table.archs[2], shifted_views(x, 3), y.repeat(3))
    assert table.acc[2] == pytest.approx(want["acc"]) and table.loss[2] == pytest.approx(want["loss"])
    assert read_table_meta(out)["views"] == 3
    with pytest.raises(ArtifactError, match="--views 3, not 1"):
        collect_table(fake_run.run_dir, 2, out, seed=0, workers=1, log=None)
    with pytest.raises(Exception, match="views must be an integer in"):
        collect_table(fake_run.run_dir, 2, tmp_path / "w.csv", workers=1, views=10, log=None)
    views = shifted_views(x[:2], 5)
    assert torch.equal(views[:2], x[:2]) and torch.equal(views[2:4, ..., :-1], x[:2, ..., 1:])


def test_collect_refit_images_scores_a_refitted_classifier(fake_run, tmp_path):
    from nas import training
    from nas.predictors.collect import collect_table
    from nas.training import evaluate, load_train_subset, load_val_data

    out = tmp_path / "r.csv"
    collect_table(fake_run.run_dir, 1, out, seed=0, workers=1, refit_images=40, log=None)
    table = read_table(out, space=fake_run.space)
    config = {"data": "digits", "image_size": 32, "limit_val": 12, "space": "tiny32"}
    x, y = load_val_data(config)
    xt, yt = load_train_subset(config, 40)
    assert len(xt) == len(yt) == 40
    net = training.load_run(fake_run.run_dir).supernet
    want = evaluate(net, table.archs[2], x, y, refit=(xt, yt))
    plain = evaluate(net, table.archs[2], x, y)
    assert table.loss[2] == pytest.approx(want["loss"]) and want["loss"] != pytest.approx(plain["loss"])
    assert read_table_meta(out)["refit_images"] == 40
    with pytest.raises(ArtifactError, match="--refit-images 40, not 0"):
        collect_table(fake_run.run_dir, 2, out, seed=0, workers=1, log=None)
    with pytest.raises(NasError, match="refit_images must be an integer >= 0"):
        collect_table(fake_run.run_dir, 2, tmp_path / "w.csv", workers=1, refit_images=-1, log=None)


def test_collect_train_speed_column(fake_run, tmp_path):
    from nas.predictors.collect import TRAIN_SPEED_IMAGES, collect_table
    from nas.predictors.proxies import ProxyScorer
    from nas.training import load_train_subset

    out = tmp_path / "s.csv"
    collect_table(fake_run.run_dir, 1, out, seed=0, workers=1, train_speed_steps=3, log=None)
    table = read_table(out, space=fake_run.space)
    config = {"data": "digits", "image_size": 32, "limit_val": 12, "space": "tiny32"}
    scorer = ProxyScorer(fake_run.space, *load_train_subset(config, TRAIN_SPEED_IMAGES), seed=0,
                         steps=3)
    assert table.train_speed.shape == (3,) and np.all(table.train_speed < 0)
    assert table.train_speed[2] == pytest.approx(scorer.score(table.archs[2], "train_speed"))
    assert read_table_meta(out)["train_speed_steps"] == 3
    with pytest.raises(ArtifactError, match="--train-speed-steps 3, not 0"):
        collect_table(fake_run.run_dir, 2, out, seed=0, workers=1, log=None)
    assert fit_predictor(str(out), model="ridge", folds=0).target.kind == "combined"


def test_collect_naswot_column_and_backfill(fake_run, tmp_path):
    """--naswot scores new rows and adds the column to rows of a table collected without it."""
    from nas.predictors.collect import TRAIN_SPEED_IMAGES, collect_table
    from nas.predictors.proxies import ProxyScorer
    from nas.training import load_train_subset

    out = tmp_path / "s.csv"
    collect_table(fake_run.run_dir, 1, out, seed=0, workers=1, log=None)
    plain = read_table(out, space=fake_run.space)
    assert plain.naswot is None and plain.signals == {}
    lines = []
    got = collect_table(fake_run.run_dir, 2, out, seed=0, workers=1, naswot=True, log=lines.append)
    assert got["new"] == 1 and any("adding naswot to 3 rows" in m for m in lines)
    table = read_table(out, space=fake_run.space)
    config = {"data": "digits", "image_size": 32, "limit_val": 12, "space": "tiny32"}
    scorer = ProxyScorer(fake_run.space, *load_train_subset(config, TRAIN_SPEED_IMAGES), seed=0,
                         steps=1)
    expect = [scorer.score(a, "naswot") for a in table.archs]
    np.testing.assert_allclose(table.naswot, expect, rtol=1e-9)
    np.testing.assert_array_equal(table.acc[:3], plain.acc)  # old rows kept as they were
    assert read_table_meta(out)["naswot"] is True and list(table.signals) == ["naswot"]
    with pytest.raises(ArtifactError, match="has a naswot column: give --naswot"):
        collect_table(fake_run.run_dir, 2, out, seed=0, workers=1, log=None)
    pred = fit_predictor(str(out), model="ridge", folds=0)
    assert pred.target.kind == "combined"


@pytest.mark.slow
def test_collect_on_ray_with_a_real_run(tmp_path):
    """Two Ray actors evaluate a real (one-epoch) run; then the table fits a predictor."""
    from nas.predictors.collect import collect_table
    from nas.training import TrainConfig, train

    run_dir = tmp_path / "run"
    train(TrainConfig(space="tiny32", data="digits", out=str(run_dir), epochs=1, limit_train=32,
                      limit_val=24, batch_size=16))
    out = tmp_path / "subnets.csv"
    s = collect_table(run_dir, 10, out, workers=2, log=None)
    assert s["rows"] == 12 and s["workers"] == 2
    assert main(["predictor", "fit", "--data", str(out), "--model", "ridge", "--out",
                 str(tmp_path / "p"), "--folds", "3"]) == 0


def test_plan_anchors_covers_every_stage0_mixer(spaces):
    from nas.predictors.anchors import plan_anchors

    space = spaces["tiny32"]
    plan = plan_anchors(space, 2, seed=0)
    families = [a.stages[0].mixer for a in plan]
    assert sorted(set(families)) == sorted(space.stages[0].mixer)
    assert all(families.count(f) == 2 for f in space.stages[0].mixer) and len(set(plan)) == len(plan)
    bigger = plan_anchors(space, 3, seed=0)
    for f in space.stages[0].mixer:  # a larger K extends each family's plan
        assert [a for a in bigger if a.stages[0].mixer == f][:2] == \
            [a for a in plan if a.stages[0].mixer == f]
    assert plan_anchors(space, 2, seed=0) == plan and plan_anchors(space, 2, seed=1) != plan
    with pytest.raises(NasError, match="anchors must be an integer >= 1"):
        plan_anchors(space, 0)


def test_family_taus_split_pairs_by_family():
    from nas.predictors.anchors import family_taus

    truth = np.array([1.0, 2.0, 3.0, 4.0])
    # right inside each family (a: 0,1; b: 2,3), the family levels reversed
    pred = np.array([3.0, 4.0, 1.0, 2.0])
    got = family_taus(truth, pred, ["a", "a", "b", "b"])
    assert got["same_family"] == 1.0 and got["across_families"] == -1.0
    assert got["all"] == pytest.approx(-1 / 3)


def test_anchors_train_resume_and_check_a_predictor(fake_run, tmp_path, capsys):
    """Anchors of an (untrained) tiny32 run: one standalone epoch each, written beside the
    table, skipped on a rerun; fit reports the predictor's tau against them."""
    from nas.predictors.anchors import anchor_metrics, anchor_paths, train_anchors
    from nas.predictors.collect import collect_table

    out = tmp_path / "t.csv"
    collect_table(fake_run.run_dir, 30, out, seed=0, workers=1, log=None)
    got = train_anchors(fake_run.run_dir, 1, out, epochs=1, workers=1, log=None)
    anchors, runs = anchor_paths(out)
    table = read_table(anchors, space=fake_run.space)
    assert got["rows"] == got["new"] == len(table) == len(fake_run.space.stages[0].mixer)
    assert table.loss is not None and len(list(runs.iterdir())) == len(table)
    assert read_table_meta(anchors)["recipe"]["epochs"] == 1
    before = anchors.read_bytes()
    again = train_anchors(fake_run.run_dir, 1, out, epochs=1, workers=1, log=None)
    assert again["new"] == 0 and anchors.read_bytes() == before
    with pytest.raises(ArtifactError, match="another recipe or seed"):
        train_anchors(fake_run.run_dir, 1, out, epochs=2, workers=1, log=None)
    pred = fit_predictor(str(out), model="ridge", folds=0)
    m = anchor_metrics(pred, anchors)
    assert m["anchors"] == len(table) and -1 <= m["kendall_tau"]["all"] <= 1
    rc = main(["predictor", "fit", "--data", str(out), "--model", "ridge", "--folds", "0",
               "--out", str(tmp_path / "p")])
    assert rc == 0 and "standalone anchors" in capsys.readouterr().out
    assert load_predictor(tmp_path / "p").info["anchors"]["anchors"] == len(table)
