"""``nas train``: train a weight-sharing supernet (sandwich rule + in-place distillation).

Settings come from, in increasing priority: the defaults of
:class:`nas.training.TrainConfig`, the saved ``config.json`` when resuming, a JSON
file given with ``--config``, then the flags given on the command line.
"""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from nas.io import read_json
from nas.training.config import EXECUTION_FIELDS, ConfigError, TrainConfig

_D = {f.name: f.default for f in fields(TrainConfig)}
# flag -> config field; flags left out of the command line do not override anything
_FLAGS = {
    "space": "space", "data": "data", "out": "out", "epochs": "epochs", "seed": "seed",
    "batch_size": "batch_size", "lr": "lr", "num_random": "num_random", "workers": "workers",
    "address": "address", "device": "device", "threads": "threads",
    "limit_train": "limit_train", "limit_val": "limit_val", "arch": "arch",
    "max_shift": "max_shift", "hflip": "hflip",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a supernet of a search space, or one arch alone (--arch)",
        description="Train the weight-sharing supernet of a search space with the sandwich "
        "rule and in-place distillation; or, with --arch, one architecture of the space alone "
        "from scratch with the same recipe (standalone training, e.g. to retrain a found "
        "subnet or a baseline). Write config, metrics, log and checkpoints to RUN_DIR.")
    p.add_argument("--space", help="search space YAML file or shipped name (e.g. tiny32)")
    p.add_argument("--data", help="dataset: digits | imagefolder:PATH | cifar10:PATH")
    p.add_argument("--arch", help="train this arch (YAML/JSON file or inline) alone from "
                   "scratch instead of the supernet; it must belong to --space")
    p.add_argument("--epochs", type=int, help=f"training epochs (default {_D['epochs']})")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--seed", type=int, help="seed of weights, data order, augmentation, subnets")
    p.add_argument("--batch-size", type=int, help=f"global batch size (default {_D['batch_size']})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {_D['lr']}, AdamW)")
    p.add_argument("--num-random", type=int, help="random subnets per step besides the "
                   f"largest and smallest (default {_D['num_random']})")
    p.add_argument("--max-shift", type=int, help="random translation in pixels (pad + random "
                   f"crop; default {_D['max_shift']}, 4 is the CIFAR standard)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default off: digits are chiral)")
    p.add_argument("--workers", type=int, help="data-parallel Ray Train workers "
                   "(default: train in this process without Ray)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--threads", type=int, help="torch threads per process (default: automatic)")
    p.add_argument("--config", type=Path, metavar="JSON",
                   help="JSON file of TrainConfig settings (flags override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its last checkpoint")
    # test/debug knobs, not shown in --help
    p.add_argument("--limit-train", type=int, help=argparse.SUPPRESS)
    p.add_argument("--limit-val", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=_train)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, the saved config (on --resume), --config and the given flags."""
    from nas.training.launch import saved_config

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
    merged.update({field: getattr(args, flag) for flag, field in _FLAGS.items()
                   if getattr(args, flag) is not None})
    for name in ("space", "data"):
        if merged.get(name) is None:
            raise ConfigError(f"--{name} is required (unless resuming a run that has config.json)")
    return TrainConfig.from_dict(merged, source="nas train")


def _train(args: argparse.Namespace) -> int:
    from nas.training import train

    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {args.stop_after}")
    cfg = config_from_args(args)
    run_dir = train(cfg, resume=args.resume, stop_after=args.stop_after)
    print(f"run directory: {run_dir}")
    return 0
