"""Tests for kernels.patterns and kernels.attention: every fast path against its reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.kernels import PATTERNS, Pattern, linear_attention, pattern_mask, sparse_attention
from nas.kernels.attention import IMPLS, LINEAR_IMPLS, auto_impl

# --------------------------------------------------------------------------- patterns


def _groups_to_mask(groups: list[list[int]], n: int) -> torch.Tensor:
    m = torch.zeros(n, n, dtype=torch.bool)
    for g in groups:
        for i in g:
            for j in g:
                m[i, j] = True
    return m


@pytest.mark.parametrize("kwargs, field", [
    (dict(kind="sparse"), "Pattern.kind"),
    (dict(kind="local", window=0), "Pattern.window"),
    (dict(kind="local", window=2.0), "Pattern.window"),
    (dict(kind="local", window=True), "Pattern.window"),
    (dict(kind="local", shift=1), "Pattern.shift"),
    (dict(kind="dilated", shift=True), "Pattern.shift"),
    (dict(kind="block", density=0.0), "Pattern.density"),
    (dict(kind="block", density=1.5), "Pattern.density"),
    (dict(kind="local", density=0.5), "Pattern.density"),
])
def test_pattern_rejects_bad_fields(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Pattern(**kwargs)


def test_pattern_kind_error_lists_valid_kinds():
    with pytest.raises(ValueError, match="dense, local, dilated, block"):
        Pattern("swin")


def test_dense_mask_is_all_true():
    assert pattern_mask(Pattern("dense"), (3, 5)).all()
    assert pattern_mask(Pattern("dense"), (3, 5)).shape == (15, 15)


def test_local_4x4_window2_has_four_windows():
    groups = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert torch.equal(pattern_mask(Pattern("local", window=2), (4, 4)), _groups_to_mask(groups, 16))


def test_local_4x4_window2_shifted_has_nine_windows_without_wrap():
    # row/col window id = (r + 1) // 2: {0}, {1, 2}, {3}
    groups = [[0], [1, 2], [3], [4, 8], [5, 6, 9, 10], [7, 11], [12], [13, 14], [15]]
    m = pattern_mask(Pattern("local", window=2, shift=True), (4, 4))
    assert torch.equal(m, _groups_to_mask(groups, 16))


def test_local_odd_grid_gives_smaller_edge_windows():
    # 3x5, window 2: rows {0,1},{2}; cols {0,1},{2,3},{4}
    groups = [[0, 1, 5, 6], [2, 3, 7, 8], [4, 9], [10, 11], [12, 13], [14]]
    assert torch.equal(pattern_mask(Pattern("local", window=2), (3, 5)), _groups_to_mask(groups, 15))


def test_local_window_covering_grid_is_dense_even_when_shifted():
    assert pattern_mask(Pattern("local", window=7, shift=True), (5, 7)).all()
    assert pattern_mask(Pattern("local", window=7), (7, 7)).all()


def test_dilated_4x4_window2():
    # d = 2: groups by (r % 2, c % 2)
    groups = [[0, 2, 8, 10], [1, 3, 9, 11], [4, 6, 12, 14], [5, 7, 13, 15]]
    assert torch.equal(pattern_mask(Pattern("dilated", window=2), (4, 4)), _groups_to_mask(groups, 16))


def test_dilated_groups_spread_and_bounded():
    m = pattern_mask(Pattern("dilated", window=2), (5, 5))  # d = 3
    assert int(m.sum(1).max()) <= 4
    assert m[0, 3] and m[0, 15] and m[0, 18] and not m[0, 1]


def test_block_density_half_by_hand():
    expected = torch.tensor([
        [1, 0, 1, 0, 1, 0],
        [1, 1, 0, 1, 0, 1],
        [1, 0, 1, 0, 1, 0],
        [1, 1, 0, 1, 0, 1],
        [1, 0, 1, 0, 1, 0],
        [1, 1, 0, 1, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(pattern_mask(Pattern("block", window=1, density=0.5), (1, 6)), expected)


def test_block_two_blocks_is_block_lower_triangular():
    m = pattern_mask(Pattern("block", window=2, density=0.5), (2, 4))  # b = 4, two blocks
    assert m[:4, :4].all() and not m[:4, 4:].any() and m[4:].all()


def test_block_density_one_is_dense_and_last_block_may_be_short():
    assert pattern_mask(Pattern("block", window=2, density=1.0), (3, 3)).all()
    m = pattern_mask(Pattern("block", window=2, density=0.25), (1, 10))  # blocks 4, 4, 2
    assert m[8:, 8:].all() and m[8:, :4].all() and not m[8:, 4:8].any()


ALL_PATTERNS = [Pattern("dense"), Pattern("local", window=3), Pattern("local", window=3, shift=True),
                Pattern("dilated", window=3), Pattern("block", window=2, density=0.25),
                Pattern("block", window=3, density=0.5)]


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=str)
@pytest.mark.parametrize("hw", [(1, 1), (1, 13), (7, 9), (8, 8)])
def test_every_query_attends_itself(pattern, hw):
    m = pattern_mask(pattern, hw)
    assert m.shape == (hw[0] * hw[1],) * 2 and m.dtype == torch.bool
    assert m.diagonal().all()
    if pattern.kind != "block":
        assert torch.equal(m, m.T)


def test_pattern_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="pattern"):
        pattern_mask("local", (4, 4))
    with pytest.raises(ValueError, match="hw"):
        pattern_mask(Pattern("local"), (0, 4))


def test_patterns_constant():
    assert PATTERNS == ("dense", "local", "dilated", "block")


# --------------------------------------------------------------------------- sparse attention

_FAST = {"local": "window", "dilated": "grid", "block": "block", "dense": "window"}

CASES = [  # (pattern, hw)
    (Pattern("local", window=4), (7, 9)),
    (Pattern("local", window=4, shift=True), (7, 9)),
    (Pattern("local", window=7, shift=True), (14, 14)),
    (Pattern("local", window=7), (14, 14)),
    (Pattern("local", window=4), (1, 23)),
    (Pattern("local", window=3, shift=True), (10, 5)),
    (Pattern("local", window=7), (5, 3)),  # window covers the grid: dense
    (Pattern("dilated", window=4), (7, 9)),
    (Pattern("dilated", window=7), (14, 14)),
    (Pattern("dilated", window=3), (1, 23)),
    (Pattern("dilated", window=2), (11, 6)),
    (Pattern("block", window=2, density=0.25), (7, 9)),
    (Pattern("block", window=3, density=0.5), (1, 23)),
    (Pattern("block", window=2, density=0.1), (5, 5)),
    (Pattern("block", window=7, density=0.25), (14, 14)),
    (Pattern("dense"), (3, 4)),
]


def _qkv(b, h, n, dqk=8, dv=6, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, n, dqk, generator=g) for _ in range(2))
    v = torch.randn(b, h, n, dv, generator=g)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


@pytest.mark.parametrize("pattern, hw", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("local_heads", [None, 0, 1, 3])
def test_fast_paths_match_reference(pattern, hw, local_heads):
    q, k, v = _qkv(2, 3, hw[0] * hw[1])
    ref = sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=local_heads, impl="reference")
    for impl in ("auto", "sdpa_mask", _FAST[pattern.kind]):
        out = sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=local_heads, impl=impl)
        assert out.shape == ref.shape and out.dtype == v.dtype
        assert (out - ref).abs().max() <= 1e-5, impl


def test_reference_matches_manual_dense_attention_and_scale():
    q, k, v = _qkv(1, 2, 12, dqk=5)
    ref = sparse_attention(q, k, v, pattern=Pattern("dense"), hw=(3, 4), impl="reference")
    manual = ((q @ k.transpose(-2, -1)) * 5 ** -0.5).softmax(-1) @ v
    assert (ref - manual).abs().max() <= 1e-6


def test_local_heads_zero_is_global_and_all_is_none():
    q, k, v = _qkv(2, 4, 63)
    pat = Pattern("local", window=4)
    dense = F.scaled_dot_product_attention(q, k, v)
    assert (sparse_attention(q, k, v, pattern=pat, hw=(7, 9), local_heads=0) - dense).abs().max() <= 1e-6
    a = sparse_attention(q, k, v, pattern=pat, hw=(7, 9), local_heads=4)
    assert torch.equal(a, sparse_attention(q, k, v, pattern=pat, hw=(7, 9)))
    half = sparse_attention(q, k, v, pattern=pat, hw=(7, 9), local_heads=2)
    assert torch.equal(half[:, :2], a[:, :2]) and (half[:, 2:] - dense[:, 2:]).abs().max() <= 1e-6


@pytest.mark.parametrize("batch", [1, 64])
def test_batch_sizes(batch):
    q, k, v = _qkv(batch, 2, 30, dqk=4, dv=4)
    pat = Pattern("local", window=4, shift=True)
    ref = sparse_attention(q, k, v, pattern=pat, hw=(5, 6), impl="reference")
    assert (sparse_attention(q, k, v, pattern=pat, hw=(5, 6)) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("pattern, hw", [CASES[1], CASES[8], CASES[11]], ids=str)
def test_gradients_match_reference(pattern, hw):
    grads = []
    for impl in ("reference", "auto"):
        q, k, v = (t.requires_grad_() for t in _qkv(2, 2, hw[0] * hw[1]))
        out = sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=1, impl=impl)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([t.grad for t in (q, k, v)])
    for a, b in zip(*grads, strict=True):
        assert torch.isfinite(b).all() and (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pattern, hw", [CASES[2], CASES[7], CASES[11]], ids=str)
def test_half_precision_on_cpu(dtype, pattern, hw):
    q, k, v = _qkv(2, 2, hw[0] * hw[1], dtype=dtype)
    ref = sparse_attention(q, k, v, pattern=pattern, hw=hw, impl="reference").float()
    out = sparse_attention(q, k, v, pattern=pattern, hw=hw).float()
    assert out.dtype == torch.float32 and (out - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_auto_impl_rule():
    assert auto_impl(Pattern("local", window=7), (14, 14)) == "window"
    assert auto_impl(Pattern("local", window=7), (7, 7)) == "dense"
    assert auto_impl(Pattern("dilated", window=7), (56, 56)) == "grid"
    assert auto_impl(Pattern("block", window=7, density=0.25), (28, 28)) == "block"
    assert auto_impl(Pattern("block", window=7, density=1.0), (28, 28)) == "dense"
    assert auto_impl(Pattern("dense"), (28, 28)) == "dense"


def test_sparse_attention_errors():
    q, k, v = _qkv(1, 2, 12)
    pat = Pattern("local", window=2)
    with pytest.raises(ValueError, match="impl must be one of auto, reference"):
        sparse_attention(q, k, v, pattern=pat, hw=(3, 4), impl="cuda")
    with pytest.raises(ValueError, match="impl='grid'"):
        sparse_attention(q, k, v, pattern=pat, hw=(3, 4), impl="grid")
    with pytest.raises(ValueError, match="local_heads"):
        sparse_attention(q, k, v, pattern=pat, hw=(3, 4), local_heads=3)
    with pytest.raises(ValueError, match="hw"):
        sparse_attention(q, k, v, pattern=pat, hw=(4, 4))
    with pytest.raises(ValueError, match="pattern"):
        sparse_attention(q, k, v, pattern="local", hw=(3, 4))
    with pytest.raises(ValueError, match="4-D"):
        sparse_attention(q[0], k[0], v[0], pattern=pat, hw=(3, 4))
    assert set(IMPLS) >= {"auto", "reference", "sdpa_mask", "window", "grid", "block", "flex"}


@pytest.mark.slow
@pytest.mark.parametrize("pattern, hw", [CASES[1], CASES[8], CASES[11]], ids=str)
def test_flex_matches_reference(pattern, hw):
    q, k, v = _qkv(2, 2, hw[0] * hw[1], dv=8)
    ref = sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=1, impl="reference")
    out = sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=1, impl="flex")
    assert (out - ref).abs().max() <= 1e-5


# --------------------------------------------------------------------------- linear attention


@pytest.mark.parametrize("nq, n", [(1, 1), (17, 17), (5, 40)])
def test_linear_attention_fast_matches_reference(nq, n):
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 3, nq, 8, generator=g), torch.randn(2, 3, n, 8, generator=g), \
        torch.randn(2, 3, n, 5, generator=g)
    ref = linear_attention(q, k, v, impl="reference")
    assert ref.shape == (2, 3, nq, 5)
    for impl in ("linear", "auto"):
        assert (linear_attention(q, k, v, impl=impl) - ref).abs().max() <= 1e-5


def test_linear_attention_matches_formula_by_hand():
    q, k, v = torch.randn(3, 1, 1, 4, 2).unbind(0)
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    expected = torch.stack([
        sum((fq[0, 0, i] @ fk[0, 0, j]) * v[0, 0, j] for j in range(4))
        / (sum(fq[0, 0, i] @ fk[0, 0, j] for j in range(4)) + 1e-6) for i in range(4)])
    assert (linear_attention(q, k, v)[0, 0] - expected).abs().max() <= 1e-5


def test_linear_attention_bf16_and_errors():
    q, k, v = (t.bfloat16() for t in _qkv(1, 2, 20))
    out = linear_attention(q, k, v)
    ref = linear_attention(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() <= 2e-2 * ref.abs().max()
    with pytest.raises(ValueError, match="impl must be one of auto, reference, linear"):
        linear_attention(q, k, v, impl="performer")
    with pytest.raises(ValueError, match="eps"):
        linear_attention(q, k, v, eps=-1.0)
    assert LINEAR_IMPLS == ("auto", "reference", "linear")


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern, hw", CASES, ids=str)
def test_cuda_half_precision_matches_reference(dtype, pattern, hw):
    q, k, v = _qkv(2, 3, hw[0] * hw[1], dqk=16, dv=16, dtype=dtype, device="cuda")
    ref = sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=2, impl="reference").float()
    scale = ref.abs().max()
    for impl in ("auto", "sdpa_mask", _FAST[pattern.kind]):
        out = sparse_attention(q, k, v, pattern=pattern, hw=hw, local_heads=2, impl=impl).float()
        assert (out - ref).abs().max() <= 1e-2 * scale, impl
    lin = linear_attention(q, k, v).float()
    lref = linear_attention(q, k, v, impl="reference").float()
    assert (lin - lref).abs().max() <= 1e-2 * lref.abs().max()
