"""Shared helpers for bench scripts: a header naming date, machine and command, and
atomic writing of the results file under ``bench/results/``."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(title: str) -> str:
    """Markdown header: title, date, machine, torch, threads, and the exact command."""
    cmd = shlex.join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"# {title}\n\n"
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
            f"- machine: {cpu_name()}, {os.cpu_count()} cores, {dev}\n"
            f"- torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"python {platform.python_version()}\n"
            f"- load average (1/5/15 min) when written: {_load()} on {os.cpu_count()} cores "
            f"(above ~0.5 per core, other jobs shared the CPU and timings are upper bounds)\n"
            f"- command: `{cmd}`\n\n")


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def write_result(name: str, text: str) -> Path:
    """Write ``bench/results/NAME`` atomically and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
