"""``nas profile``, ``nas latency``, ``nas measure``: latency tables and ground truth.

* ``nas profile`` times every component signature of a space on a device (locally,
  or on a Ray cluster node with ``--address``/``RAY_ADDRESS``) into a table;
* ``nas latency`` predicts an arch's latency from a table (``--breakdown`` per
  component); ``nas latency merge A B --out C`` joins two tables;
* ``nas measure`` times the arch's standalone model end to end, the same way.

Implementation: :mod:`nas.cli._latency`.
"""
from __future__ import annotations

import argparse

from nas.cli._lazy import lazy
from nas.latency.config import ProfileConfig
from nas.settings import add_flags


def _device_args(p: argparse.ArgumentParser) -> None:
    """``nas latency``'s setting check: by default, the table's own setting."""
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:INDEX")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward (default 1)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16 or bf16 (default fp32)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads while timing (default: torch's current setting)")


def _profile_args(p: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """The setting and timing flags: one per :class:`ProfileConfig` field (its help, rule and
    default); the command reads them back with ``ProfileConfig(**given_flags(...))``."""
    p.set_defaults(settings=add_flags(p, ProfileConfig, skip=skip))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure a latency lookup table for a space on a device")
    p.add_argument("--space", required=True, help="search space YAML file or shipped name")
    _profile_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subnets")
    p.add_argument("--archs", nargs="+", action="extend", default=None, metavar="FILE",
                   help="profile only the signatures these archs need (YAML/JSON files: one "
                        "arch, a list, several YAML documents, or JSON lines)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address; measure on a cluster node (default: RAY_ADDRESS, "
                        "else locally)")
    p.add_argument("--out", required=True, help="table file (JSON); an existing one is resumed")
    p.add_argument("--max-entries", type=int, default=None, metavar="K",
                   help="stop after K new entries (resume later by rerunning)")
    p.add_argument("--max-signatures", type=int, default=20000,
                   help="refuse spaces with more signatures (default 20000; use --archs)")
    p.add_argument("--recalibrate", action="store_true",
                   help="time the calibration subnets of an existing --out again and refit")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing --out of another space or device")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=lazy("nas.cli._latency:profile"))

    q = sub.add_parser("latency", help="predict latency from a table (or: latency merge A B)")
    q.add_argument("action", nargs="?", default="predict", choices=("predict", "merge"),
                   help="predict (default), or merge tables")
    q.add_argument("tables", nargs="*", help="merge: the tables to merge")
    q.add_argument("--table", help="predict: the latency table (JSON)")
    q.add_argument("--arch", help="predict: arch YAML/JSON file, or inline YAML/JSON")
    q.add_argument("--space", help="check the table belongs to this space")
    q.add_argument("--breakdown", action="store_true", help="latency of every component")
    q.add_argument("--force", action="store_true",
                   help="use a table of another space or device anyway")
    q.add_argument("--out", help="merge: output table")
    _device_args(q)
    q.set_defaults(func=lazy("nas.cli._latency:latency"))

    m = sub.add_parser("measure", help="time an arch's standalone model end to end")
    m.add_argument("--arch", required=True, help="arch YAML/JSON file, or inline YAML/JSON")
    m.add_argument("--space", required=True, help="search space YAML file or shipped name")
    _profile_args(m, skip=("calibrate", "calibration", "allow_busy"))
    m.add_argument("--table", help="also print the table's prediction")
    m.set_defaults(func=lazy("nas.cli._latency:measure"))
