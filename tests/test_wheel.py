"""The wheel: installs anywhere, carries the shipped spaces, adds no top-level name but `nas`.

Builds the wheel, installs it (without dependencies: they come from this environment)
into a fresh virtual environment outside the repository, and runs `nas space show
tiny32` and a one-epoch `nas train` from a folder that holds no source tree.
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and a venv (about a minute): -m slow


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    return res.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
          str(out), str(ROOT)], cwd=out)
    return next(out.glob("vitnas-*.whl"))


def test_wheel_holds_only_the_nas_namespace_and_the_spaces(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"nas"}
    for member in ("nas/search_spaces/tiny32.yaml", "nas/search_spaces/cifar32.yaml",
                   "nas/search_spaces/reference/deit_cifar.yaml", "nas/configs/cifar10.yaml",
                   "nas/predictors/__init__.py", "nas/kernels/__init__.py"):
        assert member in names


def test_installed_wheel_runs_outside_the_repository(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
          "--no-index", str(wheel)], cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NAS_CACHE_DIR"] = str(tmp_path / "cache")
    where = _run([str(py), "-c", "import nas, nas.predictors, nas.kernels; print(nas.__file__)"],
                 cwd=work, env=env)
    assert str(env_dir) in where  # the wheel's copy, not this checkout
    nas_cli = [str(py), "-m", "nas"]
    assert "tiny32" in _run([*nas_cli, "space", "show", "tiny32"], cwd=work, env=env)
    _run([*nas_cli, "train", "--space", "tiny32", "--data", "digits", "--epochs", "1",
          "--limit-train", "64", "--limit-val", "32", "--threads", "1", "--out", "run"],
         cwd=work, env=env)
    assert (work / "run" / "checkpoints" / "last.safetensors").is_file()
