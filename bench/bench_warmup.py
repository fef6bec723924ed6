"""What the CPU warm-up costs and whether a shorter one changes the latency.

Times random component signatures of a space side by side, each with (a) the previous
method, kept here for the comparison: untimed warm-up calls until half of
``min_run_time`` had passed (at least 2), then 3 sizing calls to choose the block
length; and (b) ``nas.latency.measure``'s current one: the warm-up calls are timed and
size the blocks, and warm-up stops after 2 calls once a fifth of ``min_run_time`` has
passed. Both run in every round, in rotating order, and each keeps its fastest round;
the bench prints the seconds per measurement and the ratio of the two minima.

Usage:
    python bench/bench_warmup.py --batch-size 64 --signatures 120
"""
from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import header, write_result  # noqa: E402

import nas.latency.measure as measure  # noqa: E402
from nas.latency.allocator import pin_malloc  # noqa: E402
from nas.latency.components import build_component  # noqa: E402
from nas.latency.device import DeviceSpec, num_threads  # noqa: E402
from nas.latency.signatures import space_signatures  # noqa: E402
from nas.space import load_space  # noqa: E402


def previous(fn, timing: measure.Timing) -> dict[str, float]:
    """The method before: untimed warm-up up to half of min_run_time, 3 sizing calls."""
    deadline = time.perf_counter() + timing.min_run_time * 0.5
    for i in range(timing.warmup):
        fn()
        if i >= 1 and time.perf_counter() > deadline:
            break
    timer = timeit.Timer(fn, timer=time.thread_time)
    number = max(1, round(timing.block_time / max(timer.timeit(3) / 3, 1e-7)))
    times, total = [], 0.0
    while total < timing.min_run_time or len(times) < 5:
        t = timer.timeit(number)
        times.append(t * 1e3 / number)
        total += t
    return measure._stats(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="tiny32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--signatures", type=int, default=120)
    p.add_argument("--min-run-time", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="warmup_cpu.md")
    args = p.parse_args()
    pin_malloc()
    space = load_space(args.space)
    sigs = space_signatures(space)
    rng = np.random.default_rng(0)
    sigs = [sigs[i] for i in rng.choice(len(sigs), min(args.signatures, len(sigs)), replace=False)]
    spec = DeviceSpec.parse("cpu", batch_size=args.batch_size, threads=1).resolve()
    timing = measure.Timing(min_run_time=args.min_run_time, warmup=10).resolve(spec)
    methods = {"previous": previous, "current": measure._time_cpu}
    best = {k: np.full(len(sigs), np.inf) for k in methods}
    secs = dict.fromkeys(methods, 0.0)
    mods = [build_component(g, batch_size=args.batch_size) for g in sigs]
    for r in range(args.rounds):
        for i, (mod, inputs) in enumerate(mods):
            order = list(methods)[::1 if (i + r) % 2 == 0 else -1]
            with num_threads(1), torch.inference_mode():
                for k in order:
                    t = time.perf_counter()
                    ms = methods[k](lambda mod=mod, inputs=inputs: mod(*inputs), timing)["min"]
                    secs[k] += time.perf_counter() - t
                    best[k][i] = min(best[k][i], ms)
    n = len(sigs) * args.rounds
    ratio = best["current"] / best["previous"]
    lines = [f"- {len(sigs)} random {args.space} component signatures, batch {args.batch_size}, "
             f"1 thread, {args.min_run_time:g} s timed per measurement, {args.rounds} rounds, "
             "both methods in every round in alternating order, fastest round kept", "",
             "| method | s per measurement | time vs previous |", "|---|---:|---:|",
             *[f"| {k} | {secs[k] / n:.4f} | {secs[k] / secs['previous']:.3f} |" for k in methods],
             "", f"current / previous minimum: median {np.median(ratio):.4f}, mean "
             f"{np.mean(ratio):.4f}, 5-95% [{np.percentile(ratio, 5):.3f}, "
             f"{np.percentile(ratio, 95):.3f}]", ""]
    print("\n".join(lines))
    print(f"wrote {write_result(args.out, header('CPU warm-up: cost and effect') + chr(10).join(lines))}")


if __name__ == "__main__":
    main()
