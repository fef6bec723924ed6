"""``nas rerank``: a search's best candidates re-ranked by their own training speed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nas.arch import Arch, extreme_arch, load_arch, sample_arch
from nas.cli import main
from nas.errors import NasError
from nas.io import write_json
from nas.search import SearchConfig
from nas.search.rerank import RERANK_FILE, candidates, rerank
from nas.search.trial_log import TrialLog

BUDGET = 1.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from nas.training import TrainConfig, train

    out = tmp_path_factory.mktemp("rerank") / "run"
    train(TrainConfig(space="tiny32", data="digits", out=str(out), epochs=1, limit_train=64,
                      limit_val=24, batch_size=16), verbose=False)
    return out


def _records(space, n=12, seed=0):
    """Trials with made-up accuracy and latency: every third over the budget, trial 4
    repeats trial 1's arch."""
    rng = np.random.default_rng(seed)
    archs = [extreme_arch(space, "min")] + [sample_arch(space, rng) for _ in range(n - 1)]
    archs[4] = archs[1]
    return [{"trial": i, "attempt": 0, "arch": a.to_dict(), "acc": round(0.9 - 0.01 * i, 4),
             "latency_ms": 1.5 if i % 3 == 2 else 0.5, "params": 1000 + i, "feasible": i % 3 != 2,
             "meta": {}} for i, a in enumerate(archs)]


def _search_dir(tmp_path, space, records):
    out = tmp_path / "search"
    cfg = SearchConfig(space="tiny32", objective="synthetic", budget_ms=BUDGET, trials=len(records),
                       out=str(out))
    write_json(out / "config.json", {"format": "nas-search", "config": cfg.to_dict()})
    TrialLog(out / "trials.jsonl").append(records)
    return out


class CountingScorer:
    """Scores by a fixed function of the arch and counts the calls."""

    def __init__(self):
        self.calls = []

    def score(self, arch: Arch, name: str) -> float:
        assert name == "train_speed"
        self.calls.append(arch)
        return _speed(arch)


def _speed(arch: Arch) -> float:
    return float(sum(s.embed_dim * s.depth for s in arch.stages))


def test_candidates_are_distinct_within_budget_most_accurate_first(spaces):
    space = spaces["tiny32"]
    recs = _records(space)
    got = candidates(space, recs, BUDGET, top=5)
    assert [r["trial"] for r in got] == [0, 1, 3, 6, 7]  # 2, 5 over budget, 4 repeats 1
    assert all(r["latency_ms"] <= BUDGET for r in got)
    assert len(candidates(space, recs, BUDGET, top=100)) == 7  # 8 feasible, one repeat


def test_rerank_picks_the_fastest_learner_and_resumes(spaces, run_dir, tmp_path):
    space = spaces["tiny32"]
    recs = _records(space)
    out = _search_dir(tmp_path, space, recs)
    scorer = CountingScorer()
    res = rerank(out, run_dir, top=4, echo=None, scorer=scorer)
    chosen = candidates(space, recs, BUDGET, 4)
    expect = max(chosen, key=lambda r: (_speed(Arch.from_dict(r["arch"])), -r["trial"]))
    assert len(scorer.calls) == 4 and res.best["trial"] == expect["trial"]
    assert [r["rank"] for r in res.rows] == [1, 2, 3, 4]
    assert sorted(r["predictor_rank"] for r in res.rows) == [1, 2, 3, 4]
    speeds = [r["train_speed"] for r in res.rows]
    assert speeds == sorted(speeds, reverse=True)
    assert load_arch(out / "best_rerank.yaml") == Arch.from_dict(expect["arch"])
    lines = (out / "rerank.csv").read_text().splitlines()
    assert lines[0].startswith("rank,predictor_rank,trial") and len(lines) == 5
    # a larger top scores only the new candidates; a line cut short by a kill is rescored
    log = out / RERANK_FILE
    text = log.read_text()
    log.write_text(text + text.splitlines()[0][:30])
    scorer2 = CountingScorer()
    res2 = rerank(out, run_dir, top=6, echo=None, scorer=scorer2)
    assert len(scorer2.calls) == 2 and len(res2.rows) == 6
    assert all(json.loads(line) for line in log.read_text().splitlines())
    # another number of steps is another signal: nothing reused
    scorer3 = CountingScorer()
    rerank(out, run_dir, top=2, steps=5, echo=None, scorer=scorer3)
    assert len(scorer3.calls) == 2


def test_rerank_with_the_runs_real_training_speed(spaces, run_dir, tmp_path):
    space = spaces["tiny32"]
    out = _search_dir(tmp_path, space, _records(space))
    res = rerank(out, run_dir, top=2, steps=2, echo=None)
    assert all(np.isfinite(r["train_speed"]) and r["train_speed"] < 0 for r in res.rows)
    assert res.rows[0]["train_speed"] >= res.rows[1]["train_speed"]
    assert "best_rerank.yaml" in res.summary


def test_rerank_refuses_bad_input(spaces, run_dir, tmp_path, capsys):
    space = spaces["tiny32"]
    with pytest.raises(NasError, match="top must be"):
        rerank(tmp_path, run_dir, top=1)
    assert main(["rerank", str(tmp_path / "nothing"), "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a search run dir" in err[0]
    over = [{**r, "latency_ms": 2.0} for r in _records(space)]
    out = _search_dir(tmp_path, space, over)
    assert main(["rerank", str(out), "--run", str(run_dir)]) == 2
    assert "fits its budget" in capsys.readouterr().err
    assert not (out / "rerank.csv").exists() and not (out / RERANK_FILE).exists()
