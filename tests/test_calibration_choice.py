"""Which subnets calibrate a latency table (nas.latency.profile.calibration_archs)."""
from __future__ import annotations

import numpy as np
import pytest

from nas.arch import extreme_arch, space_contains
from nas.costmodel import analytic_cost
from nas.errors import NasError
from nas.latency.profile import calibration_archs
from nas.space import load_space


@pytest.fixture(scope="module")
def space():
    return load_space("tiny32")


def test_cover_is_prefix_stable_distinct_and_in_the_space(space):
    cover = calibration_archs(space, 30, 0, strategy="cover")
    assert len(set(cover)) == 30 and all(space_contains(space, a)[0] for a in cover)
    assert calibration_archs(space, 12, 0, strategy="cover") == cover[:12]  # 12, then 30
    assert set(cover) <= set(calibration_archs(space, 50, 0, strategy="cover"))
    assert calibration_archs(space, 30, 1, strategy="cover") != cover


def test_cover_spans_the_space_wider_than_random(space):
    cover = calibration_archs(space, 20, 0, strategy="cover")
    rand = calibration_archs(space, 20, 0, strategy="random")
    assert calibration_archs(space, 8, 0, strategy="random") == rand[:8]  # prefix-stable too
    span = {name: np.ptp(np.log([analytic_cost(a)[0] for a in s]))
            for name, s in (("cover", cover), ("random", rand))}
    assert span["cover"] > span["random"]
    reduced = [sum(s.keep_ratio < 1 for s in a.stages) for a in cover]
    assert 0 in reduced and max(reduced) >= 1  # both ends of token reduction


def test_extremes_are_both_ends_then_the_random_set(space):
    ends = [extreme_arch(space, "min"), extreme_arch(space, "max")]
    ext = calibration_archs(space, 30, 0)  # the default
    assert ext == calibration_archs(space, 30, 0, strategy="extremes")
    assert ext[:2] == ends and len(set(ext)) == 30
    assert ext[2:] == [a for a in calibration_archs(space, 30, 0, strategy="random")
                       if a not in ends][:28]
    assert calibration_archs(space, 12, 0) == ext[:12]  # prefix-stable
    assert calibration_archs(space, 1, 0) == ends[:1]
    macs = [analytic_cost(a)[0] for a in ext]
    assert macs[0] == min(macs) and macs[1] == max(macs)


def test_unknown_strategy_is_refused(space):
    with pytest.raises(NasError, match="must be one of cover, extremes, random"):
        calibration_archs(space, 5, 0, strategy="best")
