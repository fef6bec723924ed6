"""The training configuration: one frozen dataclass, parsed at the edge (CLI flags, JSON).

Every field has a default tuned for the embedded run (``digits`` with
``search_spaces/tiny32.yaml`` on a laptop CPU). Unknown keys and badly typed values are
errors naming the field and what is allowed. The *resolved* config (device chosen,
dataset spec checked) is saved in ``RUN_DIR/config.json`` together with the search
space's canonical form and fingerprint, so a run can be rebuilt exactly.

Example:
    >>> cfg = TrainConfig.from_dict({"space": "tiny32", "data": "digits", "out": "runs/a"})
    >>> cfg.epochs, cfg.replace(seed=3).seed
    (60, 3)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any

import torch

from nas.data import parse_data_spec
from nas.errors import ArtifactError, NasError
from nas.threads import usable_cpus

__all__ = ["ConfigError", "TrainConfig", "DISTILL", "DEVICES", "EXECUTION_FIELDS", "RUN_META_KEYS",
           "auto_threads", "check_resume_compatible"]

DISTILL = ("kl", "soft_ce")
SANDWICH_RULES = ("family", "classic")
END_REDUCTION = ("random", "extreme")
DISTILL_FROM = ("largest", "family")
BLOCK_SHARING = ("mixer", "all")  # nas.supernet.BLOCK_SHARING (not imported: keeps config light)
DEVICES = ("cpu", "cuda")
# Fields that say *where* a run executes, not *what* it computes; they may change on --resume.
EXECUTION_FIELDS = ("out", "workers", "address", "device", "threads")
# Keys that config.json holds beside the TrainConfig fields.
RUN_META_KEYS = ("search_space", "fingerprint", "image_size", "num_classes", "versions")
# what a standalone run takes from the supernet run it is compared with: data, subset,
# epochs, optimizer and augmentation (not the supernet-only settings)
RECIPE_KEYS = ("space", "data", "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs",
               "warmup_lr", "min_lr", "label_smoothing", "max_shift", "hflip", "clip_grad",
               "limit_train", "limit_val")


class ConfigError(NasError):
    """A training setting is unknown, badly typed or out of range."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Training settings: a supernet (sandwich rule + in-place distillation, BigNAS-style),
    or with ``arch`` one architecture alone from scratch with the same recipe.

    Args:
        space: search space YAML path or shipped name.
        data: dataset spec, ``digits``, ``imagefolder:PATH`` or ``cifar10:PATH``.
        out: run directory.
        epochs: training epochs (cosine schedule length).
        seed: seeds weights, shuffling, augmentation and arch sampling.
        batch_size: global batch size (split across workers).
        lr: peak learning rate (AdamW via ``timm.optim.create_optimizer_v2``).
        weight_decay: AdamW weight decay (not applied to biases and norms).
        warmup_epochs: linear warmup before the cosine decay.
        warmup_lr: learning rate at the start of warmup.
        min_lr: final learning rate of the cosine decay.
        label_smoothing: for the largest subnet's cross-entropy on labels.
        num_random: random subnets per step, besides the largest and smallest.
        sandwich_rule: ``family`` (default): each step also draws one token-mixer family
            per stage and trains the largest and smallest subnets of that family, so
            every mixer family is trained at both ends of its width range; ``classic``:
            the global largest and smallest only (BigNAS).
        end_reduction: ``random``: the family sandwich's ends draw their token
            pruning/merging setting (keep ratio, method, block) at random each step, so wide
            subnets are trained with reduced tokens too; ``extreme`` (the earlier rule): the
            family largest keeps every token and the family smallest prunes the most. The
            global largest and smallest are always the extremes.
        distill_from: ``largest``: every subnet learns from the global largest one's soft
            labels; ``family`` (with the family sandwich): the step's family largest is
            trained on the labels too and is the teacher of the family smallest and of
            the random subnets, which are drawn from the same mixer families, so no
            family learns to imitate another's inductive bias.
        block_sharing: ``mixer`` (default): each mixer family has its own block weights
            (norms, FFNs); ``all``: blocks share everything but the mixers (see
            :class:`nas.supernet.Supernet`).
        distill: ``kl`` or ``soft_ce`` against the largest subnet's soft labels.
        max_shift: largest random translation of ``nas.data.augment_batch`` (pixels; 4 is
            the standard CIFAR pad-and-crop).
        hflip: random horizontal flips (``nas.data.augment_batch``); keep off for digits.
        arch: train this one architecture of the space alone, from scratch (standalone
            training: same recipe, run dir, checkpoints and resume; the sandwich,
            ``num_random`` and distillation do not apply). An arch file or inline
            YAML/JSON; the resolved config holds it as canonical JSON.
        clip_grad: gradient-norm clipping after the sandwich (0 disables it).
        eval_batch_size: batch size of the per-epoch validation.
        calib_size: training images used to recalibrate BatchNorm before validation.
        workers: Ray Train data-parallel workers; ``None`` trains in this process.
        address: Ray cluster address (``None``: ``RAY_ADDRESS`` or a local instance).
        device: ``cpu`` or ``cuda`` (``None`` picks cuda when available).
        threads: torch threads per process (0: automatic, see :func:`auto_threads`).
        limit_train: use only the first N training images (0: all); for tests.
        limit_val: use only the first N validation images (0: all); for tests.
    """

    space: str
    data: str
    out: str
    epochs: int = 60
    seed: int = 0
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    num_random: int = 1
    sandwich_rule: str = "family"
    end_reduction: str = "extreme"
    distill_from: str = "largest"
    block_sharing: str = "mixer"
    distill: str = "kl"
    max_shift: int = 3
    hflip: bool = False
    arch: str | None = None
    clip_grad: float = 5.0
    eval_batch_size: int = 256
    calib_size: int = 512
    workers: int | None = None
    address: str | None = None
    device: str | None = None
    threads: int = 0
    limit_train: int = 0
    limit_val: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _FIELD_TYPES[f.name]
            optional = f.default is None
            if value is None and optional:
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            elif kind is bool and not isinstance(value, bool) \
                    or kind is not bool and (isinstance(value, bool) or not isinstance(value, kind)):
                raise ConfigError(f"train config: {f.name} must be {kind.__name__}"
                                  f"{' or null' if optional else ''}, got {value!r}")
        _check_range(self)
        parse_data_spec(self.data)

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "train config") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys (``RUN_META_KEYS`` are skipped)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = [k for k in raw if k not in names and k not in RUN_META_KEYS]
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}; "
                              f"allowed: {', '.join(names)}")
        missing = [n for n in ("space", "data", "out") if raw.get(n) is None]
        if missing:
            raise ConfigError(f"{source}: missing {', '.join(missing)} (give --{missing[0]})")
        return cls(**{k: v for k, v in raw.items() if k in names})

    @property
    def standalone(self) -> bool:
        """True when this config trains one architecture alone (``arch`` is set)."""
        return self.arch is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def resolved(self) -> TrainConfig:
        """This config with the device chosen (and checked: a saved config may name cuda)."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train config: device cuda requested but CUDA is not available; "
                              "use --device cpu")
        if self.device is not None:
            return self
        return self.replace(device="cuda" if torch.cuda.is_available() else "cpu")

    def identity_diff(self, other: TrainConfig) -> list[str]:
        """Fields whose values differ, as ``name: a != b``.

        ``EXECUTION_FIELDS`` are left out, and so is ``space``: a space is compared by
        fingerprint, whatever path or name it was given by.
        """
        return [f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
                for f in fields(self) if f.name not in (*EXECUTION_FIELDS, "space")
                and getattr(self, f.name) != getattr(other, f.name)]


_STR_FIELDS = ("space", "data", "out", "distill", "sandwich_rule", "end_reduction", "distill_from",
               "block_sharing", "address", "device", "arch")
_BOOL_FIELDS = ("hflip",)
_FLOAT_FIELDS = ("lr", "weight_decay", "warmup_lr", "min_lr", "label_smoothing", "clip_grad")
_FIELD_TYPES: dict[str, type] = {
    f.name: str if f.name in _STR_FIELDS else float if f.name in _FLOAT_FIELDS
    else bool if f.name in _BOOL_FIELDS else int for f in fields(TrainConfig)}


def _check_range(c: TrainConfig) -> None:
    def need(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"train config: {name} must be {rule}, got {getattr(c, name)!r}")

    need(c.epochs >= 1, "epochs", ">= 1")
    need(c.batch_size >= 1, "batch_size", ">= 1")
    need(c.lr > 0, "lr", "> 0")
    need(c.weight_decay >= 0, "weight_decay", ">= 0")
    need(c.warmup_epochs >= 0, "warmup_epochs", ">= 0")
    need(c.warmup_lr > 0 and c.min_lr >= 0, "warmup_lr", "> 0 (and min_lr >= 0)")
    need(0 <= c.label_smoothing < 1, "label_smoothing", "in [0, 1)")
    need(c.num_random >= 0, "num_random", ">= 0")
    need(c.distill in DISTILL, "distill", "one of " + ", ".join(DISTILL))
    need(c.sandwich_rule in SANDWICH_RULES, "sandwich_rule", "one of " + ", ".join(SANDWICH_RULES))
    need(c.end_reduction in END_REDUCTION, "end_reduction", "one of " + ", ".join(END_REDUCTION))
    need(c.distill_from in DISTILL_FROM, "distill_from", "one of " + ", ".join(DISTILL_FROM))
    need(c.block_sharing in BLOCK_SHARING, "block_sharing", "one of " + ", ".join(BLOCK_SHARING))
    need(c.max_shift >= 0, "max_shift", ">= 0")
    need(c.clip_grad >= 0, "clip_grad", ">= 0 (0 disables clipping)")
    need(c.eval_batch_size >= 1, "eval_batch_size", ">= 1")
    need(c.calib_size >= 1, "calib_size", ">= 1")
    need(c.workers is None or c.workers >= 1, "workers", ">= 1")
    need(c.device is None or c.device in DEVICES, "device", "one of " + ", ".join(DEVICES))
    need(c.threads >= 0, "threads", ">= 0 (0: automatic)")
    need(c.limit_train >= 0 and c.limit_val >= 0, "limit_train", ">= 0 (and limit_val >= 0)")


def standalone_recipe(run_config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The recipe (:data:`RECIPE_KEYS`) of a supernet run's config, with ``changes``: what
    ``TrainConfig.from_dict({**recipe, "arch": ..., "out": ...})`` trains one arch alone with."""
    defaults = TrainConfig(space="x", data="digits", out="x").to_dict()
    recipe = {k: run_config.get(k, defaults[k]) for k in RECIPE_KEYS}
    recipe.update(changes)
    return recipe


def auto_threads(workers: int = 1) -> int:
    """Torch threads for one of ``workers`` processes on this machine.

    The CPUs this process may use are divided among the workers, leaving out those
    already busy (1-minute load average): OpenMP threads that outnumber free cores spin
    and slow small models down several times over.
    """
    cpus = usable_cpus()
    try:
        busy = int(os.getloadavg()[0])
    except OSError:  # not available on this platform
        busy = 0
    return max(1, min(cpus, cpus - busy) // max(1, workers))


def check_resume_compatible(saved: TrainConfig, given: TrainConfig, run_dir: str) -> None:
    """Raise :class:`ArtifactError` if ``given`` would compute something else than ``saved``."""
    diff = saved.identity_diff(given)
    if diff:
        raise ArtifactError(f"cannot resume {run_dir}: settings differ from its config.json "
                            f"(saved != given): {'; '.join(diff)}")
