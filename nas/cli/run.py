"""``nas run``: train, profile, fit the predictor, search, export and report in one command.

Implementation: :mod:`nas.cli._run`.
"""
from __future__ import annotations

import argparse

from nas.cli._lazy import lazy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the whole pipeline in one command (default: digits, tiny32, CPU)",
        description="Train the supernet, profile this machine, collect subnets and fit the "
        "accuracy predictor, search under a latency budget, export the best subnet and write "
        "RUN_DIR/report.html. Each stage has a sub-directory of RUN_DIR; rerunning the same "
        "command skips finished stages and resumes an interrupted one.")
    p.add_argument("--config", metavar="YAML",
                   help="settings file, or a shipped config's name (cifar10), overriding the defaults (sections: train, profile, predictor, "
                   "search, export; top level: space, data, seed); unknown keys are errors. "
                   "Without it, a RUN_DIR of an earlier run resumes with its saved settings")
    p.add_argument("--data", metavar="SPEC",
                   help="dataset spec replacing the config's (digits | imagefolder:PATH | "
                   "cifar10:PATH; PATH may be a .tar/.tar.gz/.tar.xz archive of image folders)")
    p.add_argument("--out", default="runs/default", metavar="RUN_DIR",
                   help="run directory (default: runs/default)")
    p.add_argument("--until", metavar="STAGE",
                   help="stop after this stage: train, profile, collect, fit, search, export, "
                   "report")
    p.add_argument("--show-config", action="store_true",
                   help="print the resolved settings as YAML and exit")
    p.set_defaults(func=lazy("nas.cli._run:run"))
