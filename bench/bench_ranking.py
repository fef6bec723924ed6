"""Ranking fidelity of the trained supernet: inherited weights vs training from scratch.

For ``--subnets`` random tiny32 subnets (fixed seed), compares the validation loss
with weights inherited from a trained supernet run against the validation loss of
the same subnet trained alone from scratch (``nas.model.build_model``) on the same
data with the same recipe (AdamW, cosine, label smoothing, shifts; warmup at most one
epoch) for the same budget: by default as many epochs as the supernet run was trained
(``--epochs`` overrides it). Reports Kendall's tau (scipy) between the two; target
tau >= 0.5. ``--also`` ranks against further (shorter) budgets, and a table shows,
dimension by dimension, how each ranking depends on the architecture: where the two
disagree.

Usage:
    python bench/bench_train.py                 # trains runs/bench_train/single first
    python bench/bench_ranking.py               # writes bench/results/ranking_cpu.md
    python bench/bench_ranking.py --run RUN_DIR --subnets 40 --epochs 60 --also 12:3
    python bench/bench_ranking.py --scratch-only   # fill the from-scratch cache only

From-scratch results are cached in ``bench/results/ranking_scratch_cache.json``
(committed, so the references outlive the machine that trained them: 60-epoch ones
cost about 1.5-3 min per subnet and seed on one core) keyed by the arch, the seed and
the recipe, so comparing several supernet runs trains each reference subnet once.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
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
from scipy.stats import kendalltau  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import create_scheduler_v2  # noqa: E402

from nas.arch import Arch, canonicalize, extreme_arch, sample_arch  # noqa: E402
from nas.complexity import count_params  # noqa: E402
from nas.errors import ArchError  # noqa: E402
from nas.io import read_json, write_json  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.training import TrainConfig, evaluate, evaluate_model, load_run, load_val_data  # noqa: E402
from nas.training.batches import TrainBatches  # noqa: E402
from nas.training.config import auto_threads  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench_train" / "single",
                   help="a nas train run of tiny32 on digits (default: bench_train's)")
    p.add_argument("--subnets", type=int, default=40, help="random subnets (>= 15)")
    p.add_argument("--epochs", type=int, default=None,
                   help="from-scratch budget per subnet (default: the supernet run's epochs)")
    p.add_argument("--seed", type=int, default=1, help="seed of the subnets and of scratch training")
    p.add_argument("--also", default="", metavar="EPOCHS:REPEATS[,...]",
                   help="further from-scratch budgets to rank against, e.g. 12:3 (default: none; "
                   "the committed cache holds the 60-epoch references only)")
    p.add_argument("--cache", type=Path,
                   default=ROOT / "bench" / "results" / "ranking_scratch_cache.json",
                   help="from-scratch results cache (JSON; committed)")
    p.add_argument("--scratch-only", action="store_true",
                   help="only train (and cache) the from-scratch references")
    p.add_argument("--only-repeat", type=int, default=None, metavar="K",
                   help="with --scratch-only: train only repeat K (run one process per K "
                   "to fill the cache in parallel)")
    p.add_argument("--compare-runs", default=str(ROOT / "runs" / "bench_train" / "ray2"),
                   metavar="RUN[,RUN...]",
                   help="other supernet runs of the same space (default: bench_train's Ray run; "
                   "missing ones are skipped): how reproducible the inherited ranking is")
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


RECIPE_KEYS = ("data", "batch_size", "lr", "weight_decay", "warmup_epochs", "warmup_lr",
               "min_lr", "label_smoothing", "max_shift", "clip_grad", "limit_train", "limit_val")


def scratch_key(arch: Arch, run_cfg: dict, epochs: int, seed: int) -> str:
    recipe = {k: run_cfg.get(k) for k in RECIPE_KEYS}
    blob = json.dumps([arch.to_dict(), recipe, epochs, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def locked(path: Path):
    """Exclusive lock on ``path``'s sidecar ``.lock`` file (several ``--only-repeat``
    processes merge their entries into one cache)."""
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_scratch(cache: Path, arch: Arch, run_cfg: dict, epochs: int, seed: int, x, y) -> dict:
    """``train_scratch`` through the JSON cache (merged under a lock and written atomically
    after each new entry, so parallel processes keep each other's entries)."""
    table = read_json(cache, what="scratch cache") if cache.is_file() else {}
    key = scratch_key(arch, run_cfg, epochs, seed)
    if key not in table:
        table[key] = train_scratch(arch, run_cfg, epochs, seed, x, y)
        with locked(cache):
            fresh = read_json(cache, what="scratch cache") if cache.is_file() else {}
            write_json(cache, {**fresh, key: table[key]})
    return table[key]


def family_split_tau(archs: list[Arch], a: list[float], b: list[float]) -> tuple[float, float]:
    """Kendall tau (tau-a over untied pairs) of ``a`` vs ``b`` over pairs of archs with the
    same stage-0 mixer, and over pairs with different ones: is the disagreement only the
    mixer family's offset?"""
    score = {True: [0, 0], False: [0, 0]}
    for i in range(len(archs)):
        for j in range(i + 1, len(archs)):
            s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
            if s:
                score[archs[i].stages[0].mixer == archs[j].stages[0].mixer][int(s < 0)] += 1
    return tuple((c - d) / max(c + d, 1) for c, d in (score[True], score[False]))


# training settings whose non-default values are named in the "other runs" table
TRAINING_RULES = ("num_random", "sandwich_rule", "distill_from", "end_reduction",
                  "block_sharing", "epochs")


def compare_runs(spec: str, archs: list[Arch], rows: list[dict], x, y, scratch,
                 train_xy) -> str:
    """Kendall tau of other supernet runs' inherited ranking with this run's and with scratch:
    separates "weight sharing ranks noisily" from "it ranks reproducibly, but differently",
    and scores other training rules (their differences from this run are named)."""
    out = []
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for path in [Path(p) for p in spec.split(",") if p]:
        if not (path / "checkpoints" / "last.safetensors").is_file():
            print(f"compare: no trained run at {path}, skipped")
            continue
        other = load_run(path)
        loss = [evaluate(other.supernet, a, x, y)["loss"] for a in archs]
        refit = [evaluate(other.supernet, a, x, y, refit=train_xy)["loss"] for a in archs]
        mine = kendalltau(loss, [r["inh"]["loss"] for r in rows]).statistic
        scr, scr_refit = (kendalltau(v, scratch).statistic for v in (loss, refit))
        rules = ", ".join(f"{k} {other.config.get(k, defaults[k])}" for k in TRAINING_RULES
                          if other.config.get(k, defaults[k]) != defaults[k])
        out.append(f"| `{path}` (workers {other.config.get('workers') or 1}, seed "
                   f"{other.config['seed']}{', ' + rules if rules else ''}) | {mine:.3f} | "
                   f"{scr:.3f} | {scr_refit:.3f} |")
    if not out:
        return ""
    return ("\n## Other supernet runs\n\n"
            "Inherited val loss of the same subnets in other supernet runs of the space, "
            "ranked against this run's inherited loss and against the from-scratch loss (same "
            "budget):\n\n"
            "| other run (its settings that differ from the defaults) | tau vs this run "
            "(inherited) | tau vs scratch | tau vs scratch, classifier refit |\n"
            "|---|---:|---:|---:|\n" + "\n".join(out) + "\n")


def arch_features(space, archs: list[Arch]) -> dict[str, list[float]]:
    """Per-arch values of the dimensions that move the rankings (for ``dimension_table``)."""
    feats: dict[str, list[float]] = {}
    for i, ss in enumerate(space.stages):
        local = [m for m in ss.mixer if m in ("pool", "dwconv")]
        if local and len(local) < len(ss.mixer):
            feats[f"stage {i} mixer is {'/'.join(local)}"] = [
                float(a.stages[i].mixer in local) for a in archs]
        for name in ("embed_dim", "depth", "mlp_ratio", "low_rank", "keep_ratio"):
            if len(ss.choices(name)) > 1:
                feats[f"stage {i} {name}"] = [float(getattr(a.stages[i], name)) for a in archs]
        if "prune" in ss.reduce_method and min(ss.keep_ratio) < 1:
            feats[f"stage {i} tokens pruned"] = [
                float(a.stages[i].keep_ratio < 1 and a.stages[i].reduce_method == "prune")
                for a in archs]
    feats["params"] = [float(count_params(a, num_classes=space.num_classes)) for a in archs]
    return feats


def dimension_table(space, archs: list[Arch], rankings: dict[str, list[float]]) -> str:
    """Kendall tau of each dimension with each loss ranking: > 0, a larger value means a
    higher loss. A row where inherited and scratch differ is a dimension that weight
    sharing (or the budget) rates differently."""
    head = " | ".join(rankings)
    out = ["", "## What each ranking depends on", "",
           "Kendall tau between a dimension's value and the val loss (> 0: larger value, higher "
           "loss):", "", f"| dimension | {head} |", "|---|" + "---:|" * len(rankings)]
    for name, values in arch_features(space, archs).items():
        cells = " | ".join(f"{kendalltau(values, loss).statistic:+.2f}"
                           for loss in rankings.values())
        out.append(f"| {name} | {cells} |")
    return "\n".join(out) + "\n"


def family_table(space, archs: list[Arch], inh: list[float], refit: list[float],
                 scratch: np.ndarray) -> str:
    """How much of the scratch ranking one bit (a stage's mixer family) explains, and how
    well inherited weights rank inside each family, against each family's own noise ceiling.
    ``scratch`` is (subnets, seeds)."""
    mean = scratch.mean(1)
    out = []
    for name, bit in arch_features(space, archs).items():
        if " mixer is " not in name:
            continue
        bit = np.array(bit, bool)
        alone = abs(kendalltau(bit.astype(float), mean).statistic)
        out.append(f"Ranking by `{name}` alone (the family with the lower scratch loss first, "
                   f"ties inside): **tau {alone:.3f}** against scratch; the two-seed noise "
                   f"ceiling is {seed_tau(scratch):.3f}.\n")
        out.append("| subnets | n | inherited | refit | noise ceiling (two seeds) |")
        out.append("|---|---:|---:|---:|---:|")
        for label, m in ((name, bit), (name.replace(" is ", " is not "), ~bit)):
            if m.sum() < 4:
                continue
            cells = [kendalltau(np.asarray(v)[m], mean[m]).statistic for v in (inh, refit)]
            out.append(f"| {label} | {m.sum()} | {cells[0]:.3f} | {cells[1]:.3f} | "
                       f"{seed_tau(scratch[m]):.3f} |")
        out.append("")
    if not out:
        return ""
    return ("\n## What one mixer family bit explains\n\n" + "\n".join(out))


def one_change_table(run, x, y) -> str:
    """Inherited accuracy of the largest subnet with one dimension changed: where sharing
    hurts (a diagnostic for the weight-sharing rules, not part of the target)."""
    big = extreme_arch(run.space, "max")

    def change(i: int, **kw) -> Arch:
        st = list(big.stages)
        st[i] = dataclasses.replace(st[i], **kw)
        return canonicalize(run.space, dataclasses.replace(big, stages=tuple(st)))

    cases = {"largest": big, "smallest": extreme_arch(run.space, "min")}
    for i, ss in enumerate(run.space.stages):
        for name in ("heads", "qk_ratio", "mlp_ratio", "low_rank", "depth", "embed_dim"):
            low = min(ss.choices(name))
            if low != getattr(big.stages[i], name):
                cases[f"stage {i}: {name} = {low}"] = (i, {name: low})
        for m in ss.mixer:
            if m != big.stages[i].mixer:
                mixers = tuple(m if j == i else s.mixer for j, s in enumerate(big.stages))
                cases[f"stage {i}: mixer = {m}"] = extreme_arch(run.space, "max", mixers)
        for k in ss.keep_ratio:
            for method in ss.reduce_method if k < 1 else ():
                cases[f"stage {i}: {method} to {k}"] = (i, {"keep_ratio": k, "reduce_method": method})
    out = ["", "## One change from the largest subnet (inherited weights)", "",
           "| subnet | val acc | val loss |", "|---|---:|---:|"]
    for name, spec in cases.items():
        try:
            arch = spec if isinstance(spec, Arch) else change(spec[0], **spec[1])
        except (ArchError, ValueError):
            continue
        r = evaluate(run.supernet, arch, x, y)
        out.append(f"| {name} | {100 * r['acc']:.2f}% | {r['loss']:.4f} |")
    return "\n".join(out) + "\n"


def scratch_losses(args, archs, run_cfg, epochs: int, repeats: int, x, y) -> np.ndarray:
    """(subnets, repeats) from-scratch val losses, trained (and cached) where missing."""
    return np.array([[cached_scratch(args.cache, a, run_cfg, epochs, args.seed + k, x, y)["loss"]
                      for k in range(repeats)] for a in archs])


def seed_tau(loss: np.ndarray) -> float:
    """Kendall tau between the first two scratch seeds of ``loss`` (subnets, seeds); nan
    with one seed."""
    return kendalltau(loss[:, 0], loss[:, 1]).statistic if loss.shape[1] > 1 else float("nan")


def noise_ceiling(loss: np.ndarray) -> str:
    """Kendall tau between scratch seeds: two seeds, and one seed vs the mean of the rest."""
    if loss.shape[1] < 2:
        return "n/a (1 seed)"
    pair = seed_tau(loss)
    rest = np.mean([kendalltau(loss[:, k], np.delete(loss, k, axis=1).mean(1)).statistic
                    for k in range(loss.shape[1])])
    return f"{pair:.3f} / {rest:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subnets < 15:
        raise SystemExit("--subnets must be >= 15")
    if args.scratch_only and not (args.run / "config.json").is_file():
        raise SystemExit(f"--scratch-only still needs a run's config (recipe): {args.run}")
    if not args.scratch_only and not (args.run / "checkpoints" / "last.safetensors").is_file():
        raise SystemExit(f"no trained run at {args.run}; run bench/bench_train.py first "
                         "or pass --run")
    torch.set_num_threads(auto_threads(1))
    if args.scratch_only:
        from nas.space import load_space
        run_cfg = read_json(args.run / "config.json", what="run config")
        space = load_space(run_cfg["space"])
        run = None
    else:
        run = load_run(args.run)
        run_cfg, space = run.config, run.space
    if args.epochs is None:  # the same budget as the supernet
        args.epochs = int(run_cfg["epochs"])
    x, y = load_val_data(run_cfg)
    archs = unique_archs(space, args.subnets, args.seed)
    if args.scratch_only:
        t0 = time.perf_counter()
        ks = [args.only_repeat] if args.only_repeat is not None else range(args.repeats)
        for i, arch in enumerate(archs):
            t = time.perf_counter()
            reps = [cached_scratch(args.cache, arch, run_cfg, args.epochs, args.seed + k, x, y)
                    for k in ks]
            print(f"subnet {i}: scratch losses {[round(r['loss'], 4) for r in reps]} "
                  f"({time.perf_counter() - t:.0f}s)", flush=True)
        print(f"scratch references cached in {args.cache} "
              f"({(time.perf_counter() - t0) / 60:.1f} min)")
        return 0
    t0 = time.perf_counter()
    train_xy = load_val_data(run_cfg, split="train")
    rows = []
    for i, arch in enumerate(archs):
        t = time.perf_counter()
        reps = [cached_scratch(args.cache, arch, run_cfg, args.epochs, args.seed + k, x, y)
                for k in range(args.repeats)]
        inherited = evaluate(run.supernet, arch, x, y)
        refit = evaluate(run.supernet, arch, x, y, refit=train_xy)
        scratch = {m: float(np.mean([r[m] for r in reps])) for m in ("loss", "acc")}
        rows.append({"i": i, "params": count_params(arch, num_classes=run.space.num_classes),
                     "inh": inherited, "refit": refit, "scr": scratch, "reps": reps,
                     "mixers": "/".join(s.mixer for s in arch.stages)})
        print(f"subnet {i}: inherited loss {inherited['loss']:.4f} (refit {refit['loss']:.4f}) | "
              f"scratch loss {scratch['loss']:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
    inh_loss, refit_loss = ([r[k]["loss"] for r in rows] for k in ("inh", "refit"))
    budgets = {args.epochs: np.array([[rep["loss"] for rep in r["reps"]] for r in rows])}
    for spec in filter(None, args.also.split(",")):
        epochs, repeats = (int(v) for v in spec.split(":"))
        budgets[epochs] = scratch_losses(args, archs, run_cfg, epochs, repeats, x, y)
    total = time.perf_counter() - t0
    main_loss = budgets[args.epochs].mean(1)
    tau, tau_refit = (kendalltau(v, main_loss) for v in (inh_loss, refit_loss))
    tau_acc = kendalltau([r["inh"]["acc"] for r in rows], [r["scr"]["acc"] for r in rows])
    within, across = family_split_tau(archs, inh_loss, main_loss.tolist())
    cfg = {"sandwich_rule": "classic", "block_sharing": "all", **run.config}
    text = header("Ranking fidelity: inherited weights vs from scratch (tiny32, digits)")
    text += (f"- supernet run: `{args.run}` (epoch {run.epoch}, {cfg['num_random']} "
             f"random subnets per step, sandwich rule {cfg['sandwich_rule']}, block sharing "
             f"{cfg['block_sharing']}, distill from {cfg.get('distill_from', 'largest')}, "
             f"end reduction {cfg.get('end_reduction', 'extreme')}, seed {cfg['seed']})\n"
             f"- {len(rows)} random subnets (seed {args.seed}); from scratch: the same budget "
             f"as the supernet, {args.epochs} epochs each (mean of {args.repeats} seeds), same "
             "data, batch size, optimizer and schedule (warmup at most 1 epoch)\n"
             f"- time: {total / 60:.1f} min (cached references are not retrained)\n\n"
             f"**Kendall tau (val loss), inherited weights vs {args.epochs}-epoch scratch = "
             f"{tau.statistic:.3f}** (p = {tau.pvalue:.2g}; target >= 0.5); with the classifier "
             f"refit: **{tau_refit.statistic:.3f}** (p = {tau_refit.pvalue:.2g}); Kendall tau (val "
             f"acc) = {tau_acc.statistic:.3f}; pairs with the same stage-0 mixer: tau "
             f"{within:.3f}, pairs with different ones: tau {across:.3f}\n\n")
    names = [f"scratch {e} epochs ({b.shape[1]} seeds)" for e, b in budgets.items()]
    text += ("| Kendall tau (val loss) | " + " | ".join(names) + " |\n|---|"
             + "---:|" * len(budgets) + "\n")
    for name, loss in (("inherited weights", inh_loss),
                       ("inherited weights, classifier refit on the train split", refit_loss)):
        text += (f"| {name} | " + " | ".join(f"{kendalltau(loss, b.mean(1)).statistic:.3f}"
                                             for b in budgets.values()) + " |\n")
    text += ("| noise ceiling: two scratch seeds / one seed vs the others' mean | "
             + " | ".join(noise_ceiling(b) for b in budgets.values()) + " |\n")
    if len(budgets) > 1:
        e0 = next(iter(budgets))
        text += (f"| this budget's ranking vs the {e0}-epoch one | "
                 + " | ".join(f"{kendalltau(main_loss, b.mean(1)).statistic:.3f}"
                              for b in budgets.values()) + " |\n")
    text += ("\n| # | mixers | params | inherited loss | inherited acc | refit loss | "
             "scratch loss | scratch acc |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        text += (f"| {r['i']} | {r['mixers']} | {r['params']:,} | {r['inh']['loss']:.4f} | "
                 f"{100 * r['inh']['acc']:.2f}% | {r['refit']['loss']:.4f} | "
                 f"{r['scr']['loss']:.4f} | {100 * r['scr']['acc']:.2f}% |\n")
    text += dimension_table(run.space, archs, {
        "inherited": inh_loss, "refit": refit_loss,
        **{f"scratch {e} ep": b.mean(1).tolist() for e, b in budgets.items()}})
    text += family_table(run.space, archs, inh_loss, refit_loss, budgets[args.epochs])
    text += compare_runs(args.compare_runs, archs, rows, x, y, budgets[args.epochs].mean(1),
                         train_xy)
    text += one_change_table(run, x, y)
    path = write_result("ranking_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
