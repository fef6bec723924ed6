"""Does a table's calibration need the space's smallest and largest subnets?

For each given table (``nas profile`` or a ``nas run``'s ``latency/table.json``), times
now, side by side in one list (4 rounds of 0.1 s, fastest of two copies): the 30 random
calibration subnets of the table's seed (a table built with the default ``extremes``
holds 28 of them), the space's smallest and largest subnets, and 40 held-out random
subnets (the 30 the table predicts fastest of 300, then 10 spread over the rest). Then
refits the table's correction (linear terms, as `nas profile` does) on those timings with

- the table's first 30 random calibration subnets (the ``random`` strategy),
- the two ends and the first 28 random ones (``extremes``, the default now),

and judges both on the held-out subnets: all of them, and the 30 fastest. Component
entries come from the table; everything fitted or judged is timed in this run.

    python bench/bench_calibration_ends.py --table runs/r1/latency/table.json \\
        --table bench/results/latency_tiny32_seed3_mrt25_cpu.json --out calibration_ends_cpu.md
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas.latency.calibrate as cal  # noqa: E402
from bench.common import header, write_result  # noqa: E402
from nas.arch import extreme_arch, sample_arch  # noqa: E402
from nas.latency import LatencyTable, Measurer  # noqa: E402
from nas.latency.device import DeviceSpec  # noqa: E402
from nas.latency.profile import calibration_archs  # noqa: E402


def held_out(table: LatencyTable, exclude: set, seed: int) -> list:
    rng = np.random.default_rng(seed)
    pool: dict = {}
    while len(pool) < 300:
        a = sample_arch(table.space, rng)
        if a not in exclude:
            pool.setdefault(a)
    archs = list(pool)
    order = np.argsort(table.predict(archs))
    return [archs[i] for i in order[:30]] + [archs[i] for i in order[30::27]][:10]


def study(path: str, seed: int) -> tuple[list[str], str]:
    table = LatencyTable.load(path, force=True)
    space, kw = table.space, table.measure_kwargs()
    ends = [extreme_arch(space, "min"), extreme_arch(space, "max")]
    rand = [a for a in calibration_archs(space, 40, table.calibration.get("seed") or 0,
                                         strategy="random") if a not in ends][:30]
    held = held_out(table, set(rand) | set(ends), seed)
    archs = list(dict.fromkeys(rand + ends + held))
    spec = DeviceSpec.parse("cpu", dtype=kw["dtype"], batch_size=kw["batch_size"],
                            threads=kw["threads"])
    m = Measurer(spec.to_dict(), {"min_run_time": 0.1, "warmup": 10, "rounds": 4},
                 num_classes=space.num_classes, in_chans=space.in_chans)
    dicts = [a.to_dict() for a in archs]
    t0 = time.perf_counter()
    m.measure_archs(dicts[:20])  # warm the CPU up, untimed
    probe = min(m.probe() for _ in range(5))
    stats = m.measure_archs(dicts + dicts, rounds=4)
    seconds = time.perf_counter() - t0
    y1 = np.array([s[table.stat] for s in stats[:len(dicts)]])
    y2 = np.array([s[table.stat] for s in stats[len(dicts):]])
    timed = dict(zip(archs, np.minimum(y1, y2), strict=True))
    noise = 100 * float(np.mean(np.abs(y2 / y1 - 1)))
    feats = tuple(table.calibration["features"])
    H, truth = table.features(held), np.array([timed[a] for a in held])
    lines = [f"**{path}** (batch {kw['batch_size']}, {len(table)} entries, "
             f"{(table.scope.get('retimed') or {}).get('still_slow', 0)} never timed at full "
             f"speed; its calibration LOO MAPE {table.calibration['fit'].get('loo_mape', 0):.2f}%)."
             f" {len(archs)} subnets x 2 copies timed in {seconds:.0f} s; copy 2 vs copy 1 "
             f"{noise:.2f}%; reference kernel {probe:.4f} ms now, "
             f"{table.scope.get('probe_ms') or float('nan'):.4f} ms in the profile", "",
             "| calibration (30 subnets) | held-out MAPE (40) | 30 fastest: MAPE | 30 fastest: "
             "mean signed error | smallest subnet | largest subnet |",
             "|---|---:|---:|---:|---:|---:|"]
    summary = []
    for name, fit_on in (("random", rand), ("extremes: 2 ends + 28 random", ends + rand[:28])):
        coef = cal.fit(table.features(fit_on), np.array([timed[a] for a in fit_on]), feats)
        err = 100 * (cal.apply(H, feats, coef) / truth - 1)
        end = 100 * (cal.apply(table.features(ends), feats, coef)
                     / np.array([timed[a] for a in ends]) - 1)
        lines.append(f"| {name} | {np.abs(err).mean():.2f}% | {np.abs(err[:30]).mean():.2f}% | "
                     f"{err[:30].mean():+.2f}% | {end[0]:+.1f}% | {end[1]:+.1f}% |")
        summary.append(f"{np.abs(err).mean():.2f}% / {np.abs(err[:30]).mean():.2f}%")
    return lines + [""], f"| {path} | {' | '.join(summary)} | {noise:.2f}% |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="append", required=True, help="a latency table (repeat)")
    ap.add_argument("--seed", type=int, default=777, help="seed of the held-out subnets")
    ap.add_argument("--out", default="calibration_ends_cpu.md")
    args = ap.parse_args()
    body, rows = [], []
    for path in args.table:
        lines, row = study(path, args.seed)
        print("\n".join(lines), flush=True)
        body += lines
        rows.append(row)
    text = header("Calibration with and without the space's ends") + "\n".join([
        "Held-out MAPE, all 40 / the 30 the table predicts fastest, fitted on each set "
        "(all timed in the same run):", "",
        "| table | random | extremes | noise floor |", "|---|---:|---:|---:|", *rows, "",
        *body])
    write_result(args.out, text)


if __name__ == "__main__":
    main()
