"""One optimisation step of any method: at most one teacher pass and one student pass.

Teacher: one forward over the unlabeled weak views and their CutMix partners together; its
probabilities are mixed with the same boxes as the strong images. Student: one forward over the
labeled weak views and the unlabeled strong views together (nothing the losses do not use).
"""

from __future__ import annotations

import torch

from cgs_engine.method.objective import ObjectiveConfig, compute_losses
from cgs_engine.model import NetOutput
from cgs_engine.runtime import Runtime
from cgs_engine.train.cutmix import apply_cutmix
from cgs_engine.train.data import Batch


def _split(output: NetOutput, first: int) -> tuple[NetOutput, NetOutput]:
    spec = output.specialists
    return (
        NetOutput(output.generalist[:first], None if spec is None else spec[:first]),
        NetOutput(output.generalist[first:], None if spec is None else spec[first:]),
    )


@torch.no_grad()
def teacher_targets(
    teacher: torch.nn.Module, batch: Batch, objective: ObjectiveConfig, runtime: Runtime
) -> NetOutput:
    """Teacher probabilities on the weak views, CutMix-mixed exactly like the strong views."""
    count = batch.unlabeled_weak.shape[0]
    inputs = runtime.prepare(torch.cat([batch.unlabeled_weak, batch.partner_weak]))
    with runtime.autocast():
        output = teacher(inputs, specialists=objective.uses_specialists)
    boxes = batch.boxes.to(runtime.device)
    generalist = torch.softmax(output.generalist.float(), dim=1)
    mixed_gen = apply_cutmix(generalist[:count], generalist[count:], boxes)
    mixed_spec = None
    if output.specialists is not None:
        specialists = torch.softmax(output.specialists.float(), dim=2)
        mixed_spec = apply_cutmix(specialists[:count], specialists[count:], boxes)
    return NetOutput(mixed_gen, mixed_spec)


def train_step(
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    objective: ObjectiveConfig,
    lam: float,
    runtime: Runtime,
) -> dict[str, float]:
    """Forward, losses, backward and optimiser step; returns the loss terms as floats."""
    labeled = runtime.prepare(batch.labeled_images)
    labels = batch.labels.to(runtime.device)
    teacher_out, strong = None, None
    if objective.uses_unlabeled:
        teacher_out = teacher_targets(teacher, batch, objective, runtime)
        strong = runtime.prepare(batch.strong)
    inputs = labeled if strong is None else torch.cat([labeled, strong])
    with runtime.autocast():
        output = student(inputs, specialists=objective.uses_specialists)
    student_labeled, student_strong = _split(output, labeled.shape[0])
    terms = compute_losses(
        student_labeled, labels, student_strong if strong is not None else None, teacher_out, lam, objective
    )
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return {name: float(value.detach()) for name, value in terms.items()}
