"""Accuracy predictors on a trained supernet: sample efficiency, zero-cost baselines, throughput.

1. Collects ``-n`` subnets of ``--run`` (plus largest/smallest) into ``--table``
   with ``predictors.collect.collect_table`` (resumes; skipped when complete).
2. For each of ``--test-splits`` random splits, holds out ``--test-size`` rows, then for
   each training size in ``--sizes`` and each of ``--repeats`` random draws from the rest,
   fits every family (default hyperparameters, no CV) and reports Kendall tau on the
   test set, beside the zero-cost baselines (params and MACs as scores).
3. Batch-prediction throughput (archs/s) of each family fitted on the largest size,
   on fresh archs (cold encoding cache) and on the same archs again (warm).

Writes ``bench/results/predictors_cpu.md``.

Example:
    python bench/bench_predictors.py --run runs/bench_train -n 400 --workers 2
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_result  # noqa: E402

from nas.arch import sample_arch  # noqa: E402
from nas.io import read_json  # noqa: E402
from nas.predictors import PREDICTORS, fit_predictor, read_table  # noqa: E402
from nas.predictors.collect import collect_table  # noqa: E402
from nas.predictors.metrics import kendall_tau, ranking_metrics  # noqa: E402
from nas.predictors.table import read_table_meta, table_space  # noqa: E402

# Extra columns: a family fitted with non-default settings, for comparison.
CX = "gp + log params/MACs"
EXTRA = {"mlp, target acc": ("mlp", {"target": "acc"}),
         CX: ("gp", {"complexity": True})}


def _noise_ceiling(run_dir: str, table, k: int, seed: int, views: int) -> dict:
    """Split-half reliability of the measured val accuracy over ``k`` subnets of ``table``
    (halves of the val images, each scored in ``views`` views as the table was)."""
    import torch

    from nas import training
    from nas.data import shifted_views

    run = training.load_run(run_dir)
    x, y = training.load_val_data(run.config)
    idx = np.random.default_rng(seed).permutation(len(y))
    halves = idx[: len(y) // 2], idx[len(y) // 2:]
    rows = np.random.default_rng(seed + 1).choice(len(table), min(k, len(table)), replace=False)
    acc = np.zeros((2, len(rows)))
    with torch.no_grad():
        for j, i in enumerate(rows):
            for h, part in enumerate(halves):
                acc[h, j] = training.evaluate(run.supernet, table.archs[i],
                                              shifted_views(x[part], views),
                                              y[part].repeat(views))["acc"]
    r = float(np.corrcoef(acc[0], acc[1])[0, 1])
    rel = 2 * r / (1 + r)
    return {"k": len(rows), "half": len(halves[0]), "split_tau": kendall_tau(acc[0], acc[1]),
            "split_r": r, "reliability": rel,
            "tau_ceiling": float(2 / np.pi * np.arcsin(np.sqrt(max(rel, 0.0))))}


@dataclasses.dataclass
class Efficiency:
    """Results of the sample-efficiency stage, keyed by (family, training size)."""

    taus: dict[tuple[str, int], list[float]]
    rmse: dict[tuple[str, int], list[float]]
    fit_s: dict[tuple[str, int], list[float]]
    last_fit: dict  # family -> its last predictor fitted on the largest size
    base: dict[str, float]  # zero-cost baselines' tau, mean over the splits
    sizes: list[int]  # the training sizes that fit in every split's pool
    test_size: int  # held-out subnets per split
    pool_size: int  # subnets the training sets are drawn from


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/bench_train", help="trained run directory")
    ap.add_argument("-n", type=int, default=400, help="subnets to collect (besides extremes)")
    ap.add_argument("--table", default="bench/results/predictors_tiny32_subnets.csv")
    ap.add_argument("--workers", type=int, default=None, help="collection workers (Ray if > 1)")
    ap.add_argument("--skip-collect", action="store_true", help="use --table as it is")
    ap.add_argument("--test-size", type=int, default=100)
    ap.add_argument("--test-splits", type=int, default=3,
                    help="random test/pool splits; tau is averaged over them")
    ap.add_argument("--sizes", default="50,100,200,300")
    ap.add_argument("--repeats", type=int, default=5, help="random training draws per size")
    ap.add_argument("--families", default=",".join(sorted(PREDICTORS)))
    ap.add_argument("--throughput-archs", type=int, default=20000)
    ap.add_argument("--noise-subnets", type=int, default=80,
                    help="subnets re-evaluated on two halves of the val split to estimate the "
                    "label-noise ceiling of tau (0 skips)")
    ap.add_argument("--views", type=int, default=9,
                    help="shifted views per val image when collecting (nas predictor collect "
                    "--views): 355 digits val images alone cap tau near 0.75")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def collect(args) -> tuple[dict, str]:
    """1. Collects the table (unless --skip-collect); returns its metadata and a note on how
    long collection took (from this session or from the metadata)."""
    collect_note = ""
    if not args.skip_collect:
        t0 = time.perf_counter()
        summary = collect_table(args.run, args.n, args.table, seed=args.seed, workers=args.workers,
                                views=args.views)
        if summary["new"]:
            collect_note = (f"collection: {summary['new']} subnets evaluated in "
                            f"{time.perf_counter() - t0:.0f}s wall (Ray start included) with "
                            f"{summary['workers']} worker(s), {summary['eval_s_per_arch']:.2f}s per "
                            f"subnet per worker (val inference + params/MACs count); "
                            f"{summary['skipped']} were already in the table")
            print(collect_note)
    meta = read_table_meta(args.table) or {}
    last = meta.get("last_session") or {}
    if not collect_note and last:
        collect_note = (f"collection (from the table metadata; `nas predictor collect --workers "
                        f"{last.get('workers')}`): {last.get('evaluated')} subnets evaluated in "
                        f"{last.get('wall_s')}s wall after Ray start, {last.get('eval_s_per_arch')}s "
                        f"per subnet per worker (val inference + params/MACs count)")
    return meta, collect_note


def sample_efficiency(args, table, space, families: list[str], sizes: list[int]) -> Efficiency:
    """2. Tau on held-out subnets of every family per training size, over random splits and
    draws, beside the zero-cost baselines."""
    taus: dict[tuple[str, int], list[float]] = {}
    rmse: dict[tuple[str, int], list[float]] = {}
    fit_s: dict[tuple[str, int], list[float]] = {}
    last_fit = {}
    bases: list[dict[str, float]] = []
    for split in range(args.test_splits):
        perm = np.random.default_rng(args.seed + split).permutation(len(table))
        test_idx, pool = perm[:args.test_size], perm[args.test_size:]
        sizes = [s for s in sizes if s <= len(pool)]
        test = table.subset(test_idx)
        bases.append({"params": kendall_tau(test.acc, test.params),
                      "MACs": kendall_tau(test.acc, test.macs)})
        print(f"split {split}: zero-cost baselines params tau {bases[-1]['params']:.3f}, "
              f"MACs tau {bases[-1]['MACs']:.3f}")
        for size in sizes:
            for r in range(args.repeats):
                draw = np.random.default_rng(args.seed + 1000 * size + 100 * split + r).choice(
                    pool, size, replace=False)
                train = table.subset(draw)
                for fam in families + list(EXTRA):
                    t0 = time.perf_counter()
                    model, kw = EXTRA.get(fam, (fam, {}))
                    pred = fit_predictor(train, model=model, space=space, seed=r, folds=0, **kw)
                    fit_s.setdefault((fam, size), []).append(time.perf_counter() - t0)
                    if pred.complexity:  # params/MACs of the test archs are in the table: no recount
                        pred.encoder.seed_complexity(test.archs, test.params, test.macs)
                    m = ranking_metrics(test.acc, pred.predict(test.archs))
                    taus.setdefault((fam, size), []).append(m["kendall_tau"])
                    rmse.setdefault((fam, size), []).append(m["rmse"])
                    if fam not in EXTRA:
                        last_fit[fam] = pred
                    print(f"split {split} size {size:4d} draw {r} {fam:9s} tau "
                          f"{m['kendall_tau']:.3f} ({fit_s[(fam, size)][-1]:.1f}s)", flush=True)
    base = {k: float(np.mean([b[k] for b in bases])) for k in ("params", "MACs")}
    return Efficiency(taus=taus, rmse=rmse, fit_s=fit_s, last_fit=last_fit, base=base,
                      sizes=sizes, test_size=len(test), pool_size=len(pool))


def label_noise(args, meta: dict, table, views: int) -> dict | None:
    """3. The label-noise ceiling of tau (None with --noise-subnets 0)."""
    noise = _noise_ceiling(meta.get("run", {}).get("run_dir") or args.run, table,
                           args.noise_subnets, args.seed, views) if args.noise_subnets else None
    if noise:
        print("label noise: split-half tau {split_tau:.3f}, r {split_r:.3f}, reliability "
              "{reliability:.3f}, tau ceiling {tau_ceiling:.3f}".format(**noise))
    return noise


def family_throughput(pred, space, archs: list) -> tuple[float, float, float, float]:
    """Best of 3 (the machine is shared, contention only slows things down) archs/s of one
    fitted predictor: cold cache, cold cache per CPU-s, warm cache, one arch per call."""
    cold, cold_cpu, warm, single = [], [], [], []
    for _ in range(3):
        pred.encoder = type(pred.encoder)(space)  # cold cache
        t0, c0 = time.perf_counter(), time.process_time()
        pred.predict_with_std(archs)
        cold.append(len(archs) / (time.perf_counter() - t0))
        cold_cpu.append(len(archs) / max(time.process_time() - c0, 1e-9))
        t0 = time.perf_counter()
        pred.predict_with_std(archs)
        warm.append(len(archs) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for a in archs[:300]:
            pred.predict([a])
        single.append(300 / (time.perf_counter() - t0))
    return max(cold), max(cold_cpu), max(warm), max(single)


def throughput(args, space, families: list[str], last_fit: dict) -> tuple[int, dict, float]:
    """4. Batch-prediction throughput of each family on fresh archs; returns the number of
    archs, the rates per family and the load average when started."""
    gen = np.random.default_rng(args.seed + 7)
    archs = [sample_arch(space, gen) for _ in range(args.throughput_archs)]
    speed = {}
    load_tp = os.getloadavg()[0]
    for fam in families:
        speed[fam] = family_throughput(last_fit[fam], space, archs)
        cold, cold_cpu, warm, single = speed[fam]
        print(f"throughput {fam:9s} cold {cold:,.0f}/s ({cold_cpu:,.0f} per CPU-s) "
              f"warm {warm:,.0f}/s one-by-one {single:,.0f}/s")
    return len(archs), speed, load_tp


def run_description(args, meta: dict) -> str:
    """How the supernet of the table was trained (from its run's config)."""
    run_cfg = read_json(Path(meta.get("run", {}).get("run_dir") or args.run) / "config.json",
                        what="run config")
    run_cfg = {"sandwich_rule": "classic", "block_sharing": "all", **run_cfg}
    return ("trained by `nas train` into `{out}` ({epochs} epochs, batch {batch_size}, lr {lr}, "
            "{num_random} random subnet(s) per step, sandwich rule {sandwich_rule}, block "
            "sharing {block_sharing}, seed {seed})").format(**run_cfg)


def setup_lines(args, meta: dict, table, space, views: int, collect_note: str,
                eff: Efficiency, load_start: float, trained: str) -> list[str]:
    """The report's opening list: machine load, supernet, table, collection, test sets."""
    return [
        f"- load average (1 min) at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f} "
        f"(other jobs share the machine; wall-clock figures are inflated accordingly)",
        f"- supernet: {trained}",
        f"- run: `{meta.get('run', {}).get('run_dir', args.run)}` (epoch "
        f"{meta.get('run', {}).get('epoch')}), space {space.name} ({space.fingerprint}), "
        f"data {meta.get('run', {}).get('data')}",
        f"- table: `{args.table}`, {len(table)} subnets (largest, smallest, "
        f"{len(table) - 2} uniform), val acc {table.acc.min():.3f}..{table.acc.max():.3f} "
        f"(mean {table.acc.mean():.3f}); each subnet scored on the val split in {views} "
        f"view(s) (the images and 1-pixel shifts, `nas predictor collect --views {views}`)",
        f"- {collect_note}" if collect_note else "- collection: not timed in this session",
        f"- test sets: {args.test_splits} random splits, each holding out {eff.test_size} subnets; "
        f"training sets drawn from the other {eff.pool_size} of the split, {args.repeats} draws per "
        f"size (mean ± std over all splits and draws; a single fixed test set of 100 moved tau "
        f"by up to ±0.08 between splits)",
    ]


def tau_lines(families: list[str], eff: Efficiency, table) -> list[str]:
    """The Kendall tau table (mean ± std per family and size) and the RMSE sentence."""
    columns = families + list(EXTRA)

    def cell(fam: str, size: int) -> str:
        v = np.array(eff.taus[(fam, size)])
        return f"{v.mean():.3f} ± {v.std():.3f}"

    lines = [
        "",
        "## Kendall tau on the held-out subnets",
        "",
        "| training subnets | " + " | ".join(columns) + " | params (zero-cost) | MACs (zero-cost) |",
        "|---|" + "---|" * (len(families) + len(EXTRA) + 2),
    ]
    for size in eff.sizes:
        lines.append(f"| {size} | " + " | ".join(cell(f, size) for f in columns)
                     + f" | {eff.base['params']:.3f} | {eff.base['MACs']:.3f} |")
    lines += [
        "",
        f"RMSE of the predicted accuracy on the held-out subnets at {eff.sizes[-1]} training "
        f"subnets (accuracy points; the table's accuracies have a std of "
        f"{100 * float(np.std(table.acc)):.2f} points): "
        + ", ".join(f"{f} {100 * np.mean(eff.rmse[(f, eff.sizes[-1])]):.2f}" for f in columns)
        + ".",
    ]
    return lines


def noise_lines(noise: dict | None, views: int) -> list[str]:
    """The label-noise section (empty without a noise estimate)."""
    if not noise:
        return []
    return [
        "",
        "## Label noise: how high can tau go on this validation split?",
        "",
        f"{noise['k']} random subnets of the table re-evaluated on two random halves of the "
        f"val split ({noise['half']} images each, {views} view(s) per image): split-half "
        f"Kendall tau "
        f"{noise['split_tau']:.3f}, Pearson r {noise['split_r']:.3f}. Spearman-Brown "
        f"reliability of the full-split accuracy: {noise['reliability']:.3f}, so even a "
        f"perfect predictor of the expected accuracy would correlate at most "
        f"r = {np.sqrt(noise['reliability']):.3f} with the measured one, i.e. Kendall tau "
        f"about {noise['tau_ceiling']:.3f} (Gaussian approximation, 2/pi asin r).",
    ]


def throughput_lines(families: list[str], eff: Efficiency, n_archs: int, speed: dict,
                     load_tp: float) -> list[str]:
    """What the columns mean, fit times, and the throughput table."""
    lines = [
        "",
        "Every family regresses on the default target, `blend` (`nas predictor fit --target "
        "auto`): the mean of the rank-Gaussian scores of the measured accuracy and of the "
        "negated loss, mapped back to accuracy by a monotone quantile map "
        "(`predictors/target.py`). Tau is always against the measured held-out accuracy. "
        "`mlp, target acc`: the mlp family regressing on the raw accuracy instead (the "
        f"previous default). `{CX}`: the gp family with log(params) and log(MACs) appended "
        "to the encoding (`complexity=True`; slow to predict on new archs, so not a default).",
        "",
        "Fit time (s, mean over draws) at the largest size: "
        + ", ".join(f"{f} {np.mean(eff.fit_s[(f, eff.sizes[-1])]):.1f}"
                    for f in families + list(EXTRA))
        + ".",
        "",
        f"## Batch prediction throughput ({n_archs:,} fresh archs, fitted on {eff.sizes[-1]})",
        "",
        f"`predict_with_std` on the whole list, best of 3 (load average {load_tp:.1f} when "
        f"started); cold: a new encoding cache, warm: the same archs again. Wall-clock rates "
        f"suffer from the other jobs on this shared 2-core machine; archs per CPU-second "
        f"(process time, all threads) leaves them out, but is optimistic where the VM steals "
        f"CPU time. Figures vary by about 2x between runs at this load.",
        "",
        "| family | cold cache (archs/s) | cold cache (archs per CPU-s) | warm cache (archs/s) "
        "| one arch per call (archs/s) |",
        "|---|---|---|---|---|",
    ]
    for fam in families:
        c, cc, w, one = speed[fam]
        lines.append(f"| {fam} | {c:,.0f} | {cc:,.0f} | {w:,.0f} | {one:,.0f} |")
    return lines


def target_lines(families: list[str], eff: Efficiency, speed: dict, noise: dict | None,
                 load_tp: float) -> list[str]:
    """Whether the accuracy and throughput targets are met."""
    size = eff.sizes[-1]
    best = max(families, key=lambda f: np.mean(eff.taus[(f, size)]))
    best_tau = float(np.mean(eff.taus[(best, size)]))
    base = eff.base
    slowest = min(speed[f][0] for f in families)
    slowest_cpu = min(speed[f][1] for f in families)
    return [
        "",
        "## Targets",
        "",
        f"- Kendall tau >= 0.75 with <= 300 training subnets: "
        f"{'met' if best_tau >= 0.75 else 'not met'} (best {best} {best_tau:.3f} at "
        f"{size})" + (f"; the label-noise ceiling of this val split is about "
                      f"{noise['tau_ceiling']:.2f}" if noise else "") + ".",
        f"- clearly above both zero-cost baselines: "
        f"{'met' if best_tau > max(base.values()) + 0.2 else 'not met'} ({best_tau:.3f} vs "
        f"params {base['params']:.3f}, MACs {base['MACs']:.3f}).",
        f"- batch throughput >= 10,000 archs/s: "
        f"{'met' if slowest >= 1e4 else 'met per CPU-second' if slowest_cpu >= 1e4 else 'not met'}"
        f" (slowest family, cold cache: {slowest:,.0f} archs/s wall-clock at load average "
        f"{load_tp:.1f}, {slowest_cpu:,.0f} archs per CPU-second).",
    ]


def write_report(args, *, meta: dict, collect_note: str, table, space, views: int,
                 families: list[str], eff: Efficiency, noise: dict | None, n_archs: int,
                 speed: dict, load_tp: float, load_start: float) -> None:
    """Writes ``bench/results/predictors_cpu.md``."""
    trained = run_description(args, meta)
    lines = setup_lines(args, meta, table, space, views, collect_note, eff, load_start, trained)
    lines += tau_lines(families, eff, table)
    lines += noise_lines(noise, views)
    lines += throughput_lines(families, eff, n_archs, speed, load_tp)
    lines += target_lines(families, eff, speed, noise, load_tp)
    path = write_result("predictors_cpu.md", header("Accuracy predictors on CPU")
                        + "\n".join(lines) + "\n")
    print(f"wrote {path}")


def main() -> int:
    args = parse_args()
    load_start = os.getloadavg()[0]
    families = [f for f in args.families.split(",") if f]
    sizes = [int(s) for s in args.sizes.split(",")]
    meta, collect_note = collect(args)
    space = table_space(args.table)
    table = read_table(args.table, space=space)
    print(f"table: {len(table)} rows, acc {table.acc.min():.3f}..{table.acc.max():.3f}")
    eff = sample_efficiency(args, table, space, families, sizes)
    views = int(meta.get("views", 1))
    noise = label_noise(args, meta, table, views)
    n_archs, speed, load_tp = throughput(args, space, families, eff.last_fit)
    write_report(args, meta=meta, collect_note=collect_note, table=table, space=space,
                 views=views, families=families, eff=eff, noise=noise, n_archs=n_archs,
                 speed=speed, load_tp=load_tp, load_start=load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
