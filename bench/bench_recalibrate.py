"""Does `nas profile --recalibrate` rescue a latency table built hours earlier?

A table holds within the session it was built in; on a shared VM the speed of whole
models drifts by several percent over hours, and the README tells users to rebuild or
``--recalibrate`` a table reused later. This bench measures that advice. For each given
table (built by ``bench/bench_latency.py`` in an earlier session, never touched since):

1. copies it and runs on the copy what ``nas profile --recalibrate`` runs (the table's
   own batch size, threads, rounds, measurement length and calibration seed): the
   components are kept, the calibration subnets are timed again and the fit redone;
2. right after, times held-out random subnets (none of either calibration set, drawn
   with a seed no earlier bench used) twice each, side by side, as ``bench_latency.py``
   times its ground truth: copy 1 is the truth, copy 2 against copy 1 the noise floor;
3. judges the table as it was (stale) and the recalibrated copy on that ground truth.

    python bench/bench_recalibrate.py \\
        bench/results/latency_tiny32_seed18_amd_cpu.json \\
        bench/results/latency_tiny32_b64_seed18_amd_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import heldout_archs, metrics, row, time_archs  # noqa: E402
from common import header, write_result  # noqa: E402

from nas.latency import LatencyTable, Measurer, profile_space  # noqa: E402
from nas.latency.device import DeviceSpec, describe_device  # noqa: E402
from nas.space import load_space  # noqa: E402

WORK = Path(__file__).resolve().parent.parent / "runs" / "bench_recalibrate"


def hours_since(stamp: str) -> float:
    then = datetime.datetime.fromisoformat(stamp)
    return (datetime.datetime.now(datetime.timezone.utc) - then).total_seconds() / 3600


def evaluate(path: Path, args, space) -> tuple[list[str], str]:
    stale = LatencyTable.load(path, space=space)
    batch, threads = stale.device["batch_size"], stale.device["threads"]
    age = hours_since(stale.to_dict()["updated"])
    tm = stale.timing
    work = WORK / path.name
    work.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, work)
    seed = stale.calibration["seed"]
    t0 = time.perf_counter()
    recal = profile_space(space, out=work, batch_size=batch, threads=threads, seed=seed,
                          min_run_time=tm["min_run_time"], rounds=tm["rounds"],
                          warmup=tm["warmup"], stat=stale.stat, recalibrate=True,
                          progress=True)
    recal_s = time.perf_counter() - t0
    print(f"{path.name}: {age:.1f} h old, recalibrated in {recal_s:.0f} s", flush=True)
    exclude = set(stale.calibration_archs()) | set(recal.calibration_archs())
    held = heldout_archs(space, args.heldout, exclude, args.seed + batch)
    spec = DeviceSpec.parse("cpu", dtype="fp32", batch_size=batch, threads=threads)
    rounds = 32 if batch > 16 else 16  # as bench_latency.py's ground truth
    timing = {"min_run_time": 0.1 * max(1.0, batch ** 0.5 / 4), "warmup": 10,
              "rounds": tm["rounds"]}
    measurer = Measurer(spec.to_dict(), timing, num_classes=space.num_classes,
                        in_chans=space.in_chans)
    probes = [measurer.probe() for _ in range(5)]
    t1 = time.perf_counter()
    first, second = time_archs(measurer, held, f"batch {batch} ground truth", rounds)
    truth_s = time.perf_counter() - t1
    probes += [measurer.probe() for _ in range(5)]
    st = stale.stat
    truth = first[st]
    stale_m, recal_m = metrics(stale.predict(held), truth), metrics(recal.predict(held), truth)
    ref = stale.scope.get("probe_fast_ms") or float("nan")
    lines = [
        f"**{path.name}**: batch {batch}, {len(stale)} entries, built {stale.to_dict()['created']}"
        f" in {stale.scope['seconds']:.0f} s; {age:.1f} h old when recalibrated. Recalibration: "
        f"{len(recal.calibration_archs())} subnets (the table had "
        f"{len(stale.calibration_archs())}), {recal_s:.0f} s. Ground truth: {len(held)} "
        f"held-out subnets x 2 copies x {rounds} rounds, {truth_s:.0f} s. Reference kernel "
        f"around the ground truth {min(probes):.4f} ms, {min(probes) / ref:.3f} x the table's "
        f"build (fastest {ref:.4f} ms).", "",
        "| table vs ground truth | MAPE | within 5% | within 10% | max error | "
        "mean signed error | Kendall tau |", "|---|---:|---:|---:|---:|---:|---:|",
        row(f"as built, {age:.1f} h earlier (stale)", stale_m),
        row("after `--recalibrate` now", recal_m),
        row("raw sum of components (uncalibrated)",
            metrics(np.array([stale.raw_sum(a) for a in held]), truth)),
        row("noise floor: copy 2 vs copy 1", metrics(second[st], truth)), ""]
    summary = (f"| {batch} | {path.name} | {age:.1f} | {stale_m['mape']:.2f}% | "
               f"{stale_m['w10']:.1f}% | {stale_m['bias']:+.2f}% | {recal_m['mape']:.2f}% | "
               f"{recal_m['w10']:.1f}% | {recal_m['bias']:+.2f}% | {recal_s:.0f} | "
               f"{metrics(second[st], truth)['mape']:.2f}% |")
    return lines, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="+", type=Path,
                    help="latency tables built earlier (each copied; the file is not changed)")
    ap.add_argument("--heldout", type=int, default=120, help="held-out subnets per table")
    ap.add_argument("--seed", type=int, default=7000,
                    help="held-out sampling seed (+ batch size); bench_latency uses seed + 1000")
    ap.add_argument("--out", default="recalibrate_cpu.md")
    args = ap.parse_args()
    space = load_space("tiny32")
    load0 = os.getloadavg()
    body, summary = [], []
    for path in args.tables:
        lines, s = evaluate(path, args, space)
        body += lines
        summary.append(s)
    load1 = os.getloadavg()
    dev = LatencyTable.load(args.tables[0], space=space).device
    text = header("Latency tables reused hours later: as built vs `nas profile --recalibrate`") \
        + "\n".join([
            f"- setting: {describe_device(dev)} (batch as below)",
            f"- machine load average (1 min) at start {load0[0]:.1f}, at end {load1[0]:.1f} on "
            f"{os.cpu_count()} cores; nothing else ran",
            "- targets (issue 18, for a table used in the session it was built in): >= 95% "
            "within 10%, MAPE <= 4%, noise floor <= 2%", "",
            "| batch | table | age h | stale MAPE | stale within 10% | stale mean signed | "
            "recalibrated MAPE | recalibrated within 10% | recalibrated mean signed | "
            "recalibration s | noise floor |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *summary, "", *body])
    print(text)
    write_result(args.out, text + "\n")


if __name__ == "__main__":
    main()
