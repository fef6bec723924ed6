"""Where does the ground-truth noise at large batch come from?

Times N random subnets of a space end to end (``nas.export.timing.measure_latency``: one
untimed call, then the minimum over a block of ``--min-run-time`` seconds) in several
passes over the list, and reports, pass against pass, the MAPE of:

* the same model instance timed again (the machine's own drift);
* a deep copy of it (same weights, other memory);
* a fresh build of the same arch with the same weights;
* the same instance's timings divided by a reference matmul timed just before and after
  each (does a reference kernel track the drift?), and the reference itself.

Usage:
    python bench/bench_timing_noise.py --batch-size 64 --subnets 16 --passes 4
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import header, write_result  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="tiny32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--subnets", type=int, default=16)
    p.add_argument("--passes", type=int, default=4)
    p.add_argument("--min-run-time", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def reference_ms(model: torch.nn.Module, x: torch.Tensor, seconds: float = 0.1) -> float:
    """Fastest call of a fixed matmul over ``seconds``."""
    best = float("inf")
    with torch.no_grad():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return best * 1e3


def mape_vs_first(v: np.ndarray) -> tuple[float, float]:
    """(mean, max) relative difference of passes 2.. against pass 1 (passes x subnets)."""
    err = np.abs(v[1:] - v[0]) / v[0]
    return float(err.mean()), float(err.max())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nas.arch import sample_arch
    from nas.export.timing import measure_latency
    from nas.latency.allocator import pin_malloc
    from nas.model import build_model
    from nas.space import load_space

    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    rng = np.random.default_rng(args.seed)
    archs = []
    while len(archs) < args.subnets:
        a = sample_arch(space, rng)
        if a not in archs:
            archs.append(a)
    kw = {"num_classes": space.num_classes, "in_chans": space.in_chans}
    trios = []
    for a in archs:
        torch.manual_seed(0)
        m = build_model(a, **kw).eval()
        torch.manual_seed(0)
        trios.append((m, copy.deepcopy(m), build_model(a, **kw).eval()))
    ref_model, ref_x = torch.nn.Linear(512, 512).eval(), torch.randn(1024, 512)
    device = {"batch_size": args.batch_size, "threads": args.threads}
    timing = {"min_run_time": args.min_run_time, "stat": "min"}
    shape = (args.passes, len(archs))
    same, deep, fresh, ref = np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape)
    t0 = time.time()
    for p in range(args.passes):
        for i, (a, (m, c, f)) in enumerate(zip(archs, trios)):
            r1 = reference_ms(ref_model, ref_x)
            same[p, i] = measure_latency(m, a, in_chans=space.in_chans, device=device,
                                         timing=timing)[0]
            ref[p, i] = (r1 + reference_ms(ref_model, ref_x)) / 2
            deep[p, i] = measure_latency(c, a, in_chans=space.in_chans, device=device,
                                         timing=timing)[0]
            fresh[p, i] = measure_latency(f, a, in_chans=space.in_chans, device=device,
                                          timing=timing)[0]
        print(f"pass {p + 1}/{args.passes} ({time.time() - t0:.0f}s)", flush=True)
    rows = {
        "same instance, pass k vs pass 1": mape_vs_first(same),
        "same instance, pass k vs pass 2 (first pass left out)": mape_vs_first(same[1:]),
        "same instance / reference matmul, pass k vs pass 1": mape_vs_first(same / ref),
        "reference matmul itself, pass k vs pass 1": mape_vs_first(ref),
        "deep copy vs the instance, same pass": _pair(same, deep),
        "fresh build (same weights) vs the instance, same pass": _pair(same, fresh),
    }
    text = header(f"Timing noise at batch {args.batch_size} ({args.space})")
    text += (f"- {len(archs)} random subnets, {args.passes} passes over the list "
             f"({time.time() - t0:.0f} s in all), {args.threads} thread(s), each timing the "
             f"minimum over a {args.min_run_time} s block after one untimed call; a 512x512 "
             "linear on 1024 rows is the reference kernel, timed just before and after each\n"
             f"- malloc: {pin_malloc()} (`NAS_MALLOC=default` in the environment: glibc's "
             "adaptive default, see `nas/latency/allocator.py`)\n\n"
             "| comparison | MAPE | max |\n|---|---:|---:|\n")
    for name, (mean, worst) in rows.items():
        text += f"| {name} | {100 * mean:.2f}% | {100 * worst:.1f}% |\n"
    text += ("\nmedian over subnets of each pass's time / pass 1's: "
             + ", ".join(f"pass {p + 1} {np.median(same[p] / same[0]):.3f}"
                         for p in range(args.passes)) + "\n")
    path = write_result(f"timing_noise_b{args.batch_size}_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    err = np.abs(b - a) / a
    return float(err.mean()), float(err.max())


if __name__ == "__main__":
    sys.exit(main())
