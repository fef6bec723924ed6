"""Building a latency table: enumerate signatures, time each on the device, calibrate.

:func:`profile_space` lists every component signature of the space (or only those a
list of archs needs), skips the ones the output table already holds, times the rest
on the device (locally, or in a Ray actor pinned to one cluster node when an
address is given), and rewrites the table atomically after every few entries, so an
interrupted run resumes where it stopped. It then times ``calibrate`` whole subnets end
to end (the space's smallest and largest, then random ones: :func:`calibration_archs`)
and fits the correction (:mod:`nas.latency.calibrate`).

Every round visits the components (and calibration subnets) in its own random order
(:func:`round_order`). On a shared VM the CPU slows down in bursts of 0.5-1.5 s every
few seconds (about 10% of 0.1 s measurements, 1.15x or more); rounds in a fixed order
repeat with the same period, so a burst hit the same stretch of entries in both rounds
and the fastest round kept it (12% of one batch-8 table's entries 1.2-1.6x slow, which
put held-out subnets up to 36% off). Slow phases that outlast the rounds are caught by
the reference kernel, probed between chunks of entries: entries timed only while it read
slow are timed again (:mod:`nas.latency.slowphase`), and those still slow are flagged in
the table; the next run on the table times them first, judged by the fast speed the
table's first run saw (``scope.probe_fast_ms``). The calibration subnets are judged and
timed again alike (:func:`nas.latency.rounds.retime_calibration`). Slow phases the
kernel does not feel are caught by the entries themselves: those that read furthest
above what the other entries predict are timed again (:mod:`nas.latency.outliers`).

Example:
    >>> table = profile_space(space, device="cpu", threads=1, out="tiny32_cpu.json")  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

import nas.latency.calibrate as cal
import nas.latency.quiet as quiet
from nas.arch import Arch, canonicalize, extreme_arch, sample_arch
from nas.costmodel import analytic_cost
from nas.errors import ArchError, ArtifactError, NasError
from nas.io import check_output_file
from nas.latency.device import DeviceError, DeviceSpec, fingerprint_diff
from nas.latency.measure import Measurer, Timing
from nas.latency.outliers import PASSES as OUTLIER_PASSES
from nas.latency.outliers import suspects
from nas.latency.rounds import (
    CALIBRATION_RETIMES,
    measure_calibration,
    measure_signatures,
    retime_calibration,
)
from nas.latency.signatures import Signature, archs_signatures, space_signatures
from nas.latency.slowphase import RETIME_ROUNDS, RETIME_SHARE, SlowPhases
from nas.latency.speedprobe import table_reference, workload_name
from nas.latency.table import LatencyTable
from nas.raysession import ray_session
from nas.space import SearchSpace

__all__ = ["profile_space", "retime_outliers", "calibration_archs", "round_order",
           "CALIBRATION_STRATEGIES", "calibration_rounds_per_round", "calibration_subnets"]

CALIBRATION_ROUNDS = 4  # calibration rounds per component round
# ... above batch LARGE_BATCH: whole batch-64 models run few calls per measurement, so
# their fastest keeps falling with more rounds (on the AMD host, 32 rounds of 0.05 s
# read 1.3% below 16, median of 30 subnets; bench/LATENCY.md), and the bench's ground
# truth there is the fastest of 32 rounds.
CALIBRATION_ROUNDS_LARGE = 8
LARGE_BATCH = 16


CALIBRATION_SUBNETS = 30  # whole subnets timed to fit the correction, by default
# ... above batch LARGE_BATCH, where each is timed twice as often and a measurement lasts
# 4x longer: 20, the first 20 of the same 30 (prefix-stable). Refitted on the same
# re-timed sets in the seed-18 and -19 batch-64 benches, 20 extremes fitted as well as
# 30 (held-out MAPE 2.74/3.71% vs 3.69/3.78%); seed 20 with 20 built in 484 s, against
# 613-618 s with 30 and a 10-minute target, and met every target (bench/LATENCY.md).
CALIBRATION_SUBNETS_LARGE = 20


def calibration_rounds_per_round(batch_size: int) -> int:
    """Calibration rounds per component round at ``batch_size``."""
    return CALIBRATION_ROUNDS_LARGE if batch_size > LARGE_BATCH else CALIBRATION_ROUNDS


def calibration_subnets(batch_size: int) -> int:
    """How many calibration subnets a profile at ``batch_size`` times by default."""
    return CALIBRATION_SUBNETS_LARGE if batch_size > LARGE_BATCH else CALIBRATION_SUBNETS


def round_order(items: Sequence[Any], seed: int, r: int) -> list[Any]:
    """``items`` in round ``r``'s own order: a permutation seeded by ``(seed, r)``, so a
    burst of machine slowness that hits a stretch of one round misses it in the others."""
    perm = np.random.default_rng([seed & 0xFFFFFFFF, r]).permutation(len(items))
    return [items[i] for i in perm]

log = logging.getLogger(__name__)


CALIBRATION_STRATEGIES = ("cover", "extremes", "random")
COVER_POOL = 500  # uniform samples the cover is drawn from: a fixed pool keeps it prefix-stable


def calibration_archs(space: SearchSpace, n: int, seed: int, *, strategy: str = "extremes"
                      ) -> list[Arch]:
    """``n`` distinct archs of ``space`` to calibrate a table on (fewer if the space is
    smaller), seeded. Every strategy is prefix-stable: ``k`` subnets are the first ``k``
    of ``n``, so a table resumed with a larger ``calibrate`` keeps what it timed.

    ``extremes`` (default): the space's smallest and largest subnets
    (:func:`nas.arch.extreme_arch`), then the ``random`` ones. Random subnets sit mostly
    in the middle of the space, where the correction's constant and per-op terms trade
    off against its scale; the smallest subnet lies below all of them and was predicted
    10-39% too slow in `nas run` reports. On the tables of four `nas run` profiles,
    refitted with and without the ends on the same timings, the held-out MAPE went from
    4.2-11.9% to 3.9-6.2% (``bench/bench_calibration_ends.py``); on the benches' tables
    the whole held-out set and its fastest fifth moved within the noise (-1.0..+0.7
    points; ``bench/results/latency_b1_b8_seed3_mrt25_cpu.md``,
    ``latency_b8_seed4_rerun_cpu.md``, ``latency_b64_seed5_cpu.md``).

    ``random``: uniform samples. ``cover``: from :data:`COVER_POOL` uniform samples, a
    greedy farthest-point cover of what the correction depends on (analytic MACs in log
    scale, block count, blocks after in-stage token reduction; standardised), starting
    from the sample nearest the mean. On tiny32 (``bench/bench_latency.py``, 120 held-out
    subnets at batch 1, 8 and 64) a cover fitted no better than random subnets (MAPE
    2.97/1.87/4.40% vs 2.27/2.16/4.10%, within the noise), and 6 subnets fitted as well
    as 30.
    """
    if strategy not in CALIBRATION_STRATEGIES:
        raise NasError(f"calibration strategy must be one of "
                       f"{', '.join(CALIBRATION_STRATEGIES)}, got {strategy!r}")
    if strategy == "extremes":
        ends = list(dict.fromkeys(a for w in ("min", "max")
                                  if (a := _extreme(space, w)) is not None))
        rest = [a for a in calibration_archs(space, n, seed, strategy="random") if a not in ends]
        return (ends + rest)[:n]
    rng = np.random.default_rng(seed)
    pool: dict[Arch, None] = {}
    want = n if strategy == "random" else max(n, COVER_POOL)
    for _ in range(50 * want):
        if len(pool) >= want:
            break
        pool.setdefault(sample_arch(space, rng))
    archs = list(pool)
    if strategy == "random" or len(archs) <= n:
        return archs[:n]
    X = np.array([_cover_features(a) for a in archs], dtype=np.float64)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    picked = [int(np.argmin((X ** 2).sum(1)))]
    dist = ((X - X[picked[0]]) ** 2).sum(1)
    while len(picked) < n:
        i = int(np.argmax(dist))
        picked.append(i)
        dist = np.minimum(dist, ((X - X[i]) ** 2).sum(1))
    return [archs[i] for i in picked]


def _extreme(space: SearchSpace, which: str) -> Arch | None:
    """The space's ``min`` or ``max`` subnet, or None where that end is no valid subnet."""
    try:
        return extreme_arch(space, which)
    except ArchError as e:  # e.g. an end whose token grid vanishes
        log.info("calibration: no %s subnet to time (%s)", which, e)
        return None


def _cover_features(arch: Arch) -> tuple[float, float, float]:
    macs, _, _ = analytic_cost(arch)
    blocks = sum(s.depth for s in arch.stages)
    reduced = sum(s.depth - s.reduce_at for s in arch.stages if s.keep_ratio < 1.0)
    return float(np.log(max(macs, 1.0))), float(blocks), float(reduced)


class _RayMeasurer:
    """A :class:`Measurer` living in a Ray actor on a node that has the device."""

    def __init__(self, address: str, spec: DeviceSpec, timing: Timing, space: SearchSpace):
        try:
            import ray
            from ray.exceptions import RayError
        except ImportError:
            raise NasError("--address needs Ray: pip install 'ray[default]'") from None
        self._ray, self._error = ray, RayError
        self._session = contextlib.ExitStack()
        self._session.enter_context(ray_session(address))
        threads = spec.threads or 1
        opts: dict[str, Any] = {"num_cpus": threads}
        if spec.type == "cuda":
            if ray.cluster_resources().get("GPU", 0) < 1:
                self.close()
                raise DeviceError(f"{spec.device} requested but the Ray cluster at {address} has "
                                  f"no GPU")
            opts["num_gpus"] = 1
            spec = replace(spec, index=0)  # Ray exposes the GPU it assigns as cuda:0
        if not any(n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= threads
                   for n in ray.nodes()):
            self.close()
            raise DeviceError(f"no node of the Ray cluster at {address} has {threads} CPUs "
                              f"for --threads {threads}")
        self._actor = ray.remote(**opts)(Measurer).remote(
            spec.to_dict(), asdict(timing), num_classes=space.num_classes,
            in_chans=space.in_chans)

    def _call(self, method: str, *args: Any, **kw: Any) -> Any:
        try:
            return self._ray.get(getattr(self._actor, method).remote(*args, **kw))
        except self._error as e:
            cause = getattr(e, "cause", None)
            for _ in range(4):  # RayTaskError / RayActorError wrap the remote exception
                if isinstance(cause, NasError):
                    raise cause from None
                cause = getattr(cause, "cause", None)
            raise

    def fingerprint(self) -> dict[str, Any]:
        return self._call("fingerprint")

    def timing_record(self) -> dict[str, Any]:
        return self._call("timing_record")

    def measure(self, keys: Sequence[str]) -> list[dict[str, float]]:
        return self._call("measure", list(keys))

    def measure_archs(self, archs: Sequence[dict[str, Any]], *, keep: bool = False
                      ) -> list[dict[str, float]]:
        return self._call("measure_archs", list(archs), keep=keep)

    def probe(self) -> float:
        return self._call("probe")

    def close(self) -> None:
        if getattr(self, "_actor", None) is not None:
            self._ray.kill(self._actor)
            self._actor = None
        self._session.close()


def _open_table(out: Path, space: SearchSpace, fp: dict[str, Any], timing: dict[str, Any],
                scope: str, force: bool) -> LatencyTable:
    if out.exists():
        table = LatencyTable.load(out)
        problems = []
        if table.space_fingerprint != space.fingerprint:
            problems.append(f"it is for space {table.space_fingerprint}, not "
                            f"{space.name} ({space.fingerprint})")
        diff = fingerprint_diff(table.device, fp)
        if diff:
            problems.append(f"it was measured in another setting ({'; '.join(diff)})")
        for key in ("stat", "clock", "malloc"):
            if table.timing.get(key) != timing.get(key):
                problems.append(f"its {key} is {table.timing.get(key, 'not recorded')!r}, not "
                                f"{timing.get(key, 'not recorded')!r}")
        if not problems:
            if scope == "space":
                table.set_scope(kind="space")
            return table
        if not force:
            raise ArtifactError(f"cannot resume {out}: {' and '.join(problems)}; remove it, "
                                f"choose another --out, or pass --force to start it afresh")
        log.warning("overwriting %s: %s", out, "; ".join(problems))
    return LatencyTable.new(space, fp, timing, scope=scope)


def profile_space(space: SearchSpace, *, out: str | Path, device: str = "cpu",
                  batch_size: int = 1, dtype: str = "fp32", threads: int | None = None,
                  calibrate: int | None = None, archs: Sequence[Arch] | None = None,
                  seed: int = 0,
                  calibrate_on: Sequence[Arch] | None = None,
                  min_run_time: float = 0.1, warmup: int = 10, stat: str = "min",
                  block_time: float = 1e-3, clock: str = "auto", rounds: int = 3,
                  address: str | None = None,
                  max_entries: int | None = None, max_signatures: int = 20000,
                  features: Sequence[str] = cal.DEFAULT_FEATURES, save_every: int = 8,
                  recalibrate: bool = False, progress: bool = True, calibration: str = "extremes",
                  force: bool = False, allow_busy: bool | None = None,
                  retime: int = RETIME_ROUNDS, outlier_passes: int = OUTLIER_PASSES
                  ) -> LatencyTable:
    """Measure every component signature of ``space`` on a device and write a table.

    Args:
        space: the search space.
        out: the table file (JSON). If it exists for the same space and setting, the
            run resumes: measured signatures and calibration samples are kept.
        device: ``cpu``, ``cuda`` or ``cuda:INDEX``.
        batch_size: images per forward.
        dtype: ``fp32``, ``fp16`` or ``bf16`` (weights and inputs cast to it).
        threads: ``torch.set_num_threads`` while timing (default: the current value).
        calibrate: whole subnets timed end to end to fit the correction (0: none;
            default :func:`calibration_subnets`: 30, 20 above batch :data:`LARGE_BATCH`).
        archs: profile only what these archs (and the calibration subnets) need, for
            spaces too large to enumerate. Each must be in ``space``.
        seed: seed of the calibration subnets.
        calibrate_on: time these archs for the calibration instead of ``calibrate``
            chosen ones (e.g. subnets under a MAC budget, when random subnets of a huge
            space are too slow to time).
        calibration: how the ``calibrate`` subnets are chosen: ``extremes`` (the
            smallest and largest subnets, then random ones), ``random`` or ``cover``
            (see :func:`calibration_archs`; a cover of a space too large to enumerate
            picks its largest models). A table that already holds samples of another
            set keeps that set, with a warning (unless ``recalibrate``).
        min_run_time: seconds of timed calls per measurement (whole models on CPU: at
            least :data:`nas.latency.measure.MODEL_S_PER_SAMPLE` per batch sample).
        warmup: untimed calls before each measurement.
        stat: block statistic used as the latency, ``median`` or ``min`` (see
            :class:`nas.latency.measure.Timing`; both are recorded).
        block_time: target seconds per timed block on CPU.
        clock: ``auto`` (CPU time of the timing thread on CPU with one thread, else wall
            time), ``wall`` or ``thread``; see :class:`nas.latency.measure.Timing`.
        rounds: every signature is timed once per round, round after round, keeping its
            fastest round (robust to slowdowns of the machine that last seconds); every
            calibration subnet :data:`CALIBRATION_ROUNDS` times per round (twice that
            above batch :data:`LARGE_BATCH`), after the round's components; a resumed
            table gets the rounds it lacks.
        address: Ray cluster address (``auto``, ``ray://host:10001``, ``local``...); the
            measurements then run in an actor on a node with the device.
        max_entries: stop after this many signature measurements (the table is saved
            incomplete; rerunning resumes).
        max_signatures: refuse spaces with more signatures than this (use ``archs``).
        features: calibration terms (see :mod:`nas.latency.calibrate`).
        save_every: signatures per call to the measurer (a Ray actor's round trip); the
            table is rewritten after a chunk unless the last write was very recent
            (:class:`_Saver`).
        recalibrate: drop the calibration timings of an existing table and time the
            calibration subnets again (the machine may have drifted since; components
            are kept, except those flagged as never timed at full speed, which every
            run on the table times again).
        progress: show progress (a bar on a terminal, a line per 10% in a log).
        retime: extra rounds, at most, for the entries this session timed only while the
            reference kernel ran slow (:mod:`nas.latency.slowphase`); 0: none.
        outlier_passes: after the rounds, this many times: time again the entries that
            read furthest above what the other entries predict (at most a tenth of them,
            :mod:`nas.latency.outliers`); 0: none.
        force: overwrite an existing ``out`` of another space or setting.
        allow_busy: time even when other processes keep the machine busy (the table
            records it in ``scope["busy"]``). By default (``None``: unless the
            ``NAS_ALLOW_BUSY`` environment variable is 1) a machine found busy before
            timing is refused (:mod:`nas.latency.quiet`); one that turns busy during
            the profile is flagged in the table and in the log. Local timing only: a
            Ray ``address`` times elsewhere.

    Returns:
        The table (also written to ``out``).
    """
    spec = DeviceSpec.parse(device, dtype=dtype, batch_size=batch_size, threads=threads)
    timing = Timing(min_run_time=min_run_time, warmup=warmup, stat=stat, block_time=block_time,
                    clock=clock, rounds=rounds)
    if calibrate is None:
        calibrate = calibration_subnets(spec.batch_size)
    for name, v, lo in (("calibrate", calibrate, 0), ("max_entries", max_entries, 0),
                        ("save_every", save_every, 1), ("max_signatures", max_signatures, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise NasError(f"{name} must be an integer >= {lo}, got {v!r}")
    cal._cols(features)
    out = check_output_file(out)  # a directory or an unwritable place fails before any timing
    if allow_busy is None:
        allow_busy = os.environ.get(quiet.ALLOW_BUSY_ENV, "") == "1"
    monitor = None
    if not address:
        reason = None if allow_busy else quiet.busy_reason(quiet.probe(1.0), spec.threads)
        if reason:
            raise NasError(f"the machine is busy: {reason}; latencies timed now would be off "
                           f"(a table built beside one other job predicted 33% too slow). Stop "
                           f"the other jobs, or time anyway with --allow-busy (the table "
                           f"records it)")
        monitor = quiet.LoadMonitor()
    t0 = time.perf_counter()
    cal_archs = ([canonicalize(space, a) for a in calibrate_on] if calibrate_on is not None
                 else calibration_archs(space, calibrate, seed, strategy=calibration))
    kw = {"num_classes": space.num_classes, "in_chans": space.in_chans}
    if archs is None:
        sigs = space_signatures(space, limit=max_signatures)
        known = set(sigs)
        sigs += [g for g in archs_signatures(cal_archs, **kw) if g not in known]
        scope = "space"
    else:
        sigs = archs_signatures([canonicalize(space, a) for a in archs] + cal_archs, **kw)
        scope = "archs"
    log.info("%s: %d component signatures", space.name, len(sigs))

    measurer: Any = (_RayMeasurer(address, spec, timing, space) if address else
                     Measurer(spec.to_dict(), asdict(timing), **kw))
    try:
        table = _open_table(out, space, measurer.fingerprint(), measurer.timing_record(), scope,
                            force)
        kept = table.calibration_archs()
        if kept and not recalibrate and calibrate_on is None and not set(kept) <= set(cal_archs):
            if set(cal_archs) <= set(kept):  # a larger set of the same (an older default)
                log.info("%s holds %d calibration subnets, more than the %d asked; keeping them",
                         out, len(kept), len(cal_archs))
            else:
                log.warning("%s was calibrated on another set of subnets (another seed, "
                            "strategy or version): keeping its %d; pass --recalibrate to "
                            "replace them", out, len(kept))
            cal_archs = kept
        # only entries first timed in this run, or flagged by an earlier one, may be
        # flagged now: an entry once timed at full speed keeps that measurement
        flagged = set(table.slow_keys())
        flaggable = flagged | {g.key for g in sigs if table.rounds(g) == 0}
        missing = sum(max(0, rounds - table.rounds(g)) for g in sigs)
        stop_early = max_entries is not None and missing > max_entries
        budget = max_entries if stop_early else missing
        seconds = table.scope.get("seconds", 0.0)
        if recalibrate:
            table.clear_calibration()
        if missing:
            table.set_scope(complete=False)
        # Calibration subnets get CALIBRATION_ROUNDS (above LARGE_BATCH:
        # CALIBRATION_ROUNDS_LARGE) times the rounds, spread over the component rounds: whole models run few ~1 ms blocks per measurement, so their
        # min over 2 rounds sat ~4-5% above the min over 8 at batch 64, and a machine whose
        # speed drifts over minutes then biases the sum-to-model ratio the fit learns.
        # Each of those measurements also lasts longer at large batches (the Measurer's
        # model_timing: 0.2 s at batch 64), for the same reason.
        per_round = calibration_rounds_per_round(spec.batch_size)
        cal_rounds = per_round * rounds
        table.set_rounds(rounds, calibration=cal_rounds)
        # the reference kernel before every round and between chunks: the machine's speed
        phases = SlowPhases(measurer, reference=table_reference(table.scope, spec.batch_size,
                                                                key="probe_fast_ms"))
        t_rounds = time.perf_counter()
        for r in range(rounds):
            phases.probe()
            todo = [g for g in sigs if table.rounds(g) <= r][:budget]
            budget -= len(todo)
            todo = round_order(todo, seed, r)
            measure_signatures(measurer, table, todo, out, save_every, progress,
                               desc=f"profile {r + 1}/{rounds}", phases=phases)
            if stop_early:
                continue
            for c in range(r * per_round, (r + 1) * per_round):
                phases.probe()
                measure_calibration(measurer, table,
                                    round_order([a for a in cal_archs
                                                 if table.calibration_rounds(a) <= c],
                                                seed, cal_rounds + c),
                                    out, seed, progress, desc=f"calibrate {c + 1}/{cal_rounds}",
                                    phases=phases)
        if not stop_early:
            # entries an earlier run on this table never timed at full speed: once more now
            seen = phases.slowness()
            again = [g for g in sigs if g.key in flagged and g.key not in seen]
            if again:
                log.info("%d entries of %s were never timed while the machine ran at full "
                         "speed; timing them again", len(again), out)
                phases.probe()
                measure_signatures(measurer, table, again, out, save_every, progress,
                                   desc="re-time earlier slow", phases=phases)
            budget_s = RETIME_SHARE * (time.perf_counter() - t_rounds)
            _retime_slow(measurer, table, sigs, phases, out, save_every, progress, retime,
                         budget_s, flaggable=flaggable, earlier={g.key for g in again})
            if retime_outliers(measurer, table, sigs, out=out, passes=outlier_passes,
                               seed=seed, phases=phases, save_every=save_every,
                               progress=progress)["timings"]:
                # an entry the passes timed at full speed is no longer slow
                phases.probe()
                left = _flag_slow(table, phases, sigs, flaggable)
                table.set_scope(retimed={**table.scope.get("retimed", {}), "still_slow": left})
            if cal_archs:
                # the correction is fitted on these: timed only in slow phases, they teach it
                # a scale too large for every subnet (rounds.py)
                table.set_scope(retimed={**table.scope.get("retimed", {}), **retime_calibration(
                    measurer, table, cal_archs, phases, out, seed=seed, budget_s=budget_s,
                    passes=CALIBRATION_RETIMES if retime else 0, progress=progress)})
        if stop_early:
            phases.probe()  # closes the last chunks
            _flag_slow(table, phases, sigs, flaggable)
            table.set_scope(complete=False, signatures=len(sigs) if scope == "space" else None,
                            seconds=seconds + time.perf_counter() - t0, **_speed(phases, spec))
            table.save(out)
            return table
        table.set_scope(complete=True, signatures=len(sigs) if table.scope["kind"] == "space"
                        else len(table))
        table.calibrate(features)
        table.set_scope(seconds=seconds + time.perf_counter() - t0, **_speed(phases, spec))
        if monitor is not None:
            _record_load(table, monitor.read(), spec.threads)
        table.save(out)
        return table
    finally:
        if address:
            measurer.close()


def _speed(phases: SlowPhases, spec: DeviceSpec) -> dict[str, Any]:
    """What a table records of the machine's speed (:meth:`LatencyTable.set_scope`)."""
    return {"probe_ms": phases.fastest, "probe_fast_ms": phases.own_fast,
            "probe": workload_name(spec.batch_size)}


def _record_load(table: LatencyTable, reading: dict[str, Any], threads: int | None) -> None:
    """Write how quiet the machine was into the table's scope; warn when it was not."""
    reason = quiet.busy_reason(reading, threads)
    table.set_scope(load=reading, busy=reason)
    if reason:
        log.warning("the machine was busy while profiling: %s; the table is flagged (scope.busy) "
                    "and may predict too slow on a quiet machine", reason)


def _retime_slow(measurer: Any, table: LatencyTable, sigs: list[Signature], phases: SlowPhases,
                 out: Path, save_every: int, progress: bool, retime: int, budget_s: float,
                 flaggable: set[str] | None = None, earlier: set[str] = frozenset()) -> None:
    """Time again, up to ``retime`` times and ``budget_s`` seconds, slowest first, the
    entries this session timed only while the reference kernel ran slow
    (:mod:`nas.latency.slowphase`); the table keeps each entry's fastest, records how
    many there were (``scope.retimed``) and flags those of ``flaggable`` (default: all)
    still slow (see :func:`_flag_slow`). ``earlier``: the flagged entries of an earlier
    run that this one timed again first (counted apart)."""
    by_key = {g.key: g for g in sigs}
    first = None
    deadline = time.perf_counter() + budget_s
    for extra in range(retime):
        phases.probe()  # closes the last chunks of the rounds before
        todo = phases.unclean(list(by_key))
        if first is None:
            first = sum(k not in earlier for k in todo)
        if not todo or time.perf_counter() >= deadline:
            break
        log.info("%d entries were timed only while the machine ran slow (reference kernel "
                 "more than 5%% above its fast speed); timing them again (%d/%d)", len(todo),
                 extra + 1, retime)
        measure_signatures(measurer, table, [by_key[k] for k in todo], out, save_every,
                           progress, desc=f"re-time {extra + 1}/{retime}", phases=phases,
                           deadline=deadline)
    phases.probe()
    left = _flag_slow(table, phases, sigs, flaggable)
    if left:
        log.warning("%d entries were never timed while the machine ran at full speed; they "
                    "may predict too slow. Profiling into the same table again (`nas profile` "
                    "with the same settings and --out) when the machine is quieter times them "
                    "again (they are flagged in the table)", left)
    table.set_scope(retimed={"slow_entries": first or 0, "still_slow": left,
                             **({"earlier": len(earlier)} if earlier else {})})


def retime_outliers(measurer: Any, table: LatencyTable, sigs: Sequence[Signature], *,
                    out: str | Path, passes: int = OUTLIER_PASSES, seed: int = 0,
                    phases: SlowPhases | None = None, save_every: int = 8,
                    progress: bool = False) -> dict[str, int]:
    """``passes`` times: time once more the entries of ``sigs`` that read furthest above
    what the other entries predict (:func:`nas.latency.outliers.suspects`, re-fitted each
    pass on the entries as they are then). The table keeps each entry's fastest and
    records, and returns, how many entries were suspects, how many timings that took and
    how many came down by more than 5% (``scope.outliers``); it is saved to ``out``.
    The calibration is not refitted (:func:`profile_space` fits it afterwards).
    """
    by_key = {g.key: g for g in sigs}
    before: dict[str, float] = {}
    timings = 0
    for p in range(passes):
        todo = suspects(table, sigs, seed=seed + p)
        if not todo:
            break
        for k in todo:
            before.setdefault(k, table.lookup(by_key[k]))
        log.info("%d entries read more than 5%% above what the other entries predict; timing "
                 "them again (%d/%d)", len(todo), p + 1, passes)
        if phases is not None:
            phases.probe()
        measure_signatures(measurer, table, [by_key[k] for k in todo], Path(out), save_every,
                           progress, desc=f"re-time outliers {p + 1}/{passes}", phases=phases)
        timings += len(todo)
    record = {"entries": len(before), "timings": timings,
              "lowered": sum(table.lookup(by_key[k]) < v / 1.05 for k, v in before.items())}
    if passes:
        table.set_scope(outliers=record)
        table.save(out)
    return record


def _flag_slow(table: LatencyTable, phases: SlowPhases, sigs: list[Signature],
               flaggable: set[str] | None) -> int:
    """Flag (``slow`` on the entry) the entries of ``sigs`` this session timed only in slow
    phases, among ``flaggable`` (None: all); unflag those it timed at full speed. Returns
    how many entries of ``sigs`` are flagged now."""
    keys = {g.key for g in sigs}
    judged = set(phases.slowness()) & keys
    slow = set(phases.unclean(list(judged)))
    table.set_slow(judged, slow if flaggable is None else slow & flaggable)
    return len(set(table.slow_keys()) & keys)
