"""vitnas: hardware-aware neural architecture search for efficient vision transformers.

``nas.load_model(DIR)`` loads a model exported by ``nas export`` (safetensors and JSON,
no pickle). Importing :mod:`nas.export` also registers the timm model name ``vitnas``,
so ``timm.create_model("local-dir:DIR", pretrained=True)`` works.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import nas` (and every CLI command) stays cheap.
    if name == "load_model":
        from nas.export import load_model

        return load_model
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
