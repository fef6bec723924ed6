"""Standalone training (``nas train --arch``): one arch alone, same recipe, run dir and resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

import nas
from nas.arch import sample_arch
from nas.cli import main
from nas.encoding import count_archs
from nas.errors import ArchError, ArtifactError
from nas.export import export_subnet
from nas.space import load_space, parse_space
from nas.supernet import Supernet
from nas.training import TrainConfig, evaluate, load_run, load_val_data, read_metrics, train
from nas.training.rundir import STANDALONE_METRIC_FIELDS

TINY = {"space": "tiny32", "data": "digits", "epochs": 2, "batch_size": 32, "limit_train": 96,
        "limit_val": 64, "warmup_epochs": 1, "threads": 1}


def _arch(seed: int = 3):
    return sample_arch(load_space("tiny32"), np.random.default_rng(seed))


def _rows(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """Run A: 2 epochs via the CLI from an arch file. Run B: 1 epoch, then resumed."""
    root = tmp_path_factory.mktemp("standalone")
    arch_file = root / "arch.yaml"
    arch_file.write_text(_arch().to_yaml())
    a, b = root / "a", root / "b"
    argv = ["train", "--space", "tiny32", "--data", "digits", "--arch", str(arch_file),
            "--out", str(a)]
    for key in ("epochs", "batch_size", "limit_train", "limit_val", "threads"):
        argv += [f"--{key.replace('_', '-')}", str(TINY[key])]
    cfg = root / "cfg.json"
    cfg.write_text(json.dumps({"warmup_epochs": 1}))
    assert main(argv + ["--config", str(cfg)]) == 0
    tc = TrainConfig(**TINY, arch=str(arch_file), out=str(b))
    train(tc, stop_after=1, verbose=False)
    train(tc, resume=True, verbose=False)
    return {"root": root, "a": a, "b": b, "arch_file": arch_file}


def test_run_dir_records_the_arch_and_standalone_metrics(standalone):
    a = standalone["a"]
    config = json.loads((a / "config.json").read_text())
    assert json.loads(config["arch"]) == _arch().to_dict()  # canonical, inline: self-contained
    rows = read_metrics(a)
    assert tuple(rows[0]) == STANDALONE_METRIC_FIELDS and [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    assert "training one arch of tiny32" in (a / "log.txt").read_text()


def test_resume_continues_exactly(standalone):
    assert _rows(standalone["a"]) == _rows(standalone["b"])
    sa, sb = (load_run(standalone[k]).supernet.state_dict() for k in "ab")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_only_the_arch_is_trained(standalone):
    run = load_run(standalone["a"])
    init = Supernet(run.space, generator=torch.Generator().manual_seed(0))
    same = [k for k, v in init.state_dict().items() if torch.equal(v, run.supernet.state_dict()[k])]
    assert same and len(same) < len(init.state_dict())  # other families' weights untouched
    last = read_metrics(standalone["a"])[-1]
    x, y = load_val_data(run.config)
    res = evaluate(run.supernet, run.arch, x, y)
    assert res["acc"] == pytest.approx(float(last["val_acc"]))
    assert res["loss"] == pytest.approx(float(last["val_loss"]), rel=1e-5)


def test_other_archs_of_a_standalone_run_are_refused(standalone, tmp_path, capsys):
    run = load_run(standalone["a"])
    with pytest.raises(ArchError, match="standalone"):
        run.check_arch(_arch(seed=11))
    assert main(["eval", "--run", str(standalone["a"]), "--sample", "2"]) == 2
    assert "standalone" in capsys.readouterr().err
    assert main(["eval", "--run", str(standalone["a"]), "--arch",
                 str(standalone["arch_file"])]) == 0
    from nas.predictors.collect import collect_table

    with pytest.raises(ArtifactError, match="standalone run"):
        collect_table(str(standalone["a"]), 4, tmp_path / "t.csv", workers=1)


def test_export_of_a_standalone_run(standalone, tmp_path):
    out = tmp_path / "model"
    res = export_subnet(standalone["a"], None, out, measure=False, verbose=False)
    run = load_run(standalone["a"])
    model = nas.load_model(out)
    ref = run.supernet.extract(run.arch).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    assert res.config.metrics["val_acc"] == pytest.approx(
        float(read_metrics(standalone["a"])[-1]["val_acc"]))
    with pytest.raises(ArchError, match="standalone"):
        export_subnet(standalone["a"], _arch(seed=11), tmp_path / "m2", measure=False,
                      verbose=False)
    assert main(["export", "--run", str(standalone["a"]), "--out", str(tmp_path / "m3"),
                 "--formats", "safetensors", "--no-measure", "--quiet"]) == 0


def test_cli_errors_for_the_arch(tmp_path, capsys):
    outside = _arch().to_dict()
    outside["stages"][0]["embed_dim"] = 40
    code = main(["train", "--space", "tiny32", "--data", "digits", "--arch",
                 yaml.safe_dump(outside), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "embed_dim" in err
    assert not (tmp_path / "r").exists()  # nothing written for a bad arch
    code = main(["train", "--space", "tiny32", "--data", "digits", "--arch",
                 str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")])
    assert code == 2 and "arch file not found" in capsys.readouterr().err


def test_a_space_of_one_arch_trains(tmp_path):
    """Every dimension fixed: the sandwich has no ends and no distinct random subnets."""
    arch = _arch().to_dict()
    stages = [{k: [v] for k, v in s.items()} for s in arch["stages"]]
    space = parse_space({"name": "one", "num_classes": 10, "resolution": [32],
                         "stem": ["patch"], "stem_stride": [4], "stages": stages})
    assert count_archs(space) == 1
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"name": "one", "num_classes": 10, "resolution": [32],
                                    "stem": ["patch"], "stem_stride": [4], "stages": stages}))
    run = train(TrainConfig(**{**TINY, "space": str(path), "epochs": 1, "out": str(tmp_path / "r")}),
                verbose=False)
    row = read_metrics(run)[0]
    assert math.isnan(float(row["loss_smallest"])) and float(row["val_acc_largest"]) > 0


def test_overwrite_only_replaces_a_model_this_tool_wrote(standalone, tmp_path, capsys):
    kw = {"measure": False, "evaluate": False, "verbose": False}
    out = tmp_path / "model"
    export_subnet(standalone["a"], None, out, **kw)
    assert (out / ".vitnas-model").is_file()
    export_subnet(standalone["a"], None, out, overwrite=True, **kw)  # its own export: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    run_files = sorted(p.name for p in standalone["a"].rglob("*"))
    for target in (mine, standalone["a"], standalone["a"].parent):
        code = main(["export", "--run", str(standalone["a"]), "--out", str(target),
                     "--overwrite", "--formats", "safetensors", "--no-measure", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert (mine / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in standalone["a"].rglob("*")) == run_files


def test_export_removes_the_temp_dir_of_a_killed_export(standalone, tmp_path):
    out = tmp_path / "model"
    dead = tmp_path / ".model.abc123.tmp"  # what a kill -9 mid-export leaves
    dead.mkdir()
    (dead / ".owner-pid").write_text("999999999")
    (dead / "model.safetensors").write_bytes(b"half")
    foreign = tmp_path / ".model.zzz.tmp"  # same pattern, not ours (no owner file): kept
    foreign.mkdir()
    export_subnet(standalone["a"], None, out, measure=False, evaluate=False, verbose=False)
    assert not dead.exists() and foreign.exists()
    assert not (out / ".owner-pid").exists()
