"""Export: inference transforms equal the supernet, model dirs load back (nas, timm, ONNX),
bad input fails in one line with nothing half-written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from nas.arch import canonicalize, extreme_arch, load_arch, sample_arch
from nas.cli import main
from nas.errors import ArtifactError
from nas.export import (
    ModelConfig,
    load_model,
    optimize_for_inference,
    preprocessing_for,
    write_model_dir,
)
from nas.export.export import export_subnet
from nas.export.fold import fold_batchnorm
from nas.export.formats import write_format
from nas.export.onednn import OneDNNLinear
from nas.export.timing import (
    REWRITE_MARGIN,
    rewrite_name,
)
from nas.model import build_model
from nas.space import load_space
from nas.supernet import Supernet

from .conftest import ROOT, arch_with

MICRO = """\
name: micro16
num_classes: 10
in_chans: 3
resolution: [16]
stem: [patch]
stem_stride: [4]
stage_defaults: {heads: [2], qk_ratio: [1.0], mlp_ratio: [2], norm: [layernorm, batchnorm]}
stages:
  - {depth: [1], embed_dim: [16, 32], mixer: [mhsa, pool]}
  - {depth: [1], embed_dim: [32], stride: [2], mixer: [mhsa, sra], sr_ratio: [2]}
"""


def _randomize_bn(supernet: Supernet, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics in every shared buffer, so folding is exercised."""
    g = torch.Generator().manual_seed(seed)
    for key, attr in supernet.shared_keys().items():
        t = getattr(supernet, attr)
        if key.endswith("running_mean"):
            t.copy_(torch.randn(t.shape, generator=g) * 0.2)
        elif key.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)


@pytest.fixture(scope="module")
def nets():
    out = {}
    for name in ("tiny32", "full32"):
        net = Supernet(load_space(name), generator=torch.Generator().manual_seed(0)).eval()
        _randomize_bn(net)
        out[name] = net
    return out


def _config(space, arch, *, folded=True, fused=True) -> ModelConfig:
    return ModelConfig(arch=arch, num_classes=space.num_classes, in_chans=space.in_chans,
                       space_name=space.name, space_fingerprint=space.fingerprint,
                       preprocessing=preprocessing_for("digits", arch.resolution),
                       bn_folded=folded, qkv_fused=fused)


@pytest.mark.parametrize("name", ["tiny32", "full32"])
@pytest.mark.parametrize("folded", [True, False], ids=["folded", "unfolded"])
def test_exported_model_equals_supernet_subnet(nets, tmp_path, name, folded):
    net = nets[name]
    rng = np.random.default_rng(1)
    for i in range(8):
        arch = sample_arch(net.space, rng)
        model = optimize_for_inference(net.extract(arch), fold_bn=folded, fuse_qkv=folded)
        write_model_dir(model, _config(net.space, arch, folded=folded, fused=folded),
                        tmp_path / f"m{i}")
        loaded = load_model(tmp_path / f"m{i}")
        x = torch.randn(2, 3, arch.resolution, arch.resolution,
                        generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            want, got = net(x, arch), loaded(x)
        err = (got - want).abs().max().item()
        assert err <= 1e-5, f"max abs diff {err:.2e} for {arch.to_json()}"


def test_folding_removes_batchnorm_where_the_arch_allows(spaces):
    space = spaces["imagenet224"]
    arch = canonicalize(space, load_arch(ROOT / "search_spaces/reference/efficientvit_m0.yaml"))
    torch.manual_seed(0)  # build_model initialises from the global generator: not test order
    model = build_model(arch, num_classes=1000).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    before = sum(isinstance(m, _BatchNorm) for m in model.modules())
    fast = optimize_for_inference(model)
    after = sum(isinstance(m, _BatchNorm) for m in fast.modules())
    # left: each block's pre-norm before cascaded group attention, and the head's norm
    assert after == sum(s.depth for s in arch.stages) + 1 < before
    x = torch.randn(1, 3, 224, 224, generator=g)
    with torch.no_grad():
        want = model(x)
        err = (fast(x) - want).abs().max().item()
    assert err <= 1e-5 * max(1.0, want.abs().max().item())  # fp32 rounding of ~40 folds


def test_fold_requires_eval_mode(spaces):
    model = build_model(extreme_arch(spaces["full32"], "min"), num_classes=10)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model.train())


def test_onednn_linear_matches_reference_path():
    lin = torch.nn.Linear(64, 256)
    fast = OneDNNLinear.from_linear(lin, act="gelu").eval()
    x = torch.randn(4, 196, 64)
    with torch.no_grad():
        want = torch.nn.functional.gelu(lin(x))
        assert (fast(x) - want).abs().max().item() <= 1e-5
        lin.weight.mul_(2)  # the packed weight is a cache: it follows in-place updates
        assert (fast(x) - torch.nn.functional.gelu(lin(x))).abs().max().item() <= 1e-5
    fast.train()
    y = fast(x)  # training runs the autograd reference path
    y.sum().backward()
    assert lin.weight.grad is not None


@pytest.mark.parametrize("method", ["prune", "merge"])
def test_onnx_exports_token_reduction(nets, tmp_path, method):
    """Pruning/merging archs export to ONNX with a free batch size (traced with 2 images)."""
    ort = pytest.importorskip("onnxruntime")
    net = nets["tiny32"]
    arch = arch_with(net.space, {("stages[1]", "keep_ratio"): 0.5,
                                 ("stages[1]", "reduce_method"): method}, "max")
    assert arch.stages[1].keep_ratio == 0.5 and arch.stages[1].reduce_method == method
    model = net.extract(arch).eval()
    assert write_format("onnx", model, tmp_path, in_chans=3, resolution=32) <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(session.run(["logits"], {"images": x.numpy()})[0] - want).max() <= 1e-4


@pytest.mark.parametrize("name", ["tiny32", "full32"])
def test_onnx_matches_supernet_subnet(nets, tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    net = nets[name]
    rng = np.random.default_rng(2)
    done = 0
    while done < 3:
        arch = sample_arch(net.space, rng)
        model = optimize_for_inference(net.extract(arch))
        folder = tmp_path / f"m{done}"
        folder.mkdir()
        assert write_format("onnx", model, folder, in_chans=3, resolution=arch.resolution) <= 1e-4
        session = ort.InferenceSession(str(folder / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        x = torch.randn(5, 3, arch.resolution, arch.resolution)
        got = session.run(["logits"], {"images": x.numpy()})[0]
        with torch.no_grad():
            want = net(x, arch).numpy()
        assert np.abs(got - want).max() <= 1e-4
        done += 1


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_graph_formats_read_back(nets, tmp_path, fmt):
    net = nets["tiny32"]
    arch = sample_arch(net.space, np.random.default_rng(3))
    model = optimize_for_inference(net.extract(arch))
    assert write_format(fmt, model, tmp_path, in_chans=3, resolution=32) <= 1e-5


@pytest.fixture(scope="module")
def exported(nets, tmp_path_factory):
    net = nets["tiny32"]
    arch = sample_arch(net.space, np.random.default_rng(4))
    folder = tmp_path_factory.mktemp("exported") / "model"
    write_model_dir(optimize_for_inference(net.extract(arch)), _config(net.space, arch), folder)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net(x, arch)
    return folder, x, want


def test_timm_create_model(exported):
    timm = pytest.importorskip("timm")
    import nas.export  # noqa: F401  (registers "vitnas")

    folder, x, want = exported
    for model in (timm.create_model(f"local-dir:{folder}", pretrained=True),
                  timm.create_model("vitnas", pretrained=True, arch=str(folder)),
                  timm.create_model("vitnas", pretrained=True, arch=str(folder / "config.json"),
                                    pretrained_cfg_overlay={"file": str(folder /
                                                                        "model.safetensors")})):
        with torch.no_grad():
            assert (model.eval()(x) - want).abs().max().item() <= 1e-5
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, 32, 32) or list(cfg["input_size"]) == [3, 32, 32]
    assert cfg["mean"] == pytest.approx([0.3053] * 3)
    head5 = timm.create_model("vitnas", pretrained=True, arch=str(folder), num_classes=5)
    assert head5(x).shape == (2, 5)
    plain = timm.create_model("vitnas", arch=str(ROOT / "search_spaces/reference/deit_tiny.yaml"))
    assert plain.num_classes == 1000
    with pytest.raises(TypeError, match="unsupported"):
        timm.create_model("vitnas", arch=str(folder), drop_path_rate=0.1)


def test_load_model_in_fresh_process(exported, tmp_path):
    folder, x, want = exported
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch, nas; m = nas.load_model(sys.argv[1]); "
            "x = torch.load(sys.argv[2], weights_only=True); "
            "torch.save(m(x).detach(), sys.argv[3])")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "x.pt"),
                    str(tmp_path / "y.pt")], check=True, env=env, cwd=tmp_path)
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    assert (got - want).abs().max().item() <= 1e-5


def test_model_dir_is_strict(exported, tmp_path):
    folder, _, _ = exported
    raw = json.loads((folder / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    for change, match in (({"colour": "red"}, "unknown key"), ({"format_version": 99}, "format"),
                          ({"num_classes": 7}, "does not fit")):
        (bad / "config.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(ArtifactError, match=match):
            load_model(bad)
    (bad / "config.json").write_text(json.dumps(raw))
    (bad / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(ArtifactError, match="corrupted"):
        load_model(bad)
    with pytest.raises(ArtifactError, match="not found"):
        load_model(tmp_path / "missing")


def test_failed_write_leaves_nothing(nets, tmp_path):
    net = nets["tiny32"]
    arch = extreme_arch(net.space, "min")

    def broken_card(config, checks):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_model_dir(net.extract(arch).eval(), _config(net.space, arch, folded=False,
                                                          fused=False),
                        tmp_path / "model", card=broken_card)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from nas.training import TrainConfig, train

    root = tmp_path_factory.mktemp("run")
    (root / "micro.yaml").write_text(MICRO)
    cfg = TrainConfig(space=str(root / "micro.yaml"), data="digits", out=str(root / "train"),
                      epochs=1, batch_size=64, limit_train=128, limit_val=64)
    train(cfg, verbose=False)
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas: error: "), err
    return err[0]


def test_cli_export(run_dir, tmp_path, capsys):
    out = tmp_path / "model"
    arch = sample_arch(load_space(run_dir / "micro.yaml"), np.random.default_rng(0))
    rc = main(["export", "--run", str(run_dir / "train"), "--arch", arch.to_json(), "--out",
               str(out), "--formats", "safetensors,onnx", "--finetune-epochs", "1", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".vitnas-model", "README.md", "config.json", "model.onnx", "model.safetensors"]
    cfg = ModelConfig.load(out)
    assert cfg.arch == arch and cfg.space_name == "micro16"
    # each rewrite is kept if its median paired ratio, as timed at export, beats the margin
    rewrites = cfg.metrics["latency_ms"]["rewrites"]
    effects = cfg.metrics["latency_ms"]["rewrite_effects"]
    assert len(rewrites) == 8 and "none" in rewrites
    assert sorted(effects) == ["fold_bn", "fuse_qkv", "onednn_linears"]
    flags = {"fold_bn": cfg.bn_folded, "fuse_qkv": cfg.qkv_fused,
             "onednn_linears": cfg.onednn_linears}
    chosen = {k: e < 1 - REWRITE_MARGIN for k, e in effects.items()}
    if "dropped" in cfg.metrics["latency_ms"]:  # the final side-by-side timing overruled it
        assert not any(flags.values())
        assert cfg.metrics["latency_ms"]["dropped"] == rewrite_name(chosen)
    else:
        assert flags == chosen
    assert cfg.preprocessing.resolution == 16 and len(cfg.preprocessing.mean) == 3
    assert {"val_acc", "inherited_acc", "params", "macs", "latency_ms"} <= set(cfg.metrics)
    model = load_model(out)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    card = (out / "README.md").read_text()
    assert "measured latency" in card
    from nas.latency.allocator import PINNED, pin_malloc
    # the card says how to run inference to get the latency it reports
    assert ("MALLOC_MMAP_MAX_=0" in card) == (pin_malloc() == PINNED)


@pytest.mark.parametrize("case", ["arch_outside_space", "no_checkpoint", "unwritable_out",
                                  "bad_format", "out_not_empty"])
def test_cli_export_bad_input(run_dir, tmp_path, capsys, case):
    space = load_space(run_dir / "micro.yaml")
    arch = extreme_arch(space, "min").to_json()
    args = {"--run": str(run_dir / "train"), "--arch": arch, "--out": str(tmp_path / "m")}
    if case == "arch_outside_space":
        args["--arch"] = extreme_arch(load_space("tiny32"), "min").to_json()
        match = "not in the space"
    elif case == "no_checkpoint":
        empty = tmp_path / "empty_run"
        empty.mkdir()
        (empty / "config.json").write_text((run_dir / "train" / "config.json").read_text())
        args["--run"] = str(empty)
        match = "not found"
    elif case == "unwritable_out":
        (tmp_path / "file").write_text("x")
        args["--out"] = str(tmp_path / "file" / "m")
        match = "not a writable directory"
    elif case == "bad_format":
        args["--formats"] = "safetensors,tflite"
        match = "unknown export format"
    else:
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "keep.txt").write_text("mine")
        match = "not empty"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc = main(["export", *[x for kv in args.items() for x in kv], "--quiet", "--no-measure"])
    assert rc == 2
    assert match in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing (half-)written


def test_onednn_choice_round_trips_and_old_configs_default_to_it(nets, tmp_path):
    net = nets["tiny32"]
    arch = sample_arch(net.space, np.random.default_rng(3))
    model = optimize_for_inference(net.extract(arch), onednn_linears=False)
    cfg = _config(net.space, arch).replace(onednn_linears=False)
    write_model_dir(model, cfg, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert not any(isinstance(m, OneDNNLinear) for m in loaded.modules())
    assert ModelConfig.load(tmp_path / "m").onednn_linears is False
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    del raw["onednn_linears"]  # written before the choice existed
    assert ModelConfig.from_dict(raw).onednn_linears is True
    with pytest.raises(ArtifactError, match="onednn_linears must be true or false"):
        ModelConfig.from_dict({**raw, "onednn_linears": "yes"})


def test_rewrites_that_measure_slower_side_by_side_are_dropped(run_dir, tmp_path, monkeypatch):
    """The choice among rewrites is timed on its own; if the exported model then measures
    slower than the plain one side by side, it is exported without rewrites."""
    import nas.export.timing as export_mod

    on = {"fold_bn": True, "fuse_qkv": True, "onednn_linears": True}
    monkeypatch.setattr(export_mod, "choose_rewrite_set",
                        lambda *a, **kw: (on, {"none": 1.0}, {k: 0.9 for k in on}))
    monkeypatch.setattr(export_mod, "measure_side_by_side",
                        lambda models, *a, **kw: ([1.1, 1.0], "fake setting"))
    space = load_space(run_dir / "micro.yaml")
    res = export_subnet(run_dir / "train", extreme_arch(space, "min"), tmp_path / "m",
                        verbose=False)
    cfg = ModelConfig.load(tmp_path / "m")
    assert not (cfg.bn_folded or cfg.qkv_fused or cfg.onednn_linears)
    lat = cfg.metrics["latency_ms"]
    assert lat["dropped"] == "fold_bn+fuse_qkv+onednn_linears"
    assert lat["measured"] == lat["measured_plain"] == 1.0
    assert not any(isinstance(m, OneDNNLinear) for m in load_model(tmp_path / "m").modules())
    assert res.config == cfg


def _micro_table(space, archs, path):
    """A calibrated table of ``space`` with made-up entries and 12 calibration subnets."""
    from nas.latency import LatencyTable
    from nas.latency.device import DeviceSpec, device_fingerprint
    from nas.latency.measure import Timing
    from nas.latency.signatures import arch_signatures

    spec = DeviceSpec.parse("cpu", threads=1).resolve()
    table = LatencyTable.new(space, device_fingerprint(spec), Timing().to_dict())
    rng = np.random.default_rng(5)
    calib = list(dict.fromkeys(sample_arch(space, rng) for _ in range(12)))
    for a in list(archs) + calib:
        for g in arch_signatures(a, num_classes=space.num_classes, in_chans=space.in_chans):
            table.add(g, 0.01 + len(g.key) / 1e4)
    for a in calib:
        table.add_calibration_sample(a, 1.1 * table.raw_sum(a))
    table.set_scope(complete=True)
    table.calibrate(("raw_ms", "const"), residual=False)
    table.save(path)
    return LatencyTable.load(path, space=space)


def test_export_with_a_table_times_its_nearest_calibration_subnets_beside(run_dir, tmp_path,
                                                                          monkeypatch):
    """``nas export --table``: the table's 3 calibration subnets nearest the arch's
    prediction are built and timed beside the exported model; their ratio is recorded,
    and a lasting slow phase is warned about."""
    import nas.export.timing as timing

    space = load_space(run_dir / "micro.yaml")
    arch = extreme_arch(space, "min")
    table = _micro_table(space, [arch], tmp_path / "table.json")
    samples = dict(zip(table.calibration_archs(),
                       (s["ms"] for s in table.calibration["samples"])))
    seen = []

    def side_by_side(models, archs, **kw):
        seen.append(list(archs))
        return [2.0] + [1.25 * samples[a] for a in archs[1:]], "setting"

    monkeypatch.setattr(timing, "choose_rewrite_set", lambda model, arch, allowed, **kw: (
        dict.fromkeys(allowed, False), {"none": 2.0}, {}))
    monkeypatch.setattr(timing, "measure_side_by_side", side_by_side)
    logged = []
    monkeypatch.setattr("nas.export.export._log", lambda verbose, msg: logged.append(msg))
    export_subnet(run_dir / "train", arch, tmp_path / "m", table=tmp_path / "table.json",
                  evaluate=False, formats="safetensors")
    near = sorted(samples, key=lambda a: abs(np.log(samples[a] / table.predict([arch])[0])))
    assert all(s == [arch] + [a for a in near if a != arch][:3] for s in seen)
    assert len(seen) == 3  # 1 + 2 retries, the anchors 25% slow all along
    lat = ModelConfig.load(tmp_path / "m").metrics["latency_ms"]
    assert lat["anchors_ratio"] == pytest.approx(1.25) and lat["measured"] == 2.0
    assert any("ran 25% slower than when it was profiled" in m for m in logged)
    # a table profiled on another machine: its timings do not compare, no anchors
    from nas.io import read_json, write_json

    raw = read_json(tmp_path / "table.json")
    raw["device"]["name"] = "Another CPU"
    write_json(tmp_path / "other.json", raw)
    seen.clear()
    logged.clear()
    export_subnet(run_dir / "train", arch, tmp_path / "m2", table=tmp_path / "other.json",
                  evaluate=False, formats="safetensors")
    assert seen == [[arch]]
    assert "anchors_ratio" not in ModelConfig.load(tmp_path / "m2").metrics["latency_ms"]
    assert any("profiled on another machine" in m and "'Another CPU'" in m for m in logged)
