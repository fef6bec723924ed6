"""Training checkpoints in safetensors, with no pickle anywhere.

A checkpoint is ``last.safetensors`` (supernet weights and optimizer tensors) plus a
JSON sidecar ``last.json`` (epoch, step, search-space fingerprint, resolved config,
RNG states as lists, optimizer hyper-parameters and scalars, scheduler state, and
the sha256 of the tensor file). The same JSON state is embedded in the safetensors
metadata, so the tensor file alone is self-describing; the sidecar's checksum
detects a corrupted tensor file. Both are written atomically (temp file + rename),
tensors first: a job killed between the two renames leaves an older sidecar, which
is ignored (the embedded state wins), never a mismatched pair that loads.

Example:
    >>> save_checkpoint(run / "checkpoints" / "last.safetensors", state)  # doctest: +SKIP
    >>> state = load_checkpoint(path, fingerprint=space.fingerprint)  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nas.errors import ArtifactError
from nas.io import atomic_path, write_json

__all__ = ["CHECKPOINT_FORMAT", "TrainState", "save_checkpoint", "load_checkpoint",
           "sidecar_path", "flatten_optimizer", "unflatten_optimizer", "numpy_rng_state",
           "restore_numpy_rng", "torch_rng_state", "restore_torch_rng"]

# /2: attention projections stored head by head (see nas.supernet); /1 files cannot be read.
CHECKPOINT_FORMAT = "nas-train-checkpoint/2"
_MODEL, _OPTIM = "model.", "optim."


@dataclass
class TrainState:
    """Everything needed to continue a run bit-for-bit after ``epoch`` finished epochs."""

    epoch: int
    step: int
    fingerprint: str
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and JSON-ready rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slot in state["state"].items():
        for key, value in slot.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    rest = {"param_groups": state["param_groups"], "scalars": scalars}
    json.dumps(rest)  # fail here, not in a half-written checkpoint, if something is not JSON
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name[len(_OPTIM):].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, slot in rest["scalars"].items():
        state.setdefault(int(idx), {}).update(slot)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g)
              for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: TrainState) -> None:
    """Atomically write ``path`` (safetensors) and its JSON sidecar."""
    path = Path(path)
    tensors = {_MODEL + k: v.detach().cpu().contiguous() for k, v in state.model.items()}
    optim_tensors, optim_rest = flatten_optimizer(state.optimizer)
    tensors.update(optim_tensors)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": state.epoch,
        "step": state.step,
        "fingerprint": state.fingerprint,
        "config": state.config,
        "rng": {"numpy": state.numpy_rng, "torch": state.torch_rng},
        "optimizer": optim_rest,
        "scheduler": state.scheduler,
        "extra": state.extra,
    }
    blob = json.dumps(meta, separators=(",", ":"))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": CHECKPOINT_FORMAT, "state": blob})
    write_json(sidecar_path(path), {**meta, "tensors": path.name, "sha256": _sha256(path)})


def load_checkpoint(path: str | Path, *, fingerprint: str | None = None,
                    space_name: str = "this space", device: str | torch.device = "cpu",
                    ) -> TrainState:
    """Read a checkpoint, checking integrity and (when given) the search-space fingerprint.

    Raises:
        ArtifactError: the file is missing, truncated or corrupted, or belongs to a
            search space whose fingerprint is not ``fingerprint``.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            names = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise ArtifactError(f"checkpoint {path} is corrupted or truncated: {e}") from None
    fmt = str(header.get("format"))
    if fmt.startswith("nas-train-checkpoint/") and fmt != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path} was written by another version of nas ({fmt}, this one "
                            f"reads {CHECKPOINT_FORMAT}: the supernet's weight layout changed); "
                            "train the supernet again")
    if fmt != CHECKPOINT_FORMAT or "state" not in header:
        raise ArtifactError(f"{path} is not a training checkpoint (format "
                            f"{header.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    try:
        meta = json.loads(header["state"])
        epoch, step, fp = int(meta["epoch"]), int(meta["step"]), str(meta["fingerprint"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"checkpoint {path} has a corrupted header: {e}") from None
    side = sidecar_path(path)
    if side.is_file():
        try:
            sidecar = json.loads(side.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            sidecar = None  # a torn sidecar write cannot happen (atomic); treat as stale
        if isinstance(sidecar, dict) and sidecar.get("epoch") == epoch \
                and sidecar.get("sha256") != _sha256(path):
            raise ArtifactError(f"checkpoint {path} is corrupted: its sha256 does not match "
                                f"the one recorded in {side.name}")
    if fingerprint is not None and fp != fingerprint:
        raise ArtifactError(f"checkpoint {path} belongs to search space {fp}, not to "
                            f"{space_name} ({fingerprint})")
    model = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    optim = {k: v for k, v in tensors.items() if k.startswith(_OPTIM)}
    try:
        return TrainState(
            epoch=epoch, step=step, fingerprint=fp, config=dict(meta["config"]), model=model,
            optimizer=unflatten_optimizer(optim, meta["optimizer"]),
            scheduler=dict(meta["scheduler"]), numpy_rng=meta["rng"]["numpy"],
            torch_rng=list(meta["rng"]["torch"]), extra=dict(meta.get("extra") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"checkpoint {path} has a corrupted header: {e}") from None


def numpy_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """JSON-ready ``rng.bit_generator.state`` (Python ints are arbitrary precision)."""
    return rng.bit_generator.state


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def restore_numpy_rng(state: dict[str, Any]) -> np.random.Generator:
    """A ``numpy.random.Generator`` continuing from a saved ``bit_generator.state``."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ArtifactError(f"checkpoint: unknown numpy bit generator {name!r}; "
                            f"allowed: {', '.join(_BIT_GENERATORS)}")
    bit_gen = getattr(np.random, name)()
    bit_gen.state = state
    return np.random.Generator(bit_gen)


def torch_rng_state(gen: torch.Generator) -> list[int]:
    return gen.get_state().tolist()


def restore_torch_rng(gen: torch.Generator, state: list[int]) -> torch.Generator:
    """Set ``gen`` (in place) to a state saved by :func:`torch_rng_state`."""
    gen.set_state(torch.tensor(state, dtype=torch.uint8))
    return gen
