"""What ``nas eval`` does (its flags: :mod:`nas.cli.eval`)."""
from __future__ import annotations

import argparse
import csv
import io

import numpy as np

from nas.arch import Arch, canonicalize, extreme_arch, load_arch, sample_arch
from nas.cli.eval import REFERENCES
from nas.complexity import count_params
from nas.errors import ArchError
from nas.io import check_output_file, write_text
from nas.training import evaluate as evaluate_subnet
from nas.training import load_run, load_run_calib_data, load_val_data


def _archs(args: argparse.Namespace, space) -> list[tuple[str, Arch]]:
    if args.arch is not None:
        return [("arch", canonicalize(space, load_arch(args.arch)))]
    if args.reference is not None:
        return [(args.reference, extreme_arch(space, REFERENCES[args.reference]))]
    if args.sample < 1:
        raise ValueError(f"--sample must be >= 1, got {args.sample}")
    rng = np.random.default_rng(args.seed)
    return [(f"sample{i}", sample_arch(space, rng)) for i in range(args.sample)]


def evaluate(args: argparse.Namespace) -> int:
    """``nas eval``: evaluate the chosen subnets of a run and print (and write) the table."""
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
        res = evaluate_subnet(run.supernet, arch, x, y, batch_size=args.batch_size, calibrate=calib,
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
