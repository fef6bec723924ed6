"""How quiet the machine is while latencies are timed.

A latency table profiled while one other job ran on this 2-core machine predicted 33%
too slow on the idle machine. Timings cannot be corrected for a neighbour whose load
comes and goes, so the profiler checks for one: :class:`LoadMonitor` reads the
machine's CPU time (``/proc/stat``) and this process's own (``getrusage``) and reports
how many cores *other* processes kept busy on average, and the share of time the
hypervisor stole. :func:`probe` watches for a moment before anything is timed;
:func:`busy_reason` words the verdict. Off Linux only the load average is known.

Example:
    >>> reading = probe(0.2)
    >>> sorted(reading)
    ['cpus', 'loadavg', 'others_cores', 'steal_frac', 'wall_s']
"""
from __future__ import annotations

import os
import resource
import time
from typing import Any

from nas.threads import usable_cpus

__all__ = ["LoadMonitor", "probe", "busy_reason", "wait_for_quiet", "quiet_timing", "BUSY_CORES",
           "BUSY_STEAL", "ALLOW_BUSY_ENV"]

BUSY_CORES = 0.25  # other processes using a quarter of a core on average: not quiet
BUSY_STEAL = 0.05  # the hypervisor taking 5% of the CPUs' time: not quiet
ALLOW_BUSY_ENV = "NAS_ALLOW_BUSY"  # set to 1 to time on a busy machine anyway (flagged)


def _proc_stat() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    ticks += [0] * (8 - len(ticks))
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


class LoadMonitor:
    """CPU use of the rest of the machine from construction (or :meth:`restart`) on."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._t0, self._stat0, self._own0 = time.monotonic(), _proc_stat(), _own_cpu()

    def read(self) -> dict[str, Any]:
        """``others_cores`` (average cores busy with other processes), ``steal_frac``,
        ``loadavg`` (1 minute), ``cpus`` (this process's), ``wall_s`` watched."""
        wall = max(time.monotonic() - self._t0, 1e-6)
        stat, own = _proc_stat(), _own_cpu()
        cpus = usable_cpus()
        out: dict[str, Any] = {"wall_s": round(wall, 2), "cpus": cpus, "loadavg": _loadavg(),
                               "others_cores": None, "steal_frac": None}
        if stat is not None and self._stat0 is not None:
            busy = stat[0] - self._stat0[0]
            out["others_cores"] = round(max(0.0, busy - (own - self._own0)) / wall, 3)
            out["steal_frac"] = round(max(0.0, stat[1] - self._stat0[1]) / (wall * (os.cpu_count() or 1)), 4)
        return out


def probe(seconds: float = 1.0) -> dict[str, Any]:
    """Watch the machine for ``seconds`` while this process sleeps."""
    monitor = LoadMonitor()
    time.sleep(seconds)
    return monitor.read()


def busy_reason(reading: dict[str, Any], threads: int | None = None) -> str | None:
    """Why ``reading`` is not a quiet machine to time ``threads`` threads on, or None.

    Without ``/proc/stat`` the load average stands in for the other processes (it counts
    this one too, so it is compared with the CPUs left beside ``threads``)."""
    others, steal = reading.get("others_cores"), reading.get("steal_frac")
    if others is not None:
        if others > BUSY_CORES:
            return (f"other processes kept {others:.2f} cores busy on average "
                    f"(over {reading['wall_s']:.0f} s, {reading['cpus']} CPUs)")
        if steal is not None and steal > BUSY_STEAL:
            return f"the hypervisor stole {100 * steal:.0f}% of the CPU time"
        return None
    load = reading.get("loadavg")
    if load is not None and load > reading["cpus"] - (threads or 1) + BUSY_CORES + 1:
        return f"load average {load:.2f} on {reading['cpus']} CPUs"
    return None


def wait_for_quiet(max_s: float = 20.0, step_s: float = 1.0,
                   threads: int | None = None) -> str | None:
    """Watch the machine in ``step_s`` probes until one is quiet or ``max_s`` pass;
    the last busy reason, or None once quiet (processes that just ended, such as a Ray
    session's workers, settle within seconds)."""
    deadline = time.monotonic() + max_s
    while True:
        reason = busy_reason(probe(step_s), threads)
        if reason is None or time.monotonic() >= deadline:
            return reason


def quiet_timing(timed: Any, *, threads: int | None = None, attempts: int = 3,
                 max_wait_s: float = 20.0) -> tuple[Any, str | None]:
    """``timed()`` run on a quiet machine: wait for quiet, run it while watching the
    machine, and run it again (up to ``attempts`` times) when others were busy meanwhile.
    Returns its last result and the busy reason of that run (None: it ran quiet)."""
    result, reason = None, None
    for _ in range(max(1, attempts)):
        wait_for_quiet(max_wait_s, threads=threads)
        monitor = LoadMonitor()
        result = timed()
        reason = busy_reason(monitor.read(), threads)
        if reason is None:
            break
    return result, reason
