"""Static token reduction: importance pruning and bipartite token merging.

* Pruning keeps the highest-scoring tokens, as EViT (Liang et al., ICLR 2022) and
  DynamicViT (Rao et al., NeurIPS 2021) do, with a fixed keep count so shapes stay
  static. Without a CLS token, :func:`token_scores` uses the L2 norm of each token as
  a mixer-agnostic importance proxy. Pruned tokens skip the blocks in between and are
  put back by :func:`unprune_tokens`.
* Merging is ToMe's bipartite soft matching (Bolya et al., ICLR 2023): tokens at even
  positions form set A and odd positions set B; every A token finds its most
  cosine-similar B token (on the raw features, no normalisation layer), and the ``r``
  A tokens with the highest similarity are merged into their match by a size-weighted
  average. :func:`unmerge_tokens` copies every merged token back to its sources.

Everything is vectorised over batch and tokens and deterministic: ties go to the lower
index (stable sorts; ``max`` returns the first maximum). On CUDA, ``scatter_add`` may
sum merged sources in a varying order unless ``torch.use_deterministic_algorithms``.
Both export to ONNX with a free batch size (out-of-place scatters, batch-agnostic
index tensors); ONNX has no stable sort, so an exported model may break exact score
ties differently (a tie between float norms is rare).

Example:
    >>> x = torch.randn(2, 16, 8)
    >>> kept, idx = prune_tokens(x, 8, token_scores(x))
    >>> merged, size, assign = merge_tokens(x, 4)
    >>> tuple(merged.shape), int(size.sum()), tuple(unmerge_tokens(merged, assign).shape)
    ((2, 12, 8), 32, (2, 16, 8))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["token_scores", "prune_tokens", "unprune_tokens", "merge_tokens", "unmerge_tokens",
           "prune_tokens_reference", "merge_tokens_reference"]


def _check_tokens(x: torch.Tensor, name: str = "x") -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be 3-D (B, N, C); got shape {tuple(x.shape)}")


def _rows(idx: torch.Tensor, c: int) -> torch.Tensor:
    return idx.unsqueeze(-1).expand(-1, -1, c)


def token_scores(x: torch.Tensor) -> torch.Tensor:
    """Importance of every token: its L2 norm over channels, ``(B, N)`` in fp32.

    Args:
        x: tokens ``(B, N, C)``.
    """
    _check_tokens(x)
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32)


def _order_desc(scores: torch.Tensor) -> torch.Tensor:
    """Indices sorting ``scores`` (B, N) in descending order along dim 1, ties to the lower index.

    While exporting (ONNX/TorchScript tracing) the sort is the plain one, since ONNX has
    no stable sort; only exact ties of float scores can then order differently.
    """
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return torch.sort(scores, dim=1, descending=True).indices
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def prune_tokens(x: torch.Tensor, keep: int, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``keep`` highest-scoring tokens, in their original order.

    Args:
        x: tokens ``(B, N, C)``.
        keep: tokens to keep, in ``[1, N]``.
        scores: ``(B, N)``; ties go to the lower index.

    Returns:
        ``(x_kept (B, keep, C), idx (B, keep))`` with ``idx`` ascending (long).
    """
    _check_tokens(x)
    b, n, c = x.shape
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= n:
        raise ValueError(f"keep must be an int in [1, {n}] (N); got {keep!r}")
    if tuple(scores.shape) != (b, n):
        raise ValueError(f"scores must have shape (B, N) = {(b, n)}; got {tuple(scores.shape)}")
    order = _order_desc(scores)
    idx = order[:, :keep].sort(dim=1).values
    return x.gather(1, _rows(idx, c)), idx


def unprune_tokens(x_kept: torch.Tensor, idx: torch.Tensor, x_full: torch.Tensor) -> torch.Tensor:
    """A copy of ``x_full (B, N, C)`` whose rows ``idx (B, keep)`` are ``x_kept (B, keep, C)``.

    The other (pruned) tokens keep the value they had before pruning.
    """
    _check_tokens(x_kept, "x_kept")
    _check_tokens(x_full, "x_full")
    if tuple(idx.shape) != tuple(x_kept.shape[:2]) or x_kept.shape[2] != x_full.shape[2] \
            or x_kept.shape[0] != x_full.shape[0]:
        raise ValueError(f"x_kept (B, keep, C), idx (B, keep) and x_full (B, N, C) must agree; got "
                         f"{tuple(x_kept.shape)}, {tuple(idx.shape)}, {tuple(x_full.shape)}")
    return x_full.scatter(1, _rows(idx, x_full.shape[2]), x_kept.to(x_full.dtype))


def merge_tokens(x: torch.Tensor, r: int, size: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge ``r`` tokens by ToMe bipartite soft matching.

    Args:
        x: tokens ``(B, N, C)``.
        r: tokens to remove; clamped to ``[0, N // 2]``.
        size: ``(B, N, 1)`` number of original tokens each token stands for; ``None``
            means all ones (fp32).

    Returns:
        ``(x_merged (B, N - r, C), new_size (B, N - r, 1), assign (B, N) long)``.
        ``x_merged`` holds the unmerged A tokens (even positions) in their original
        order, then all B tokens (odd positions) in their original order; ``assign[b, n]``
        is the row of ``x_merged`` that original token ``n`` now lives in. With ``r == 0``
        it returns ``x`` itself, ``size`` (ones if ``None``) and the identity assignment.
    """
    _check_tokens(x)
    if isinstance(r, bool) or not isinstance(r, int):
        raise ValueError(f"r must be an int (clamped to [0, N // 2]); got {r!r}")
    b, n, c = x.shape
    if size is None:
        size = x.new_ones(b, n, 1, dtype=torch.float32)
    elif tuple(size.shape) != (b, n, 1):
        raise ValueError(f"size must have shape (B, N, 1) = {(b, n, 1)}; got {tuple(size.shape)}")
    r = max(0, min(r, n // 2))
    if r == 0:
        return x, size, torch.arange(n, device=x.device).expand_as(x[:, :, 0])

    a, bt = x[:, 0::2], x[:, 1::2]
    na, nb = a.shape[1], bt.shape[1]
    with torch.no_grad():
        sim = F.normalize(a.float(), dim=-1) @ F.normalize(bt.float(), dim=-1).transpose(1, 2)
        best, match = sim.max(dim=-1)  # (B, na): best B partner of each A token
        order = _order_desc(best)
        src = order[:, :r]  # A tokens merged away
        unm = order[:, r:].sort(dim=1).values  # A tokens kept, original order
        dst = match.gather(1, src)  # their B partners

    # size-weighted sums in fp32: B rows start from their own weighted value
    sa, sb = size[:, 0::2].float(), size[:, 1::2].float()
    wa, wb = a.float() * sa, bt.float() * sb
    wb = wb.scatter_add(1, _rows(dst, c), wa.gather(1, _rows(src, c)))
    sb = sb.scatter_add(1, dst.unsqueeze(-1), sa.gather(1, src.unsqueeze(-1)))
    # out-of-place scatters with tensor sources: the forms ONNX (TorchScript) export handles
    got = torch.zeros_like(sb, dtype=torch.bool).scatter(
        1, dst.unsqueeze(-1), torch.ones_like(dst, dtype=torch.bool).unsqueeze(-1))
    merged_b = torch.where(got, (wb / sb).to(x.dtype), bt)  # untouched B rows stay bit-exact
    x_merged = torch.cat([a.gather(1, _rows(unm, c)), merged_b], dim=1)
    new_size = torch.cat([sa.gather(1, unm.unsqueeze(-1)), sb], dim=1).to(size.dtype)

    keep_a = na - r
    rows_a = torch.zeros_like(best, dtype=torch.long)
    rows_a = rows_a.scatter(1, unm, torch.arange(keep_a, device=x.device).expand_as(unm))
    rows_a = rows_a.scatter(1, src, dst + keep_a)
    rows_b = torch.arange(keep_a, keep_a + nb, device=x.device).expand_as(rows_a[:, :nb])
    # interleave A (even) and B (odd) rows back into token order
    if na == nb:
        assign = torch.stack([rows_a, rows_b], dim=2).reshape(-1, n)
    else:
        assign = torch.stack([rows_a[:, :nb], rows_b], dim=2).reshape(-1, 2 * nb)
        assign = torch.cat([assign, rows_a[:, nb:]], dim=1)
    return x_merged, new_size, assign


def unmerge_tokens(x_merged: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Undo merging: ``out[b, n] = x_merged[b, assign[b, n]]``, shape ``(B, N, C)``."""
    _check_tokens(x_merged, "x_merged")
    if assign.dim() != 2 or assign.shape[0] != x_merged.shape[0]:
        raise ValueError(f"assign must be (B, N) with B = {x_merged.shape[0]}; "
                         f"got shape {tuple(assign.shape)}")
    return x_merged.gather(1, _rows(assign, x_merged.shape[2]))


# ---------------------------------------------------------------------------- reference twins
# Plain per-sample loops that say what the kernels above compute; the tests hold the fast
# versions to them (same outputs, ties included). Slow: for tests and reading only.

def prune_tokens_reference(x: torch.Tensor, keep: int, scores: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`prune_tokens`, one sample and one token at a time."""
    kept, idxs = [], []
    for xb, sb in zip(x, scores.tolist()):
        best = sorted(range(len(sb)), key=lambda i: (-sb[i], i))[:keep]  # ties: lower index
        idx = sorted(best)
        kept.append(xb[idx])
        idxs.append(torch.tensor(idx, dtype=torch.long))
    return torch.stack(kept), torch.stack(idxs)


def merge_tokens_reference(x: torch.Tensor, r: int, size: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`merge_tokens`, one sample and one token at a time."""
    b, n, c = x.shape
    size = torch.ones(b, n, 1) if size is None else size
    r = max(0, min(r, n // 2))
    outs, sizes, assigns = [], [], []
    for xb, szb in zip(x, size):
        a_ids, b_ids = list(range(0, n, 2)), list(range(1, n, 2))
        if r == 0:
            outs.append(xb)
            sizes.append(szb)
            assigns.append(torch.arange(n))
            continue
        match, best = {}, {}
        for i in a_ids:
            u = F.normalize(xb[i].float(), dim=0)
            sims = [float(u @ F.normalize(xb[j].float(), dim=0)) for j in b_ids]
            top = max(range(len(b_ids)), key=lambda k: (sims[k], -k))  # first maximum
            match[i], best[i] = b_ids[top], sims[top]
        order = sorted(a_ids, key=lambda i: (-best[i], a_ids.index(i)))
        src, unm = order[:r], sorted(order[r:])
        rows = [xb[i] for i in unm]
        row_size = [szb[i].float() for i in unm]
        for j in b_ids:
            into = [i for i in src if match[i] == j]
            if into:
                s = szb[j].float() + sum(szb[i].float() for i in into)
                total = xb[j].float() * szb[j].float() + sum(xb[i].float() * szb[i].float()
                                                             for i in into)
                rows.append((total / s).to(x.dtype))
                row_size.append(s)
            else:
                rows.append(xb[j])
                row_size.append(szb[j].float())
        assign = []
        for t in range(n):
            if t % 2:  # a B token: after the kept A rows, in B order
                assign.append(len(unm) + b_ids.index(t))
            elif t in unm:
                assign.append(unm.index(t))
            else:
                assign.append(len(unm) + b_ids.index(match[t]))
        outs.append(torch.stack(rows))
        sizes.append(torch.stack(row_size).to(size.dtype))
        assigns.append(torch.tensor(assign, dtype=torch.long))
    return torch.stack(outs), torch.stack(sizes), torch.stack(assigns)
