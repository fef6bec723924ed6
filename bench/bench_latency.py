"""How well latency tables predict end-to-end latency on this CPU.

1. For each batch size (default 1, 8 and 64) builds (or resumes; ``--fresh`` rebuilds)
   the tiny32 CPU table (fp32, fixed threads) with a calibration on the space's smallest
   and largest subnets and random ones (or other subnets, ``--calibration``), and records
   its cost (wall time, entries).
2. Times >= 100 held-out random tiny32 subnets (none used for calibration) end to end
   as standalone models, each built twice and both copies timed in one list (back to
   back in the first round, in shuffled order after); copy 2 against copy 1 is the noise
   floor of the same run.
3. Refits the correction on the first k of the calibration set and of every other
   strategy's set (all timed again side by side): how many subnets, and which, the table
   needs, judged on all held-out subnets and on their fastest fifth.
4. For imagenet224 (too large to enumerate) profiles only the signatures of the four
   reference archs plus calibration subnets under a MAC budget, and compares the
   references' predicted and measured latency.

Prints one table and writes ``bench/results/latency_cpu.md`` and the tables' JSON.
Targets on this CPU: >= 95% within +-10%, MAPE <= 4%, Kendall tau >= 0.9.

    python bench/bench_latency.py --threads 1 --fresh   # batch 1, 8, 64
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import os
import shutil
import sys
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
from nas.latency.measure import ROUNDS_PER_RANK  # noqa: E402
from nas.latency.profile import CALIBRATION_STRATEGIES, calibration_archs, retime_outliers  # noqa: E402
from nas.latency.signatures import space_signatures  # noqa: E402
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


def time_archs(measurer: Measurer, archs: list, desc: str, rounds: int
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two independent end-to-end timings of every arch, side by side.

    Each arch is built twice (two model instances) and the copies are timed in one list,
    ``rounds`` times over (back to back in the first round, every later round in its own
    order); each copy keeps its k-th fastest round (``round_statistic``). The gap between
    the copies is the repeatability of one measurement within this session; the drift
    between the table's build and this session is in the table's error, not here.
    """
    t0 = time.perf_counter()
    dicts = [d for a in archs for d in (a.to_dict(), a.to_dict())]
    measurer.measure_archs(dicts[: min(len(dicts), 20)])  # warm the CPU up, untimed
    stats = measurer.measure_archs(dicts, rounds=rounds)
    print(f"  {desc}: {len(archs)} archs x 2 copies x {rounds} rounds "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    keys = {"median": "median", "min": "min", "fastest": "rounds_min"}
    first = {k: np.array([np.min(s[v]) if k == "fastest" else s[v] for s in stats[0::2]])
             for k, v in keys.items()}
    second = {k: np.array([np.min(s[v]) if k == "fastest" else s[v] for s in stats[1::2]])
              for k, v in keys.items()}
    return first, second


def table_path(batch: int, tag: str = "") -> Path:
    """``latency_tiny32[_bB][_TAG]_cpu.json`` (``--tag``; by default ``seedS`` for seed S > 0)."""
    return RESULTS / (f"latency_tiny32{'' if batch == 1 else f'_b{batch}'}"
                      f"{f'_{tag}' if tag else ''}_cpu.json")


def evaluate_batch(args, space, batch: int, rows: list) -> tuple[list[str], str]:
    """Build the batch's table, time held-out subnets twice; markdown rows and a summary."""
    out = table_path(batch, args.tag)
    if args.fresh and out.exists():
        out.unlink()  # this bench's own table file: rebuilt from scratch for the build time
    mrt = args.min_run_time  # as `nas profile` times its entries, at every batch size
    t0 = time.perf_counter()
    # built without the outlier passes first, kept aside, then given them: the table
    # before and after, judged side by side on one ground truth
    table = profile_space(space, out=out, batch_size=batch, threads=args.threads,
                          calibrate=args.calibrate, seed=args.seed, min_run_time=mrt,
                          rounds=args.rounds, calibration=args.calibration, progress=True,
                          outlier_passes=0)
    no_outliers = LatencyTable(copy.deepcopy(table.to_dict()), source=str(out))
    t1 = time.perf_counter()
    spec = DeviceSpec.parse("cpu", dtype="fp32", batch_size=batch, threads=args.threads)
    retime_outliers(Measurer(spec.to_dict(), {"min_run_time": mrt, "warmup": 10,
                                              "rounds": args.rounds},
                             num_classes=space.num_classes, in_chans=space.in_chans),
                    table, space_signatures(space), out=out, seed=args.seed, progress=True)
    table.calibrate(table.calibration["features"])
    table.set_scope(seconds=table.scope["seconds"] + time.perf_counter() - t1)
    table.save(out)
    print(f"batch {batch}: {len(table)} entries, this run {time.perf_counter() - t0:.0f} s, "
          f"total {table.scope['seconds']:.0f} s", flush=True)
    rerun, rerun_note = None, ""
    if args.rerun and table.slow_keys():  # the same command again, on a copy of the table
        flagged = len(table.slow_keys())
        again = out.with_name(out.stem + "_rerun.json")
        shutil.copyfile(out, again)
        t0 = time.perf_counter()
        rerun = profile_space(space, out=again, batch_size=batch, threads=args.threads,
                              calibrate=args.calibrate, seed=args.seed, min_run_time=mrt,
                              rounds=args.rounds, calibration=args.calibration, progress=True)
        rerun_note = (f"the same command run again on the table: {flagged} entries flagged as "
                      f"never timed at full speed, timed again in {time.perf_counter() - t0:.0f} "
                      f"s, {len(rerun.slow_keys())} still flagged")
        print(f"batch {batch}: {rerun_note}", flush=True)
    other = "median" if table.stat == "min" else "min"
    tables = {table.stat: table, other: table.restat(other)}
    alt_features = tuple(f for f in calib.DEFAULT_FEATURES if f != "reduce_ms")
    alts, linear = {}, {}
    for stat, t in tables.items():  # the same samples fitted without the token-reduction term
        alts[stat] = LatencyTable(copy.deepcopy(t.to_dict()), source=str(out))
        alts[stat].calibrate(alt_features)
        linear[stat] = LatencyTable(copy.deepcopy(t.to_dict()), source=str(out))
        linear[stat].calibrate(t.calibration["features"], residual=False)
    held = heldout_archs(space, args.heldout, set(table.calibration_archs()), args.seed + 1000)
    truth_mrt = args.truth_min_run_time * max(1.0, batch ** 0.5 / 4)
    timing = {"min_run_time": truth_mrt, "warmup": 10, "rounds": args.rounds}
    measurer = Measurer(spec.to_dict(), timing, num_classes=space.num_classes,
                        in_chans=space.in_chans)
    probes = [measurer.probe() for _ in range(5)]
    first, second = time_archs(measurer, held, f"batch {batch} ground truth",
                               truth_rounds(args, batch))
    probes += [measurer.probe() for _ in range(5)]
    red = np.array([any(s.keep_ratio < 1.0 for s in a.stages) for a in held])
    lines = [f"**batch {batch}** ({len(table)} entries built in {table.scope['seconds']:.0f} s, "
             f"{mrt:.3f} s per measurement; {len(held)} held-out subnets, {int(red.sum())} with "
             "token reduction)", "",
             f"reference kernel (`nas/latency/speedprobe.py`): fastest {table.scope.get('probe_ms') or float('nan'):.4f} ms "
             f"over the profile, {min(probes):.4f} ms around the ground truth (median "
             f"{float(np.median(probes)):.4f}); ratio {min(probes) / (table.scope.get('probe_ms') or float('nan')):.3f}"
             + (f"; {retimed['slow_entries']} entries timed only in slow phases were timed again "
                f"(`nas/latency/slowphase.py`), {retimed['still_slow']} still slow after that"
                if (retimed := table.scope.get("retimed")) else "")
             + (f"; {retimed['calibration']} of {len(table.calibration_archs())} calibration "
                f"subnets timed only in slow phases were timed again (`nas/latency/rounds.py`), "
                f"{retimed['calibration_still_slow']} still slow after that"
                if retimed and "calibration" in retimed else "")
             + (f"; {ol['entries']} entries read more than 5% above what the other entries "
                f"predict and were timed again ({ol['timings']} timings, "
                f"`nas/latency/outliers.py`), {ol['lowered']} came down by more than 5%"
                if (ol := table.scope.get("outliers")) else ""), "",
             "| estimate vs ground truth | MAPE | within 5% | within 10% | max error | "
             "mean signed error | Kendall tau |", "|---|---:|---:|---:|---:|---:|---:|"]
    summary = ""
    for stat, t in tables.items():
        pred = t.predict(held)
        raw = np.array([t.raw_sum(a) for a in held])
        rows += [(batch, a.to_json(), stat, f"{p:.5f}", f"{r:.5f}", f"{x:.5f}", f"{y:.5f}")
                 for a, p, r, x, y in zip(held, pred, raw, first[stat], second[stat],
                                          strict=True)]
        m = metrics(pred, first[stat])
        noise = metrics(second[stat], first[stat])
        lines.append(row(f"**calibrated table ({stat})**", m))
        if red.any() and (~red).any():
            lines.append(row(f"  of which token-reduction subnets ({stat})",
                             metrics(pred[red], first[stat][red])))
        if stat == table.stat:
            lines.append(row(f"the same table before its outlier re-timing ({stat})",
                             metrics(no_outliers.predict(held), first[stat])))
        if rerun is not None and stat == table.stat:
            lines.append(row(f"after {rerun_note} ({stat})", metrics(rerun.predict(held),
                                                                    first[stat])))
        lines.append(row(f"calibrated, linear only: no local correction ({stat})",
                         metrics(linear[stat].predict(held), first[stat])))
        lines.append(row(f"calibrated without the reduce_ms term ({stat})",
                         metrics(alts[stat].predict(held), first[stat])))
        lines.append(row(f"raw sum of components ({stat})", metrics(raw, first[stat])))
        lines.append(row(f"noise floor: copy 2 vs copy 1, same session ({stat})", noise))
        if stat == "min":  # the statistic over rounds, side by side on the same timings
            lines.append(row("noise floor with each copy's fastest round instead of its "
                             "k-th fastest (min)", metrics(second["fastest"], first["fastest"])))
            lines.append(row("calibrated table vs the fastest round instead (min)",
                             metrics(pred, first["fastest"])))
        fit = t.calibration["fit"]
        lines.append(f"| calibration fit ({stat}, {fit['n']} subnets, "
                     f"{len(fit.get('outliers') or [])} outliers, LOO) | "
                     f"{fit.get('loo_mape', float('nan')):.2f}% | | | "
                     f"{fit.get('loo_max_pct', float('nan')):.1f}% | | |")
        if stat == table.stat:
            summary = (f"| {batch} | {len(table)} | {table.scope['seconds']:.0f} | "
                       f"{m['mape']:.2f}% | {m['w10']:.1f}% | {m['max']:.1f}% | {m['tau']:.3f} | "
                       f"{noise['mape']:.2f}% |")
    lines += calibration_study(args, space, table, held, first[table.stat], measurer)
    fit = table.calibration
    coef = ", ".join(f"{f} {c:.4g}" for f, c in zip(fit["features"], fit["coef"], strict=True))
    lines += ["", f"calibration ({table.stat}): latency = {coef}", ""]
    return lines, summary


def calibration_study(args, space, table, held: list, truth: np.ndarray, measurer) -> list[str]:
    """How many calibration subnets are needed, and which, like for like: the table's set
    and every strategy's set of the same size (`nas.latency.profile.calibration_archs`)
    are timed now in one interleaved list (an arch two sets share, once), and corrections
    fitted on the first k of each set are judged on the same held-out ground truth, on
    all of it and on its smallest fifth (the end random subnets rarely reach)."""
    used = tuple(table.calibration["features"])
    mine = table.calibration_archs()
    # the table's own set names itself (a resumed table may hold another set than asked),
    # in its strategy's order (the table holds its samples in the order they were timed)
    name = next((n for n in CALIBRATION_STRATEGIES
                 if set(calibration_archs(space, len(mine), args.seed, strategy=n)) == set(mine)),
                "table")
    if name != "table":
        mine = calibration_archs(space, len(mine), args.seed, strategy=name)
    sets = {name: mine}
    for other in CALIBRATION_STRATEGIES:
        if other != name:
            sets[other] = [a for a in calibration_archs(space, len(mine), args.seed, strategy=other)
                           if a not in set(held)]
    union = list(dict.fromkeys(a for archs in sets.values() for a in archs))
    t0 = time.perf_counter()
    rounds = truth_rounds(args, table.device["batch_size"])  # like for like with the ground truth
    stats = measurer.measure_archs([a.to_dict() for a in union], rounds=rounds)
    timed = {a: st[table.stat] for a, st in zip(union, stats, strict=True)}
    seconds = time.perf_counter() - t0
    H = table.features(held)
    small = truth <= np.quantile(truth, 0.2)
    out = ["", f"calibration subnets needed ({table.stat}): corrections fitted on the first k "
           f"of each set (all sets timed again now, interleaved, {len(union)} distinct subnets "
           f"in the ground truth's {rounds} rounds, {seconds:.0f} s), same held-out ground "
           f"truth, all {len(held)} and the {int(small.sum())} fastest:", "",
           "| calibration | MAPE | within 5% | within 10% | max error | mean signed error | "
           "Kendall tau | fastest fifth: MAPE | fastest fifth: mean signed error |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, archs in sets.items():
        X, ys = table.features(archs), np.array([timed[a] for a in archs])
        for k in sorted({k for k in (6, 10, 15, 20, len(archs)) if k <= len(archs)}):
            feats = calib.usable_features(used, k)
            pred = calib.apply(H, feats, calib.fit(X[:k], ys[:k], feats))
            sm = metrics(pred[small], truth[small])
            out.append(row(f"{k} {label} subnets", metrics(pred, truth))
                       + f" {sm['mape']:.2f}% | {sm['bias']:+.2f}% |")
    return out


def imagenet_refs(args) -> list[str]:
    """imagenet224 (too large to enumerate): the reference archs' prediction at batch 1."""
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
    itable = profile_space(inet, out=iout, threads=args.threads, archs=refs, calibrate_on=cal,
                           min_run_time=args.min_run_time, rounds=args.rounds, progress=True)
    spec = DeviceSpec.parse("cpu", dtype="fp32", batch_size=1, threads=args.threads)
    timing = {"min_run_time": args.min_run_time, "warmup": 10, "rounds": args.rounds}
    im = Measurer(spec.to_dict(), timing, num_classes=1000, in_chans=3)
    a1, a2 = time_archs(im, refs, "imagenet224 refs", args.rounds)
    ifit = itable.calibration["fit"]
    lines = [
        f"imagenet224 table restricted to the 4 references + {len(cal)} calibration subnets "
        f"(random, <= {args.imagenet_max_gmacs} GMACs), batch 1: {len(itable)} entries, built "
        f"in {itable.scope['seconds']:.0f} s; calibration LOO MAPE "
        f"{ifit.get('loo_mape', float('nan')):.1f}%.", "",
        "| reference (held out) | measured (ms) | again (ms) | predicted (ms) | error | "
        "raw sum (ms) |", "|---|---:|---:|---:|---:|---:|"]
    st = itable.stat
    for n, a, m1, m2, p in zip(names, refs, a1[st], a2[st], itable.predict(refs), strict=True):
        lines.append(f"| {n} | {m1:.2f} | {m2:.2f} | {p:.2f} | {100 * (p - m1) / m1:+.1f}% "
                     f"| {itable.raw_sum(a):.2f} |")
    return lines + [""]


def truth_rounds(args, batch: int) -> int:
    """Rounds of the held-out ground truth: --truth-rounds, else 16, or 32 above batch 16."""
    if args.truth_rounds is not None:
        return args.truth_rounds or args.rounds
    return 32 if batch > 16 else 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="1,8,64",
                    help="comma-separated batch sizes, one table and held-out set each")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-run-time", type=float, default=0.05,
                    help="seconds per table measurement at every batch size, as `nas "
                         "profile` (until 12-07 x sqrt(batch)/4 above batch 16)")
    ap.add_argument("--truth-min-run-time", type=float, default=0.1,
                    help="seconds per ground-truth measurement at batch <= 16 (x "
                         "sqrt(batch)/4 above)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="rounds per item, for the tables and the ground truth alike")
    ap.add_argument("--truth-rounds", type=int, default=None,
                    help="rounds of the held-out ground truth (0: --rounds; default 16, 32 at "
                         "batch > 16); on a noisy 2-core VM its noise floor missed 2%% in 13 "
                         "of 20 runs at 8 rounds, in 2 of 8 at 16 (1 of 2 at batch 64); 32 "
                         "met it at batch 64 (bench/LATENCY.md)")
    ap.add_argument("--out", default="latency_cpu.md",
                    help="results file under bench/results (earlier runs kept below)")
    ap.add_argument("--calibrate", type=int, default=None,
                    help="calibration subnets (default: as `nas profile`, 30; 20 above batch 16)")
    ap.add_argument("--calibration", choices=CALIBRATION_STRATEGIES, default="extremes",
                    help="how the tables' calibration subnets are chosen (the other ways are "
                    "timed too, for comparison)")
    ap.add_argument("--heldout", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None,
                    help="in the tables' file names (default: seedS for --seed S > 0)")
    ap.add_argument("--rerun", action="store_true",
                    help="if a table has entries never timed at full speed, run the profile "
                    "again on a copy (as a user would) and evaluate that copy too")
    ap.add_argument("--fresh", action="store_true",
                    help="rebuild the tables from scratch (else an existing table resumes)")
    ap.add_argument("--imagenet-calibrate", type=int, default=10,
                    help="imagenet224 calibration subnets (under --imagenet-max-gmacs)")
    ap.add_argument("--imagenet-max-gmacs", type=float, default=2.0)
    ap.add_argument("--skip-imagenet", action="store_true")
    args = ap.parse_args()
    if args.tag is None:
        args.tag = f"seed{args.seed}" if args.seed else ""
    batches = [int(b) for b in args.batch_sizes.split(",")]
    load0 = os.getloadavg()
    space = load_space("tiny32")
    rows: list = [("batch", "arch", "stat", "predicted_ms", "raw_sum_ms", "copy1_ms", "copy2_ms")]
    body, summary = [], []
    for b in batches:
        lines, s = evaluate_batch(args, space, b, rows)
        body += lines
        summary.append(s)
    # predictor speed
    rng = np.random.default_rng(7)
    many = [sample_arch(space, rng) for _ in range(10000)]
    fresh = LatencyTable.load(table_path(batches[0], args.tag), space=space)
    t1 = time.perf_counter()
    fresh.predict(many)
    cold = time.perf_counter() - t1
    t1 = time.perf_counter()
    fresh.predict(many)
    warm = time.perf_counter() - t1
    ref_lines = [] if args.skip_imagenet else imagenet_refs(args)
    load1 = os.getloadavg()
    t = LatencyTable.load(table_path(batches[0], args.tag), space=space)
    cal_counts = ", ".join(
        f"{len(LatencyTable.load(table_path(b, args.tag), space=space).calibration_archs())}"
        f" subnets at batch {b}" for b in batches)
    text = header("Latency tables: predicted vs measured end-to-end latency (CPU)") + "\n".join([
        f"- setting: {describe_device(t.device)} (batch as below)",
        f"- timing: ~1 ms timed blocks on the {t.timing['clock']} clock, "
        f"up to {t.timing['warmup']} timed warm-up calls (the fastest sizes the blocks; none "
        f"beyond the second once they took a fifth of the timed time); statistic over blocks: {t.stat} (the table's), and "
        f"the other for comparison; {args.rounds} rounds of {args.min_run_time:g} s per "
        f"component ({t.timing.get('calibration_rounds', args.rounds)} per calibration subnet, "
        f"{', '.join(f'{truth_rounds(args, b)} at batch {b}' for b in batches)} of "
        f"{args.truth_min_run_time:g} s for the ground truth, x sqrt(batch)/4 above batch 16; "
        "every table entry, calibration subnet and ground-truth subnet is timed once per round, each round in its own order; "
        "a table entry keeps its fastest round, a calibration or ground-truth subnet its k-th fastest, k = rounds / "
        f"{ROUNDS_PER_RANK} (`nas.latency.measure.round_statistic`))",
        f"- malloc: {t.timing.get('malloc', 'not recorded')} (`nas/latency/allocator.py`; "
        "`NAS_MALLOC=default` times glibc's adaptive default)",
        f"- machine load average (1 min) at start {load0[0]:.1f}, at end {load1[0]:.1f} on "
        f"{os.cpu_count()} cores",
        f"- held-out: {args.heldout} random tiny32 subnets per batch size, none used for "
        f"calibration ({cal_counts}, {args.calibration} set), each built twice "
        "and both copies timed in one list, back to back in the first round and shuffled "
        "after (copy 1 = ground truth, copy 2 vs copy 1 = noise floor: repeatability within "
        "this session)",
        f"- predictor speed: {len(many) / cold:,.0f} archs/s cold cache, "
        f"{len(many) / warm:,.0f} archs/s warm",
        "- targets: >= 95% within 10%, MAPE <= 4%, noise floor <= 2% MAPE, build <= 600 s",
        "",
        "| batch | entries | build s | MAPE | within 10% | max error | Kendall tau | "
        "noise floor MAPE |", "|---:|---:|---:|---:|---:|---:|---:|---:|", *summary, "",
        *body, *ref_lines,
    ]) + "\n"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    csv_name = ("latency_tiny32_heldout.csv" if args.out == "latency_cpu.md"
                else f"{Path(args.out).stem}_heldout.csv")
    write_result(csv_name, buf.getvalue())
    print(text)
    old = RESULTS / args.out
    path = write_result(args.out, with_history(text, old.read_text() if old.exists() else ""))
    print(f"written to {path} (earlier runs kept below; per-arch figures of this run: "
          f"{csv_name})")


if __name__ == "__main__":
    main()
