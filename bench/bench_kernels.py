"""Latency of the sparse / linear attention fast paths against dense masked attention.

For every token count (14x14, 28x28, 56x56 grids) and pattern, times the dense
baseline -- one ``scaled_dot_product_attention`` call with the pattern's equivalent
boolean mask -- against each fast path of :func:`nas.kernels.sparse_attention` and the
``impl="auto"`` choice, and checks the two claims the kernels make: window-7 local
attention at 3136 tokens is at least 5x faster than the masked dense baseline, and
``auto`` is never slower than the slowest alternative. Linear attention (Katharopoulos
et al., ICML 2020) is compared with unmasked global softmax attention, which it replaces.

Latency is the median of ``torch.utils.benchmark.Timer.blocked_autorange`` with a fixed
thread count; every candidate is measured in several interleaved rounds and the best
round is kept, so that other processes on a shared machine disturb it less.

Usage:
    python bench/bench_kernels.py                    # full CPU run, writes bench/results/kernels_cpu.md
    python bench/bench_kernels.py --quick            # smoke run (< 1 min), prints only
    python bench/bench_kernels.py --device cuda --dtype bf16   # writes kernels_cuda.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils import benchmark  # noqa: E402

from nas.kernels import KERNELS_VERSION, Pattern, linear_attention, pattern_mask, sparse_attention  # noqa: E402
from nas.kernels.attention import auto_impl  # noqa: E402
from nas.kernels.flex import flex_available  # noqa: E402

HEADS, HEAD_DIM = 4, 32
SIZES = ((14, 14, 8), (28, 28, 4), (56, 56, 2))  # (H, W, batch)
QUICK_SIZES = ((14, 14, 2), (28, 28, 1))
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# (name, pattern, local heads or None for all, fast paths to time besides sdpa_mask and auto)
CASES = (
    ("local w7", Pattern("local", window=7), None, ("window",)),
    ("local w7 shift", Pattern("local", window=7, shift=True), None, ("window",)),
    ("dilated w7", Pattern("dilated", window=7), None, ("grid",)),
    ("block w7 d0.25", Pattern("block", window=7, density=0.25), None, ("block", "flex")),
    (f"hetero local w7 {HEADS // 2}/{HEADS} heads", Pattern("local", window=7), HEADS // 2,
     ("window",)),
)
BASELINE = "dense + mask"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run; writes no file unless --out")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: with more OpenMP threads than free cores, every "
                        "parallel region waits for a descheduled thread and timings swing 100x)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3, quick: 1)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds per blocked_autorange (0.4, quick: 0.05)")
    p.add_argument("--no-flex", action="store_true", help="skip the compiled FlexAttention path")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown output (default bench/results/kernels_<device>.md; none with --quick)")
    return p.parse_args(argv)


def measure(fns: dict[str, Callable[[], object]], *, rounds: int, min_run_time: float,
            threads: int) -> dict[str, float]:
    """Best-of-``rounds`` median latency in ms of every function, rounds interleaved."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads)
            best[name] = min(best[name], t.blocked_autorange(min_run_time=min_run_time).median * 1e3)
    return best


def _case_fns(q, k, v, hw, pattern: Pattern, local_heads: int | None, paths, use_flex: bool,
              notes: list[str]) -> dict[str, Callable[[], object]]:
    nl = HEADS if local_heads is None else local_heads
    mask = torch.ones(HEADS, q.shape[2], q.shape[2], dtype=torch.bool, device=q.device)
    mask[:nl] = pattern_mask(pattern, hw, q.device)
    mask = mask if nl < HEADS else mask[0]
    fns: dict[str, Callable[[], object]] = {BASELINE: lambda: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask)}

    def run(impl):
        return lambda: sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=local_heads,
                                        impl=impl)

    for impl in ("sdpa_mask", *paths):
        if impl == "flex" and not use_flex:
            continue
        fn = run(impl)
        start = time.perf_counter()
        try:
            fn()  # warm-up: caches, and compilation for flex
        except (RuntimeError, ImportError, ValueError) as err:
            notes.append(f"{impl} skipped at N={q.shape[2]}: {type(err).__name__}: "
                         f"{str(err).splitlines()[0][:120]}")
            continue
        if impl == "flex":
            notes.append(f"flex first call (compile) at N={q.shape[2]}: "
                         f"{time.perf_counter() - start:.1f} s")
        fns[impl] = fn
    fns[f"auto (-> {auto_impl(pattern, hw, q.device)})"] = run("auto")
    return fns


def _linear_fns(q, k, v) -> dict[str, Callable[[], object]]:
    return {"dense softmax, no mask": lambda: F.scaled_dot_product_attention(q, k, v),
            "linear reference (N x N)": lambda: linear_attention(q, k, v, impl="reference"),
            "linear": lambda: linear_attention(q, k, v, impl="linear"),
            "auto (-> linear)": lambda: linear_attention(q, k, v)}


def run_bench(args: argparse.Namespace) -> str:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (1 if args.quick else 3)
    mrt = args.min_run_time or (0.05 if args.quick else 0.4)
    use_flex = not (args.quick or args.no_flex) and flex_available()
    gen = torch.Generator().manual_seed(0)
    load_start = os.getloadavg()[0]
    rows, notes, failures = [], [], []
    local_speedup_3136 = None
    for h, w, batch in (QUICK_SIZES if args.quick else SIZES):
        n = h * w
        q, k, v = (torch.randn(batch, HEADS, n, HEAD_DIM, generator=gen).to(device, dtype)
                   for _ in range(3))
        groups = [(name, _case_fns(q, k, v, (h, w), pat, lh, paths, use_flex, notes))
                  for name, pat, lh, paths in CASES]
        groups.append(("linear attention", _linear_fns(q, k, v)))
        for name, fns in groups:
            times = measure(fns, rounds=rounds, min_run_time=mrt, threads=args.threads)
            base = next(iter(times.values()))
            auto = next(t for label, t in times.items() if label.startswith("auto"))
            others = [t for label, t in times.items() if not label.startswith("auto")]
            if auto > max(others):
                failures.append(f"N={n} {name}: auto {auto:.2f} ms > slowest {max(others):.2f} ms")
            if n == 3136 and name == "local w7":
                local_speedup_3136 = base / auto
            for label, t in times.items():
                rows.append(f"| {n} ({h}x{w}) | {batch} | {name} | {label} | {t:.3f} | {base / t:.2f}x |")
            print(f"done: N={n} {name}", file=sys.stderr)

    lines = [
        f"# Kernel latency: {args.device}, {args.dtype}",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}; {platform.machine()}; {os.cpu_count()} logical CPUs; "
        f"python {platform.python_version()}; torch {torch.__version__}; threads {args.threads}"
        + (f"; {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        f"- kernels version: {KERNELS_VERSION}",
        f"- 1-min load average at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f} "
        "(other processes share the machine when it exceeds 0)",
        f"- command: `python bench/bench_kernels.py {' '.join(sys.argv[1:])}`",
        f"- shapes: q, k, v = (B, {HEADS} heads, N, {HEAD_DIM}); B per row below",
        f"- latency: median of torch.utils.benchmark blocked_autorange (min_run_time {mrt} s), "
        f"best of {rounds} interleaved round(s)",
        f"- speedup: first row of each group / row ('{BASELINE}' = one SDPA call with the "
        "pattern's equivalent boolean mask; for linear attention, unmasked softmax attention)",
        "",
        "| N | B | case | path | latency (ms) | speedup |",
        "|---|---|------|------|-------------:|--------:|",
        *rows,
        "",
    ]
    if local_speedup_3136 is not None:
        verdict = "PASS" if local_speedup_3136 >= 5 else "FAIL"
        lines.append(f"- local window-7 at 3136 tokens, auto vs dense + mask: "
                     f"{local_speedup_3136:.1f}x (target >= 5x): {verdict}")
    lines.append("- auto never slower than the slowest alternative: "
                 + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    lines += [f"- note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda requested but CUDA is not available; use --device cpu",
              file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"error: --threads must be >= 1; got {args.threads}", file=sys.stderr)
        return 2
    text = run_bench(args)
    print(text)
    out = args.out or (None if args.quick else ROOT / "bench" / "results" / f"kernels_{args.device}.md")
    if out is not None:
        write_atomic(out, text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
