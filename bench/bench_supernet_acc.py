"""Inherited-weight accuracy of a trained supernet: largest, smallest, median of 20 random
subnets and the space's reference points, on the run's whole validation split.

    python bench/bench_supernet_acc.py --run runs/cifar10/train

Writes ``bench/results/supernet_<space>_<data>_cpu.md`` with the run's training time per
epoch (from its metrics.csv).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from common import header, write_result  # noqa: E402

from nas.arch import extreme_arch, sample_arch  # noqa: E402
from nas.complexity import count_params  # noqa: E402
from nas.data import parse_data_spec  # noqa: E402
from nas.search.report import reference_archs  # noqa: E402
from nas.training import evaluate, load_run, load_val_data, read_metrics  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "cifar10" / "train")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    run = load_run(args.run)
    x, y = load_val_data(run.config)
    rng = np.random.default_rng(args.seed)
    rows = [("largest", extreme_arch(run.space, "max")), ("smallest", extreme_arch(run.space, "min"))]
    rows += [(f"reference {n}", a) for n, a in reference_archs(run.space)]
    rows += [(f"random {i}", sample_arch(run.space, rng)) for i in range(args.samples)]
    res = {name: evaluate(run.supernet, arch, x, y) for name, arch in rows}
    rand = [res[n]["acc"] for n, _ in rows if n.startswith("random")]
    metrics = read_metrics(args.run)
    spec = parse_data_spec(run.config["data"])
    data = spec.kind if spec.path is None else Path(spec.path).name.split(".")[0]
    wall = float(metrics[-1]["wall_time_s"])
    text = header(f"Supernet accuracy with inherited weights ({run.space.name}, {data})")
    text += (f"- run: `{args.run}`, {run.epoch} epochs on "
             f"{run.config.get('limit_train') or 'all'} training images, "
             f"{wall / 60:.1f} min of training ({wall / len(metrics):.0f} s per epoch, training "
             f"+ per-epoch validation, as logged by the run; see its log for the thread count "
             f"and load)\n- {len(y)} validation images; {args.samples} random subnets (seed "
             f"{args.seed})\n\n"
             f"**largest {100 * res['largest']['acc']:.2f}%, smallest "
             f"{100 * res['smallest']['acc']:.2f}%, median of {args.samples} random "
             f"{100 * statistics.median(rand):.2f}%** (min {100 * min(rand):.2f}%, max "
             f"{100 * max(rand):.2f}%)\n\n| subnet | params | val acc | val loss |\n"
             "|---|---:|---:|---:|\n")
    for name, arch in rows:
        text += (f"| {name} | {count_params(arch, num_classes=run.space.num_classes):,} | "
                 f"{100 * res[name]['acc']:.2f}% | {res[name]['loss']:.4f} |\n")
    path = write_result(f"supernet_{run.space.name}_{data}_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
