"""``nas profile``, ``nas latency``, ``nas measure``: latency tables and ground truth.

* ``nas profile`` times every component signature of a space on a device (locally,
  or on a Ray cluster node with ``--address``/``RAY_ADDRESS``) into a table;
* ``nas latency`` predicts an arch's latency from a table (``--breakdown`` per
  component); ``nas latency merge A B --out C`` joins two tables;
* ``nas measure`` times the arch's standalone model end to end, the same way.
"""
from __future__ import annotations

import argparse
import os
import time

from nas.arch import canonicalize, load_arch
from nas.errors import NasError
from nas.latency.archs import read_archs
from nas.latency.device import DeviceSpec, describe_device
from nas.latency.measure import Timing, measure_arch
from nas.latency.profile import profile_space
from nas.latency.table import LatencyTable, merge_tables
from nas.space import load_space


def _device_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--device", default="cpu" if required else None,
                   help="cpu, cuda or cuda:INDEX" + (" (default cpu)" if required else ""))
    p.add_argument("--batch-size", type=int, default=1, help="images per forward (default 1)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16 or bf16 (default fp32)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads while timing (default: torch's current setting)")


def _timing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-run-time", type=float, default=0.1,
                   help="seconds of timed calls per measurement (default 0.1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    p.add_argument("--clock", default="auto",
                   help="auto (default: CPU time of the timing thread on CPU with --threads 1, "
                        "so time lost to other jobs is not counted; wall time otherwise), wall "
                        "or thread")
    p.add_argument("--stat", default="min",
                   help="statistic over timed ~1 ms blocks: min (default; robust to other "
                        "jobs on the CPU) or median")
    p.add_argument("--rounds", type=int, default=3,
                   help="time every item this many times, round after round, keeping its "
                        "fastest round (default 3; robust to slowdowns lasting seconds)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure a latency lookup table for a space on a device")
    p.add_argument("--space", required=True, help="search space YAML file or shipped name")
    _device_args(p)
    _timing_args(p)
    p.add_argument("--calibrate", type=int, default=30, metavar="N",
                   help="random subnets timed end to end to calibrate the sum (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subnets")
    p.add_argument("--archs", nargs="+", action="extend", default=None, metavar="FILE",
                   help="profile only the signatures these archs need (YAML/JSON files: one "
                        "arch, a list, several YAML documents, or JSON lines)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address; measure on a cluster node (default: RAY_ADDRESS, "
                        "else locally)")
    p.add_argument("--out", required=True, help="table file (JSON); an existing one is resumed")
    p.add_argument("--max-entries", type=int, default=None, metavar="K",
                   help="stop after K new entries (resume later by rerunning)")
    p.add_argument("--max-signatures", type=int, default=20000,
                   help="refuse spaces with more signatures (default 20000; use --archs)")
    p.add_argument("--recalibrate", action="store_true",
                   help="time the calibration subnets of an existing --out again and refit")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing --out of another space or device")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--allow-busy", action="store_true",
                   help="time even when other processes keep the machine busy (refused by "
                   "default: such a table predicts too slow); the table records it")
    p.set_defaults(func=_profile)

    q = sub.add_parser("latency", help="predict latency from a table (or: latency merge A B)")
    q.add_argument("action", nargs="?", default="predict", choices=("predict", "merge"),
                   help="predict (default), or merge tables")
    q.add_argument("tables", nargs="*", help="merge: the tables to merge")
    q.add_argument("--table", help="predict: the latency table (JSON)")
    q.add_argument("--arch", help="predict: arch YAML/JSON file, or inline YAML/JSON")
    q.add_argument("--space", help="check the table belongs to this space")
    q.add_argument("--breakdown", action="store_true", help="latency of every component")
    q.add_argument("--force", action="store_true",
                   help="use a table of another space or device anyway")
    q.add_argument("--out", help="merge: output table")
    _device_args(q, required=False)
    q.set_defaults(func=_latency)

    m = sub.add_parser("measure", help="time an arch's standalone model end to end")
    m.add_argument("--arch", required=True, help="arch YAML/JSON file, or inline YAML/JSON")
    m.add_argument("--space", required=True, help="search space YAML file or shipped name")
    _device_args(m)
    _timing_args(m)
    m.add_argument("--table", help="also print the table's prediction")
    m.set_defaults(func=_measure)


def _profile(args) -> int:
    space = load_space(args.space)
    archs = None
    if args.archs:
        archs = [a for path in args.archs for a in read_archs(path)]
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    t0 = time.perf_counter()
    table = profile_space(
        space, out=args.out, device=args.device, batch_size=args.batch_size, dtype=args.dtype,
        threads=args.threads, calibrate=args.calibrate, archs=archs, seed=args.seed,
        min_run_time=args.min_run_time, warmup=args.warmup, stat=args.stat, clock=args.clock,
        rounds=args.rounds, address=address,
        max_entries=args.max_entries, max_signatures=args.max_signatures,
        recalibrate=args.recalibrate, progress=not args.quiet,
        force=args.force, allow_busy=args.allow_busy or None)
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
    fit = (table.calibration or {}).get("fit") or {}
    if table.complete and fit.get("n"):
        loo = f", leave-one-out MAPE {fit['loo_mape']:.2f}%" if "loo_mape" in fit else ""
        print(f"calibrated on {fit['n']} subnets: fit MAPE {fit['fit_mape']:.2f}%{loo} "
              f"(raw sum MAPE {fit['raw_mape']:.2f}%)")
    return 0


def _spec(args) -> DeviceSpec | None:
    if args.device is None:
        return None
    return DeviceSpec.parse(args.device, dtype=args.dtype, batch_size=args.batch_size,
                            threads=args.threads)


def _latency(args) -> int:
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


def _measure(args) -> int:
    space = load_space(args.space)
    arch = canonicalize(space, load_arch(args.arch))
    table = LatencyTable.load(args.table, space=space) if args.table else None
    ms = measure_arch(arch, space, device=args.device, batch_size=args.batch_size,
                      dtype=args.dtype, threads=args.threads, min_run_time=args.min_run_time,
                      warmup=args.warmup, stat=args.stat, clock=args.clock, rounds=args.rounds)
    spec = DeviceSpec.parse(args.device, dtype=args.dtype, batch_size=args.batch_size,
                            threads=args.threads).resolve()
    clock = Timing(clock=args.clock).resolve(spec).clock
    print(f"measured   {ms:.4f} ms ({spec.device}, {spec.dtype}, batch {spec.batch_size}, "
          f"{spec.threads} threads, {args.stat} over timed blocks, {clock} clock)")
    if table is not None:
        pred = table.predict_one(arch)
        print(f"predicted  {pred:.4f} ms ({100 * (pred - ms) / ms:+.1f}%)")
    return 0
