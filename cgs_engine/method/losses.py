"""Cross-entropy and soft Dice with pixel masks, for the generalist and for stacked specialists.

Conventions:
* logits [B, S, H, W] and integer targets [B, H, W] (generalist), or, in the ``specialist_*``
  functions, logits [B, K, S, H, W] and targets [B, K, H, W]: each head is scored on its own and
  the K losses are averaged (identical to looping over heads, without the loop).
* ``mask`` (bool or float, [B, H, W], or [B, K, H, W] for specialists) selects the pixels that count;
  pixels whose target is ``ignore_index`` never count.
* Everything is computed in float32, whatever the logits' dtype (bf16 under autocast).
* Every loss accepts the logits or their :class:`ClassScores` (log-softmax and softmax over the
  class axis). CGS scores the same student logits against three targets (g2g, s2g, cons_g on the
  generalist; s2s, g2s, cons_s on the specialists), each with cross-entropy and Dice: sharing one
  log-softmax per logits tensor gives the same losses and gradients as one softmax per loss, with
  a sixth of the softmax work (and its backward) on the unlabeled views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .labels import IGNORE_INDEX

CE_NORMALISATIONS = ("kept", "all")
# Classes with no target pixel in the batch: "skip" leaves them out of the Dice mean (their
# pixels still count as background for the present classes, and cross-entropy still scores
# them); "include" is the reference. An absent class's Dice is ~0 whatever the network does
# (smoothing 1e-5), but its gradient, 2 p eps / (sum p^2 + eps)^2, grows as the class fades:
# on a slice batch without the larynx it was 600 times the cross-entropy's and pushed the
# larynx towards 0 on every pixel. Small organs are absent from most small batches, so a
# fine-tuned network shrank them (bench/finetune_drift.py: false negatives up 3x in 300 steps).
DICE_ABSENT = ("skip", "include")
DICE_SMOOTH = 1e-5


@dataclass(frozen=True)
class ClassScores:
    """Log-probabilities and probabilities of one logits tensor over its class axis (dim 1), float32."""

    log_probs: torch.Tensor
    probs: torch.Tensor

    def dim(self) -> int:
        return self.log_probs.dim()


def class_scores(logits: torch.Tensor | ClassScores) -> ClassScores:
    """Softmax over dim 1, computed once for every loss term on the same logits."""
    if isinstance(logits, ClassScores):
        return logits
    log_probs = logits.float().log_softmax(dim=1)
    return ClassScores(log_probs, log_probs.exp())


def specialist_scores(spec_logits: torch.Tensor | ClassScores) -> ClassScores:
    """:func:`class_scores` of specialist logits [B, K, S, H, W], classes moved to dim 1: [B, S, K, H, W]."""
    if isinstance(spec_logits, ClassScores):
        return spec_logits
    return class_scores(spec_logits.movedim(2, 1))


def _weights(target: torch.Tensor, mask: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    """Float per-pixel weights: mask (if any) times [target != ignore_index]."""
    valid = (target != ignore_index).float()
    if mask is None:
        return valid
    if mask.dim() == target.dim() - 1:  # a [B, H, W] mask shared by K specialist heads
        mask = mask.unsqueeze(1)
    return valid * mask.float()


def _dice(
    scores: ClassScores,
    target: torch.Tensor,
    weights: torch.Tensor,
    reduce_dims: tuple[int, ...],
    ignore_index: int,
    absent: str = "skip",
) -> torch.Tensor:
    """1 - mean soft Dice; logits [B, S, ...], summed over ``reduce_dims`` (per class, per head).

    ``absent="skip"`` averages over the (class, head) pairs with at least one target pixel; with
    none at all the loss is 0 (still attached to the graph).
    """
    probs = scores.probs
    safe_target = torch.where(target == ignore_index, 0, target)  # weight 0 there anyway
    onehot = torch.zeros_like(probs).scatter_(1, safe_target.unsqueeze(1), 1.0)
    weights = weights.unsqueeze(1)
    onehot = onehot * weights
    intersection = (probs * onehot).sum(reduce_dims)
    # squared-probability denominator (V-Net style, as the reference); onehot**2 == onehot
    denominator = (probs * probs * weights).sum(reduce_dims) + onehot.sum(reduce_dims)
    dice = (2.0 * intersection + DICE_SMOOTH) / (denominator + DICE_SMOOTH)
    if absent == "include":
        return 1.0 - dice.mean()
    if absent != "skip":
        raise ValueError(f"absent must be one of {DICE_ABSENT}, got {absent!r}")
    present = (onehot.sum(reduce_dims) > 0).float()
    return ((1.0 - dice) * present).sum() / present.sum().clamp_min(1.0)


def _cross_entropy(
    scores: ClassScores,
    target: torch.Tensor,
    weights: torch.Tensor,
    normalise: str,
    ignore_index: int,
    head_dim: bool,
) -> torch.Tensor:
    if normalise not in CE_NORMALISATIONS:
        raise ValueError(f"normalise must be one of {CE_NORMALISATIONS}, got {normalise!r}")
    per_pixel = F.nll_loss(scores.log_probs, target, ignore_index=ignore_index, reduction="none")
    reduce_dims = tuple(d for d in range(per_pixel.dim()) if not (head_dim and d == 1))
    total = (per_pixel * weights).sum(reduce_dims)
    if normalise == "kept":
        # with no kept pixel the loss is 0 (still attached to the graph), never 0/0
        return (total / weights.sum(reduce_dims).clamp_min(1.0)).mean()
    pixels = per_pixel.numel() // (per_pixel.shape[1] if head_dim else 1)
    return (total / pixels).mean()


def dice_loss(
    logits: torch.Tensor | ClassScores,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    masked: bool = True,
    ignore_index: int = IGNORE_INDEX,
    absent: str = "skip",
) -> torch.Tensor:
    """Soft multi-class Dice loss over the S classes (background included).

    Per class, sums run over the whole batch; the loss is 1 - mean over the classes present in
    the batch's target (``absent="include"``: over all classes, the reference). With ``masked``
    only pixels with mask true count; ``masked=False`` ignores the mask (the reference's behaviour).
    """
    weights = _weights(target, mask if masked else None, ignore_index)
    scores = class_scores(logits)
    return _dice(scores, target, weights, (0, *range(2, scores.dim())), ignore_index, absent)


def cross_entropy(
    logits: torch.Tensor | ClassScores,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    normalise: str = "kept",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Masked pixel-wise cross-entropy.

    ``normalise="kept"`` divides the masked sum by the number of kept pixels (0 when none is kept);
    ``"all"`` divides by every pixel of the batch, kept or not (the reference's behaviour).
    """
    weights = _weights(target, mask, ignore_index)
    return _cross_entropy(class_scores(logits), target, weights, normalise, ignore_index, head_dim=False)


def ce_dice(
    logits: torch.Tensor | ClassScores,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dice_masked: bool = True,
    normalise: str = "kept",
    ignore_index: int = IGNORE_INDEX,
    dice_absent: str = "skip",
) -> torch.Tensor:
    """cross_entropy + dice_loss on the same target and mask (one softmax for both)."""
    scores = class_scores(logits)
    return cross_entropy(scores, target, mask, normalise, ignore_index) + dice_loss(
        scores, target, mask, dice_masked, ignore_index, dice_absent
    )


def specialist_ce_dice(
    spec_logits: torch.Tensor | ClassScores,
    spec_targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dice_masked: bool = True,
    normalise: str = "kept",
    ignore_index: int = IGNORE_INDEX,
    dice_absent: str = "skip",
) -> torch.Tensor:
    """Mean over the K heads of ``ce_dice(spec_logits[:, k], spec_targets[:, k], mask)``.

    With ``dice_absent="skip"`` the Dice part averages over the (class, head) pairs present.
    ``spec_logits`` may be :func:`specialist_scores` (classes on dim 1, heads on dim 2).
    """
    scores = specialist_scores(spec_logits)  # [B, S, K, H, W]: classes on dim 1, heads on dim 2
    ce_weights = _weights(spec_targets, mask, ignore_index)
    ce = _cross_entropy(scores, spec_targets, ce_weights, normalise, ignore_index, head_dim=True)
    dice_weights = ce_weights if dice_masked else _weights(spec_targets, None, ignore_index)
    dice = _dice(scores, spec_targets, dice_weights, (0, *range(3, scores.dim())), ignore_index, dice_absent)
    return ce + dice
