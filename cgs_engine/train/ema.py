"""Exponential-moving-average teacher (mean teacher) of the student network.

After every optimiser step ``update(student, step)`` moves the teacher towards the student with
``decay = min(1 - 1 / (step + 1), decay_max)``: at step 0 the teacher becomes a copy of the
student, early steps average over all steps so far, later ones use ``decay_max`` (0.99).
With ``warmup=False`` (for fine-tuning a trained model) the decay is ``decay_max`` from the first
step: the teacher starts as the initial model and follows the student slowly.

Floating buffers (BatchNorm running mean/var) are averaged like parameters and integer buffers
(``num_batches_tracked``) are copied. The teacher runs in eval mode, so pseudo-labels are made
without dropout and with the averaged running statistics. Reference defect 5 did both wrong: the
teacher ran in train mode and its buffers were not averaged; ``mode="train"`` together with
``average_buffers=False`` reproduces that for ablations.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import Tensor, nn

TeacherMode = Literal["eval", "train"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind torch.compile and (Distributed)DataParallel wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def ema_decay(step: int, decay_max: float = 0.99, warmup: bool = True) -> float:
    """EMA decay at optimiser step ``step`` (0-based); without ``warmup``, ``decay_max`` throughout."""
    return min(1.0 - 1.0 / (step + 1), decay_max) if warmup else decay_max


class EMATeacher:
    """Holds ``module``, an EMA copy of the student that never receives gradients."""

    def __init__(
        self,
        student: nn.Module,
        decay_max: float = 0.99,
        mode: TeacherMode = "eval",
        average_buffers: bool = True,
        warmup: bool = True,
    ) -> None:
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        self.decay_max = decay_max
        self.mode: TeacherMode = mode
        self.average_buffers = average_buffers
        self.warmup = warmup
        self.last_step: int | None = None
        self.module = copy.deepcopy(_unwrap(student))
        self.module.requires_grad_(False)
        self._apply_mode()

    def _apply_mode(self) -> None:
        self.module.train(self.mode == "train")

    def decay(self, step: int) -> float:
        return ema_decay(step, self.decay_max, self.warmup)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Move the teacher towards ``student``; returns the decay used."""
        decay = self.decay(step)
        student = _unwrap(student)

        teacher_params, student_params = _paired(
            dict(self.module.named_parameters()), dict(student.named_parameters()), "parameter"
        )
        _lerp(teacher_params, student_params, 1.0 - decay)

        teacher_buffers, student_buffers = _paired(
            dict(self.module.named_buffers()), dict(student.named_buffers()), "buffer"
        )
        floating = [i for i, buffer in enumerate(teacher_buffers) if buffer.is_floating_point()]
        others = [i for i, buffer in enumerate(teacher_buffers) if not buffer.is_floating_point()]
        if self.average_buffers:
            _lerp([teacher_buffers[i] for i in floating], [student_buffers[i] for i in floating], 1.0 - decay)
            for i in others:
                teacher_buffers[i].copy_(student_buffers[i])

        self.last_step = step
        return decay

    @torch.no_grad()
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Forward through the teacher without autograd, in the configured mode."""
        if self.module.training != (self.mode == "train"):
            self._apply_mode()
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "decay_max": self.decay_max,
            "mode": self.mode,
            "average_buffers": self.average_buffers,
            "warmup": self.warmup,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.decay_max = float(state.get("decay_max", self.decay_max))
        self.mode = state.get("mode", self.mode)
        self.average_buffers = bool(state.get("average_buffers", self.average_buffers))
        self.warmup = bool(state.get("warmup", self.warmup))
        self.last_step = state.get("last_step")
        self._apply_mode()


def _paired(
    teacher: dict[str, Tensor], student: dict[str, Tensor], what: str
) -> tuple[list[Tensor], list[Tensor]]:
    if teacher.keys() != student.keys():
        missing = sorted(set(teacher) ^ set(student))
        raise ValueError(f"teacher and student {what}s differ: {missing[:5]}")
    names = list(teacher)
    return [teacher[name] for name in names], [student[name].detach() for name in names]


def _lerp(targets: list[Tensor], sources: list[Tensor], weight: float) -> None:
    """targets += weight * (sources - targets), in place, one fused call per device/dtype."""
    if not targets:
        return
    if weight == 1.0:
        torch._foreach_copy_(targets, sources)
        return
    matching = [
        source if source.dtype == target.dtype and source.device == target.device else source.to(target)
        for target, source in zip(targets, sources, strict=True)
    ]
    torch._foreach_lerp_(targets, matching, weight)
