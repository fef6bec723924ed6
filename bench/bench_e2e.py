"""The end-to-end claim: at a latency budget, the searched subnet beats the hand-designed ones.

For each budget (the latency of the EfficientViT-like and of the DeiT-like reference of
the space, measured on this CPU at the latency table's setting), searches the space with
the run's latency table and accuracy predictor (``nas search``, objective
``predictor``), then trains the found subnet and every reference that fits the budget
standalone (``nas train --arch``) with one recipe (the supernet run's, at a stated
subset and epochs), 2 seeds each, and times all of them end to end in one interleaved
measurement. The goal a NAS tool exists for: at each budget the found subnet is no
slower (measured) and at least 1 point more accurate than the best reference that fits.

Usage (after ``nas run --config cifar10 --out runs/cifar10``), in phases that outlive
the run directory (each phase's results are cached under ``bench/results/``):
    python bench/bench_e2e.py --pipeline runs/cifar10 --search-only    # quiet machine: times
        [--predictor pipeline=runs/cifar10/predictor/model --predictor refit=PATH]  # compare
    python bench/bench_e2e.py --pipeline runs/cifar10 --train-refs-only  # any time, background
    python bench/bench_e2e.py --pipeline runs/cifar10 --search-only --rerank 10  # + nas rerank
    python bench/bench_e2e.py --pipeline runs/cifar10 --train-only [--reverse]  # after search
    python bench/bench_e2e.py --pipeline runs/cifar10    # trains what is missing, times, table

Standalone results share the cache of ``bench/bench_ranking.py``
(``bench/results/standalone_<space>_<data>.json``); searches go to ``runs/e2e/``.
Writes ``bench/results/e2e_<data>_cpu.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from common import header, write_result  # noqa: E402
from references import cached_reference, reference_recipe  # noqa: E402

from nas.arch import Arch, canonicalize, load_arch  # noqa: E402
from nas.complexity import count_macs, count_params  # noqa: E402
from nas.io import read_json, write_json  # noqa: E402
from nas.latency import LatencyTable  # noqa: E402
from nas.latency.measure import measure_archs  # noqa: E402
from nas.search import SearchConfig, run_search  # noqa: E402
from nas.search.report import reference_archs  # noqa: E402
from nas.space import parse_space  # noqa: E402
from nas.training import evaluate, load_run, load_val_data  # noqa: E402

BUDGET_REFS = ("efficientvit_cifar", "deit_cifar")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", type=Path, default=ROOT / "runs" / "cifar10",
                   help="a nas run directory (train/, latency/table.json, predictor/model/)")
    p.add_argument("--epochs", type=int, default=10, help="standalone epochs (default 10)")
    p.add_argument("--limit-train", type=int, default=10000,
                   help="standalone training subset (default 10000 images)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="standalone seeds")
    p.add_argument("--trials", type=int, default=1000, help="search trials per budget")
    p.add_argument("--predictor", action="append", default=[], metavar="NAME=PATH",
                   help="search with this accuracy predictor too (repeatable; default: the "
                   "run's, as NAME 'pipeline'); each finds its own subnet per budget")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=0, help="threads of standalone training")
    p.add_argument("--label", default="cifar10-jpeg",
                   help="names the result and cache files (default cifar10-jpeg)")
    p.add_argument("--train-refs-only", action="store_true",
                   help="only train (and cache) the references; needs just the train run")
    p.add_argument("--train-only", action="store_true",
                   help="only train (and cache) the found subnets and the references, nothing "
                   "timed (after --search-only); two of these may run at once (--reverse)")
    p.add_argument("--reverse", action="store_true", help="with --train-only: in reverse order")
    p.add_argument("--search-only", action="store_true",
                   help="only the part that needs the supernet, table and predictor (budgets, "
                   "searches, inherited accuracy), cached in bench/results/e2e_<label>_state.json")
    p.add_argument("--research", action="store_true",
                   help="redo the search phase even when its results are cached")
    p.add_argument("--cache", type=Path, default=None, help="standalone results cache")
    p.add_argument("--rerank", type=int, default=0, metavar="K",
                   help="also re-rank each search's K best candidates by training speed "
                   "(nas rerank; 90-220 CPU s per candidate, cached in the search dir), a found "
                   "subnet of its own: found[NAME+rerank]")
    p.add_argument("--rerank-with", default="", metavar="NAMES",
                   help="comma-separated predictors whose searches are re-ranked (default all)")
    p.add_argument("--rerank-steps", type=int, default=1000, help="training steps (default 1000)")
    return p.parse_args(argv)


def _standalone(args, arch: Arch, recipe: dict) -> dict:
    reps = [cached_reference(args.cache, arch, recipe, s, threads=args.threads)
            for s in args.seeds]
    accs = [r["acc"] for r in reps]
    return {"acc": float(np.mean(accs)), "accs": accs,
            "loss": float(np.mean([r["loss"] for r in reps]))}


def search_phase(args, state: dict) -> None:
    """What needs the supernet, table and predictor: the budgets (references timed at the
    table's setting), a search per budget, the found subnets' inherited accuracy."""
    run = load_run(args.pipeline / "train")
    space = run.space
    table = LatencyTable.load(args.pipeline / "latency" / "table.json", space=space)
    refs = {name: canonicalize(space, arch) for name, arch in reference_archs(space)}
    timing = _timing(table, args.rounds)
    ref_ms = dict(zip(refs, measure_archs(list(refs.values()), space, **timing)))
    x, y = load_val_data(run.config)
    state.update(pipeline=str(args.pipeline), epoch=run.epoch, timing=timing,
                 predictors=predictors(args), budgets={}, found={}, inherited={}, predicted={})
    for name in BUDGET_REFS:
        budget = round(ref_ms[name], 4)
        state["budgets"][name] = budget
        for pname, ppath in state["predictors"].items():
            key = f"found[{pname}]@{name}"
            out = _search_dir(args, pname, name, budget)
            cfg = SearchConfig(space=str(run.config["space"]), budget_ms=budget, out=str(out),
                               objective="predictor", trials=args.trials, seed=0,
                               table=str(args.pipeline / "latency" / "table.json"),
                               predictor=ppath)
            result = run_search(cfg, echo=None)  # resumable
            found = canonicalize(space, load_arch(out / "best.yaml"))
            state["found"][key] = found.to_json()
            state["inherited"][key] = evaluate(run.supernet, found, x, y)["acc"]
            state["predicted"][key] = result.best["acc"]
            print(f"budget {name} {budget:.3f} ms, predictor {pname}: found predicted acc "
                  f"{result.best['acc']:.4f}, table {result.best['latency_ms']:.3f} ms", flush=True)
    keys = list(state["found"])
    state["table"] = {n: float(v) for n, v in zip(
        [*refs, *keys], table.predict([*refs.values(), *(load_arch(state["found"][k])
                                                         for k in keys)]))}


def _search_dir(args, pname: str, name: str, budget: float) -> Path:
    return ROOT / "runs" / "e2e" / f"{args.pipeline.name}_{pname}_{name}_{budget}ms"


def _reranked(args, state: dict) -> list[str]:
    """The predictors whose searches ``--rerank-with`` names (all by default)."""
    return [n for n in args.rerank_with.split(",") if n] or list(state["predictors"])


def rerank_phase(args, state: dict) -> None:
    """Each cached search's ``--rerank`` best candidates re-ranked by training speed
    (``nas rerank``), its pick added as ``found[NAME+rerank]@BUDGET``."""
    from nas.search.rerank import rerank

    run = load_run(args.pipeline / "train")
    table = LatencyTable.load(args.pipeline / "latency" / "table.json", space=run.space)
    x, y = load_val_data(run.config)
    names = _reranked(args, state)
    for name in BUDGET_REFS:
        budget = state["budgets"][name]
        for pname in names:
            res = rerank(_search_dir(args, pname, name, budget), args.pipeline / "train",
                         top=args.rerank, steps=args.rerank_steps)
            key = f"found[{pname}+rerank]@{name}"
            found = canonicalize(run.space, Arch.from_dict(res.best["arch"]))
            state["found"][key] = found.to_json()
            state["inherited"][key] = evaluate(run.supernet, found, x, y)["acc"]
            state["predicted"][key] = res.best["acc"]
            state["table"][key] = float(table.predict([found])[0])
            print(res.summary, flush=True)


def predictors(args) -> dict[str, str]:
    """``{name: path}`` of the predictors to search with (``--predictor``, or the run's)."""
    out = {}
    for item in args.predictor or [f"pipeline={args.pipeline / 'predictor' / 'model'}"]:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).exists():
            raise SystemExit(f"--predictor expects NAME=PATH of a saved predictor, got {item!r}")
        out[name] = str(Path(path))
    return out


def _timing(table, rounds: int) -> dict:
    dev = table.device
    return {"batch_size": int(dev.get("batch_size", 1)), "threads": dev.get("threads"),
            "rounds": rounds}


def report_intro(args, state: dict, state_path: Path, run_cfg: dict, space,
                 total: float) -> str:
    """The header: where the search came from, the standalone recipe, the timing setting."""
    timing = state["timing"]
    text = header(f"End to end: searched subnet vs hand-designed references ({space.name}, "
                  f"{args.label})")
    text += (f"- supernet, table, predictor: `{state['pipeline']}` (supernet epoch "
             f"{state['epoch']}); search and budgets cached in `{state_path.name}`\n"
             "- predictors searched with: "
             + ", ".join(f"{n} (`{p}`)" for n, p in state["predictors"].items()) + "\n"
             f"- standalone (`nas train --arch`, the supernet's recipe): {args.epochs} epochs on "
             f"a fixed {args.limit_train}-image subset of the training images, seeds "
             f"{args.seeds}; accuracy on the {run_cfg.get('limit_val') or 'all'} val images\n"
             f"- latency: batch {timing['batch_size']}, {timing['threads']} thread(s) (the "
             f"table's setting), {timing['rounds']} interleaved rounds, fastest kept; the "
             "verdict compares the measurements of this run\n"
             f"- time: {total / 60:.1f} min (cached standalone results are not retrained)\n\n")
    return text


def arch_table(state: dict, space, names: list[str], archs: list[Arch], found: dict,
               measured: dict, rows: dict) -> str:
    """One row per found subnet and reference: size, latency, accuracy."""
    text = ("| arch | params | MMACs | measured ms | table ms | standalone acc (mean; seeds) "
            "| inherited acc |\n|---|---:|---:|---:|---:|---:|---:|\n")
    for name, arch in zip(names, archs):
        r = rows[name]
        inh = f"{100 * state['inherited'][name]:.2f}%" if name in found else ""
        text += (f"| {name} | {count_params(arch, num_classes=space.num_classes):,} | "
                 f"{count_macs(arch, num_classes=space.num_classes) / 1e6:.1f} | "
                 f"{measured[name]:.3f} | {state['table'][name]:.3f} | {100 * r['acc']:.2f}% "
                 f"({', '.join(f'{100 * a:.2f}' for a in r['accs'])}) | {inh} |\n")
    return text


def verdict_table(refs: dict, found: dict, measured: dict, rows: dict) -> str:
    """Per budget and found subnet: is it no slower and >= 1 point better than the best
    reference that fits?"""
    text = ("\n| budget (reference) | found: measured ms, acc | best reference that fits "
            "(measured) | goal: no slower and >= +1 point |\n|---|---|---|---|\n")
    for n in BUDGET_REFS:
        budget = measured[n]  # this run's measurement of the budget's reference
        fits = [m for m in refs if measured[m] <= budget]
        best = max(fits, key=lambda m: rows[m]["acc"])
        for f in (k for k in found if k.endswith(f"@{n}")):
            gain = 100 * (rows[f]["acc"] - rows[best]["acc"])
            ok = measured[f] <= budget and gain >= 1.0
            text += (f"| {n} ({budget:.3f} ms) | {f}: {measured[f]:.3f} ms, "
                     f"{100 * rows[f]['acc']:.2f}% | {best}: {measured[best]:.3f} ms, "
                     f"{100 * rows[best]['acc']:.2f}% | {'met' if ok else 'missed'} "
                     f"({gain:+.2f} points, {measured[f] / budget:.3f}x the budget) |\n")
    return text


def load_config(args, state: dict, state_path: Path) -> tuple[dict, Path]:
    """The run's config (from the run, else from the cached state) and where it was read."""
    cfg_path = args.pipeline / "train" / "config.json"
    run_cfg = read_json(cfg_path, what="run config") if cfg_path.is_file() else state.get("config")
    if run_cfg is None:
        raise SystemExit(f"no run at {args.pipeline} and no cached state in {state_path}")
    return run_cfg, cfg_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state_path = ROOT / "bench" / "results" / f"e2e_{args.label}_state.json"
    state = read_json(state_path, what="e2e state") if state_path.is_file() else {}
    run_cfg, cfg_path = load_config(args, state, state_path)
    space = parse_space(run_cfg["search_space"], source=str(cfg_path))
    if args.cache is None:
        args.cache = ROOT / "bench" / "results" / f"standalone_{space.name}_{args.label}.json"
    recipe = reference_recipe(run_cfg, epochs=args.epochs, limit_train=args.limit_train)
    refs = {name: canonicalize(space, arch) for name, arch in reference_archs(space)}
    missing = [n for n in BUDGET_REFS if n not in refs]
    if missing:
        raise SystemExit(f"space {space.name} has no reference {', '.join(missing)}")
    t0 = time.perf_counter()
    if args.train_refs_only:
        for name, arch in refs.items():
            res = _standalone(args, arch, recipe)
            print(f"{name}: standalone acc {res['accs']}", flush=True)
        return 0
    if ("found" not in state or args.research
            or (args.predictor and predictors(args) != state.get("predictors"))):
        search_phase(args, state)
        write_json(state_path, {**state, "config": run_cfg})
    if args.rerank and not all(
            f"found[{p}+rerank]@{n}" in state["found"] for n in BUDGET_REFS
            for p in _reranked(args, state)):
        rerank_phase(args, state)
        write_json(state_path, state)
    if args.search_only:
        print(f"search results cached in {state_path}")
        return 0
    found = {k: load_arch(v) for k, v in state["found"].items()}
    names = list(found) + list(refs)
    archs = list(found.values()) + list(refs.values())
    if args.train_only:
        order = list(zip(names, archs))
        for name, arch in reversed(order) if args.reverse else order:
            print(f"{name}: standalone acc {_standalone(args, arch, recipe)['accs']}", flush=True)
        return 0
    measured = dict(zip(names, measure_archs(archs, space, **state["timing"])))
    rows = {}
    for name, arch in zip(names, archs):
        rows[name] = _standalone(args, arch, recipe)
        print(f"{name}: {measured[name]:.3f} ms, standalone acc {rows[name]['accs']}", flush=True)
    total = time.perf_counter() - t0
    text = report_intro(args, state, state_path, run_cfg, space, total)
    text += arch_table(state, space, names, archs, found, measured, rows)
    text += verdict_table(refs, found, measured, rows)
    for k, arch in found.items():
        text += f"\n{k}: `{arch.to_json()}`\n"
    path = write_result(f"e2e_{args.label}_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
