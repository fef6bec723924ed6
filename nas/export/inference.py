"""The inference form of a standalone model: BatchNorm folded, attention projections fused.

:func:`optimize_for_inference` turns a trained standalone model (what
``supernet.extract`` returns) into the exported form; :func:`build_inference_model`
builds the same structure empty, from the architecture and the two switches saved in
``config.json``, so the saved weights can be loaded into it. Both transformations
are optional, and the unfolded / unfused model stays the reference the tests compare
against.

Example:
    >>> fast = optimize_for_inference(supernet.extract(arch))  # doctest: +SKIP
    >>> empty = build_inference_model(arch, num_classes=10, bn_folded=True, qkv_fused=True)  # doctest: +SKIP
    >>> empty.load_state_dict(fast.state_dict(), assign=True)  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from nas.arch import Arch
from nas.export.fold import fold_batchnorm
from nas.export.fuse import fuse_attention
from nas.export.onednn import use_onednn_linears
from nas.model import VisionTransformer, build_model

__all__ = ["optimize_for_inference", "build_inference_model", "has_meta_tensors"]


def optimize_for_inference(model: VisionTransformer, *, fold_bn: bool = True,
                           fuse_qkv: bool = True, onednn_linears: bool = True
                           ) -> VisionTransformer:
    """An eval-mode copy of ``model`` with BatchNorm folded and attention fused.

    Args:
        model: a standalone :class:`~nas.model.VisionTransformer` (left untouched).
        fold_bn: fold eval-mode BatchNorm into neighbouring linears / convs.
        fuse_qkv: concatenate the attention projections (see :mod:`nas.export.fuse`).
        onednn_linears: run linears through oneDNN with prepacked weights and fused
            activations on CPU (see :mod:`nas.export.onednn`); changes no weight, so it
            is not recorded in ``config.json`` and loaders always apply it.
    """
    out = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batchnorm(out)
    if fuse_qkv:
        fuse_attention(out)
    if onednn_linears:
        use_onednn_linears(out)
    return out.eval()  # modules created above start in training mode


def build_inference_model(arch: Arch, *, num_classes: int, in_chans: int = 3,
                          bn_folded: bool = True, qkv_fused: bool = True,
                          onednn_linears: bool = True,
                          device: torch.device | str | None = "meta") -> VisionTransformer:
    """The structure :func:`optimize_for_inference` gives for ``arch``, weights unset.

    With ``device="meta"`` (default) nothing is allocated: load the weights with
    ``load_state_dict(state, assign=True)`` and check :func:`has_meta_tensors`.
    """
    model = build_model(arch, num_classes=num_classes, in_chans=in_chans, device=device)
    return optimize_for_inference(model, fold_bn=bn_folded, fuse_qkv=qkv_fused,
                                  onednn_linears=onednn_linears)


def has_meta_tensors(model: nn.Module) -> bool:
    """Whether any parameter or buffer of ``model`` is still on the meta device."""
    return any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers()))
