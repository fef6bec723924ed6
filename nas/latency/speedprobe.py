"""A reference kernel that tells how fast the machine runs right now.

A shared VM slows down in phases no load reading shows: bursts of 0.5-1.5 s a few seconds
apart, and now and then phases longer than any round of timing (a `nas run` report
measured its picks 10-43% slow in 3 of 8 runs, with no other process and no steal time
recorded). Such a phase slows a fixed workload as much as the models timed beside it,
so the profiler times one -- a small MLP on fixed random inputs, the same clock and
statistic as everything else -- before every round, and the table records the fastest
reading (``scope["probe_ms"]``). Ground truth timed later (the report, ``nas measure``)
probes before and after each of its rounds, and the rounds go on (up to a time limit)
until two of them lie between probes within :data:`SLOW` of the session's fastest and
the machine runs as fast as it did when the table was profiled. Every round counts
toward each model's fastest (a slow phase only raises timings).
Whatever is left of a slowdown is reported as a ratio instead of being passed off as
a latency.

The workload grows with the batch size (``16 x batch`` rows of 16 x 128), so it touches
about as much memory as the models it stands for. At batch 64, per second of this
project's VM, a batch-1 workload (0.13 MiB) followed a tiny32 subnet's slowdowns at
correlation 0.93 and 0.90 in two runs, the batch-scaled one (8 MiB) at 0.95 and 0.94
(``bench/bench_probe.py``, ``bench/results/probe_cpu.md``; at batch 8 the two did
equally well). A table records which workload it was probed with (``scope["probe"]``); a reading is only
compared with one of the same workload (:func:`table_reference`).

Example:
    >>> probe = SpeedProbe(DeviceSpec.parse("cpu", threads=1), Timing())  # doctest: +SKIP
    >>> probe()  # ms per call of the reference workload  # doctest: +SKIP
    0.61
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from nas.latency.device import DeviceSpec

__all__ = ["SpeedProbe", "SLOW", "PROBE_RUN_TIME", "speed_verdict", "workload_name",
           "table_reference"]

SLOW = 1.05  # a probe this much above the fastest reading: the machine is in a slow phase
PROBE_RUN_TIME = 0.03  # seconds of timed calls per probe (~30 blocks of ~1 ms)


def _rows(batch_size: int) -> int:
    return 16 * max(1, int(batch_size))


def workload_name(batch_size: int) -> str:
    """What the reference kernel runs at ``batch_size`` (recorded in a table's scope)."""
    return f"mlp 128-256-128 on ({_rows(batch_size)}, 16, 128)"


def _workload(batch_size: int) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model, torch.randn(_rows(batch_size), 16, 128, generator=g)


def table_reference(scope: dict, batch_size: int, key: str = "probe_ms") -> float | None:
    """A table's fastest probe reading (``scope["probe_ms"]``; ``key="probe_fast_ms"``: its
    first run's fast speed), if it was taken with the workload that timing at
    ``batch_size`` probes with now, else None. Tables written before the workload grew
    with the batch ran the batch-1 workload."""
    recorded = scope.get("probe", workload_name(1))
    return scope.get(key) if recorded == workload_name(batch_size) else None


class SpeedProbe:
    """Times the reference workload in ``spec`` with ``timing``'s clock and statistic
    (``min_run_time`` :data:`PROBE_RUN_TIME`, one round)."""

    def __init__(self, spec: DeviceSpec, timing):
        self.spec = spec
        self.timing = replace(timing, min_run_time=PROBE_RUN_TIME, rounds=1, warmup=3)
        self.name = workload_name(spec.batch_size)
        self.model, self.x = _workload(spec.batch_size)

    def __call__(self) -> float:
        from nas.latency.measure import time_module

        return float(time_module(self.model, (self.x,), self.spec, self.timing)[self.timing.stat])


def speed_verdict(info: dict | None) -> str | None:
    """A sentence when timed ground truth ran on a machine slower, or faster, than when the
    table was profiled (``info``: what :meth:`nas.latency.measure.Measurer.measure_archs`
    recorded with a reference), else None.

    Faster happens too: in one bench run on a 2-core VM, the reference kernel read 16%
    below the fastest reading of any of nine batch-1 profiles while the ground truth was
    timed, and the held-out subnets measured 20% below the table's prediction
    (``bench/results/latency_b1_seed12_truth16_cpu.md``)."""
    if not info or not info.get("slower"):
        return None
    if info["slower"] < 1 / SLOW:
        return (f"the machine ran {100 * (1 - info['slower']):.0f}% faster than when the table "
                f"was profiled (reference kernel {info['probe_ms']:.4f} vs "
                f"{info['reference_ms']:.4f} ms), a state the table never saw: its predictions "
                f"may be about that much too high here (a table profiled now would see it)")
    if info["slower"] <= SLOW:
        return None
    return (f"the machine ran {100 * (info['slower'] - 1):.0f}% slower than when the table "
            f"was profiled (reference kernel {info['probe_ms']:.4f} vs {info['reference_ms']:.4f} "
            f"ms) through {info['span_s']:.0f} s of timing; measured ms are that much too high")
