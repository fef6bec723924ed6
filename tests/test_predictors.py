"""Tests for predictors/: contract tests over every registered family, the file format,
tables, the fast encoder, collection (resumable) and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import nas.predictors as predictors
from nas.arch import sample_arch
from nas.cli import main
from nas.encoding import encode_arch
from nas.errors import ArtifactError, NasError
from nas.predictors import (
    PREDICTORS,
    ArchPredictor,
    Predictor,
    PredictorError,
    fit_predictor,
    load_predictor,
    make_predictor,
    read_table,
)
from nas.predictors.features import ArchEncoder
from nas.predictors.metrics import kendall_tau, kfold_indices, ranking_metrics, top_k_precision
from nas.predictors.table import read_table_meta, table_space, write_table, write_table_meta

ROOT = Path(__file__).resolve().parent.parent

# Small hyperparameters so the contract suite stays fast; the defaults are benchmarked.
FAST = {
    "mlp": {"members": 3, "epochs": 150},
    "gp": {"restarts": 0},
    "ridge": {},
    "ensemble": {"members": ("mlp", "gp", "ridge"),
                 "member_kwargs": {"mlp": {"members": 2, "epochs": 100}, "gp": {"restarts": 0}}},
}


def fast_kwargs(name: str) -> dict:
    return FAST.get(name, {})


@pytest.fixture(scope="module")
def synthetic(spaces):
    """Distinct tiny32 archs with a hidden linear + nonlinear accuracy of their encoding."""
    space = spaces["tiny32"]
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(sample_arch(space, rng) for _ in range(400)))[:260]
    enc = np.stack([encode_arch(space, a) for a in archs]).astype(np.float64)
    w = np.random.default_rng(1).normal(size=enc.shape[1])
    f = enc @ w + 1.5 * np.tanh(3 * enc[:, 0] * enc[:, 1] - 2 * enc[:, 12] * enc[:, 13])
    f = f + 0.05 * np.random.default_rng(2).normal(size=len(f))
    acc = 0.5 + 0.4 * np.tanh((f - f.mean()) / (2 * f.std()))
    rows = [{"arch": a, "acc": float(y), "params": 1000 + i, "macs": 5000 + i}
            for i, (a, y) in enumerate(zip(archs, acc))]
    return SimpleNamespace(space=space, rows=rows, train=rows[:160], test=rows[160:])


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory, synthetic):
    path = tmp_path_factory.mktemp("table") / "subnets.csv"
    write_table(path, [{**r, "loss": 1.0} for r in synthetic.rows], space=synthetic.space)
    write_table_meta(path, synthetic.space, {"note": "synthetic"})
    return path


# ----------------------------------------------------------------------------- registry


def test_registry_has_the_families():
    assert {"mlp", "gp", "ridge", "ensemble"} <= set(PREDICTORS)
    assert all(issubclass(cls, Predictor) and cls.name == n for n, cls in PREDICTORS.items())


def test_unknown_family_lists_valid_names(synthetic):
    with pytest.raises(PredictorError, match="valid: .*gp.*mlp.*ridge"):
        make_predictor("xgboost")
    with pytest.raises(PredictorError, match="valid: auto, ensemble, gp, mlp, ridge"):
        fit_predictor(synthetic.train, model="nope", space=synthetic.space, folds=0)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_unknown_kwarg_is_rejected(name, synthetic):
    with pytest.raises(PredictorError, match="unknown argument.*typo_param.*allowed"):
        make_predictor(name, typo_param=1)
    with pytest.raises(PredictorError, match="typo_param"):
        fit_predictor(synthetic.train, model=name, space=synthetic.space, folds=0, typo_param=1)


def test_bad_hyperparameter_values_name_the_argument():
    with pytest.raises(PredictorError, match="members"):
        make_predictor("mlp", members=0)
    with pytest.raises(PredictorError, match="kernel"):
        make_predictor("gp", kernel="cosine")
    with pytest.raises(PredictorError, match="degree"):
        make_predictor("ridge", degree=3)
    with pytest.raises(PredictorError, match="members"):
        make_predictor("ensemble", members=("mlp", "ensemble"))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_predictor_state_round_trip(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = X[:, 0] - 0.5 * X[:, 1] ** 2
    model = make_predictor(name, **fast_kwargs(name))
    with pytest.raises(PredictorError, match="not fitted"):
        model.predict(X)
    model.fit(X, y)
    mean, std = model.predict(X)
    assert mean.shape == (40,)
    assert (std is None) == (not model.has_std)
    if std is not None:
        assert std.shape == (40,) and (std >= 0).all()
    tensors, config = model.state()
    json.dumps(config)  # JSON-able
    again = type(model).from_state(tensors, json.loads(json.dumps(config)))
    mean2, std2 = again.predict(X)
    np.testing.assert_array_equal(mean, mean2)
    if std is not None:
        np.testing.assert_array_equal(std, std2)


@pytest.fixture(scope="module")
def fitted(synthetic):
    """Every registered family fitted on the synthetic train split, with test predictions."""
    out = {}
    test_archs = [r["arch"] for r in synthetic.test]
    for name in sorted(PREDICTORS):
        pred = fit_predictor(synthetic.train, model=name, space=synthetic.space, folds=0, seed=0,
                             **fast_kwargs(name))
        out[name] = (pred, *pred.predict_with_std(test_archs))
    return out


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_fits_and_ranks_held_out_archs(name, fitted, synthetic):
    pred, mean, std = fitted[name]
    truth = np.array([r["acc"] for r in synthetic.test])
    assert kendall_tau(truth, mean) > 0.6, name
    assert pred.has_std == (std is not None)
    if std is not None:
        assert std.shape == mean.shape and np.isfinite(std).all() and (std >= 0).all()
    np.testing.assert_array_equal(pred.predict([r["arch"] for r in synthetic.test]), mean)
    assert pred.predict([]).shape == (0,)


def test_saved_predictors_reload_exactly_in_a_fresh_process(fitted, synthetic, tmp_path):
    """Save every family, then load and predict in a new interpreter with no run dir around."""
    for name, (pred, _, _) in fitted.items():
        pred.save(tmp_path / name)
    archs_file = tmp_path / "archs.json"
    archs_file.write_text(json.dumps([r["arch"].to_dict() for r in synthetic.test]))
    code = (
        "import json, sys, numpy as np\n"
        "from nas.arch import Arch\n"
        "from predictors import load_predictor\n"
        "archs = [Arch.from_dict(d) for d in json.load(open('archs.json'))]\n"
        "for name in sys.argv[1:]:\n"
        "    m, s = load_predictor(name).predict_with_std(archs)\n"
        "    np.save(name + '.npy', np.stack([m, s if s is not None else np.full_like(m, -1)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *fitted], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    for name, (_, mean, std) in fitted.items():
        got = np.load(tmp_path / f"{name}.npy")
        np.testing.assert_array_equal(got[0], mean, err_msg=name)
        if std is not None:
            np.testing.assert_array_equal(got[1], std, err_msg=name)


def test_encoder_matches_encode_arch(spaces):
    for name in ("tiny32", "full32"):
        space = spaces[name]
        rng = np.random.default_rng(3)
        archs = [sample_arch(space, rng) for _ in range(200)]
        ref = np.stack([encode_arch(space, a) for a in archs]).astype(np.float64)
        enc = ArchEncoder(space)
        np.testing.assert_array_equal(enc.encode(archs), ref)
        np.testing.assert_array_equal(enc.encode(archs[::-1]), ref[::-1])  # from the cache
    with pytest.raises(NasError, match="expected an Arch"):
        ArchEncoder(spaces["tiny32"]).encode(["not an arch"])


def test_cross_validation_and_auto_selection(synthetic, monkeypatch):
    cv = predictors.cross_validate(synthetic.rows, space=synthetic.space, model="ridge", folds=3)
    assert len(cv["per_fold"]) == 3
    assert set(cv["mean"]) == {"kendall_tau", "spearman", "rmse", "top_k_precision"}
    assert cv["mean"]["kendall_tau"] > 0.6

    class Constant(Predictor):
        name = "constant"

        def fit(self, X, y):
            self.value = float(np.mean(y))
            return self

        def predict(self, X):
            return np.full(len(X), self.value), None

        def state(self):
            return {"value": np.array([self.value])}, {}

        @classmethod
        def from_state(cls, tensors, config):
            model = cls()
            model.value = float(tensors["value"][0])
            return model

    monkeypatch.setitem(PREDICTORS, "constant", Constant)
    monkeypatch.setattr(predictors.fitting, "AUTO_FAMILIES", ("constant", "ridge"))
    pred = fit_predictor(synthetic.rows, model="auto", space=synthetic.space, folds=3)
    assert pred.info["cv"]["selected"] == "ridge"
    assert set(pred.info["cv"]["families"]) == {"constant", "ridge"}
    with pytest.raises(PredictorError, match="auto"):
        fit_predictor(synthetic.rows, model="auto", space=synthetic.space, folds=0)
    with pytest.raises(PredictorError, match="hyperparameters"):
        fit_predictor(synthetic.rows, model="auto", space=synthetic.space, epochs=3)


def test_metrics():
    y = np.arange(10.0)
    assert ranking_metrics(y, y)["kendall_tau"] == pytest.approx(1.0)
    assert ranking_metrics(y, -y)["spearman"] == pytest.approx(-1.0)
    assert top_k_precision(y, y, 0.2) == 1.0
    assert np.isnan(kendall_tau(y, np.ones(10)))
    folds = kfold_indices(10, 3, np.random.default_rng(0))
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(10))


# ----------------------------------------------------------------------------- file format


@pytest.fixture(scope="module")
def saved(tmp_path_factory, synthetic):
    pred = fit_predictor(synthetic.train, model="ridge", space=synthetic.space, folds=0)
    path = tmp_path_factory.mktemp("saved") / "acc.json"
    pred.save(path)
    return path


def test_pair_and_directory_layouts(saved, synthetic, tmp_path):
    assert saved.with_suffix(".safetensors").is_file()
    pred = load_predictor(saved, space=synthetic.space)
    assert pred.space_fingerprint == synthetic.space.fingerprint
    assert isinstance(pred, ArchPredictor) and pred.family == "ridge"
    assert load_predictor(str(saved)[:-5]).family == "ridge"  # NAME finds NAME.json
    cfg = json.loads(saved.read_text())
    assert cfg["encoding_names"] == pred.encoding_names
    assert {"mean", "std", "names"} <= set(cfg["features"])
    pred.save(tmp_path / "dir")
    assert (tmp_path / "dir" / "predictor.json").is_file()
    assert load_predictor(tmp_path / "dir").family == "ridge"


def test_another_space_is_refused(saved, spaces):
    with pytest.raises(ArtifactError) as e:
        load_predictor(saved, space=spaces["full32"])
    msg = str(e.value)
    assert spaces["full32"].fingerprint in msg and spaces["tiny32"].fingerprint in msg


def _copy(saved: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.json"
    dst.write_bytes(saved.read_bytes())
    dst.with_suffix(".safetensors").write_bytes(saved.with_suffix(".safetensors").read_bytes())
    return dst


def test_corrupted_files_are_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    st = p.with_suffix(".safetensors")
    st.write_bytes(st.read_bytes()[:-7])
    with pytest.raises(ArtifactError, match="corrupted"):
        load_predictor(p)
    p = _copy(saved, tmp_path)
    st = p.with_suffix(".safetensors")
    blob = bytearray(st.read_bytes())
    blob[-3] ^= 0xFF
    st.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="corrupted"):
        load_predictor(p)
    p = _copy(saved, tmp_path)
    p.write_text(p.read_text()[:50])
    with pytest.raises(ArtifactError, match="corrupted"):
        load_predictor(p)
    p = _copy(saved, tmp_path)
    cfg = json.loads(p.read_text())
    del cfg["model"]["config"]["intercept"]
    p.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="intercept"):
        load_predictor(p)
    with pytest.raises(ArtifactError, match="not found"):
        load_predictor(tmp_path / "missing")


# ----------------------------------------------------------------------------- tables


def test_table_round_trip(table_csv, synthetic):
    table = read_table(table_csv, space=synthetic.space)
    assert len(table) == len(synthetic.rows)
    assert table.archs[0] == synthetic.rows[0]["arch"]
    assert table.acc[5] == synthetic.rows[5]["acc"]
    assert table.params is not None and table.loss is not None
    assert table_space(table_csv).fingerprint == synthetic.space.fingerprint


@pytest.mark.parametrize("content, match", [
    ("", "empty"),
    ("arch,acc\n", "no rows"),
    ("arch,loss\n{},1.0\n", "missing column.*acc"),
    ('arch,acc\n"{""resolution"": 32}",0.5\n', "bad arch"),
    ("arch,acc\nnot-json,0.5\n", "not valid JSON"),
])
def test_malformed_tables(tmp_path, content, match, synthetic):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(ArtifactError, match=match):
        read_table(path, space=synthetic.space)


def test_table_values_are_checked(tmp_path, synthetic, spaces):
    good = synthetic.rows[0]["arch"].to_json()
    for acc, match in (("abc", "not a number"), ("nan", "finite"), ("87.5", r"outside \[0, 1\]")):
        with pytest.raises(ArtifactError, match=match):
            read_table([{"arch": good, "acc": acc}], space=synthetic.space)
    other = sample_arch(spaces["full32"], np.random.default_rng(0))
    with pytest.raises(ArtifactError, match="not in search space tiny32"):
        read_table([{"arch": other.to_json(), "acc": 0.5}], space=synthetic.space)
    with pytest.raises(ArtifactError, match="belongs to search space"):
        read_table([{"arch": good, "acc": 0.5, "space_fingerprint": "0123456789abcdef"}],
                   space=synthetic.space)


# ----------------------------------------------------------------------------- CLI


def test_cli_fit_eval_predict(table_csv, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predictor", "fit", "--data", str(table_csv), "--model", "ridge", "--out",
                 str(out), "--folds", "3"]) == 0
    text = capsys.readouterr().out
    assert "Kendall tau" in text and "ridge" in text
    assert main(["predictor", "eval", "--predictor", str(out), "--data", str(table_csv)]) == 0
    text = capsys.readouterr().out
    assert "params (zero-cost)" in text
    arch = read_table(table_csv).archs[0].to_json()
    assert main(["predictor", "predict", "--predictor", str(out), "--arch", arch]) == 0
    assert "predicted val accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["fit", "--model", "boosted"], "unknown predictor family 'boosted'"),
    (["fit", "--model", "mlp", "--param", "nope=1"], "unknown argument"),
    (["fit", "--model", "ridge", "--folds", "1"], "folds"),
])
def test_cli_errors_are_one_line(argv, match, table_csv, tmp_path, capsys):
    argv = ["predictor", argv[0], "--data", str(table_csv), "--out", str(tmp_path / "p")] + argv[1:]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nas: error:")
    assert match in err


def test_cli_refuses_bad_table_and_other_space(tmp_path, saved, capsys, spaces):
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,acc\n")
    assert main(["predictor", "fit", "--data", str(bad), "--out", str(tmp_path / "p"),
                 "--space", "tiny32"]) == 2
    assert "no rows" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    arch = sample_arch(spaces["full32"], np.random.default_rng(0))
    write_table(other, [{"arch": arch, "acc": 0.5}], space=spaces["full32"])
    assert main(["predictor", "eval", "--predictor", str(saved), "--data", str(other)]) == 2
    assert "belongs to search space" in capsys.readouterr().err


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
