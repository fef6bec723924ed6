"""kill -9 in the middle of each long command: the rerun resumes, nothing is lost or left.

Each command runs as a subprocess (as a user runs it) and is killed with SIGKILL, which
runs no cleanup, once it has written part of its work; the same command then runs again
(``--resume`` for nas train and nas search) and must finish with every unit of work
present exactly once and no temp file left behind.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow  # about a minute of subprocesses: run with -m slow

TINY = ["--space", "tiny32", "--data", "digits", "--batch-size", "32", "--limit-train", "96",
        "--limit-val", "48", "--threads", "1"]


def _nas(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas", *map(str, argv)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _kill_when(argv: list[str], ready: Callable[[], bool], timeout: float = 120) -> None:
    """Start ``nas ARGV``, SIGKILL its whole process group as soon as ``ready()``."""
    proc = _nas(argv)
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"finished before it could be killed: {proc.stderr.read()[-500:]}")
        if time.monotonic() - t0 > timeout:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _finish(argv: list[str]) -> None:
    proc = _nas(argv)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-1000:]


def _no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]
    assert not left, left


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_train(tmp_path):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--epochs", "4", "--out", run]
    _kill_when(argv, lambda: (run / "metrics.csv").is_file()
               and len(_rows(run / "metrics.csv")) >= 2)
    _finish([*argv, "--resume"])
    assert [int(r["epoch"]) for r in _rows(run / "metrics.csv")] == [1, 2, 3, 4]
    _no_temp_files(run)


def test_profile(tmp_path):
    table = tmp_path / "table.json"
    argv = ["profile", "--space", "tiny32", "--min-run-time", "0.002", "--warmup", "1",
            "--rounds", "1", "--calibrate", "2", "--max-entries", "60", "--out", table]
    _kill_when(argv, lambda: table.is_file() and len(json.loads(table.read_text())["entries"]) >= 10)
    killed_at = len(json.loads(table.read_text())["entries"])
    _finish(argv)
    entries = json.loads(table.read_text())["entries"]
    keys = [json.dumps([e["kind"], e["params"]], sort_keys=True) for e in entries]
    assert len(keys) == len(set(keys)) and len(keys) >= max(60, killed_at)
    _no_temp_files(tmp_path)


def test_run_collect_search_export(tmp_path):
    """nas run: killed in training, in collection and in the search; each rerun resumes."""
    config = tmp_path / "c.yaml"
    config.write_text("train: {epochs: 3, batch_size: 32, limit_train: 96, limit_val: 48}\n"
                      "profile: {calibrate: 2, min_run_time: 0.002, rounds: 1}\n"
                      "predictor: {collect: 24, views: 1, folds: 2, model: ridge}\n"
                      "search: {trials: 60}\nexport: {formats: [safetensors]}\n")
    out = tmp_path / "run"
    argv = ["run", "--config", config, "--out", out]
    metrics = out / "train" / "metrics.csv"
    _kill_when(argv, lambda: metrics.is_file() and len(_rows(metrics)) >= 1)
    subnets = out / "predictor" / "subnets.csv"
    _kill_when(argv, lambda: subnets.is_file() and len(_rows(subnets)) >= 4, timeout=400)
    trials = out / "search" / "trials.jsonl"
    _kill_when(argv, lambda: trials.is_file() and len(trials.read_text().splitlines()) >= 5,
               timeout=400)
    _finish(argv)
    assert [int(r["epoch"]) for r in _rows(metrics)] == [1, 2, 3]
    archs = [r["arch"] for r in _rows(subnets)]
    assert len(archs) == len(set(archs)) >= 24
    ids = [json.loads(line)["trial"] for line in trials.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 60
    assert (out / "export" / "model" / "model.safetensors").is_file()
    assert (out / "report.html").is_file()
    _no_temp_files(out)


def _session_processes(tag: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if tag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the Ray reaper needs Linux /proc")
def test_kill_9_of_the_driver_alone_leaves_no_ray_processes(tmp_path):
    """Only the main process is killed (as `kill -9 PID` does): the reaper ends its Ray
    session's processes within seconds instead of the minute Ray takes by itself."""
    script = ("import os, time\n"
              "from nas.raysession import ray_session\n"
              "from ray._private import worker\n"
              "with ray_session(num_cpus=1):\n"
              "    print(os.path.basename(worker._global_node.get_session_dir_path()), flush=True)\n"
              "    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    tag = proc.stdout.readline().strip()
    assert tag.startswith("session_"), tag
    assert _session_processes(tag), "no Ray process names the session"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while _session_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.25)
    left = _session_processes(tag)
    if left:
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes left after 15 s: {left}"
