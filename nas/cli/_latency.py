"""What ``nas profile``, ``nas latency`` and ``nas measure`` do (their flags: :mod:`nas.cli.latency`)."""
from __future__ import annotations

import argparse
import os
import time

from nas.arch import canonicalize, load_arch
from nas.errors import NasError
from nas.latency.archs import read_archs
from nas.latency.config import ProfileConfig
from nas.latency.device import DeviceSpec, describe_device
from nas.latency.measure import Timing, measure_arch, measure_archs_checked
from nas.latency.profile import profile_space
from nas.latency.speedprobe import speed_verdict, table_reference
from nas.latency.table import LatencyTable, merge_tables
from nas.settings import given_flags
from nas.space import load_space


def profile(args: argparse.Namespace) -> int:
    """``nas profile``: time the space's components into a table and print a summary."""
    space = load_space(args.space)
    archs = None
    if args.archs:
        archs = [a for path in args.archs for a in read_archs(path)]
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    c = ProfileConfig(**given_flags(args, args.settings))
    t0 = time.perf_counter()
    table = profile_space(
        space, out=args.out, device=c.device, batch_size=c.batch_size, dtype=c.dtype,
        threads=c.threads, calibrate=c.calibrate, archs=archs, seed=args.seed,
        calibration=c.calibration,
        min_run_time=c.min_run_time, warmup=c.warmup, stat=c.stat, clock=c.clock,
        rounds=c.rounds, address=address,
        max_entries=args.max_entries, max_signatures=args.max_signatures,
        recalibrate=args.recalibrate, progress=not args.quiet,
        force=args.force, allow_busy=c.allow_busy or None)
    sc = table.scope
    print(f"table      {args.out}")
    print(f"space      {space.name} ({space.fingerprint}), scope {sc['kind']}, "
          f"{sc['signatures']} signatures")
    print(f"device     {describe_device(table.device)}")
    load = sc.get("load") or {}
    if load.get("others_cores") is not None:
        print(f"machine    other processes {load['others_cores']:.2f} cores on average, steal "
              f"{100 * (load.get('steal_frac') or 0):.1f}%"
              + (f"; BUSY: {sc['busy']} (timings may be too slow)" if sc.get("busy") else
                 ", quiet"))
    print(f"entries    {len(table)}{'' if table.complete else ' (incomplete: rerun to resume)'}"
          f", this run {time.perf_counter() - t0:.1f} s, total {sc.get('seconds', 0):.1f} s")
    rt = sc.get("retimed") or {}
    parts = [f"{rt['earlier']} entries an earlier run never timed at full speed were timed "
             "again" if rt.get("earlier") else "",
             f"{rt['slow_entries']} entries timed only while the reference kernel ran slow "
             "were timed again" if rt.get("slow_entries") else "",
             f"{rt['still_slow']} never timed at full speed (may predict too slow; profiling "
             "into this table again when the machine is quieter times them again)"
             if rt.get("still_slow") else "",
             f"{rt['calibration']} calibration subnets timed only while it ran slow were timed "
             "again" if rt.get("calibration") else "",
             f"{rt['calibration_still_slow']} calibration subnets never timed at full speed "
             "(the correction may predict too slow; a profile into this table when the "
             "machine is quieter times them again)" if rt.get("calibration_still_slow") else ""]
    if any(parts):
        print("slow phase " + "; ".join(p for p in parts if p))
    ol = sc.get("outliers") or {}
    if ol.get("entries"):
        print(f"outliers   {ol['entries']} entries read more than 5% above what the others "
              f"predict and were timed again ({ol['timings']} timings); {ol['lowered']} came "
              "down by more than 5%")
    fit = (table.calibration or {}).get("fit") or {}
    if table.complete and fit.get("n"):
        loo = f", leave-one-out MAPE {fit['loo_mape']:.2f}%" if "loo_mape" in fit else ""
        out = fit.get("outliers") or []
        dropped = f"; {len(out)} outlying subnets given no weight" if out else ""
        print(f"calibrated on {fit['n']} subnets: fit MAPE {fit['fit_mape']:.2f}%{loo} "
              f"(raw sum MAPE {fit['raw_mape']:.2f}%){dropped}")
    return 0


def _spec(args: argparse.Namespace) -> DeviceSpec | None:
    if args.device is None:
        return None
    return DeviceSpec.parse(args.device, dtype=args.dtype, batch_size=args.batch_size,
                            threads=args.threads)


def latency(args: argparse.Namespace) -> int:
    """``nas latency``: predict an arch's latency from a table, or merge tables."""
    if args.action == "merge":
        if len(args.tables) < 2 or not args.out:
            raise NasError("usage: nas latency merge TABLE TABLE [TABLE...] --out OUT")
        merged = LatencyTable.load(args.tables[0])
        for path in args.tables[1:]:
            merged = merge_tables(merged, LatencyTable.load(path), force=args.force)
        merged.save(args.out)
        print(f"merged {len(args.tables)} tables: {len(merged)} entries -> {args.out}")
        return 0
    if args.tables:
        raise NasError(f"unexpected arguments {args.tables}; use --table TABLE --arch ARCH")
    if not args.table or not args.arch:
        raise NasError("nas latency needs --table TABLE and --arch ARCH")
    space = load_space(args.space) if args.space else None
    table = LatencyTable.load(args.table, space=space, force=args.force, device=_spec(args))
    arch = canonicalize(space or table.space, load_arch(args.arch))
    ms, raw = table.predict_one(arch), table.raw_sum(arch)
    print(f"predicted  {ms:.4f} ms ({table.stat} latency; raw sum of components {raw:.4f} ms)")
    print(f"table      {table.describe()}")
    if args.breakdown:
        for sig, t in table.breakdown(arch):
            print(f"  {t:9.4f} ms {100 * t / raw:5.1f}%  {sig.label}")
        print(f"  {ms - raw:+9.4f} ms         calibration (whole-model overhead)")
    return 0


def measure(args: argparse.Namespace) -> int:
    """``nas measure``: time an arch's standalone model end to end."""
    space = load_space(args.space)
    arch = canonicalize(space, load_arch(args.arch))
    table = LatencyTable.load(args.table, space=space) if args.table else None
    c = ProfileConfig(**given_flags(args, args.settings))
    kw = dict(device=c.device, batch_size=c.batch_size, dtype=c.dtype, threads=c.threads,
              min_run_time=c.min_run_time, warmup=c.warmup, stat=c.stat, clock=c.clock,
              rounds=c.rounds)
    slow = None
    reference = table_reference(table.scope, c.batch_size) if table is not None else None
    if reference:  # wait for the table's speed
        (ms,), speed = measure_archs_checked([arch], space, reference_ms=reference, **kw)
        slow = speed_verdict(speed)
    else:
        ms = measure_arch(arch, space, **kw)
    spec = DeviceSpec.parse(c.device, dtype=c.dtype, batch_size=c.batch_size,
                            threads=c.threads).resolve()
    clock = Timing(clock=c.clock).resolve(spec).clock
    print(f"measured   {ms:.4f} ms ({spec.device}, {spec.dtype}, batch {spec.batch_size}, "
          f"{spec.threads} threads, {c.stat} over timed blocks, {clock} clock)")
    if table is not None:
        pred = table.predict_one(arch)
        print(f"predicted  {pred:.4f} ms ({100 * (pred - ms) / ms:+.1f}%)")
    if slow:
        print(f"warning    {slow}")
    return 0
