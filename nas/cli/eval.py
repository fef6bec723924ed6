"""``nas eval``: top-1 accuracy and loss of subnets with weights inherited from a trained supernet.

Implementation: :mod:`nas.cli._eval`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nas.cli._lazy import lazy

# --reference name -> nas.arch.extreme_arch's ``which``
REFERENCES = {"largest": "max", "smallest": "min"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate subnets of a trained supernet",
        description="Evaluate subnets with inherited weights on the validation split of the "
        "run's dataset (BatchNorm subnets are recalibrated on training images first).")
    p.add_argument("--run", required=True, type=Path, metavar="RUN_DIR", help="nas train run dir")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="arch YAML/JSON file or inline YAML/JSON")
    which.add_argument("--sample", type=int, metavar="N", help="N random subnets")
    which.add_argument("--reference", choices=tuple(REFERENCES), help="largest or smallest subnet")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--refit-head", action="store_true",
                   help="refit each subnet's classifier on its features of the training split "
                   "first (the rest keeps the inherited weights); ranks subnets closer to "
                   "training them alone (bench/bench_ranking.py)")
    p.add_argument("--out", type=Path, metavar="CSV", help="also write the table as CSV")
    p.set_defaults(func=lazy("nas.cli._eval:evaluate"))
