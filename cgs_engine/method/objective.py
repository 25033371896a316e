"""The CGS training objective and its ablations, plus the lambda and learning-rate schedules.

``compute_losses`` takes network outputs and returns named loss terms; it runs no network itself.

Unsupervised terms (strong view of the unlabeled batch; teacher on the weak view, CutMix-mixed by
the caller; the teacher's ``NetOutput`` holds PROBABILITIES, softmax over the class axis):
  y_G, m_G = argmax / [max prob > tau] of the teacher generalist
  a_k      = argmax of teacher specialist k;  m_I = IHED mask;  y_S = fused specialist label
  m_E      = [y_G == y_S];  y_E = y_G (only used where m_E)
  gate_tau > 0 (an option, not in the reference) also asks the teacher to be sure:
  m_I &= [weakest head's max prob > gate_tau];  m_E &= [max(generalist, weakest head) > gate_tau]
  generalist:  g2g (y_G, m_G)        s2g (y_S, m_I)          cons_g (y_E, m_E)
  specialists: g2s (T_k(y_G), m_G)   s2s (a_k, m_I)          cons_s (T_k(y_E), m_E)   (mean over k)
Each term is CE + Dice. ``unsup`` is the plain SUM of the terms the method uses, ``sup`` the sum of
``sup_gen`` and ``sup_spec`` (specialists averaged over k), ``total = sup + lam * unsup``.

Methods:
  cgs           everything above, three-class specialists
  binary-heads  the same with binary one-vs-rest heads, binary T_k and binary IHED
  no-cross      only the self-training terms g2g and s2s (no s2g, g2s, cons_g, cons_s);
                specialists are still trained supervised and still use the IHED mask
  no-ihed       as cgs with m_I = 1 everywhere (s2s and s2g on all pixels)
  fixmatch      sup_gen + g2g: generalist only (mean-teacher / FixMatch baseline)
  supervised    sup_gen only; the unlabeled arguments may be None
Specialist outputs given to a method that does not use them are ignored (they receive no gradient).

Besides loss terms the dict holds detached diagnostics ``frac_conf``, ``frac_ihed``, ``frac_agree``
(fractions of unlabeled pixels in m_G, m_I before the no-ihed override, and m_E), where defined.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import torch

from ..model.network import NetOutput
from .ihed import FUSED_RULES, fused_specialist_label
from .labels import argmax_along, specialist_targets
from .losses import (
    CE_NORMALISATIONS,
    DICE_ABSENT,
    ce_dice,
    class_scores,
    specialist_ce_dice,
    specialist_scores,
)

METHODS = ("cgs", "supervised", "fixmatch", "binary-heads", "no-cross", "no-ihed")
LOSS_TERMS = ("sup_gen", "sup_spec", "g2g", "s2g", "cons_g", "g2s", "s2s", "cons_s")
DIAGNOSTICS = ("frac_conf", "frac_ihed", "frac_agree")


@dataclass
class ObjectiveConfig:
    method: str = "cgs"
    tau: float = 0.95
    dice_masked: bool = True
    ce_normalise: str = "kept"
    fused_rule: str = "implied"
    gate_tau: float = 0.0
    dice_absent: str = (
        "skip"  # classes absent from the batch: left out of the Dice mean ("include": reference)
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.gate_tau < 1.0:
            raise ValueError(f"gate_tau must be in [0, 1), got {self.gate_tau!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.ce_normalise not in CE_NORMALISATIONS:
            raise ValueError(f"ce_normalise must be one of {CE_NORMALISATIONS}, got {self.ce_normalise!r}")
        if self.dice_absent not in DICE_ABSENT:
            raise ValueError(f"dice_absent must be one of {DICE_ABSENT}, got {self.dice_absent!r}")
        if self.fused_rule not in FUSED_RULES:
            raise ValueError(f"fused_rule must be one of {FUSED_RULES}, got {self.fused_rule!r}")

    @property
    def specialist_heads(self) -> str:
        """The ``ModelConfig.heads`` this method needs."""
        if self.method in ("supervised", "fixmatch"):
            return "none"
        return "binary" if self.method == "binary-heads" else "three-class"

    @property
    def uses_specialists(self) -> bool:
        return self.specialist_heads != "none"

    @property
    def uses_unlabeled(self) -> bool:
        return self.method != "supervised"

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """The loss terms ``compute_losses`` returns for this method (besides sup, unsup, total)."""
        if self.method == "supervised":
            return ("sup_gen",)
        if self.method == "fixmatch":
            return ("sup_gen", "g2g")
        if self.method == "no-cross":
            return ("sup_gen", "sup_spec", "g2g", "s2s")
        return LOSS_TERMS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectiveConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown ObjectiveConfig keys: {sorted(unknown)}")
        return cls(**data)


def _specialists_of(output: NetOutput | None, cfg: ObjectiveConfig, name: str) -> torch.Tensor:
    if output is None or output.specialists is None:
        raise ValueError(f"method {cfg.method!r} needs specialist outputs in {name}")
    expected = 2 if cfg.specialist_heads == "binary" else 3
    if output.specialists.shape[2] != expected:
        raise ValueError(
            f"method {cfg.method!r} needs {cfg.specialist_heads} heads ({expected} channels); "
            f"{name}.specialists has shape {tuple(output.specialists.shape)}"
        )
    return output.specialists


def _unsupervised_terms(
    student: NetOutput, teacher: NetOutput, cfg: ObjectiveConfig
) -> dict[str, torch.Tensor]:
    loss = partial(
        ce_dice, dice_masked=cfg.dice_masked, normalise=cfg.ce_normalise, dice_absent=cfg.dice_absent
    )
    spec_loss = partial(
        specialist_ce_dice,
        dice_masked=cfg.dice_masked,
        normalise=cfg.ce_normalise,
        dice_absent=cfg.dice_absent,
    )
    teacher_gen = teacher.generalist.detach().float()
    num_classes = teacher_gen.shape[1]
    confidence, y_g = teacher_gen.max(dim=1)
    m_g = confidence > cfg.tau
    gen = class_scores(student.generalist)  # one softmax shared by g2g, s2g and cons_g
    terms = {"g2g": loss(gen, y_g, m_g), "frac_conf": m_g.float().mean()}
    if not cfg.uses_specialists:
        return terms

    binary = cfg.specialist_heads == "binary"
    spec = specialist_scores(_specialists_of(student, cfg, "student_strong"))  # shared by s2s, g2s, cons_s
    teacher_spec = _specialists_of(teacher, cfg, "teacher_weak_mixed").detach().float()
    a_k = argmax_along(teacher_spec, 2)
    y_s, m_i = fused_specialist_label(teacher_spec, cfg.fused_rule, binary)
    if cfg.gate_tau > 0:
        # Untrained heads all answer "background" with low confidence; IHED calls that consistent,
        # and without a gate every pixel is then trained towards background (seen on SegTHOR).
        spec_conf = teacher_spec.amax(dim=2).amin(dim=1)
        m_i = m_i & (spec_conf > cfg.gate_tau)
    terms["frac_ihed"] = m_i.float().mean()
    if cfg.method == "no-ihed":
        m_i = torch.ones_like(m_i)
    terms["s2s"] = spec_loss(spec, a_k, m_i)
    if cfg.method == "no-cross":
        return terms

    m_e = y_g == y_s
    if cfg.gate_tau > 0:
        m_e = m_e & (torch.maximum(confidence, spec_conf) > cfg.gate_tau)
    targets_from_gen = specialist_targets(y_g, num_classes, binary)  # T_k(y_G) == T_k(y_E) on m_E
    terms["frac_agree"] = m_e.float().mean()
    terms["s2g"] = loss(gen, y_s, m_i)
    terms["cons_g"] = loss(gen, y_g, m_e)
    terms["g2s"] = spec_loss(spec, targets_from_gen, m_g)
    terms["cons_s"] = spec_loss(spec, targets_from_gen, m_e)
    return terms


def supervised_losses(
    student_labeled: NetOutput, labels: torch.Tensor, cfg: ObjectiveConfig
) -> dict[str, torch.Tensor]:
    """``sup_gen``, ``sup_spec`` (when the method has specialists) and their sum ``sup``."""
    loss = partial(
        ce_dice, dice_masked=cfg.dice_masked, normalise=cfg.ce_normalise, dice_absent=cfg.dice_absent
    )
    num_classes = student_labeled.generalist.shape[1]
    terms = {"sup_gen": loss(student_labeled.generalist, labels)}
    if cfg.uses_specialists:
        spec = _specialists_of(student_labeled, cfg, "student_labeled")
        spec_targets = specialist_targets(labels, num_classes, binary=cfg.specialist_heads == "binary")
        terms["sup_spec"] = specialist_ce_dice(
            spec,
            spec_targets,
            dice_masked=cfg.dice_masked,
            normalise=cfg.ce_normalise,
            dice_absent=cfg.dice_absent,
        )
    terms["sup"] = terms["sup_gen"] + terms["sup_spec"] if "sup_spec" in terms else terms["sup_gen"]
    return terms


def unsupervised_losses(
    student_strong: NetOutput, teacher_weak_mixed: NetOutput, cfg: ObjectiveConfig
) -> dict[str, torch.Tensor]:
    """The method's unsupervised terms, the diagnostics, and their sum ``unsup``."""
    terms = _unsupervised_terms(student_strong, teacher_weak_mixed, cfg)
    unsup_names = [name for name in cfg.loss_terms if not name.startswith("sup")]
    reference = student_strong.generalist
    terms["unsup"] = sum(terms[name] for name in unsup_names) if unsup_names else reference.new_zeros(())
    return terms


def compute_losses(
    student_labeled: NetOutput,
    labels: torch.Tensor,
    student_strong: NetOutput | None,
    teacher_weak_mixed: NetOutput | None,
    lam: float,
    cfg: ObjectiveConfig,
) -> dict[str, torch.Tensor]:
    """Named loss terms (see the module docstring), ``sup``, ``unsup`` and ``total``; all float32.

    ``student_labeled``: student logits on the labeled batch, ``labels`` [B_L, H, W] (values 0..K or
    IGNORE_INDEX). ``student_strong``: student logits on the strong unlabeled views.
    ``teacher_weak_mixed``: teacher PROBABILITIES on the weak views, CutMix-mixed like the strong views.
    """
    terms = supervised_losses(student_labeled, labels, cfg)
    sup = terms["sup"]
    if cfg.uses_unlabeled:
        if student_strong is None or teacher_weak_mixed is None:
            raise ValueError(f"method {cfg.method!r} needs student_strong and teacher_weak_mixed")
        terms.update(unsupervised_losses(student_strong, teacher_weak_mixed, cfg))
    else:
        terms["unsup"] = sup.new_zeros(())
    terms["total"] = sup + lam * terms["unsup"]
    return terms


def lambda_schedule(step: int, total_ramp: int, lam_max: float) -> float:
    """Sigmoid-shaped ramp-up: lam_max * exp(-5 (1 - t)^2), t = clip(step / total_ramp, 0, 1)."""
    t = 1.0 if total_ramp <= 0 else min(max(step / total_ramp, 0.0), 1.0)
    return lam_max * math.exp(-5.0 * (1.0 - t) ** 2)


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """Polynomial decay base * (1 - step / total)^power, 0 from ``total`` on."""
    progress = min(max(step / total, 0.0), 1.0) if total > 0 else 1.0
    return base * (1.0 - progress) ** power
