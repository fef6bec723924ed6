"""The training configuration: one frozen dataclass, parsed at the edge (CLI flags, JSON).

Every field has a default tuned for the embedded run (``digits`` with
``search_spaces/tiny32.yaml`` on a laptop CPU). Unknown keys and badly typed values are
errors naming the field and what is allowed. The *resolved* config (device chosen,
dataset spec checked) is saved in ``RUN_DIR/config.json`` together with the search
space's canonical form and fingerprint, so a run can be rebuilt exactly.

Example:
    >>> cfg = TrainConfig.from_dict({"space": "tiny32", "data": "digits", "out": "runs/a"})
    >>> cfg.epochs, cfg.replace(seed=3).seed
    (30, 3)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any

from nas.errors import ArtifactError
from nas.settings import SettingsError, check_settings, parse_settings, setting
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


class ConfigError(SettingsError):
    """A training setting is unknown, badly typed or out of range."""


def _pos(v: float) -> bool:
    return v >= 1


def _nonneg(v: float) -> bool:
    return v >= 0


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

    space: str = setting(help="search space YAML file or shipped name (e.g. tiny32)")
    data: str = setting(help="dataset: digits | imagefolder:PATH | cifar10:PATH")
    out: str = setting(help="run directory", metavar="RUN_DIR")
    epochs: int = setting(30, "training epochs", check=_pos, rule=">= 1")
    seed: int = setting(0, "seed of weights, data order, augmentation, subnets", check=_nonneg,
                        rule=">= 0")
    batch_size: int = setting(128, "global batch size", check=_pos, rule=">= 1")
    lr: float = setting(2e-3, "peak learning rate (AdamW)", check=lambda v: v > 0, rule="> 0")
    weight_decay: float = setting(0.05, "AdamW weight decay", check=_nonneg, rule=">= 0",
                                  flag="hidden")
    warmup_epochs: int = setting(3, "linear warmup epochs", check=_nonneg, rule=">= 0",
                                 flag="hidden")
    warmup_lr: float = setting(1e-5, "learning rate at the start of warmup",
                               check=lambda v: v > 0, rule="> 0", flag="hidden")
    min_lr: float = setting(1e-5, "final learning rate", check=_nonneg, rule=">= 0",
                            flag="hidden")
    label_smoothing: float = setting(0.1, "label smoothing", check=lambda v: 0 <= v < 1,
                                     rule="in [0, 1)", flag="hidden")
    num_random: int = setting(1, "random subnets per step besides the largest and smallest",
                              check=_nonneg, rule=">= 0")
    sandwich_rule: str = setting("family", "sandwich rule", choices=SANDWICH_RULES,
                                 flag="hidden")
    end_reduction: str = setting("extreme", "token reduction of the family sandwich's ends",
                                 choices=END_REDUCTION, flag="hidden")
    distill_from: str = setting("largest", "teacher of in-place distillation",
                                choices=DISTILL_FROM, flag="hidden")
    block_sharing: str = setting("mixer", "what blocks share across mixer families",
                                 choices=BLOCK_SHARING, flag="hidden")
    distill: str = setting("kl", "distillation loss", choices=DISTILL, flag="hidden")
    max_shift: int = setting(3, "random translation in pixels (pad + random crop; 4 is the "
                             "CIFAR standard)", check=_nonneg, rule=">= 0")
    hflip: bool = setting(False, "random horizontal flips (off for digits: they are chiral)")
    arch: str | None = setting(None, "train this arch (YAML/JSON file or inline) alone from "
                               "scratch instead of the supernet; it must belong to --space")
    clip_grad: float = setting(5.0, "gradient-norm clipping", check=_nonneg,
                               rule=">= 0 (0 disables clipping)", flag="hidden")
    eval_batch_size: int = setting(256, "validation batch size", check=_pos, rule=">= 1",
                                   flag="hidden")
    calib_size: int = setting(512, "training images that recalibrate BatchNorm",
                              check=_pos, rule=">= 1", flag="hidden")
    workers: int | None = setting(None, "data-parallel Ray Train workers (default: train in "
                                  "this process without Ray)", check=_pos, rule=">= 1")
    address: str | None = setting(None, "Ray cluster address (default: RAY_ADDRESS or a "
                                  "local Ray)")
    device: str | None = setting(None, "default: cuda when available", choices=DEVICES)
    threads: int = setting(0, "torch threads per process (0: automatic)", check=_nonneg,
                           rule=">= 0 (0: automatic)")
    limit_train: int = setting(0, "use only the first N training images (0: all)",
                               check=_nonneg, rule=">= 0", flag="hidden")
    limit_val: int = setting(0, "use only the first N validation images (0: all)",
                             check=_nonneg, rule=">= 0", flag="hidden")

    def __post_init__(self) -> None:
        check_settings(self, "train config", ConfigError)
        # The dataset registry loads torch: imported here, not at module level, so the
        # config (and `nas train --help`, whose flags it defines) loads without it.
        from nas.data import parse_data_spec

        parse_data_spec(self.data)

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "train config") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys (``RUN_META_KEYS`` are skipped)."""
        if isinstance(raw, dict):
            missing = [n for n in ("space", "data", "out") if raw.get(n) is None]
            if missing:
                raise ConfigError(f"{source}: missing {', '.join(missing)} (give --{missing[0]})")
        return parse_settings(cls, raw, source, ignore=RUN_META_KEYS, error=ConfigError)

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
        import torch  # not at module level: see __post_init__

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
