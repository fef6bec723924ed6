"""What ``nas run`` does (its flags: :mod:`nas.cli.run`)."""
from __future__ import annotations

import argparse

import yaml

from nas.pipeline import load_pipeline_config, run_pipeline


def run(args: argparse.Namespace) -> int:
    """``nas run``: resolve the settings, then run (or resume) the pipeline up to ``--until``."""
    cfg = load_pipeline_config(args.config, run_dir=args.out, data=args.data)
    if args.show_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    report = run_pipeline(cfg, args.out, until=args.until)
    if report.is_file():
        print(f"report: {report}")
    return 0
