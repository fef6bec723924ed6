"""``nas space``: validate, show and sample search spaces."""
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="validate, show and sample search spaces")
    s = p.add_subparsers(dest="space_command", metavar="ACTION")
    s.required = True
    v = s.add_parser("validate", help="check a search-space YAML file")
    v.add_argument("file", help="YAML file, or the name of a shipped space (tiny32, imagenet224...)")
    v.set_defaults(func=_validate)
    sh = s.add_parser("show", help="dimensions, size and fingerprint of a space")
    sh.add_argument("file")
    sh.add_argument("--json", action="store_true", help="print the canonical form as JSON")
    sh.set_defaults(func=_show)
    sa = s.add_parser("sample", help="sample random architectures (YAML documents)")
    sa.add_argument("file")
    sa.add_argument("-n", type=int, default=1, help="how many (default 1)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--format", choices=("yaml", "json"), default="yaml")
    sa.set_defaults(func=_sample)


def _validate(args) -> int:
    space = load_space(args.file)
    print(f"ok: {space.name} ({space.source}): {len(space.stages)} stages, "
          f"{count_archs(space):.3g} architectures, fingerprint {space.fingerprint}")
    return 0


def _show(args) -> int:
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


def _sample(args) -> int:
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
