"""Tests for predictors/: contract tests over every registered family, the file format,
tables, the fast encoder and the CLI (collection: tests/test_collect.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

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
from nas.predictors.table import table_space, write_table, write_table_meta

ROOT = Path(__file__).resolve().parent.parent

# Small hyperparameters so the contract suite stays fast; the defaults are benchmarked.
FAST = {
    "mlp": {"members": 3, "epochs": 150},
    "gp": {"restarts": 0},
    "ridge": {},
    "trees": {"n_trees": 60, "learning_rate": 0.1},
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
    assert {"mlp", "gp", "ridge", "trees", "ensemble"} <= set(PREDICTORS)
    assert all(issubclass(cls, Predictor) and cls.name == n for n, cls in PREDICTORS.items())


def test_unknown_family_lists_valid_names(synthetic):
    with pytest.raises(PredictorError, match="valid: .*gp.*mlp.*ridge"):
        make_predictor("xgboost")
    with pytest.raises(PredictorError, match="valid: auto, ensemble, gp, mlp, ridge, trees"):
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
    for kwargs, name in (({"max_depth": 0}, "max_depth"), ({"n_trees": 2.5}, "n_trees"),
                         ({"subsample": 0.0}, "subsample"), ({"learning_rate": 2}, "learning_rate")):
        with pytest.raises(PredictorError, match=name):
            make_predictor("trees", **kwargs)


def test_trees_learn_an_interaction_a_linear_model_cannot():
    """y = sign(x0) * x1 has no linear part: ridge explains nothing, boosted trees most of it."""
    rng = np.random.default_rng(0)
    X, Xt = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    f = lambda x: np.where(x[:, 0] > 0, 1.0, -1.0) * x[:, 1]  # noqa: E731
    r2 = {}
    for name in ("ridge", "trees"):
        mean, _ = make_predictor(name).fit(X, f(X)).predict(Xt)
        r2[name] = 1 - np.mean((mean - f(Xt)) ** 2) / np.var(f(Xt))
    assert r2["ridge"] < 0.1 and r2["trees"] > 0.7, r2


def test_trees_refuse_a_corrupted_state():
    model = make_predictor("trees", n_trees=5).fit(np.eye(12), np.arange(12.0))
    tensors, config = model.state()
    with pytest.raises(ArtifactError, match="out of range"):
        type(model).from_state({**tensors, "feature": tensors["feature"] + 40}, config)
    with pytest.raises(ArtifactError, match="shape"):
        type(model).from_state({**tensors, "leaf": tensors["leaf"][:2]}, config)
    with pytest.raises(ArtifactError, match="max_depth"):
        type(model).from_state(tensors, {**config, "max_depth": -1})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gp_does_not_settle_for_a_flat_fit():
    """On 20 noisy points scikit-learn's most likely fit calls everything noise and predicts
    one value for every input; the gp family falls back to a fit that ranks x0."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    from nas.predictors.gp import FLAT, NOISE_FALLBACK, _kernel

    rng = np.random.default_rng(29)
    X = rng.integers(0, 3, size=(20, 4)) / 2
    y = X[:, 0] + rng.normal(size=20)
    plain = GaussianProcessRegressor(_kernel("matern", 2.5, False, 4, 0.1), normalize_y=True,
                                     n_restarts_optimizer=2,
                                     random_state=np.random.RandomState(0)).fit(X, y)
    assert np.std(plain.predict(X)) < FLAT * np.std(y)  # the premise: a flat optimum wins
    model = make_predictor("gp").fit(X, y)
    assert not model.flat
    assert np.exp(model.theta[-1]) <= NOISE_FALLBACK + 1e-9  # the bounded-noise refit
    grid = np.array(np.meshgrid(*[[0.0, 0.5, 1.0]] * 4)).reshape(4, -1).T
    assert kendall_tau(model.predict(grid)[0], grid[:, 0]) > 0.3
    again = type(model).from_state(*model.state())
    assert not again.flat and np.array_equal(again.predict(grid)[0], model.predict(grid)[0])
    # constant targets: the constant prediction is right, not a failure
    assert not make_predictor("gp", restarts=0).fit(X, np.ones(20)).flat


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
