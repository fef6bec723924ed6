"""The fused attention twins compute what the training-time mixers compute.

Head sizes that differ between query/key and value take the explicit CPU path of
``nas.export.fuse._attend`` instead of SDPA; both are checked against the mixers.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.arch import canonicalize, load_arch
from nas.export import fuse
from nas.export.fuse import _attend, fuse_attention
from nas.model import build_model
from nas.model.mixers import Attention, CascadedGroupAttention, SRAttention
from nas.space import load_space

from .conftest import ROOT


def _check_twin(mixer: torch.nn.Module, hw: tuple[int, int], dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    for p in mixer.parameters():  # non-zero biases too
        p.data.normal_(0, 0.2)
    twin = fuse._fused(mixer.eval())
    assert twin is not None
    x = torch.randn(2, hw[0] * hw[1], dim)
    with torch.no_grad():
        want, got = mixer(x, hw), twin(x, hw)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    return twin


@pytest.mark.parametrize("qk_dim", [8, 16], ids=["small-qk", "equal"])
def test_attention_twin(qk_dim):
    _check_twin(Attention(32, heads=2, qk_dim=qk_dim), (4, 4), 32)


@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_sra_twin_with_small_qk(sr_ratio):
    _check_twin(SRAttention(32, heads=2, qk_dim=8, sr_ratio=sr_ratio), (4, 4), 32)


@pytest.mark.parametrize("hw", [(4, 4), (8, 8), (6, 5)], ids=["one-window", "windows", "padded"])
def test_cascaded_group_attention_twin(hw):
    _check_twin(CascadedGroupAttention(32, heads=2, qk_dim=4, window=4, kernel=3), hw, 32)


def test_explicit_path_matches_sdpa_and_is_taken(monkeypatch):
    q, k = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 10, 4)
    v = torch.randn(2, 3, 10, 16)
    torch.testing.assert_close(_attend(q, k, v), F.scaled_dot_product_attention(q, k, v))
    calls = []
    monkeypatch.setattr(fuse.F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(1) or torch.zeros(()))
    _attend(q, k, v)  # head sizes differ: no SDPA
    assert calls == []
    _attend(q, k, torch.randn(2, 3, 10, 4))  # equal sizes: SDPA's fused kernel
    _attend(q.double(), k.double(), v.double())  # not fp32: SDPA
    assert calls == [1, 1]


def test_fuse_attention_swaps_every_attention_mixer():
    space = load_space("imagenet224")
    ref = ROOT / "search_spaces" / "reference" / "efficientvit_m0.yaml"
    arch = canonicalize(space, load_arch(ref))
    model = fuse_attention(build_model(arch, num_classes=10).eval())
    mixers = [b.mixer for s in model.stages for b in s.blocks]
    assert any(isinstance(m, fuse.FusedCascadedGroupAttention) for m in mixers)
    assert not any(isinstance(m, CascadedGroupAttention) for m in mixers)


class _Wrap(torch.nn.Module):
    def __init__(self, mixer: torch.nn.Module, hw: tuple[int, int]):
        super().__init__()
        self.mixer, self.hw = mixer, hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x, self.hw)


def test_cascaded_twin_cache_follows_the_weights_and_exporters():
    twin = _check_twin(CascadedGroupAttention(32, heads=2, qk_dim=4, window=4, kernel=3),
                       (4, 4), 32)
    x = torch.randn(1, 16, 32)
    with torch.no_grad():
        before = twin(x, (4, 4))
        twin.qkv.mul_(2.0)  # in place: the cached views see it, the scaled conv is rebuilt
        twin.dw_kernel.mul_(0.5)
        after = twin(x, (4, 4))
        twin.qkv.div_(2.0)
        twin.dw_kernel.div_(0.5)
        fresh = twin.__class__.__new__(twin.__class__)
        fresh.__setstate__(twin.__getstate__())
        assert fresh._cache is None
    assert not torch.allclose(before, after)
    with torch.no_grad():
        torch.testing.assert_close(twin(x, (4, 4)), before)
    program = torch.export.export(_Wrap(twin, (4, 4)).eval(), (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), before, atol=1e-5, rtol=1e-4)
    out = twin(x, (4, 4))  # autograd on: fresh views, gradients reach the parameters
    out.sum().backward()
    assert twin.qkv.grad is not None and twin.dw_kernel.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), before)
