"""What ``nas train`` does (its flags: :mod:`nas.cli.train`)."""
from __future__ import annotations

import argparse

from nas.io import read_json
from nas.settings import given_flags
from nas.training import train as train_run
from nas.training.config import EXECUTION_FIELDS, ConfigError, TrainConfig
from nas.training.launch import saved_config


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, the saved config (on --resume), --config and the given flags."""
    merged: dict = {}
    if args.resume:
        saved = saved_config(args.out)
        if saved is not None:
            merged.update({k: v for k, v in saved[1].to_dict().items() if k not in EXECUTION_FIELDS})
    if args.config is not None:
        raw = read_json(args.config, what="train config")
        if not isinstance(raw, dict):
            raise ConfigError(f"{args.config}: expected a JSON object of settings")
        merged.update(raw)
    merged.update(given_flags(args, args.settings))
    for name in ("space", "data"):
        if merged.get(name) is None:
            raise ConfigError(f"--{name} is required (unless resuming a run that has config.json)")
    return TrainConfig.from_dict(merged, source="nas train")


def train(args: argparse.Namespace) -> int:
    """``nas train``: train the run's supernet (or one arch) and print the run directory."""
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {args.stop_after}")
    cfg = config_from_args(args)
    run_dir = train_run(cfg, resume=args.resume, stop_after=args.stop_after)
    print(f"run directory: {run_dir}")
    return 0
