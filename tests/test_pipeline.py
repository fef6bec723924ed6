"""``nas run``: strict settings, a whole tiny run end to end, resuming, refusing other settings."""
from __future__ import annotations

import json

import pytest
import yaml

from nas.cli import main
from nas.pipeline import PipelineConfig, PipelineError, load_pipeline_config

from .test_export import MICRO


def test_defaults_are_the_embedded_run():
    cfg = PipelineConfig()
    assert (cfg.space, cfg.data) == ("tiny32", "digits")
    assert cfg.search.budget_ms is None and "safetensors" in cfg.export.formats
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("raw, match", [
    ({"colour": 1}, "unknown key"),
    ({"train": {"epoch": 3}}, "unknown key"),
    ({"train": {"epochs": 0}}, ">= 1"),
    ({"train": {"epochs": "3"}}, "expected int"),
    ({"search": {"searcher": "anneal"}}, "valid: evolution"),
    ({"predictor": {"model": "forest"}}, "valid: auto"),
    ({"export": {"formats": ["safetensors", "tflite"]}}, "unknown format"),
    ({"search": {"budget_quantile": 1.5}}, "in \\(0, 1\\]"),
    ({"train": {"hflip": 1}}, "expected bool"),
    ({"train": None}, "train: expected a mapping"),
    ({"export": {"formats": "onnx"}}, "expected a list of names"),
    ({"train": {"max_shift": True}}, "expected int"),
    ([1, 2], "expected a mapping"),
])
def test_bad_settings_are_rejected(raw, match):
    with pytest.raises(PipelineError, match=match):
        PipelineConfig.from_dict(raw)


def test_shipped_cifar10_config(tmp_path, capsys):
    cfg = load_pipeline_config("cifar10")
    assert (cfg.space, cfg.train.hflip, cfg.train.max_shift) == ("cifar32", True, 4)
    assert cfg.data.startswith("imagefolder:") and cfg.train.limit_train == 20000
    other = load_pipeline_config("cifar10", data=f"imagefolder:{tmp_path}")
    assert other.data == f"imagefolder:{tmp_path}" and other.train == cfg.train
    with pytest.raises(PipelineError, match="shipped: cifar10"):
        load_pipeline_config("cifar100")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_pipeline_config("cifar10", data="mnist:/x")
    assert main(["run", "--config", "cifar10", "--data", "digits", "--show-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["data"] == "digits" and shown["train"]["hflip"] is True


def test_config_file_overrides_defaults(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3}\nsearch: {budget_ms: 0.5}\n")
    cfg = load_pipeline_config(path)
    assert cfg.train.epochs == 3 and cfg.search.budget_ms == 0.5 and cfg.train.lr == 2e-3
    assert main(["run", "--config", str(path), "--show-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 3
    path.write_text("train: {epochs: 3, bogus: 1}\n")
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_tiny_run_end_to_end_and_resume(tmp_path, capsys):
    (tmp_path / "micro.yaml").write_text(MICRO)
    cfg = {"space": str(tmp_path / "micro.yaml"), "data": "digits",
           "train": {"epochs": 1, "batch_size": 64, "limit_train": 128, "limit_val": 64},
           "profile": {"calibrate": 3, "min_run_time": 0.01},
           "predictor": {"collect": 6, "model": "ridge", "folds": 2},
           "search": {"searcher": "random", "trials": 8, "workers": 1, "rerank": 3,
                      "rerank_steps": 2},
           "export": {"formats": ["safetensors", "onnx"], "top_k": 2}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", "--config", str(path), "--out", str(out)]) == 0
    status = json.loads((out / "pipeline.json").read_text())
    assert all(status["stages"][s]["done"] for s in status["stages"])
    for rel in ("train/checkpoints/last.safetensors", "latency/table.json",
                "predictor/subnets.csv", "search/best.yaml", "search/pareto.png",
                "export/model/model.safetensors", "export/model/README.md", "report.json"):
        assert (out / rel).is_file(), rel
    # the export is the pick re-ranked by training speed, not the predictor's best
    from nas.arch import load_arch
    from nas.export import ModelConfig
    assert ModelConfig.load(out / "export" / "model").arch == load_arch(out / "search" / "best_rerank.yaml")
    assert len((out / "search" / "rerank.csv").read_text().splitlines()) == 4
    assert "nas rerank" in status["stages"]["search"]["command"]
    # verify (on by default) timed the picks into its own copy of the table; the search's
    # table is left as it is, so the search still resumes
    assert (out / "search" / "verified.csv").is_file() and "nas verify" in status["stages"]["search"]["command"]
    verified = json.loads((out / "search" / "table.verified.json").read_text())
    assert any(s.get("source") == "verify" for s in verified["calibration"]["samples"])
    profiled = json.loads((out / "latency" / "table.json").read_text())
    assert not any(s.get("source") for s in profiled["calibration"]["samples"])
    html = (out / "report.html").read_text()
    assert 'src="search/pareto.png"' in html and "nas search" in html and "largest subnet" in html
    report = json.loads((out / "report.json").read_text())
    assert {r["group"] for r in report["rows"]} == {"searched", "reference"}
    assert all(r["measured_ms"] > 0 and 0 <= r["inherited_acc"] <= 1 for r in report["rows"])

    capsys.readouterr()
    assert main(["run", "--out", str(out)]) == 0  # resumes with the saved settings
    log = capsys.readouterr().out
    assert log.count("skipped") == 6 and "[7/7] report: finished" in log

    path.write_text(yaml.safe_dump({**cfg, "train": {**cfg["train"], "epochs": 2}}))
    assert main(["run", "--config", str(path), "--out", str(out)]) == 2
    assert "other settings (train.epochs: 1 != 2)" in capsys.readouterr().err
