"""``nas space``: validate, show and sample search spaces (implementation: :mod:`nas.cli._space`)."""
from __future__ import annotations

import argparse

from nas.cli._lazy import lazy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="validate, show and sample search spaces")
    s = p.add_subparsers(dest="space_command", metavar="ACTION")
    s.required = True
    v = s.add_parser("validate", help="check a search-space YAML file")
    v.add_argument("file", help="YAML file, or the name of a shipped space (tiny32, imagenet224...)")
    v.set_defaults(func=lazy("nas.cli._space:validate"))
    sh = s.add_parser("show", help="dimensions, size and fingerprint of a space")
    sh.add_argument("file")
    sh.add_argument("--json", action="store_true", help="print the canonical form as JSON")
    sh.set_defaults(func=lazy("nas.cli._space:show"))
    sa = s.add_parser("sample", help="sample random architectures (YAML documents)")
    sa.add_argument("file")
    sa.add_argument("-n", type=int, default=1, help="how many (default 1)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--format", choices=("yaml", "json"), default="yaml")
    sa.set_defaults(func=lazy("nas.cli._space:sample"))
