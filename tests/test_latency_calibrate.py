"""The latency calibration fit: exact on clean samples, robust to a few outlying ones."""
import numpy as np
import pytest

from nas.latency import calibrate as cal

FEATS = ("raw_ms", "ops", "const", "reduce_ms")
TRUE = np.array([1.05, 0.0004, 0.06, 0.4])


def _samples(n: int, seed: int, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.zeros((n, len(cal.FEATURES)))
    X[:, cal.FEATURES.index("raw_ms")] = rng.uniform(0.4, 1.6, n)
    X[:, cal.FEATURES.index("ops")] = rng.integers(60, 400, n)
    X[:, cal.FEATURES.index("const")] = 1.0
    X[:, cal.FEATURES.index("reduce_ms")] = rng.uniform(0, 0.1, n) * (rng.random(n) < 0.4)
    y = cal.apply(X, FEATS, TRUE) * (1 + noise * rng.standard_normal(n))
    return X, y


@pytest.mark.parametrize("robust", [True, False])
def test_clean_samples_give_the_true_coefficients(robust):
    X, y = _samples(30, 0)
    coef = cal.fit(X, y, FEATS, robust=robust)
    np.testing.assert_allclose(coef, TRUE, rtol=1e-6, atol=1e-9)
    used, _, stats = cal.fit_report(X, y, FEATS)
    assert used == FEATS and stats["outliers"] == [] and stats["loo_mape"] < 1e-6


def test_a_few_outlying_samples_do_not_bend_the_line():
    """Two of 30 whole models ran 15% faster than the line (as in a `nas run` profile
    whose components came out slow): plain least squares bends towards them, the robust
    fit flags them and predicts the rest as if they were not there."""
    X, y = _samples(30, 1, noise=0.01)
    y[[4, 17]] *= 0.85
    Xh, yh = _samples(200, 2)  # held out, exact
    err = {}
    for robust in (True, False):
        pred = cal.apply(Xh, FEATS, cal.fit(X, y, FEATS, robust=robust))
        err[robust] = float(np.mean(np.abs(pred / yh - 1)))
    assert err[True] < 0.01 < err[False]
    _, coef, stats = cal.fit_report(X, y, FEATS)
    assert set(stats["outliers"]) == {4, 17}
    assert all(c >= 0 for c in coef)


def test_noise_alone_rejects_nothing_and_scaling_carries_over():
    X, y = _samples(30, 3, noise=0.005)  # below the 1% scale floor
    coef = cal.fit(X, y, FEATS)
    plain = cal.fit(X, y, FEATS, robust=False)
    np.testing.assert_allclose(cal.apply(X, FEATS, coef), cal.apply(X, FEATS, plain), rtol=2e-3)
    assert len(cal.outliers(X, y, FEATS, coef)) == 0
    np.testing.assert_allclose(cal.fit(X, 2 * y, FEATS), 2 * coef, rtol=1e-6, atol=1e-9)


def test_too_few_samples_fall_back_to_a_plain_scale():
    X, y = _samples(4, 4)
    assert cal.usable_features(FEATS, 4) == ("raw_ms",)
    used, coef, stats = cal.fit_report(X, y, FEATS)
    assert used == ("raw_ms",) and len(coef) == 1 and stats["n"] == 4
    with pytest.raises(ValueError, match="subset"):
        cal.fit(X, y, ("raw_ms", "bogus"))
