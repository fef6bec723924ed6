"""Exporting a subnet: a standalone, inference-optimised model directory.

``nas export`` (:func:`export_subnet`) takes a trained supernet's run directory and an
architecture, recalibrates BatchNorm, optionally fine-tunes the subnet with
distillation from the largest subnet (:func:`finetune`), folds BatchNorm and fuses
attention projections (:func:`optimize_for_inference`), and writes ``config.json``,
``model.safetensors``, optional ONNX / torch.export / TorchScript files and a model
card, atomically. :func:`load_model` reads it back with no pickle, and the timm model
name ``vitnas`` (registered on import) lets ``timm.create_model`` do the same.

Example:
    >>> export_subnet("runs/t/train", "runs/t/search/best.yaml", "runs/t/model")  # doctest: +SKIP
    >>> model = load_model("runs/t/model")  # doctest: +SKIP
    >>> timm.create_model("local-dir:runs/t/model", pretrained=True)  # doctest: +SKIP
"""
from __future__ import annotations

from nas.export import timm_model  # noqa: F401  (registers the timm model name "vitnas")
from nas.export.config import FORMAT_VERSION, ModelConfig, Preprocessing, preprocessing_for
from nas.export.export import ExportResult, export_subnet
from nas.export.finetune import finetune
from nas.export.formats import FORMATS, ExportFormatError
from nas.export.inference import build_inference_model, optimize_for_inference
from nas.export.model_dir import is_model_dir, load_model, write_model_dir

__all__ = ["export_subnet", "ExportResult", "load_model", "write_model_dir", "is_model_dir",
           "optimize_for_inference", "build_inference_model", "finetune", "ModelConfig",
           "Preprocessing", "preprocessing_for", "FORMATS", "FORMAT_VERSION", "ExportFormatError"]
