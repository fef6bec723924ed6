"""A reference kernel that tells how fast the machine runs right now.

A shared VM slows down in phases no load reading shows: bursts of 0.5-1.5 s a few seconds
apart, and now and then phases longer than any round of timing (a `nas run` report
measured its picks 10-43% slow in 3 of 8 runs, with no other process and no steal time
recorded). Such a phase slows a fixed workload as much as the models timed beside it,
so the profiler times one -- a small MLP on fixed random inputs, the same clock and
statistic as everything else -- before every round, and the table records the fastest
reading (``scope["probe_ms"]``). Ground truth timed later (the report, ``nas measure``)
probes before and after each of its rounds: a round whose probes read more than
:data:`SLOW` above the session's fastest is not used, and the rounds go on (up to a
time limit) until the machine runs as fast as it did when the table was profiled.
Whatever is left of a slowdown is reported as a ratio instead of being passed off as
a latency.

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

__all__ = ["SpeedProbe", "SLOW", "PROBE_RUN_TIME", "speed_verdict"]

SLOW = 1.05  # a probe this much above the fastest reading: the machine is in a slow phase
PROBE_RUN_TIME = 0.03  # seconds of timed calls per probe (~30 blocks of ~1 ms)


def _workload() -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model, torch.randn(16, 16, 128, generator=g)


class SpeedProbe:
    """Times the reference workload in ``spec`` with ``timing``'s clock and statistic
    (``min_run_time`` :data:`PROBE_RUN_TIME`, one round)."""

    def __init__(self, spec: DeviceSpec, timing):
        self.spec = spec
        self.timing = replace(timing, min_run_time=PROBE_RUN_TIME, rounds=1, warmup=3)
        self.model, self.x = _workload()

    def __call__(self) -> float:
        from nas.latency.measure import time_module

        return float(time_module(self.model, (self.x,), self.spec, self.timing)[self.timing.stat])


def speed_verdict(info: dict | None) -> str | None:
    """A sentence when timed ground truth ran on a machine slower than when the table was
    profiled (``info``: what :meth:`nas.latency.measure.Measurer.measure_archs` recorded
    with a reference), else None."""
    if not info or not info.get("slower") or info["slower"] <= SLOW:
        return None
    return (f"the machine ran {100 * (info['slower'] - 1):.0f}% slower than when the table "
            f"was profiled (reference kernel {info['probe_ms']:.4f} vs {info['reference_ms']:.4f} "
            f"ms) through {info['span_s']:.0f} s of timing; measured ms are that much too high")
