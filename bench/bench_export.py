"""Is the exported model as fast as the plain one the budget was searched for?

For the best subnet of a search and a few sampled subnets of the same run, exports the
model the way ``nas export`` does (the rewrites chosen by
:func:`nas.export.timing.decide_rewrites` at batch 1, 1 thread: the latency table's
setting) and then times, side by side, in alternating rounds:

* the plain standalone model (``supernet.extract``, BatchNorm recalibrated);
* the exported model (the chosen rewrites);
* a second copy of the plain model, for the noise floor of the same run;

at every batch size asked (default 1 and 16). Prints and writes the ratio exported /
plain (median over rounds of each round's ratio) and plain copy / plain.

Usage:
    python bench/bench_export.py --run runs/digits-check/train \\
        --arch runs/digits-check/search/best.yaml --sample 4
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import header, write_result  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/digits-check/train", help="supernet run")
    p.add_argument("--arch", action="append", default=[], help="arch file (repeatable)")
    p.add_argument("--sample", type=int, default=4, help="also this many sampled archs")
    p.add_argument("--seed", type=int, default=11, help="seed of the sampled archs")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds per batch size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="export_cpu.md", help="result file under bench/results")
    return p.parse_args(argv)


def archs_of(args, space) -> list[tuple[str, object]]:
    from nas.arch import canonicalize, load_arch, sample_arch

    out = [(Path(a).parent.name + "/" + Path(a).name, canonicalize(space, load_arch(a)))
           for a in args.arch]
    rng = np.random.default_rng(args.seed)
    while len(out) < len(args.arch) + args.sample:
        arch = sample_arch(space, rng)
        if all(arch != a for _, a in out):
            out.append((f"sample {len(out) - len(args.arch) + 1}", arch))
    return out


def time_three(models: list[torch.nn.Module], arch, batch: int, rounds: int, threads: int,
               in_chans: int) -> np.ndarray:
    """ms of each model per round (rounds x models), models timed in turn each round,
    the order rotated from round to round."""
    from nas.export.timing import measure_latency

    device = {"batch_size": batch, "threads": threads}
    ms = np.zeros((rounds, len(models)))
    for r in range(rounds):
        order = np.roll(np.arange(len(models)), r)
        for i in order:
            ms[r, i] = measure_latency(models[i], arch, in_chans=in_chans, device=device)[0]
    return ms


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nas import training
    from nas.export.export import _subnet_model
    from nas.export.inference import optimize_for_inference
    from nas.export.timing import decide_rewrites, rewrite_name

    torch.set_num_threads(args.threads)
    run = training.load_run(args.run)
    space = run.space
    rows = []
    for name, arch in archs_of(args, space):
        plain, _ = _subnet_model(run, arch)
        allowed = {"fold_bn": True, "fuse_qkv": True, "onednn_linears": True}
        choice = decide_rewrites(plain, arch, allowed, in_chans=space.in_chans,
                                 device={"batch_size": 1, "threads": args.threads}).flags
        fast = optimize_for_inference(plain, **choice)
        models = [plain, fast, copy.deepcopy(plain)]
        for b in args.batch_sizes:
            ms = time_three(models, arch, b, args.rounds, args.threads, space.in_chans)
            ratio = np.median(ms[:, 1] / ms[:, 0])
            floor = np.median(ms[:, 2] / ms[:, 0])
            rows.append((name, rewrite_name(choice), b, float(np.median(ms[:, 0])),
                         float(np.median(ms[:, 1])), ratio, floor))
            print(f"{name}: batch {b}: plain {rows[-1][3]:.3f} ms, exported {rows[-1][4]:.3f} ms "
                  f"(x{ratio:.3f}; plain copy x{floor:.3f}), rewrites {rows[-1][1]}", flush=True)
    text = header("Exported vs plain model, side by side")
    text += (f"- run `{args.run}` (space {space.name}); rewrites chosen as `nas export` does: "
             f"every combination timed at batch 1, {args.threads} thread(s), in 3 interleaved "
             "rounds; each rewrite kept if the median of its paired with / without ratios "
             "is below 0.98, and the kept set dropped if it then measures slower than the "
             "plain model side by side\n"
             f"- each batch size: {args.rounds} rounds, in each the plain model, the exported "
             "model and a copy of the plain model timed in turn (order rotated), median of a "
             "0.3 s block each; ratios are medians over rounds of the per-round ratio\n\n"
             "| subnet | rewrites kept | batch | plain ms | exported ms | exported / plain | "
             "plain copy / plain (noise) |\n|---|---|---:|---:|---:|---:|---:|\n")
    for name, rw, b, p_ms, f_ms, ratio, floor in rows:
        text += (f"| {name} | {rw} | {b} | {p_ms:.3f} | {f_ms:.3f} | {ratio:.3f} | "
                 f"{floor:.3f} |\n")
    for b in args.batch_sizes:
        r = [x[5] for x in rows if x[2] == b]
        f = [x[6] for x in rows if x[2] == b]
        text += (f"\nbatch {b}: exported / plain worst {max(r):.3f}, median {np.median(r):.3f}; "
                 f"noise floor (plain copy / plain) within [{min(f):.3f}, {max(f):.3f}]\n")
    path = write_result(args.out, text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
