"""Supernet: subnet forward equals the extracted standalone model; weights are shared."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.arch import extreme_arch, sample_arch
from nas.model import build_model
from nas.model.mixers import MIXERS
from nas.space import PATTERNS
from nas.supernet import Supernet, mask_2_4

from .conftest import SHIPPED, arch_with

N_ARCHS = {"tiny32": 50, "full32": 50, "imagenet224": 50}


@pytest.fixture(scope="module")
def supernets(spaces):
    g = torch.Generator().manual_seed(0)
    return {name: Supernet(spaces[name], generator=g).eval() for name in SHIPPED}


def _agree(net, arch, batch=2, atol=1e-5):
    x = torch.randn(batch, 3, arch.resolution, arch.resolution,
                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = net(x, arch)
        b = net.extract(arch).eval()(x)
    assert a.shape == (batch, net.space.num_classes)
    assert torch.isfinite(a).all()
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs diff {err:.2e} for {arch.to_json()}"


@pytest.mark.parametrize("name", ["tiny32", "full32"])
def test_supernet_matches_extracted(supernets, spaces, name):
    rng = np.random.default_rng(0)
    for _ in range(N_ARCHS[name]):
        _agree(supernets[name], sample_arch(spaces[name], rng))


@pytest.mark.slow
def test_supernet_matches_extracted_imagenet224(supernets, spaces):
    rng = np.random.default_rng(0)
    for _ in range(N_ARCHS["imagenet224"]):
        _agree(supernets["imagenet224"], sample_arch(spaces["imagenet224"], rng), batch=1)


def test_supernet_matches_extracted_imagenet224_quick(supernets, spaces):
    rng = np.random.default_rng(5)
    for _ in range(5):
        _agree(supernets["imagenet224"], sample_arch(spaces["imagenet224"], rng), batch=1)


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_every_mixer_contract(supernets, spaces, mixer):
    space = spaces["full32"]
    stage = 1 if mixer in ("sra", "linear", "mlp") else 0
    for which in ("min", "max"):
        arch = arch_with(space, {(f"stages[{stage}]", "mixer"): mixer}, which)
        assert arch.stages[stage].mixer == mixer
        _agree(supernets["full32"], arch)


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "dense"])
@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_every_pattern_contract(supernets, spaces, pattern, fraction):
    space = spaces["full32"]
    arch = arch_with(space, {("stages[0]", "mixer"): "attention", ("stages[0]", "pattern"): pattern,
                             ("stages[0]", "local_fraction"): fraction,
                             ("stages[0]", "heads"): 2, ("stages[0]", "shift"): True}, "max")
    assert arch.stages[0].pattern == pattern
    _agree(supernets["full32"], arch)


@pytest.mark.parametrize("method", ["prune", "merge"])
def test_token_reduction_runs(supernets, spaces, method):
    space = spaces["full32"]
    arch = arch_with(space, {("stages[1]", "keep_ratio"): 0.5, ("stages[1]", "mixer"): "mhsa",
                             ("stages[1]", "reduce_method"): method, ("stages[1]", "depth"): 2,
                             ("stages[1]", "reduce_at"): 1, ("stages[1]", "ffn_conv"): False,
                             ("stages[1]", "token_interaction"): False}, "max")
    assert arch.stages[1].keep_ratio == 0.5 and arch.stages[1].reduce_method == method
    _agree(supernets["full32"], arch)


def test_extraction_roundtrips_state_dict(supernets, spaces, tmp_path):
    from safetensors.torch import load_file, save_file

    space = spaces["full32"]
    rng = np.random.default_rng(4)
    for _ in range(5):
        arch = sample_arch(space, rng)
        model = supernets["full32"].extract(arch).eval()
        save_file(model.state_dict(), tmp_path / "m.safetensors")
        fresh = build_model(arch, num_classes=space.num_classes).eval()
        fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
        x = torch.randn(2, 3, arch.resolution, arch.resolution)
        with torch.no_grad():
            assert torch.equal(model(x), fresh(x))


def test_gradients_reach_only_used_shared_weights(spaces):
    space = spaces["tiny32"]
    net = Supernet(space, generator=torch.Generator().manual_seed(0)).train()
    small = extreme_arch(space, "min")
    x = torch.randn(4, 3, 32, 32)
    net(x, small).logsumexp(-1).sum().backward()
    used = {id(t) for t in net.parameters() if t.grad is not None and t.grad.abs().sum() > 0}
    assert 0 < len(used) < len(list(net.parameters()))
    big = extreme_arch(space, "max")
    net.zero_grad(set_to_none=True)
    net(x, big).logsumexp(-1).sum().backward()
    used_big = {id(t) for t in net.parameters() if t.grad is not None}
    assert len(used_big) > len(used)


def test_no_hidden_state_call_order(supernets, spaces):
    net, space = supernets["tiny32"], spaces["tiny32"]
    rng = np.random.default_rng(9)
    a, b = sample_arch(space, rng), sample_arch(space, rng)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = net(x, a)
        net(x, b)
        assert torch.equal(net(x, a), first)


def test_mask_2_4():
    w = torch.randn(6, 10)
    m = mask_2_4(w)
    groups = torch.nn.functional.pad(m, (0, 2)).view(6, 3, 4)
    assert ((groups != 0).sum(-1) <= 2).all()
    kept = torch.nn.functional.pad(w.abs(), (0, 2)).view(6, 3, 4).topk(2, -1).values.sum()
    assert torch.isclose(groups.abs().sum(), kept)


@pytest.mark.parametrize("mixer", ["mhsa", "sra", "linear"])
def test_attention_is_sliced_head_by_head(spaces, mixer):
    """A subnet with smaller heads keeps each head's own rows of q/k/v and columns of
    the projection; with fewer heads, each is a group of whole stored heads."""
    space = spaces["tiny32"]
    net = Supernet(space, generator=torch.Generator().manual_seed(0))
    big = arch_with(space, {("stages[1]", "mixer"): mixer, "heads": 4, "qk_ratio": 1.0}, "max")
    small = arch_with(space, {("stages[1]", "mixer"): mixer, "heads": 4, "qk_ratio": 0.5,
                              ("stages[1]", "embed_dim"): 96}, "max")
    two = arch_with(space, {("stages[1]", "mixer"): mixer, "heads": 2, "qk_ratio": 1.0}, "max")
    pre = "stages.1.blocks.0.mixer."
    wb, ws, w2 = (net.subnet_tensors(a) for a in (big, small, two))
    qb = wb[pre + "q.weight"].view(4, 32, 128)  # dim 128, 4 heads of 32
    qs = ws[pre + "q.weight"].view(4, 12, 96)   # dim 96, 4 heads of 24, half for q/k
    assert torch.equal(qs, qb[:, :12, :96])
    vb, vs = wb[pre + "v.weight"].view(4, 32, 128), ws[pre + "v.weight"].view(4, 24, 96)
    assert torch.equal(vs, vb[:, :24, :96])
    pb, ps = wb[pre + "proj.weight"].view(128, 4, 32), ws[pre + "proj.weight"].view(96, 4, 24)
    assert torch.equal(ps, pb[:96, :, :24])
    # 2 heads of 64 are the 4 stored heads in pairs: heads 0+1 and 2+3
    assert torch.equal(w2[pre + "q.weight"], wb[pre + "q.weight"])
    assert torch.equal(w2[pre + "proj.weight"], wb[pre + "proj.weight"])
    # gradients of the smaller subnet land in its head-wise slice only
    x = torch.randn(2, 3, 32, 32)
    net(x, small).sum().backward()
    variant = {"mhsa": "attn", "sra": "sra", "linear": "linear"}[mixer]
    key = f"stages/1/blocks/0@{mixer}/mixer@{variant}/q/weight"
    g = getattr(net, net.shared_keys()[key]).grad
    assert g.shape == (4, 32, 128)
    assert g[:, 12:].abs().sum() == 0 and g[:, :, 96:].abs().sum() == 0
    assert g[:, :12, :96].abs().sum() > 0


def test_block_sharing_keys_and_equivalence(spaces):
    space = spaces["tiny32"]
    mixer = Supernet(space, generator=torch.Generator().manual_seed(0))
    shared = Supernet(space, generator=torch.Generator().manual_seed(0), block_sharing="all")
    ffn = "stages/0/blocks/0{}/post/0/ffn/fc1/weight"
    keys_m, keys_a = set(mixer.shared_keys()), set(shared.shared_keys())
    assert {ffn.format(f"@{m}") for m in ("mhsa", "attention", "pool", "dwconv")} <= keys_m
    assert ffn.format("") in keys_a and not any("blocks/0@" in k for k in keys_a)
    assert sum(p.numel() for p in mixer.parameters()) > sum(p.numel() for p in shared.parameters())
    rng = np.random.default_rng(3)
    for _ in range(5):
        _agree(shared.eval(), sample_arch(space, rng))
    with pytest.raises(ValueError, match="block_sharing"):
        Supernet(space, block_sharing="none")


def test_checkpoint_tensors_are_named_by_module_path_and_old_names_load(spaces):
    space = spaces["tiny32"]
    net = Supernet(space, generator=torch.Generator().manual_seed(0))
    state = net.state_dict()
    assert "stages/0/blocks/0@mhsa/mixer@attn/q/weight" in state
    assert all(k.startswith(("stem@", "stages/", "head/", "pos")) for k in state), list(state)[:5]
    # checkpoints written before: the same tensors as w0, w1, ... in sorted key order
    old = {f"w{i}": state[k].clone() for i, k in enumerate(sorted(state))}
    fresh = Supernet(space, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(fresh.state_dict()["head/fc/weight"], state["head/fc/weight"])
    fresh.load_state_dict(old)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict({"w0": old["w0"]})
