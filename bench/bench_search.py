"""Search quality and speed on tiny32 with the predictor objective.

For every searcher and seed, a full ``nas.search`` run (Ray Tune, embedded) of
``--trials`` archs; the anytime curve (best feasible predicted accuracy after the
first n trials) is compared with a reference optimum: the best of
``--reference-samples`` uniform random *feasible* archs, scored in batch without Ray.
Also reported: trials/s, the Pareto-front hypervolume (NSGA-II vs random) and how
often each sampler proposes over-budget archs (does the Optuna constraint steer?).

Artefacts: a latency table and an accuracy predictor of the space found under
``bench/results/`` or ``runs/`` (or given with ``--table``/``--predictor``); without
them the deterministic synthetic objective of :mod:`nas.search.objective` stands in,
and the report says so. Finished runs are cached in ``--workdir`` (delete it, or pass
``--fresh``, to rerun).

    python bench/bench_search.py                      # 5 seeds, 1000 trials
    python bench/bench_search.py --seeds 2 --trials 300 --searchers evolution,random
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, write_result  # noqa: E402
from nas.arch import Arch, sample_arch, space_contains  # noqa: E402
from nas.search import (  # noqa: E402
    PredictorObjective,
    SearchConfig,
    SyntheticObjective,
    hypervolume,
    run_search,
)
from nas.search.report import best_feasible  # noqa: E402
from nas.space import load_space  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = (50, 100, 250, 500, 1000)


# ----------------------------------------------------------------------------- artefacts


def find_artefacts(space, workdir: Path) -> tuple[str | None, str | None, str]:
    """A latency table and a predictor of ``space`` under bench/results/ or runs/.

    Without a saved predictor, one is fitted (MLP ensemble, seed 0) on a subnet table
    of the space found there (``nas predictor collect`` output: inherited-weight
    accuracies of real subnets) and saved in ``workdir``. Returns (table, predictor, note).
    """
    from nas.io import read_json

    table = predictor = subnets = None
    for root in (ROOT / "bench" / "results", ROOT / "runs"):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.json")):
            if path.stat().st_size > 50_000_000 or "bench_search" in path.parts:
                continue
            try:
                data = read_json(path)
            except ValueError:
                continue
            rec = data.get("space") if isinstance(data, dict) else None
            if not isinstance(rec, dict) or rec.get("fingerprint") != space.fingerprint:
                continue
            fmt = data.get("format")
            if fmt == "vitnas.latency-table" and data.get("complete") and table is None:
                table = str(path)
            elif fmt == "vitnas.accuracy_predictor" and predictor is None:
                predictor = str(path)
            elif fmt == "vitnas.subnet_table" and subnets is None:
                csv = path.with_name(path.name.replace(".meta.json", ".csv"))
                if csv.is_file():
                    subnets = (csv, data)
    note = f"predictor `{predictor}`"
    if predictor is None and subnets is not None:
        from nas.predictors import fit_predictor

        csv, meta = subnets
        out = workdir / "predictor_mlp"
        if not (out / "predictor.json").is_file():
            fit_predictor(str(csv), model="mlp", space=space, folds=5, seed=0).save(out)
        predictor = str(out)
        cv = read_json(out / "predictor.json").get("cv", {}).get("families", {}).get("mlp", {})
        tau = cv.get("mean", {}).get("kendall_tau")
        note = (f"predictor: an MLP ensemble fitted by this bench (seed 0) on `{csv.relative_to(ROOT)}` "
                f"({meta.get('rows')} subnets of the supernet `{(meta.get('run') or {}).get('run_dir')}` "
                f"evaluated with inherited weights on {(meta.get('run') or {}).get('data')})"
                + (f", 5-fold Kendall tau {tau:.2f}" if tau is not None else ""))
    return table, predictor, note


def make_objective(space, table, predictor):
    if table and predictor:
        return PredictorObjective(space, table=table, predictor=predictor), "predictor"
    return SyntheticObjective(space), "synthetic"


# ----------------------------------------------------------------------------- reference


def accuracy(objective, archs) -> np.ndarray:
    """Accuracy only (the objectives' rows also count parameters, ~10 ms an arch)."""
    if isinstance(objective, PredictorObjective):
        from nas.predictors import load_predictor

        key = (objective.predictor, objective.space)
        if key not in _PREDICTORS:
            _PREDICTORS[key] = load_predictor(objective.predictor, space=objective.space)
        return _PREDICTORS[key].predict(archs)
    return np.array([r["acc"] for r in objective.evaluate(archs)])


_PREDICTORS: dict = {}


def _sample_chunk(args):
    space, objective, seed, n, budget = args
    rng = np.random.default_rng([seed, 12345])
    archs = [sample_arch(space, rng) for _ in range(n)]
    lat = np.asarray(objective.latency_ms(archs))
    ok = np.flatnonzero(lat <= budget) if budget is not None else np.arange(n)
    acc = accuracy(objective, [archs[i] for i in ok]) if len(ok) else np.zeros(0)
    best = archs[ok[int(np.argmax(acc))]].to_dict() if len(acc) else None
    return n, lat, acc, lat[ok], best


def latency_quantile(space, objective, q, n=4000):
    rng = np.random.default_rng([999, 12345])
    lat = np.asarray(objective.latency_ms([sample_arch(space, rng) for _ in range(n)]))
    return float(np.quantile(lat, q)), float(np.mean(lat))


def reference_optimum(space, objective, budget, n_feasible, procs=2, chunk=5000):
    """Best accuracy among ``n_feasible`` uniform feasible archs, plus their (acc, latency)."""
    accs, lats, n_drawn, best, seed = [], [], 0, (-np.inf, None), 0
    with mp.get_context("fork").Pool(procs) as pool:
        while sum(len(a) for a in accs) < n_feasible:
            jobs = [(space, objective, seed + k, chunk, budget) for k in range(procs)]
            seed += procs
            for n, _, acc, lat_ok, arch in pool.map(_sample_chunk, jobs):
                n_drawn += n
                accs.append(acc)
                lats.append(lat_ok)
                if len(acc) and acc.max() > best[0]:
                    best = (float(acc.max()), arch)
    acc, lat = np.concatenate(accs)[:n_feasible], np.concatenate(lats)[:n_feasible]
    return {"best": float(acc.max()), "arch": best[1], "drawn": n_drawn, "feasible": len(acc),
            "acc": acc, "latency": lat}


# ----------------------------------------------------------------------------- runs


def run_one(space_name, objective, objective_name, budget, searcher, options, seed, trials,
            workdir: Path, fresh: bool, batch_size: int | None = None) -> dict:
    tag = searcher + ("-constraint-only" if options == {"reject_infeasible": False} else
                      "".join(f"-{k}={v}" for k, v in sorted(options.items())))
    out = workdir / (f"{tag}-s{seed}-n{trials}" + (f"-b{batch_size}" if batch_size else ""))
    cache = out / "bench.json"
    if cache.is_file() and not fresh:
        return json.loads(cache.read_text())
    if out.exists():
        shutil.rmtree(out)
    cfg = SearchConfig(space=space_name, objective=objective_name, budget_ms=budget,
                       searcher=searcher, trials=trials, seed=seed, out=str(out),
                       options=options, batch_size=batch_size,
                       **({"table": objective.table, "predictor": objective.predictor}
                          if objective_name == "predictor" else {}))
    t0 = time.perf_counter()
    result = run_search(cfg, objective=objective, echo=None)
    wall = time.perf_counter() - t0
    recs = result.records
    acc = np.array([r["acc"] for r in recs])
    lat = np.array([r["latency_ms"] for r in recs])
    feas = lat <= budget
    running = np.maximum.accumulate(np.where(feas, acc, -np.inf))
    rejected = sum(max(0, int((r.get("meta") or {}).get("tries", 1)) - 1) for r in recs)
    best = best_feasible(objective.space, recs, budget)
    assert best is not None and best["latency_ms"] <= budget
    assert space_contains(objective.space, Arch.from_dict(best["arch"]))[0]
    info = {"tag": tag, "searcher": searcher, "seed": seed, "trials": len(recs),
            "batch_size": batch_size,
            "curve": [float(running[min(n, len(recs)) - 1]) for n in CHECKPOINTS if n <= trials],
            "best": float(best["acc"]), "wall_s": wall, "trials_per_s": result.trials_per_s,
            "infeasible_evaluated": int((~feas).sum()),
            "infeasible_first_100": int((~feas[:100]).sum()),
            "infeasible_last_half": int((~feas[len(feas) // 2:]).sum()),
            "redrawn": rejected, "front_acc": acc[feas].tolist(), "front_lat": lat[feas].tolist()}
    cache.write_text(json.dumps(info))
    return info


# ----------------------------------------------------------------------------- report


def _pm(values, scale=1.0, fmt="{:.2f}"):
    v = np.asarray(values, dtype=np.float64) * scale
    return (fmt + " ± " + fmt).format(v.mean(), v.std()) if len(v) > 1 else fmt.format(v.mean())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny32")
    ap.add_argument("--table")
    ap.add_argument("--predictor")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--gp-trials", type=int, default=50,
                    help="GP proposes in seconds each on a 2-core CPU; it runs this many trials")
    ap.add_argument("--searchers", default="evolution,tpe,nsga2,random,gp")
    ap.add_argument("--steering", default="tpe,nsga2",
                    help="searchers also run with reject_infeasible=False: the Optuna "
                         "constraint alone must steer them into the budget")
    ap.add_argument("--budget-quantile", type=float, default=0.3,
                    help="budget: this quantile of the latency of uniform random archs")
    ap.add_argument("--reference-samples", type=int, default=100_000)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench_search"))
    ap.add_argument("--fresh", action="store_true", help="rerun cached searches")
    ap.add_argument("--overhead-trials", type=int, default=1000,
                    help="random search with 1, 5 and 20 archs per Ray trial: the Tune overhead")
    ap.add_argument("--out", default="search_cpu.md")
    return ap.parse_args()


def reference(args, space, objective, budget: float, workdir: Path) -> dict:
    """The reference optimum (cached in ``workdir`` unless --fresh)."""
    ref_path = workdir / f"reference-{budget}-{args.reference_samples}.json"
    t0 = time.perf_counter()
    if ref_path.is_file() and not args.fresh:
        ref = json.loads(ref_path.read_text())
    else:
        r = reference_optimum(space, objective, budget, args.reference_samples)
        ref = {k: r[k] for k in ("best", "arch", "drawn", "feasible")}
        ref["acc_min"] = float(r["acc"].min())
        ref["seconds"] = time.perf_counter() - t0
        ref_path.write_text(json.dumps(ref))
    print(f"reference: best {ref['best']:.4f} of {ref['feasible']} feasible "
          f"({ref['drawn']} drawn, {ref['seconds']:.0f} s)", flush=True)
    return ref


def run_searches(args, objective, objective_name: str, budget: float, workdir: Path,
                 ref: dict) -> tuple[dict[str, list[dict]], list[dict]]:
    """Every searcher and seed of the plan, then the Ray-overhead runs, in one local Ray;
    returns the runs by tag and the overhead runs."""
    import logging

    import ray

    runs: dict[str, list[dict]] = {}
    plan = [(s, {}) for s in args.searchers.split(",") if s]
    plan += [(s, {"reject_infeasible": False}) for s in args.steering.split(",") if s]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        for searcher, options in plan:
            n = args.gp_trials if searcher == "gp" else args.trials
            for seed in range(args.seeds):
                info = run_one(args.space, objective, objective_name, budget, searcher, options,
                               seed, n, workdir, args.fresh)
                runs.setdefault(info["tag"], []).append(info)
                print(f"{info['tag']:>26} seed {seed}: best {info['best']:.4f} "
                      f"({100 * (ref['best'] - info['best']):+.2f} pp to ref), "
                      f"{info['trials_per_s'] or 0:.1f} trials/s, wall {info['wall_s']:.0f} s, "
                      f"infeasible {info['infeasible_evaluated']}, redrawn {info['redrawn']}",
                      flush=True)
        overhead = []
        for b in (1, 5, 20) if args.overhead_trials else ():
            info = run_one(args.space, objective, objective_name, budget, "random", {}, 0,
                           args.overhead_trials, workdir, args.fresh, batch_size=b)
            overhead.append(info)
            print(f"overhead: batch {b}: {info['trials_per_s'] or 0:.1f} trials/s", flush=True)
    finally:
        ray.shutdown()
    return runs, overhead


def main() -> None:
    args = parse_args()
    load_start = os.getloadavg()[0]
    space = load_space(args.space)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.table or args.predictor:
        table, predictor, note = args.table, args.predictor, f"predictor `{args.predictor}`"
    else:
        table, predictor, note = find_artefacts(space, workdir)
    objective, objective_name = make_objective(space, table, predictor)
    workdir = workdir / objective_name
    workdir.mkdir(parents=True, exist_ok=True)
    budget, mean_lat = latency_quantile(space, objective, args.budget_quantile)
    budget = float(f"{budget:.4g}")
    print(f"objective {objective_name}; budget {budget} ms (q{args.budget_quantile} of uniform "
          f"archs, mean {mean_lat:.3f} ms)", flush=True)
    ref = reference(args, space, objective, budget, workdir)
    runs, overhead = run_searches(args, objective, objective_name, budget, workdir, ref)
    load = (load_start, os.getloadavg()[0])
    write_result(args.out, report(args, space, objective_name, table, note, budget, mean_lat,
                                  ref, runs, overhead, load))


def setup_lines(args, space, objective_name, table, note, budget, mean_lat, ref, load,
                scale) -> list[str]:
    """The report's opening: machine load, objective, budget and reference optimum."""
    lines = [header("Search on tiny32: quality vs trials, speed, Pareto front (CPU)")]
    lines.append(f"Shared machine: other jobs used the same 2 cores (1-min load average "
                 f"{load[0]:.1f} at the start of the invocation that wrote this report, "
                 f"{load[1]:.1f} at its end; runs cached from earlier invocations were timed "
                 "then, under similar load), so trials/s and wall times are pessimistic and "
                 "noisy.\n")
    if objective_name == "predictor":
        lines.append(f"Objective: **predictor** (real artefacts) -- latency table "
                     f"`{Path(table).relative_to(ROOT) if Path(table).is_relative_to(ROOT) else table}` "
                     f"(measured on this CPU, 1 thread, batch 1); {note}.\n")
    else:
        lines.append("Objective: **synthetic** -- no latency table and accuracy predictor of "
                     f"{space.name} were found under bench/results/ or runs/, so the "
                     "deterministic stand-in of `nas.search.objective.SyntheticObjective` "
                     "(latency from a MAC/block-count formula, accuracy a saturating function "
                     "of capacity plus a seeded random function of the encoding) was used. "
                     "Rerun with `--table/--predictor` for the real objective.\n")
    lines.append(
        f"Budget {budget} ms (the {args.budget_quantile:.0%} quantile of uniform random archs; "
        f"mean {mean_lat:.3f} ms). Reference optimum: best of {ref['feasible']:,} uniform random "
        f"feasible archs ({ref['drawn']:,} drawn, scored in batch without Ray, "
        f"{ref['seconds']:.0f} s): **{scale * ref['best']:.2f}%**. {args.seeds} seeds per "
        f"searcher; mean ± std over seeds. Every reported best arch was checked to lie in the "
        f"space and within budget per the table.\n")
    return lines


def curve_lines(args, ref, runs, scale) -> list[str]:
    """Best feasible accuracy after n trials, per searcher."""
    cps = [c for c in CHECKPOINTS if c <= args.trials]
    lines = ["## Best feasible accuracy (%) after n trials\n"]
    lines.append("| searcher | " + " | ".join(f"n={c}" for c in cps) + " | gap to ref (pp) at max n |")
    lines.append("|---|" + "---|" * (len(cps) + 1))
    for tag, infos in runs.items():
        cells = []
        for i in range(len(cps)):
            vals = [inf["curve"][i] for inf in infos if len(inf["curve"]) > i]
            cells.append(_pm(vals, scale) if vals else "")
        gap = [ref["best"] - inf["best"] for inf in infos]
        lines.append(f"| {tag} ({infos[0]['trials']} trials) | " + " | ".join(cells)
                     + f" | {_pm(gap, scale)} |")
    lines.append(f"| reference (best of {ref['feasible']:,} random feasible) | "
                 + " | ".join("" for _ in cps) + f" | {scale * ref['best']:.2f}% |")
    lines.append("")
    return lines


def speed_lines(args, runs, overhead) -> list[str]:
    """Trials/s, wall time and constraint handling per searcher; the Ray overhead."""
    lines = ["## Speed and constraint handling\n"]
    lines.append("trials/s: archs evaluated per second of `Tuner.fit` (2 workers, "
                 "trials/50 archs per Ray trial up to 32, actor reuse); wall: the whole `run_search` (checks, "
                 "Tune, outputs; Ray already up). Redrawn: candidates over budget (or already "
                 "seen) that the searcher replaced before evaluation. Infeasible: evaluated "
                 "archs over budget (first 100 trials / second half).\n")
    lines.append("| searcher | trials | trials/s | wall (s) | redrawn per trial | infeasible evaluated | first 100 | second half |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for tag, infos in runs.items():
        n = infos[0]["trials"]
        lines.append(
            f"| {tag} | {n} | {_pm([i['trials_per_s'] or 0 for i in infos], fmt='{:.1f}')} | "
            f"{_pm([i['wall_s'] for i in infos], fmt='{:.0f}')} | "
            f"{_pm([i['redrawn'] / n for i in infos])} | "
            f"{_pm([i['infeasible_evaluated'] for i in infos], fmt='{:.0f}')} | "
            f"{_pm([i['infeasible_first_100'] for i in infos], fmt='{:.0f}')} | "
            f"{_pm([i['infeasible_last_half'] for i in infos], fmt='{:.0f}')} |")
    lines.append(f"\nUniform random archs are over budget {1 - args.budget_quantile:.0%} of the "
                 "time: a sampler that ignored the constraint would evaluate that share "
                 "over budget. The `-constraint-only` rows evaluate every proposal: only the "
                 "Optuna constraint (`trial.set_constraint`) keeps them in budget.\n")
    if overhead:
        lines.append("### Ray overhead: archs per Ray trial\n")
        lines.append(f"Random search, {overhead[0]['trials']} trials, seed 0, 2 workers.\n")
        lines.append("| archs per Ray trial | trials/s | wall (s) |")
        lines.append("|---|---|---|")
        for info in overhead:
            lines.append(f"| {info['batch_size']} | {info['trials_per_s'] or 0:.1f} | "
                         f"{info['wall_s']:.0f} |")
        lines.append("")
    return lines


def front_lines(budget, ref, runs) -> list[str]:
    """Hypervolume of each run's feasible trials."""
    acc_ref = ref["acc_min"]
    lines = ["## Pareto front: hypervolume of the feasible trials\n"]
    lines.append(f"Area dominated in (accuracy up, latency down) within accuracy ≥ {acc_ref:.4f} "
                 f"(the worst of the reference's random feasible archs) and latency ≤ {budget} "
                 "ms, by all feasible trials of a run (accuracy fraction × ms; larger is "
                 "better). `random` is uniform random feasible sampling.\n")
    lines.append("| searcher | hypervolume |")
    lines.append("|---|---|")
    for tag, infos in runs.items():
        hv = [hypervolume(i["front_acc"], i["front_lat"], ref=(acc_ref, budget)) for i in infos]
        lines.append(f"| {tag} ({infos[0]['trials']} trials) | {_pm(hv, fmt='{:.5f}')} |")
    lines.append("")
    return lines


def report(args, space, objective_name, table, note, budget, mean_lat, ref, runs, overhead,
           load) -> str:
    scale = 100.0  # accuracy in [0, 1] -> percent; gaps in percentage points (pp)
    lines = setup_lines(args, space, objective_name, table, note, budget, mean_lat, ref, load,
                        scale)
    lines += curve_lines(args, ref, runs, scale)
    lines += speed_lines(args, runs, overhead)
    lines += front_lines(budget, ref, runs)
    lines.append(verdict(runs, ref, scale))
    return "\n".join(lines) + "\n"


def verdict(runs, ref, scale) -> str:
    out = ["## Targets\n"]
    final = {tag: np.mean([ref["best"] - i["best"] for i in infos]) * scale
             for tag, infos in runs.items() if infos[0]["trials"] >= 1000}
    if final:
        tag = min(final, key=final.get)
        ok = final[tag] <= 0.2
        out.append(f"- Best searcher within 0.2 pp of the reference in ≤ 1,000 trials: "
                   f"**{'yes' if ok else 'no'}** ({tag}: {final[tag]:+.2f} pp mean gap; "
                   f"negative = better than the reference).")
    if "random" in runs:
        rnd = runs["random"]
        for tag, infos in runs.items():
            if tag == "random":
                continue
            k = min(len(infos[0]["curve"]), len(rnd[0]["curve"]))
            if not k:
                continue
            wins = [np.mean([i["curve"][j] for i in infos]) > np.mean([r["curve"][j] for r in rnd])
                    for j in range(k)]
            out.append(f"- {tag} beats random at equal trials: {sum(wins)} of {k} checkpoints.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
