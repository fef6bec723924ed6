"""``nas export``: write a searched subnet as a standalone model directory.

Implementation: :mod:`nas.cli._export`.
"""
from __future__ import annotations

import argparse

from nas.cli._lazy import lazy

# nas.export.formats.FORMATS, named here so that --help loads no torch (a test keeps them equal)
FORMAT_NAMES = ("safetensors", "onnx", "pt2", "torchscript")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a subnet as a standalone model (safetensors [+ onnx/pt2/ts])",
        description="Extract ARCH from the supernet of RUN_DIR (BatchNorm recalibrated), or "
        "the arch a standalone run (nas train --arch) trained, "
        "optionally fine-tune it with distillation, fold BatchNorm, fuse attention "
        "projections, and write OUT/config.json, OUT/model.safetensors, the requested "
        "graph formats (each verified) and a model card, atomically.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory of nas train")
    p.add_argument("--arch",
                   help="arch YAML/JSON file (e.g. a search's best.yaml), a search run dir, "
                   "or inline YAML/JSON (not needed for a standalone run of nas train --arch)")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to create")
    p.add_argument("--formats", default="safetensors,onnx",
                   help=f"comma-separated subset of {', '.join(FORMAT_NAMES)} (default: "
                   "safetensors,onnx; safetensors is always written)")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                   help="epochs of distillation from the largest subnet (default 0)")
    p.add_argument("--table", default=None,
                   help="latency table: the predicted latency, the timing setting, and 3 of "
                   "its calibration subnets timed beside the model to spot a slow phase")
    p.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="keep BatchNorm layers (default: fold them into linears/convs)")
    p.add_argument("--no-fuse", dest="fuse_qkv", action="store_false",
                   help="keep separate q/k/v projections (default: fuse them)")
    p.add_argument("--no-measure", dest="measure", action="store_false",
                   help="skip timing the model on this machine")
    p.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="skip validation accuracy")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that nas export wrote (never anything else)")
    p.add_argument("--seed", type=int, default=0, help="seed of fine-tuning (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=lazy("nas.cli._export:export"))
