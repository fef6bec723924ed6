"""Default supernet training on this CPU: wall time and inherited-weight accuracy.

Runs the default ``nas train`` on the embedded digits data with the tiny32 space, as
a user would (a subprocess, so the time includes start-up), then evaluates the
largest subnet, the smallest one and 20 random subnets (fixed seed) with inherited
weights on the validation split. With ``--ray-workers N`` (default 2) it trains the
same command again as N local Ray Train workers and compares the two checkpoints
subnet by subnet.

Targets: largest >= 95%, smallest >= 85%, wall time < 10 min.

Usage:
    python bench/bench_train.py                    # writes bench/results/train_cpu.md
    python bench/bench_train.py --ray-workers 0    # single process only
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from common import header, write_result  # noqa: E402

from nas.arch import extreme_arch, sample_arch  # noqa: E402
from nas.training import evaluate, load_run, load_val_data, read_metrics  # noqa: E402

SPACE = "search_spaces/tiny32.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_train",
                   help="where the run directories go (replaced)")
    p.add_argument("--samples", type=int, default=20, help="random subnets to evaluate")
    p.add_argument("--seed", type=int, default=0, help="seed of the random subnets")
    p.add_argument("--ray-workers", type=int, default=2, help="0 skips the Ray Train run")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="extra nas train flags (e.g. --extra --epochs 5) for quick checks")
    return p.parse_args(argv)


def train(out: Path, extra: list[str]) -> tuple[list[str], float]:
    if out.exists():
        shutil.rmtree(out)
    cmd = ["nas", "train", "--space", SPACE, "--data", "digits", "--out", str(out), *extra]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nas", *cmd[1:]], cwd=ROOT, check=True)
    return cmd, time.perf_counter() - t0


def evaluate_run(run_dir: Path, samples: int, seed: int) -> dict[str, dict[str, float]]:
    run = load_run(run_dir)
    x, y = load_val_data(run.config)
    archs = {"largest": extreme_arch(run.space, "max"), "smallest": extreme_arch(run.space, "min")}
    rng = np.random.default_rng(seed)
    archs.update({f"random{i}": sample_arch(run.space, rng) for i in range(samples)})
    return {name: evaluate(run.supernet, arch, x, y) for name, arch in archs.items()}


def train_threads(run_dir: Path) -> str:
    """The torch threads the run chose (its log's first line ends with 'N threads')."""
    first = (run_dir / "log.txt").read_text(encoding="utf-8").splitlines()[0]
    return "training " + first.rsplit(", ", 1)[-1]


def summary(res: dict[str, dict[str, float]]) -> dict[str, float]:
    rand = [v["acc"] for k, v in res.items() if k.startswith("random")]
    return {"largest": res["largest"]["acc"], "smallest": res["smallest"]["acc"],
            "median": statistics.median(rand), "min": min(rand), "max": max(rand)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    single = args.runs / "single"
    cmd, wall = train(single, args.extra)
    res = evaluate_run(single, args.samples, args.seed)
    s = summary(res)
    rows = read_metrics(single)
    train_time = float(rows[-1]["wall_time_s"])
    text = header("Supernet training, default `nas train` (CPU)")
    text += f"- command: `{' '.join(cmd)}`\n"
    text += f"- epochs {len(rows)}, steps {rows[-1]['step']}; {train_threads(single)}\n"
    text += f"- wall time {wall / 60:.1f} min (training loop {train_time / 60:.1f} min; "
    text += "target < 10 min)\n\n"
    text += "| subnet (inherited weights) | val top-1 | target |\n|---|---:|---:|\n"
    text += f"| largest | {100 * s['largest']:.2f}% | >= 95% |\n"
    text += f"| smallest | {100 * s['smallest']:.2f}% | >= 85% |\n"
    text += (f"| median of {args.samples} random (seed {args.seed}) | {100 * s['median']:.2f}% "
             f"| |\n| min / max of the random | {100 * s['min']:.2f}% / {100 * s['max']:.2f}% "
             "| |\n\n")
    ok = s["largest"] >= 0.95 and s["smallest"] >= 0.85 and wall < 600
    text += f"targets met: {'yes' if ok else 'no'}\n\n"
    if args.ray_workers:
        ray_dir = args.runs / f"ray{args.ray_workers}"
        ray_cmd, ray_wall = train(ray_dir, ["--workers", str(args.ray_workers), *args.extra])
        ray_res = evaluate_run(ray_dir, args.samples, args.seed)
        rs = summary(ray_res)
        diffs = [abs(ray_res[k]["acc"] - res[k]["acc"]) for k in res]
        text += f"## Ray Train, {args.ray_workers} local workers vs single process\n\n"
        text += f"- command: `{' '.join(ray_cmd)}`\n"
        text += (f"- wall time {ray_wall / 60:.1f} min (includes Ray start-up; training loop "
                 f"{float(read_metrics(ray_dir)[-1]['wall_time_s']) / 60:.1f} min), "
                 f"{train_threads(ray_dir)} per worker\n\n")
        text += "| subnet | single process | Ray Train |\n|---|---:|---:|\n"
        for key, label in (("largest", "largest"), ("smallest", "smallest"),
                           ("median", f"median of {args.samples} random")):
            text += f"| {label} | {100 * s[key]:.2f}% | {100 * rs[key]:.2f}% |\n"
        text += (f"\nper-subnet |accuracy difference| over the {len(diffs)} subnets: mean "
                 f"{100 * statistics.mean(diffs):.2f} points, max {100 * max(diffs):.2f} points. "
                 "Both runs see the same global batches and subnets; the workers differ in "
                 "augmentation draws and floating-point summation order only.\n")
    path = write_result("train_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
