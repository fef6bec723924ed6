"""Decode-once cache of an image dataset (a folder tree or a tar archive) as uint8 tensors.

Sixty thousand small JPEGs cost more to decode than a small model costs to train on
them, so ``imagefolder:PATH`` decodes every image once (progress bar), keeps the
result on disk and trains from memory afterwards. The source is either

* a folder: ``PATH/train/<class>/*`` and ``PATH/val/<class>/*``, or a single
  ``PATH/<class>/*`` tree split 90/10 per class (every 10th file, counted from the last
  by sorted name, is val);
* an archive (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``/``.txz``, ``.tar.bz2``) holding
  the same layout, optionally under one top-level folder. It is streamed once, never
  extracted to disk.

Images are converted to RGB, resized (shorter side, antialiased) and center-cropped to
``S x S``, and stored as ``(N, 3, S, S)`` uint8 with int64 labels, both splits in one
safetensors file under the cache folder (``$NAS_CACHE_DIR`` or ``~/.cache/vitnas``,
``images/``). Its name is a key over the file list with sizes and mtimes (an archive:
its path, size and mtime), the image size and the format version, so a changed
dataset gets a new cache. The file is written atomically and checked when read
(format, key, shapes, labels and a BLAKE2 checksum of the tensors); a corrupted or
truncated cache is rebuilt, never trusted. Loading runs no code from the file.

Example:
    >>> cache = load_image_cache(Path("data/cifar10-jpeg.tar.xz"), 32)  # doctest: +SKIP
    >>> cache.classes[:2], cache.splits["train"][0].shape  # doctest: +SKIP
    (['airplane', 'automobile'], torch.Size([50000, 3, 32, 32]))
"""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import sys
import tarfile
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from nas.errors import ArtifactError, DataError
from nas.io import atomic_path

__all__ = ["ARCHIVE_SUFFIXES", "CACHE_FORMAT", "ImageCache", "cache_dir", "is_archive",
           "load_image_cache"]

CACHE_FORMAT = "vitnas-image-cache/1"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
SPLITS = ("train", "val")
_MEMO: dict[str, ImageCache] = {}  # key -> loaded cache (train and val are loaded separately)


@dataclass(frozen=True)
class ImageCache:
    """A decoded dataset: class names and, per split, ``(uint8 (N, 3, S, S), int64 (N,))``."""

    classes: list[str]
    splits: dict[str, tuple[Tensor, Tensor]]
    path: Path
    decode_s: float | None = None  # seconds spent decoding, when this call built the cache


def cache_dir() -> Path:
    """Root of vitnas's caches: ``$NAS_CACHE_DIR``, else ``~/.cache/vitnas``."""
    root = os.environ.get("NAS_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "vitnas"


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _clip(text: object, limit: int = 200) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------- layout


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


Tree = dict[str, dict[str, list[str]]]  # split -> class -> sorted source names


def _layout(names: list[str], where: str) -> Tree:
    """Split -> class -> the images' relative paths (sorted), from every image's path.

    ``train/<class>/...`` + ``val/<class>/...`` is used as is; a single ``<class>/...``
    tree is split 90/10. One leading folder shared by every path is skipped.
    """
    expected = (f"expected {where}/train/<class>/<image> and {where}/val/<class>/<image>, "
                f"or {where}/<class>/<image> with {'|'.join(IMAGE_EXTENSIONS)} images")
    if not names:
        raise DataError(f"no images found under {where} ({expected})")
    parts = {n: PurePosixPath(n).parts for n in names}
    firsts = {p[0] for p in parts.values()}
    if len(firsts) == 1 and not firsts & set(SPLITS) and all(len(p) >= 3 for p in parts.values()):
        parts = {n: p[1:] for n, p in parts.items()}  # one top-level folder
    loose = [n for n, p in parts.items() if len(p) < 2]
    if loose:
        raise DataError(f"{where}: image {_clip(loose[0])} is not inside a class folder "
                        f"({expected})")
    heads = {p[0] for p in parts.values()}
    if heads & set(SPLITS):
        if heads != set(SPLITS):
            missing = sorted(set(SPLITS) - heads)
            other = sorted(heads - set(SPLITS))
            raise DataError(f"{where}: has {'/'.join(sorted(heads & set(SPLITS)))}/ but "
                            + (f"no {missing[0]}/" if missing else f"also {_clip(other[0])}/")
                            + f" ({expected})")
        tree = {s: _by_class({n: p[1:] for n, p in parts.items() if p[0] == s}, where, expected)
                for s in SPLITS}
        if list(tree["train"]) != list(tree["val"]):
            only_t = sorted(set(tree["train"]) - set(tree["val"]))
            only_v = sorted(set(tree["val"]) - set(tree["train"]))
            raise DataError(f"class folders differ between {where}/train and {where}/val: "
                            f"only in train: {_clip(only_t)}; only in val: {_clip(only_v)}")
        return tree
    out: Tree = {s: {} for s in SPLITS}
    for name, files in _by_class(parts, where, expected).items():
        val_pos = set(range(len(files) - 1, -1, -10)) if len(files) >= 2 else set()
        out["val"][name] = [f for i, f in enumerate(files) if i in val_pos]
        out["train"][name] = [f for i, f in enumerate(files) if i not in val_pos]
    if not any(out["val"].values()):
        raise DataError(f"too few images in {where} for a train/val split (a class needs "
                        "at least 2 images to give one to val)")
    return out


def _by_class(parts: dict[str, tuple[str, ...]], where: str, expected: str
              ) -> dict[str, list[str]]:
    """Class -> source names, sorted by their path inside the class folder."""
    loose = [n for n, p in parts.items() if len(p) < 2]
    if loose:
        raise DataError(f"{where}: image {_clip(loose[0])} is not inside a class folder "
                        f"({expected})")
    tree: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for n, p in parts.items():
        tree.setdefault(p[0], []).append((p[1:], n))
    return {c: [n for _, n in sorted(tree[c])] for c in sorted(tree)}


# ----------------------------------------------------------------------------- decoding


def _decode(data: bytes | Path, name: str, size: int) -> np.ndarray:
    """One image as ``(size, size, 3)`` uint8: RGB, shorter side resized, center crop."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (size, size))  # decode large JPEGs at a reduced scale
                rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise DataError(f"cannot decode image {name}: {_clip(e)}") from None
    w, h = rgb.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        rgb = rgb.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = (nw - size) // 2, (nh - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8)


class _LogProgress:
    """Progress for logs (no terminal): a whole line every ``every`` images, no redraws."""

    def __init__(self, total: int | None, desc: str, every: int = 10000):
        self.total, self.desc, self.every, self.n = total, desc, every, 0

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n % self.every == 0:
            of = f" of {self.total}" if self.total else ""
            print(f"{self.desc}: {self.n}{of} images", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress(total: int | None, desc: str) -> tqdm | _LogProgress:
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="img", leave=False, file=sys.stderr,
                    mininterval=0.5)
    return _LogProgress(total, desc)


def _folder_names(root: Path) -> list[str]:
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        names += [(rel / f).as_posix() for f in filenames if _is_image(f)]
    return names


def _folder_key(root: Path, names: list[str], size: int) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}\nfolder\n{size}\n".encode())
    for n in sorted(names):
        st = (root / n).stat()
        h.update(f"{n}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _archive_key(path: Path, size: int) -> str:
    st = path.stat()
    text = f"{CACHE_FORMAT}\narchive\n{size}\n{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _decode_archive(path: Path, size: int) -> dict[str, np.ndarray]:
    """Stream the archive once; every image member decoded, by its path."""
    images: dict[str, np.ndarray] = {}
    bar = _progress(None, f"decoding {path.name}")
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile() or not _is_image(member.name):
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                name = PurePosixPath(member.name.lstrip("./")).as_posix()
                images[name] = _decode(f.read(), f"{path}:{name}", size)
                bar.update()
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, TypeError, zlib.error,
            lzma.LZMAError) as e:  # a damaged stream fails in any of these (tarfile, gzip)
        raise DataError(f"cannot read archive {path}: {_clip(e) or type(e).__name__} "
                        "(expected a .tar, .tar.gz, .tar.xz or .tar.bz2 of image folders)") from None
    finally:
        bar.close()
    return images


def _stack(tree: Tree, images: dict[str, np.ndarray]) -> dict[str, tuple[Tensor, Tensor]]:
    out = {}
    for split, classes in tree.items():
        names = [(label, n) for label, c in enumerate(classes) for n in classes[c]]
        arr = np.stack([images[n] for _, n in names])
        out[split] = (torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))),
                      torch.tensor([label for label, _ in names], dtype=torch.int64))
    return out


def _check_memory(count: int, size: int, where: Path) -> None:
    need = count * 3 * size * size
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have // 2:
        raise DataError(f"{where}: {count} images at {size}x{size} need {need / 2**30:.1f} GiB "
                        f"in memory, more than half of this machine's {have / 2**30:.1f} GiB; "
                        "use a smaller resolution or fewer images")


def _build(source: Path, size: int) -> tuple[list[str], dict[str, tuple[Tensor, Tensor]]]:
    """Decode ``source`` (folder or archive): class names and both splits."""
    if is_archive(source):
        images = _decode_archive(source, size)
        tree = _layout(list(images), str(source))
    else:
        names = _folder_names(source)
        tree = _layout(names, str(source))
        _check_memory(len(names), size, source)
        images = {}
        bar = _progress(len(names), f"decoding {source.name}")
        try:
            for classes in tree.values():
                for files in classes.values():
                    for n in files:
                        images[n] = _decode(source / n, str(source / n), size)
                        bar.update()
        finally:
            bar.close()
    return list(tree["train"]), _stack(tree, images)


# ----------------------------------------------------------------------------- the cache file


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(memoryview(np.ascontiguousarray(tensors[name].numpy())))
    return h.hexdigest()


def _read(path: Path, key: str, size: int) -> ImageCache:
    """Load and check a cache file; any defect raises ``ValueError`` (the caller rebuilds)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"unreadable ({_clip(e, 120)})") from None
    if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
        raise ValueError("written for another dataset or version")
    try:
        classes = json.loads(meta["classes"])
    except (KeyError, json.JSONDecodeError):
        raise ValueError("no class list") from None
    if sorted(tensors) != sorted(f"{s}.{t}" for s in SPLITS for t in ("images", "labels")):
        raise ValueError(f"unexpected tensors {sorted(tensors)}")
    if _digest(tensors) != meta.get("digest"):
        raise ValueError("checksum mismatch")
    splits = {}
    for s in SPLITS:
        x, y = tensors[f"{s}.images"], tensors[f"{s}.labels"]
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (3, size, size) or y.shape != (len(x),) \
                or (len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes))):
            raise ValueError(f"bad {s} tensors")
        splits[s] = (x, y)
    return ImageCache(classes=classes, splits=splits, path=path)


def _write(path: Path, key: str, source: Path, classes: list[str],
           splits: dict[str, tuple[Tensor, Tensor]]) -> None:
    from safetensors.torch import save_file

    tensors = {f"{s}.{t}": v for s, (x, y) in splits.items() for t, v in (("images", x),
                                                                          ("labels", y))}
    meta = {"format": CACHE_FORMAT, "key": key, "classes": json.dumps(classes),
            "source": str(source), "digest": _digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_image_cache(source: Path, image_size: int, *, root: Path | None = None,
                     verbose: bool = True) -> ImageCache:
    """Both splits of the image folder or archive ``source`` at ``image_size``, decoded once.

    Args:
        source: a folder (``train/`` + ``val/`` class folders, or class folders) or an
            archive of one.
        image_size: side S of the stored ``(3, S, S)`` images.
        root: cache folder (default :func:`cache_dir`).
        verbose: say on stderr when the cache is built or rebuilt, and how long it took.

    Raises:
        DataError: missing source, unreadable archive, bad layout, undecodable image.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"dataset path not found: {source}")
    if not source.is_dir() and not is_archive(source):
        raise DataError(f"dataset path {source} is neither a folder nor an archive "
                        f"({', '.join(ARCHIVE_SUFFIXES)})")
    key = _archive_key(source, image_size) if is_archive(source) \
        else _folder_key(source, _folder_names(source), image_size)
    if key in _MEMO:
        return _MEMO[key]
    path = (root or cache_dir()) / "images" / f"{key}.safetensors"
    if path.is_file():
        try:
            cache = _read(path, key, image_size)
            _MEMO.clear()
            _MEMO[key] = cache
            return cache
        except ValueError as e:
            print(f"image cache {path} is corrupted ({e}); rebuilding it", file=sys.stderr)
    t0 = time.perf_counter()
    classes, splits = _build(source, image_size)
    decode_s = time.perf_counter() - t0
    try:
        _write(path, key, source, classes, splits)
    except (OSError, ArtifactError) as e:  # a read-only home still trains, from memory
        print(f"warning: cannot write the image cache {path}: {_clip(e)}", file=sys.stderr)
    if verbose:
        n = sum(len(y) for _, y in splits.values())
        print(f"decoded {n} images of {source} in {decode_s:.1f} s; cached in {path}",
              file=sys.stderr)
    cache = ImageCache(classes=classes, splits=splits, path=path, decode_s=decode_s)
    _MEMO.clear()
    _MEMO[key] = cache
    return cache
