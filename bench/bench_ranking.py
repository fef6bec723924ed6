"""Ranking fidelity of a trained supernet: inherited weights vs standalone training.

For ``--subnets`` random subnets of the run's space (fixed seed), compares the
validation loss with weights inherited from a trained supernet run against the
validation loss of the same subnet trained alone from scratch with the product's
standalone training (``nas train --arch``: the supernet run's recipe, i.e. data,
batch size, optimizer, schedule, augmentation) at a stated budget: by default the
run's own epochs and training subset; ``--epochs`` and ``--limit-train`` set a smaller
one. Reports Kendall's tau (scipy) between the two, overall and within/across stage-0
mixer families, next to the noise ceiling (tau between two standalone seeds), and a
table of how each ranking depends on each dimension.

Usage:
    python bench/bench_train.py                 # digits: trains runs/bench_train/single first
    python bench/bench_ranking.py               # digits: writes bench/results/ranking_cpu.md
    nas run --config cifar10 --out runs/cifar10 --until train    # CIFAR-10 supernet
    python bench/bench_ranking.py --run runs/cifar10/train --epochs 10 --limit-train 10000
    python bench/bench_ranking.py ... --scratch-only [--only-repeat K]  # fill the cache only

Standalone results are cached in ``bench/results/standalone_<space>_<data>.json``
(committed, so the references outlive the machine) keyed by the arch, the recipe and
the seed (see ``bench/references.py``); each reference trains in its own resumable
run directory under ``runs/references/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import header, write_result  # noqa: E402
from ranking_tables import (  # noqa: E402
    dimension_table,
    family_split_tau,
    family_table,
    noise_ceiling,
    one_change_table,
    summary_table,
)
from references import cached_reference, locked, reference_recipe  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from nas.arch import Arch, sample_arch  # noqa: E402
from nas.complexity import count_params  # noqa: E402
from nas.data import parse_data_spec  # noqa: E402
from nas.io import read_json, write_json  # noqa: E402
from nas.predictors.proxies import PROXIES, ProxyScorer  # noqa: E402
from nas.space import parse_space  # noqa: E402
from nas.training import TrainConfig, evaluate, load_run, load_val_data  # noqa: E402
from nas.training.config import auto_threads  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench_train" / "single",
                   help="a nas train supernet run (default: bench_train's tiny32 on digits)")
    p.add_argument("--subnets", type=int, default=40, help="random subnets (>= 15)")
    p.add_argument("--epochs", type=int, default=None,
                   help="standalone budget per subnet (default: the supernet run's epochs)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="standalone training subset (default: the supernet run's)")
    p.add_argument("--seed", type=int, default=1, help="seed of the subnets and of scratch training")
    p.add_argument("--also", default="", metavar="EPOCHS:REPEATS[,...]",
                   help="further standalone budgets to rank against, e.g. 12:3 (default: none)")
    p.add_argument("--cache", type=Path, default=None,
                   help="standalone results cache (JSON; committed; default "
                   "bench/results/standalone_<space>_<data>.json)")
    p.add_argument("--out", default=None, help="results file name under bench/results "
                   "(default ranking_cpu.md for digits, ranking_<data>_cpu.md otherwise)")
    p.add_argument("--scratch-only", action="store_true",
                   help="only train (and cache) the standalone references")
    p.add_argument("--only-repeat", type=int, default=None, metavar="K",
                   help="with --scratch-only: train only repeat K (run one process per K "
                   "to fill the cache in parallel)")
    p.add_argument("--inherited-only", action="store_true",
                   help="only evaluate (and cache) what needs the supernet: inherited results "
                   "and the signals at initialisation")
    p.add_argument("--cached-only", action="store_true",
                   help="rank only the subnets whose references are all cached (a preliminary "
                   "table while they are trained; the header says how many)")
    p.add_argument("--reverse", action="store_true",
                   help="with --scratch-only: train the subnets last first (a second process "
                   "filling the same cache meets the first in the middle)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads of each standalone training (0: automatic)")
    p.add_argument("--compare-runs", default=str(ROOT / "runs" / "bench_train" / "ray2"),
                   metavar="RUN[,RUN...]",
                   help="other supernet runs of the same space (default: bench_train's Ray run; "
                   "missing ones are skipped): how reproducible the inherited ranking is")
    p.add_argument("--proxies", default=",".join(PROXIES),
                   help=f"signals at initialisation to rank with (default {','.join(PROXIES)}; "
                   "'' for none)")
    p.add_argument("--proxy-steps", type=int, default=100,
                   help="training steps of the train_speed signal (default 100)")
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


def scratch_losses(args, archs, recipe: dict, repeats: int) -> np.ndarray:
    """(subnets, repeats) from-scratch val losses, trained (and cached) where missing."""
    return np.array([[cached_reference(args.cache, a, recipe, args.seed + k)["loss"]
                      for k in range(repeats)] for a in archs])


def proxy_scores(args, run_cfg: dict, space, archs: list[Arch], train_xy,
                 cache: InheritedCache) -> tuple[dict, dict]:
    """Each signal's loss-like ranking of ``archs`` (minus its score) and its CPU s per arch
    (cached beside the inherited results: train_speed costs seconds per arch)."""
    names = [n for n in args.proxies.split(",") if n]
    scorer = None
    scores, costs = {}, {}
    for name in names:
        key = f"{name}:{args.seed}:{args.proxy_steps}"
        got = [cache.signal(key, a) for a in archs]
        if any(g is None for g in got):
            if scorer is None:
                scorer = ProxyScorer(space, *train_xy, seed=args.seed, steps=args.proxy_steps,
                                     lr=float(run_cfg["lr"]),
                                     weight_decay=float(run_cfg["weight_decay"]),
                                     max_shift=int(run_cfg.get("max_shift", 0)),
                                     hflip=bool(run_cfg.get("hflip")))
            got = [g if g is not None else cache.put_signal(
                key, a, scorer.score(a, name), scorer.seconds[name]) for a, g in zip(archs, got)]
        scores[name] = [-g["score"] for g in got]
        costs[name] = float(np.mean([g["cpu_s"] for g in got]))
        print(f"signal {name}: {costs[name]:.2f} CPU s per arch", flush=True)
    return scores, costs


class InheritedCache:
    """What the bench computes from the trained supernet (inherited and classifier-refit
    val loss/acc per subnet) and the signals at initialisation, cached in
    ``bench/results/ranking_inherited.json`` under the run's path with its config, so the
    table can be written after the run directory is gone (its checkpoint is too large to
    commit, and the references may take several sittings)."""

    PATH = ROOT / "bench" / "results" / "ranking_inherited.json"

    def __init__(self, run_dir: Path):
        path = Path(run_dir).resolve()
        self.key = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        table = read_json(self.PATH, what="inherited cache") if self.PATH.is_file() else {}
        self.entry = table.get(self.key)

    def _save(self) -> None:
        with locked(self.PATH):
            table = read_json(self.PATH, what="inherited cache") if self.PATH.is_file() else {}
            table[self.key] = self.entry
            write_json(self.PATH, table)

    def get(self, run, arch: Arch, x, y, train_xy) -> tuple[dict, dict]:
        """Inherited and refit results of ``arch`` (computed with ``run`` when not cached)."""
        aj = arch.to_json()
        if run is not None:
            fresh = {"fingerprint": run.space.fingerprint, "epoch": run.epoch}
            if self.entry is None or {k: self.entry.get(k) for k in fresh} != fresh:
                self.entry = {**fresh, "config": run.config, "archs": {}, "signals": {}}
        got = (self.entry or {}).get("archs", {}).get(aj)
        if got is None:
            if run is None:
                raise SystemExit(f"no cached inherited result for {aj} and no supernet")
            got = {"inh": evaluate(run.supernet, arch, x, y),
                   "refit": evaluate(run.supernet, arch, x, y, refit=train_xy)}
            self.entry["archs"][aj] = got
            self._save()
        return got["inh"], got["refit"]

    def signal(self, key: str, arch: Arch) -> dict | None:
        return ((self.entry or {}).get("signals", {}).get(key) or {}).get(arch.to_json())

    def put_signal(self, key: str, arch: Arch, score: float, seconds: list[float]) -> dict:
        got = {"score": score, "cpu_s": seconds[-1]}
        if self.entry is not None:
            self.entry.setdefault("signals", {}).setdefault(key, {})[arch.to_json()] = got
            self._save()
        return got


@dataclasses.dataclass
class Bench:
    """What the stages of ``main`` share: the supernet run, its recipe and the subnets."""

    args: argparse.Namespace
    run: object | None  # the loaded run; None when only its config or cached results remain
    run_cfg: dict
    space: object
    recipe: dict
    limit: int
    data_kind: str
    inherited_cache: InheritedCache
    x: object
    y: object
    archs: list[Arch]


def load_supernet(args, inherited_cache: InheritedCache) -> tuple[object | None, dict]:
    """The trained run (None when only its config or its cached results remain) and its
    config."""
    if args.scratch_only:
        return None, read_json(args.run / "config.json", what="run config")
    if (args.run / "checkpoints" / "last.safetensors").is_file():
        run = load_run(args.run)
        return run, run.config
    if inherited_cache.entry is not None:  # the supernet is gone: its cached results
        print(f"{args.run} has no checkpoint: ranking from the cached inherited results")
        return None, inherited_cache.entry["config"]
    raise SystemExit(f"no trained run at {args.run} (nor cached results of it); run "
                     "bench/bench_train.py first or pass --run")


def prepare(args) -> Bench:
    """Checks the arguments, loads the run and resolves the standalone budget (fills in
    ``args.epochs`` and ``args.cache`` where they were left out)."""
    if args.subnets < 15:
        raise SystemExit("--subnets must be >= 15")
    if args.scratch_only and not (args.run / "config.json").is_file():
        raise SystemExit(f"--scratch-only still needs a run's config (recipe): {args.run}")
    torch.set_num_threads(args.threads or auto_threads(1))
    inherited_cache = InheritedCache(args.run)
    run, run_cfg = load_supernet(args, inherited_cache)
    space = parse_space(run_cfg["search_space"], source=f"{args.run}/config.json")
    if args.epochs is None:  # the same budget as the supernet
        args.epochs = int(run_cfg["epochs"])
    limit = int(run_cfg.get("limit_train", 0)) if args.limit_train is None else args.limit_train
    recipe = reference_recipe(run_cfg, epochs=args.epochs, limit_train=limit)
    spec = parse_data_spec(run_cfg["data"])
    data_kind = spec.kind if spec.path is None else Path(spec.path).name.split(".")[0]
    if args.cache is None:
        args.cache = ROOT / "bench" / "results" / f"standalone_{space.name}_{data_kind}.json"
    x, y = load_val_data(run_cfg)
    archs = unique_archs(space, args.subnets, args.seed)
    return Bench(args=args, run=run, run_cfg=run_cfg, space=space, recipe=recipe, limit=limit,
                 data_kind=data_kind, inherited_cache=inherited_cache, x=x, y=y, archs=archs)


def train_references(b: Bench) -> None:
    """--scratch-only: trains (and caches) the standalone references."""
    args = b.args
    t0 = time.perf_counter()
    ks = [args.only_repeat] if args.only_repeat is not None else range(args.repeats)
    order = list(enumerate(b.archs))
    for i, arch in order[::-1] if args.reverse else order:
        t = time.perf_counter()
        reps = [cached_reference(args.cache, arch, b.recipe, args.seed + k,
                                 threads=args.threads) for k in ks]
        print(f"subnet {i}: scratch losses {[round(r['loss'], 4) for r in reps]} "
              f"({time.perf_counter() - t:.0f}s)", flush=True)
    print(f"scratch references cached in {args.cache} "
          f"({(time.perf_counter() - t0) / 60:.1f} min)")


def cached_archs(b: Bench) -> list[Arch]:
    """--cached-only: the subnets whose references are all cached (at least 15)."""
    args = b.args
    done = [all(cached_reference(args.cache, a, b.recipe, args.seed + k, train_missing=False)
                for k in range(args.repeats)) for a in b.archs]
    archs = [a for a, ok in zip(b.archs, done) if ok]
    print(f"--cached-only: {len(archs)} of {args.subnets} subnets have all their references")
    if len(archs) < 15:
        raise SystemExit("--cached-only: fewer than 15 subnets have their references")
    return archs


def cache_inherited(b: Bench, train_xy) -> None:
    """--inherited-only: the supernet-dependent part, cached (references may follow later)."""
    for i, arch in enumerate(b.archs):
        b.inherited_cache.get(b.run, arch, b.x, b.y, train_xy)
        print(f"subnet {i}: inherited results cached", flush=True)
    proxy_scores(b.args, b.run_cfg, b.space, b.archs, train_xy, b.inherited_cache)


def measure_subnets(b: Bench, train_xy) -> list[dict]:
    """Per subnet: inherited and refit results, and its standalone references (trained where
    missing)."""
    args = b.args
    rows = []
    for i, arch in enumerate(b.archs):
        t = time.perf_counter()
        reps = [cached_reference(args.cache, arch, b.recipe, args.seed + k, threads=args.threads)
                for k in range(args.repeats)]
        inherited, refit = b.inherited_cache.get(b.run, arch, b.x, b.y, train_xy)
        scratch = {m: float(np.mean([r[m] for r in reps])) for m in ("loss", "acc")}
        rows.append({"i": i, "params": count_params(arch, num_classes=b.space.num_classes),
                     "inh": inherited, "refit": refit, "scr": scratch, "reps": reps,
                     "mixers": "/".join(s.mixer for s in arch.stages)})
        print(f"subnet {i}: inherited loss {inherited['loss']:.4f} (refit {refit['loss']:.4f}) | "
              f"scratch loss {scratch['loss']:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
    return rows


def scratch_budgets(b: Bench, rows: list[dict]) -> dict[int, np.ndarray]:
    """(subnets, seeds) standalone val losses per budget in epochs: the main one, then
    ``--also``'s."""
    args = b.args
    budgets = {args.epochs: np.array([[rep["loss"] for rep in r["reps"]] for r in rows])}
    for spec in filter(None, args.also.split(",")):
        epochs, repeats = (int(v) for v in spec.split(":"))
        budgets[epochs] = scratch_losses(args, b.archs, {**b.recipe, "epochs": epochs}, repeats)
    return budgets


def report_intro(b: Bench, rows: list[dict], budgets: dict[int, np.ndarray],
                 total: float) -> str:
    """The header: the run, the budget and the headline Kendall taus."""
    args, run_cfg = b.args, b.run_cfg
    inh_loss, refit_loss = ([r[k]["loss"] for r in rows] for k in ("inh", "refit"))
    main_loss = budgets[args.epochs].mean(1)
    tau, tau_refit = (kendalltau(v, main_loss) for v in (inh_loss, refit_loss))
    tau_acc = kendalltau([r["inh"]["acc"] for r in rows], [r["scr"]["acc"] for r in rows])
    within, across = family_split_tau(b.archs, inh_loss, main_loss.tolist())
    cfg = {"sandwich_rule": "classic", "block_sharing": "all", **run_cfg}
    epoch = b.run.epoch if b.run is not None else b.inherited_cache.entry["epoch"]
    partial = (f" (of {args.subnets}: --cached-only, the others' references are not trained "
               "yet)") if len(rows) < args.subnets else ""
    limit = b.limit
    text = header(f"Ranking fidelity: inherited weights vs standalone training ({b.space.name}, "
                  f"{b.data_kind})")
    text += (f"- supernet run: `{args.run}` (epoch {epoch}, {cfg['num_random']} "
             f"random subnets per step, sandwich rule {cfg['sandwich_rule']}, block sharing "
             f"{cfg['block_sharing']}, distill from {cfg.get('distill_from', 'largest')}, "
             f"end reduction {cfg.get('end_reduction', 'extreme')}, seed {cfg['seed']})\n"
             f"- {len(rows)} random subnets (seed {args.seed}){partial}; standalone (`nas train --arch`, "
             f"the supernet run's recipe): {args.epochs} epochs each on "
             f"{f'a fixed {limit}-image subset' if limit else 'all'} of the training images "
             f"(mean of {args.repeats} seeds), val loss on {len(b.y)} val images\n"
             f"- time: {total / 60:.1f} min (cached references are not retrained)\n\n"
             f"**Kendall tau (val loss), inherited weights vs {args.epochs}-epoch scratch = "
             f"{tau.statistic:.3f}** (p = {tau.pvalue:.2g}; target >= 0.5); with the classifier "
             f"refit: **{tau_refit.statistic:.3f}** (p = {tau_refit.pvalue:.2g}); Kendall tau (val "
             f"acc) = {tau_acc.statistic:.3f}; pairs with the same stage-0 mixer: tau "
             f"{within:.3f}, pairs with different ones: tau {across:.3f}\n\n")
    return text


def budget_table(rows: list[dict], budgets: dict[int, np.ndarray], main_loss: np.ndarray) -> str:
    """Kendall tau of the inherited rankings with each standalone budget, and the budgets'
    own noise ceilings."""
    inh_loss, refit_loss = ([r[k]["loss"] for r in rows] for k in ("inh", "refit"))
    names = [f"scratch {e} epochs ({b.shape[1]} seeds)" for e, b in budgets.items()]
    text = ("| Kendall tau (val loss) | " + " | ".join(names) + " |\n|---|"
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
    return text


def subnet_table(rows: list[dict]) -> str:
    """One row per subnet: inherited, refit and standalone results."""
    text = ("\n| # | mixers | params | inherited loss | inherited acc | refit loss | "
            "scratch loss | scratch acc |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        text += (f"| {r['i']} | {r['mixers']} | {r['params']:,} | {r['inh']['loss']:.4f} | "
                 f"{100 * r['inh']['acc']:.2f}% | {r['refit']['loss']:.4f} | "
                 f"{r['scr']['loss']:.4f} | {100 * r['scr']['acc']:.2f}% |\n")
    return text


def write_report(b: Bench, rows: list[dict], budgets: dict[int, np.ndarray], train_xy,
                 total: float) -> None:
    """Scores the signals at initialisation, then writes (and prints) the results file."""
    args, space, archs = b.args, b.space, b.archs
    inh_loss, refit_loss = ([r[k]["loss"] for r in rows] for k in ("inh", "refit"))
    main_loss = budgets[args.epochs].mean(1)
    text = report_intro(b, rows, budgets, total)
    signals, costs = proxy_scores(args, b.run_cfg, space, archs, train_xy, b.inherited_cache)
    text += ("Every ranking against the standalone val loss (mean of the seeds), with bootstrap "
             "90% intervals; signals at initialisation (`predictors/proxies.py`, scored on "
             f"the run's training images, train_speed over {args.proxy_steps} steps) rank by "
             "minus their score:\n\n")
    text += summary_table(archs, {"inherited weights": inh_loss,
                                  "inherited weights, classifier refit": refit_loss,
                                  **{f"signal: {k}": v for k, v in signals.items()}},
                          budgets[args.epochs],
                          {f"signal: {k}": v for k, v in costs.items()}) + "\n"
    text += budget_table(rows, budgets, main_loss)
    text += subnet_table(rows)
    text += dimension_table(space, archs, {
        "inherited": inh_loss, "refit": refit_loss,
        **{f"scratch {e} ep": loss.mean(1).tolist() for e, loss in budgets.items()}})
    text += family_table(space, archs, inh_loss, refit_loss, budgets[args.epochs])
    if b.run is not None:  # these need the supernet itself
        text += compare_runs(args.compare_runs, archs, rows, b.x, b.y,
                             budgets[args.epochs].mean(1), train_xy)
        text += one_change_table(b.run, b.x, b.y)
    name = args.out or ("ranking_cpu.md" if b.data_kind == "digits"
                        else f"ranking_{b.data_kind}_cpu.md")
    path = write_result(name, text)
    print(text)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    b = prepare(args)
    if args.scratch_only:
        train_references(b)
        return 0
    if args.cached_only:  # a preliminary table while the references are still training
        b.archs = cached_archs(b)
    t0 = time.perf_counter()
    train_xy = load_val_data(b.run_cfg, split="train")
    if args.inherited_only:
        cache_inherited(b, train_xy)
        return 0
    rows = measure_subnets(b, train_xy)
    budgets = scratch_budgets(b, rows)
    total = time.perf_counter() - t0
    write_report(b, rows, budgets, train_xy, total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
