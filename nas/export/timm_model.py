"""timm integration: the model name ``vitnas``, registered with ``timm.models.register_model``.

Importing :mod:`nas.export` registers it; then timm's tooling (data
config, transforms, ``train.py``, ``validate.py``, feature/classifier helpers) applies
to exported models:

* ``timm.create_model("local-dir:DIR", pretrained=True)``: timm reads
  ``DIR/config.json`` (``architecture: vitnas`` and ``pretrained_cfg``) and loads
  ``DIR/model.safetensors``;
* ``timm.create_model("vitnas", pretrained=True, arch="DIR")``: the same, naming the
  model directory (or its ``config.json``) explicitly; a different
  ``pretrained_cfg_overlay=dict(file=...)`` picks another weight file;
* ``timm.create_model("vitnas", arch="best.yaml", num_classes=100)``: an untrained
  model of any architecture file (the plain, trainable form: nothing folded).

``num_classes`` and ``in_chans`` may differ from the exported ones: timm drops the
classifier / adapts the first conv as for its own models.

Example:
    >>> import nas.export, timm  # doctest: +SKIP
    >>> model = timm.create_model("local-dir:runs/default/export/model", pretrained=True)  # doctest: +SKIP
    >>> cfg = timm.data.resolve_data_config(model=model)  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from timm.models import build_model_with_cfg, register_model

from nas.arch import Arch, load_arch
from nas.errors import ArtifactError
from nas.export.config import TIMM_NAME, ModelConfig, Preprocessing
from nas.export.export import _is_dir
from nas.export.formats import FILE_NAMES
from nas.export.inference import build_inference_model
from nas.model import VisionTransformer

__all__ = ["vitnas", "resolve_timm_arch"]

# The pretrained cfg of an architecture that has no exported weights (timm's defaults).
default_cfgs = {TIMM_NAME: {"url": "", "num_classes": 1000, "input_size": (3, 224, 224),
                            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                            "interpolation": "bilinear", "crop_pct": 1.0,
                            "first_conv": "stem.proj", "classifier": "head.fc"}}


def resolve_timm_arch(arch: Any, pretrained_cfg: Any = None) -> tuple[ModelConfig, Path | None]:
    """The :class:`ModelConfig` meant by ``arch`` and the model directory it came from.

    ``arch`` may be a model directory, its ``config.json``, an arch YAML/JSON file or
    inline text, an :class:`~nas.arch.Arch` or an arch dict; ``None`` takes the
    directory timm's ``local-dir:`` source put in ``pretrained_cfg["file"]``.
    """
    if arch is None:
        cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else {}
        if cfg.get("source") != "local-dir" or not cfg.get("file"):
            raise ValueError(f"timm model {TIMM_NAME!r} needs arch=<model dir, config.json or "
                             f"arch file>, or the name 'local-dir:<model dir>'")
        arch = cfg["file"]
    if isinstance(arch, (str, Path)) and _is_dir(arch):
        return ModelConfig.load(arch), Path(arch)
    if isinstance(arch, (str, Path)) and str(arch).endswith("config.json"):
        if not Path(arch).is_file():
            raise ArtifactError(f"model config not found: {arch}")
        return ModelConfig.load(arch), Path(arch).parent
    if isinstance(arch, dict):
        arch = Arch.from_dict(arch)
    elif not isinstance(arch, Arch):
        arch = load_arch(arch)
    plain = ModelConfig(arch=arch, num_classes=1000, in_chans=3, space_name="",
                        space_fingerprint="", bn_folded=False, qkv_fused=False,
                        preprocessing=Preprocessing(resolution=arch.resolution,
                                                    mean=default_cfgs[TIMM_NAME]["mean"],
                                                    std=default_cfgs[TIMM_NAME]["std"]))
    return plain, None


def _build(*, config: ModelConfig, num_classes: int, in_chans: int = 3,
           img_size: Any = None) -> VisionTransformer:
    """Model constructor handed to timm's ``build_model_with_cfg`` (weights initialised)."""
    side = config.arch.resolution
    if img_size is not None and tuple(img_size if isinstance(img_size, (tuple, list))
                                      else (img_size, img_size)) != (side, side):
        raise ValueError(f"img_size {img_size} differs from the architecture's resolution {side}; "
                         "a vitnas model runs at the resolution it was searched for")
    return build_inference_model(config.arch, num_classes=num_classes, in_chans=in_chans,
                                 bn_folded=config.bn_folded, qkv_fused=config.qkv_fused,
                                 onednn_linears=config.onednn_linears, device=None)


@register_model
def vitnas(pretrained: bool = False, *, arch: Any = None, **kwargs: Any) -> VisionTransformer:
    """A vitnas model from an exported directory or an architecture (see the module doc).

    Args:
        pretrained: load the exported weights (needs a model directory).
        arch: model directory, its ``config.json``, an arch file / text, an ``Arch`` or a
            dict; omitted with timm's ``local-dir:`` names.
        **kwargs: timm's ``num_classes``, ``in_chans``, ``img_size``, ``pretrained_cfg``,
            ``pretrained_cfg_overlay``, ``cache_dir``; anything else is rejected.
    """
    known = ("num_classes", "in_chans", "img_size", "pretrained_cfg", "pretrained_cfg_overlay",
             "cache_dir", "pretrained_model_args")
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise TypeError(f"{TIMM_NAME}: unsupported argument(s) {', '.join(unknown)}; "
                        f"accepted: arch, {', '.join(known)}")
    config, folder = resolve_timm_arch(arch, kwargs.get("pretrained_cfg"))
    if pretrained and folder is None:
        raise ValueError(f"{TIMM_NAME}: pretrained=True needs exported weights; give arch=<model "
                         "dir> (from `nas export`) or use pretrained=False")
    overlay = {**config.timm_cfg(), "architecture": TIMM_NAME}
    if folder is not None:
        overlay.update(file=str(folder / FILE_NAMES["safetensors"]), source="")
    overlay.update(kwargs.pop("pretrained_cfg_overlay", None) or {})
    kwargs.pop("pretrained_cfg", None)  # replaced: the overlay carries the model's own config
    return build_model_with_cfg(_build, TIMM_NAME, pretrained, pretrained_cfg_overlay=overlay,
                                config=config, **kwargs)
