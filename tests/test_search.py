"""Tests for nas.search: every searcher through one contract, resume after a killed driver,
bad input, the Optuna arch parameters, Pareto fronts, and a Ray cluster (slow)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from nas.arch import Arch, load_arch, sample_arch, space_contains  # noqa: E402
from nas.cli import main  # noqa: E402
from nas.encoding import encode_arch  # noqa: E402
from nas.io import read_json  # noqa: E402
from nas.search import (  # noqa: E402
    SEARCHERS,
    PredictorObjective,
    SearchConfig,
    SearchError,
    SyntheticObjective,
    hypervolume,
    make_searcher,
    pareto_front,
    run_search,
)
from nas.search.report import reference_archs, write_outputs  # noqa: E402
from nas.search.searchers.optuna_search import ArchParams, repair  # noqa: E402
from nas.search.trial_log import TrialLog  # noqa: E402
from nas.space import load_space, parse_space  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = {  # 256 archs: quick to profile into a real latency table
    "name": "search-small", "num_classes": 4, "resolution": [16], "stem_stride": [4],
    "stages": [
        {"depth": [1, 2], "embed_dim": [16, 24], "mixer": ["mhsa", "pool"], "heads": [2],
         "mlp_ratio": [2, 4]},
        {"depth": [1, 2], "embed_dim": [24, 32], "stride": [2], "mixer": ["mhsa", "mlp"],
         "heads": [2], "mlp_ratio": [2, 4]},
    ],
}
BUDGET = 0.324  # ms on the synthetic objective of tiny32: ~25% of uniform archs fit


class FakeObjective:
    """Latency from a parameter-count formula, accuracy a fixed function of the encoding."""

    def __init__(self, space):
        self.space = space
        n = len(encode_arch(space, sample_arch(space, np.random.default_rng(0))))
        self.w = np.random.default_rng(1).normal(size=n)

    def _params(self, a: Arch) -> float:
        return sum(s.depth * s.embed_dim ** 2 * (4 + 2 * s.mlp_ratio * s.low_rank)
                   for s in a.stages)

    def latency_ms(self, archs):
        return np.array([0.05 + self._params(a) / 2e6 for a in archs])

    def evaluate(self, archs):
        lat = self.latency_ms(archs)
        return [{"acc": float(1 / (1 + np.exp(-encode_arch(self.space, a) @ self.w / 3))),
                 "latency_ms": float(t), "params": int(self._params(a))}
                for a, t in zip(archs, lat)]


@pytest.fixture(scope="module")
def tiny():
    return load_space("tiny32")


@pytest.fixture(scope="module")
def small_artefacts(tmp_path_factory):
    """A real latency table (profiled, fast settings) and a ridge predictor of SMALL."""
    from nas.latency import profile_space
    from nas.predictors import fit_predictor

    root = tmp_path_factory.mktemp("artefacts")
    space = parse_space(SMALL)
    profile_space(space, out=root / "table.json", calibrate=0, min_run_time=0.002, warmup=1,
                  threads=1, progress=False)
    archs = [sample_arch(space, np.random.default_rng(i)) for i in range(48)]
    rows = [{"arch": a.to_json(), "acc": r["acc"]}
            for a, r in zip(archs, SyntheticObjective(space).evaluate(archs))]
    fit_predictor(rows, model="ridge", space=space, folds=0).save(root / "pred")
    (root / "space.yaml").write_text(json.dumps(SMALL))
    return space, root


@pytest.fixture(scope="module")
def ray_local():
    """One embedded Ray for the in-process searches (each would otherwise start its own)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # FakeObjective
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    yield
    if started:
        ray.shutdown()


def _config(tmp_path, searcher, **kw):
    base = {"space": "tiny32", "objective": "synthetic", "budget_ms": BUDGET,
            "searcher": searcher, "trials": 12, "batch_size": 4, "seed": 0, "workers": 1,
            "out": str(tmp_path / searcher)}
    base.update(kw)
    return SearchConfig(**base)


# ----------------------------------------------------------------------------- contract


def test_nsga2_sampler_pickles_and_keeps_sampling():
    """Ray Tune pickles the searcher; optuna's genetic samplers hold a thread lock."""
    import pickle

    import optuna

    from nas.search.searchers.optuna_search import NSGA2Searcher

    sampler = pickle.loads(pickle.dumps(NSGA2Searcher.make_sampler(None, 0, population_size=4)))
    study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=10)
    assert len(study.trials) == 10 and isinstance(sampler, optuna.samplers.NSGAIISampler)


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_every_searcher_contract(name, tiny, tmp_path, ray_local):
    """Any registered searcher, on Ray with a fake objective: outputs, best, rerun, refusal."""
    options = {"tpe": {"n_startup_trials": 8}, "gp": {"n_startup_trials": 11},
               "nsga2": {"population_size": 4}, "evolution": {"population_size": 4}}.get(name, {})
    fake = FakeObjective(tiny)
    budget = float(np.quantile(fake.latency_ms([sample_arch(tiny, np.random.default_rng(s))
                                                 for s in range(64)]), 0.4))
    cfg = _config(tmp_path, name, options=options, budget_ms=budget)
    result = run_search(cfg, objective=fake, echo=None)
    out = Path(cfg.out)
    for f in ("config.json", "trials.jsonl", "trials.csv", "pareto.csv", "pareto.png",
              "best.yaml", "summary.json"):
        assert (out / f).is_file(), f
    recs = result.records
    assert [r["trial"] for r in recs] == list(range(cfg.trials))
    assert len((out / "trials.csv").read_text().splitlines()) == cfg.trials + 1
    assert all(space_contains(tiny, Arch.from_dict(r["arch"]))[0] for r in recs)
    # the reported best: the most accurate feasible trial, inside the space, within budget
    best = load_arch(out / "best.yaml")
    assert space_contains(tiny, best)[0]
    assert fake.latency_ms([best])[0] <= budget
    assert result.best["acc"] == max(r["acc"] for r in recs if r["latency_ms"] <= budget)
    saved = read_json(out / "config.json")
    assert saved["space"]["fingerprint"] == tiny.fingerprint
    assert saved["config"]["searcher"] == name
    # the same command again resumes (nothing left to do); another search is refused
    again = run_search(cfg, objective=fake, echo=None)
    assert again.records == recs and again.trials_per_s is None
    with pytest.raises(SearchError, match="another search"):
        run_search(SearchConfig(**{**cfg.to_dict(), "seed": 1}), objective=fake, echo=None)


def test_predictor_objective_reads_the_real_artefacts(small_artefacts):
    from nas.latency import LatencyTable
    from nas.predictors import load_predictor

    space, root = small_artefacts
    obj = PredictorObjective(space, table=str(root / "table.json"), predictor=str(root / "pred"))
    archs = [sample_arch(space, np.random.default_rng(i)) for i in range(6)]
    rows = obj.evaluate(archs)
    lat = LatencyTable.load(root / "table.json", space=space).predict(archs)
    acc = load_predictor(root / "pred", space=space).predict(archs)
    assert [r["latency_ms"] for r in rows] == pytest.approx(lat.tolist())
    assert [r["acc"] for r in rows] == pytest.approx(acc.tolist())
    assert all(r["params"] > 0 for r in rows)
    info = obj.describe()
    assert info["table"]["space_fingerprint"] == space.fingerprint
    assert info["predictor"]["sha256"] and info["table"]["sha256"]


# ----------------------------------------------------------------------------- resume


def _nas(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def _finish(proc, timeout=120):
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:  # the driver's embedded Ray lives in its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out


def test_killed_driver_resumes_without_loss_or_duplicates(tmp_path, capsys, small_artefacts,
                                                         ray_local):
    """The CLI with a real table and predictor; the driver is SIGKILLed after 16 trials."""
    from nas.latency import LatencyTable

    space, root = small_artefacts
    lat = LatencyTable.load(root / "table.json", space=space).predict(
        [sample_arch(space, np.random.default_rng(i)) for i in range(64)])
    out = tmp_path / "run"
    args = ["search", "--space", str(root / "space.yaml"), "--table", str(root / "table.json"),
            "--predictor", str(root / "pred"), "--budget-ms", f"{np.quantile(lat, 0.7):.6f}",
            "--searcher", "evolution", "--trials", "40", "--batch-size", "4", "--workers", "1",
            "--option", "population_size=8", "--out", str(out)]
    env = {**os.environ, "NAS_SEARCH_KILL_AFTER": "16"}
    env.pop("RAY_ADDRESS", None)
    rc, text = _finish(_nas(args, env=env))
    assert rc == -signal.SIGKILL, text
    before = TrialLog(out / "trials.jsonl").read()
    assert 16 <= len(before) < 40
    with open(out / "trials.jsonl", "a") as f:  # a line cut short by the kill
        f.write('{"trial": 99, "acc"')
    assert main(["search", "--resume", str(out)]) == 0
    text = capsys.readouterr().out
    after = TrialLog(out / "trials.jsonl").read()
    assert [r["trial"] for r in after] == list(range(40))
    assert after[:len(before)] == before  # nothing finished was lost or rewritten
    assert len({json.dumps(r["arch"], sort_keys=True) for r in after}) == 40  # no duplicates
    assert {r["attempt"] for r in after[len(before):]} == {1}
    assert "best" in text and (out / "best.yaml").is_file()
    assert not (out / "tune").exists()  # Tune's pickled state goes once a run succeeds


def test_evolution_save_restore_continues_identically(tiny, tmp_path):
    obj = SyntheticObjective(tiny)

    def make():
        return make_searcher("evolution", space=tiny, budget_ms=BUDGET, latency=obj.latency_ms,
                             trials=40, batch_size=4, seed=3, population_size=6, sample_size=3)

    a = make()
    for k in range(4):
        cfg = a.suggest(str(k))
        a.on_trial_complete(str(k), {"rows": obj.evaluate([Arch.from_dict(d) for d in cfg["batch"]])})
    a.save(str(tmp_path / "state.json"))
    b = make()
    b.restore(str(tmp_path / "state.json"))
    assert a.suggest("x")["batch"] == b.suggest("x")["batch"]
    assert b.done == 16


def test_optuna_state_round_trips_as_json(tiny, tmp_path):
    obj = SyntheticObjective(tiny)
    a = make_searcher("tpe", space=tiny, budget_ms=BUDGET, latency=obj.latency_ms, trials=20,
                      batch_size=4, seed=0)
    for k in range(2):
        cfg = a.suggest(str(k))
        a.on_trial_complete(str(k), {"rows": obj.evaluate([Arch.from_dict(d) for d in cfg["batch"]])})
    a.save(str(tmp_path / "s.json"))
    json.loads((tmp_path / "s.json").read_text())  # JSON, not a pickle
    b = make_searcher("tpe", space=tiny, budget_ms=BUDGET, latency=obj.latency_ms, trials=20,
                      batch_size=4, seed=0)
    b.restore(str(tmp_path / "s.json"))
    assert len(b.study.get_trials()) == 8 and b.done == 8


def test_trial_log_drops_a_truncated_tail_and_refuses_corruption(tmp_path):
    log = TrialLog(tmp_path / "t.jsonl")
    log.append([{"trial": 0, "acc": 1}, {"trial": 1, "acc": 2}])
    with open(log.path, "a") as f:
        f.write('{"trial": 2, "ac')
    assert [r["trial"] for r in log.read()] == [0, 1]
    assert log.path.read_text().endswith("}\n")
    log.path.write_text('{"trial": 0}\n{"trial": 5}\n')
    with pytest.raises(ValueError, match="corrupted"):
        log.read()


# ----------------------------------------------------------------------------- searchers offline


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_searcher_never_exceeds_trials_and_steers_into_budget(name, tiny):
    obj = FakeObjective(tiny)
    lat = obj.latency_ms([sample_arch(tiny, np.random.default_rng(s)) for s in range(200)])
    budget = float(np.quantile(lat, 0.3))
    n = 11 if name == "gp" else 40
    kw = {"n_startup_trials": {"tpe": 6, "gp": 10}[name]} if name in ("tpe", "gp") else {}
    s = make_searcher(name, space=tiny, budget_ms=budget, latency=obj.latency_ms, trials=n,
                      batch_size=5, seed=0, **kw)
    rows, metas, k = [], [], 0
    while (cfg := s.suggest(str(k))) != "FINISHED":
        assert cfg is not None
        new = obj.evaluate([Arch.from_dict(d) for d in cfg["batch"]])
        s.on_trial_complete(str(k), {"rows": new})
        rows += new
        metas += cfg["meta"]
        k += 1
    assert len(rows) == n
    infeasible = sum(r["latency_ms"] > budget for r in rows)
    # ~70% of uniform archs are over budget; constraint-aware proposals are (nearly) never
    limit = n if name == "gp" else 0  # GP evaluates over-budget proposals to learn the constraint
    assert infeasible <= limit and infeasible == s.infeasible_proposed
    rejected = sum(m["over_budget"] for m in metas)
    assert all(m["tries"] >= 1 + m["over_budget"] for m in metas)
    if name in ("tpe", "nsga2"):  # every rejected proposal is in the study, PRUNED
        from optuna.trial import TrialState

        assert rejected == len(s.study.get_trials(states=(TrialState.PRUNED,)))


def test_failed_batch_is_proposed_again(tiny):
    obj = SyntheticObjective(tiny)
    s = make_searcher("random", space=tiny, budget_ms=BUDGET, latency=obj.latency_ms, trials=8,
                      batch_size=4, seed=0)
    s.suggest("a")
    s.suggest("b")
    assert s.suggest("c") is None  # all 8 running: wait
    s.on_trial_complete("a", None, error=True)
    assert len(s.suggest("c")["batch"]) == 4


def test_arch_params_cover_the_space_and_repair_deterministically(spaces):
    for space in spaces.values():
        params = ArchParams(space)
        rng = np.random.default_rng(0)
        for _ in range(30):
            p = {k: v[int(rng.integers(len(v)))] for k, v in params.choices.items()}
            a = params.build(p)
            assert a == params.build(p)
            assert len(a.stages) == len(space.stages)
            assert space_contains(space, a)[0] or "grid" in space_contains(space, a)[1]
        # every value of a uniform sample is reachable
        for _ in range(20):
            a = sample_arch(space, rng)
            for i, st in enumerate(a.stages):
                key = f"stages[{i}].mixer"
                if key in params.choices:
                    assert st.mixer in params.choices[key]
    assert repair(4.0, (2.0, 3.0), (2.0, 3.0, 4.0)) == 3.0
    assert repair("pool", ("mhsa", "sra"), ("mhsa", "sra", "pool")) == "sra"


def test_make_searcher_rejects_unknown_names_and_options(tiny):
    obj = SyntheticObjective(tiny)
    kw = dict(space=tiny, budget_ms=1.0, latency=obj.latency_ms, trials=4, batch_size=1, seed=0)
    with pytest.raises(SearchError, match="valid: evolution, tpe, gp, nsga2, random"):
        make_searcher("annealing", **kw)
    with pytest.raises(SearchError, match="population_size"):
        make_searcher("evolution", populaton_size=3, **kw)
    with pytest.raises(SearchError, match="sample_size"):
        make_searcher("evolution", population_size=4, sample_size=9, **kw)


# ----------------------------------------------------------------------------- Pareto, plot


def test_pareto_front_and_hypervolume_match_brute_force():
    rng = np.random.default_rng(0)
    acc, lat = rng.random(60), rng.random(60)
    front = set(pareto_front(acc, lat).tolist())
    brute = {i for i in range(60) if not any(
        acc[j] >= acc[i] and lat[j] <= lat[i] and (acc[j] > acc[i] or lat[j] < lat[i])
        for j in range(60))}
    assert front == brute
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401)), -1).reshape(-1, 2)
    dominated = ((acc[None] >= grid[:, :1]) & (lat[None] <= grid[:, 1:])).any(1)
    assert hypervolume(acc, lat, ref=(0.0, 1.0)) == pytest.approx(dominated.mean(), abs=0.01)


def test_plot_marks_the_reference_archs_of_the_space(spaces, tmp_path):
    space = spaces["imagenet224"]
    refs = reference_archs(space)
    assert {n for n, _ in refs} >= {"deit_tiny", "poolformer_s12"}
    assert reference_archs(spaces["tiny32"]) == []
    obj = SyntheticObjective(space)
    archs = [sample_arch(space, np.random.default_rng(i)) for i in range(10)]
    recs = [{"trial": i, **r, "feasible": True, "meta": {"op": "random"}, "arch": a.to_dict()}
            for i, (a, r) in enumerate(zip(archs, obj.evaluate(archs)))]
    ref_rows = list(zip([n for n, _ in refs], obj.evaluate([a for _, a in refs])))
    front = write_outputs(tmp_path, space, recs, budget_ms=1e9, searcher="random", best=recs[0],
                          references=ref_rows)
    assert (tmp_path / "pareto.png").stat().st_size > 10_000 and front


# ----------------------------------------------------------------------------- bad input


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error:") and "\n" not in err, err
    return err


def test_budget_below_the_smallest_subnet_names_the_minimum(capsys, tmp_path, tiny):
    err = _one_line_error(capsys, ["search", "--space", "tiny32", "--objective", "synthetic",
                                   "--budget-ms", "0.01", "--out", str(tmp_path / "r")])
    from nas.arch import extreme_arch

    floor = SyntheticObjective(tiny).latency_ms([extreme_arch(tiny, "min")])[0]
    assert "below the smallest subnet" in err and f"{floor:.4g}" in err
    assert not (tmp_path / "r").exists()


def test_cli_bad_input_is_one_line(capsys, tmp_path):
    base = ["search", "--space", "tiny32", "--budget-ms", "0.5", "--out", str(tmp_path / "r")]
    assert "valid: evolution, tpe, gp, nsga2, random" in _one_line_error(
        capsys, base + ["--objective", "synthetic", "--searcher", "hyperband"])
    assert "--table" in _one_line_error(capsys, base)
    assert "valid: predictor, supernet, synthetic" in _one_line_error(
        capsys, base + ["--objective", "oracle"])
    assert "positive" in _one_line_error(capsys, base + ["--objective", "synthetic",
                                                         "--trials", "0"])
    assert "--resume" in _one_line_error(capsys, ["search", "--resume", str(tmp_path),
                                                  "--space", "tiny32"])
    assert "no config.json" in _one_line_error(capsys, ["search", "--resume", str(tmp_path)])


def test_table_and_predictor_of_another_space_are_refused(capsys, tmp_path, small_artefacts):
    from nas.predictors import fit_predictor

    space, root = small_artefacts
    base = ["search", "--space", "tiny32", "--budget-ms", "0.5", "--out", str(tmp_path / "r")]
    err = _one_line_error(capsys, base + ["--table", str(root / "table.json"),
                                          "--predictor", str(root / "pred")])
    assert "latency table" in err and "search-small" in err and "tiny32" in err
    tiny = load_space("tiny32")
    other = tmp_path / "other_pred"
    fit_predictor([{"arch": sample_arch(tiny, np.random.default_rng(i)).to_json(),
                    "acc": 0.5 + i / 100} for i in range(24)],
                  model="ridge", space=tiny, folds=0).save(other)
    err = _one_line_error(capsys, ["search", "--space", str(root / "space.yaml"),
                                   "--budget-ms", "10", "--table", str(root / "table.json"),
                                   "--predictor", str(other), "--out", str(tmp_path / "r2")])
    assert "predictor" in err and tiny.fingerprint in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()


def test_run_dir_of_a_changed_space_is_refused(tmp_path, tiny):
    from nas.errors import ArtifactError
    from nas.io import write_json
    from nas.search.runner import _write_config

    cfg = _config(tmp_path, "random").resolved()
    _write_config(cfg, tiny, {})
    path = Path(cfg.out) / "config.json"
    saved = read_json(path)
    saved["space"]["fingerprint"] = "0123456789abcdef"
    write_json(path, saved)
    with pytest.raises(ArtifactError, match="space file changed"):
        run_search(cfg, echo=None)


def test_config_rejects_bad_values():
    with pytest.raises(SearchError, match="budget_ms .* must be a positive"):
        SearchConfig(space="tiny32", objective="synthetic", budget_ms=-1.0, out="x")
    with pytest.raises(SearchError, match="takes no table"):
        SearchConfig(space="tiny32", objective="synthetic", budget_ms=1.0, out="x", table="t")
    with pytest.raises(SearchError, match="unknown key"):
        SearchConfig.from_dict({"space": "tiny32", "budget_ms": 1, "out": "x", "budjet": 2})


# ----------------------------------------------------------------------------- cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_nodes(address: str, n: int, env: dict, timeout: float = 120) -> None:
    probe = ("import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "sys.exit(0 if sum(x['Alive'] for x in ray.nodes()) >= int(sys.argv[2]) else 1)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run([sys.executable, "-c", probe, address, str(n)], env=env,
                          capture_output=True, timeout=60).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} did not reach {n} nodes")


@pytest.mark.slow
def test_search_on_a_two_node_loopback_cluster(tmp_path):
    """`ray start` a head and a worker node on loopback (one CPU each), search on them.

    Both nodes run `ray start --block` in their own process group, which the test ends
    by group id; `ray stop` would also stop every other Ray session on the machine. The
    head keeps its files in a private temp dir.
    """
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    shared_file = Path("/tmp/ray/ray_current_cluster")  # `ray start` records its address there
    shared_before = shared_file.read_text() if shared_file.is_file() else None
    # Ray >= 2.5x: `ray start` clusters check a token (~/.ray/auth_token); a client that
    # attaches by address must opt in with RAY_AUTH_MODE=token.
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token"}
    ray_cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus=1",
               "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    nodes = []
    try:
        nodes.append(subprocess.Popen(ray_cmd + ["--head", f"--port={port}",
                                                 "--include-dashboard=false",
                                                 f"--temp-dir={temp}"],
                                      env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_for_nodes(address, 1, env)
        nodes.append(subprocess.Popen(ray_cmd + [f"--address={address}"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        _wait_for_nodes(address, 2, env)
        out = tmp_path / "run"
        rc, text = _finish(_nas(["search", "--space", "tiny32", "--objective", "synthetic",
                                 "--budget-ms", str(BUDGET), "--searcher", "evolution",
                                 "--trials", "24", "--batch-size", "3", "--address", address,
                                 "--out", str(out)], env=env), timeout=300)
        assert rc == 0, text
        assert "2 workers" in text  # one CPU on each node
        assert len(TrialLog(out / "trials.jsonl").read()) == 24
    finally:
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=60)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        # leave no address of this (dead) cluster for other users' `ray.init()` to find
        if shared_file.is_file() and shared_file.read_text() != shared_before:
            if shared_before is None:
                shared_file.unlink()
            else:
                shared_file.write_text(shared_before)
        shutil.rmtree(temp, ignore_errors=True)
