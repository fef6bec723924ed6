"""Combining ranking estimators, judged on standalone references no fit has seen.

Reads what ``bench/bench_ranking.py`` cached (inherited and classifier-refit results of
each subnet, signals at initialisation, standalone results of 2 seeds) and, over many
random splits of the subnets into K anchors (their standalone loss is known to the fit)
and held-out subnets (never seen), reports the Kendall tau against the held-out
standalone val loss (mean of the seeds) of:

* each estimator alone (no fit: its ranking is used as is);
* equal-weight averages of the estimators' rank scores (no fit);
* weights chosen on the anchors (the simplex grid point with the best anchor tau; a
  rank-based choice, robust to the heavy tails a least-squares calibration chases);
* the same plus per-family offsets (stage-0 mixer) learnt from the anchors' residuals,
  shrunk towards 0 by n / (n + 1);
* the product's rule (:func:`nas.predictors.calibration.choose_offsets`): equal weights,
  offsets kept only when leave-one-out on the anchors ranks them better; and, for each
  ``--predictor``, its scores alone and with offsets chosen by that rule;

next to the noise ceiling on the same held-out subnets (seed 1 vs seed 2). Intervals
are the 5-95% range over splits. With ``--predictor NAME=PATH`` (repeatable) it also
ranks every reference with saved accuracy predictors (which never saw a standalone
result): Kendall tau overall, within and across stage-0 families, with bootstrap 90%
intervals. CPU only, seconds; nothing is trained.

Usage:
    python bench/bench_combined.py --run runs/cifar10/train --label cifar10-jpeg
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from common import header, write_result  # noqa: E402
from scipy.stats import kendalltau, rankdata  # noqa: E402

from nas.io import read_json  # noqa: E402
from nas.predictors.calibration import choose_offsets  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/cifar10/train",
                   help="the supernet run as keyed in bench/results/ranking_inherited.json")
    p.add_argument("--label", default="cifar10-jpeg", help="data label of the result files")
    p.add_argument("--space", default="cifar32", help="space name of the standalone cache")
    p.add_argument("--anchors", type=int, nargs="+", default=[8, 12, 20],
                   help="anchor counts K to report (default 8 12 20)")
    p.add_argument("--splits", type=int, default=500, help="random splits per K (default 500)")
    p.add_argument("--signal-key", default="1:100", help="SEED:STEPS of the cached signals")
    p.add_argument("--train-speed-budgets", default="",
                   help="comma-separated STEPS of further cached train_speed signals (bench_ranking "
                   "--proxies train_speed --proxy-steps STEPS) to report as a budget curve, "
                   "e.g. 100,300,1000")
    p.add_argument("--predictor", action="append", default=[], metavar="NAME=PATH",
                   help="also rank the references with this saved predictor (repeatable)")
    return p.parse_args(argv)


def zrank(v: np.ndarray) -> np.ndarray:
    """Rank scores (mean 0, std 1); low = good for every estimator here."""
    r = rankdata(v)
    return (r - r.mean()) / (r.std() or 1.0)


def load(args) -> tuple[list[str], dict[str, np.ndarray], np.ndarray, list[str]]:
    """(arch JSONs, {estimator: loss-like values}, standalone loss per seed, stage-0 mixers)."""
    inh = read_json(ROOT / "bench" / "results" / "ranking_inherited.json", what="inherited cache")
    if args.run not in inh:
        raise SystemExit(f"no cached results for run {args.run!r}; have {sorted(inh)}")
    got = inh[args.run]
    ref = read_json(ROOT / "bench" / "results" / f"standalone_{args.space}_{args.label}.json",
                    what="standalone cache")
    by_arch: dict[str, dict[int, float]] = {}
    for entry in ref.values():
        by_arch.setdefault(entry["arch"], {})[int(entry["seed"])] = float(entry["loss"])
    archs = [a for a in got["archs"] if len(by_arch.get(a, {})) >= 2]
    est = {"inherited": np.array([got["archs"][a]["inh"]["loss"] for a in archs]),
           "refit": np.array([got["archs"][a]["refit"]["loss"] for a in archs])}
    for key, values in got.get("signals", {}).items():
        name, _, rest = key.partition(":")
        if rest == args.signal_key and all(a in values for a in archs):
            est[name] = -np.array([values[a]["score"] for a in archs])
    seeds = sorted(set.intersection(*(set(by_arch[a]) for a in archs)))[:2]
    loss = np.array([[by_arch[a][s] for s in seeds] for a in archs])
    families = [json.loads(a)["stages"][0]["mixer"] for a in archs]
    return archs, est, loss, families


def simplex(k: int, step: float = 0.25) -> list[np.ndarray]:
    """Weight vectors of ``k`` estimators on a grid of the simplex."""
    n = round(1 / step)
    return [np.array(c) / n for c in itertools.product(range(n + 1), repeat=k) if sum(c) == n]


def tau(a: np.ndarray, b: np.ndarray) -> float:
    return float(kendalltau(a, b).statistic)


def family_offsets(score: np.ndarray, target: np.ndarray, fam: np.ndarray,
                   anchors: np.ndarray) -> np.ndarray:
    """Per-family mean residual (target - score) of the anchors, shrunk by n / (n + 1)."""
    resid = target[anchors] - score[anchors]
    out = np.zeros_like(score)
    for f in np.unique(fam):
        m = fam[anchors] == f
        if m.any():
            out[fam == f] = resid[m].mean() * m.sum() / (m.sum() + 1)
    return out


def predictor_scores(args, archs: list[str]) -> dict[str, np.ndarray]:
    """Each ``--predictor``'s uncalibrated scores of the references (higher: better)."""
    from nas.arch import Arch
    from nas.predictors import load_predictor

    out = {}
    for item in args.predictor:
        name, _, path = item.partition("=")
        out[name] = load_predictor(path).scores([Arch.from_dict(json.loads(a)) for a in archs],
                                                calibrated=False)
    return out


def predictor_table(args, archs: list[str], mean: np.ndarray, loss: np.ndarray,
                    families: list[str]) -> str:
    """Every reference ranked by each saved predictor (none saw a standalone result)."""
    from nas.arch import Arch
    from nas.predictors import load_predictor
    from nas.predictors.anchors import family_taus

    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(archs), len(archs)) for _ in range(1000)]
    rows = {"noise ceiling (seed 1 vs seed 2)": (loss[:, 0], loss[:, 1])}
    for item in args.predictor:
        name, _, path = item.partition("=")
        pred = load_predictor(path)
        score = -pred.predict([Arch.from_dict(json.loads(a)) for a in archs])  # loss-like
        rows[f"predictor {name} (`{path}`)"] = (score, mean)
    text = ("\n| ranking of all references vs standalone val loss | tau, all | same stage-0 "
            "mixer | different stage-0 mixers |\n|---|---:|---:|---:|\n")
    for name, (a, b) in rows.items():
        point = family_taus(b, a, families)
        cells = []
        for key in ("all", "same_family", "across_families"):
            vals = [family_taus(b[i], a[i], [families[j] for j in i])[key] for i in boots]
            vals = np.asarray([v for v in vals if np.isfinite(v)])
            cells.append(f"{point[key]:.3f} [{np.quantile(vals, 0.05):.2f}, "
                         f"{np.quantile(vals, 0.95):.2f}]")
        text += f"| {name} | " + " | ".join(cells) + " |\n"
    return text + family_order(rows, mean, families)


def budget_table(args, archs: list[str], est: dict[str, np.ndarray], mean: np.ndarray,
                 families: list[str]) -> str:
    """train_speed at each cached step budget: its CPU cost per arch and its ranking of
    every reference (overall, within and across stage-0 families, bootstrap 90%), alone
    and averaged with the classifier-refit loss."""
    from nas.predictors.anchors import family_taus

    got = read_json(ROOT / "bench" / "results" / "ranking_inherited.json",
                    what="inherited cache")[args.run].get("signals", {})
    seed = args.signal_key.split(":")[0]
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(archs), len(archs)) for _ in range(1000)]
    text = ("\n| train_speed budget | CPU s per arch | tau, all | same stage-0 mixer | "
            "different stage-0 mixers | refit + train_speed (equal weights), all | "
            "family pairs in order |\n|---:|---:|---:|---:|---:|---:|---:|\n")
    for steps in [int(x) for x in args.train_speed_budgets.split(",") if x]:
        values = got.get(f"train_speed:{seed}:{steps}", {})
        if not all(a in values for a in archs):
            text += f"| {steps} steps | not cached for every reference | | | | | |\n"
            continue
        ts = -np.array([values[a]["score"] for a in archs])  # loss-like
        cost = float(np.mean([values[a]["cpu_s"] for a in archs]))
        both = zrank(ts) + zrank(est["refit"])
        cells = []
        for v in (ts, both):
            point = family_taus(mean, v, families)
            keys = ("all", "same_family", "across_families") if v is ts else ("all",)
            for key in keys:
                vals = [family_taus(mean[i], v[i], [families[j] for j in i])[key] for i in boots]
                vals = np.asarray([x for x in vals if np.isfinite(x)])
                cells.append(f"{point[key]:.3f} [{np.quantile(vals, 0.05):.2f}, "
                             f"{np.quantile(vals, 0.95):.2f}]")
        agree, pairs = family_agreement(ts, mean, families)
        text += f"| {steps} steps | {cost:.1f} | " + " | ".join(cells) + f" | {agree}/{pairs} |\n"
    return text


def _family_ranking(v: np.ndarray, fam: np.ndarray, names: list[str]) -> list[str]:
    return sorted(names, key=lambda f: float(np.mean(v[fam == f])))


def family_agreement(score: np.ndarray, mean: np.ndarray, families: list[str]) -> tuple[int, int]:
    """(pairs of stage-0 families that ``score`` orders like the standalone loss, all pairs)."""
    fam, names = np.asarray(families), sorted(set(families))
    pos = {f: i for i, f in enumerate(_family_ranking(mean, fam, names))}
    got = _family_ranking(score, fam, names)
    agree = sum(pos[got[i]] < pos[got[j]] for i in range(len(got)) for j in range(i + 1, len(got)))
    return agree, len(names) * (len(names) - 1) // 2


def family_order(rows: dict[str, tuple[np.ndarray, np.ndarray]], mean: np.ndarray,
                 families: list[str]) -> str:
    """Stage-0 families from best to worst by mean standalone loss, and by each ranking's
    mean score (loss-like) over the same subnets."""
    fam, names = np.asarray(families), sorted(set(families))
    truth = _family_ranking(mean, fam, names)
    text = ("\n| stage-0 families, best to worst by mean | order | family pairs in the "
            "standalone order |\n|---|---|---:|\n"
            f"| standalone val loss (mean of 2 seeds) | {' < '.join(truth)} | |\n")
    for name, (a, _) in rows.items():
        if name.startswith("noise"):
            continue
        agree, pairs = family_agreement(a, mean, families)
        text += (f"| {name} | {' < '.join(_family_ranking(a, fam, names))} | "
                 f"{agree}/{pairs} |\n")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    archs, est, loss, families = load(args)
    n = len(archs)
    mean = loss.mean(1)
    fam = np.asarray(families)
    z = {k: zrank(v) for k, v in est.items()}
    combos = [c for c in (("inherited", "naswot"), ("refit", "naswot"), ("refit", "train_speed"),
                          ("refit", "train_speed", "naswot")) if all(k in z for k in c)]
    preds = predictor_scores(args, archs)
    rng = np.random.default_rng(0)
    rows: dict[str, dict[int, list[float]]] = {}

    def put(name: str, k: int, value: float) -> None:
        rows.setdefault(name, {}).setdefault(k, []).append(value)

    for k in args.anchors:
        for _ in range(args.splits):
            idx = rng.permutation(n)
            anc, held = idx[:k], idx[k:]
            target = zrank(mean[anc])  # the anchors' standalone rank scores
            put("noise ceiling (seed 1 vs seed 2)", k, tau(loss[held, 0], loss[held, 1]))
            for name, v in z.items():
                put(f"{name} (no fit)", k, tau(v[held], mean[held]))
            for c in combos:
                avg = np.mean([z[e] for e in c], axis=0)
                put(f"{' + '.join(c)}: equal weights (no fit)", k, tau(avg[held], mean[held]))
                grid = simplex(len(c))
                stack = np.stack([z[e] for e in c], 1)
                best = max(grid, key=lambda w: tau(stack[anc] @ w, target))
                score = stack @ best
                put(f"{' + '.join(c)}: weights from anchors", k, tau(score[held], mean[held]))
                # offsets live on the anchors' rank-score scale: rescale the score to it
                s = zrank(score)
                anc_z = np.full(n, np.nan)
                anc_z[anc] = target
                off = family_offsets(s, anc_z, fam, anc)
                put(f"{' + '.join(c)}: weights + family offsets from anchors", k,
                    tau((s + off)[held], mean[held]))
                # the product's rule: equal weights, family offsets kept only if they rank
                # the anchors better leave-one-out (nas.predictors.calibration)
                cal = choose_offsets(-avg[anc], mean[anc], list(fam[anc]))
                put(f"{' + '.join(c)}: equal weights + offsets if anchor LOO keeps them", k,
                    tau(-cal.apply(-avg, list(fam))[held], mean[held]))
                put(f"{' + '.join(c)}: share of splits where offsets were kept", k,
                    float(cal.report["kept"]))
            if len(preds) > 1:  # the predictor that ranks the anchors best, as fit would pick
                pick = max(preds, key=lambda nm: tau(-preds[nm][anc], mean[anc]))
                put("predictor picked by its tau on the anchors (no offsets)", k,
                    tau(-preds[pick][held], mean[held]))
            for name, score in preds.items():  # higher = better
                put(f"predictor {name} (no anchors)", k, tau(-score[held], mean[held]))
                cal = choose_offsets(score[anc], mean[anc], list(fam[anc]))
                put(f"predictor {name} + offsets if anchor LOO keeps them", k,
                    tau(-cal.apply(score, list(fam))[held], mean[held]))
    text = header(f"Combined ranking estimators on held-out standalone references "
                  f"({args.space}, {args.label})")
    text += (f"- {n} subnets with 2 standalone seeds (the ranking bench's references); "
             f"estimators from `bench/results/ranking_inherited.json` (run `{args.run}`, "
             f"signals {args.signal_key}); stage-0 families: "
             + ", ".join(f"{f} {int((fam == f).sum())}" for f in np.unique(fam)) + "\n"
             f"- {args.splits} random splits per K: K anchors (standalone loss known to the "
             "fit), the other subnets held out; Kendall tau on the held-out subnets vs their "
             "standalone val loss (mean of 2 seeds): mean over splits [5%, 95%]\n\n")
    text += "| estimator | " + " | ".join(f"K = {k} anchors ({n - k} held out)"
                                         for k in args.anchors) + " |\n"
    text += "|---|" + "---:|" * len(args.anchors) + "\n"
    for name, per in rows.items():
        cells = []
        for k in args.anchors:
            v = np.asarray(per[k])
            cells.append(f"{v.mean():.3f} [{np.quantile(v, 0.05):.2f}, {np.quantile(v, 0.95):.2f}]")
        text += f"| {name} | " + " | ".join(cells) + " |\n"
    if args.predictor:
        text += predictor_table(args, archs, mean, loss, families)
    if args.train_speed_budgets:
        text += budget_table(args, archs, est, mean, families)
    path = write_result(f"combined_{args.label}_cpu.md", text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
