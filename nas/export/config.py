"""``config.json`` of an exported model: what to build, how to feed it, where it came from.

One JSON file serves two readers. :func:`nas.load_model` reads the top-level keys
below; timm's ``local-dir:`` loader reads ``architecture`` (the registered model
name, ``vitnas``) and ``pretrained_cfg`` (timm's data config: input size, mean, std,
interpolation, crop, classifier and first-conv names), so
``timm.create_model("local-dir:DIR", pretrained=True)`` works once ``nas`` is imported.

Keys: ``format_version``, ``architecture``, ``arch`` (active dimensions),
``num_classes``, ``in_chans``, ``search_space`` (name, fingerprint),
``preprocessing`` (resolution, mean, std, interpolation, crop_pct, data spec),
``bn_folded``, ``qkv_fused``, ``source`` and ``metrics`` (provenance, informational),
``pretrained_cfg`` (derived, for timm). Unknown keys are an error.

Example:
    >>> cfg = ModelConfig.load("exported/config.json")  # doctest: +SKIP
    >>> cfg.arch.resolution, cfg.preprocessing.mean  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.arch import Arch
from nas.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    parse_data_spec,
)
from nas.errors import ArchError, ArtifactError
from nas.io import read_json

__all__ = ["FORMAT_VERSION", "TIMM_NAME", "Preprocessing", "ModelConfig", "preprocessing_for"]

FORMAT_VERSION = 1
TIMM_NAME = "vitnas"

# Normalisation each dataset kind of nas.data applies (digits: grey replicated to RGB).
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((DIGITS_MEAN,) * 3, (DIGITS_STD,) * 3),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
_KEYS = ("format_version", "architecture", "arch", "num_classes", "in_chans", "search_space",
         "preprocessing", "bn_folded", "qkv_fused", "onednn_linears", "source", "metrics",
         "pretrained_cfg")


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared: resize to ``resolution`` (bilinear), normalise."""

    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    data: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct, "data": self.data}

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> Preprocessing:
        raw = _mapping(raw, f"{source}: preprocessing")
        allowed = ("resolution", "mean", "std", "interpolation", "crop_pct", "data")
        _no_unknown(raw, allowed, f"{source}: preprocessing")
        try:
            return cls(resolution=int(raw["resolution"]),
                       mean=tuple(float(v) for v in raw["mean"]),
                       std=tuple(float(v) for v in raw["std"]),
                       interpolation=str(raw.get("interpolation", "bilinear")),
                       crop_pct=float(raw.get("crop_pct", 1.0)), data=str(raw.get("data", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: preprocessing: missing or bad value ({e})") from None


def preprocessing_for(data: str, resolution: int) -> Preprocessing:
    """The preprocessing of dataset spec ``data`` (kind ``digits``, ``cifar10``...)."""
    kind = parse_data_spec(data).kind
    mean, std = _STATS.get(kind, (IMAGENET_MEAN, IMAGENET_STD))
    return Preprocessing(resolution=resolution, mean=tuple(mean), std=tuple(std),
                         data=kind)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything ``config.json`` says about an exported model (see the module docstring)."""

    arch: Arch
    num_classes: int
    in_chans: int
    space_name: str
    space_fingerprint: str
    preprocessing: Preprocessing
    bn_folded: bool = True
    qkv_fused: bool = True
    onednn_linears: bool = True
    source: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def timm_cfg(self) -> dict[str, Any]:
        """timm's pretrained config (data config and layer names) for this model."""
        p = self.preprocessing
        first = "stem.proj.0" if self.arch.stem == "convs" else "stem.proj"
        return {"input_size": [self.in_chans, p.resolution, p.resolution],
                "fixed_input_size": True, "interpolation": p.interpolation,
                "crop_pct": p.crop_pct, "crop_mode": "center", "mean": list(p.mean),
                "std": list(p.std), "num_classes": self.num_classes, "first_conv": first,
                "classifier": "head.fc", "license": "apache-2.0"}

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "architecture": TIMM_NAME,
                "arch": self.arch.to_dict(), "num_classes": self.num_classes,
                "in_chans": self.in_chans,
                "search_space": {"name": self.space_name, "fingerprint": self.space_fingerprint},
                "preprocessing": self.preprocessing.to_dict(), "bn_folded": self.bn_folded,
                "qkv_fused": self.qkv_fused, "onednn_linears": self.onednn_linears,
                "source": self.source, "metrics": self.metrics,
                "pretrained_cfg": self.timm_cfg()}

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "config.json") -> ModelConfig:
        """Parse and validate; unknown keys, a newer format or a bad arch are errors."""
        raw = _mapping(raw, source)
        _no_unknown(raw, _KEYS, source)
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(f"{source}: format_version {version!r} is not supported "
                                f"(this vitnas reads version {FORMAT_VERSION})")
        if raw.get("architecture") != TIMM_NAME:
            raise ArtifactError(f"{source}: architecture must be {TIMM_NAME!r}, "
                                f"got {raw.get('architecture')!r}")
        try:
            arch = Arch.from_dict(raw.get("arch"), source=f"{source}: arch")
        except ArchError as e:
            raise ArtifactError(str(e)) from None
        space = _mapping(raw.get("search_space"), f"{source}: search_space")
        ints = {}
        for key in ("num_classes", "in_chans"):
            v = raw.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ArtifactError(f"{source}: {key} must be a positive integer, got {v!r}")
            ints[key] = v
        flags = {}
        for key in ("bn_folded", "qkv_fused"):
            v = raw.get(key)
            if not isinstance(v, bool):
                raise ArtifactError(f"{source}: {key} must be true or false, got {v!r}")
            flags[key] = v
        onednn = raw.get("onednn_linears", True)  # absent before it was a choice: always on
        if not isinstance(onednn, bool):
            raise ArtifactError(f"{source}: onednn_linears must be true or false, got {onednn!r}")
        flags["onednn_linears"] = onednn
        return cls(arch=arch, space_name=str(space.get("name", "")),
                   space_fingerprint=str(space.get("fingerprint", "")),
                   preprocessing=Preprocessing.from_dict(raw.get("preprocessing"), source),
                   source=dict(raw.get("source") or {}), metrics=dict(raw.get("metrics") or {}),
                   **ints, **flags)

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a model directory's ``config.json`` (or the file itself)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(read_json(path, what="model config"), source=str(path))


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _no_unknown(raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ArtifactError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                            f"allowed: {', '.join(allowed)}")
