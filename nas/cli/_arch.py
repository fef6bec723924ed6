"""What ``nas arch`` does (its flags: :mod:`nas.cli.arch`)."""
from __future__ import annotations

import argparse

from nas.arch import load_arch, space_contains
from nas.complexity import count_macs, count_params
from nas.errors import ArchError
from nas.model.shapes import stage_grids
from nas.space import load_space


def info(args: argparse.Namespace) -> int:
    """``nas arch info``: params, MACs, token grids and whether the arch is in the space."""
    space = load_space(args.space)
    arch = load_arch(args.arch)
    ok, reason = space_contains(space, arch)
    kw = {"num_classes": space.num_classes, "in_chans": space.in_chans}
    if len(arch.stages) != len(space.stages):
        raise ArchError(reason)
    print(f"space       {space.name} ({space.fingerprint})")
    print(f"in space    {'yes' if ok else 'no: ' + reason}")
    print(f"params      {count_params(arch, **kw):,}")
    print(f"MACs        {count_macs(arch, **kw):,}")
    grids = ", ".join(f"{h}x{w}" for h, w in stage_grids(arch))
    print(f"token grids {grids}")
    for i, s in enumerate(arch.stages):
        print(f"stage {i}     depth {s.depth}, dim {s.embed_dim}, mixer {s.mixer}"
              + (f" ({s.pattern})" if s.mixer == "attention" else "")
              + (f", keep {s.keep_ratio} ({s.reduce_method})" if s.keep_ratio < 1 else ""))
    return 0 if ok else 2
