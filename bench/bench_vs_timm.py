"""Exported reference architectures vs timm's implementations of the same models (CPU).

For each reference arch of ``search_spaces/reference/`` (EfficientViT-M0, DeiT-Tiny,
PoolFormer-S12, PVTv2-B0) the standalone model (random weights, random BatchNorm
statistics) goes through the real export path: the inference rewrites ``nas export``
would keep on this machine at this batch size and thread count
(``nas.export.timing.decide_rewrites``, timed here), ``write_model_dir``, then ``nas.load_model``. It
is timed beside ``timm.create_model(<name>)`` in one process: same thread count (1 by
default, see ``--threads``), same input, interleaved repeats (every repeat times each
model once, in rotating order), median over repeats of the wall time and of the
thread CPU time. ``timm+reparam`` is timm's own inference fusion
(``timm.utils.reparameterize_model``; it folds EfficientViT's conv/linear + BatchNorm
pairs), the stricter baseline; a second copy of it timed in the same rotation gives
the noise floor of every ratio. Target: ours/timm+reparam <= 1.0.
Writes ``bench/results/vs_timm_cpu.md`` (``--out`` names another file there).

    python bench/bench_vs_timm.py                      # batch 1 and 16, 1 thread
    python bench/bench_vs_timm.py --threads 1,2        # also 2 threads, on an idle machine
    python bench/bench_vs_timm.py --repeats 5 --models deit_tiny --batches 1
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import yaml
from timm.utils.model import reparameterize_model
from torch.nn.modules.batchnorm import _BatchNorm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_result  # noqa: E402

from nas.arch import canonicalize, load_arch  # noqa: E402
from nas.export import ModelConfig, load_model, optimize_for_inference  # noqa: E402
from nas.export.config import preprocessing_for  # noqa: E402
from nas.export.model_dir import write_model_dir  # noqa: E402
from nas.export.timing import decide_rewrites, rewrite_name  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.space import load_space  # noqa: E402

REF = Path(__file__).resolve().parent.parent / "search_spaces" / "reference"
ORDER = ("efficientvit_m0", "deit_tiny", "poolformer_s12", "pvt_v2_b0")


def exported(name: str, folder: Path, *, batch: int = 1, threads: int = 1
             ) -> tuple[torch.nn.Module, str, str]:
    """Our model of reference ``name`` with the rewrites ``nas export`` keeps on this
    machine at ``batch`` and ``threads`` (chosen, then checked side by side against none),
    written and loaded back as an exported directory; its timm name; the kept rewrites."""
    space = load_space("imagenet224")
    meta = yaml.safe_load((REF / f"{name}.yaml").read_text())
    arch = canonicalize(space, load_arch(REF / f"{name}.yaml"))
    torch.manual_seed(0)
    model = build_model(arch, num_classes=1000).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial statistics, so folding is really exercised
        if isinstance(m, _BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    allowed = {"fold_bn": True, "fuse_qkv": True, "onednn_linears": True}
    device = {"batch_size": batch, "threads": threads}
    flags = decide_rewrites(model, arch, allowed, in_chans=3, device=device).flags
    config = ModelConfig(arch=arch, num_classes=1000, in_chans=3, space_name=space.name,
                         space_fingerprint=space.fingerprint,
                         preprocessing=preprocessing_for("imagefolder:.", arch.resolution),
                         bn_folded=flags["fold_bn"], qkv_fused=flags["fuse_qkv"],
                         onednn_linears=flags["onednn_linears"])
    write_model_dir(optimize_for_inference(model, **flags), config, folder / name)
    return load_model(folder / name), meta["timm"], rewrite_name(flags)


def time_models(models: dict[str, torch.nn.Module], x: torch.Tensor, repeats: int,
                warmup: int = 3) -> dict[str, dict[str, list[float]]]:
    """Per-call wall and thread-CPU times (ms) of each model, interleaved, rotating order."""
    names = list(models)
    times = {n: {"wall": [], "cpu": []} for n in names}
    with torch.inference_mode():
        for n in names:
            for _ in range(warmup):
                models[n](x)
        for r in range(repeats):
            for n in names[r % len(names):] + names[:r % len(names)]:
                c0, t0 = time.thread_time(), time.perf_counter()
                models[n](x)
                times[n]["wall"].append((time.perf_counter() - t0) * 1e3)
                times[n]["cpu"].append((time.thread_time() - c0) * 1e3)
    return times


def table(names: list[str], batches: list[int], threads: int, repeats: int, tmp: Path
          ) -> tuple[list[str], dict[str, float]]:
    """Markdown rows of one thread setting, and its worst ratios (wall time)."""
    torch.set_num_threads(threads)
    cpu_col = threads == 1  # the thread clock sees all the work only with one thread
    rows = [f"\n### {threads} thread{'s' if threads > 1 else ''}\n",
            "| model | timm name | batch | rewrites kept | ours (ms) | timm (ms) "
            "| timm+reparam (ms) | ours/timm | ours/timm+reparam | noise floor |"
            + (" ours/timm+reparam, CPU time |" if cpu_col else ""),
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if cpu_col else "")]
    worst = {"ours/timm": 0.0, "ours/timm+reparam": 0.0, "noise floor": 0.0}
    for name in names:
        for bs in batches:
            ours, timm_name, kept = exported(name, tmp / f"{name}-{threads}-{bs}", batch=bs,
                                             threads=threads)
            theirs = timm.create_model(timm_name).eval()
            fused = reparameterize_model(theirs)
            models = {"ours": ours, "timm": theirs, "timm+reparam": fused,
                      "again": copy.deepcopy(fused)}  # same model, second copy: noise floor
            x = torch.randn(bs, 3, 224, 224, generator=torch.Generator().manual_seed(bs))
            t = time_models(models, x, repeats)
            med = {k: statistics.median(v["wall"]) for k, v in t.items()}
            cpu = {k: statistics.median(v["cpu"]) for k, v in t.items()}
            ratio = {"ours/timm": med["ours"] / med["timm"],
                     "ours/timm+reparam": med["ours"] / med["timm+reparam"],
                     "noise floor": abs(med["again"] / med["timm+reparam"] - 1.0)}
            worst = {k: max(worst[k], ratio[k]) for k in worst}
            rows.append(f"| {name} | {timm_name} | {bs} | {kept} | {med['ours']:.2f} "
                        f"| {med['timm']:.2f} | {med['timm+reparam']:.2f} "
                        f"| {ratio['ours/timm']:.3f} | {ratio['ours/timm+reparam']:.3f} "
                        f"| {100 * ratio['noise floor']:.1f}% |"
                        + (f" {cpu['ours'] / cpu['timm+reparam']:.3f} |" if cpu_col else ""))
            print(rows[-1], flush=True)
    load = os.getloadavg()
    rows.append(f"\nworst ours/timm+reparam (wall): {worst['ours/timm+reparam']:.3f}, worst "
                f"ours/timm {worst['ours/timm']:.3f}, largest noise floor "
                f"{100 * worst['noise floor']:.1f}%; load average (1/5/15 min) after this "
                f"table: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} cores")
    return rows, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ORDER))
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--threads", default="1",
                    help="thread counts, one table each (default 1; on a CPU shared with other "
                    "jobs, multi-threaded wall times mostly measure the scheduler)")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--out", default="vs_timm_cpu.md", help="result file under bench/results")
    args = ap.parse_args()
    rows, worst = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (int(t) for t in args.threads.split(",")):
            part, w = table(args.models.split(","), [int(b) for b in args.batches.split(",")],
                            threads, args.repeats, Path(tmp))
            rows += part
            worst = {k: max(worst.get(k, 0.0), v) for k, v in w.items()}
    note = (f"\nWall time: median of {args.repeats} interleaved single-call timings per cell "
            "(every repeat times each model once, rotating the order), after 3 warm-up calls, "
            "the same thread count for every model. Noise floor: |again/timm+reparam - 1|, "
            "where `again` is a second copy of timm+reparam timed in the same rotation. The "
            "CPU-time column (1 thread: median thread CPU time) does not count time lost to "
            "other jobs. Ours: the exported model with the rewrites `nas export` keeps on this "
            "machine at this batch size (`choose_rewrite_set`: BatchNorm folding, fused "
            "attention, oneDNN linears with prepacked weights; every subset timed in "
            "interleaved rounds, each rewrite kept if the median of its paired ratios, with "
            "/ without it in the same round, is below 0.98; then the kept set side by side "
            "with none), written and loaded back with "
            "`nas.load_model`; random weights. timm+reparam: `timm.utils.reparameterize_model` "
            "(timm's own BatchNorm folding).\n"
            f"\n**worst ours/timm+reparam: {worst['ours/timm+reparam']:.3f}**, worst ours/timm: "
            f"{worst['ours/timm']:.3f} (target <= 1.0); largest noise floor "
            f"{100 * worst['noise floor']:.1f}%\n")
    text = header("Exported reference archs vs timm (CPU latency)") + "\n".join(rows) + "\n" + note
    print(note)
    print(f"written to {write_result(args.out, text)}")


if __name__ == "__main__":
    main()
