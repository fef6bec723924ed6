"""The exported model directory: written atomically, read back without pickle.

Layout::

    DIR/config.json          ModelConfig (arch, space, preprocessing, folding) + timm cfg
    DIR/model.safetensors    weights of the inference model (always)
    DIR/model.onnx           optional, opset 17, dynamic batch
    DIR/model.pt2            optional, torch.export program
    DIR/model.ts             optional, TorchScript
    DIR/README.md            model card

Everything is written into a hidden temporary sibling directory that is renamed to
``DIR`` only when complete, so a killed export never leaves a half-written model.

Example:
    >>> write_model_dir(model, config, "exported/m", formats=("safetensors", "onnx"))  # doctest: +SKIP
    >>> model = load_model("exported/m")  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nas.errors import ArtifactError
from nas.export.config import FORMAT_VERSION, ModelConfig
from nas.export.formats import FILE_NAMES, parse_formats, write_format
from nas.export.inference import build_inference_model, has_meta_tensors
from nas.io import write_json, write_text
from nas.model import VisionTransformer

__all__ = ["atomic_dir", "check_output_dir", "write_model_dir", "load_model", "is_model_dir"]


# written into every model directory: --overwrite only ever replaces a directory holding it
MARKER = ".vitnas-model"


def made_by_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model directory this tool wrote (its marker file, or, for
    directories written before the marker, nothing but the files an export writes)."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    known = {MARKER, "config.json", "README.md", *FILE_NAMES.values()}
    return is_model_dir(path) and all(p.name in known for p in path.iterdir())


def check_output_dir(out: str | os.PathLike, *, overwrite: bool = False,
                     keep: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Validate an output directory before any work: creatable, writable, not in use.

    ``--overwrite`` replaces only a model directory this tool wrote, never anything else
    nor a directory holding one of ``keep`` (the inputs: a run directory).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"--out {out} exists and is not a directory")
    for path in keep:
        inside = Path(path).resolve()
        if inside == out.resolve() or out.resolve() in inside.parents:
            raise ArtifactError(f"--out {out} holds the input {path}; choose another path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ArtifactError(f"--out {out} exists and is not empty; choose another path or "
                                "pass --overwrite")
        if not made_by_export(out):
            raise ArtifactError(f"--out {out} is not a model directory written by nas export; "
                                "--overwrite only replaces those (choose another path)")
    parent = out.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ArtifactError(f"cannot write {out}: {probe} is not a writable directory")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, *, overwrite: bool = False,
               keep: tuple[str | os.PathLike, ...] = ()) -> Iterator[Path]:
    """Yield a temp directory beside ``out``; on success it replaces ``out``.

    On an exception (or a kill) the temp directory is removed and ``out`` is untouched.
    """
    out = check_output_dir(out, overwrite=overwrite, keep=keep)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(parent, out.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
        (tmp / _OWNER).write_text(str(os.getpid()))
    except OSError as e:
        raise ArtifactError(f"cannot write {out}: {e.strerror}") from None
    try:
        yield tmp
        (tmp / _OWNER).unlink()
        _share(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / "model")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_OWNER = ".owner-pid"  # inside a temp model directory while an export writes it


def _remove_orphans(parent: Path, name: str) -> None:
    """Remove temp directories of earlier exports to ``name`` that were killed (kill -9
    runs no cleanup): ours by their name and owner file, and their process is gone."""
    for tmp in parent.glob(f".{name}.*.tmp"):
        try:
            pid = int((tmp / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # not one of ours (or not readable): leave it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _share(folder: Path) -> None:
    """Give the directory and its files the usual permissions (temp files are private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Own, contiguous CPU copies: safetensors refuses tensors that share storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def write_model_dir(model: VisionTransformer, config: ModelConfig, out: str | os.PathLike, *,
                    formats: tuple[str, ...] | str = ("safetensors",), overwrite: bool = False,
                    card: Callable[[ModelConfig, dict[str, float]], str] | None = None,
                    keep: tuple[str | os.PathLike, ...] = ()) -> dict[str, float]:
    """Write an exported model directory atomically.

    Args:
        model: the inference model (structure must match ``config.bn_folded`` / ``qkv_fused``).
        config: its :class:`ModelConfig`.
        out: the model directory to create.
        formats: ``safetensors`` (always) plus any of ``onnx``, ``pt2``, ``torchscript``.
        overwrite: replace an existing ``out`` that this tool wrote (see :func:`made_by_export`).
        card: builds ``README.md`` from the config and the per-format check results.

    Returns:
        Max abs difference of each graph format's read-back logits from the eager model.
    """
    formats = parse_formats(formats)
    model = model.eval().cpu()
    checks: dict[str, float] = {}
    with atomic_dir(out, overwrite=overwrite, keep=keep) as tmp:
        meta = {"format": "pt", "vitnas_format_version": str(FORMAT_VERSION),
                "space_fingerprint": config.space_fingerprint}
        save_file(_state(model), str(tmp / FILE_NAMES["safetensors"]), metadata=meta)
        for name in formats[1:]:
            checks[name] = write_format(name, model, tmp, in_chans=config.in_chans,
                                        resolution=config.arch.resolution)
        write_json(tmp / "config.json", config.to_dict())
        write_text(tmp / MARKER, "written by nas export; --overwrite may replace this directory\n")
        if card is not None:
            write_text(tmp / "README.md", card(config, checks))
    return checks


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a complete exported model directory."""
    path = Path(path)
    return (path / "config.json").is_file() and (path / FILE_NAMES["safetensors"]).is_file()


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu"
               ) -> VisionTransformer:
    """Load an exported model directory: JSON config and safetensors weights, no pickle.

    The model comes back in eval mode with the structure it was exported in (BatchNorm
    folded, attention fused, as ``config.json`` says); ``model.export_config`` holds the
    :class:`ModelConfig` and ``model.pretrained_cfg`` timm's data config.

    Raises:
        ArtifactError: missing directory or files, a corrupted or mismatched weight
            file, an unsupported format version.

    Example:
        >>> model = load_model("runs/default/export/model")  # doctest: +SKIP
        >>> logits = model(torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"model directory not found: {path}")
    config = ModelConfig.load(path)
    weights = path / FILE_NAMES["safetensors"]
    if not weights.is_file():
        raise ArtifactError(f"{path} has no {weights.name}; export it again")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"{weights} is corrupted or truncated: {e}") from None
    model = build_inference_model(config.arch, num_classes=config.num_classes,
                                  in_chans=config.in_chans, bn_folded=config.bn_folded,
                                  qkv_fused=config.qkv_fused,
                                  onednn_linears=config.onednn_linears)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:300]
        raise ArtifactError(f"{weights} does not fit the model {path / 'config.json'} "
                            f"describes: {detail}") from None
    if has_meta_tensors(model):
        raise ArtifactError(f"{weights} lacks tensors the model needs")
    model.export_config = config
    model.pretrained_cfg = config.timm_cfg()
    return model.eval()
