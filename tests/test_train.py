"""Supernet training: run dir, exact resume, checkpoint safety, evaluation, BN recalibration, Ray."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from nas.arch import extreme_arch
from nas.cli import main
from nas.errors import ArtifactError, DataError
from nas.supernet import Supernet
from nas.training import (
    ConfigError,
    TrainConfig,
    calibrate_bn,
    evaluate,
    evaluate_model,
    load_checkpoint,
    load_run,
    load_val_data,
    read_metrics,
    train,
)
from nas.training.rundir import checkpoint_path

from .conftest import arch_with

TIME_COLUMNS = ("epoch_time_s", "wall_time_s")
TINY = {"space": "tiny32", "data": "digits", "epochs": 2, "batch_size": 32, "limit_train": 96,
        "limit_val": 64, "warmup_epochs": 1, "threads": 1, "calib_size": 32}


def _cfg(out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(out), **kw})


def _metrics(run_dir) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: 2 epochs via the CLI. Run B: 1 epoch, 'interrupted', then --resume."""
    root = tmp_path_factory.mktemp("train")
    a, b = root / "a", root / "b"
    argv = ["train", "--space", "tiny32", "--data", "digits", "--out", str(a)]
    for key in ("epochs", "batch_size", "limit_train", "limit_val", "threads"):
        argv += [f"--{key.replace('_', '-')}", str(TINY[key])]
    cfg = {k: TINY[k] for k in ("warmup_epochs", "calib_size")}
    (root / "cfg.json").write_text(json.dumps(cfg))
    assert main(argv + ["--config", str(root / "cfg.json")]) == 0
    train(_cfg(b), stop_after=1, verbose=False)
    interrupted = _metrics(b)
    train(_cfg(b), resume=True, verbose=False)
    return {"a": a, "b": b, "root": root, "interrupted": interrupted}


def test_run_dir_layout(runs):
    a = runs["a"]
    config = json.loads((a / "config.json").read_text())
    assert config["seed"] == 0 and config["data"] == "digits" and config["epochs"] == 2
    assert config["search_space"]["name"] == "tiny32"
    assert len(config["fingerprint"]) == 16
    assert (a / "log.txt").read_text().count("epoch ") >= 2
    rows = read_metrics(a)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss_largest", "loss_smallest", "loss_random", "val_acc_largest",
            "val_acc_smallest", "lr"} <= set(rows[0])
    ckpt = checkpoint_path(a)
    side = json.loads(ckpt.with_suffix(".json").read_text())
    assert side["epoch"] == 2 and side["fingerprint"] == config["fingerprint"]
    assert isinstance(side["rng"]["torch"], list) and side["rng"]["numpy"]["bit_generator"]


def test_resume_gives_identical_metrics_and_weights(runs):
    assert len(runs["interrupted"]) == 1
    assert _metrics(runs["a"]) == _metrics(runs["b"])
    wa = load_checkpoint(checkpoint_path(runs["a"])).model
    wb = load_checkpoint(checkpoint_path(runs["b"])).model
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_existing_run_without_resume_is_an_error(runs, capsys):
    before = checkpoint_path(runs["a"]).read_bytes()
    with pytest.raises(ArtifactError, match="--resume"):
        train(_cfg(runs["a"]), verbose=False)
    argv = ["train", "--space", "tiny32", "--data", "digits", "--out", str(runs["a"])]
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert checkpoint_path(runs["a"]).read_bytes() == before


def test_resume_with_other_settings_is_an_error(runs, tmp_path):
    run = shutil.copytree(runs["a"], tmp_path / "run")
    with pytest.raises(ArtifactError, match="lr"):
        train(_cfg(run, lr=0.1), resume=True, verbose=False)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_checkpoint(runs, tmp_path, damage):
    run = shutil.copytree(runs["a"], tmp_path / "run")
    ckpt = checkpoint_path(run)
    data = bytearray(ckpt.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-1000] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupted|truncated"):
        load_run(run)
    with pytest.raises(ArtifactError, match="corrupted|truncated"):
        train(_cfg(run), resume=True, verbose=False)
    assert ckpt.read_bytes() == bytes(data)  # nothing overwritten


def test_checkpoint_of_an_older_weight_layout(runs, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    run = shutil.copytree(runs["a"], tmp_path / "run")
    ckpt = checkpoint_path(run)
    with safe_open(str(ckpt), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(ckpt), metadata={**meta, "format": "nas-train-checkpoint/1"})
    for side in ckpt.parent.glob("*.json"):
        side.unlink()  # the sidecar's hash would flag the rewrite as corruption first
    with pytest.raises(ArtifactError, match="another version of nas.*train the supernet again"):
        load_run(run)


def test_checkpoint_of_another_space(runs, spaces, tmp_path):
    run = shutil.copytree(runs["a"], tmp_path / "run")
    tiny, full = spaces["tiny32"].fingerprint, spaces["full32"].fingerprint
    with pytest.raises(ArtifactError) as e:
        train(_cfg(run, space="full32"), resume=True, verbose=False)
    assert tiny in str(e.value) and full in str(e.value)
    with pytest.raises(ArtifactError) as e:
        load_checkpoint(checkpoint_path(run), fingerprint=full, space_name="full32")
    assert tiny in str(e.value) and full in str(e.value)


def test_unknown_dataset_kind_cli(tmp_path, capsys):
    code = main(["train", "--space", "tiny32", "--data", "mnist", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mnist" in err[0] and "digits" in err[0]
    assert not (tmp_path / "r").exists()


def test_empty_image_folder(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    with pytest.raises(Exception, match="no images"):
        train(_cfg(tmp_path / "r", data=f"imagefolder:{tmp_path / 'imgs'}"), verbose=False)


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({**TINY, "out": "x", "learning_rate": 1.0})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({**TINY, "out": "x", "epochs": 0})
    with pytest.raises(ConfigError, match="distill"):
        TrainConfig.from_dict({**TINY, "out": "x", "distill": "mse"})
    with pytest.raises(ConfigError, match="sandwich_rule must be one of family, classic"):
        TrainConfig.from_dict({**TINY, "out": "x", "sandwich_rule": "big"})


@pytest.mark.parametrize("rule", ["family", "classic"])
def test_sandwich_rules_pick_the_documented_subnets(rule, tmp_path):
    from nas.space import load_space
    from nas.training.loop import LoopContext, _Trainer

    space = load_space("tiny32")
    trainer = _Trainer(_cfg(tmp_path, sandwich_rule=rule), space, LoopContext(verbose=False))
    seen = set()
    for _ in range(40):
        archs, n_ends = trainer.archs()
        assert archs[0] == extreme_arch(space, "max") and len(archs) == 1 + n_ends + 1
        if rule == "classic":
            assert n_ends == 1 and archs[1] == extreme_arch(space, "min")
            continue
        mixers = tuple(s.mixer for s in archs[-2].stages)  # the family smallest or the smallest
        fam = [extreme_arch(space, w, mixers) for w in ("max", "min")]
        want = [fam[0], extreme_arch(space, "min"), fam[1]]
        want = [a for i, a in enumerate(want) if a not in want[:i] and a != archs[0]]
        assert archs[1:1 + n_ends] == want
        seen.add(mixers)
    if rule == "family":
        assert len(seen) >= 10  # 16 combinations of tiny32's mixer families


def test_random_end_reduction_varies_only_the_token_reduction(tmp_path):
    """``end_reduction: random``: the family ends are the family extremes but for their
    token pruning/merging setting, which varies; the global largest and smallest stay."""
    from nas.arch import REDUCTION_DIMS
    from nas.space import load_space
    from nas.training.loop import LoopContext, _Trainer

    space = load_space("tiny32")
    trainer = _Trainer(_cfg(tmp_path, end_reduction="random"), space, LoopContext(verbose=False))
    smallest = extreme_arch(space, "min")

    def strip(a):  # the arch without its token reduction
        return tuple(tuple(getattr(s, f) for f in s.__dataclass_fields__ if f not in REDUCTION_DIMS)
                     for s in a.stages)

    settings = set()
    for _ in range(60):
        archs, n_ends = trainer.archs()
        assert archs[0] == extreme_arch(space, "max") and smallest in archs[1:1 + n_ends]
        for end in archs[1:1 + n_ends]:
            if end == smallest:
                continue
            mixers = tuple(s.mixer for s in end.stages)
            assert strip(end) in {strip(extreme_arch(space, w, mixers)) for w in ("max", "min")}
            settings.add(tuple((s.keep_ratio, s.reduce_method, s.reduce_at) for s in end.stages))
    reduced = {s[1] for s in settings if s[1][0] < 1}
    assert {m for _, m, _ in reduced} == {"prune", "merge"} and len(settings) >= 6
    with pytest.raises(ConfigError, match="end_reduction must be one of random, extreme"):
        TrainConfig.from_dict({**TINY, "out": "x", "end_reduction": "some"})


def test_family_teacher_trains_the_family_largest_on_labels(tmp_path):
    """``distill_from: family``: the step's family largest is trained on the labels after
    the global largest, and the random subnets come from the same mixer families."""
    from nas.space import load_space
    from nas.training.loop import LoopContext, _Trainer, sandwich_step

    space = load_space("tiny32")
    trainer = _Trainer(_cfg(tmp_path, distill_from="family", num_random=2), space,
                       LoopContext(verbose=False))
    two = 0
    for _ in range(30):
        archs, n_ends = trainer.archs()
        mixers = tuple(s.mixer for s in archs[-1].stages)
        assert all(tuple(s.mixer for s in a.stages) == mixers for a in archs[-2:])
        if trainer.labelled == 2:
            two += 1
            assert archs[1] == extreme_arch(space, "max", mixers) != archs[0]
        else:
            assert extreme_arch(space, "max", mixers) == archs[0]
    assert two >= 20  # 15 of tiny32's 16 mixer combinations differ from the largest's
    # two label-trained subnets: the losses are two cross-entropies, then distillations
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    archs = [extreme_arch(space, "max"), extreme_arch(space, "max", ("pool", "mlp")),
             extreme_arch(space, "min")]
    losses = sandwich_step(trainer.net, archs, x, y, cfg=trainer.cfg,
                           autocast=trainer.autocast, labelled=2)
    assert len(losses) == 3 and losses[1] > 1.0 > losses[2] >= 0  # CE at init ~ln 10; KL small


def test_evaluate_matches_training_metrics(runs):
    run = load_run(runs["a"])
    assert not run.supernet.training and run.space.name == "tiny32"
    x, y = load_val_data(run.config)
    assert len(x) == TINY["limit_val"]
    res = evaluate(run.supernet, extreme_arch(run.space, "max"), x, y)
    assert 0.0 <= res["acc"] <= 1.0 and res["loss"] > 0
    last = read_metrics(runs["a"])[-1]
    assert res["acc"] == pytest.approx(float(last["val_acc_largest"]))
    assert res["loss"] == pytest.approx(float(last["val_loss_largest"]), rel=1e-5)


def test_refit_classifier_changes_only_the_classifier_and_fits_better(runs):
    """The refit classifier is the regularised optimum on the training features: its
    objective is no worse than the inherited classifier's, and nothing else changes."""
    import torch.nn.functional as F

    from nas.training import refit_classifier

    run = load_run(runs["a"])
    arch = extreme_arch(run.space, "min")
    xt, yt = load_val_data(run.config, split="train")
    before = run.supernet.extract(arch).eval()
    after = refit_classifier(run.supernet.extract(arch).eval(), xt, yt, l2=1e-3)

    def objective(model):
        with torch.no_grad():
            feats = model.forward_head(model.forward_features(xt), pre_logits=True)
            w = model.get_classifier().weight
            return (F.cross_entropy(model.get_classifier()(feats), yt) + 1e-3 * w.square().sum()).item()

    assert objective(after) < objective(before) - 1e-3
    a, b = before.state_dict(), after.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"head.fc.weight", "head.fc.bias"}
    x, y = load_val_data(run.config)
    again = evaluate(run.supernet, arch, x, y, refit=(xt, yt))  # the same through evaluate
    assert again == pytest.approx(evaluate_model(after, x, y))
    with pytest.raises(DataError, match="as many images as labels"):
        refit_classifier(before, xt[:3], yt[:2])


def test_eval_cli(runs, tmp_path, capsys):
    out = tmp_path / "eval.csv"
    assert main(["eval", "--run", str(runs["a"]), "--sample", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sample0" in text and "sample1" in text
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and all(0 <= float(r["acc"]) <= 1 for r in rows)
    assert main(["eval", "--run", str(tmp_path / "missing"), "--reference", "largest"]) == 2
    assert main(["eval", "--run", str(runs["a"]), "--reference", "smallest", "--refit-head"]) == 0
    assert "classifiers refit on the training split" in capsys.readouterr().out


def test_calibrate_bn_changes_running_stats(spaces):
    space = spaces["full32"]
    arch = arch_with(space, {"norm": "batchnorm"})
    assert all(s.norm == "batchnorm" for s in arch.stages)
    net = Supernet(space, generator=torch.Generator().manual_seed(0)).eval()
    shared = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 + 1
    plain = net.extract(arch).eval()
    calibrated = calibrate_bn(net, arch, x, batch_size=8)
    bn = [n for n, m in calibrated.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bn
    before, after = plain.state_dict(), calibrated.state_dict()
    assert any(not torch.equal(before[f"{n}.running_mean"], after[f"{n}.running_mean"]) for n in bn)
    assert not calibrated.training
    assert all(torch.equal(shared[k], v) for k, v in net.state_dict().items())  # untouched
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(0))
    res = evaluate(net, arch, x, y, calibrate=(x,))
    assert 0.0 <= res["acc"] <= 1.0


@pytest.mark.slow
def test_ray_train_two_workers_matches_single_process(tmp_path):
    pytest.importorskip("ray.train.torch")
    out = tmp_path / "ray"
    train(_cfg(out, epochs=1, workers=2), verbose=False)
    single = tmp_path / "single"
    train(_cfg(single, epochs=1), verbose=False)
    ray_rows, one_rows = read_metrics(out), read_metrics(single)
    assert len(ray_rows) == 1
    # Same global batches and subnets; only the float summation order differs.
    for key in ("loss_largest", "val_loss_largest", "val_loss_smallest"):
        assert float(ray_rows[0][key]) == pytest.approx(float(one_rows[0][key]), rel=2e-2)
    run = load_run(out)
    x, y = load_val_data(run.config)
    res = evaluate(run.supernet, extreme_arch(run.space, "max"), x, y)
    assert res["acc"] == pytest.approx(float(one_rows[0]["val_acc_largest"]), abs=0.1)


def test_tensorboard_events_match_metrics_csv(runs):
    """The run's TensorBoard events hold the same per-epoch numbers as metrics.csv, and the
    resumed run has each epoch once (purge_step drops the redone ones)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in ("a", "b"):
        acc = EventAccumulator(str(runs[name] / "tb"))
        acc.Reload()
        rows = read_metrics(runs[name])
        assert "val_acc_largest" in acc.Tags()["scalars"]
        for key in ("loss_largest", "val_acc_largest", "val_loss_smallest"):
            events = {e.step: e.value for e in acc.Scalars(key)}
            assert sorted(events) == [1, 2]
            for r in rows:
                assert events[int(r["epoch"])] == pytest.approx(float(r[key]), rel=1e-6)
