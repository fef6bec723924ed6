"""``nas train``: train a weight-sharing supernet (sandwich rule + in-place distillation).

Settings come from, in increasing priority: the defaults of
:class:`nas.training.TrainConfig`, the saved ``config.json`` when resuming, a JSON
file given with ``--config``, then the flags given on the command line.

Implementation: :mod:`nas.cli._train`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nas.cli._lazy import lazy
from nas.settings import add_flags
from nas.training.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a supernet of a search space, or one arch alone (--arch)",
        description="Train the weight-sharing supernet of a search space with the sandwich "
        "rule and in-place distillation; or, with --arch, one architecture of the space alone "
        "from scratch with the same recipe (standalone training, e.g. to retrain a found "
        "subnet or a baseline). Write config, metrics, log and checkpoints to RUN_DIR.")
    # one flag per TrainConfig field, with its help, rule and default (nas.settings);
    # the optimiser and sandwich details are accepted but not shown in --help
    p.set_defaults(settings=add_flags(p, TrainConfig, required=("out",)))
    p.add_argument("--config", type=Path, metavar="JSON",
                   help="JSON file of TrainConfig settings (flags override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its last checkpoint")
    # test/debug knob, not shown in --help
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=lazy("nas.cli._train:train"))
