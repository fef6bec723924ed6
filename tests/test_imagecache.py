"""Tests for nas.imagecache: decode once, cache on disk, archives, and what is never trusted."""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from nas import imagecache
from nas.data import augment_batch, load_dataset, subset_indices
from nas.errors import DataError
from nas.imagecache import load_image_cache

from .conftest import CIFAR_ARCHIVE

CLASSES = ("cat", "dog", "emu")


def _png(rng: np.random.Generator, w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _files(n_per_class: int = 3, seed: int = 0) -> dict[str, bytes]:
    """Relative path -> PNG bytes of a small train/val tree (sizes vary: resize + crop)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_per_class), ("val", 2)):
        for c in CLASSES:
            for i in range(n):
                out[f"{split}/{c}/{i:03d}.png"] = _png(rng, 9 + 3 * i, 12)
    return out


def _folder(root, files):
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _archive(path, files, prefix="", mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(autouse=True)
def _fresh_memo():
    imagecache._MEMO.clear()
    yield
    imagecache._MEMO.clear()


def _equal(a, b) -> bool:
    return a.classes == b.classes and all(
        torch.equal(a.splits[s][0], b.splits[s][0]) and torch.equal(a.splits[s][1], b.splits[s][1])
        for s in ("train", "val"))


def test_folder_is_decoded_once_then_read_from_the_cache(tmp_path):
    src = _folder(tmp_path / "data", _files())
    first = load_image_cache(src, 8, root=tmp_path / "cache")
    assert first.decode_s is not None and first.path.is_file()
    assert first.classes == list(CLASSES)
    x, y = first.splits["train"]
    assert x.dtype == torch.uint8 and x.shape == (9, 3, 8, 8) and y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert first.splits["val"][0].shape == (6, 3, 8, 8)
    imagecache._MEMO.clear()
    again = load_image_cache(src, 8, root=tmp_path / "cache")
    assert again.decode_s is None and _equal(first, again)  # read back, not decoded


def test_pixels_match_a_plain_decode(tmp_path):
    files = _files()
    src = _folder(tmp_path / "data", files)
    cache = load_image_cache(src, 12, root=tmp_path / "cache")
    # val/cat/001.png is 12x12 already: stored as is
    want = np.array(Image.open(io.BytesIO(files["val/cat/001.png"])).convert("RGB"))
    assert torch.equal(cache.splits["val"][0][1], torch.from_numpy(want).permute(2, 0, 1))


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:xz", ".tar.xz")])
def test_archive_gives_the_same_dataset_as_the_folder(tmp_path, mode, suffix):
    files = _files()
    folder = load_image_cache(_folder(tmp_path / "data", files), 8, root=tmp_path / "c1")
    archive = _archive(tmp_path / f"data{suffix}", files, prefix="cifar-like/", mode=mode)
    packed = load_image_cache(archive, 8, root=tmp_path / "c2")
    assert _equal(folder, packed)


def test_changed_file_rebuilds_the_cache(tmp_path):
    src = _folder(tmp_path / "data", _files())
    first = load_image_cache(src, 8, root=tmp_path / "cache")
    (src / "val" / "dog" / "000.png").write_bytes(_files(seed=1)["val/dog/000.png"])
    imagecache._MEMO.clear()
    second = load_image_cache(src, 8, root=tmp_path / "cache")
    assert second.decode_s is not None and second.path != first.path
    assert not torch.equal(first.splits["val"][0], second.splits["val"][0])


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupted_cache_is_rebuilt_not_trusted(tmp_path, capsys, damage):
    src = _folder(tmp_path / "data", _files())
    good = load_image_cache(src, 8, root=tmp_path / "cache")
    raw = bytearray(good.path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[-5] ^= 0xFF  # a pixel of the last tensor: only the checksum can tell
    else:
        raw = bytearray(b"\x00" * 64)
    good.path.write_bytes(bytes(raw))
    imagecache._MEMO.clear()
    again = load_image_cache(src, 8, root=tmp_path / "cache")
    assert again.decode_s is not None and _equal(good, again)
    assert "corrupted" in capsys.readouterr().err
    imagecache._MEMO.clear()
    assert load_image_cache(src, 8, root=tmp_path / "cache").decode_s is None  # repaired


def test_cache_file_has_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        cache = load_image_cache(_folder(tmp_path / "data", _files()), 8, root=tmp_path / "c")
    finally:
        os.umask(old)
    assert oct(cache.path.stat().st_mode & 0o777) == oct(0o644)


def test_corrupt_jpeg_is_named_in_one_line(tmp_path):
    files = _files()
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG")
    files["train/dog/bad.jpg"] = buf.getvalue()[: len(buf.getvalue()) // 3]  # truncated
    for source in (_folder(tmp_path / "data", files), _archive(tmp_path / "d.tar.gz", files)):
        imagecache._MEMO.clear()
        with pytest.raises(DataError, match=r"cannot decode image .*train/dog/bad\.jpg") as e:
            load_image_cache(source, 8, root=tmp_path / "cache")
        assert "\n" not in str(e.value)


def test_archive_that_is_not_an_image_archive(tmp_path):
    junk = tmp_path / "junk.tar.xz"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(DataError, match="cannot read archive .*junk.tar.xz"):
        load_image_cache(junk, 8, root=tmp_path / "c")
    text = tmp_path / "text.tar.gz"
    _archive(text, {"README": b"hello", "docs/notes.txt": b"words"})
    with pytest.raises(DataError, match="no images found under .*text.tar.gz"):
        load_image_cache(text, 8, root=tmp_path / "c")
    other = tmp_path / "data.zip"
    other.write_bytes(b"PK")
    with pytest.raises(DataError, match="neither a folder nor an archive"):
        load_image_cache(other, 8, root=tmp_path / "c")


def test_layout_errors_are_clear(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(_files()["train/cat/000.png"])
    with pytest.raises(DataError, match="not inside a class folder .*expected .*train/<class>"):
        load_image_cache(flat, 8, root=tmp_path / "c")
    only_train = {k: v for k, v in _files().items() if k.startswith("train/")}
    with pytest.raises(DataError, match="has train/ but no val/"):
        load_image_cache(_archive(tmp_path / "t.tar", only_train, mode="w"), 8,
                         root=tmp_path / "c")


def test_imagefolder_dataset_trains_from_memory(tmp_path):
    src = _archive(tmp_path / "d.tar.gz", _files())
    ds = load_dataset(f"imagefolder:{src}", split="train", image_size=8)
    x, y = ds.batch(torch.tensor([0, 4]))
    assert x.dtype == torch.float32 and x.shape == (2, 3, 8, 8) and y.tolist() == [0, 1]
    assert torch.allclose(x[1], ds[4][0])


def test_subset_indices_is_fixed_and_balanced():
    labels = torch.arange(1000) // 100  # a class-sorted folder of 10 classes
    idx = subset_indices(1000, 300)
    assert torch.equal(idx, subset_indices(1000, 300)) and len(idx) == 300
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 300
    counts = labels[idx].bincount(minlength=10)
    assert counts.min() >= 15  # every class present in proportion, not the first 3 classes
    assert torch.equal(subset_indices(50, 0), torch.arange(50))
    assert torch.equal(subset_indices(50, 80), torch.arange(50))


def test_hflip_mirrors_about_half_the_images():
    x = torch.arange(64 * 3 * 4 * 4, dtype=torch.float32).view(64, 3, 4, 4)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = augment_batch(x, generator=g1, max_shift=0, hflip=True)
    assert torch.equal(out, augment_batch(x, generator=g2, max_shift=0, hflip=True))
    flipped = [bool(torch.equal(o, xi.flip(-1))) for o, xi in zip(out, x)]
    kept = [bool(torch.equal(o, xi)) for o, xi in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept)) and 16 < sum(flipped) < 48
    # without hflip the result (and the generator's draws) are those of before
    g3, g4 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(augment_batch(x, generator=g3, max_shift=1),
                       augment_batch(x, generator=g4, max_shift=1, hflip=False))


@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason="../shared/data/cifar10-jpeg.tar.xz "
                    "is not beside this checkout")
def test_a_few_hundred_cifar10_jpegs_from_the_shared_archive(tmp_path):
    """300 real CIFAR-10 JPEGs repacked as a small archive: decoded at 32x32, 10 classes."""
    picked: dict[str, bytes] = {}
    per_class: dict[tuple[str, str], int] = {}
    with tarfile.open(CIFAR_ARCHIVE, "r|xz") as tar:
        for m in tar:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 3:
                continue
            want = 20 if parts[0] == "train" else 10
            if per_class.get((parts[0], parts[1]), 0) < want:
                per_class[(parts[0], parts[1])] = per_class.get((parts[0], parts[1]), 0) + 1
                picked[m.name] = tar.extractfile(m).read()
            if len(picked) == 300:
                break
    cache = load_image_cache(_archive(tmp_path / "c.tar.gz", picked), 32, root=tmp_path / "c")
    assert len(cache.classes) == 10 and cache.classes[0] == "airplane"
    x, y = cache.splits["train"]
    assert x.shape == (200, 3, 32, 32) and y.bincount().tolist() == [20] * 10
    assert 60 < x.float().mean() < 180  # real photographs, not blank


def test_decompression_bomb_is_one_error_line(tmp_path, monkeypatch):
    files = _files()
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    files["train/cat/huge.png"] = buf.getvalue()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: a "bomb" here
    with pytest.raises(DataError, match=r"cannot decode image .*huge\.png: .*(pixels|bomb)"):
        load_image_cache(_folder(tmp_path / "data", files), 8, root=tmp_path / "c")
