"""``nas predictor``: collect evaluated subnets, fit, evaluate and query accuracy predictors.

Implementation: :mod:`nas.cli._predictor`.
"""
from __future__ import annotations

import argparse

from nas.cli._lazy import lazy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predictor", help="accuracy predictors: collect, fit, eval, predict",
                       description="Collect (arch, accuracy) tables from a trained supernet and "
                       "fit, evaluate and query accuracy predictors on them.")
    s = p.add_subparsers(dest="predictor_command", metavar="ACTION")
    s.required = True
    _add_collect(s)
    _add_fit(s)

    e = s.add_parser("eval", help="metrics of a saved predictor on a table")
    e.add_argument("--predictor", required=True, help="saved predictor")
    e.add_argument("--data", required=True, metavar="TABLE", help="CSV table of evaluated subnets")
    e.set_defaults(func=lazy("nas.cli._predictor:evaluate"))

    q = s.add_parser("predict", help="predicted accuracy of one arch (mean ± std)")
    q.add_argument("--predictor", required=True, help="saved predictor")
    q.add_argument("--arch", required=True, help="YAML/JSON file, or inline YAML/JSON")
    q.set_defaults(func=lazy("nas.cli._predictor:predict"))


def _add_collect(s: argparse._SubParsersAction) -> None:
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
    c.add_argument("--naswot", action="store_true",
                   help="add a naswot column: each subnet's NASWOT score at its own "
                   "initialisation (one forward pass); fit then ranks by the combined target. "
                   "Rows of an existing table get it on resume")
    c.add_argument("--anchors", type=int, default=0, metavar="K",
                   help="then train K subnets of every stage-0 mixer family standalone (the run's "
                   "recipe) into TABLE.anchors.csv; fit checks predictors against them and keeps "
                   "per-family offsets if they help (default 0)")
    c.add_argument("--anchor-epochs", type=int, default=5, metavar="E",
                   help="standalone epochs of each anchor (default 5)")
    c.set_defaults(func=lazy("nas.cli._predictor:collect"))


def _add_fit(s: argparse._SubParsersAction) -> None:
    f = s.add_parser("fit", help="cross-validate and fit a predictor on a table",
                     description="k-fold cross-validation (Kendall tau, Spearman, RMSE, top-k "
                     "precision on held-out folds), then a fit on all rows, saved to PREDICTOR.")
    f.add_argument("--data", required=True, metavar="TABLE", help="CSV table of evaluated subnets")
    f.add_argument("--model", default="auto", help="mlp | gp | ridge | trees | ensemble | auto "
                   "(auto: best cross-validated Kendall tau; default)")
    f.add_argument("--out", required=True, metavar="PREDICTOR",
                   help="directory, or NAME.json for a NAME.json + NAME.safetensors pair")
    f.add_argument("--folds", type=int, default=5, help="cross-validation folds (0 skips; default 5)")
    f.add_argument("--seed", type=int, default=0, help="seed of folds and models (default 0)")
    f.add_argument("--space", help="search space (default: the one recorded beside the table)")
    f.add_argument("--complexity", action="store_true",
                   help="add log(params)/log(MACs) features (slower prediction on new archs)")
    f.add_argument("--target", default="auto",
                   choices=("auto", "acc", "rank", "blend", "combined", "signals"),
                   help="what the model regresses on: the accuracy, its rank-Gaussian scores, "
                   "the blend of accuracy and loss ranks, the combined loss and init-signal "
                   "ranks, or the init-signal ranks alone (signals: for a long train_speed, "
                   "e.g. 1000 steps, which ranks better alone than averaged with the loss; auto: combined when the table has a loss and a train_speed or naswot "
                   "column, else blend when it has a loss column; predictions are accuracies "
                   "either way)")
    f.add_argument("--anchors", metavar="TABLE",
                   help="standalone-trained anchors to report the predictor's Kendall tau "
                   "against and to fit per-family offsets on, kept only if leave-one-out on "
                   "them ranks better (default: TABLE.anchors.csv beside --data if it exists)")
    f.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyperparameter, e.g. --param epochs=300 (repeatable)")
    f.set_defaults(func=lazy("nas.cli._predictor:fit"))
