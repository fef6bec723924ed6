"""Standalone models built from an architecture (what ``extract`` and ``export`` give)."""
from nas.model.vit import Block, Stage, VisionTransformer, build_model

__all__ = ["Block", "Stage", "VisionTransformer", "build_model"]
