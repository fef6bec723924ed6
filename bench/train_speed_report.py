"""The learning curve of ``bench/bench_train_speed_labels.py --report``: predictors fitted on
n training-speed labels of random subnets, judged on the 30 CIFAR-10 references none of
them was fitted on."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bench_combined import load
from bench_train_speed_labels import INHERITED, LABELS, RUN_KEY, SIGNAL, load_labels, run_entry
from common import header, write_result
from ranking_tables import tau_cells
from scipy.stats import kendalltau, rankdata

from nas.arch import Arch
from nas.predictors import AUTO_FAMILIES, fit_predictor
from nas.predictors.table import ArchTable
from nas.space import parse_space

# (row name, predictor family, log params / MACs features)
FAMILIES = (("ridge", "ridge", False), ("gp", "gp", False), ("trees", "trees", False),
            ("auto", "auto", False), ("auto + complexity", "auto", True))
DRAWS = 3  # random label subsets per size below the pool (the spread of the label choice)


def fit_scores(space, archs: list[Arch], labels: np.ndarray, refs: list[Arch],
               family: str, seed: int, complexity: bool = False) -> tuple[np.ndarray, dict | None]:
    """Uncalibrated scores of ``refs`` (higher: faster learner) by a predictor of ``family``
    fitted on ``archs`` with their training speed (``signals`` target, as ``nas predictor
    fit --target signals`` does), and the fit's cross-validation record (``auto`` only)."""
    r = rankdata(labels)
    acc = 0.05 + 0.9 * (r - 1) / max(len(r) - 1, 1)  # any increasing map: only ranks matter
    table = ArchTable(tuple(archs), acc, fingerprint=space.fingerprint, source="labels",
                      train_speed=np.asarray(labels, float))
    folds = 5 if family == "auto" else 0
    pred = fit_predictor(table, model=family, space=space, seed=seed, folds=folds,
                         target="signals", complexity=complexity)
    return pred.scores(refs, calibrated=False), pred.info["cv"]


def report(args: argparse.Namespace) -> None:
    book = load_labels()
    rows = list({r["arch"]: r for r in book["labels"][::-1]}.values())[::-1]  # first of duplicates
    if len(rows) < 10:
        raise SystemExit(f"{LABELS}: {len(rows)} labels; collect at least 10 first")
    ns = argparse.Namespace(run=RUN_KEY, space="cifar32", label="cifar10-jpeg",
                            signal_key=SIGNAL.split(":", 1)[1])
    ref_json, est, loss, _families = load(ns)
    refs = [Arch.from_dict(json.loads(a)) for a in ref_json]
    mean = loss.mean(1)
    space = parse_space(run_entry()["config"]["search_space"], source=str(INHERITED))
    archs = [Arch.from_dict(json.loads(r["arch"])) for r in rows]
    y = np.array([r["score"] for r in rows])
    sizes = [n for n in (int(s) for s in args.sizes.split(",") if s) if n <= len(rows)]
    if len(rows) not in sizes:
        sizes.append(len(rows))
    t0 = time.perf_counter()
    lines, full, choices = [], {}, []
    for name, fam, cx in FAMILIES:
        for n in sizes:
            draws = [np.arange(n)] + ([np.sort(np.random.default_rng(d).choice(len(rows), n, False))
                                       for d in range(1, DRAWS)] if n < len(rows) else [])
            st, ts = [], []
            for d, idx in enumerate(draws):
                s, cv = fit_scores(space, [archs[i] for i in idx], y[idx], refs, fam, seed=d,
                                   complexity=cx)
                if cv is not None and d == 0:
                    chosen = cv["selected"]
                    choices.append(f"{name}, n = {n}: {chosen} (CV tau on the labels "
                                   f"{cv['families'][chosen]['mean']['kendall_tau']:.3f}; "
                                   + ", ".join(f"{f} {r['mean']['kendall_tau']:.3f}"
                                               for f, r in cv["families"].items()) + ")")
                st.append(kendalltau(-s, mean).statistic)
                ts.append(kendalltau(-s, est["train_speed"]).statistic)
                if d == 0:
                    cells = tau_cells(refs, -s, mean, boots=args.boot)
                    if n == len(rows):
                        full[name] = s
            spread = f"{np.mean(st):.3f} ({min(st):.2f}..{max(st):.2f})" if len(st) > 1 else "-"
            lines.append(f"| {name} | {n} | {' | '.join(cells)} | {spread} | "
                         f"{np.mean(ts):.3f} |")
            print(lines[-1], flush=True)
    cpu = np.array([r["cpu_s"] for r in rows])
    text = header("Learning the training speed from the architecture (cifar32, cifar10-jpeg)")
    text += (
        f"- labels: {len(rows)} random subnets of cifar32 (sampling seed "
        f"{sorted({r['seed'] for r in rows})}), each scored with `{SIGNAL}` (train_speed, seed 1, "
        f"1000 steps of batch 64 from its own initialisation, the CIFAR-10 run's recipe and "
        f"training images): {np.median(cpu):.0f} CPU s per subnet (median; "
        f"{cpu.sum() / 3600:.1f} CPU h in all), `{LABELS.relative_to(LABELS.parents[2])}`\n"
        f"- judged on: the 30 references of `bench/bench_ranking.py` (none of them among the "
        f"labels), against their standalone val loss (10 epochs on 10,000 images, mean of 2 "
        f"seeds), overall and over pairs with the same / different stage-0 mixer; bootstrap 90% "
        f"intervals over the references, for the predictor fitted on the first n labels "
        f"(collection order, itself random)\n"
        f"- each predictor: `fit_predictor(..., target='signals')` (what `nas predictor fit "
        f"--target signals` fits on a table with a train_speed column); auto = 5-fold CV choice "
        f"among {', '.join(AUTO_FAMILIES)} (`nas predictor fit`'s default); trees with their "
        f"default hyperparameters (fixed, not tuned on the references); + complexity: with "
        f"log params / log MACs features\n"
        f"- report time: {time.perf_counter() - t0:.0f} s\n\n")
    noise = kendalltau(loss[:, 0], loss[:, 1]).statistic
    direct = kendalltau(est["train_speed"], mean).statistic
    text += (f"Ceilings on the same references: two standalone seeds **{noise:.3f}**; the "
             f"references' own training speed (scored, not predicted) **{direct:.3f}**.\n\n")
    text += ("| predictor | labels n | tau vs standalone, all | same stage-0 mixer | different "
             f"stage-0 mixers | mean over {DRAWS} label draws (range) | tau vs the references' "
             "own training speed |\n|---|---:|---:|---:|---:|---:|---:|\n")
    text += "\n".join(lines) + "\n"
    text += ("\nauto's choice (first draw), by 5-fold CV Kendall tau on the labels it was given:\n\n"
             + "".join(f"- {c}\n" for c in choices))
    text += repeatability(book, {r["arch"]: r["score"] for r in rows})
    text += anchor_table(full, mean, [a.stages[0].mixer for a in refs])
    path = write_result("train_speed_learn_cifar10-jpeg_cpu.md", text)
    print(f"wrote {path}")


def repeatability(book: dict, first: dict[str, float]) -> str:
    """How repeatable the labels are: the subnets ``--repeat`` scored again with another
    training seed, against their labels. Bounds the CV tau any predictor can reach."""
    rep = [r for r in book.get("repeats", []) if r["arch"] in first]
    if len(rep) < 5:
        return ""
    a = np.array([first[r["arch"]] for r in rep])
    b = np.array([r["score"] for r in rep])
    labels = np.array(list(first.values()))
    share = float(np.var(a - b) / 2 / np.var(labels))  # seed noise / label variance
    return (f"\nLabel repeatability ({len(rep)} labelled subnets scored again with training seed "
            f"{rep[0]['train_seed']}, `--repeat`): Kendall tau between the two seeds "
            f"**{kendalltau(a, b).statistic:.3f}**; median |difference| "
            f"{np.median(np.abs(a - b)):.1f} against a label spread (std) of {labels.std():.1f}; "
            f"seed noise is {share:.1%} of the label variance.\n")


def anchor_table(full: dict[str, np.ndarray], mean: np.ndarray, families: list[str],
                 splits: int = 500) -> str:
    """The predictors fitted on every label, with per-family offsets from K references used
    as anchors (kept only where leave-one-out on the anchors ranks them better, as
    ``nas predictor fit --anchors`` does), judged on the other references."""
    from nas.predictors.calibration import choose_offsets

    fam = np.array(families)
    rng = np.random.default_rng(0)
    out = ("\nWith K of the references as anchors (their standalone loss known; per-family "
           "offsets kept only where leave-one-out on the anchors ranks better), Kendall tau on "
           f"the other references, mean over {splits} random splits [5%, 95%]:\n\n"
           "| predictor (all labels) | K | no offsets | offsets if anchor LOO keeps them | "
           "share of splits kept |\n|---|---:|---:|---:|---:|\n")
    for name, score in full.items():
        for k in (8, 12, 20):
            plain, cal, kept = [], [], []
            for _ in range(splits):
                perm = rng.permutation(len(mean))
                anc, held = perm[:k], perm[k:]
                c = choose_offsets(score[anc], mean[anc], list(fam[anc]))
                plain.append(kendalltau(-score[held], mean[held]).statistic)
                cal.append(kendalltau(-c.apply(score, list(fam))[held], mean[held]).statistic)
                kept.append(float(c.report["kept"]))

            def cell(v):
                return f"{np.mean(v):.3f} [{np.percentile(v, 5):.2f}, {np.percentile(v, 95):.2f}]"

            out += f"| {name} | {k} | {cell(plain)} | {cell(cal)} | {np.mean(kept):.2f} |\n"
    return out
