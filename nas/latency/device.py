"""Where latency is measured: device string, dtype, batch size, threads, and the fingerprint.

A :class:`DeviceSpec` is what the user asks for (``cuda:0``, ``bf16``, batch 1, 4
threads); :func:`device_fingerprint` adds what the machine is (CPU model or GPU
name, torch and CUDA versions, ``kernels.KERNELS_VERSION``). Latency tables record
the fingerprint and refuse to be used for another one.

Example:
    >>> spec = DeviceSpec.parse("cpu", dtype="fp32", batch_size=1, threads=1)
    >>> spec.device, spec.torch_dtype
    ('cpu', torch.float32)
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from nas.errors import NasError
from nas.threads import num_threads

__all__ = ["DTYPES", "DeviceError", "DeviceSpec", "device_fingerprint", "fingerprint_diff",
           "describe_device", "num_threads"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Fields of a fingerprint that must agree for a latency to carry over.
_MATCH = ("type", "name", "dtype", "batch_size", "threads", "torch", "kernels_version")
_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


class DeviceError(NasError):
    """An unknown device string, or a device this machine does not have."""


@dataclass(frozen=True)
class DeviceSpec:
    """The measurement setting: device (``cpu``/``cuda:i``), dtype, batch size, threads.

    ``threads=None`` means "what torch uses now"; :meth:`resolve` fixes it on the
    machine that measures.
    """

    type: str = "cpu"
    index: int | None = None
    dtype: str = "fp32"
    batch_size: int = 1
    threads: int | None = None

    @classmethod
    def parse(cls, device: str = "cpu", *, dtype: str = "fp32", batch_size: int = 1,
              threads: int | None = None) -> DeviceSpec:
        """Check the syntax of every field (not whether the device exists: see :meth:`resolve`)."""
        m = _DEVICE_RE.match(str(device).strip().lower())
        if m is None:
            raise DeviceError(f"unknown device {device!r}; use cpu, cuda or cuda:INDEX")
        if m.group(1) == "cpu" and m.group(2) is not None:
            raise DeviceError(f"unknown device {device!r}; the CPU takes no index, use cpu")
        if dtype not in DTYPES:
            raise DeviceError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DeviceError(f"batch size must be a positive integer, got {batch_size!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise DeviceError(f"threads must be a positive integer, got {threads!r}")
        index = int(m.group(2)) if m.group(2) is not None else (0 if m.group(1) == "cuda" else None)
        return cls(type=m.group(1), index=index, dtype=dtype, batch_size=batch_size,
                   threads=threads)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeviceSpec:
        return cls.parse(raw["type"] if raw.get("index") is None else f"{raw['type']}:{raw['index']}",
                         dtype=raw["dtype"], batch_size=raw["batch_size"], threads=raw["threads"])

    @property
    def device(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def resolve(self) -> DeviceSpec:
        """Check the device exists here and fix ``threads``; raise :class:`DeviceError` if not."""
        if self.type == "cuda":
            if not torch.cuda.is_available():
                raise DeviceError(f"{self.device} requested but this machine has no usable GPU "
                                  f"(torch.cuda.is_available() is False); use --device cpu, or "
                                  f"--address to run on a cluster node with a GPU")
            n = torch.cuda.device_count()
            if self.index >= n:
                raise DeviceError(f"{self.device} requested but this machine has {n} GPU(s): "
                                  f"use an index below {n}")
        return self if self.threads is not None else replace(self, threads=torch.get_num_threads())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def device_fingerprint(spec: DeviceSpec) -> dict[str, Any]:
    """The spec (resolved on this machine) plus what this machine is."""
    import nas.kernels as kernels

    spec = spec.resolve()
    if spec.type == "cuda":
        name = torch.cuda.get_device_name(spec.index)
        cap = ".".join(map(str, torch.cuda.get_device_capability(spec.index)))
    else:
        name, cap = _cpu_name(), None
    return {**spec.to_dict(), "name": name, "capability": cap,
            "logical_cpus": os.cpu_count(), "platform": platform.platform(terse=True),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "kernels_version": str(getattr(kernels, "KERNELS_VERSION", "0"))}


def fingerprint_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``["threads: 1 vs 4", ...]`` for every field where two fingerprints disagree."""
    fields = _MATCH + (("cuda",) if "cuda" in (a.get("type"), b.get("type")) else ())
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in fields if a.get(k) != b.get(k)]


def describe_device(fp: dict[str, Any]) -> str:
    """One line: ``cpu (AMD EPYC), fp32, batch 1, 1 thread, torch 2.x, kernels 1.0``."""
    t = fp.get("threads")
    dev = fp["type"] if fp.get("index") is None else f"{fp['type']}:{fp['index']}"
    return (f"{dev} ({fp.get('name')}), {fp.get('dtype')}, batch {fp.get('batch_size')}, "
            f"{t} thread{'s' if t != 1 else ''}, torch {fp.get('torch')}, "
            f"kernels {fp.get('kernels_version')}")



