"""The settings of a latency profile (``nas profile``, and ``nas run``'s profile stage).

One frozen dataclass whose fields carry their rules and help (:mod:`nas.settings`):
``nas profile``'s flags are generated from it, ``nas run``'s ``profile:`` section embeds
its fields, and the command ``nas run`` prints is written from it.

Example:
    >>> ProfileConfig().rounds, ProfileConfig(batch_size=8).batch_size
    (4, 8)
"""
from __future__ import annotations

from dataclasses import dataclass

from nas.settings import SettingsError, check_settings, setting

__all__ = ["ProfileConfig", "DTYPE_NAMES", "STAT_NAMES", "CLOCK_NAMES"]

DTYPE_NAMES = ("fp32", "fp16", "bf16")  # nas.latency.device.DTYPES
STAT_NAMES = ("min", "median")  # nas.latency.measure.STATS
CLOCK_NAMES = ("auto", "wall", "thread", "cuda")  # nas.latency.measure.CLOCKS


@dataclass(frozen=True, kw_only=True)
class ProfileConfig:
    """How a latency table is measured: the setting (device, batch, dtype, threads) and
    the timing method; the table records both and only predicts for that setting."""

    device: str = setting("cpu", "cpu, cuda or cuda:INDEX")
    batch_size: int = setting(1, "images per forward", check=lambda v: v >= 1, rule=">= 1")
    dtype: str = setting("fp32", "weights and inputs", choices=DTYPE_NAMES)
    threads: int = setting(1, "torch threads while timing (the setting the table is for)",
                           check=lambda v: v >= 1, rule=">= 1")
    calibrate: int | None = setting(None, "subnets timed end to end to calibrate the sum "
                                    "(default: 30; 20 above batch 16, where each is timed "
                                    "longer and more often)",
                                    check=lambda v: v >= 0, rule=">= 0", metavar="N")
    calibration: str = setting("extremes", "how the calibration subnets are chosen: extremes "
                               "(the space's smallest and largest subnets, then random ones), "
                               "random, or a cover of the space's size, depth and token "
                               "reduction (see nas.latency.profile.calibration_archs)",
                               choices=("extremes", "random", "cover"))
    min_run_time: float = setting(0.05, "seconds of timed calls per measurement (per round); "
                                  "a whole model on CPU gets at least 3.1 ms per batch sample "
                                  "(0.2 s at batch 64)",
                                  check=lambda v: v > 0, rule="> 0")
    warmup: int = setting(10, "untimed calls before each measurement",
                          check=lambda v: v >= 0, rule=">= 0")
    clock: str = setting("auto", "auto: CPU time of the timing thread on CPU with one thread "
                         "(time lost to other jobs is not counted), wall time otherwise",
                         choices=CLOCK_NAMES)
    stat: str = setting("min", "statistic over timed ~1 ms blocks (min: robust to other jobs)",
                        choices=STAT_NAMES)
    rounds: int = setting(4, "time every item this many times, round after round, each round "
                          "in its own order, keeping its fastest round (robust to slowdowns "
                          "lasting seconds); calibration subnets get 4x as many (8x above "
                          "batch 16), spread over the component rounds",
                          check=lambda v: v >= 1, rule=">= 1")
    allow_busy: bool = setting(False, "time even when other processes keep the machine busy "
                               "(refused by default: such a table predicts too slow); the "
                               "table records it")

    def __post_init__(self) -> None:
        check_settings(self, "profile config", SettingsError)
