"""One optimisation step of any method: at most one teacher pass and one student pass.

Teacher: one forward over the unlabeled weak views and their CutMix partners together; its
probabilities are mixed with the same boxes as the strong images. Student: one forward over the
labeled weak views and one over the unlabeled strong views (nothing the losses do not use).
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
) -> dict[str, float]:
    """Forward, losses, backward and optimiser step; returns the loss terms as floats.

    The labeled and the strong unlabeled views go through the student one after the other, each
    followed by its own backward: the supervised loss depends only on the first pass and the
    unsupervised loss only on the second, so the summed gradients equal those of one joint pass,
    while only one pass's activations are alive at a time (half the peak memory).
    """
    optimizer.zero_grad(set_to_none=True)
    teacher_out = teacher_targets(teacher, batch, objective, runtime) if objective.uses_unlabeled else None
    # Under DDP the first backward only accumulates locally; the second one all-reduces the sum.
    local_only = student.no_sync if teacher_out is not None and hasattr(student, "no_sync") else nullcontext
    with local_only():
        with runtime.autocast():
            labeled = student(runtime.prepare(batch.labeled_images), specialists=objective.uses_specialists)
        terms = supervised_losses(labeled, batch.labels.to(runtime.device), objective)
        terms["sup"].backward()
    del labeled
    if teacher_out is not None:
        with runtime.autocast():
            strong = student(runtime.prepare(batch.strong), specialists=objective.uses_specialists)
        terms.update(unsupervised_losses(strong, teacher_out, objective))
        (lam * terms["unsup"]).backward()  # also at lam = 0: DDP reduces gradients in this backward
        del strong
    else:
        terms["unsup"] = torch.zeros(())
    terms["total"] = terms["sup"].detach() + lam * terms["unsup"].detach()
    optimizer.step()
    return {name: float(value.detach()) for name, value in terms.items()}
