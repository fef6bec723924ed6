"""Standalone-trained reference results for the benches, cached so they outlive the machine.

A reference is one architecture trained alone from scratch with the product's own
standalone training (``nas train --arch``, :func:`nas.training.train` with
``TrainConfig.arch``) under a recipe (the TrainConfig settings: data, subset, epochs,
optimizer, augmentation) and a seed. Each run goes to its own run directory under
``runs/references/KEY`` (so an interrupted one resumes from its last epoch), and its
final validation loss and accuracy go into a JSON cache under ``bench/results/``
(committed), keyed by the arch, the recipe, the seed and the trainer's version.
Several processes may fill one cache at once: entries are merged under a file lock
and written atomically.

Example:
    >>> recipe = reference_recipe(run.config, epochs=10, limit_train=10000)  # doctest: +SKIP
    >>> cached_reference(cache, arch, recipe, seed=1)  # doctest: +SKIP
    {'loss': 1.02, 'acc': 0.64, 'train_s': 183.0, 'epochs': 10}
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any

from nas.arch import Arch
from nas.io import read_json, write_json
from nas.training import TrainConfig, read_metrics, train
from nas.training.config import standalone_recipe

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "references"
# v2: trained by the product's standalone training (v1 entries came from a bench-only loop)
TRAINER = "nas-train-standalone/2"


def reference_recipe(run_config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The recipe of a supernet run (its TrainConfig settings), with ``changes``."""
    return standalone_recipe(run_config, **changes)


def reference_key(arch: Arch, recipe: dict[str, Any], seed: int) -> str:
    space = Path(str(recipe["space"])).stem  # a name, whatever path the space was given by
    blob = json.dumps([TRAINER, arch.to_dict(), {**recipe, "space": space}, seed],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def locked(path: Path):
    """Exclusive lock on ``path``'s sidecar ``.lock`` file."""
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train_reference(arch: Arch, recipe: dict[str, Any], seed: int, *, key: str,
                    threads: int = 0) -> dict[str, Any]:
    """Train (or resume) one reference with ``nas.training.train`` and read its result."""
    out = RUNS / key
    cfg = TrainConfig.from_dict({**recipe, "arch": arch.to_json(), "seed": seed,
                                 "out": str(out), "threads": threads})
    train(cfg, resume=True, verbose=False)
    last = read_metrics(out)[-1]
    return {"loss": float(last["val_loss"]), "acc": float(last["val_acc"]),
            "train_s": round(float(last["wall_time_s"]), 1), "epochs": int(last["epoch"])}


def cached_reference(cache: Path, arch: Arch, recipe: dict[str, Any], seed: int, *,
                     train_missing: bool = True, threads: int = 0) -> dict[str, Any] | None:
    """The cached result of (arch, recipe, seed); trained and added when missing (or None
    with ``train_missing=False``)."""
    key = reference_key(arch, recipe, seed)
    table = read_json(cache, what="reference cache") if cache.is_file() else {}
    if key in table or not train_missing:
        return table.get(key)
    RUNS.mkdir(parents=True, exist_ok=True)
    with locked(RUNS / key):  # another process training the same reference: wait for it
        with locked(cache):
            table = read_json(cache, what="reference cache") if cache.is_file() else {}
        if key in table:
            return table[key]
        result = train_reference(arch, recipe, seed, key=key, threads=threads)
        with locked(cache):
            fresh = read_json(cache, what="reference cache") if cache.is_file() else {}
            write_json(cache, {**fresh, key: {**result, "arch": arch.to_json(), "seed": seed}})
    return result
