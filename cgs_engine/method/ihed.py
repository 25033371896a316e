"""Inter-head error detection (IHED), the fused specialist label and the disagreement map.

Specialist outputs are [B, K, S, H, W]: K heads, S = 3 channels (0 background, 1 mine,
2 remaining) or S = 2 for binary one-vs-rest heads (0 not mine, 1 mine).
"""

from __future__ import annotations

import torch

from .labels import BACKGROUND, MINE, REMAINING, argmax_along

FUSED_RULES = ("implied", "reference")


def _check_channels(spec: torch.Tensor, binary: bool) -> None:
    expected = 2 if binary else 3
    if spec.dim() != 5 or spec.shape[2] != expected:
        kind = "binary" if binary else "three-class"
        raise ValueError(
            f"{kind} specialist outputs must be [B, K, {expected}, H, W], got {tuple(spec.shape)}"
        )


def ihed_consistent(spec_argmax: torch.Tensor, binary: bool = False) -> torch.Tensor:
    """IHED mask m_I [B, H, W] from the heads' argmax a_k [B, K, H, W].

    Three-class: consistent iff every head says background, or exactly one head says "mine" and all
    others say "remaining". With K = 1 that means a_1 in {0, 1} ("remaining" with no other class to
    point at is an error). Binary: consistent iff at most one head claims the pixel.
    """
    claims = (spec_argmax == MINE).sum(dim=1)
    if binary:
        return claims <= 1
    num_heads = spec_argmax.shape[1]
    all_background = (spec_argmax == BACKGROUND).all(dim=1)
    one_claim = (claims == 1) & ((spec_argmax == REMAINING).sum(dim=1) == num_heads - 1)
    return all_background | one_claim


def _reference_label(spec_probs: torch.Tensor) -> torch.Tensor:
    """argmax over [mean_k p_k(background), p_1(mine), ..., p_K(mine)]."""
    background = spec_probs[:, :, BACKGROUND].mean(dim=1, keepdim=True)
    return argmax_along(torch.cat([background, spec_probs[:, :, MINE]], dim=1), 1)


def fused_specialist_label(
    spec: torch.Tensor, rule: str = "implied", binary: bool = False, *, from_logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse K specialists into one C-class label y_S [B, H, W]; also return the IHED mask [B, H, W].

    ``spec`` holds probabilities [B, K, S, H, W] (pass ``from_logits=True`` for logits; the
    "implied" rule on consistent pixels only needs the argmax, but the reference rule averages
    probabilities).

    "implied": k where head k claims the pixel, 0 where all heads say background. At inconsistent
    pixels there is no implied class; there we return the "reference" value so the label is always
    defined (losses mask those pixels with m_I anyway, except in the no-IHED ablation).
    "reference": the authors' rule, ``_reference_label``, at every pixel.
    """
    if rule not in FUSED_RULES:
        raise ValueError(f"rule must be one of {FUSED_RULES}, got {rule!r}")
    _check_channels(spec, binary)
    probs = spec.float().softmax(dim=2) if from_logits else spec.float()
    heads_argmax = argmax_along(probs, 2)
    consistent = ihed_consistent(heads_argmax, binary)
    reference = _reference_label(probs)
    if rule == "reference":
        return reference, consistent
    claims = heads_argmax == MINE
    claimed_class = argmax_along(claims.to(torch.uint8), 1) + 1
    implied = torch.where(claims.any(dim=1), claimed_class, torch.zeros_like(claimed_class))
    return torch.where(consistent, implied, reference), consistent


def _exclusive_product(values: torch.Tensor, dim: int) -> torch.Tensor:
    """out_k = prod_{j != k} values_j along ``dim``, without dividing (values may be 0)."""
    last = values.shape[dim] - 1
    ones = torch.ones_like(values.narrow(dim, 0, 1))
    before = torch.cat([ones, values.cumprod(dim).narrow(dim, 0, last)], dim)
    after = torch.cat([ones, values.flip(dim).cumprod(dim).narrow(dim, 0, last)], dim).flip(dim)
    return before * after


def disagreement_map(spec_probs: torch.Tensor, soft: bool = True) -> torch.Tensor:
    """Per-pixel inter-head disagreement in [0, 1], [B, H, W] float32 (binary heads if S == 2).

    hard: 1 - m_I. soft: 1 - P(consistent) under independent heads, where
    P(consistent) = prod_k p_k(bg) + sum_k p_k(mine) prod_{j != k} p_j(other) and "other" is
    "remaining" for three-class heads, "not mine" for binary heads. Equals hard for one-hot inputs.
    """
    binary = spec_probs.shape[2] == 2
    _check_channels(spec_probs, binary)
    probs = spec_probs.float()
    if not soft:
        return 1.0 - ihed_consistent(argmax_along(probs, 2), binary).float()
    background = probs[:, :, BACKGROUND]
    other = background if binary else probs[:, :, REMAINING]
    one_claim = (probs[:, :, MINE] * _exclusive_product(other, dim=1)).sum(dim=1)
    consistent_mass = background.prod(dim=1) + one_claim
    return (1.0 - consistent_mass).clamp(0.0, 1.0)
