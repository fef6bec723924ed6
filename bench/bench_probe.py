"""Does the reference kernel see the slow phases that slow the models down?

Runs one random subnet of a space, the batch-1 reference workload and the batch-scaled
one (``nas.latency.speedprobe``: ``16 x batch`` rows) call after call, interleaved, for
``--seconds`` per batch size, on the thread clock with the malloc regime pinned. Per
one-second bin it takes each one's fastest call over its fastest overall (1.00 = full
speed), and reports how each workload's bins correlate with the model's and how deep
the slow phases it reads are (95th percentile of the bins) beside the model's.

Usage:
    python bench/bench_probe.py --batch-sizes 8,64 --seconds 60
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import header, write_result  # noqa: E402

from nas.arch import sample_arch  # noqa: E402
from nas.latency.allocator import pin_malloc  # noqa: E402
from nas.latency.speedprobe import _workload, workload_name  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.space import load_space  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="tiny32")
    p.add_argument("--batch-sizes", default="8,64")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="probe_cpu.md")
    return p.parse_args(argv)


def trace(fns: dict, seconds: float) -> dict[str, np.ndarray]:
    """Per-second fastest call of each function over its fastest overall."""
    rec = {k: ([], []) for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            for _ in range(3):
                f()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for k, f in fns.items():
                w, c = time.perf_counter(), time.thread_time()
                f()
                rec[k][0].append(w - t0)
                rec[k][1].append(time.thread_time() - c)
    n = int(seconds)
    out = {}
    for k, (ts, dt) in rec.items():
        ts, dt = np.array(ts), np.array(dt)
        bins = np.minimum((ts // 1.0).astype(int), n - 1)
        out[k] = np.array([dt[bins == b].min() for b in range(n)]) / dt.min()
    return out


def main() -> None:
    args = parse_args()
    pin_malloc()
    torch.set_num_threads(1)
    space = load_space(args.space)
    arch = sample_arch(space, np.random.default_rng(args.seed))
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        model = build_model(arch, num_classes=space.num_classes, in_chans=space.in_chans).eval()
        x = torch.randn(batch, space.in_chans, arch.resolution, arch.resolution)
        small, xs = _workload(1)
        scaled, xb = _workload(batch)
        fns = {"model": lambda m=model, a=x: m(a), "batch-1": lambda m=small, a=xs: m(a),
               "scaled": lambda m=scaled, a=xb: m(a)}
        bins = trace(fns, args.seconds)
        depth = {k: float(np.percentile(v, 95) - 1) for k, v in bins.items()}
        for k in ("batch-1", "scaled"):
            rows.append(f"| {batch} | {workload_name(1 if k == 'batch-1' else batch)} | "
                        f"{np.corrcoef(bins['model'], bins[k])[0, 1]:.2f} | "
                        f"{100 * depth[k]:.1f}% | {100 * depth['model']:.1f}% |")
        print(rows[-2], rows[-1], sep="\n", flush=True)
    text = header("Reference kernel vs model slowdowns (CPU)") + "\n".join([
        f"- one random {args.space} subnet (seed {args.seed}), the batch-1 reference workload "
        f"and the batch-scaled one, interleaved call after call for {args.seconds:g} s per "
        "batch size, 1 thread, thread clock, malloc pinned",
        "- per 1 s bin: fastest call / fastest overall; correlation of each workload's bins "
        "with the model's; slow-phase depth = 95th percentile of the bins - 1", "",
        "| batch | reference workload | correlation with the model | its slow-phase depth "
        "| the model's |", "|---:|---|---:|---:|---:|", *rows, ""])
    print(f"wrote {write_result(args.out, text)}")


if __name__ == "__main__":
    main()
