"""What ``nas space`` does (its flags: :mod:`nas.cli.space`)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import yaml

from nas.arch import effective_mixers, extreme_arch, sample_arch
from nas.complexity import count_macs, count_params
from nas.encoding import count_archs
from nas.errors import NasError
from nas.space import GLOBAL_DIMS, STAGE_DIMS, load_space


def validate(args: argparse.Namespace) -> int:
    """``nas space validate``: parse the space and print its size and fingerprint."""
    space = load_space(args.file)
    print(f"ok: {space.name} ({space.source}): {len(space.stages)} stages, "
          f"{count_archs(space):.3g} architectures, fingerprint {space.fingerprint}")
    return 0


def show(args: argparse.Namespace) -> int:
    """``nas space show``: dimensions, size, extreme archs and fingerprint of a space."""
    space = load_space(args.file)
    if args.json:
        print(json.dumps(space.to_dict(), indent=2))
        return 0
    print(f"space        {space.name}")
    if space.description:
        print(f"description  {space.description}")
    print(f"source       {space.source}")
    print(f"fingerprint  {space.fingerprint}")
    print(f"classes      {space.num_classes} (in_chans {space.in_chans})")
    print(f"size         {count_archs(space):,} architectures")
    for which in ("min", "max"):
        a = extreme_arch(space, which)
        kw = {"num_classes": space.num_classes, "in_chans": space.in_chans}
        print(f"{which}imal arch  {count_params(a, **kw) / 1e6:.3f} M params, "
              f"{count_macs(a, **kw) / 1e6:.1f} M MACs")
    for d in GLOBAL_DIMS:
        print(f"  {d.name:18s} {list(getattr(space, d.name))}")
    for i, st in enumerate(space.stages):
        print(f"stage {i}")
        for d in STAGE_DIMS:
            ch = effective_mixers(st) if d.name == "mixer" else st.choices(d.name)
            if len(ch) > 1 or d.name in ("depth", "embed_dim", "mixer", "stride"):
                print(f"  {d.name:18s} {list(ch)}")
    fixed = sorted(d.name for d in STAGE_DIMS
                   if all(len(st.choices(d.name)) == 1 for st in space.stages))
    print(f"fixed in every stage: {', '.join(fixed) or 'none'}")
    return 0


def sample(args: argparse.Namespace) -> int:
    """``nas space sample``: random archs of the space as YAML documents or JSON lines."""
    if args.n < 1:
        raise NasError(f"-n must be >= 1, got {args.n}")
    space = load_space(args.file)
    rng = np.random.default_rng(args.seed)
    archs = [sample_arch(space, rng) for _ in range(args.n)]
    if args.format == "json":
        for a in archs:
            print(a.to_json())
    else:
        print(yaml.safe_dump_all([a.to_dict() for a in archs], sort_keys=False,
                                 default_flow_style=None), end="")
    return 0
