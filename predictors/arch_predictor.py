"""An accuracy predictor bound to a search space, and its file format.

:class:`ArchPredictor` wraps a fitted :class:`nas.predictors.base.Predictor` with what
turns archs into its inputs: the space (for :func:`nas.encoding.encode_arch`), the
feature standardisation and the target standardisation. It predicts validation
accuracy (0..1, the ``acc`` of the table it was fitted on) and never touches a
supernet.

File format (no pickle, loading runs no code): either a directory holding
``predictor.json`` + ``predictor.safetensors``, or a pair ``NAME.json`` +
``NAME.safetensors``. The JSON holds the format tag, the search space (definition
and fingerprint), encoding names, feature normalisation, target normalisation, the
model family with its hyperparameters and fitted scalars, cross-validation metrics,
and the sha256 of the safetensors file, so a corrupted or mismatched pair is refused.
Version 3 adds an optional ``calibration`` (per stage-0 family offsets learnt from
standalone anchors, :mod:`nas.predictors.calibration`); versions 1 and 2 still load.

Example:
    >>> pred = load_predictor("runs/acc_predictor", space=space)  # doctest: +SKIP
    >>> mean, std = pred.predict_with_std([arch])  # doctest: +SKIP
"""
from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.encoding import encoding_names
from nas.errors import ArtifactError
from nas.io import atomic_path, read_json, write_json
from nas.predictors.base import PREDICTORS, Predictor, PredictorError
from nas.predictors.calibration import FamilyOffsets
from nas.predictors.features import (
    COMPLEXITY_FEATURES,
    ArchEncoder,
    space_from_record,
    space_record,
)
from nas.predictors.target import TargetMap
from nas.space import SearchSpace

__all__ = ["ArchPredictor", "load_predictor", "predictor_paths", "FORMAT"]

FORMAT = "vitnas.accuracy_predictor"
VERSION = 3  # 2: target transforms (1 is plain ``acc``); 3: family calibration (all load)


class ArchPredictor:
    """A fitted predictor of validation accuracy for the archs of one search space.

    Build one with :func:`nas.predictors.fit_predictor` or :func:`load_predictor`.

    Args:
        space: the search space.
        model: a fitted predictor taking standardised features.
        x_mean, x_std: feature standardisation (one value per feature).
        y_mean, y_std: target standardisation.
        target: the target transform and its map back to accuracy (default: plain ``acc``).
        complexity: whether ``log(params)``/``log(MACs)`` follow the encoding.
        info: JSON-able extras saved with the predictor (CV metrics, data summary).
        calibration: per stage-0 family offsets added to the model's scores (from anchors).
    """

    def __init__(self, *, space: SearchSpace, model: Predictor, x_mean: Sequence[float],
                 x_std: Sequence[float], y_mean: float, y_std: float,
                 target: TargetMap | None = None, complexity: bool = False,
                 info: Mapping[str, Any] | None = None,
                 calibration: FamilyOffsets | None = None):
        self.space = space
        self.model = model
        self.encoder = ArchEncoder(space, complexity=complexity)
        self.x_mean = np.asarray(x_mean, dtype=np.float64)
        self.x_std = np.asarray(x_std, dtype=np.float64)
        if self.x_mean.shape != (self.encoder.dim,) or self.x_std.shape != (self.encoder.dim,):
            raise ArtifactError(f"feature normalisation has {self.x_mean.shape[0]} values, space "
                                f"{space.name} has {self.encoder.dim} features")
        self.y_mean, self.y_std = float(y_mean), float(y_std)
        self.target = target if target is not None else TargetMap("acc")
        self.complexity = complexity
        self.info: dict[str, Any] = dict(info or {})
        self.calibration = calibration

    # -- properties ---------------------------------------------------------------------

    @property
    def space_fingerprint(self) -> str:
        return self.space.fingerprint

    @property
    def encoding_names(self) -> list[str]:
        return encoding_names(self.space)

    @property
    def feature_names(self) -> list[str]:
        return list(self.encoder.names)

    @property
    def family(self) -> str:
        return self.model.name

    @property
    def has_std(self) -> bool:
        """Whether :meth:`predict_with_std` returns a standard deviation (else ``None``)."""
        return bool(self.model.has_std)

    def __repr__(self) -> str:
        return (f"ArchPredictor(family={self.family!r}, space={self.space.name!r} "
                f"({self.space_fingerprint}), features={self.encoder.dim})")

    # -- prediction ---------------------------------------------------------------------

    def features(self, archs: Sequence[Arch]) -> np.ndarray:
        """Standardised features of ``archs`` (the model's inputs)."""
        return (self.encoder.encode(archs) - self.x_mean) / self.x_std

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted validation accuracy of each arch (float64 array)."""
        return self.predict_with_std(archs)[0]

    def scores(self, archs: Sequence[Arch], *, calibrated: bool = True) -> np.ndarray:
        """The model's target-space scores (higher: better), with the family calibration
        unless ``calibrated=False``; predictions are these mapped back to accuracy."""
        if isinstance(archs, Arch):
            archs = [archs]
        if len(archs) == 0:
            return np.zeros(0)
        z = self.model.predict(self.features(archs))[0] * self.y_std + self.y_mean
        if calibrated and self.calibration is not None:
            z = self.calibration.apply(z, [a.stages[0].mixer for a in archs])
        return z

    def predict_with_std(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted accuracy and its standard deviation (``None`` if the family has none).

        Archs are not checked for membership in the space (that costs more than the
        prediction); archs from elsewhere get meaningless scores.
        """
        if isinstance(archs, Arch):
            archs = [archs]
        if len(archs) == 0:
            return np.zeros(0), (np.zeros(0) if self.has_std else None)
        mean, std = self.model.predict(self.features(archs))
        z = mean * self.y_std + self.y_mean
        if self.calibration is not None:
            z = self.calibration.apply(z, [a.stages[0].mixer for a in archs])
        acc = self.target.to_acc(z)
        return acc, (None if std is None else self.target.std_to_acc(z, std * self.y_std))

    # -- saving -------------------------------------------------------------------------

    def config(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(tensors, JSON config) as saved."""
        tensors, model_config = self.model.state()
        target_tensors, target_config = self.target.state()
        tensors = {**tensors, **target_tensors}
        cfg = {
            "format": FORMAT, "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "space": space_record(self.space),
            "encoding_names": self.encoding_names,
            "features": {"names": self.feature_names, "complexity": self.complexity,
                         "mean": self.x_mean.tolist(), "std": self.x_std.tolist()},
            "target": {**target_config, "mean": self.y_mean, "std": self.y_std},
            "model": {"family": self.family, "config": model_config},
            **({"calibration": _finite(self.calibration.state())} if self.calibration else {}),
            **_finite(self.info),
        }
        return tensors, cfg

    def save(self, path: str | Path) -> Path:
        """Save as a directory (``path``) or a pair (``path`` ending in ``.json``); return the JSON path."""
        from safetensors.numpy import save_file

        json_path, st_path = predictor_paths(path, for_writing=True)
        tensors, cfg = self.config()
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        with atomic_path(st_path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
            cfg["weights_sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()
        write_json(json_path, cfg)
        return json_path


def predictor_paths(path: str | Path, *, for_writing: bool = False) -> tuple[Path, Path]:
    """(JSON path, safetensors path) of a predictor given as a directory or a file pair."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        return p.with_suffix(".json"), p.with_suffix(".safetensors")
    if not for_writing and not p.is_dir() and p.with_name(p.name + ".json").is_file():
        return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")
    return p / "predictor.json", p / "predictor.safetensors"


def load_predictor(path: str | Path, *, space: SearchSpace | None = None) -> ArchPredictor:
    """Load a saved predictor; with ``space``, refuse one fitted on another space.

    Raises:
        ArtifactError: missing or corrupted files, another format, another search space.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    json_path, st_path = predictor_paths(path)
    if not json_path.is_file():
        raise ArtifactError(f"predictor not found: {path} (expected a directory with "
                            f"predictor.json, or NAME.json + NAME.safetensors)")
    what = f"predictor {json_path}"
    cfg = read_json(json_path, what="predictor")
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ArtifactError(f"{json_path} is not an accuracy predictor (format {FORMAT!r} expected)")
    if cfg.get("version") not in (1, 2, VERSION):
        raise ArtifactError(f"{what}: format version {cfg.get('version')!r}, this code reads {VERSION}")
    record = cfg.get("space")
    if space is not None:
        fp = record.get("fingerprint") if isinstance(record, dict) else None
        space.check_arch_compat(str(fp), what)
    else:
        space = space_from_record(record, what)
    if cfg.get("encoding_names") != encoding_names(space):
        raise ArtifactError(f"{what}: its encoding names differ from those of space "
                            f"{space.name}; refit the predictor")
    if not st_path.is_file():
        raise ArtifactError(f"{what}: weights file {st_path} is missing")
    blob = st_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != cfg.get("weights_sha256"):
        raise ArtifactError(f"{what}: weights file {st_path} is corrupted or belongs to another "
                            f"predictor (sha256 mismatch)")
    try:
        tensors = load(blob)
    except SafetensorError as e:
        raise ArtifactError(f"{what}: weights file {st_path} is corrupted: {e}") from None
    try:
        model_cfg, feats, target = cfg["model"], cfg["features"], cfg["target"]
        family = model_cfg["family"]
        if family not in PREDICTORS:
            raise ArtifactError(f"{what}: unknown model family {family!r}; known: "
                                f"{', '.join(sorted(PREDICTORS))}")
        target_map = TargetMap.from_state(tensors, target)
        tensors = {k: v for k, v in tensors.items() if not k.startswith("target.")}
        model = PREDICTORS[family].from_state(tensors, model_cfg["config"])
        complexity = bool(feats["complexity"])
        if list(feats["names"]) != encoding_names(space) + (list(COMPLEXITY_FEATURES) if complexity else []):
            raise ArtifactError(f"{what}: feature names do not match the space's encoding")
        info = {k: v for k, v in cfg.items() if k not in _OWN_KEYS}
        cal = cfg.get("calibration")
        return ArchPredictor(space=space, model=model, x_mean=feats["mean"], x_std=feats["std"],
                             y_mean=target["mean"], y_std=target["std"], target=target_map,
                             complexity=complexity, info=info,
                             calibration=None if cal is None else FamilyOffsets.from_state(cal))
    except ArtifactError:
        raise
    except (PredictorError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ArtifactError(f"{what} is corrupted: {type(e).__name__}: {e}") from None


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by ``None`` so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


_OWN_KEYS = ("format", "version", "created", "space", "encoding_names", "features", "target",
             "model", "weights_sha256", "calibration")
