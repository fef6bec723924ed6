"""Ranking fidelity of the trained supernet: inherited weights vs training from scratch.

For ``--subnets`` random tiny32 subnets (fixed seed), compares the validation loss
with weights inherited from a trained supernet run against the validation loss of
the same subnet trained alone from scratch (``nas.model.build_model``) on the same
data with the same recipe (AdamW, cosine, label smoothing, shifts) for a fixed,
equal budget of ``--epochs`` epochs. Reports Kendall's tau (scipy) between the two;
target tau >= 0.5.

Usage:
    python bench/bench_train.py                 # trains runs/bench_train/single first
    python bench/bench_ranking.py               # writes bench/results/ranking_cpu.md
    python bench/bench_ranking.py --run RUN_DIR --subnets 16 --epochs 12
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import header, write_result  # noqa: E402
from scipy.stats import kendalltau, spearmanr  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import create_scheduler_v2  # noqa: E402

from nas.arch import Arch, sample_arch  # noqa: E402
from nas.complexity import count_params  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.training import TrainConfig, evaluate, evaluate_model, load_run, load_val_data  # noqa: E402
from nas.training.batches import TrainBatches  # noqa: E402
from nas.training.config import auto_threads  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench_train" / "single",
                   help="a nas train run of tiny32 on digits (default: bench_train's)")
    p.add_argument("--subnets", type=int, default=16, help="random subnets (>= 15)")
    p.add_argument("--epochs", type=int, default=12, help="from-scratch budget per subnet")
    p.add_argument("--seed", type=int, default=1, help="seed of the subnets and of scratch training")
    p.add_argument("--repeats", type=int, default=2,
                   help="scratch trainings per subnet (seeds seed, seed+1, ...); their mean is "
                   "the reference and their mutual tau the noise ceiling")
    return p.parse_args(argv)


def unique_archs(space, n: int, seed: int) -> list[Arch]:
    rng = np.random.default_rng(seed)
    out: list[Arch] = []
    while len(out) < n:
        arch = sample_arch(space, rng)
        if arch not in out:
            out.append(arch)
    return out


def train_scratch(arch: Arch, run_cfg: dict, epochs: int, seed: int, x_val, y_val) -> dict:
    """The supernet's recipe (minus the sandwich) applied to one standalone subnet."""
    cfg = TrainConfig.from_dict({**run_cfg, "epochs": epochs, "seed": seed,
                                 "warmup_epochs": min(run_cfg["warmup_epochs"], 1)})
    batches = TrainBatches(cfg, image_size=int(run_cfg["image_size"]))
    torch.manual_seed(seed)  # build_model initialises from the global generator
    model = build_model(arch, num_classes=int(run_cfg["num_classes"]))
    opt = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=epochs,
                                   warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr,
                                   min_lr=cfg.min_lr, step_on_epochs=False,
                                   updates_per_epoch=batches.steps_per_epoch)
    shuffle = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(epochs):
        model.train()
        for x, y in batches.epoch(shuffle, epoch=epoch):
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            step += 1
            sched.step_update(num_updates=step)
    return evaluate_model(model, x_val, y_val)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subnets < 15:
        raise SystemExit("--subnets must be >= 15")
    if not (args.run / "checkpoints" / "last.safetensors").is_file():
        raise SystemExit(f"no trained run at {args.run}; run bench/bench_train.py first "
                         "or pass --run")
    torch.set_num_threads(auto_threads(1))
    run = load_run(args.run)
    x, y = load_val_data(run.config)
    archs = unique_archs(run.space, args.subnets, args.seed)
    rows = []
    t0 = time.perf_counter()
    for i, arch in enumerate(archs):
        inherited = evaluate(run.supernet, arch, x, y)
        t = time.perf_counter()
        reps = [train_scratch(arch, run.config, args.epochs, args.seed + k, x, y)
                for k in range(args.repeats)]
        scratch = {m: float(np.mean([r[m] for r in reps])) for m in ("loss", "acc")}
        rows.append({"i": i, "params": count_params(arch, num_classes=run.space.num_classes),
                     "inh": inherited, "scr": scratch, "reps": reps,
                     "time": time.perf_counter() - t, "mixers": "/".join(s.mixer for s in arch.stages)})
        print(f"subnet {i}: inherited loss {inherited['loss']:.4f} acc {inherited['acc']:.4f} | "
              f"scratch loss {scratch['loss']:.4f} acc {scratch['acc']:.4f} "
              f"({rows[-1]['time']:.0f}s)", flush=True)
    total = time.perf_counter() - t0
    tau_loss = kendalltau([r["inh"]["loss"] for r in rows], [r["scr"]["loss"] for r in rows])
    tau_acc = kendalltau([r["inh"]["acc"] for r in rows], [r["scr"]["acc"] for r in rows])
    rho = spearmanr([r["inh"]["loss"] for r in rows], [r["scr"]["loss"] for r in rows])
    ceiling = ""
    if args.repeats >= 2:
        tau_rep = kendalltau([r["reps"][0]["loss"] for r in rows], [r["reps"][1]["loss"] for r in rows])
        ceiling = (f"; noise ceiling: Kendall tau (val loss) between two from-scratch seeds = "
                   f"{tau_rep.statistic:.3f}")
    text = header("Ranking fidelity: inherited weights vs from scratch (tiny32, digits)")
    text += ("Shared machine: other jobs were using the same 2 cores, so times are noisy.\n\n"
             f"- supernet run: `{args.run}` (epoch {run.epoch}, {run.config['num_random']} "
             f"random subnets per step, seed {run.config['seed']})\n"
             f"- {len(rows)} random subnets (seed {args.seed}); from scratch: "
             f"{args.epochs} epochs each (mean of {args.repeats} seeds), same data, batch "
             "size, optimizer and schedule as the supernet run\n"
             f"- time: {total / 60:.1f} min\n\n"
             f"**Kendall tau (val loss) = {tau_loss.statistic:.3f}** (p = {tau_loss.pvalue:.2g}; "
             f"target >= 0.5); Kendall tau (val acc) = {tau_acc.statistic:.3f}; "
             f"Spearman rho (val loss) = {rho.statistic:.3f}{ceiling}\n\n"
             "| # | mixers | params | inherited loss | inherited acc | scratch loss | "
             "scratch acc |\n|---:|---|---:|---:|---:|---:|---:|\n")
    for r in rows:
        text += (f"| {r['i']} | {r['mixers']} | {r['params']:,} | {r['inh']['loss']:.4f} | "
                 f"{100 * r['inh']['acc']:.2f}% | {r['scr']['loss']:.4f} | "
                 f"{100 * r['scr']['acc']:.2f}% |\n")
    path = write_result("ranking_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
