"""Latency lookup tables: measured component latencies plus a calibration, as shareable JSON.

A table belongs to one search space (its fingerprint and canonical spec are stored)
and one measurement setting (device fingerprint: device name, torch/CUDA versions,
dtype, batch size, threads, ``kernels.KERNELS_VERSION``). It predicts the latency
of an arch as the calibrated sum of its components (:mod:`nas.latency.signatures`).

:class:`LatencyTable` is the in-memory table: metadata and checks, building it up
(entries, calibration samples, the calibration fit) and predicting. The file format
(layout, version, validation, writer) is :mod:`nas.latency.tablefile`; the calibrated,
cached sum it predicts with is :mod:`nas.latency.prediction`.

Example:
    >>> table = LatencyTable.load("tiny32_cpu.json", space=space)  # doctest: +SKIP
    >>> table.predict([arch_a, arch_b])  # doctest: +SKIP
    array([0.91, 1.32])
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import nas.latency.calibrate as cal
from nas.arch import Arch
from nas.encoding import encode_arch
from nas.errors import ArtifactError
from nas.io import read_json, write_text
from nas.latency.device import DeviceSpec, describe_device, device_fingerprint, fingerprint_diff
from nas.latency.measure import round_statistic
from nas.latency.prediction import ComponentSum
from nas.latency.residual import Residual
from nas.latency.signatures import Signature, arch_signatures
from nas.latency.tablefile import FORMAT, VERSION, dumps_table, now, validate_table
from nas.space import SearchSpace

__all__ = ["FORMAT", "VERSION", "LatencyTable", "merge_tables"]


class LatencyTable:
    """A latency lookup table; build with :func:`nas.latency.profile_space`, open with :meth:`load`."""

    def __init__(self, data: dict[str, Any], *, source: str = "<memory>"):
        self._space, self._records = validate_table(data, source)
        self._data = data
        self.source = source
        self._ms = {k: float(r["ms"]) for k, r in self._records.items()}
        self._ops = {k: int(r.get("ops", 0)) for k, r in self._records.items()}
        self._clear_caches()

    # ------------------------------------------------------------------ creation and I/O

    @classmethod
    def new(cls, space: SearchSpace, device: dict[str, Any], timing: dict[str, Any], *,
            scope: str = "space", signatures: int = 0) -> LatencyTable:
        """An empty table for ``space`` measured under ``device`` (a device fingerprint)."""
        stamp = now()
        return cls({"format": FORMAT, "version": VERSION, "created": stamp, "updated": stamp,
                    "space": {"name": space.name, "fingerprint": space.fingerprint,
                              "spec": space.to_dict()},
                    "device": dict(device), "timing": dict(timing),
                    "scope": {"kind": scope, "signatures": signatures}, "complete": False,
                    "entries": [], "calibration": None})

    @classmethod
    def load(cls, path: str | Path, *, space: SearchSpace | None = None, force: bool = False,
             device: DeviceSpec | dict[str, Any] | None = None) -> LatencyTable:
        """Read a table; refuse it for another ``space`` or ``device`` unless ``force``.

        Args:
            path: the JSON file.
            space: the space the caller works in; its fingerprint must match.
            force: accept a mismatching space or device anyway.
            device: the setting the caller predicts for (a :class:`DeviceSpec`, resolved on
                this machine, or a device fingerprint dict); every recorded field must match.

        Raises:
            ArtifactError: missing, corrupted, truncated, or for another space/device.
        """
        table = cls(read_json(path, what="latency table"), source=str(path))
        if space is not None:
            table.check_space(space, force=force)
        if device is not None:
            table.check_device(device, force=force)
        return table

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self._data.items() if not k.startswith("_")}
        out["entries"] = list(self._records.values())
        return out

    def save(self, path: str | Path) -> None:
        """Write the table atomically (temp file + rename), one entry per line."""
        self._data["updated"] = now()
        write_text(path, dumps_table(self.to_dict()))

    # ------------------------------------------------------------------ metadata and checks

    @property
    def space(self) -> SearchSpace:
        """The search space the table was built for (rebuilt from the stored spec)."""
        return self._space

    @property
    def space_fingerprint(self) -> str:
        return self._data["space"]["fingerprint"]

    @property
    def device(self) -> dict[str, Any]:
        return dict(self._data["device"])

    @property
    def timing(self) -> dict[str, Any]:
        return dict(self._data["timing"])

    @property
    def complete(self) -> bool:
        return self._data["complete"]

    @property
    def scope(self) -> dict[str, Any]:
        return dict(self._data["scope"])

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self._data["calibration"]

    def __len__(self) -> int:
        return len(self._ms)

    def __contains__(self, key: str | Signature) -> bool:
        return (key.key if isinstance(key, Signature) else key) in self._ms

    def check_space(self, space: SearchSpace, *, force: bool = False) -> None:
        if space.fingerprint != self.space_fingerprint and not force:
            raise ArtifactError(
                f"latency table {self.source} was built for search space "
                f"{self._data['space']['name']} ({self.space_fingerprint}), not for "
                f"{space.name} ({space.fingerprint}); profile this space, or pass --force")

    def check_device(self, device: DeviceSpec | dict[str, Any], *, force: bool = False) -> None:
        fp = device_fingerprint(device) if isinstance(device, DeviceSpec) else device
        diff = fingerprint_diff(self._data["device"], fp)
        if diff and not force:
            raise ArtifactError(
                f"latency table {self.source} was measured on another device/setting "
                f"({'; '.join(diff)}; table vs requested); profile this device, or pass --force")

    def describe(self) -> str:
        return (f"{self._data['space']['name']} ({self.space_fingerprint}), {len(self)} entries, "
                f"{describe_device(self._data['device'])}")

    def diff_from_here(self) -> list[str]:
        """``["name: 'X' vs 'Y'", ...]``: where this machine, in the table's setting,
        differs from the one the table was profiled on (empty: the same; its timings
        compare with timings here). Raises :class:`DeviceError` for a GPU this machine
        lacks."""
        dev = self._data["device"]
        device = dev["type"] if dev.get("index") is None else f"{dev['type']}:{dev['index']}"
        here = DeviceSpec.parse(device, dtype=dev.get("dtype", "fp32"),
                                batch_size=int(dev.get("batch_size", 1)),
                                threads=dev.get("threads"))
        return fingerprint_diff(dev, device_fingerprint(here.resolve()))

    def measure_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`nas.latency.measure.measure_archs` (and its checked
        twin) that time ground truth in this table's setting: batch, dtype, threads,
        statistic, block time, warm-up, clock, rounds."""
        dev, timing = self._data["device"], self._data["timing"]
        return {"batch_size": int(dev.get("batch_size", 1)), "dtype": dev.get("dtype", "fp32"),
                "threads": dev.get("threads"), "stat": self.stat,
                **{k: timing[k] for k in ("min_run_time", "warmup", "clock", "rounds")
                   if k in timing}}

    # ------------------------------------------------------------------ building

    @property
    def stat(self) -> str:
        """The block statistic the entries' ``ms`` hold (``median`` or ``min``)."""
        return self._data["timing"].get("stat", "min")

    def _timed(self, stats: dict[str, float] | float) -> dict[str, float]:
        if not isinstance(stats, dict):
            stats = {self.stat: float(stats)}
        out: dict[str, float] = {"ms": round(float(stats[self.stat]), 6)}
        out.update({k: round(float(stats[k]), 6) for k in ("median", "min", "iqr") if k in stats})
        if "ops" in stats:
            out["ops"] = int(stats["ops"])
        return out

    @staticmethod
    def _best(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """Merge a new measurement round into a record: the fastest round per statistic.

        A slow round is one a transient slowdown of the machine hit (other jobs, the
        host, frequency changes), so the minimum over rounds taken minutes apart is the
        stable figure; ``rounds`` counts them.
        """
        if old is None:
            return {**new, "rounds": 1}
        out = {**old, "rounds": int(old.get("rounds", 1)) + 1}
        for k in ("ms", "median", "min"):
            if k in new:
                out[k] = min(old.get(k, new[k]), new[k])
        if new["ms"] <= old["ms"] and "iqr" in new:
            out["iqr"] = new["iqr"]
        return out

    def set_rounds(self, rounds: int, *, calibration: int | None = None) -> None:
        """Record the measurement rounds the profile takes per component (``timing.rounds``)
        and per calibration subnet (``timing.calibration_rounds``)."""
        self._data["timing"]["rounds"] = int(rounds)
        if calibration is not None:
            self._data["timing"]["calibration_rounds"] = int(calibration)

    def rounds(self, sig: Signature | str) -> int:
        """Measurement rounds merged into a component's entry (0: not measured)."""
        rec = self._records.get(sig.key if isinstance(sig, Signature) else sig)
        return 0 if rec is None else int(rec.get("rounds", 1))

    def add(self, sig: Signature | str, stats: dict[str, float] | float, *,
            merge: bool = False) -> None:
        """Record a component's timing (:func:`nas.latency.measure.time_module` stats, or ms).

        ``merge``: keep the fastest of this and the recorded rounds (see :meth:`_best`).
        """
        sig = sig if isinstance(sig, Signature) else Signature.from_key(sig)
        old = self._records.get(sig.key) if merge else None
        timed = self._best({k: v for k, v in old.items() if k not in ("kind", "params")}
                           if old else None, self._timed(stats))
        rec = {"kind": sig.kind, **timed, "params": sig.params_dict()}
        self._records[sig.key] = rec
        self._ms[sig.key] = rec["ms"]
        self._ops[sig.key] = rec.get("ops", 0)
        self._clear_caches()

    def set_scope(self, *, complete: bool | None = None, kind: str | None = None,
                  signatures: int | None = None, seconds: float | None = None,
                  load: dict[str, Any] | None = None, busy: str | None = None,
                  probe_ms: float | None = None, probe: str | None = None,
                  probe_fast_ms: float | None = None,
                  retimed: dict[str, int] | None = None,
                  outliers: dict[str, int] | None = None) -> None:
        """Record what the table covers: whether it is complete, ``space``/``archs`` scope,
        how many signatures the scope has, the profiling wall time so far (s), and how
        quiet the machine was (``load``: :mod:`nas.latency.quiet`'s reading; ``busy``:
        why it was not quiet, or None), and the machine's speed: the fastest reading of
        the reference kernel (``probe_ms``, :mod:`nas.latency.speedprobe`) over the
        profile; a resumed profile keeps the fastest of all its sessions with the same
        workload (``probe``, :func:`nas.latency.speedprobe.workload_name`; a reading of
        another workload replaces the old one) and the fast speed of the first run
        (``probe_fast_ms``, :attr:`nas.latency.slowphase.SlowPhases.own_fast`; a later run
        judges its slow phases by it, and it is kept: a lucky or a slow later run must not
        move it), and how many entries were timed
        only in slow phases and timed again (``retimed``: ``slow_entries``,
        ``still_slow``, ``earlier``), and how many read above what the other entries
        predict and were timed again (``outliers``: ``entries``, ``timings``,
        ``lowered``; :mod:`nas.latency.outliers`)."""
        if complete is not None:
            self._data["complete"] = bool(complete)
        if kind is not None:
            if kind not in ("space", "archs"):
                raise ValueError(f"scope kind must be 'space' or 'archs', got {kind!r}")
            self._data["scope"]["kind"] = kind
        if signatures is not None:
            self._data["scope"]["signatures"] = int(signatures)
        if seconds is not None:
            self._data["scope"]["seconds"] = round(float(seconds), 2)
        if probe is not None:
            from nas.latency.speedprobe import workload_name

            if self._data["scope"].get("probe", workload_name(1)) != probe:
                self._data["scope"].pop("probe_ms", None)
                self._data["scope"].pop("probe_fast_ms", None)
            self._data["scope"]["probe"] = probe
        if probe_ms is not None:
            old = self._data["scope"].get("probe_ms")
            self._data["scope"]["probe_ms"] = round(float(min(probe_ms, old or probe_ms)), 6)
        if probe_fast_ms is not None and "probe_fast_ms" not in self._data["scope"]:
            self._data["scope"]["probe_fast_ms"] = round(float(probe_fast_ms), 6)
        if retimed is not None:
            self._data["scope"]["retimed"] = {k: int(v) for k, v in retimed.items()}
        if outliers is not None:
            self._data["scope"]["outliers"] = {k: int(v) for k, v in outliers.items()}
        if load is not None:
            self._data["scope"]["load"] = dict(load)
            self._data["scope"]["busy"] = busy

    def add_calibration_sample(self, arch: Arch, stats: dict[str, float] | float, *,
                               seed: int | None = None, source: str | None = None) -> None:
        """Record an end-to-end timing of ``arch`` for the calibration: another round of
        an arch already there merges into its sample, which keeps every round's figures
        (``by_round``) and their k-th fastest (:func:`nas.latency.measure.round_statistic`,
        as the ground truth keeps; a sample from a table written before keeps its fastest).
        ``stats``: the figures of :meth:`~nas.latency.measure.Measurer.measure_archs` (its
        rounds count one by one) or one figure (one round).
        ``source="verify"``: a search's pick (:mod:`nas.search.verify`), which only the
        local correction learns from."""
        c = self._data["calibration"] or {"features": None, "coef": None, "samples": [],
                                          "fit": None, "seed": seed}
        raw = arch.to_dict()
        new = self._timed(stats)
        by_round = self._by_round(stats)
        for i, sample in enumerate(c["samples"]):
            if sample["arch"] == raw:
                old = {k: v for k, v in sample.items() if k != "arch"}
                merged = self._best(old, new)
                if "by_round" in old:  # a sample written before by_round keeps the fastest
                    merged["by_round"] = {k: old["by_round"].get(k, []) + v
                                          for k, v in by_round.items()}
                    merged.update(self._from_rounds(merged["by_round"]))
                c["samples"][i] = {**merged, "arch": raw}
                break
        else:
            extra = {"source": source} if source else {}
            first = {**self._best(None, new), "by_round": by_round}
            first.update(self._from_rounds(by_round))
            c["samples"].append({**first, **extra, "arch": raw})
        self._data["calibration"] = c
        self._residual = False  # rebuilt from the samples as they are now, as a reload would

    def _by_round(self, stats: dict[str, float] | float) -> dict[str, list[float]]:
        """The per-round figures of a timing (``rounds_min``/``rounds_median`` of
        :meth:`nas.latency.measure.Measurer.measure_archs`, else the figure itself as one
        round), per statistic."""
        if not isinstance(stats, dict):
            return {self.stat: [round(float(stats), 6)]}
        return {k: [round(float(x), 6) for x in stats.get(f"rounds_{k}", [stats[k]])]
                for k in ("median", "min") if k in stats}

    def _from_rounds(self, by_round: dict[str, list[float]]) -> dict[str, Any]:
        """A calibration sample's figures from its rounds: each statistic's k-th fastest
        round (:func:`nas.latency.measure.round_statistic`), as the ground truth keeps."""
        out: dict[str, Any] = {k: round_statistic(v) for k, v in by_round.items() if v}
        if self.stat in out:
            out["ms"] = out[self.stat]
        out["rounds"] = max(len(v) for v in by_round.values())
        return out

    def calibration_rounds(self, arch: Arch) -> int:
        """Measurement rounds of ``arch``'s calibration sample (0: none)."""
        raw = arch.to_dict()
        for sample in (self._data["calibration"] or {}).get("samples", []):
            if sample["arch"] == raw:
                return int(sample.get("rounds", 1))
        return 0

    def slow_keys(self) -> list[str]:
        """Keys of the entries never timed while the machine ran at full speed (flagged by
        :func:`nas.latency.profile.profile_space`, which times them again when it runs on
        the same table)."""
        return [k for k, rec in self._records.items() if rec.get("slow")]

    def set_slow(self, judged: Iterable[str], slow: Iterable[str]) -> None:
        """Flag the ``judged`` entries that are in ``slow``; unflag the other judged ones."""
        slow = set(slow)
        for k in judged:
            rec = self._records.get(k)
            if rec is None:
                continue
            if k in slow:
                rec["slow"] = True
            else:
                rec.pop("slow", None)

    def slow_calibration_archs(self) -> list[Arch]:
        """The calibration subnets never timed while the machine ran at full speed (flagged
        by :func:`nas.latency.rounds.retime_calibration`; a profile into the same table
        times them again)."""
        samples = (self._data["calibration"] or {}).get("samples", [])
        return [a for a, s in zip(self.calibration_archs(), samples, strict=True)
                if s.get("slow")]

    def set_calibration_slow(self, judged: Iterable[Arch], slow: Iterable[Arch]) -> None:
        """Flag the calibration samples of ``judged`` that are in ``slow``; unflag the other
        judged ones."""
        judged_raw = [a.to_dict() for a in judged]
        slow_raw = [a.to_dict() for a in slow]
        for sample in (self._data["calibration"] or {}).get("samples", []):
            if sample["arch"] in judged_raw:
                if sample["arch"] in slow_raw:
                    sample["slow"] = True
                else:
                    sample.pop("slow", None)

    def clear_calibration(self) -> None:
        """Forget the calibration timings and coefficients (predictions become raw sums)."""
        self._data["calibration"] = None
        self._clear_caches()

    def restat(self, stat: str) -> LatencyTable:
        """A copy whose latencies are another recorded block statistic, recalibrated."""
        data = copy.deepcopy(self.to_dict())
        records = data["entries"] + ((data["calibration"] or {}).get("samples") or [])
        if any(stat not in r for r in records):
            raise ArtifactError(f"latency table {self.source} does not record {stat!r} for "
                                f"every entry")
        for r in records:
            r["ms"] = r[stat]
        data["timing"]["stat"] = stat
        out = LatencyTable(data, source=f"{self.source} ({stat})")
        if out.calibration and out.calibration.get("features"):
            out.calibrate(out.calibration["features"])
        return out

    def calibration_archs(self) -> list[Arch]:
        c = self._data["calibration"]
        return [Arch.from_dict(s["arch"], source=f"{self.source} calibration")
                for s in (c["samples"] if c else [])]

    def calibrate(self, features: Sequence[str] = cal.DEFAULT_FEATURES, *,
                  residual: bool = True) -> dict[str, Any]:
        """Fit the correction from the stored samples and current entries; returns the fit
        stats. ``residual``: also fit the local correction of what the linear fit leaves
        (:mod:`nas.latency.residual`)."""
        c = self._data["calibration"]
        samples = c["samples"] if c else []
        archs = self.calibration_archs()
        if not samples:
            return {"n": 0}
        # the linear fit is global: it sees the samples chosen to stand for the space, not
        # the picks `nas verify` timed (clustered where one search went, they would tilt it
        # there); the local correction below learns from both
        spread = [i for i, s in enumerate(samples) if s.get("source") != "verify"]
        if len(spread) < 3:  # a table calibrated on picks alone: they are all there is
            spread = list(range(len(samples)))
        X = self._sum.feature_matrix([archs[i] for i in spread])
        y = np.array([samples[i]["ms"] for i in spread], dtype=np.float64)
        used, coef, stats = cal.fit_report(X, y, features)
        stats["verified"] = sum(s.get("source") == "verify" for s in samples)
        c.update({"features": list(used) or None, "coef": coef or None, "fit": stats,
                  "residual": None})
        self._clear_caches()
        if residual and used:
            fitted = self._residual_data()
            res = Residual.fit(*fitted) if fitted else None
            c["residual"] = res.to_dict() if res else None
            self._residual = res
        return stats

    def _residual_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Encodings and log residuals (measured / linear calibration) of the calibration
        samples, the ones the robust linear fit left out included: an arch far off the line
        is what the local correction is for (``nas verify`` adds exactly those)."""
        c = self._data["calibration"]
        if not c or not c.get("features"):
            return None
        # a sample whose components the table lacks (an interrupted profile) is skipped,
        # at fit and at rebuild alike
        keep = [(a, s["ms"]) for a, s in zip(self.calibration_archs(), c["samples"])
                if not self.missing([a])]
        if not keep:
            return None
        archs = [a for a, _ in keep]
        y = np.array([ms for _, ms in keep], dtype=np.float64)
        X = np.array([encode_arch(self.space, a) for a in archs], dtype=np.float64)
        return X, np.log(y / self._sum.predict(archs))

    # ------------------------------------------------------------------ prediction

    def _clear_caches(self) -> None:
        """Start predicting afresh: after the entries or the calibration changed."""
        self._sum = ComponentSum(lookup=self.lookup, ops=self._ops, space=self.space,
                                 space_name=self._data["space"]["name"],
                                 calibration=self._data.get("calibration"))
        self._residual: Residual | None | bool = False  # False: not built yet

    def _local(self) -> Residual | None:
        """The local correction, built from the samples on first use (None: none)."""
        if self._residual is False:
            params = (self._data.get("calibration") or {}).get("residual")
            fitted = self._residual_data() if params else None
            self._residual = (Residual(params, X=fitted[0], r=fitted[1])
                              if fitted and len(fitted[1]) else None)
        return self._residual

    def lookup(self, sig: Signature) -> float:
        """Measured latency (ms) of one component; :class:`ArtifactError` when absent."""
        try:
            return self._ms[sig.key]
        except KeyError:
            hint = ("the profile was interrupted; rerun `nas profile` to finish it"
                    if not self.complete else
                    "profile the archs you predict for (nas profile --archs FILE)"
                    if self._data["scope"]["kind"] == "archs" else
                    "the file says it is complete, so it was edited or truncated, or the arch "
                    "is outside the table's space (check with nas arch info ARCH --space ...)")
            raise ArtifactError(f"latency table {self.source} has no entry for {sig.key}; "
                                f"{hint}") from None

    def features(self, archs: Sequence[Arch]) -> np.ndarray:
        """The calibration features of ``archs`` (columns ``nas.latency.calibrate.FEATURES``),
        e.g. to fit another correction on other samples."""
        return self._sum.feature_matrix(archs)

    def raw_sum(self, arch: Arch) -> float:
        """Uncalibrated sum of the arch's component latencies (ms)."""
        return float(self._sum.feature_matrix([arch])[0, 0])

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Calibrated latency (ms) of every arch, as a float64 array: the linear calibration
        times the local correction, when the table has one (:mod:`nas.latency.residual`)."""
        pred = self._sum.predict(archs)
        if not len(archs):
            return pred
        local = self._local()
        if local is None:
            return pred
        X = np.array([encode_arch(self.space, a) for a in archs], dtype=np.float64)
        return pred * np.exp(local(X))

    def predict_one(self, arch: Arch) -> float:
        return float(self.predict([arch])[0])

    def breakdown(self, arch: Arch) -> list[tuple[Signature, float]]:
        """Every component of ``arch`` in execution order with its measured latency (ms)."""
        sp = self.space
        return [(g, self.lookup(g)) for g in arch_signatures(arch, num_classes=sp.num_classes,
                                                              in_chans=sp.in_chans)]

    def missing(self, archs: Sequence[Arch]) -> list[Signature]:
        """Signatures the archs need that the table lacks (distinct, first-seen order)."""
        sp = self.space
        out: dict[Signature, None] = {}
        for a in archs:
            for g in arch_signatures(a, num_classes=sp.num_classes, in_chans=sp.in_chans):
                if g.key not in self._ms:
                    out.setdefault(g)
        return list(out)


def merge_tables(a: LatencyTable, b: LatencyTable, *, force: bool = False) -> LatencyTable:
    """Union of two tables of the same space and setting; ``a`` wins where both have an entry.

    Calibration samples are pooled and the correction refitted on the merged entries
    (samples whose components are missing are left out of the fit).
    """
    if a.space_fingerprint != b.space_fingerprint and not force:
        raise ArtifactError(f"cannot merge: {a.source} is for space {a.space_fingerprint}, "
                            f"{b.source} for {b.space_fingerprint}; pass --force to merge anyway")
    diff = fingerprint_diff(a.device, b.device)
    if diff and not force:
        raise ArtifactError(f"cannot merge: {a.source} and {b.source} were measured in different "
                            f"settings ({'; '.join(diff)}); pass --force to merge anyway")
    data = copy.deepcopy(a.to_dict())
    keys = {Signature.make(r["kind"], **r["params"]).key for r in data["entries"]}
    data["entries"] += [r for r in b.to_dict()["entries"]
                        if Signature.make(r["kind"], **r["params"]).key not in keys]
    data["complete"] = a.complete or b.complete
    data["scope"] = {"kind": "space" if "space" in (a.scope["kind"], b.scope["kind"]) else "archs",
                     "signatures": max(a.scope["signatures"], b.scope["signatures"])}
    out = LatencyTable(data, source=f"merge({a.source}, {b.source})")
    seen = {_sample_key(s) for s in (a.calibration or {}).get("samples", [])}
    pooled = list((a.calibration or {}).get("samples", []))
    pooled += [s for s in (b.calibration or {}).get("samples", []) if _sample_key(s) not in seen]
    if pooled:
        feats = (a.calibration or b.calibration or {}).get("features") or cal.DEFAULT_FEATURES
        usable = [s for s in pooled if not out.missing([Arch.from_dict(s["arch"])])]
        out._data["calibration"] = {"features": None, "coef": None, "samples": usable,
                                    "fit": None,
                                    "seed": (a.calibration or b.calibration or {}).get("seed")}
        out.calibrate(feats)
    return out


def _sample_key(sample: dict[str, Any]) -> str:
    return json.dumps(sample["arch"], sort_keys=True)

