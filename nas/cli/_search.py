"""What ``nas search`` does (its flags: :mod:`nas.cli.search`)."""
from __future__ import annotations

import argparse
import json

from nas.search import SearchConfig, SearchError, resume_search, run_search


def _options(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SearchError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def search(args: argparse.Namespace) -> int:
    """``nas search``: start a search from the flags, or resume one; print its summary."""
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in ("space", "table", "predictor", "budget_ms",
                                                     "run", "out", "batch_size", "gpus_per_trial")
                 if getattr(args, k) is not None] + (["--option"] if args.option else [])
        if given:
            raise SearchError(f"--resume continues the saved search; it takes no "
                              f"{', '.join(given)} (only --address, --workers)")
        result = resume_search(args.resume, address=args.address, workers=args.workers)
    else:
        missing = [flag for flag, v in (("--space", args.space), ("--budget-ms", args.budget_ms),
                                        ("--out", args.out)) if v is None]
        if missing:
            raise SearchError(f"nas search needs {', '.join(missing)} (or --resume RUN_DIR)")
        config = SearchConfig(
            space=args.space, budget_ms=args.budget_ms, out=args.out, searcher=args.searcher,
            trials=args.trials, objective=args.objective, table=args.table,
            predictor=args.predictor, run=args.run, seed=args.seed, workers=args.workers,
            batch_size=args.batch_size, gpus_per_trial=args.gpus_per_trial,
            address=args.address, options=_options(args.option))
        result = run_search(config)
    print(result.summary)
    return 0 if result.best is not None else 1


def rerank(args: argparse.Namespace) -> int:
    """``nas rerank``: re-rank a search's best candidates by training speed; print the pick."""
    from nas.search.rerank import rerank as run_rerank
    from nas.threads import num_threads

    if args.threads is not None and args.threads < 1:
        raise SearchError(f"--threads must be >= 1, got {args.threads}")
    with num_threads(args.threads):
        print(run_rerank(args.search_dir, args.run, top=args.top, steps=args.steps).summary)
    return 0


def verify(args: argparse.Namespace) -> int:
    """``nas verify``: time a search's best candidates, refit its table; print the pick."""
    from nas.search.verify import verify as run_verify

    print(run_verify(args.search_dir, table=args.table, out=args.out, top=args.top,
                     rounds=args.rounds).summary)
    return 0
