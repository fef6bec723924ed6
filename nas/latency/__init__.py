"""Latency lookup tables measured on the target device, with a calibrated predictor.

Profile a space once per device (``nas profile``), then predict the latency of any
of its archs from the table in microseconds (``nas latency``); ``nas measure`` and
:func:`measure_arch` give the end-to-end ground truth by the same method.

Example:
    >>> from nas.latency import LatencyTable, profile_space, measure_arch
    >>> table = profile_space(space, device="cpu", threads=1, out="t.json")  # doctest: +SKIP
    >>> table = LatencyTable.load("t.json", space=space)  # doctest: +SKIP
    >>> table.predict(archs), measure_arch(archs[0], space, threads=1)  # doctest: +SKIP
"""
from typing import TYPE_CHECKING

from nas.lazy import lazy_exports

if TYPE_CHECKING:
    from nas.latency.device import DeviceError, DeviceSpec, device_fingerprint
    from nas.latency.measure import Measurer, Timing, measure_arch, measure_archs
    from nas.latency.profile import calibration_archs, profile_space
    from nas.latency.signatures import Signature, arch_signatures, space_signatures
    from nas.latency.table import LatencyTable, merge_tables

# public name -> the submodule that defines it; imported when first used (PEP 562), so
# nas.latency.config (the profile settings that ``nas profile --help`` reads) loads
# without torch
_EXPORTS = {
    "DeviceError": "device", "DeviceSpec": "device", "device_fingerprint": "device",
    "Measurer": "measure", "Timing": "measure", "measure_arch": "measure",
    "measure_archs": "measure", "calibration_archs": "profile", "profile_space": "profile",
    "Signature": "signatures", "arch_signatures": "signatures",
    "space_signatures": "signatures", "LatencyTable": "table", "merge_tables": "table",
}

__all__ = ["LatencyTable", "merge_tables", "profile_space", "calibration_archs", "measure_arch",
           "measure_archs", "Measurer", "Timing", "DeviceSpec", "DeviceError",
           "device_fingerprint", "Signature", "arch_signatures", "space_signatures"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__, globals())
