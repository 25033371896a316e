"""The student pass: joint (the reference's BatchNorm semantics) or split (less memory)."""

from __future__ import annotations

import copy

import torch

from cgs_engine.method.objective import ObjectiveConfig, supervised_losses, unsupervised_losses
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.runtime import resolve_runtime
from cgs_engine.train.config import TrainConfig
from cgs_engine.train.data import Batch
from cgs_engine.train.step import teacher_targets, train_step


def _setup():
    torch.manual_seed(0)
    student = build_model(ModelConfig(num_classes=3, widths=(4, 8), dropouts=(0.0, 0.0)))
    teacher = copy.deepcopy(student).eval()
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        labeled_images=torch.rand((2, 1, 16, 16), generator=g),
        labels=torch.randint(0, 3, (2, 16, 16), generator=g),
        unlabeled_weak=torch.rand((2, 1, 16, 16), generator=g),
        partner_weak=torch.rand((2, 1, 16, 16), generator=g),
        strong=torch.rand((2, 1, 16, 16), generator=g) * 3 + 1,  # other statistics than the labeled
        boxes=torch.zeros((2, 16, 16), dtype=torch.bool),
    )
    batch.boxes[0, 2:8, 2:8] = True
    batch.boxes[1, 4:12, :] = True
    return student, teacher, batch


def _gradients_after(split: bool) -> list[torch.Tensor]:
    student, teacher, batch = _setup()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)  # keep weights; read the gradients
    runtime = resolve_runtime("cpu", "fp32")
    train_step(student, teacher, optimizer, batch, ObjectiveConfig(), 0.5, runtime, split)
    return [p.grad.clone() for p in student.parameters()]


def test_joint_pass_gradients_equal_one_forward_over_both_parts():
    student, teacher, batch = _setup()
    objective, runtime = ObjectiveConfig(), resolve_runtime("cpu", "fp32")
    targets = teacher_targets(teacher, batch, objective, runtime)
    output = student(torch.cat([batch.labeled_images, batch.strong]))
    labeled = type(output)(output.generalist[:2], output.specialists[:2])
    strong = type(output)(output.generalist[2:], output.specialists[2:])
    loss = supervised_losses(labeled, batch.labels, objective)["sup"]
    loss = loss + 0.5 * unsupervised_losses(strong, targets, objective)["unsup"]
    expected = torch.autograd.grad(loss, list(student.parameters()))
    for got, want in zip(_gradients_after(split=False), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_split_pass_differs_through_batchnorm_statistics():
    joint, split = _gradients_after(split=False), _gradients_after(split=True)
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(joint, split, strict=True))


def test_student_pass_setting_is_checked():
    assert TrainConfig().student_pass == "joint"
    TrainConfig(student_pass="split")
    try:
        TrainConfig(student_pass="both")
    except Exception as error:
        assert "student_pass" in str(error)
    else:
        raise AssertionError("an unknown student_pass was accepted")


def test_a_step_without_its_unlabeled_terms_is_a_supervised_step_and_skips_the_teacher():
    student, _, batch = _setup()

    class NoTeacher(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the teacher ran on a supervised-only step")

    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    runtime, objective = resolve_runtime("cpu", "fp32"), ObjectiveConfig()
    terms = train_step(student, NoTeacher(), optimizer, batch, objective, 0.5, runtime, unlabeled=False)
    assert terms["unsup"] == 0.0 and terms["total"] == terms["sup"]
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    expected = torch.autograd.grad(
        supervised_losses(student(batch.labeled_images), batch.labels, objective)["sup"],
        list(student.parameters()),
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
