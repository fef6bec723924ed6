"""Can a predictor learn the training speed from the architecture? Labels and learning curve.

``train_speed`` over 1000 steps (minus the summed loss of the first 1000 standalone
steps from each subnet's own initialisation) ranks the 30 CIFAR-10 references of
``bench/bench_ranking.py`` at Kendall tau 0.76 against standalone training, but costs
~70-90 CPU s per subnet: too slow to score every trial of a search. This bench finds out
how many such labels an accuracy predictor needs to carry the signal to subnets it never
scored.

Collect (resumable, one entry per subnet in ``bench/results/train_speed_labels_cifar32.json``,
written atomically after each; collectors with different ``--seed`` may run side by side): random subnets of the references' space (a sampling seed
the references did not use) scored in exactly the setting of the references' cached
signal (``train_speed:1:1000`` in ``bench/results/ranking_inherited.json``: the run's
training images, seed 1, its recipe). ``--check`` first re-scores one reference and
compares it with its cached value.

    python bench/bench_train_speed_labels.py --n 300 --threads 1         # collect
    python bench/bench_train_speed_labels.py --repeat 16 --threads 1     # label repeatability
    python bench/bench_train_speed_labels.py --report                    # learning curve

``--report`` fits the product's predictors (``nas predictor fit``'s models, ``signals``
target) on the first n labelled random subnets for a few n, predicts the 30 references
(none of them labelled for the fit) and writes their Kendall tau against the
references' standalone val loss and against their own training speed, with bootstrap
90% intervals and the two-seed noise ceiling, to
``bench/results/train_speed_learn_cifar10-jpeg_cpu.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from references import locked  # noqa: E402

from nas.arch import Arch, sample_arch  # noqa: E402
from nas.io import read_json, write_json  # noqa: E402
from nas.space import parse_space  # noqa: E402

RESULTS = ROOT / "bench" / "results"
INHERITED = RESULTS / "ranking_inherited.json"
RUN_KEY = "runs/cifar10/train"  # the CIFAR-10 supernet run the references were ranked with
SIGNAL = "train_speed:1:1000"  # proxy:seed:steps of the references' cached signal
LABELS = RESULTS / "train_speed_labels_cifar32.json"
REPEAT_SEED = 2  # training seed of --repeat (the labels use the signal's seed, 1)
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="labelled random subnets wanted")
    p.add_argument("--seed", type=int, default=11,
                   help="sampling seed of the random subnets (the references used 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=0, metavar="K",
                   help="instead of collecting, score the first K labelled subnets again with "
                   "training seed 2 (the labels' repeatability, shown by --report)")
    p.add_argument("--check", action="store_true",
                   help="first re-score one reference and compare with its cached value")
    p.add_argument("--report", action="store_true", help="write the learning curve")
    p.add_argument("--sizes", default="25,50,100,200,300",
                   help="comma-separated numbers of labelled subnets to fit on (--report)")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (--report)")
    return p.parse_args(argv)


def run_entry() -> dict:
    entry = read_json(INHERITED, what="inherited cache").get(RUN_KEY)
    if entry is None or SIGNAL not in entry.get("signals", {}):
        raise SystemExit(f"{INHERITED} has no {SIGNAL} signal of {RUN_KEY}")
    return entry


def scorer_for(entry: dict, seed: int | None = None):
    """The references' ProxyScorer: the run's training images, seed 1 (or ``seed``), its recipe."""
    from nas.predictors.proxies import ProxyScorer
    from nas.training import load_val_data

    cfg = dict(entry["config"], data=f"imagefolder:{DATA}")
    space = parse_space(cfg["search_space"], source=str(INHERITED))
    proxy, cached_seed, steps = SIGNAL.split(":")
    x, y = load_val_data(cfg, split="train")
    seed = int(cached_seed) if seed is None else seed
    return space, ProxyScorer(space, x, y, seed=seed, steps=int(steps), lr=float(cfg["lr"]),
                              weight_decay=float(cfg["weight_decay"]),
                              max_shift=int(cfg.get("max_shift", 0)),
                              hflip=bool(cfg.get("hflip")))


def random_archs(space, n: int, seed: int, exclude: set[str]) -> list[Arch]:
    rng = np.random.default_rng(seed)
    out: list[Arch] = []
    seen = set(exclude)
    while len(out) < n:
        arch = sample_arch(space, rng)
        if arch.to_json() not in seen:
            seen.add(arch.to_json())
            out.append(arch)
    return out


def load_labels() -> dict:
    if LABELS.is_file():
        got = read_json(LABELS, what="train_speed labels")
        if got.get("signal") != SIGNAL:
            raise SystemExit(f"{LABELS} holds {got.get('signal')!r}, not {SIGNAL!r}")
        return got
    return {"signal": SIGNAL, "run": RUN_KEY, "labels": []}


def collect(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    entry = run_entry()
    refs = entry["signals"][SIGNAL]
    space, scorer = scorer_for(entry)
    if args.check:
        aj, cached = next(iter(refs.items()))
        got = scorer.score(Arch.from_dict(json.loads(aj)), "train_speed")
        print(f"check: reference re-scored {got:.2f} vs cached {cached['score']:.2f} "
              f"({abs(got / cached['score'] - 1) * 100:.3f}% apart)", flush=True)
    book = load_labels()
    done = {r["arch"] for r in book["labels"] if r["seed"] == args.seed}
    archs = random_archs(space, args.n, args.seed, set(refs))
    todo = [a for a in archs if a.to_json() not in done]
    print(f"labels: {len(archs) - len(todo)} of {args.n} cached, {len(todo)} to score", flush=True)
    for i, arch in enumerate(todo):
        t = time.perf_counter()
        score = scorer.score(arch, "train_speed")
        with locked(LABELS):  # several collectors (one per --seed) may share the file
            book = load_labels()
            book["labels"].append({"arch": arch.to_json(), "seed": args.seed, "score": score,
                                   "cpu_s": scorer.seconds["train_speed"][-1]})
            write_json(LABELS, book)
        print(f"label {len(archs) - len(todo) + i + 1}/{args.n}: {score:.1f} "
              f"({time.perf_counter() - t:.0f} s wall)", flush=True)


def repeat(args: argparse.Namespace) -> None:
    """Score the first ``args.repeat`` labelled subnets again with training seed 2, into the
    book's ``repeats`` (resumable): how repeatable a label is bounds what any predictor
    of it can reach."""
    torch.set_num_threads(args.threads)
    book = load_labels()
    rows = book["labels"][:args.repeat]
    done = {r["arch"] for r in book.get("repeats", [])}
    todo = [r for r in rows if r["arch"] not in done]
    print(f"repeats: {len(rows) - len(todo)} of {len(rows)} cached, {len(todo)} to score", flush=True)
    if not todo:
        return
    _, scorer = scorer_for(run_entry(), seed=REPEAT_SEED)  # decodes the training images
    for i, row in enumerate(todo):
        score = scorer.score(Arch.from_dict(json.loads(row["arch"])), "train_speed")
        with locked(LABELS):
            book = load_labels()
            book.setdefault("repeats", []).append(
                {"arch": row["arch"], "train_seed": REPEAT_SEED, "score": score,
                 "cpu_s": scorer.seconds["train_speed"][-1]})
            write_json(LABELS, book)
        print(f"repeat {len(rows) - len(todo) + i + 1}/{len(rows)}: {score:.1f} vs {row['score']:.1f}",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat:
        repeat(args)
    elif args.report:
        from train_speed_report import report  # noqa: PLC0415 (bench/ sibling)

        report(args)
    else:
        collect(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
