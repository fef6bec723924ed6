"""``nas run``'s settings: one frozen dataclass per stage, validated by one set of rules.

:class:`PipelineConfig` holds a :class:`TrainSection`, :class:`ProfileSection`,
:class:`PredictorSection`, :class:`SearchSection` and :class:`ExportSection` plus the top
level (``space``, ``data``, ``seed``). :func:`load_pipeline_config` reads a YAML file or a
shipped config's name (``nas/configs/NAME.yaml``) over the defaults, or the settings a
run directory saved; unknown keys, wrong types and out-of-range values are one-line
errors. The stages themselves live in :mod:`nas.pipeline`.

Example:
    >>> PipelineConfig().train.epochs
    30
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.io import read_json, read_yaml

FORMAT = "vitnas.pipeline"  # the run directory's status file (pipeline.json)

__all__ = ["PipelineError", "PipelineConfig", "TrainSection", "ProfileSection",
           "PredictorSection", "SearchSection", "ExportSection", "SHIPPED_CONFIGS",
           "find_pipeline_config", "load_pipeline_config", "with_defaults"]


class PipelineError(NasError):
    """A ``nas run`` setting is invalid, or the run dir holds a pipeline with other settings."""


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True, kw_only=True)
class TrainSection:
    """Supernet training (see :class:`nas.training.TrainConfig`)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    num_random: int = 1
    max_shift: int = 3
    hflip: bool = False
    limit_train: int = 0
    limit_val: int = 0


@dataclass(frozen=True, kw_only=True)
class ProfileSection:
    """Latency table of this machine (see :func:`nas.latency.profile_space`)."""

    threads: int = 1
    batch_size: int = 1
    calibrate: int = 30
    min_run_time: float = 0.05
    rounds: int = 2
    allow_busy: bool = False


@dataclass(frozen=True, kw_only=True)
class PredictorSection:
    """Subnets evaluated with inherited weights (``collect`` of them), and the predictor."""

    collect: int = 200
    views: int = 9
    refit_images: int = 0
    train_speed_steps: int = 0
    anchors: int = 0
    anchor_epochs: int = 5
    model: str = "auto"
    folds: int = 5
    workers: int = 1


@dataclass(frozen=True, kw_only=True)
class SearchSection:
    """The search; ``budget_ms: null`` takes the ``budget_quantile`` (median) of the table
    latencies of ``budget_samples`` random archs."""

    searcher: str = "evolution"
    trials: int = 1000
    budget_ms: float | None = None
    budget_quantile: float = 0.5
    budget_samples: int = 500
    workers: int | None = None


@dataclass(frozen=True, kw_only=True)
class ExportSection:
    """The exported best subnet, and how many searched subnets the report compares."""

    formats: tuple[str, ...] = ("safetensors", "onnx")
    finetune_epochs: int = 0
    top_k: int = 5


_SECTIONS = {"train": TrainSection, "profile": ProfileSection, "predictor": PredictorSection,
             "search": SearchSection, "export": ExportSection}
_POS, _NONNEG = (lambda v: v >= 1, ">= 1"), (lambda v: v >= 0, ">= 0")
# field -> (type, nullable, (check, rule)); a name shared by two sections has one rule
_RULES: dict[str, tuple[type, bool, tuple[Callable[[Any], bool], str] | None]] = {
    "space": (str, False, None), "data": (str, False, None), "seed": (int, False, _NONNEG),
    "epochs": (int, False, _POS), "batch_size": (int, False, _POS),
    "lr": (float, False, (lambda v: v > 0, "> 0")), "num_random": (int, False, _NONNEG),
    "limit_train": (int, False, _NONNEG), "limit_val": (int, False, _NONNEG),
    "max_shift": (int, False, _NONNEG), "hflip": (bool, False, None),
    "allow_busy": (bool, False, None),
    "threads": (int, False, _POS), "calibrate": (int, False, _NONNEG), "rounds": (int, False, _POS),
    "min_run_time": (float, False, (lambda v: v > 0, "> 0")),
    "collect": (int, False, (lambda v: v >= 2, ">= 2")), "model": (str, False, None),
    "views": (int, False, (lambda v: 1 <= v <= 9, "in [1, 9]")),
    "refit_images": (int, False, _NONNEG), "train_speed_steps": (int, False, _NONNEG),
    "anchors": (int, False, _NONNEG), "anchor_epochs": (int, False, _POS),
    "folds": (int, False, (lambda v: v >= 2, ">= 2")), "workers": (int, True, _POS),
    "searcher": (str, False, None), "trials": (int, False, _POS),
    "budget_ms": (float, True, (lambda v: v > 0, "> 0")),
    "budget_quantile": (float, False, (lambda v: 0 < v <= 1, "in (0, 1]")),
    "budget_samples": (int, False, (lambda v: v >= 10, ">= 10")),
    "formats": (tuple, False, None), "finetune_epochs": (int, False, _NONNEG),
    "top_k": (int, False, _POS),
}


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Every setting of ``nas run`` (defaults: the embedded digits / tiny32 run on a CPU).

    Example YAML (any subset)::

        space: tiny32
        data: digits
        train: {epochs: 30}
        search: {trials: 1000, budget_ms: null}
        export: {formats: [safetensors, onnx], finetune_epochs: 0}
    """

    space: str = "tiny32"
    data: str = "digits"
    seed: int = 0
    train: TrainSection = field(default_factory=TrainSection)
    profile: ProfileSection = field(default_factory=ProfileSection)
    predictor: PredictorSection = field(default_factory=PredictorSection)
    search: SearchSection = field(default_factory=SearchSection)
    export: ExportSection = field(default_factory=ExportSection)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["export"]["formats"] = list(self.export.formats)
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "pipeline config") -> PipelineConfig:
        """Parse a mapping; unknown keys and bad values raise :class:`PipelineError`."""
        raw = {} if raw is None else raw
        values = _parse(raw, [f.name for f in fields(cls)], source)
        for name, section in _SECTIONS.items():
            if name in values:  # a section must be a mapping: `train:` alone is a mistake
                values[name] = section(**_parse(values[name], [f.name for f in fields(section)],
                                                f"{source}: {name}"))
        cfg = cls(**values)
        _check_names(cfg, source)
        return cfg


def _parse(raw: Any, allowed: list[str], where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: expected a mapping, got {type(raw).__name__}")
    bad = [str(k) for k in raw if k not in allowed]
    if bad:
        raise PipelineError(f"{where}: unknown key(s) {', '.join(bad)}; allowed: "
                            f"{', '.join(allowed)}")
    return {k: v if k in _SECTIONS else _value(k, v, f"{where}: {k}") for k, v in raw.items()}


def _value(name: str, value: Any, where: str) -> Any:
    kind, nullable, check = _RULES[name]
    if value is None and nullable:
        return None
    if kind is tuple:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise PipelineError(f"{where}: expected a list of names (e.g. [safetensors, onnx]), "
                                f"got {_short(value)}")
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    rule = f" ({check[1]})" if check else ""
    if (kind is bool) != isinstance(value, bool) or not isinstance(value, kind):
        raise PipelineError(f"{where}: expected {kind.__name__}{rule}, got {_short(value)}")
    if check is not None and not check[0](value):
        raise PipelineError(f"{where}: must be {check[1]}, got {_short(value)}")
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_names(cfg: PipelineConfig, source: str) -> None:
    """Registry names, checked before any work starts."""
    from nas.export.formats import FORMATS
    from nas.predictors import PREDICTORS
    from nas.search import SEARCHERS

    for f in cfg.export.formats:
        if f not in FORMATS:
            raise PipelineError(f"{source}: export: formats: unknown format {f!r}; valid: "
                                f"{', '.join(FORMATS)}")
    if cfg.search.searcher not in SEARCHERS:
        raise PipelineError(f"{source}: search: searcher: unknown {cfg.search.searcher!r}; "
                            f"valid: {', '.join(SEARCHERS)}")
    if cfg.predictor.model != "auto" and cfg.predictor.model not in PREDICTORS:
        raise PipelineError(f"{source}: predictor: model: unknown {cfg.predictor.model!r}; "
                            f"valid: auto, {', '.join(PREDICTORS)}")


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def find_pipeline_config(name_or_path: str | Path) -> Path:
    """A config file path, or the name of a shipped one (``nas/configs/NAME.yaml``)."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    shipped = SHIPPED_CONFIGS / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))
    raise PipelineError(f"pipeline config not found: {name_or_path} (neither a file nor a "
                        f"shipped config; shipped: {', '.join(names)})")


def load_pipeline_config(path: str | Path | None, *, run_dir: str | Path | None = None,
                         data: str | None = None) -> PipelineConfig:
    """Settings of ``nas run``: the YAML file at ``path`` (or a shipped config's name) over
    the defaults; without one, those saved in ``run_dir/pipeline.json`` when it exists (so
    a rerun resumes). ``data`` replaces the dataset spec."""
    cfg = _load_pipeline_config(path, run_dir=run_dir)
    if data is not None:
        from nas.data import parse_data_spec

        parse_data_spec(data)
        cfg = dataclasses.replace(cfg, data=data)
    return cfg


def _load_pipeline_config(path: str | Path | None, *, run_dir: str | Path | None
                          ) -> PipelineConfig:
    if path is not None:
        path = find_pipeline_config(path)
        return PipelineConfig.from_dict(read_yaml(path, what="pipeline config"),
                                        source=str(path))
    saved = Path(run_dir) / "pipeline.json" if run_dir is not None else None
    if saved is not None and saved.is_file():
        status = read_json(saved, what="pipeline status")
        if isinstance(status, dict) and status.get("format") == FORMAT:
            return PipelineConfig.from_dict(status.get("config"), source=str(saved))
    return PipelineConfig()


# --------------------------------------------------------------------------- the run


def with_defaults(saved: Any) -> Any:
    """A saved config with the settings added since it was written at their defaults."""
    if not isinstance(saved, dict):
        return saved
    out = dict(saved)
    for name, section in _SECTIONS.items():
        if isinstance(out.get(name), dict):
            defaults = json.loads(json.dumps(dataclasses.asdict(section())))
            out[name] = {**defaults, **out[name]}
    return out
