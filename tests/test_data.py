"""Tests for nas.data: spec parsing, the three dataset kinds, safe CIFAR loading, batches."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import (
    DATASETS,
    DataSpec,
    augment_batch,
    load_dataset,
    make_loader,
    parse_data_spec,
    to_tensors,
)
from nas.errors import DataError

# ----------------------------------------------------------------------------- specs


def test_registry_lists_the_three_kinds():
    assert sorted(DATASETS) == ["cifar10", "digits", "imagefolder"]


def test_parse_valid_specs():
    assert parse_data_spec("digits") == DataSpec("digits", None)
    assert parse_data_spec("imagefolder:/a/b") == DataSpec("imagefolder", "/a/b")
    assert parse_data_spec("cifar10:C:/data") == DataSpec("cifar10", "C:/data")
    assert str(parse_data_spec("cifar10:/x")) == "cifar10:/x"


def test_parse_unknown_kind_lists_valid():
    with pytest.raises(DataError) as e:
        parse_data_spec("foo:x")
    msg = str(e.value)
    assert "'foo'" in msg and "'foo:x'" in msg
    assert "valid: cifar10:PATH, digits, imagefolder:PATH" in msg


@pytest.mark.parametrize("spec", ["imagefolder", "imagefolder:", "cifar10"])
def test_parse_missing_path(spec):
    with pytest.raises(DataError, match="needs a path"):
        parse_data_spec(spec)


@pytest.mark.parametrize("spec", ["digits:/x", "digits:"])
def test_parse_digits_takes_no_path(spec):
    with pytest.raises(DataError, match="takes no path"):
        parse_data_spec(spec)


def test_parse_empty_spec():
    with pytest.raises(DataError, match="non-empty"):
        parse_data_spec("")


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return {split: load_dataset("digits", split=split, image_size=16) for split in ("train", "val")}


def test_digits_sizes_and_attributes(digits):
    train, val = digits["train"], digits["val"]
    assert len(train) + len(val) == 1797
    assert len(val) == 355  # every 5th image of each class
    for ds in (train, val):
        assert ds.num_classes == 10 and ds.in_chans == 3
        assert ds.classes == [str(i) for i in range(10)]
        assert set(ds.targets.tolist()) == set(range(10))


def test_digits_split_deterministic_and_disjoint(digits):
    again = load_dataset("digits", split="val", image_size=8)
    assert np.array_equal(again.indices, digits["val"].indices)
    assert not set(digits["train"].indices) & set(digits["val"].indices)
    assert len(set(digits["train"].indices) | set(digits["val"].indices)) == 1797
    # Pinned, so a change in the split shows up as a failure rather than silent drift.
    assert digits["val"].indices[:5].tolist() == [33, 36, 37, 40, 44]
    assert int(digits["val"].indices.sum()) == 322086


def test_digits_items(digits):
    x, y = digits["train"][0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y) < 10
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert x.min() < -0.5 and x.max() > 1.0  # normalised, not in [0, 1]


def test_digits_to_tensors_matches_items(digits):
    ds = digits["val"]
    X, y = to_tensors(ds)
    assert X.shape == (len(ds), 3, 16, 16) and X.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y, ds.targets)
    assert torch.equal(X[7], ds[7][0]) and int(y[7]) == int(ds[7][1])


def test_unknown_split_and_bad_image_size():
    with pytest.raises(DataError, match="unknown split 'test'"):
        load_dataset("digits", split="test", image_size=8)
    with pytest.raises(DataError, match="image_size"):
        load_dataset("digits", split="train", image_size=0)


# ----------------------------------------------------------------------------- imagefolder


def _write_images(folder, sizes, colour):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), colour).save(folder / f"img{i}.png")


SIZES = [(13, 9), (7, 21), (30, 17)]
COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}


def test_imagefolder_single_tree_split(tmp_path):
    for name, colour in COLOURS.items():
        _write_images(tmp_path / name, SIZES, colour)
    train = load_dataset(f"imagefolder:{tmp_path}", split="train", image_size=12)
    val = load_dataset(f"imagefolder:{tmp_path}", split="val", image_size=12)
    assert train.classes == ["cat", "dog"] and train.num_classes == 2 and train.in_chans == 3
    assert (len(train), len(val)) == (4, 2)
    for ds in (train, val):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
            # red images are label 0 (cat), blue label 1 (dog)
            assert int(y) == (0 if x[0].mean() > x[2].mean() else 1)


def test_imagefolder_train_val_layout(tmp_path):
    for split in ("train", "val"):
        for name, colour in COLOURS.items():
            _write_images(tmp_path / split / name, SIZES, colour)
    ds = load_dataset(f"imagefolder:{tmp_path}", split="val", image_size=8)
    assert len(ds) == 6 and ds.targets.tolist() == [0, 0, 0, 1, 1, 1]
    X, y = to_tensors(ds)
    assert X.shape == (6, 3, 8, 8) and torch.equal(y, ds.targets)


def test_imagefolder_class_mismatch(tmp_path):
    _write_images(tmp_path / "train" / "cat", SIZES, COLOURS["cat"])
    _write_images(tmp_path / "train" / "dog", SIZES, COLOURS["dog"])
    _write_images(tmp_path / "val" / "cat", SIZES, COLOURS["cat"])
    with pytest.raises(DataError, match="only in train: \\['dog'\\]"):
        load_dataset(f"imagefolder:{tmp_path}", split="train", image_size=8)


def test_imagefolder_train_without_val(tmp_path):
    _write_images(tmp_path / "train" / "cat", SIZES, COLOURS["cat"])
    with pytest.raises(DataError, match="no val/"):
        load_dataset(f"imagefolder:{tmp_path}", split="train", image_size=8)


def test_imagefolder_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="no images found under"):
        load_dataset(f"imagefolder:{tmp_path}", split="train", image_size=8)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images found under"):
        load_dataset(f"imagefolder:{tmp_path}", split="train", image_size=8)
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"dataset path not found: {missing}"):
        load_dataset(f"imagefolder:{missing}", split="train", image_size=8)


def test_imagefolder_unreadable_image_is_named(tmp_path):
    _write_images(tmp_path / "cat", SIZES, COLOURS["cat"])
    (tmp_path / "cat" / "img0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode image .*cat/img0.png"):
        load_dataset(f"imagefolder:{tmp_path}", split="train", image_size=8)


# ----------------------------------------------------------------------------- cifar10


def _write_cifar(root, n_per_batch=4, skip=()):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        if name in skip:
            continue
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"labels": [(k + i) % 10 for i in range(n_per_batch)],
        }
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {b"label_names": [c.encode() for c in "plane car bird cat deer dog frog horse ship truck".split()]}
    with open(root / "batches.meta", "wb") as f:
        pickle.dump(meta, f)


def test_cifar10_loads(tmp_path):
    _write_cifar(tmp_path)
    train = load_dataset(f"cifar10:{tmp_path}", split="train", image_size=32)
    val = load_dataset(f"cifar10:{tmp_path}", split="val", image_size=16)
    assert (len(train), len(val)) == (20, 4)
    assert train.num_classes == 10 and train.classes[0] == "plane" and train.in_chans == 3
    assert val.targets.tolist() == [5, 6, 7, 8]
    x, y = val[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and int(y) == 6
    with open(tmp_path / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0].reshape(3, 32, 32)
    x0 = load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)[0][0]
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    expected = (torch.from_numpy(raw).float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(x0, expected, atol=1e-5)
    X, Y = to_tensors(val)
    assert X.shape == (4, 3, 16, 16) and torch.equal(Y, val.targets)


def test_cifar10_nested_folder(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    assert len(load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)) == 4


def test_cifar10_python2_era_module_names(tmp_path):
    # The real batches were pickled by numpy 1.x, which names numpy.core.multiarray.
    _write_cifar(tmp_path)
    data = (tmp_path / "test_batch").read_bytes()
    assert b"numpy._core.multiarray" in data
    (tmp_path / "test_batch").write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert len(load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)) == 4


def test_cifar10_refuses_other_codecs(tmp_path):
    _write_cifar(tmp_path)
    data = (tmp_path / "test_batch").read_bytes()
    assert b"latin1" in data
    (tmp_path / "test_batch").write_bytes(data.replace(b"latin1", b"rot_13", 1))
    with pytest.raises(DataError, match="codec 'rot_13'"):
        load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)


def test_cifar10_missing_test_batch(tmp_path):
    _write_cifar(tmp_path, skip=("test_batch",))
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)


def test_cifar10_missing_path(tmp_path):
    with pytest.raises(DataError, match="dataset path not found"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}", split="train", image_size=32)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_malicious_pickle_is_refused(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f)
    with pytest.raises(DataError, match="refusing to load .*test_batch.*system which is not allowed"):
        load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)
    assert not marker.exists()


def test_cifar10_wrong_shape(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="shape \\(n, 3072\\)"):
        load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)


def test_cifar10_truncated_pickle(tmp_path):
    _write_cifar(tmp_path)
    data = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"cifar10:{tmp_path}", split="val", image_size=32)


# ----------------------------------------------------------------------------- batches


def test_augment_batch_deterministic_and_shifts():
    images = torch.randn(16, 3, 12, 12)
    a = augment_batch(images, generator=torch.Generator().manual_seed(3), max_shift=2)
    b = augment_batch(images, generator=torch.Generator().manual_seed(3), max_shift=2)
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.equal(a, images)
    # Each output is the input translated: its centre is a shifted crop of the input.
    for i in range(len(images)):
        found = any(torch.equal(a[i, :, 2:-2, 2:-2], images[i, :, 2 + dy:10 + dy, 2 + dx:10 + dx])
                    for dy in range(-2, 3) for dx in range(-2, 3))
        assert found


def test_augment_batch_zero_shift_and_errors():
    images = torch.randn(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(images, generator=g, max_shift=0), images)
    with pytest.raises(DataError, match="max_shift"):
        augment_batch(images, generator=g, max_shift=-1)
    with pytest.raises(DataError, match="\\(B, C, H, W\\)"):
        augment_batch(images[0], generator=g, max_shift=1)


def test_make_loader(digits):
    ds = digits["val"]
    order = [torch.cat([y for _, y in make_loader(ds, batch_size=64, shuffle=True,
                                                  generator=torch.Generator().manual_seed(1))])
             for _ in range(2)]
    assert torch.equal(order[0], order[1]) and len(order[0]) == len(ds)
    x, y = next(iter(make_loader(ds, batch_size=8, shuffle=False, generator=None)))
    assert x.shape == (8, 3, 16, 16) and y.dtype == torch.int64
    with pytest.raises(DataError, match="generator"):
        make_loader(ds, batch_size=8, shuffle=True, generator=None)
    with pytest.raises(DataError, match="batch_size"):
        make_loader(ds, batch_size=0, shuffle=False, generator=None)
