"""``nas search``: search archs under a latency budget with Ray Tune (see :mod:`nas.search`).

Implementation: :mod:`nas.cli._search`.
"""
from __future__ import annotations

import argparse

from nas.cli._lazy import lazy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="search archs under a latency budget (Ray Tune)",
        description="Search the archs of a space for the most accurate one within a latency "
                    "budget. Every searcher runs as a Ray Tune experiment, embedded by default, "
                    "on a cluster with --address or RAY_ADDRESS. Rerunning the same command, or "
                    "`nas search --resume RUN_DIR`, continues an interrupted search.")
    p.add_argument("--space", help="search space YAML file or shipped name")
    p.add_argument("--table", help="latency table of the space (nas profile)")
    p.add_argument("--predictor", help="accuracy predictor of the space (nas predictor fit)")
    p.add_argument("--budget-ms", type=float, help="latency budget in ms, per the table")
    p.add_argument("--searcher", default="evolution",
                   help="evolution, tpe, gp, nsga2 or random (default: evolution)")
    p.add_argument("--trials", type=int, default=1000, help="archs to evaluate (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the searcher (default: 0)")
    p.add_argument("--workers", type=int, help="concurrent Ray trials (default: the cluster's CPUs)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded)")
    p.add_argument("--objective", default="predictor",
                   help="predictor (table + predictor, default), supernet (inherited weights "
                        "of --run, latency from --table) or synthetic (a formula, for tests)")
    p.add_argument("--run", help="supernet run dir (nas train), for --objective supernet")
    p.add_argument("--batch-size", type=int, help="archs per Ray trial (default: automatic)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per Ray trial (default: 1 for supernet when the cluster has GPUs)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="searcher option, e.g. population_size=32 (JSON value; repeatable)")
    p.add_argument("--out", help="run directory to create (or to resume, if it holds this search)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the search in RUN_DIR (only --address/--workers may change)")
    p.set_defaults(func=lazy("nas.cli._search:search"))

    r = sub.add_parser(
        "rerank", help="re-rank a search's best candidates by their own training speed",
        description="Score the TOP most accurate archs of a finished search that fit its "
                    "budget with the training-speed estimate (minus the summed loss of the "
                    "first STEPS standalone training steps from their own initialisation, "
                    "the training run's recipe), and pick the fastest learner. It ranks "
                    "mixer families the way standalone training does, which inherited-weight "
                    "predictors do not (CIFAR-10 references: tau 0.76 vs 0.47), at 90-220 CPU s "
                    "per cifar32 arch with 1000 steps. Writes rerank.csv and best_rerank.yaml in the "
                    "search dir; rerunning resumes.")
    r.add_argument("search_dir", metavar="SEARCH_DIR", help="run directory of nas search")
    r.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="the supernet's training run (nas train): recipe and training images")
    r.add_argument("--top", type=int, default=10, help="candidates to score (default: 10)")
    r.add_argument("--steps", type=int, default=1000,
                   help="training steps per candidate (default: 1000)")
    r.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    r.set_defaults(func=lazy("nas.cli._search:rerank"))

    v = sub.add_parser(
        "verify", help="time a search's best candidates end to end and refit the table on them",
        description="Time the TOP most accurate archs of a finished search that its latency "
                    "table predicts within the budget, end to end on this machine (the table's "
                    "setting), add them to the table as calibration samples and refit it, with "
                    "a local correction that moves predictions near a timed arch toward what it "
                    "measured; repeat with the refitted table (up to ROUNDS times) until the "
                    "TOP candidates are all timed. A search is drawn to archs the table predicts "
                    "too fast; this catches them. Writes verified.csv, best_verified.yaml, "
                    "verify.jsonl and the refitted table (table.verified.json) in the search dir; "
                    "the search's own table is left as it is; rerunning resumes.")
    v.add_argument("search_dir", metavar="SEARCH_DIR", help="run directory of nas search")
    v.add_argument("--table", metavar="TABLE",
                   help="latency table to start from (default: the search's)")
    v.add_argument("--out", metavar="TABLE_OUT",
                   help="where the refitted table goes (default: SEARCH_DIR/table.verified.json; "
                        "an existing one is resumed)")
    v.add_argument("--top", type=int, default=5, help="candidates to time (default: 5)")
    v.add_argument("--rounds", type=int, default=3,
                   help="refit-and-time rounds at most (default: 3)")
    v.set_defaults(func=lazy("nas.cli._search:verify"))
