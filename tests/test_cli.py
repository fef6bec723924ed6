"""The command line itself: start-up cost, lazy sub-commands, one-line errors."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from nas.cli import build_parser, main

from .conftest import ROOT

HEAVY = ("torch", "ray", "timm")


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every runnable sub-command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, (*path, name))


def test_building_the_parser_imports_no_heavy_package():
    """`nas --help` and `nas GROUP --help` stay fast: argument definitions load no torch."""
    code = ("import sys, nas.cli; nas.cli.build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "", f"build_parser() imported {res.stdout.strip()}"


def test_every_sub_command_resolves_to_its_implementation():
    leaves = list(_leaves(build_parser()))
    assert len(leaves) >= 15
    for words, parser in leaves:
        func = parser.get_default("func")
        assert func is not None, f"nas {' '.join(words)} sets no func"
        module, _, name = func.__qualname__.partition(":")
        assert module.startswith("nas.cli._"), f"nas {' '.join(words)}: {func.__qualname__}"
        assert callable(getattr(importlib.import_module(module), name))


def test_export_help_lists_the_formats():
    from nas.cli.export import FORMAT_NAMES
    from nas.export.formats import FORMATS

    assert FORMAT_NAMES == FORMATS


def test_train_flags_show_the_config_defaults(capsys):
    from nas.training import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {TrainConfig.__dataclass_fields__['batch_size'].default})" in text


def test_lazy_training_exports_resolve():
    import nas.training

    for name in nas.training.__all__:
        assert getattr(nas.training, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nas.training.nope  # noqa: B018


def test_errors_stay_one_line_exit_2(capsys):
    assert main(["space", "show", "no-such-space"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and err.count("\n") == 1
