"""One way to open and close Ray for every command: attach to a cluster or start a quiet one.

Every command that uses Ray (``nas train --workers``, ``nas profile --address``,
``nas predictor collect``, ``nas search``) goes through :func:`ray_session`, so they count
CPUs, pick the address and word a connection error the same way:

* a Ray session the caller already started is used and left running;
* else ``address`` (or ``RAY_ADDRESS``) is attached to, and a failure is one
  :class:`~nas.errors.NasError` line;
* else a new embedded cluster starts (``address="local"``, even when ``ray start``
  left an address behind) sized to the CPUs this process may use, without dashboard
  and without worker logs on the driver; it is shut down on exit, also on errors.
  A ``kill -9`` of this process runs no cleanup, and Ray's own processes would linger
  for about a minute; a small reaper process (Linux) watches this one and kills the
  processes of its Ray session as soon as it is gone.

Example:
    >>> with ray_session(num_cpus=2):  # doctest: +SKIP
    ...     ray.get(f.remote())
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from nas.errors import NasError
from nas.threads import usable_cpus

__all__ = ["ray_session"]

# Waits for the process argv[1] to end, then SIGKILLs every process whose command line
# names the Ray session argv[2] (raylet, GCS, agents) and all their descendants (the
# workers, whose titles Ray rewrites). Linux /proc; the reaper's own line is skipped.
_REAPER = """
import os, signal, sys, time
parent, tag = int(sys.argv[1]), sys.argv[2].encode()
while os.getppid() == parent:
    time.sleep(0.25)
procs = {}
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        continue
    procs[int(pid)] = (cmd, ppid)
doomed = {pid for pid, (cmd, _) in procs.items() if tag in cmd}
while True:
    more = {pid for pid, (_, ppid) in procs.items() if ppid in doomed} - doomed
    if not more:
        break
    doomed |= more
for pid in doomed:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


def _start_reaper() -> subprocess.Popen | None:
    """The reaper of the local Ray session just started (None off Linux or if unknown)."""
    if not os.path.isdir("/proc"):
        return None
    try:
        from ray._private import worker

        tag = os.path.basename(worker._global_node.get_session_dir_path())
    except Exception:  # a private API: without it there is just no reaper
        return None
    if not tag.startswith("session_"):
        return None
    return subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()), tag],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None,
                verbose: bool = False) -> Iterator[bool]:
    """Attach to ``address`` (or ``RAY_ADDRESS``) or start an embedded, quiet Ray.

    Args:
        address: Ray cluster address (``None``: ``RAY_ADDRESS`` or a new local cluster;
            ``"local"``: a new local cluster).
        num_cpus: CPUs of a new local cluster (default :func:`usable_cpus`).
        verbose: forward worker logs to this process (Ray's own logging too).

    Yields:
        ``True`` when attached to a cluster (the caller's or ``address``), ``False`` for
        a local cluster started here.
    """
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment tables on stdout
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the trial log suffices
    if ray.is_initialized():
        yield True
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address == "local":  # Ray's name for a new local cluster: the one started below
        address = None
    kw: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.ERROR}
    if not (address or "").startswith("ray://"):  # Ray Client has no log_to_driver
        kw["log_to_driver"] = verbose
    if address:
        try:
            ray.init(address=address, **kw)
        except ConnectionError as e:
            raise NasError(
                f"cannot attach to the Ray cluster at {address}: {str(e).splitlines()[0]} (a "
                "cluster with token authentication also needs RAY_AUTH_MODE=token)") from None
    else:
        ray.init(address="local", num_cpus=num_cpus or usable_cpus(), include_dashboard=False, **kw)
    reaper = None if address else _start_reaper()
    try:
        yield bool(address)
    finally:
        ray.shutdown()
        if reaper is not None:
            reaper.kill()
            reaper.wait()
