"""Fast attention and token-reduction kernels, each beside its reference twin.

Sparse attention patterns (Swin local windows, MaxViT dilated grid, BigBird-like
blocks) with heterogeneous heads, kernelised linear attention (Katharopoulos et al.,
ICML 2020), and static token pruning (EViT / DynamicViT) and merging (ToMe, Bolya et
al., ICLR 2023). ``KERNELS_VERSION`` changes whenever numerics or the choice of fast
path change, so latency tables and predictors built on an older version can be told
apart.
"""
from __future__ import annotations

from nas.kernels.attention import linear_attention, sparse_attention
from nas.kernels.patterns import PATTERNS, Pattern, pattern_mask
from nas.kernels.tokens import (
           merge_tokens,
           prune_tokens,
           token_scores,
           unmerge_tokens,
           unprune_tokens,
)

__all__ = ["KERNELS_VERSION", "Pattern", "PATTERNS", "pattern_mask", "sparse_attention",
           "linear_attention", "prune_tokens", "unprune_tokens", "merge_tokens", "unmerge_tokens",
           "token_scores"]

KERNELS_VERSION = "1.1"
