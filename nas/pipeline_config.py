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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nas.io import read_json, read_yaml
from nas.latency.config import ProfileConfig
from nas.predictors.config import CollectConfig, FitConfig
from nas.search.config import SearchConfig
from nas.settings import SettingsError, check_settings, derive, parse_settings, setting
from nas.training.config import TrainConfig

FORMAT = "vitnas.pipeline"  # the run directory's status file (pipeline.json)

__all__ = ["PipelineError", "PipelineConfig", "TrainSection", "ProfileSection",
           "PredictorSection", "SearchSection", "ExportSection", "SHIPPED_CONFIGS",
           "find_pipeline_config", "load_pipeline_config", "with_defaults"]


class PipelineError(SettingsError):
    """A ``nas run`` setting is invalid, or the run dir holds a pipeline with other settings."""


# --------------------------------------------------------------------------- settings
# Each section embeds the fields of the command it runs (same types, rules, help and
# defaults, see nas.settings.derive); only what nas run alone decides is declared here.

# TrainConfig fields that nas run sets itself (top level, run layout) or leaves to the
# machine (execution): every other training setting is the train section's.
_TRAIN_OWN = ("space", "data", "out", "seed", "arch", "workers", "address", "device", "threads")

TrainSection = derive(
    "TrainSection", TrainConfig, [f.name for f in fields(TrainConfig) if f.name not in _TRAIN_OWN],
    doc="Supernet training: the fields of :class:`nas.training.TrainConfig`.",
    error=PipelineError, module=__name__)

ProfileSection = derive(
    "ProfileSection", ProfileConfig,
    ["threads", "batch_size", "calibrate", "min_run_time", "rounds", "allow_busy"],
    # half the timed calls per measurement: the profile stage stays within the budget of
    # the embedded run
    changes={"min_run_time": 0.025},
    doc="Latency table of this machine (CPU): fields of :class:`nas.latency.config.ProfileConfig`.",
    error=PipelineError, module=__name__)

PredictorSection = derive(
    "PredictorSection", (CollectConfig, FitConfig),
    ["views", "refit_images", "train_speed_steps", "naswot", "anchors", "anchor_epochs", "model",
     "folds", "workers"],
    # digits' 360 val images are few: more views per image make their scores less noisy;
    # one evaluator in this process (no Ray start-up) suits the small default run; a
    # classifier refit on 1000 images and the naswot signal rank subnets as standalone
    # training does far better (digits: Kendall tau 0.61 vs -0.05 against 30 standalone
    # references, bench/results/combined_digits_cpu.md) for ~0.3 s more per subnet
    changes={"views": 9, "workers": 1, "refit_images": 1000, "naswot": True},
    extra=[("collect", int, setting(200, "subnets scored with inherited weights (nas predictor "
                                    "collect -n)", check=lambda v: v >= 2, rule=">= 2"))],
    doc="Subnets scored with inherited weights (``collect`` of them), and the predictor: "
        "fields of :class:`nas.predictors.config.CollectConfig` and ``FitConfig``.",
    error=PipelineError, module=__name__)

SearchSection = derive(
    "SearchSection", SearchConfig, ["searcher", "trials", "workers"],
    extra=[("budget_ms", float | None, setting(None, "latency budget (ms); null: the "
                                               "budget_quantile of random archs' latency",
                                               check=lambda v: v > 0, rule="> 0")),
           ("budget_quantile", float, setting(0.5, "quantile of the random archs' latency "
                                              "taken as the budget", rule="in (0, 1]",
                                              check=lambda v: 0 < v <= 1)),
           ("budget_samples", int, setting(500, "random archs behind the default budget",
                                           check=lambda v: v >= 10, rule=">= 10")),
           ("rerank", int, setting(0, "re-rank the K most accurate archs within the budget by "
                                   "their own training speed (nas rerank) and export that "
                                   "pick; 0: off", check=lambda v: v == 0 or v >= 2,
                                   rule="0 or >= 2")),
           ("rerank_steps", int, setting(1000, "training steps per re-ranked arch",
                                         check=lambda v: v >= 1, rule=">= 1")),
           ("verify", int, setting(5, "time the K most accurate archs within the budget end "
                                   "to end, refit the latency table on them and pick the "
                                   "most accurate timed one (nas verify); 0: off",
                                   check=lambda v: v >= 0, rule=">= 0")),
           ("verify_rounds", int, setting(3, "verify rounds: time the new top K again after "
                                          "each refit", check=lambda v: v >= 1, rule=">= 1"))],
    doc="The search (fields of :class:`nas.search.SearchConfig`); ``budget_ms: null`` takes "
        "the ``budget_quantile`` (median) of the table latencies of ``budget_samples`` random "
        "archs.", error=PipelineError, module=__name__)


@dataclass(frozen=True, kw_only=True)
class ExportSection:
    """The exported best subnet, and how many searched subnets the report compares."""

    formats: tuple[str, ...] = setting(("safetensors", "onnx"), "export formats")
    finetune_epochs: int = setting(0, "fine-tuning epochs of the exported subnet",
                                   check=lambda v: v >= 0, rule=">= 0")
    top_k: int = setting(5, "searched subnets the report compares", check=lambda v: v >= 1,
                         rule=">= 1")

    def __post_init__(self) -> None:
        check_settings(self, "export", PipelineError)


_SECTIONS = {"train": TrainSection, "profile": ProfileSection, "predictor": PredictorSection,
             "search": SearchSection, "export": ExportSection}


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

    space: str = setting("tiny32", "search space YAML file or shipped name")
    data: str = setting("digits", "dataset: digits | imagefolder:PATH | cifar10:PATH")
    seed: int = setting(0, "seed of every stage", check=lambda v: v >= 0, rule=">= 0")
    train: TrainSection = field(default_factory=TrainSection)
    profile: ProfileSection = field(default_factory=ProfileSection)
    predictor: PredictorSection = field(default_factory=PredictorSection)
    search: SearchSection = field(default_factory=SearchSection)
    export: ExportSection = field(default_factory=ExportSection)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["export"]["formats"] = list(self.export.formats)
        return out

    def __post_init__(self) -> None:
        check_settings(self, "pipeline config", PipelineError)

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "pipeline config") -> PipelineConfig:
        """Parse a mapping; unknown keys and bad values raise :class:`PipelineError`."""
        if raw is None:
            raw = {}
        cfg = parse_settings(cls, raw, source, error=PipelineError)
        _check_names(cfg, source)
        return cfg


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
    if cfg.predictor.model == "auto" and cfg.predictor.folds < 2:
        raise PipelineError(f"{source}: predictor: model auto picks the family by "
                            f"cross-validation and needs folds >= 2, got {cfg.predictor.folds}")
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
