"""What ``nas export`` does (its flags: :mod:`nas.cli.export`)."""
from __future__ import annotations

import argparse

from nas.errors import NasError
from nas.export import export_subnet


def export(args: argparse.Namespace) -> int:
    """``nas export``: extract, optionally fine-tune, optimise and write the model directory."""
    if args.finetune_epochs < 0:
        raise NasError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    res = export_subnet(args.run, args.arch, args.out, formats=args.formats,
                        finetune_epochs=args.finetune_epochs, fold_bn=args.fold_bn,
                        fuse_qkv=args.fuse_qkv, table=args.table, measure=args.measure,
                        evaluate=args.evaluate, overwrite=args.overwrite, seed=args.seed,
                        verbose=not args.quiet)
    m = res.config.metrics
    acc = f", val acc {m['val_acc']:.4f}" if "val_acc" in m else ""
    lat = m.get("latency_ms", {})
    ms = f", {lat['measured']:.3f} ms measured" if "measured" in lat else ""
    print(f"exported {res.out} ({m['params']:,} params{acc}{ms}; "
          f"{', '.join(['safetensors', *res.checks])})")
    return 0
