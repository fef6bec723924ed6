"""A fixed malloc regime while timing on CPU, so a forward's cost does not depend on
what the process allocated before.

glibc malloc returns freed memory to the OS (heap trimming, ``munmap`` of large
chunks) by thresholds it adapts at run time to the sizes freed so far. A model whose
forward creates multi-MiB tensors (tiny32 at batch 64: 4 MiB MLP activations) then
either reuses the same pages call after call or faults in fresh, zeroed pages on
every call (~2,000 minor page faults per block), depending on the history of the
process. Measured on this project's 2-core VM (``bench/results/latency_b64_*``), one
subnet took 32.8 ms end to end in one process and 19.2 ms once the thresholds were
fixed (predicted 19.3), and its stage-0 block 7.1 ms in the profile but 12.2 ms in
another process: the ten such subnets of 120 held-out ones were the table's 20-37%
misses at batch 64.

:func:`pin_malloc` turns that adaptation off for the measuring process (no ``mmap``
for allocations, no trimming below 1 GiB), which is also how an inference process
should run to get the latency the table predicts; :data:`MALLOC_ENV` is the same
setting as environment variables for a deployment (or use jemalloc/tcmalloc, which
keep freed pages). Nothing happens on other C libraries (musl, macOS), nor with
``NAS_MALLOC=default`` in the environment (to time the regime an unpinned deployment
gets, which is bistable: 7 of 12 fresh processes faulted ~2,000 pages per call of
one such block, 5 of 12 did not); every table records which regime it was timed in.

Example:
    >>> pin_malloc()  # doctest: +SKIP
    'glibc: mmap off, trim threshold 1 GiB'
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MALLOC_ENV", "PINNED", "pin_malloc", "malloc_regime"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_TRIM_BYTES = 1 << 30

# The same regime for a deployment's environment (glibc reads them at start-up).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_TRIM_BYTES)}

PINNED = "glibc: mmap off, trim threshold 1 GiB"
_state: str | None = None


def pin_malloc() -> str:
    """Fix glibc malloc's trim and mmap behaviour for this process (idempotent).

    Returns the regime the process now times in: :data:`PINNED`, or ``"default"``
    where the C library is not glibc or refuses, or ``NAS_MALLOC=default`` is set.
    """
    global _state
    if _state is None:
        _state = "default"
        if sys.platform.startswith("linux") and os.environ.get("NAS_MALLOC") != "default":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                ok = (libc.gnu_get_libc_version is not None
                      and libc.mallopt(_M_MMAP_MAX, 0) == 1
                      and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1)
            except (OSError, AttributeError):
                ok = False
            if ok:
                _state = PINNED
    return _state


def malloc_regime() -> str:
    """The regime this process times in, without changing it: :data:`PINNED` once
    :func:`pin_malloc` has pinned it, else ``"default"``."""
    return _state or "default"
