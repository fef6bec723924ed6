"""The ``nas`` command line.

Each module in this package (other than private ones) is a command group with a
``register(subparsers)`` function that adds its sub-commands. A command module holds
argument definitions only and imports nothing heavy, so ``nas --help`` stays fast:
each sub-command's ``func(args) -> int`` is ``lazy("nas.cli._GROUP:FUNCTION")``
(:mod:`nas.cli._lazy`), and the private module ``_GROUP`` that does the work, with its
torch and Ray imports, is loaded only when the command runs. Invalid user input (any :class:`nas.errors.NasError`, or a
file that cannot be read or written) is reported as one line on stderr with exit
code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from nas.errors import NasError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas", description="Hardware-aware neural architecture search for efficient "
        "vision transformers: train a supernet, profile latency, fit a predictor, search, export.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NasError as e:
        print(f"nas: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        print(f"nas: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted; finished work is saved: rerun the same command to resume "
              "(nas train: add --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
