"""Linear layers run by oneDNN with a prepacked weight and a fused activation (CPU inference).

PyTorch sends ``nn.Linear`` on CPU to the BLAS (MKL), but convolutions, and the CPU
backend of ``torch.compile``, to oneDNN. oneDNN's GEMM with a weight reordered once
into its blocked layout is about 2x faster on the CPUs measured for the matrices of
these models (MKL is notably slow on AMD CPUs; ``bench/results/vs_timm_cpu.md``), and
it applies GELU/ReLU in the same pass. :class:`OneDNNLinear` is an ``nn.Linear`` with
the same parameters (the state dict does not change) that takes this path only for
eval-time CPU fp32 work without autograd, above a size where the call overhead pays
off; training, tracing (ONNX, TorchScript), ``torch.export``/``torch.compile`` and
other devices run the plain ``F.linear`` reference path. The packed weight is a
cache, rebuilt when the weight changes.

Example:
    >>> use_onednn_linears(model)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.model.layers import FFN, LowRankLinear

__all__ = ["AVAILABLE", "MIN_MACS", "OneDNNLinear", "use_onednn_linears"]

AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                              "_linear_pointwise")
MIN_MACS = 1 << 21  # below ~2M multiply-adds per call F.linear's lower overhead wins
_ACTS = {"none": None, "gelu": F.gelu, "relu": F.relu}


class OneDNNLinear(nn.Linear):
    """``act(linear(x))`` via oneDNN with a prepacked weight when it pays off, else F.linear.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        act: activation applied to the output: ``none``, ``gelu`` (exact) or ``relu``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 act: str = "none", device: Any = None, dtype: Any = None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if act not in _ACTS:
            raise ValueError(f"act must be one of {', '.join(_ACTS)}, got {act!r}")
        self.act = act
        self._packed: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, lin: nn.Linear, act: str = "none") -> OneDNNLinear:
        """A twin of ``lin`` sharing its parameters."""
        out = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, act=act,
                  device="meta")
        out.weight, out.bias = lin.weight, lin.bias
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed"] = None  # opaque oneDNN tensors cannot be copied or pickled
        return state

    def _fast(self, x: torch.Tensor) -> bool:
        # Tracers first (a size test would put a guard on a dynamic batch), then the size,
        # where most calls of small models stop.
        w = self.weight
        return (not torch.jit.is_tracing() and not torch.compiler.is_compiling()
                and x.numel() * self.out_features >= MIN_MACS and AVAILABLE and not self.training
                and x.dtype == torch.float32 and w.dtype == torch.float32
                and x.device.type == "cpu"
                and not (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)))

    def _packed_weight(self) -> torch.Tensor:
        w = self.weight
        key = (w.data_ptr(), w._version, w.shape)
        if self._packed is None or self._packed[0] != key:
            with torch.no_grad():
                self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), 196))
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(), self.bias,
                                                      self.act, [], "none")
        y = F.linear(x, self.weight, self.bias)
        act = _ACTS[self.act]
        return y if act is None else act(y)


def _act_name(act: nn.Module) -> str | None:
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    if isinstance(act, nn.ReLU):
        return "relu"
    return None


def _fuse_ffn(ffn: FFN) -> None:
    """Move the FFN's activation into its first projection when nothing sits between."""
    name = _act_name(ffn.act)
    if ffn.dw is not None or name is None:
        return
    if isinstance(ffn.fc1, LowRankLinear):
        ffn.fc1.u = OneDNNLinear.from_linear(ffn.fc1.u, act=name)
    elif isinstance(ffn.fc1, nn.Linear):
        ffn.fc1 = OneDNNLinear.from_linear(ffn.fc1, act=name)
    else:
        return
    ffn.act = nn.Identity()


def _swap(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and not isinstance(child, OneDNNLinear):
            setattr(module, name, OneDNNLinear.from_linear(child))
        else:
            _swap(child)


def use_onednn_linears(model: nn.Module) -> nn.Module:
    """Fuse FFN activations and make every linear a :class:`OneDNNLinear`, in place."""
    if not AVAILABLE:
        return model
    for m in list(model.modules()):
        if isinstance(m, FFN):
            _fuse_ffn(m)
    _swap(model)
    return model
