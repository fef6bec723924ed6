"""Timing one forward pass on CPU or CUDA: components for the tables, whole models for truth.

Both use one method, so table entries and ground truth agree: eval mode, inference
mode, ``warmup`` untimed calls, then

* CPU: ``torch.utils.benchmark.Timer.blocked_autorange`` with a fixed
  ``torch.set_num_threads(threads)``; the median over blocks of many calls;
* CUDA: blocks of calls between CUDA events, synchronised, until ``min_run_time``;
  the median over blocks.

:class:`Measurer` bundles a setting and is what runs on the measuring machine,
locally or as a Ray actor on a cluster node (see :mod:`nas.latency.profile`).

Example:
    >>> measure_arch(arch, space, device="cpu", batch_size=1, dtype="fp32", threads=1)  # doctest: +SKIP
    0.71
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.benchmark import Timer

from nas.arch import Arch
from nas.latency.components import build_component
from nas.latency.device import DeviceSpec, device_fingerprint, num_threads
from nas.latency.signatures import Signature
from nas.model import build_model
from nas.space import SearchSpace

__all__ = ["Timing", "Measurer", "time_module", "measure_arch"]


@dataclass(frozen=True)
class Timing:
    """How long to time each measurement.

    Args:
        min_run_time: seconds of timed calls per measurement (after the warm-up).
        warmup: untimed calls before timing.
    """

    min_run_time: float = 0.2
    warmup: int = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.min_run_time, (int, float)) and self.min_run_time > 0):
            raise ValueError(f"min_run_time must be a positive number of seconds, "
                             f"got {self.min_run_time!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {self.warmup!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stat": "median",
                "method": "torch.utils.benchmark blocked_autorange (cpu) / cuda events (cuda)"}


def _move(inputs: tuple, device: torch.device, dtype: torch.dtype) -> tuple:
    return tuple(x.to(device=device, dtype=dtype) if isinstance(x, torch.Tensor)
                 and x.is_floating_point() else x for x in inputs)


def _time_cpu(fn: Callable[[], Any], threads: int, timing: Timing) -> tuple[float, float]:
    for _ in range(timing.warmup):
        fn()
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(
        min_run_time=timing.min_run_time)
    return m.median * 1e3, m.iqr * 1e3


def _time_cuda(fn: Callable[[], Any], device: torch.device, timing: Timing) -> tuple[float, float]:
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
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[2] - q[0]


def time_module(module: nn.Module, inputs: tuple, spec: DeviceSpec, timing: Timing
                ) -> tuple[float, float]:
    """Median and IQR (ms) of ``module(*inputs)`` under ``spec`` (resolved on this machine)."""
    spec = spec.resolve()
    device = torch.device(spec.device)
    module = module.eval().to(device=device, dtype=spec.torch_dtype)
    inputs = _move(inputs, device, spec.torch_dtype)

    def fn():
        return module(*inputs)

    with num_threads(spec.threads), torch.inference_mode():
        if spec.type == "cuda":
            with torch.cuda.device(device):
                return _time_cuda(fn, device, timing)
        return _time_cpu(fn, spec.threads, timing)


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
        self.timing = Timing(min_run_time=timing["min_run_time"], warmup=timing["warmup"])
        self.num_classes, self.in_chans = num_classes, in_chans

    def fingerprint(self) -> dict[str, Any]:
        return device_fingerprint(self.spec)

    def measure(self, keys: Sequence[str]) -> list[tuple[float, float]]:
        """(median, IQR) ms of every component signature key."""
        out = []
        for key in keys:
            module, inputs = build_component(Signature.from_key(key),
                                             batch_size=self.spec.batch_size)
            out.append(time_module(module, inputs, self.spec, self.timing))
        return out

    def measure_archs(self, archs: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
        """(median, IQR) ms of the standalone model of every arch (given as dicts)."""
        out = []
        for raw in archs:
            arch = Arch.from_dict(raw)
            model = build_model(arch, num_classes=self.num_classes, in_chans=self.in_chans)
            x = torch.randn(self.spec.batch_size, self.in_chans, arch.resolution, arch.resolution)
            out.append(time_module(model, (x,), self.spec, self.timing))
        return out


def measure_arch(arch: Arch, space: SearchSpace, *, device: str = "cpu", batch_size: int = 1,
                 dtype: str = "fp32", threads: int | None = None, min_run_time: float = 0.2,
                 warmup: int = 10) -> float:
    """Ground truth: median latency (ms) of the standalone model of ``arch``, end to end.

    The same method and setting as the profiler, so it compares with table predictions.

    Example:
        >>> measure_arch(arch, space, device="cpu", threads=1)  # doctest: +SKIP
    """
    spec = DeviceSpec.parse(device, dtype=dtype, batch_size=batch_size, threads=threads)
    m = Measurer(spec.to_dict(), asdict(Timing(min_run_time=min_run_time, warmup=warmup)),
                 num_classes=space.num_classes, in_chans=space.in_chans)
    return m.measure_archs([arch.to_dict()])[0][0]
