"""``nas eval``: top-1 accuracy and loss of subnets with weights inherited from a trained supernet."""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from nas.arch import Arch, canonicalize, extreme_arch, load_arch, sample_arch
from nas.complexity import count_params
from nas.io import check_output_file, write_text

_REFERENCES = {"largest": "max", "smallest": "min"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate subnets of a trained supernet",
        description="Evaluate subnets with inherited weights on the validation split of the "
        "run's dataset (BatchNorm subnets are recalibrated on training images first).")
    p.add_argument("--run", required=True, type=Path, metavar="RUN_DIR", help="nas train run dir")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="arch YAML/JSON file or inline YAML/JSON")
    which.add_argument("--sample", type=int, metavar="N", help="N random subnets")
    which.add_argument("--reference", choices=tuple(_REFERENCES), help="largest or smallest subnet")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--refit-head", action="store_true",
                   help="refit each subnet's classifier on its features of the training split "
                   "first (the rest keeps the inherited weights); ranks subnets closer to "
                   "training them alone (bench/bench_ranking.py)")
    p.add_argument("--out", type=Path, metavar="CSV", help="also write the table as CSV")
    p.set_defaults(func=_eval)


def _archs(args: argparse.Namespace, space) -> list[tuple[str, Arch]]:
    if args.arch is not None:
        return [("arch", canonicalize(space, load_arch(args.arch)))]
    if args.reference is not None:
        return [(args.reference, extreme_arch(space, _REFERENCES[args.reference]))]
    if args.sample < 1:
        raise ValueError(f"--sample must be >= 1, got {args.sample}")
    rng = np.random.default_rng(args.seed)
    return [(f"sample{i}", sample_arch(space, rng)) for i in range(args.sample)]


def _eval(args: argparse.Namespace) -> int:
    from nas.errors import ArchError
    from nas.training import evaluate, load_run, load_run_calib_data, load_val_data

    if args.batch_size < 1:
        raise ArchError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out is not None:
        check_output_file(args.out)  # before the evaluation, not after it
    run = load_run(args.run, device=args.device)
    try:
        archs = _archs(args, run.space)
    except ValueError as e:
        raise ArchError(str(e)) from None
    for _, arch in archs:
        run.check_arch(arch)
    x, y = load_val_data(run.config)
    calib = None
    if "batchnorm" in {n for s in run.space.stages for n in s.norm} and run.arch is None:
        calib = (load_run_calib_data(run.config),)
    refit = load_val_data(run.config, split="train") if args.refit_head else None
    kw = {"num_classes": run.space.num_classes, "in_chans": run.space.in_chans}
    rows = []
    for name, arch in archs:
        res = evaluate(run.supernet, arch, x, y, batch_size=args.batch_size, calibrate=calib,
                       refit=refit)
        rows.append({"name": name, "acc": res["acc"], "loss": res["loss"],
                     "params": count_params(arch, **kw), "arch": arch.to_json()})
    print(f"run {run.run_dir} ({run.space.name} {run.space.fingerprint}, epoch {run.epoch}), "
          f"{len(y)} validation images of {run.config['data']}"
          + (", classifiers refit on the training split" if refit else ""))
    print(f"{'subnet':<12} {'top-1':>8} {'loss':>8} {'params':>10}")
    for r in rows:
        print(f"{r['name']:<12} {100 * r['acc']:>7.2f}% {r['loss']:>8.4f} {r['params']:>10,}")
    if args.out is not None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(args.out, buf.getvalue())
        print(f"wrote {args.out}")
    return 0
