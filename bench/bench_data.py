"""Image-folder data: decode once, then train from memory (CIFAR-10 JPEG archive).

Measures, in one run on this machine: decoding the 60,000 JPEGs of the archive into a
fresh cache (the first ``imagefolder:`` use), loading that cache again (every later
process), one epoch of augmented training batches from memory (pad 4 + random crop +
flips, batch 128, no model: the data pipeline's own cost per epoch), and for scale the
same epoch read image by image through PIL as a decode-every-epoch loader would.

    python bench/bench_data.py [--archive ../shared/data/cifar10-jpeg.tar.xz]

Writes ``bench/results/data_cifar10_cpu.md``.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from common import header, write_result  # noqa: E402
from PIL import Image  # noqa: E402

from nas import imagecache  # noqa: E402
from nas.training import TrainConfig  # noqa: E402
from nas.training.batches import TrainBatches  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", type=Path,
                   default=ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not args.archive.is_file():
        raise SystemExit(f"archive not found: {args.archive}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cache = imagecache.load_image_cache(args.archive, 32, root=Path(tmp), verbose=False)
        decode = time.perf_counter() - t
        size_mb = cache.path.stat().st_size / 2**20
        imagecache._MEMO.clear()
        t = time.perf_counter()
        again = imagecache.load_image_cache(args.archive, 32, root=Path(tmp), verbose=False)
        load = time.perf_counter() - t
        assert again.decode_s is None
        n = {s: len(y) for s, (_, y) in cache.splits.items()}
        os.environ["NAS_CACHE_DIR"] = tmp
        cfg = TrainConfig(space="cifar32", data=f"imagefolder:{args.archive}", out=tmp,
                          batch_size=128, max_shift=4, hflip=True)
        batches = TrainBatches(cfg, image_size=32)
        t = time.perf_counter()
        seen = sum(len(y) for _, y in batches.epoch(torch.Generator().manual_seed(0), epoch=0))
        epoch = time.perf_counter() - t

    t, k = time.perf_counter(), 0
    with tarfile.open(args.archive, "r|xz") as tar:  # the baseline: decode every image
        for m in tar:
            if m.isfile() and m.name.endswith(".jpg"):
                with Image.open(io.BytesIO(tar.extractfile(m).read())) as im:
                    im.convert("RGB")
                k += 1
    per_epoch_decode = (time.perf_counter() - t) * n["train"] / k
    text = header("Image-folder data: decode once, train from memory (CIFAR-10 JPEG archive)")
    text += (f"- archive: `{args.archive.name}` ({args.archive.stat().st_size / 2**20:.1f} MiB), "
             f"{n['train']} train + {n['val']} val images at 32x32; {args.threads} thread(s)\n\n"
             "| step | seconds |\n|---|---:|\n"
             f"| decode every JPEG into a fresh cache (first use; cache {size_mb:.0f} MiB) | "
             f"{decode:.1f} |\n"
             f"| load the cache again (checked: format, key, shapes, checksum) | {load:.2f} |\n"
             f"| one epoch of augmented batches from memory ({seen} images, batch 128) | "
             f"{epoch:.2f} |\n"
             f"| for scale: decoding the {n['train']} train JPEGs once more (what a loader that "
             f"decodes every epoch pays per epoch, before augmentation) | {per_epoch_decode:.1f} |\n")
    print(text)
    print(f"wrote {write_result('data_cifar10_cpu.md', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
