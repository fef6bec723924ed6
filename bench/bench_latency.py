"""How well latency tables predict end-to-end latency on this CPU.

1. Builds (or resumes) the tiny32 CPU table (batch 1, fp32, fixed threads) with a
   calibration on random subnets, and records its cost (wall time, entries).
2. Times >= 100 held-out random tiny32 subnets (none used for calibration) end to end
   as standalone models, twice; the second pass against the first is the noise floor.
3. For imagenet224 (too large to enumerate) profiles only the signatures of the four
   reference archs plus calibration subnets under a MAC budget, and compares the
   references' predicted and measured latency.

Prints one table and writes ``bench/results/latency_cpu.md`` and the tables' JSON.
Targets on this CPU: >= 95% within +-10%, MAPE <= 4%, Kendall tau >= 0.9.

    python bench/bench_latency.py --threads 1
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, header, write_result  # noqa: E402

from nas.arch import canonicalize, sample_arch  # noqa: E402
from nas.complexity import count_macs  # noqa: E402
from nas.latency import LatencyTable, Measurer, profile_space  # noqa: E402
from nas.latency import calibrate as calib  # noqa: E402
from nas.latency.device import DeviceSpec, describe_device  # noqa: E402
from nas.search.report import reference_archs  # noqa: E402
from nas.space import load_space  # noqa: E402

REF = Path(__file__).resolve().parent.parent / "search_spaces" / "reference"


def metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    signed = (pred - true) / true
    err = np.abs(signed)
    return {"mape": 100 * err.mean(), "w5": 100 * (err <= 0.05).mean(),
            "w10": 100 * (err <= 0.10).mean(), "max": 100 * err.max(),
            "bias": 100 * signed.mean(), "tau": float(kendalltau(pred, true).statistic)}


def row(name: str, m: dict[str, float]) -> str:
    return (f"| {name} | {m['mape']:.2f}% | {m['w5']:.1f}% | {m['w10']:.1f}% | {m['max']:.1f}% "
            f"| {m['bias']:+.2f}% | {m['tau']:.3f} |")


_EARLIER = "\n---\n\n## Earlier runs (most recent first)\n\n"


def with_history(text: str, old: str) -> str:
    """This run's report, then the earlier runs of the file: a noisy machine needs them all."""
    if not old.strip():
        return text
    last, _, earlier = old.partition(_EARLIER)
    last = last.replace("# ", "### Run: ", 1).rstrip() + "\n"
    return text + _EARLIER + last + ("\n" + earlier if earlier else "")


def heldout_archs(space, n: int, exclude: set, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out: dict = {}
    while len(out) < n:
        a = sample_arch(space, rng)
        if a not in exclude:
            out.setdefault(a)
    return list(out)


def time_archs(measurer: Measurer, archs: list, desc: str, rounds: int) -> dict[str, np.ndarray]:
    """End-to-end timings, the whole list once per round, each arch's fastest round."""
    t0 = time.perf_counter()
    stats = measurer.measure_archs([a.to_dict() for a in archs], rounds=rounds)
    print(f"  {desc}: {len(archs)} archs x {rounds} rounds ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    return {k: np.array([s[k] for s in stats]) for k in ("median", "min")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-run-time", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per item, for the tables and the ground truth alike")
    ap.add_argument("--calibrate", type=int, default=30)
    ap.add_argument("--heldout", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imagenet-calibrate", type=int, default=10,
                    help="imagenet224 calibration subnets (under --imagenet-max-gmacs)")
    ap.add_argument("--imagenet-max-gmacs", type=float, default=2.0)
    ap.add_argument("--skip-imagenet", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()
    spec = DeviceSpec.parse("cpu", dtype="fp32", batch_size=1, threads=args.threads)
    timing = {"min_run_time": args.min_run_time, "warmup": 10, "rounds": args.rounds}

    # 1. tiny32 table -----------------------------------------------------------------
    space = load_space("tiny32")
    out = RESULTS / "latency_tiny32_cpu.json"
    t0 = time.perf_counter()
    table = profile_space(space, out=out, threads=args.threads, calibrate=args.calibrate,
                          seed=args.seed, min_run_time=args.min_run_time, rounds=args.rounds,
                          progress=True)
    print(f"tiny32 table: {len(table)} entries, this run {time.perf_counter() - t0:.0f} s, "
          f"total {table.scope['seconds']:.0f} s")
    other = "median" if table.stat == "min" else "min"
    tables = {table.stat: table, other: table.restat(other)}
    # The same table with its calibration subnets timed again now (a shared machine drifts).
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(out, Path(tmp) / "t.json")
        recal = profile_space(space, out=Path(tmp) / "t.json", threads=args.threads,
                              calibrate=args.calibrate, seed=args.seed, rounds=args.rounds,
                              min_run_time=args.min_run_time, recalibrate=True, progress=True)
    recals = {table.stat: recal, other: recal.restat(other)}
    # The same samples fitted without the token-reduction term (compared side by side).
    alt_features = tuple(f for f in calib.DEFAULT_FEATURES if f != "reduce_ms")
    alts = {}
    for stat, t in tables.items():
        alts[stat] = LatencyTable(copy.deepcopy(t.to_dict()), source=str(out))
        alts[stat].calibrate(alt_features)

    # 2. held-out subnets, timed twice -------------------------------------------------
    held = heldout_archs(space, args.heldout, set(table.calibration_archs()), args.seed + 1000)
    measurer = Measurer(spec.to_dict(), timing, num_classes=space.num_classes,
                        in_chans=space.in_chans)
    first = time_archs(measurer, held, "ground truth pass 1", args.rounds)
    second = time_archs(measurer, held, "ground truth pass 2", args.rounds)
    lines = ["| tiny32, held-out subnets | MAPE | within 5% | within 10% | max error | mean "
             "signed error | Kendall tau |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows = [("arch", "stat", "predicted_ms", "raw_sum_ms", "pass1_ms", "pass2_ms")]
    for stat, t in tables.items():
        pred = t.predict(held)
        raw = np.array([t.raw_sum(a) for a in held])
        rows += [(a.to_json(), stat, f"{p:.5f}", f"{r:.5f}", f"{x:.5f}", f"{y:.5f}") for a, p, r, x, y
                 in zip(held, pred, raw, first[stat], second[stat], strict=True)]
        lines.append(row(f"**calibrated table ({stat})**", metrics(pred, first[stat])))
        lines.append(row(f"calibrated without the reduce_ms term ({stat})",
                         metrics(alts[stat].predict(held), first[stat])))
        lines.append(row(f"same table re-calibrated before the held-out timing ({stat})",
                         metrics(recals[stat].predict(held), first[stat])))
        lines.append(row(f"raw sum of components ({stat})", metrics(raw, first[stat])))
        lines.append(row(f"noise floor: pass 2 vs pass 1 ({stat})",
                         metrics(second[stat], first[stat])))
        fit = t.calibration["fit"]
        lines.append(f"| calibration fit ({stat}, {fit['n']} subnets, LOO) | "
                     f"{fit.get('loo_mape', float('nan')):.2f}% | | | "
                     f"{fit.get('loo_max_pct', float('nan')):.1f}% | | |")

    # predictor speed
    rng = np.random.default_rng(7)
    many = [sample_arch(space, rng) for _ in range(10000)]
    fresh = LatencyTable.load(out, space=space)
    t1 = time.perf_counter()
    fresh.predict(many)
    cold = time.perf_counter() - t1
    t1 = time.perf_counter()
    fresh.predict(many)
    warm = time.perf_counter() - t1

    # 3. imagenet224 references ----------------------------------------------------------
    ref_lines: list[str] = []
    if not args.skip_imagenet:
        inet = load_space("imagenet224")
        names, refs = [], []
        for name, arch in reference_archs(inet, REF):
            names.append(name)
            refs.append(canonicalize(inet, arch))
        rng = np.random.default_rng(args.seed)
        cal: list = []
        while len(cal) < args.imagenet_calibrate:
            a = sample_arch(inet, rng)
            if a not in cal and a not in refs and \
                    count_macs(a, num_classes=1000) <= args.imagenet_max_gmacs * 1e9:
                cal.append(a)
        iout = RESULTS / "latency_imagenet224_refs_cpu.json"
        t0 = time.perf_counter()
        itable = profile_space(inet, out=iout, threads=args.threads, archs=refs, calibrate_on=cal,
                               min_run_time=args.min_run_time, rounds=args.rounds,
                               progress=True)
        print(f"imagenet224 table: {len(itable)} entries, {time.perf_counter() - t0:.0f} s")
        im = Measurer(spec.to_dict(), timing, num_classes=1000, in_chans=3)
        a1 = time_archs(im, refs, "refs pass 1", args.rounds)
        a2 = time_archs(im, refs, "refs pass 2", args.rounds)
        ifit = itable.calibration["fit"]
        ref_lines = [
            f"imagenet224 table restricted to the 4 references + {len(cal)} calibration subnets "
            f"(random, <= {args.imagenet_max_gmacs} GMACs): {len(itable)} entries, built in "
            f"{itable.scope['seconds']:.0f} s; calibration LOO MAPE "
            f"{ifit.get('loo_mape', float('nan')):.1f}%.", "",
            "| reference (held out) | measured (ms) | again (ms) | predicted (ms) | error | "
            "raw sum (ms) |", "|---|---:|---:|---:|---:|---:|"]
        pred = itable.predict(refs)
        st = itable.stat
        for n, a, m1, m2, p in zip(names, refs, a1[st], a2[st], pred, strict=True):
            ref_lines.append(f"| {n} | {m1:.2f} | {m2:.2f} | {p:.2f} | {100 * (p - m1) / m1:+.1f}% "
                             f"| {itable.raw_sum(a):.2f} |")
        ref_lines.append("")

    load1 = os.getloadavg()
    fit = table.calibration
    coef = ", ".join(f"{f} {c:.4g}" for f, c in zip(fit["features"], fit["coef"], strict=True))
    text = header("Latency tables: predicted vs measured end-to-end latency (CPU)") + "\n".join([
        f"- setting: {describe_device(table.device)}",
        f"- timing: {table.timing['min_run_time']} s of ~1 ms timed blocks per measurement on the "
        f"{table.timing['clock']} clock, "
        f"{table.timing['warmup']} warm-up calls; statistic over blocks: {table.stat} (the "
        f"table's), and {other} for comparison (both are recorded); {args.rounds} rounds per "
        "item (every table entry, calibration subnet and ground-truth subnet is timed once per "
        "round over the whole list, keeping its fastest round)",
        f"- machine load average (1 min) at start {load0[0]:.1f}, at end {load1[0]:.1f} on "
        f"{os.cpu_count()} cores: other jobs shared the CPU, see the noise floor rows",
        f"- tiny32 table: {len(table)} entries ({table.scope['signatures']} signatures, all "
        f"enumerated), built in {table.scope['seconds']:.0f} s (target <= 600 s), "
        f"{out.stat().st_size / 1e3:.0f} kB: `{out.relative_to(RESULTS.parent.parent)}`",
        f"- calibration ({table.stat}): {fit['fit']['n']} random subnets, latency = {coef}",
        f"- held-out: {len(held)} random tiny32 subnets not used for calibration, each timed "
        f"end to end in two independent passes of {args.rounds} rounds (pass 1 = ground truth)",
        f"- predictor speed: {len(many) / cold:,.0f} archs/s cold cache, "
        f"{len(many) / warm:,.0f} archs/s warm",
        "", *lines, "", *ref_lines,
    ]) + "\n"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    write_result("latency_tiny32_heldout.csv", buf.getvalue())
    print(text)
    old = RESULTS / "latency_cpu.md"
    path = write_result("latency_cpu.md", with_history(text, old.read_text() if old.exists() else ""))
    print(f"written to {path} (earlier runs kept below; per-arch figures of this run: "
          f"latency_tiny32_heldout.csv)")


if __name__ == "__main__":
    main()
