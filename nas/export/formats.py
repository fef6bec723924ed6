"""Writers of the optional graph formats, each verified against the eager model.

* ``onnx``: ``model.onnx`` by the TorchScript-based ``torch.onnx.export`` (opset 17,
  dynamic batch), run back through onnxruntime (max abs diff <= 1e-4, relative to the
  largest logit when that exceeds 1);
* ``pt2``: ``model.pt2``, a ``torch.export`` program with a dynamic batch dimension;
* ``torchscript``: ``model.ts``, a traced TorchScript module.

Every writer checks the saved file on a batch size other than the one it was traced
with, and raises :class:`ExportFormatError` (a :class:`~nas.errors.NasError`) naming the
format and the reason when the export or the check fails.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.errors import NasError

__all__ = ["FORMATS", "FILE_NAMES", "ExportFormatError", "write_format", "parse_formats"]

FORMATS = ("safetensors", "onnx", "pt2", "torchscript")
FILE_NAMES = {"safetensors": "model.safetensors", "onnx": "model.onnx", "pt2": "model.pt2",
              "torchscript": "model.ts"}
ONNX_OPSET = 17
TOLERANCE = {"onnx": 1e-4, "pt2": 1e-5, "torchscript": 1e-5}


class ExportFormatError(NasError):
    """A model could not be written, or read back equal, in a requested format.

    ``fmt`` names the format that failed (``None`` for an unknown format name).
    """

    def __init__(self, message: str, *, fmt: str | None = None):
        super().__init__(message)
        self.fmt = fmt


def parse_formats(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"safetensors,onnx"`` -> ``("safetensors", "onnx")``; safetensors is always included."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    out = ["safetensors"]
    for item in items:
        if item not in FORMATS:
            raise ExportFormatError(f"unknown export format {item!r}; valid: {', '.join(FORMATS)}")
        if item not in out:
            out.append(item)
    return tuple(out)


@contextlib.contextmanager
def _no_output() -> Iterator[None]:
    """Silence file descriptors 1 and 2: the ONNX exporter prints whole graphs from C++."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _quiet(fn: Callable[[], object]) -> object:
    with warnings.catch_warnings(), _no_output():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings are expected here
        return fn()


def _check(name: str, got: torch.Tensor | np.ndarray, want: torch.Tensor) -> float:
    got = torch.as_tensor(np.asarray(got)) if not isinstance(got, torch.Tensor) else got
    if tuple(got.shape) != tuple(want.shape):
        raise ExportFormatError(f"{name}: output shape {tuple(got.shape)} != {tuple(want.shape)}",
                                fmt=name)
    diff = float((got.float() - want.float()).abs().max())
    tol = TOLERANCE[name] * max(1.0, float(want.abs().max()))  # relative for large logits
    if not diff <= tol:
        raise ExportFormatError(f"{name}: read back, the model differs from the eager one by "
                                f"{diff:.2e} (max abs), tolerance {tol:.1e}", fmt=name)
    return diff


def _onnx(model: nn.Module, path: Path, example: torch.Tensor, check: torch.Tensor) -> float:
    import onnxruntime as ort

    _quiet(lambda: torch.onnx.export(
        model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
        input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(["logits"], {"images": check.numpy()})[0]
    return _check("onnx", out, model(check))


def _pt2(model: nn.Module, path: Path, example: torch.Tensor, check: torch.Tensor) -> float:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = _quiet(lambda: torch.export.export(model, (example,), dynamic_shapes=({0: batch},)))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    return _check("pt2", loaded(check), model(check))


def _torchscript(model: nn.Module, path: Path, example: torch.Tensor, check: torch.Tensor
                 ) -> float:
    traced = _quiet(lambda: torch.jit.trace(model, (example,)))
    _quiet(lambda: torch.jit.save(traced, str(path)))  # deprecated in favour of pt2, still works
    loaded = _quiet(lambda: torch.jit.load(str(path)))
    return _check("torchscript", loaded(check), model(check))


_WRITERS = {"onnx": _onnx, "pt2": _pt2, "torchscript": _torchscript}


@torch.no_grad()
def write_format(name: str, model: nn.Module, folder: Path, *, in_chans: int, resolution: int,
                 seed: int = 0) -> float:
    """Write ``model`` (eval mode, CPU) as format ``name`` into ``folder``; verify it.

    Returns:
        The max abs difference of the read-back model's logits from the eager ones.
    """
    if name not in _WRITERS:
        raise ValueError(f"format must be one of {', '.join(_WRITERS)}, got {name!r}")
    g = torch.Generator().manual_seed(seed)
    example = torch.randn(2, in_chans, resolution, resolution, generator=g)
    check = torch.randn(3, in_chans, resolution, resolution, generator=g)
    try:
        return _WRITERS[name](model.eval(), folder / FILE_NAMES[name], example, check)
    except ExportFormatError:
        raise
    except Exception as e:  # exporters raise many types; report which format failed, and why
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        hint = "; leave it out of --formats (pt2 exports every arch)" if name != "pt2" else ""
        raise ExportFormatError(f"{name} export failed: {type(e).__name__}: {first}{hint}",
                                fmt=name) from e
