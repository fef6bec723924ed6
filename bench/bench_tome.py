"""Token merging (ToMe) and pruning at 25% of tokens: speed and accuracy.

Speed: the DeiT-Tiny reference arch of imagenet224 (4 stride-1 stages of 3 global
attention blocks) against the same arch with ``keep_ratio 0.75`` (25% of the tokens
merged, or pruned, before the first block of every stage and restored at its end),
timed side by side on the CPU at batch 32 (interleaved rounds, best median).

Accuracy: on the embedded digits data, a trained tiny32 supernet's largest arch
(global attention in stage 1) against the same arch with 25% of stage 1's tokens
merged or pruned, weights inherited, no fine-tuning.
Writes ``bench/results/tome_cpu.md``.

    python bench/bench_tome.py --run runs/bench_train [--batch-size 32] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import header, write_result  # noqa: E402

from nas.arch import canonicalize, extreme_arch, load_arch  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.space import load_space  # noqa: E402

REF = Path(__file__).resolve().parent.parent / "search_spaces" / "reference"


def _reduced(arch, method, stages=None):
    idx = range(len(arch.stages)) if stages is None else stages
    return replace(arch, stages=tuple(
        replace(s, keep_ratio=0.75, reduce_method=method, reduce_at=0) if i in idx else s
        for i, s in enumerate(arch.stages)))


def _time(model, x, rounds):
    t = benchmark.Timer(stmt="m(x)", globals={"m": model, "x": x},
                        num_threads=torch.get_num_threads())
    with torch.no_grad():
        return min(t.blocked_autorange(min_run_time=1.0).median for _ in range(rounds)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/bench_train", help="trained tiny32 run directory")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    space = load_space("imagenet224")
    deit = canonicalize(space, load_arch(REF / "deit_tiny.yaml"))
    x = torch.randn(args.batch_size, 3, 224, 224)
    rows = ["| DeiT-Tiny arch (imagenet224) | tokens per stage | latency (ms) | speedup |",
            "|---|---|---:|---:|"]
    models = {"baseline": deit, "ToMe merge 25%": canonicalize(space, _reduced(deit, "merge")),
              "prune 25%": canonicalize(space, _reduced(deit, "prune"))}
    times = {}
    for _ in range(args.rounds):  # interleave the variants round by round
        for name, arch in models.items():
            model = build_model(arch, num_classes=1000).eval()
            times[name] = min(times.get(name, float("inf")), _time(model, x, 1))
    for name in models:
        toks = "196" if name == "baseline" else "196 -> 147 (restored at stage end)"
        rows.append(f"| {name} | {toks} | {times[name]:.1f} | "
                    f"{times['baseline'] / times[name]:.2f}x |")

    from nas.training import evaluate, load_run, load_val_data

    run = load_run(args.run)
    xv, yv = load_val_data(run.config)
    big = extreme_arch(run.space, "max")
    base = replace(big, stages=big.stages[:1] + (replace(big.stages[1], ffn_conv=False,
                                                         token_interaction=False),))
    acc_rows = ["| tiny32 arch (inherited weights, digits val) | val acc | change |",
                "|---|---:|---:|"]
    ref = None
    for name, arch in (("largest, no reduction", base),
                       ("stage 1: ToMe merge 25%", _reduced(base, "merge", [1])),
                       ("stage 1: prune 25%", _reduced(base, "prune", [1]))):
        arch = canonicalize(run.space, arch)
        acc = evaluate(run.supernet, arch, xv, yv)["acc"]
        ref = acc if ref is None else ref
        acc_rows.append(f"| {name} | {acc * 100:.2f}% | {(acc - ref) * 100:+.2f} pp |")

    text = (header("Token merging / pruning at 25%: speed and accuracy")
            + f"batch {args.batch_size}, fp32, CPU\n\n" + "\n".join(rows) + "\n\n"
            + "\n".join(acc_rows) + "\n")
    print(text)
    print(f"written to {write_result('tome_cpu.md', text)}")


if __name__ == "__main__":
    main()
