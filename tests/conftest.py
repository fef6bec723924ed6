"""Shared fixtures: shipped spaces and an arch builder with overrides."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nas.arch import extreme_pick, walk_arch
from nas.space import load_space

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("tiny32", "full32", "imagenet224")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to the test session's temp dir, never ~/.cache."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nas-cache"))


@pytest.fixture(autouse=True, scope="session")
def _allow_busy():
    """Profiles in tests time tiny spaces for their results, not their speed: never refused
    on a busy machine (session-wide, before module fixtures profile; tests of the busy
    check unset it)."""
    old = os.environ.get("NAS_ALLOW_BUSY")
    os.environ["NAS_ALLOW_BUSY"] = "1"
    yield
    if old is None:
        os.environ.pop("NAS_ALLOW_BUSY", None)
    else:
        os.environ["NAS_ALLOW_BUSY"] = old


SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.xz"


@pytest.fixture(scope="session")
def spaces():
    return {name: load_space(name) for name in SHIPPED}


def arch_with(space, overrides: dict, which: str = "min"):
    """The smallest (or largest) arch, with ``{(where, name): value}`` forced where valid."""
    base = extreme_pick(which)

    def pick(where, name, valid):
        v = overrides.get((where, name), overrides.get(name))
        return v if v in valid else base(where, name, valid)

    return walk_arch(space, pick)
