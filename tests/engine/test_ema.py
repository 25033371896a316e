"""EMA teacher: decay schedule, parameter and BN-buffer averaging, eval mode, state round trip."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from cgs_engine.train.ema import EMATeacher, ema_decay


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(),
        nn.Dropout2d(0.5),
        nn.Conv2d(4, 2, 1),
    )


def _train_a_little(student: nn.Module, steps: int = 3) -> None:
    """Change parameters and BN running statistics of the student."""
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    student.train()
    for _ in range(steps):
        loss = student(torch.randn(4, 1, 8, 8) * 3 + 1).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def test_decay_schedule():
    assert ema_decay(0) == 0.0
    assert ema_decay(1) == pytest.approx(0.5)
    assert ema_decay(10) == pytest.approx(1 - 1 / 11)
    assert ema_decay(1000) == 0.99
    assert ema_decay(1000, decay_max=0.9999) == pytest.approx(1 - 1 / 1001)
    assert EMATeacher(_small_net(), decay_max=0.9).decay(1000) == 0.9


def test_teacher_is_a_frozen_eval_copy():
    student = _small_net()
    teacher = EMATeacher(student)
    assert not teacher.module.training
    assert all(not p.requires_grad for p in teacher.module.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for (name, t), (_, s) in zip(
        teacher.module.state_dict().items(), student.state_dict().items(), strict=True
    ):
        assert torch.equal(t, s), name
        assert t.data_ptr() != s.data_ptr()


def test_update_follows_the_formula_for_parameters_and_buffers():
    student = _small_net()
    teacher = EMATeacher(student)
    _train_a_little(student)
    before_teacher, before_student = _snapshot(teacher.module), _snapshot(student)

    decay = teacher.update(student, step=10)

    assert decay == pytest.approx(1 - 1 / 11)
    after = teacher.module.state_dict()
    for name, value in after.items():
        if name.endswith("num_batches_tracked"):
            assert torch.equal(value, before_student[name])
        else:
            expected = decay * before_teacher[name] + (1 - decay) * before_student[name]
            assert torch.allclose(value, expected, atol=1e-6), name
    # The BN statistics really moved, so the check above covered averaging, not a no-op.
    assert not torch.allclose(after["1.running_mean"], before_teacher["1.running_mean"])
    assert int(after["1.num_batches_tracked"]) == 3
    # The student is untouched.
    for name, value in student.state_dict().items():
        assert torch.equal(value, before_student[name])


def test_step_zero_copies_the_student():
    student = _small_net()
    teacher = EMATeacher(student)
    _train_a_little(student)
    teacher.update(student, step=0)
    for name, value in teacher.module.state_dict().items():
        assert torch.equal(value, student.state_dict()[name]), name


def test_teacher_forward_is_deterministic_without_grad_even_if_mode_was_changed():
    teacher = EMATeacher(_small_net())
    x = torch.randn(2, 1, 8, 8)
    teacher.module.train()  # e.g. a careless caller; __call__ restores eval mode
    first, second = teacher(x), teacher(x)
    assert not teacher.module.training
    assert torch.equal(first, second)
    assert not first.requires_grad


def test_reference_mode_runs_in_train_mode_without_buffer_averaging():
    student = _small_net()
    teacher = EMATeacher(student, mode="train", average_buffers=False)
    assert teacher.module.training
    x = torch.randn(2, 1, 8, 8)
    assert not torch.equal(teacher(x), teacher(x))  # dropout is active

    buffers_before = {name: b.clone() for name, b in teacher.module.named_buffers()}
    _train_a_little(student)
    teacher.update(student, step=5)
    for name, buffer in teacher.module.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), name

    with pytest.raises(ValueError):
        EMATeacher(student, mode="inference")  # type: ignore[arg-type]


def test_state_dict_round_trip():
    student = _small_net()
    teacher = EMATeacher(student, decay_max=0.95, mode="train")
    _train_a_little(student)
    teacher.update(student, step=7)

    buffer = io.BytesIO()
    torch.save(teacher.state_dict(), buffer)
    buffer.seek(0)
    restored = EMATeacher(nn.Sequential(*_small_net()))
    restored.load_state_dict(torch.load(buffer, weights_only=True))

    assert restored.decay_max == 0.95 and restored.mode == "train" and restored.module.training
    assert restored.last_step == 7
    for name, value in teacher.module.state_dict().items():
        assert torch.equal(restored.module.state_dict()[name], value), name


def test_channels_last_student():
    student = _small_net().to(memory_format=torch.channels_last)
    teacher = EMATeacher(student)
    _train_a_little(student)
    before_teacher, before_student = _snapshot(teacher.module), _snapshot(student)
    decay = teacher.update(student, step=3)

    weight = teacher.module[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    expected = decay * before_teacher["0.weight"] + (1 - decay) * before_student["0.weight"]
    assert torch.allclose(weight, expected, atol=1e-6)
    out = teacher(torch.randn(2, 1, 8, 8).to(memory_format=torch.channels_last))
    assert out.shape == (2, 2, 8, 8)


def test_wrapped_student_and_mismatched_student():
    student = _small_net()
    teacher = EMATeacher(nn.DataParallel(student))
    assert isinstance(teacher.module, nn.Sequential)
    _train_a_little(student)
    teacher.update(nn.DataParallel(student), step=0)
    assert torch.equal(teacher.module[0].weight, student[0].weight)

    with pytest.raises(ValueError):
        teacher.update(nn.Sequential(nn.Conv2d(1, 4, 3)), step=1)
