"""The settings of ``nas predictor collect`` and ``nas predictor fit`` (and of ``nas run``'s
``predictor:`` section, which embeds their fields): frozen dataclasses whose fields carry
their rules and help (:mod:`nas.settings`).

Example:
    >>> CollectConfig(views=9).views, FitConfig().model
    (9, 'auto')
"""
from __future__ import annotations

from dataclasses import dataclass

from nas.settings import SettingsError, check_settings, setting

__all__ = ["CollectConfig", "FitConfig", "TARGETS"]

TARGETS = ("auto", "acc", "rank", "blend", "combined", "signals")  # nas.predictors.target


@dataclass(frozen=True, kw_only=True)
class CollectConfig:
    """How sampled subnets are scored with inherited weights into a table."""

    views: int = setting(1, "score each val image in this many 1-pixel-shifted views (1-9): "
                         "less label noise on a small val split, views x the inference",
                         check=lambda v: 1 <= v <= 9, rule="in [1, 9]")
    refit_images: int = setting(0, "refit each subnet's classifier on its features of N "
                                "training images before scoring it (0: the inherited "
                                "classifier); ranks closer to standalone training",
                                check=lambda v: v >= 0, rule=">= 0", metavar="N")
    train_speed_steps: int = setting(0, "add a train_speed column: each subnet trained STEPS "
                                     "steps from its own initialisation (e.g. 100; 0: skip); "
                                     "fit then ranks by the combined target",
                                     check=lambda v: v >= 0, rule=">= 0", metavar="STEPS")
    naswot: bool = setting(False, "add a naswot column: each subnet's NASWOT score at its own "
                           "initialisation (one forward pass); fit then ranks by the combined "
                           "target")
    anchors: int = setting(0, "then train K subnets of every stage-0 mixer family standalone "
                           "(the run's recipe) into TABLE.anchors.csv; fit checks predictors "
                           "against them and keeps per-family offsets if they help",
                           check=lambda v: v >= 0, rule=">= 0", metavar="K")
    anchor_epochs: int = setting(5, "standalone epochs of each anchor",
                                 check=lambda v: v >= 1, rule=">= 1", metavar="E")
    workers: int | None = setting(None, "parallel evaluators; 1 = in this process without Ray, "
                                  "more = local Ray (default: the CPU count)",
                                  check=lambda v: v >= 1, rule=">= 1")

    def __post_init__(self) -> None:
        check_settings(self, "collect config", SettingsError)


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    """How a predictor is chosen and fitted on a table."""

    model: str = setting("auto", "mlp | gp | ridge | ensemble | auto (auto: best "
                         "cross-validated Kendall tau)")
    folds: int = setting(5, "cross-validation folds (0 skips)", check=lambda v: v == 0 or v >= 2,
                         rule="0 or >= 2")
    target: str = setting("auto", "what the model regresses on: the accuracy, its "
                          "rank-Gaussian scores, the blend of accuracy and loss ranks, or the "
                          "combined loss and init-signal ranks, or the init-signal ranks alone "
                          "(signals: for a long train_speed, e.g. 1000 steps; auto: combined "
                          "when the table has a loss and a train_speed or naswot column, else "
                          "blend when it has a loss column)",
                          choices=TARGETS)

    def __post_init__(self) -> None:
        check_settings(self, "fit config", SettingsError)
