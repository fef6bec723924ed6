"""What ``nas predictor`` does (its flags: :mod:`nas.cli.predictor`)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import yaml

from nas.arch import canonicalize, load_arch
from nas.errors import NasError
from nas.predictors import fit_predictor, load_predictor, ranking_metrics, read_table
from nas.predictors.anchors import anchor_paths, calibrate_with_anchors, train_anchors
from nas.predictors.calibration import describe_calibration
from nas.predictors.collect import collect_table
from nas.predictors.table import table_space
from nas.space import load_space


def collect(args: argparse.Namespace) -> int:
    """``nas predictor collect``: evaluate sampled subnets into a table (and train anchors)."""
    for flag, value, low in (("--anchors", args.anchors, 0), ("--anchor-epochs", args.anchor_epochs, 1)):
        if value < low:
            raise NasError(f"{flag} must be >= {low}, got {value}")

    summary = collect_table(args.run, args.n, args.out, seed=args.seed, workers=args.workers,
                            address=args.address, chunk_size=args.chunk_size, views=args.views,
                            refit_images=args.refit_images,
                            train_speed_steps=args.train_speed_steps, naswot=args.naswot)
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


def fit(args: argparse.Namespace) -> int:
    """``nas predictor fit``: cross-validate, fit and save a predictor; print the metrics."""
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
        got = calibrate_with_anchors(pred, anchors)
        pred.info["anchors"] = got
        t = got["kendall_tau"]
        print(f"against {got['anchors']} standalone anchors ({anchors}): Kendall tau "
              f"{_fmt(t['all'])} (same stage-0 mixer {_fmt(t['same_family'])}, different "
              f"{_fmt(t['across_families'])})")
        print(describe_calibration(got["calibration"]))
    path = pred.save(args.out)
    print(f"fitted {pred.family} (target {pred.target.kind}) on {pred.info['data']['rows']} rows "
          f"of space {pred.space.name} "
          f"({pred.space_fingerprint}) -> {path}")
    if getattr(pred.model, "flat", False):
        print("warning: every fit the Gaussian process found predicts about the same value for "
              "every arch (the table looks like noise to it); it will not rank subnets: "
              "collect more rows or use --model auto")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``nas predictor eval``: ranking metrics of a saved predictor (and zero-cost proxies)."""
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


def predict(args: argparse.Namespace) -> int:
    """``nas predictor predict``: predicted accuracy (and spread) of one arch."""
    pred = load_predictor(args.predictor)
    arch = canonicalize(pred.space, load_arch(args.arch))
    mean, std = pred.predict_with_std([arch])
    spread = f" ± {std[0]:.4f}" if std is not None else " (no uncertainty for this family)"
    print(f"predicted val accuracy {mean[0]:.4f}{spread}  [{pred.family}, space {pred.space.name}]")
    return 0
