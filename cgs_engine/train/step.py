"""One optimisation step of any method: at most one teacher pass and one student pass.

Teacher: one forward over the unlabeled weak views and their CutMix partners together; its
probabilities are mixed with the same boxes as the strong images. Student: one forward over the
labeled weak views and the unlabeled strong views together (nothing the losses do not use), or,
with ``split=True``, one pass for each (less memory, but per-part BatchNorm statistics).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from cgs_engine.method.objective import ObjectiveConfig, supervised_losses, unsupervised_losses
from cgs_engine.model import NetOutput
from cgs_engine.runtime import Runtime
from cgs_engine.train.cutmix import apply_cutmix
from cgs_engine.train.data import Batch


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
    split: bool = False,
    unlabeled: bool = True,
) -> dict[str, float]:
    """Forward, losses, backward and optimiser step; returns the loss terms as floats.

    ``unlabeled=False`` makes a step of a semi-supervised method supervised only (no teacher pass,
    no strong views): its unlabeled terms count as 0 (``TrainConfig.unlabeled_start``).
    """
    optimizer.zero_grad(set_to_none=True)
    uses_unlabeled = objective.uses_unlabeled and unlabeled
    teacher_out = teacher_targets(teacher, batch, objective, runtime) if uses_unlabeled else None
    labels = batch.labels.to(runtime.device)
    if teacher_out is None:
        with runtime.autocast():
            labeled = student(runtime.prepare(batch.labeled_images), specialists=objective.uses_specialists)
        terms = supervised_losses(labeled, labels, objective)
        terms["sup"].backward()
        terms["unsup"] = torch.zeros(())
    elif split:
        terms = _split_passes(student, batch, labels, teacher_out, objective, lam, runtime)
    else:
        count = batch.labeled_images.shape[0]
        inputs = runtime.prepare(torch.cat([batch.labeled_images, batch.strong]))
        with runtime.autocast():
            output = student(inputs, specialists=objective.uses_specialists)
        terms = supervised_losses(_rows(output, slice(0, count)), labels, objective)
        terms.update(unsupervised_losses(_rows(output, slice(count, None)), teacher_out, objective))
        (terms["sup"] + lam * terms["unsup"]).backward()
    terms["total"] = terms["sup"].detach() + lam * terms["unsup"].detach()
    optimizer.step()
    return {name: float(value.detach()) for name, value in terms.items()}


def _rows(output: NetOutput, rows: slice) -> NetOutput:
    return NetOutput(
        output.generalist[rows], None if output.specialists is None else output.specialists[rows]
    )


def _split_passes(student, batch, labels, teacher_out, objective, lam, runtime) -> dict:
    """Labeled and strong views one after the other, each with its own backward.

    The supervised loss depends only on the first pass and the unsupervised one only on the
    second, so only one pass's activations are alive at a time. The gradients are not those of
    the joint pass: BatchNorm's batch statistics are computed per part.
    """
    # Under DDP the first backward only accumulates locally; the second one all-reduces the sum.
    local_only = student.no_sync if hasattr(student, "no_sync") else nullcontext
    with local_only():
        with runtime.autocast():
            labeled = student(runtime.prepare(batch.labeled_images), specialists=objective.uses_specialists)
        terms = supervised_losses(labeled, labels, objective)
        terms["sup"].backward()
    del labeled
    with runtime.autocast():
        strong = student(runtime.prepare(batch.strong), specialists=objective.uses_specialists)
    terms.update(unsupervised_losses(strong, teacher_out, objective))
    (lam * terms["unsup"]).backward()  # also at lam = 0: DDP reduces gradients in this backward
    return terms
