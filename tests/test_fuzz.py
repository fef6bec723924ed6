"""Fuzzing every file the tool reads and the commands that read them (Hypothesis).

Valid files of each type are mutated (truncated, bytes flipped, bytes inserted, replaced
by random text) and handed to the loader and to a command that reads them. A loader
must return or raise the package's one error type (:class:`nas.errors.NasError`) with
a single bounded line; a command must exit 0 or 2 with at most one line on stderr,
leave every file that was there byte-identical, and leave no temp file behind. The
default run keeps a few examples per file type; ``-m slow`` runs many more.
"""
from __future__ import annotations

import io
import json
import pickle
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nas import imagecache
from nas.arch import canonicalize, load_arch
from nas.cli import main
from nas.data import load_dataset
from nas.errors import NasError
from nas.io import read_json
from nas.latency import LatencyTable
from nas.pipeline import load_pipeline_config
from nas.predictors import fit_predictor, load_predictor
from nas.space import load_space
from nas.training import TrainConfig, load_checkpoint, train

from .conftest import ROOT

FEW, MANY = 12, 200
EXAMPLES = [pytest.param(FEW, id="few"), pytest.param(MANY, id="many", marks=pytest.mark.slow)]

MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("text"), st.text(max_size=120)),
)


def mutate(data: bytes, m: tuple) -> bytes:
    kind = m[0]
    if kind == "truncate":
        return data[: int(m[1] * len(data))]
    if kind == "flip":
        out = bytearray(data)
        for pos, bits in m[1]:
            i = min(int(pos * len(out)), len(out) - 1)
            out[i] ^= bits
        return bytes(out)
    if kind == "insert":
        i = int(m[1] * len(data))
        return data[:i] + m[2] + data[i:]
    return m[1].encode("utf-8")


def clean_error(fn: Callable[[], object]) -> None:
    """``fn()`` returns, or raises NasError with one bounded line; anything else fails."""
    try:
        fn()
    except NasError as e:
        text = str(e)
        assert "\n" not in text and len(text) < 1500, text[:300]


def _run(examples: int, strategy, body) -> None:
    settings(max_examples=examples, deadline=None, derandomize=True,
             suppress_health_check=list(HealthCheck))(given(strategy)(body))()


# ----------------------------------------------------------------------------- valid seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """One valid file of each type the tool reads."""
    root = tmp_path_factory.mktemp("seeds")
    space = load_space("tiny32")
    out = {"space": (ROOT / "search_spaces" / "tiny32.yaml").read_bytes(),
           "arch": (ROOT / "search_spaces" / "reference" / "deit_cifar.yaml").read_bytes(),
           "pipeline": (ROOT / "nas" / "configs" / "cifar10.yaml").read_bytes()}
    cfg = {"space": "tiny32", "data": "digits", "epochs": 1, "batch_size": 32,
           "limit_train": 64, "limit_val": 32, "threads": 1}
    out["train_config"] = json.dumps(cfg).encode()
    run = train(TrainConfig(**cfg, out=str(root / "run")), verbose=False)
    out["checkpoint"] = (run / "checkpoints" / "last.safetensors").read_bytes()
    out["checkpoint_json"] = (run / "checkpoints" / "last.json").read_bytes()
    out["run_config"] = (run / "config.json").read_bytes()
    rng = np.random.default_rng(0)
    from nas.arch import sample_arch

    rows = [{"arch": a, "acc": float(rng.uniform(0.5, 0.9)), "params": 1, "macs": 1}
            for a in dict.fromkeys(sample_arch(space, rng) for _ in range(40))]
    pred = fit_predictor(rows, model="ridge", space=space, folds=0)
    out["predictor"] = pred.save(root / "pred.json").read_bytes()
    from nas.latency import profile_space

    table = profile_space(space, out=root / "table.json", calibrate=2, min_run_time=0.001,
                          warmup=1, rounds=1, max_entries=40, progress=False)
    out["table"] = (root / "table.json").read_bytes()
    assert len(table) == 40
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "val"):
            for c in ("a", "b"):
                img = io.BytesIO()
                Image.new("RGB", (6, 5), (10, 200, 30)).save(img, "PNG")
                info = tarfile.TarInfo(f"{split}/{c}/x.png")
                info.size = len(img.getvalue())
                tar.addfile(info, io.BytesIO(img.getvalue()))
    out["archive"] = buf.getvalue()
    batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}
    out["cifar_batch"] = pickle.dumps(batch, protocol=2)
    out["run_dir"] = run
    return out


def _cifar_dir(root: Path, batch: bytes, seeds) -> Path:
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(batch if name == "data_batch_1" else seeds["cifar_batch"])
    names = [c.encode() for c in "plane car bird cat deer dog frog horse ship truck".split()]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return root


# ----------------------------------------------------------------------------- loaders

LOADERS: dict[str, tuple[str, str, Callable[[Path, dict], object]]] = {
    "space": ("space", "s.yaml", lambda p, s: load_space(p)),
    "arch": ("arch", "a.yaml", lambda p, s: canonicalize(load_space("cifar32"), load_arch(p))),
    "pipeline config": ("pipeline", "c.yaml", lambda p, s: load_pipeline_config(p)),
    "train config": ("train_config", "t.json",
                     lambda p, s: TrainConfig.from_dict(read_json(p), source=str(p))),
    "run config": ("run_config", "config.json",
                   lambda p, s: TrainConfig.from_dict(read_json(p), source=str(p))),
    "latency table": ("table", "table.json",
                      lambda p, s: LatencyTable.load(p, space=load_space("tiny32"))),
    "predictor": ("predictor", "pred.json",
                  lambda p, s: load_predictor(p, space=load_space("tiny32"))),
    "image archive": ("archive", "d.tar.gz",
                      lambda p, s: (imagecache._MEMO.clear(),
                                    load_dataset(f"imagefolder:{p}", split="val", image_size=8))),
    "cifar batch": ("cifar_batch", "data_batch_1",
                    lambda p, s: load_dataset(f"cifar10:{_cifar_dir(p.parent, p.read_bytes(), s)}",
                                              split="train", image_size=8)),
}


@pytest.mark.parametrize("examples", EXAMPLES)
@pytest.mark.parametrize("what", sorted(LOADERS))
def test_loaders_return_or_raise_one_clean_error(seeds, what, examples):
    key, name, load = LOADERS[what]

    def body(m):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(mutate(seeds[key], m))
            clean_error(lambda: load(path, seeds))

    _run(examples, MUTATION, body)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_checkpoints_return_or_raise_one_clean_error(seeds, examples):
    space = load_space("tiny32")

    def body(args):
        which, m = args
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "last.safetensors"
            ckpt.write_bytes(mutate(seeds["checkpoint"], m) if which == "tensors"
                             else seeds["checkpoint"])
            (Path(tmp) / "last.json").write_bytes(mutate(seeds["checkpoint_json"], m)
                                                   if which == "sidecar"
                                                   else seeds["checkpoint_json"])
            clean_error(lambda: load_checkpoint(ckpt, fingerprint=space.fingerprint))

    _run(examples, st.tuples(st.sampled_from(["tensors", "sidecar"]), MUTATION), body)


# ----------------------------------------------------------------------------- commands

COMMANDS: dict[str, tuple[str, str, Callable[[Path, Path], list[str]]]] = {
    "space validate": ("space", "s.yaml", lambda f, d: ["space", "validate", str(f)]),
    "space show": ("space", "s.yaml", lambda f, d: ["space", "show", str(f)]),
    "arch info": ("arch", "a.yaml", lambda f, d: ["arch", "info", str(f), "--space", "cifar32"]),
    "run --show-config": ("pipeline", "c.yaml",
                          lambda f, d: ["run", "--config", str(f), "--show-config",
                                        "--out", str(d / "out")]),
    "latency": ("table", "t.json",
                lambda f, d: ["latency", "--table", str(f), "--arch",
                              str(ROOT / "search_spaces" / "reference" / "deit_cifar.yaml")]),
    "predictor predict": ("predictor", "p.json",
                          lambda f, d: ["predictor", "predict", "--predictor", str(f), "--arch",
                                        str(ROOT / "search_spaces" / "reference" /
                                            "deit_cifar.yaml")]),
    "train --data imagefolder:ARCHIVE": ("archive", "d.tar.gz",
                                        lambda f, d: ["train", "--space", "tiny32", "--data",
                                                      f"imagefolder:{f}", "--epochs", "1",
                                                      "--threads", "1", "--out",
                                                      str(d / "run")]),
    "train --config": ("train_config", "t.json",
                       lambda f, d: ["train", "--config", str(f), "--out", str(d / "run"),
                                     "--epochs", "1", "--limit-train", "32", "--limit-val", "16",
                                     "--threads", "1"]),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("examples", EXAMPLES)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_exit_0_or_2_in_one_line_and_keep_files(seeds, command, examples, capfd):
    key, name, argv = COMMANDS[command]

    def body(m):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            f = d / name
            f.write_bytes(mutate(seeds[key], m))
            (d / "keep.txt").write_text("a file of the user's")
            before = _snapshot(d)
            capfd.readouterr()
            code = main(argv(f, d))
            err = capfd.readouterr().err
            assert code in (0, 2), err[-500:]
            if code == 2:
                assert len(err.strip().splitlines()) == 1, err[-500:]
            after = _snapshot(d)
            assert {k: v for k, v in after.items() if k in before} == before
            assert not [k for k in after if Path(k).name.startswith(".") and "tmp" in k]

    _run(examples, MUTATION, body)


def test_generated_spaces_are_accepted_or_refused_cleanly():
    """Structures, not bytes: random mappings with the space's keys and junk values."""
    from nas.space import parse_space

    value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 300),
                                   st.floats(allow_nan=True), st.text(max_size=8)),
                         lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
    keys = st.sampled_from(["name", "num_classes", "resolution", "stem", "stem_stride",
                            "stage_defaults", "stages", "in_chans", "depth", "mixer", "junk"])
    stage = st.dictionaries(st.sampled_from(["depth", "embed_dim", "mixer", "stride", "heads",
                                             "keep_ratio", "window", "x"]), value, max_size=5)
    space = st.dictionaries(keys, value, max_size=7).map(dict) | st.fixed_dictionaries(
        {"name": st.text(max_size=5), "num_classes": st.integers(-1, 20),
         "resolution": st.lists(st.integers(-1, 64), max_size=2),
         "stages": st.lists(stage, max_size=3)})

    def body(raw):
        clean_error(lambda: parse_space(raw, source="generated"))

    _run(60, space, body)
