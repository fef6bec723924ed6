"""Signals at initialisation (predictors.proxies): every proxy, deterministic, finite, cheap."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nas.arch import extreme_arch, sample_arch
from nas.errors import NasError
from nas.predictors.proxies import PROXIES, ProxyScorer
from nas.training import TrainConfig, load_val_data


@pytest.fixture(scope="module")
def scorer(spaces):
    cfg = TrainConfig(space="tiny32", data="digits", out="unused", limit_train=128)
    x, y = load_val_data(cfg, split="train")
    return ProxyScorer(spaces["tiny32"], x, y, seed=0, batch_size=32, steps=3)


def test_registry_names():
    assert set(PROXIES) == {"train_speed", "grad_norm", "synflow", "naswot"}


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_every_proxy_is_deterministic_finite_and_tells_archs_apart(scorer, spaces, name):
    space = spaces["tiny32"]
    archs = [extreme_arch(space, "max"), extreme_arch(space, "min"),
             sample_arch(space, np.random.default_rng(1))]
    scores = [scorer.score(a, name) for a in archs]
    assert all(math.isfinite(v) for v in scores)
    assert scores == [scorer.score(a, name) for a in archs]  # same init, same batch
    assert len(set(scores)) == 3
    assert len(scorer.seconds[name]) >= 6


def test_the_scorer_does_not_train_its_initialisation(scorer, spaces):
    arch = sample_arch(spaces["tiny32"], np.random.default_rng(2))
    before = {k: v.clone() for k, v in scorer.model(arch).state_dict().items()}
    scorer.score(arch, "train_speed")
    after = scorer.model(arch).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_train_speed_is_minus_the_summed_loss(scorer, spaces):
    arch = extreme_arch(spaces["tiny32"], "min")
    value = scorer.score(arch, "train_speed")
    assert -3 * 2.5 < value < -3 * 1.5  # 3 steps at about ln(10) each from random init


def test_bad_input(scorer, spaces):
    with pytest.raises(NasError, match="unknown proxy 'zen'; valid: train_speed"):
        scorer.score(extreme_arch(spaces["tiny32"], "min"), "zen")
    with pytest.raises(NasError, match="at least 64 training images"):
        ProxyScorer(spaces["tiny32"], torch.zeros(10, 3, 32, 32), torch.zeros(10, dtype=torch.long))
