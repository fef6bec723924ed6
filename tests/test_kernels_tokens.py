"""Tests for kernels.tokens: static pruning (EViT-style) and ToMe merging."""
from __future__ import annotations

import pytest
import torch

from nas.kernels import merge_tokens, prune_tokens, token_scores, unmerge_tokens, unprune_tokens


def _x(b=2, n=10, c=4, seed=0):
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed))


def test_token_scores_is_l2_norm():
    x = _x()
    assert torch.allclose(token_scores(x), x.norm(dim=-1))
    assert token_scores(x.bfloat16()).dtype == torch.float32


def test_prune_keeps_highest_scores_in_original_order():
    x = _x(b=1, n=6, c=2)
    scores = torch.tensor([[0.1, 5.0, 0.3, 4.0, 0.2, 3.0]])
    kept, idx = prune_tokens(x, 3, scores)
    assert idx.tolist() == [[1, 3, 5]] and idx.dtype == torch.long
    assert torch.equal(kept, x[:, [1, 3, 5]])


def test_prune_ties_go_to_lower_index():
    x = _x(b=2, n=5, c=3)
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    _, idx = prune_tokens(x, 2, scores)
    assert idx.tolist() == [[1, 2], [0, 1]]


def test_unprune_restores_untouched_tokens():
    x = _x(b=3, n=12, c=5)
    kept, idx = prune_tokens(x, 7, token_scores(x))
    assert torch.equal(unprune_tokens(kept, idx, x), x)
    out = unprune_tokens(kept + 1.0, idx, x)
    mask = torch.zeros(3, 12, dtype=torch.bool).scatter_(1, idx, True)
    assert torch.equal(out[~mask], x[~mask]) and torch.equal(out[mask], x[mask] + 1.0)
    assert out is not x


def test_prune_errors():
    x = _x()
    with pytest.raises(ValueError, match="keep"):
        prune_tokens(x, 0, token_scores(x))
    with pytest.raises(ValueError, match="keep"):
        prune_tokens(x, 11, token_scores(x))
    with pytest.raises(ValueError, match="scores"):
        prune_tokens(x, 3, token_scores(x)[:, :4])
    with pytest.raises(ValueError, match="x must be 3-D"):
        prune_tokens(x[0], 3, token_scores(x))


@pytest.mark.parametrize("n, r", [(10, 3), (11, 5), (7, 3), (2, 1), (16, 8)])
def test_merge_reduces_tokens_and_preserves_size(n, r):
    x = _x(b=3, n=n, c=6)
    merged, size, assign = merge_tokens(x, r)
    assert merged.shape == (3, n - r, 6) and size.shape == (3, n - r, 1)
    assert torch.all(size.sum(dim=1) == n)
    assert assign.shape == (3, n) and assign.dtype == torch.long
    assert int(assign.min()) >= 0 and int(assign.max()) < n - r
    # sizes are the number of original tokens assigned to each row
    counts = torch.zeros(3, n - r).scatter_add_(1, assign, torch.ones(3, n))
    assert torch.equal(counts, size.squeeze(-1))


def test_merge_r_zero_is_identity_and_r_is_clamped():
    x = _x()
    merged, size, assign = merge_tokens(x, 0)
    assert merged is x and torch.equal(unmerge_tokens(merged, assign), x)
    assert torch.equal(size, torch.ones(2, 10, 1))
    merged, _, _ = merge_tokens(x, 99)
    assert merged.shape[1] == 5
    merged, _, assign = merge_tokens(x, -3)
    assert merged is x and torch.equal(assign, torch.arange(10).expand(2, 10))


def test_merge_by_hand_is_size_weighted_mean_and_ordered():
    # A = tokens 0, 2, 4; B = tokens 1, 3. Best matches: 0 -> 3 (cos 0.71),
    # 2 -> 3 (cos 1, parallel), 4 -> 1 (cos 0.10); with r = 1 only token 2 merges.
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [2.0, 2.0, 0.0],
                       [1.0, 1.0, 0.0], [0.0, -1.0, 0.1]]])
    size = torch.tensor([[[1.0], [1.0], [3.0], [1.0], [1.0]]])
    merged, new_size, assign = merge_tokens(x, 1, size)
    # unmerged A (tokens 0, 4 in order), then B (tokens 1, 3)
    expected_b3 = (3.0 * x[0, 2] + 1.0 * x[0, 3]) / 4.0
    assert torch.allclose(merged[0, 0], x[0, 0]) and torch.allclose(merged[0, 1], x[0, 4])
    assert torch.equal(merged[0, 2], x[0, 1]) and torch.allclose(merged[0, 3], expected_b3)
    assert new_size[0, :, 0].tolist() == [1.0, 1.0, 1.0, 4.0]
    assert assign.tolist() == [[0, 2, 3, 3, 1]]
    restored = unmerge_tokens(merged, assign)
    assert torch.allclose(restored[0, 2], expected_b3) and torch.equal(restored[0, 1], x[0, 1])


def test_merge_repeatedly_composes_assignments():
    x = _x(b=2, n=20, c=8)
    assign = torch.arange(20).expand(2, 20)
    size, cur = None, x
    while cur.shape[1] > 6:
        cur, size, step = merge_tokens(cur, min(cur.shape[1] - 6, cur.shape[1] // 2), size)
        assign = step.gather(1, assign)
    assert cur.shape[1] == 6 and torch.all(size.sum(1) == 20)
    # with unit initial sizes, each token is the plain mean of its original sources
    sums = torch.zeros(2, 6, 8).scatter_add(1, assign.unsqueeze(-1).expand(-1, -1, 8), x)
    assert torch.allclose(cur, sums / size, atol=1e-5)


def test_merge_is_deterministic_and_differentiable():
    x = _x(b=4, n=33, c=16).requires_grad_()
    a = merge_tokens(x, 10)
    b = merge_tokens(x, 10)
    assert all(torch.equal(u, w) for u, w in zip(a, b, strict=True))
    a[0].sum().backward()
    # every output row is a convex combination of inputs: gradients sum to rows * C
    assert torch.allclose(x.grad.sum(), torch.tensor(4 * 23 * 16.0), atol=1e-2)


def test_merge_keeps_dtype_and_accepts_size():
    x = _x(n=9).bfloat16()
    merged, size, _ = merge_tokens(x, 4, torch.full((2, 9, 1), 2.0))
    assert merged.dtype == torch.bfloat16 and size.dtype == torch.float32
    assert torch.all(size.sum(1) == 18)


def test_merge_errors():
    x = _x()
    with pytest.raises(ValueError, match="size"):
        merge_tokens(x, 2, torch.ones(2, 10))
    with pytest.raises(ValueError, match="r must be an int"):
        merge_tokens(x, 2.0)
    with pytest.raises(ValueError, match="assign"):
        unmerge_tokens(x, torch.zeros(3, 10, dtype=torch.long))


@pytest.mark.parametrize("n,r", [(16, 4), (15, 7), (9, 0), (8, 4)])
def test_merge_and_prune_match_their_reference_twins(n, r):
    """The vectorised kernels compute what the plain per-token loops say (ties included:
    duplicated tokens tie exactly on similarity and on score)."""
    from nas.kernels.tokens import merge_tokens_reference, prune_tokens_reference

    g = torch.Generator().manual_seed(n * 10 + r)
    x = torch.randn(3, n, 6, generator=g)
    x[1, 2] = x[1, 0]  # exact ties
    x[2, 3] = x[2, 1]
    size = torch.randint(1, 4, (3, n, 1), generator=g).float()
    for s in (None, size):
        got = merge_tokens(x, r, s)
        want = merge_tokens_reference(x, r, s)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-6)
    scores = token_scores(x)
    scores[0, 1] = scores[0, 5]  # a tie between two scores
    for keep in (1, n // 2, n):
        got_x, got_i = prune_tokens(x, keep, scores)
        want_x, want_i = prune_tokens_reference(x, keep, scores)
        assert torch.equal(got_i, want_i) and torch.equal(got_x, want_x)
