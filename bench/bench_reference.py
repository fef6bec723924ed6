"""Reference architectures as points of the imagenet224 space vs their timm models.

Prints (and writes ``bench/results/reference_params.md``) the parameter count of the
extracted model of each reference arch (1000 classes) next to
``timm.create_model(<name>)``, with MACs and a forward check. Target: within 2%.

    python bench/bench_reference.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import timm
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_result  # noqa: E402

from nas.arch import canonicalize, load_arch  # noqa: E402
from nas.complexity import count_macs, count_params  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.space import load_space  # noqa: E402

REF = Path(__file__).resolve().parent.parent / "search_spaces" / "reference"


def main() -> None:
    torch.set_num_threads(2)
    space = load_space("imagenet224")
    rows = ["| reference | timm model | ours params | timm params | ratio | ours MACs (G) "
            "| forward |", "|---|---|---:|---:|---:|---:|---|"]
    for path in sorted(REF.glob("*.yaml")):
        meta = yaml.safe_load(path.read_text())
        if meta.get("space") != "imagenet224" or "timm" not in meta:
            continue  # the small points of cifar32 have no timm twin
        arch = canonicalize(space, load_arch(path))
        ours = count_params(arch, num_classes=1000)
        with torch.device("meta"):
            theirs = sum(p.numel() for p in timm.create_model(meta["timm"]).parameters())
        macs = count_macs(arch, num_classes=1000)
        model = build_model(arch, num_classes=1000).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 224, 224))
        ok = "ok" if out.shape == (1, 1000) and torch.isfinite(out).all() else "FAILED"
        rows.append(f"| {path.stem} | {meta['timm']} | {ours:,} | {theirs:,} | "
                    f"{ours / theirs:.4f} | {macs / 1e9:.3f} | {ok} |")
    text = header("Reference architectures vs timm (parameter counts)") + "\n".join(rows) + "\n"
    print(text)
    print(f"written to {write_result('reference_params.md', text)}")


if __name__ == "__main__":
    main()
