"""``nas arch``: information about one architecture (implementation: :mod:`nas.cli._arch`)."""
from __future__ import annotations

import argparse

from nas.cli._lazy import lazy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arch", help="inspect architectures")
    s = p.add_subparsers(dest="arch_command", metavar="ACTION")
    s.required = True
    info = s.add_parser("info", help="params, MACs and validity of an arch")
    info.add_argument("arch", help="YAML/JSON file, or inline YAML/JSON")
    info.add_argument("--space", required=True, help="search space YAML file or shipped name")
    info.set_defaults(func=lazy("nas.cli._arch:info"))
