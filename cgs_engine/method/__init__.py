"""The maths of CGS: specialist labels, IHED, fused labels, losses and the training objective."""

from .ihed import FUSED_RULES, disagreement_map, fused_specialist_label, ihed_consistent
from .labels import IGNORE_INDEX, specialist_targets
from .losses import CE_NORMALISATIONS, ce_dice, cross_entropy, dice_loss, specialist_ce_dice
from .objective import (
    LOSS_TERMS,
    METHODS,
    ObjectiveConfig,
    compute_losses,
    lambda_schedule,
    poly_lr,
)

__all__ = [
    "CE_NORMALISATIONS",
    "FUSED_RULES",
    "IGNORE_INDEX",
    "LOSS_TERMS",
    "METHODS",
    "ObjectiveConfig",
    "ce_dice",
    "compute_losses",
    "cross_entropy",
    "dice_loss",
    "disagreement_map",
    "fused_specialist_label",
    "ihed_consistent",
    "lambda_schedule",
    "poly_lr",
    "specialist_ce_dice",
    "specialist_targets",
]
