"""The record of a finished ``nas run``: wall time per stage and what its report measured.

Reads ``RUN_DIR/pipeline.json`` (stage seconds, as the run logged them) and
``RUN_DIR/report.json`` (picked subnets and references: predicted vs measured latency,
predicted and inherited accuracy; exported vs plain model) and writes them as one
committed result, so the figures outlive the run directory.

    nas run --config cifar10 --out runs/cifar10      # on a quiet machine, timed
    python bench/bench_pipeline.py --run runs/cifar10 --label cifar10

Writes ``bench/results/nas_run_<label>_cpu.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import header, write_result  # noqa: E402

from nas.io import read_json  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished nas run directory")
    p.add_argument("--label", required=True, help="names the result file")
    p.add_argument("--note", default="", help="a line on how the run was timed (load, resumes)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = read_json(args.run / "pipeline.json", what="pipeline status")
    report = read_json(args.run / "report.json", what="report")
    stages = status["stages"]
    total = sum(float(s.get("seconds", 0)) for s in stages.values())
    text = header(f"nas run: stage times and report ({status.get('space')}, {args.label})")
    text += (f"- run: `{args.run}`, created {status.get('created')}, updated "
             f"{status.get('updated')}; command `{status.get('command')}`\n"
             f"- latency setting: {report['setting']}\n")
    if args.note:
        text += f"- {args.note}\n"
    text += f"\n**{total / 60:.1f} min of stage time**\n\n| stage | seconds | minutes |\n|---|---:|---:|\n"
    for name, s in stages.items():
        text += f"| {name} | {float(s.get('seconds', 0)):.0f} | {float(s.get('seconds', 0)) / 60:.1f} |\n"
    text += ("\n| subnet | params | predicted acc | inherited acc | table ms | measured ms | "
             "error |\n|---|---:|---:|---:|---:|---:|---:|\n")
    for r in report["rows"]:
        err = 100 * (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
        text += (f"| {r['name']}: {r['summary'].replace(' | ', ' / ')} | {r['params']:,} | {100 * r['predicted_acc']:.1f}% "
                 f"| {100 * r['inherited_acc']:.1f}% | {r['predicted_ms']:.3f} | "
                 f"{r['measured_ms']:.3f} | {err:+.1f}% |\n")
    ex = report.get("exported") or {}
    if ex:
        text += "\nexported model: " + ", ".join(f"{k} {v}" for k, v in ex.items()
                                                  if not isinstance(v, (dict, list))) + "\n"
    path = write_result(f"nas_run_{args.label}_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
