"""``nas predictor``: collect evaluated subnets, fit, evaluate and query accuracy predictors."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import yaml

from nas.errors import NasError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predictor", help="accuracy predictors: collect, fit, eval, predict",
                       description="Collect (arch, accuracy) tables from a trained supernet and "
                       "fit, evaluate and query accuracy predictors on them.")
    s = p.add_subparsers(dest="predictor_command", metavar="ACTION")
    s.required = True

    c = s.add_parser("collect", help="evaluate sampled subnets of a trained supernet into a table",
                     description="Sample N subnets uniformly (plus the largest and smallest), "
                     "evaluate them with inherited weights on the validation split and write "
                     "a CSV table. Rerunning resumes; a larger -n extends the table.")
    c.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory of 'nas train'")
    c.add_argument("-n", type=int, required=True, help="subnets to sample (besides largest/smallest)")
    c.add_argument("--out", required=True, metavar="TABLE.csv", help="CSV table to write or resume")
    c.add_argument("--seed", type=int, default=0, help="seed of the arch sampling (default 0)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="parallel evaluators; 1 = in this process without "
                   "Ray, more = local Ray (default: the CPU count)")
    g.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS)")
    c.add_argument("--chunk-size", type=int, help="archs per Ray task (table rewritten after each)")
    c.add_argument("--views", type=int, default=1,
                   help="score each val image in this many 1-pixel-shifted views (1-9; default "
                   "1): less label noise on a small val split, views x the inference")
    c.add_argument("--refit-images", type=int, default=0, metavar="N",
                   help="refit each subnet's classifier on its features of N training images "
                   "before scoring it (default 0: the inherited classifier); ranks subnets "
                   "closer to standalone training, at the cost of N images of inference each")
    c.add_argument("--train-speed-steps", type=int, default=0, metavar="STEPS",
                   help="add a train_speed column: each subnet trained STEPS steps from its own "
                   "initialisation (minus the summed loss; e.g. 100). Fit then ranks by the "
                   "combined target. Default 0: skip")
    c.add_argument("--anchors", type=int, default=0, metavar="K",
                   help="then train K subnets of every stage-0 mixer family standalone (the run's "
                   "recipe) into TABLE.anchors.csv, to check predictors against (default 0)")
    c.add_argument("--anchor-epochs", type=int, default=5, metavar="E",
                   help="standalone epochs of each anchor (default 5)")
    c.set_defaults(func=_collect)

    f = s.add_parser("fit", help="cross-validate and fit a predictor on a table",
                     description="k-fold cross-validation (Kendall tau, Spearman, RMSE, top-k "
                     "precision on held-out folds), then a fit on all rows, saved to PREDICTOR.")
    f.add_argument("--data", required=True, metavar="TABLE", help="CSV table of evaluated subnets")
    f.add_argument("--model", default="auto", help="mlp | gp | ridge | ensemble | auto "
                   "(auto: best cross-validated Kendall tau; default)")
    f.add_argument("--out", required=True, metavar="PREDICTOR",
                   help="directory, or NAME.json for a NAME.json + NAME.safetensors pair")
    f.add_argument("--folds", type=int, default=5, help="cross-validation folds (0 skips; default 5)")
    f.add_argument("--seed", type=int, default=0, help="seed of folds and models (default 0)")
    f.add_argument("--space", help="search space (default: the one recorded beside the table)")
    f.add_argument("--complexity", action="store_true",
                   help="add log(params)/log(MACs) features (slower prediction on new archs)")
    f.add_argument("--target", default="auto", choices=("auto", "acc", "rank", "blend", "combined"),
                   help="what the model regresses on: the accuracy, its rank-Gaussian scores, "
                   "the blend of accuracy and loss ranks, or the combined loss and train_speed "
                   "ranks (auto: combined when the table has both columns, else blend when it "
                   "has a loss column; predictions are accuracies either way)")
    f.add_argument("--anchors", metavar="TABLE",
                   help="standalone-trained anchors to report the predictor's Kendall tau "
                   "against (default: TABLE.anchors.csv beside --data when it exists)")
    f.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyperparameter, e.g. --param epochs=300 (repeatable)")
    f.set_defaults(func=_fit)

    e = s.add_parser("eval", help="metrics of a saved predictor on a table")
    e.add_argument("--predictor", required=True, help="saved predictor")
    e.add_argument("--data", required=True, metavar="TABLE", help="CSV table of evaluated subnets")
    e.set_defaults(func=_eval)

    q = s.add_parser("predict", help="predicted accuracy of one arch (mean ± std)")
    q.add_argument("--predictor", required=True, help="saved predictor")
    q.add_argument("--arch", required=True, help="YAML/JSON file, or inline YAML/JSON")
    q.set_defaults(func=_predict)


def _collect(args: argparse.Namespace) -> int:
    from nas.predictors.anchors import train_anchors
    from nas.predictors.collect import collect_table

    for flag, value, low in (("--anchors", args.anchors, 0), ("--anchor-epochs", args.anchor_epochs, 1)):
        if value < low:
            raise NasError(f"{flag} must be >= {low}, got {value}")

    summary = collect_table(args.run, args.n, args.out, seed=args.seed, workers=args.workers,
                            address=args.address, chunk_size=args.chunk_size, views=args.views,
                            refit_images=args.refit_images,
                            train_speed_steps=args.train_speed_steps)
    per = summary["eval_s_per_arch"]
    print(f"table {args.out}: {summary['rows']} rows ({summary['new']} new, {summary['skipped']} "
          f"already there) in {summary['wall_s']:.1f}s"
          + (f", {per:.3f}s per subnet per worker" if math.isfinite(per) else ""))
    if args.anchors:
        got = train_anchors(args.run, args.anchors, args.out, epochs=args.anchor_epochs,
                            seed=args.seed, workers=args.workers, address=args.address)
        print(f"anchors: {got['rows']} rows ({got['new']} new) in {got['wall_s']:.1f}s")
    return 0


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NasError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise NasError(f"--param {key}: cannot parse value {value!r}") from None
    return out


def _fmt(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    spread = f" ± {std:.{digits}f}" if std is not None and math.isfinite(std) else ""
    return f"{mean:.{digits}f}{spread}"


_COLS = (("kendall_tau", "Kendall tau"), ("spearman", "Spearman"), ("rmse", "RMSE"),
         ("top_k_precision", "top-10%"))


def _print_rows(rows: list[tuple[str, dict, dict | None]]) -> None:
    width = max(10, *(len(r[0]) for r in rows))
    print(f"{'model':<{width}}  " + "  ".join(f"{title:>15}" for _, title in _COLS))
    for name, mean, std in rows:
        cells = [_fmt(mean.get(k), (std or {}).get(k), 4 if k == "rmse" else 3) for k, _ in _COLS]
        print(f"{name:<{width}}  " + "  ".join(f"{c:>15}" for c in cells))


def _fit(args: argparse.Namespace) -> int:
    from nas.predictors import fit_predictor
    from nas.predictors.anchors import anchor_metrics, anchor_paths
    from nas.space import load_space

    space = load_space(args.space) if args.space else None
    anchors = Path(args.anchors) if args.anchors else anchor_paths(args.data)[0]
    if args.anchors and not anchors.is_file():
        raise NasError(f"--anchors: no table at {anchors}")
    pred = fit_predictor(args.data, model=args.model, space=space, seed=args.seed,
                         folds=args.folds, complexity=args.complexity, target=args.target,
                         **_params(args.param))
    cv = pred.info.get("cv")
    if cv:
        print(f"{cv['families'][cv['selected']]['folds']}-fold cross-validation on {args.data} "
              f"({pred.info['data']['rows']} rows), mean ± std over folds:")
        _print_rows([(fam, r["mean"], r["std"]) for fam, r in cv["families"].items()])
        if args.model == "auto":
            print(f"selected: {cv['selected']} (best Kendall tau)")
    if anchors.is_file():
        got = anchor_metrics(pred, anchors)
        pred.info["anchors"] = got
        t = got["kendall_tau"]
        print(f"against {got['anchors']} standalone anchors ({anchors}): Kendall tau "
              f"{_fmt(t['all'])} (same stage-0 mixer {_fmt(t['same_family'])}, different "
              f"{_fmt(t['across_families'])})")
    path = pred.save(args.out)
    print(f"fitted {pred.family} (target {pred.target.kind}) on {pred.info['data']['rows']} rows "
          f"of space {pred.space.name} "
          f"({pred.space_fingerprint}) -> {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from nas.predictors import load_predictor, ranking_metrics, read_table
    from nas.predictors.table import table_space

    recorded = table_space(args.data) if Path(args.data).is_file() else None
    pred = load_predictor(args.predictor, space=recorded)
    table = read_table(args.data, space=pred.space)
    rows = [(f"{pred.family} (predictor)", ranking_metrics(table.acc, pred.predict(table.archs)),
             None)]
    for name, col in (("params (zero-cost)", table.params), ("MACs (zero-cost)", table.macs)):
        if col is not None:
            m = ranking_metrics(table.acc, col)
            rows.append((name, {**m, "rmse": None}, None))
    print(f"{args.data}: {len(table)} rows, space {pred.space.name} ({pred.space_fingerprint})")
    _print_rows(rows)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nas.arch import canonicalize, load_arch
    from nas.predictors import load_predictor

    pred = load_predictor(args.predictor)
    arch = canonicalize(pred.space, load_arch(args.arch))
    mean, std = pred.predict_with_std([arch])
    spread = f" ± {std[0]:.4f}" if std is not None else " (no uncertainty for this family)"
    print(f"predicted val accuracy {mean[0]:.4f}{spread}  [{pred.family}, space {pred.space.name}]")
    return 0
