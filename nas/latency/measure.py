"""Timing one forward pass on CPU or CUDA: components for the tables, whole models for truth.

Both use one method, so table entries and ground truth agree: eval mode, inference
mode, ``warmup`` untimed calls, then blocks of calls until ``min_run_time`` seconds
are timed; the latency is the min (default) or median over blocks, both recorded.

* CPU: ``timeit`` blocks of about ``block_time`` (1 ms) each, with a fixed
  ``torch.set_num_threads(threads)``. With one thread the clock is the CPU time of
  the timing thread (``time.thread_time``), so time the OS gives to other jobs is
  not counted; with more threads it is wall time. ``torch.utils.benchmark``'s
  ``blocked_autorange`` is not used: it sizes blocks so its timer overhead stays
  below 0.01%, i.e. tens of ms, and on a CPU shared with other jobs each such block
  absorbs the time slicing (its median drifted 2-3x with the load in our runs).
  Short blocks on the thread clock measured the same subnet twice within ~3%
  (MAPE of the min) at a load average of 10 on 2 cores, against ~7% for wall time
  and ~10% for the median (see ``bench/results/latency_cpu.md``).
* CUDA: blocks of calls between CUDA events after a synchronize.

:class:`Measurer` bundles a setting and is what runs on the measuring machine,
locally or as a Ray actor on a cluster node (see :mod:`nas.latency.profile`).

Example:
    >>> measure_arch(arch, space, device="cpu", batch_size=1, dtype="fp32", threads=1)  # doctest: +SKIP
    0.71
"""
from __future__ import annotations

import json
import statistics
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nas.arch import Arch
from nas.errors import NasError
from nas.latency.allocator import pin_malloc
from nas.latency.components import build_component
from nas.latency.device import DeviceSpec, device_fingerprint, num_threads
from nas.latency.signatures import Signature
from nas.model import build_model
from nas.space import SearchSpace

__all__ = ["STATS", "Timing", "Measurer", "time_module", "measure_arch", "measure_archs",
           "measure_archs_checked", "round_statistic", "GROUND_TRUTH_SPAN_S", "MAX_SPAN_S",
           "MODEL_S_PER_SAMPLE", "ROUNDS_PER_RANK"]

# A whole model timed over rounds keeps its k-th fastest round, k = rounds // ROUNDS_PER_RANK
# (at least 1): the 4th fastest of 32, the 2nd of 16, the fastest of 8 or fewer. The
# fastest of 32 rounds is the fastest single call of a few hundred, an extreme value: at
# batch 64 on the AMD host the 4th fastest repeated within 0.85-1.00% MAPE on the same
# timings where the fastest repeated within 1.40% (0.21 vs 0.32% at batch 1, 0.75 vs
# 1.28% at batch 8; bench/results/truth_noise_b*_cpu.md). A fixed share of the rounds
# (rather than a fixed k) keeps the level about the same for any number of rounds, where
# the fastest keeps falling as rounds are added. Calibration samples and the ground truth
# use the same rule (nas.latency.table keeps a sample's rounds to apply it).
ROUNDS_PER_RANK = 8
GROUND_TRUTH_SPAN_S = 6.0  # ground-truth rounds span at least this long (bursts last 0.5-1.5 s)
WARMUP_SHARE = 0.2  # CPU warm-up stops after 2 calls once it took this share of min_run_time
MAX_SPAN_S = 30.0  # speed-checked ground truth waits at most this long for the table's speed
# A whole model on CPU is timed for at least this many seconds per sample of the batch
# (0.2 s at batch 64; batch <= 16 keeps the usual 0.05 s): a batch-64 model runs only a
# few calls in 0.05 s, and the fastest of so few read 4.5% (median of 30 subnets) above
# the fastest of 0.2 s measurements timed interleaved with them (bench/LATENCY.md, seed
# 14): calibration and ground truth must time a model alike.
MODEL_S_PER_SAMPLE = 0.2 / 64


STATS = ("median", "min")
CLOCKS = ("auto", "wall", "thread", "cuda")


@dataclass(frozen=True)
class Timing:
    """How each measurement is taken.

    Args:
        min_run_time: seconds of timed calls per measurement (after the warm-up).
        warmup: calls before the timed blocks (at least 1); on CPU none beyond the second
            once they took a fifth of ``min_run_time`` (at batch 64 ten warm-up calls took
            as long as the timed ones and made a 4-round profile of tiny32 take 758 s).
            Each is timed on the block clock, and the fastest sizes the timed blocks (no
            separate sizing calls); side by side on 120 batch-64 components the minimum
            stayed within 0.1% (median) of half-share warm-up plus sizing calls, for 12%
            less time per measurement.
        block_time: target seconds per timed block on CPU; short blocks let the
            statistic reject blocks hit by time slicing on a shared CPU.
        stat: statistic over blocks that becomes the latency: ``median`` or ``min``
            (both are recorded either way).
        rounds: measurement rounds per component or arch; a profile times every item
            once per round, round after round, and keeps each item's fastest round, so
            a slowdown of the machine lasting seconds (seen on shared VMs) spoils at
            most one round of the items it overlaps.
        clock: ``wall`` (``time.perf_counter``), ``thread`` (CPU time of the timing
            thread, ``time.thread_time``: time the thread was preempted by other jobs
            is not counted; CPU with one thread only, where every op runs on that
            thread), or ``auto``: ``thread`` on CPU with one thread, else ``wall``.
            CUDA always times with events (``cuda``, set by :meth:`resolve`).
    """

    min_run_time: float = 0.1
    warmup: int = 10
    block_time: float = 1e-3
    stat: str = "min"
    clock: str = "auto"
    rounds: int = 3

    def __post_init__(self) -> None:
        for name in ("min_run_time", "block_time"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise NasError(f"{name} must be a positive number of seconds, got {v!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise NasError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise NasError(f"rounds must be an integer >= 1, got {self.rounds!r}")
        if self.stat not in STATS:
            raise NasError(f"stat must be one of {', '.join(STATS)}, got {self.stat!r}")
        if self.clock not in CLOCKS:
            raise NasError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")

    def resolve(self, spec: DeviceSpec) -> Timing:
        """Fix ``clock`` for a resolved ``spec`` (``cuda`` for CUDA events)."""
        if spec.type == "cuda":
            return replace(self, clock="cuda")
        if self.clock == "thread" and spec.threads != 1:
            raise NasError(f"clock 'thread' times one thread; use --threads 1 (got "
                           f"{spec.threads}) or --clock wall")
        if self.clock in ("auto", "cuda"):
            return replace(self, clock="thread" if spec.threads == 1 else "wall")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method": "cpu: timeit blocks of ~block_time with fixed torch "
                "threads on the given clock; cuda: blocks between cuda events after synchronize"}


def _move(inputs: tuple, device: torch.device, dtype: torch.dtype) -> tuple:
    return tuple(x.to(device=device, dtype=dtype) if isinstance(x, torch.Tensor)
                 and x.is_floating_point() else x for x in inputs)


def _stats(times: list[float]) -> dict[str, float]:
    """Block statistics in ms from per-call block means in ms."""
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "min": min(times), "iqr": q[2] - q[0],
            "blocks": len(times)}


def _time_cpu(fn: Callable[[], Any], timing: Timing) -> dict[str, float]:
    clock = time.thread_time if timing.clock == "thread" else time.perf_counter
    deadline = time.perf_counter() + timing.min_run_time * WARMUP_SHARE
    calls: list[float] = []  # warm-up calls, each timed: their fastest sizes the blocks
    for i in range(max(1, timing.warmup)):
        t = clock()
        fn()
        calls.append(clock() - t)
        if i >= 1 and time.perf_counter() > deadline:
            break  # two calls warm caches and allocator; slow calls need no more
    # garbage collection is off while timeit times
    timer = timeit.Timer(fn, timer=clock)
    number = max(1, round(timing.block_time / max(min(calls), 1e-7)))
    times: list[float] = []
    total = 0.0
    while total < timing.min_run_time or len(times) < 5:
        t = timer.timeit(number)
        times.append(t * 1e3 / number)
        total += t
    return _stats(times)


def _time_cuda(fn: Callable[[], Any], device: torch.device, timing: Timing) -> dict[str, float]:
    for _ in range(max(1, timing.warmup)):
        fn()
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    # Blocks of ~1/20 of the budget amortise the event overhead and still give >= 5 blocks.
    number = max(1, int(timing.min_run_time * 1e3 / 20 / max(start.elapsed_time(end), 1e-3)))
    times: list[float] = []
    total = 0.0
    while total < timing.min_run_time * 1e3 or len(times) < 5:
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        t = start.elapsed_time(end)
        times.append(t / number)
        total += t
    return _stats(times)


class _OpCounter(TorchFunctionMode):
    """Counts torch function calls (ops issued from Python) during one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def time_module(module: nn.Module, inputs: tuple, spec: DeviceSpec, timing: Timing
                ) -> dict[str, float]:
    """Block statistics of ``module(*inputs)``: ``median``, ``min``, ``iqr`` (ms), ``blocks``,
    and ``ops``, the torch calls one forward issues (the calibration's per-op overhead term).

    ``spec`` is resolved on this machine (a missing GPU raises :class:`DeviceError`). On
    CPU the process's malloc regime is pinned first (:mod:`nas.latency.allocator`).
    """
    spec = spec.resolve()
    if spec.type == "cpu":
        pin_malloc()
    timing = timing.resolve(spec)
    device = torch.device(spec.device)
    module = module.eval().to(device=device, dtype=spec.torch_dtype)
    inputs = _move(inputs, device, spec.torch_dtype)

    def fn():
        return module(*inputs)

    with num_threads(spec.threads), torch.inference_mode():
        with _OpCounter() as counter:
            fn()
        if spec.type == "cuda":
            with torch.cuda.device(device):
                stats = _time_cuda(fn, device, timing)
        else:
            stats = _time_cpu(fn, timing)
    return {**stats, "ops": counter.count}


def round_statistic(rounds: Sequence[float]) -> float:
    """The figure a model keeps from its per-round timings: the k-th fastest round, k =
    ``len(rounds) // ROUNDS_PER_RANK``, at least 1.

    Example:
        >>> round_statistic([5.0, 1.0, 3.0])
        1.0
        >>> round_statistic([float(x) for x in range(32, 0, -1)])
        4.0
    """
    if not rounds:
        raise ValueError("round_statistic needs at least one round")
    k = max(1, len(rounds) // ROUNDS_PER_RANK)
    return float(sorted(rounds)[k - 1])


class Measurer:
    """Times signatures and whole archs in one setting; runs where the device is.

    The constructor takes plain dicts so it can be shipped to a Ray actor.

    Args:
        device: :meth:`DeviceSpec.to_dict` of the setting.
        timing: :class:`Timing` fields.
        num_classes: classes of the space (for whole models).
        in_chans: input channels of the space.
    """

    def __init__(self, device: dict[str, Any], timing: dict[str, Any], *, num_classes: int,
                 in_chans: int):
        self.spec = DeviceSpec.from_dict(device).resolve()
        self.timing = Timing(**{k: timing[k] for k in ("min_run_time", "warmup", "block_time",
                                                      "stat", "clock", "rounds") if k in timing}
                             ).resolve(self.spec)
        self.num_classes, self.in_chans = num_classes, in_chans
        self._probe: Any = None
        self.last_speed: dict[str, Any] | None = None
        self._kept: dict[str, tuple[nn.Module, torch.Tensor]] = {}

    def fingerprint(self) -> dict[str, Any]:
        return device_fingerprint(self.spec)

    def timing_record(self) -> dict[str, Any]:
        """The timing settings as run here (clock resolved, malloc regime), for the table."""
        return {**self.timing.to_dict(),
                "model_min_run_time": self.model_timing().min_run_time,
                "malloc": pin_malloc() if self.spec.type == "cpu" else "n/a (cuda)"}

    def measure(self, keys: Sequence[str]) -> list[dict[str, float]]:
        """Timing statistics (see :func:`time_module`) of every component signature key."""
        out = []
        for key in keys:
            module, inputs = build_component(Signature.from_key(key),
                                             batch_size=self.spec.batch_size)
            out.append(time_module(module, inputs, self.spec, self.timing))
        return out

    def probe(self) -> float:
        """ms per call of the reference workload now (:mod:`nas.latency.speedprobe`)."""
        if self._probe is None:
            from nas.latency.speedprobe import SpeedProbe

            self._probe = SpeedProbe(self.spec, self.timing)
        return self._probe()

    def model_timing(self) -> Timing:
        """The timing of whole models: on CPU at least :data:`MODEL_S_PER_SAMPLE` seconds
        per sample of the batch per measurement (components keep ``min_run_time``)."""
        if self.spec.type != "cpu":
            return self.timing
        floor = MODEL_S_PER_SAMPLE * self.spec.batch_size
        return replace(self.timing, min_run_time=max(self.timing.min_run_time, floor))

    def _model(self, raw: dict[str, Any], keep: bool) -> tuple[nn.Module, torch.Tensor]:
        """The standalone model of ``raw`` and its input; with ``keep``, built once per
        measurer and kept for its later calls."""
        key = json.dumps(raw, sort_keys=True)
        if keep and key in self._kept:
            return self._kept[key]
        arch = Arch.from_dict(raw)
        model = build_model(arch, num_classes=self.num_classes, in_chans=self.in_chans)
        x = torch.randn(self.spec.batch_size, self.in_chans, arch.resolution, arch.resolution)
        if keep:
            self._kept[key] = (model, x)
        return model, x

    def measure_archs(self, archs: Sequence[dict[str, Any]], *, rounds: int = 1,
                      min_span_s: float = 0.0, max_rounds: int = 64, check_speed: bool = False,
                      reference_ms: float | None = None, max_span_s: float = MAX_SPAN_S,
                      keep: bool = False) -> list[dict[str, float]]:
        """Timing statistics of the standalone model of every arch (given as dicts).

        Each call builds its models afresh, unless ``keep``: then each arch's model is
        built once per measurer and the same model is timed on every later call, as the
        rounds of one call time it (a profile's calibration subnets, timed one call per
        subnet and round, so each is judged by the reference kernel on its own). On the
        AMD host a model built afresh before each measurement read 0.4-2.0% (median of
        30 batch-64 subnets) above the same subnets built once and timed in rounds, which
        is how the ground truth times them (``bench/LATENCY.md``).

        With ``rounds > 1`` the list is timed that many times over, round after round,
        each round after the first in its own random order (a burst of machine slowness
        that recurs with the round's period must not hit the same archs every round),
        and each arch keeps its k-th fastest round (per statistic, :func:`round_statistic`;
        the per-round figures are returned too, as ``rounds_min`` and ``rounds_median``,
        for a caller that merges calls). ``min_span_s``: keep adding
        rounds (up to ``max_rounds``) until the rounds span that many seconds, so a short
        list is not timed entirely inside one burst of a shared VM's slowness (0.5-1.5 s).

        ``check_speed``: probe the machine's speed before and after every round
        (:mod:`nas.latency.speedprobe`); rounds go on until 2 (or ``rounds``, if fewer)
        rounds lie between probes within ``SLOW`` of the fastest and that fastest probe is
        within ``SLOW`` of ``reference_ms`` (the table's), or ``max_span_s`` seconds or
        ``max_rounds`` rounds have passed. Every round counts toward the statistic.
        What was seen is kept in :attr:`last_speed`.
        """
        from nas.latency.speedprobe import SLOW

        timing = self.model_timing()
        models = [self._model(raw, keep) for raw in archs]
        per_round: list[tuple[list[dict[str, float]], float]] = []
        probes = [self.probe()] if check_speed else []
        t0, r = time.perf_counter(), 0
        while True:
            order = (range(len(models)) if r == 0 else
                     np.random.default_rng([len(models), r]).permutation(len(models)))
            stats: list[dict[str, float]] = [{} for _ in models]
            for i in order:
                model, x = models[i]
                stats[i] = time_module(model, (x,), self.spec, timing)
            if check_speed:
                probes.append(self.probe())
            per_round.append((stats, max(probes[-2:]) if probes else 0.0))
            r += 1
            span = time.perf_counter() - t0
            if r >= max(rounds, max_rounds):
                break
            if r < rounds or span < min_span_s:
                continue
            if not check_speed:
                break
            fastest = min(probes)
            clean = sum(p <= SLOW * fastest for _, p in per_round)
            at_speed = reference_ms is None or fastest <= SLOW * reference_ms
            if (clean >= min(2, rounds) and at_speed) or span >= max_span_s:
                break
        if check_speed:
            fastest = min(probes)
            self.last_speed = {
                "probe_ms": fastest, "reference_ms": reference_ms,
                "slower": fastest / reference_ms if reference_ms else None,
                "rounds": r, "clean_rounds": sum(p <= SLOW * fastest for _, p in per_round),
                "span_s": round(span, 2)}
        # every round counts, slow ones included: a slow phase only raises a round's
        # timings, so while it spans fewer than 7 in 8 rounds it leaves the k-th fastest
        # round where it was. Keeping only the rounds between
        # two fast probes kept 2 of 47 in a `nas run` report, and one pick read 31% slow
        # where its twin with a wider FFN read 7%.
        out = [dict(st) for st in per_round[0][0]]
        for i, st in enumerate(out):
            for k in ("median", "min"):
                series = [stats[i][k] for stats, _ in per_round]
                st[k] = round_statistic(series)
                st[f"rounds_{k}"] = series
        return out


def measure_archs(archs: Sequence[Arch], space: SearchSpace, *, device: str = "cpu",
                  batch_size: int = 1, dtype: str = "fp32", threads: int | None = None,
                  min_run_time: float = 0.1, warmup: int = 10, stat: str = "min",
                  clock: str = "auto", rounds: int = 3, warm_round: bool = True,
                  min_span_s: float = GROUND_TRUTH_SPAN_S) -> list[float]:
    """Ground truth for several archs: the list timed ``rounds`` times over (more, until
    the rounds span ``min_span_s`` seconds), each arch's k-th fastest round
    (:func:`round_statistic`; ms, ``stat`` over blocks), as :func:`measure_arch`.

    ``warm_round`` runs one untimed round first: a VM's CPU that was idle or busy with
    other threads a moment ago runs the first timings tens of percent slow. The span
    matters for short lists: 7 subnets in 4 rounds of 0.025 s took ~1.5 s, inside one
    burst of this VM's slowness, and a `nas run` report measured its picks 7-31% slow.
    """
    m, dicts = _measurer(archs, space, device, batch_size, dtype, threads, min_run_time,
                         warmup, stat, clock, rounds)
    if warm_round:
        m.measure_archs(dicts)
    return [st[stat] for st in m.measure_archs(dicts, rounds=rounds, min_span_s=min_span_s)]


def measure_archs_checked(archs: Sequence[Arch], space: SearchSpace, *,
                          reference_ms: float | None, device: str = "cpu", batch_size: int = 1,
                          dtype: str = "fp32", threads: int | None = None,
                          min_run_time: float = 0.1, warmup: int = 10, stat: str = "min",
                          clock: str = "auto", rounds: int = 3,
                          min_span_s: float = GROUND_TRUTH_SPAN_S,
                          max_span_s: float = MAX_SPAN_S) -> tuple[list[float], dict[str, Any]]:
    """:func:`measure_archs` with the machine's speed checked against ``reference_ms`` (a
    latency table's ``scope["probe_ms"]``; None: against the fastest probe of this call
    only): the timing waits (up to ``max_span_s``) for two rounds at full speed and for
    the table's speed; each arch keeps its k-th fastest round. Returns the latencies and what the probes saw
    (``probe_ms``, ``reference_ms``, ``slower``: their ratio, ``rounds``, ``clean_rounds``,
    ``span_s``); :func:`nas.latency.speedprobe.speed_verdict` words it."""
    m, dicts = _measurer(archs, space, device, batch_size, dtype, threads, min_run_time,
                         warmup, stat, clock, rounds)
    m.measure_archs(dicts)
    stats = m.measure_archs(dicts, rounds=rounds, min_span_s=min_span_s, check_speed=True,
                            reference_ms=reference_ms, max_span_s=max_span_s)
    return [st[stat] for st in stats], dict(m.last_speed or {})


def _measurer(archs, space, device, batch_size, dtype, threads, min_run_time, warmup, stat,
              clock, rounds) -> tuple[Measurer, list[dict[str, Any]]]:
    spec = DeviceSpec.parse(device, dtype=dtype, batch_size=batch_size, threads=threads)
    timing = Timing(min_run_time=min_run_time, warmup=warmup, stat=stat, clock=clock,
                    rounds=rounds)
    m = Measurer(spec.to_dict(), asdict(timing), num_classes=space.num_classes,
                 in_chans=space.in_chans)
    return m, [a.to_dict() for a in archs]


def measure_arch(arch: Arch, space: SearchSpace, *, device: str = "cpu", batch_size: int = 1,
                 dtype: str = "fp32", threads: int | None = None, min_run_time: float = 0.1,
                 warmup: int = 10, stat: str = "min", clock: str = "auto",
                 rounds: int = 3, min_span_s: float = GROUND_TRUTH_SPAN_S) -> float:
    """Ground truth: latency (ms, ``stat`` over blocks) of the standalone model of ``arch``.

    The same method and setting as the profiler, so it compares with table predictions.

    Example:
        >>> measure_arch(arch, space, device="cpu", threads=1)  # doctest: +SKIP
    """
    return measure_archs([arch], space, device=device, batch_size=batch_size, dtype=dtype,
                         threads=threads, min_run_time=min_run_time, warmup=warmup, stat=stat,
                         clock=clock, rounds=rounds, warm_round=False, min_span_s=min_span_s)[0]
