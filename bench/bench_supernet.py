"""Supernet overhead: ``supernet(x, arch)`` vs ``supernet.extract(arch)(x)`` on the CPU.

Both are timed side by side in one run (median of ``torch.utils.benchmark``
blocked_autorange, same thread count) for the largest, smallest and random archs of
tiny32 and the reference archs of imagenet224, at batch 1 and 32. The ratio is the
price of running a subnet through the shared weights (slicing + functional_call).
Target: under 1.5x. Writes ``bench/results/supernet_overhead.md``.

    python bench/bench_supernet.py [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_result  # noqa: E402

from nas.arch import canonicalize, extreme_arch, load_arch, sample_arch  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.supernet import Supernet  # noqa: E402

REF = Path(__file__).resolve().parent.parent / "search_spaces" / "reference"


def _time(fn, args: tuple, min_run_time: float) -> float:
    t = benchmark.Timer(stmt="fn(*args)", globals={"fn": fn, "args": args},
                        num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _pair(net, model, x, arch, min_run_time: float, rounds: int) -> tuple[float, float]:
    """Interleaved rounds, best median of each: robust to load from other processes."""
    ts, te = [], []
    with torch.no_grad():
        for _ in range(rounds):
            ts.append(_time(net, (x, arch), min_run_time))
            te.append(_time(model, (x,), min_run_time))
    return min(ts), min(te)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mrt = 0.1 if args.quick else 0.5
    cases = []
    tiny = load_space("tiny32")
    rng = np.random.default_rng(0)
    tiny_archs = [("tiny32 largest", extreme_arch(tiny, "max")),
                  ("tiny32 smallest", extreme_arch(tiny, "min"))]
    tiny_archs += [(f"tiny32 random {i}", sample_arch(tiny, rng)) for i in range(2 if args.quick else 5)]
    cases.append((tiny, tiny_archs, (1, 32)))
    if not args.quick:
        big = load_space("imagenet224")
        refs = [(f"imagenet224 {p.stem}", canonicalize(big, load_arch(p)))
                for p in sorted(REF.glob("*.yaml"))]
        cases.append((big, refs, (1, 8)))
    rows = ["| arch | batch | supernet (ms) | extracted (ms) | ratio |", "|---|---:|---:|---:|---:|"]
    ratios = []
    for space, archs, batches in cases:
        net = Supernet(space, generator=torch.Generator().manual_seed(0)).eval()
        for name, arch in archs:
            model = net.extract(arch).eval()
            for b in batches:
                x = torch.randn(b, 3, arch.resolution, arch.resolution)
                ts, te = _pair(net, model, x, arch, mrt, 1 if args.quick else 3)
                ratios.append(ts / te)
                rows.append(f"| {name} | {b} | {ts:.2f} | {te:.2f} | {ts / te:.2f} |")
                print(rows[-1], flush=True)
    summary = (f"\nmedian ratio {statistics.median(ratios):.2f}, max ratio {max(ratios):.2f} "
               f"(target < 1.5)\n")
    text = header("Supernet forward vs extracted model (CPU)") + "\n".join(rows) + "\n" + summary
    print(summary)
    print(f"written to {write_result('supernet_overhead.md', text)}")


if __name__ == "__main__":
    main()
