import math

import pytest
import torch

from cgs_engine.method import (
    METHODS,
    ObjectiveConfig,
    ce_dice,
    compute_losses,
    fused_specialist_label,
    lambda_schedule,
    poly_lr,
    specialist_ce_dice,
    specialist_targets,
)
from cgs_engine.model import ModelConfig, NetOutput, build_model

NUM_CLASSES, SIZE = 4, 8
TOTALS = {"sup", "unsup", "total"}


def _model(heads: str):
    torch.manual_seed(0)
    return build_model(ModelConfig(num_classes=NUM_CLASSES, widths=(4, 8), dropouts=(0.0, 0.0), heads=heads))


def _teacher_probs(out: NetOutput) -> NetOutput:
    spec = None if out.specialists is None else out.specialists.detach().softmax(dim=2)
    return NetOutput(out.generalist.detach().softmax(dim=1), spec)


def _run(method: str, lam: float = 0.5, heads: str | None = None, **overrides):
    cfg = ObjectiveConfig(method=method, tau=0.3, **overrides)
    model = _model(heads or cfg.specialist_heads)
    torch.manual_seed(1)
    labeled, unlabeled = torch.randn(2, 1, SIZE, SIZE), torch.randn(2, 1, SIZE, SIZE)
    labels = torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE))
    student_strong = teacher = None
    if cfg.uses_unlabeled:
        student_strong = model(unlabeled * 1.1)
        with torch.no_grad():
            teacher = _teacher_probs(model(unlabeled))
    terms = compute_losses(model(labeled), labels, student_strong, teacher, lam, cfg)
    return model, cfg, terms


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_finite_terms_and_its_key_set(method):
    _, cfg, terms = _run(method)
    loss_keys = {key for key in terms if not key.startswith("frac_")}
    assert loss_keys == set(cfg.loss_terms) | TOTALS
    for name, value in terms.items():
        assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value), name
    torch.testing.assert_close(terms["total"], terms["sup"] + 0.5 * terms["unsup"])
    unsup_names = [name for name in cfg.loss_terms if not name.startswith("sup")]
    torch.testing.assert_close(terms["unsup"], sum((terms[n] for n in unsup_names), torch.tensor(0.0)))


def test_expected_term_sets_per_method():
    assert ObjectiveConfig(method="supervised").loss_terms == ("sup_gen",)
    assert ObjectiveConfig(method="fixmatch").loss_terms == ("sup_gen", "g2g")
    assert set(ObjectiveConfig(method="no-cross").loss_terms) == {"sup_gen", "sup_spec", "g2g", "s2s"}
    full = {"sup_gen", "sup_spec", "g2g", "s2g", "cons_g", "g2s", "s2s", "cons_s"}
    for method in ("cgs", "binary-heads", "no-ihed"):
        assert set(ObjectiveConfig(method=method).loss_terms) == full


@pytest.mark.parametrize("method", METHODS)
def test_zero_lambda_total_is_supervised(method):
    _, _, terms = _run(method, lam=0.0)
    assert torch.equal(terms["total"], terms["sup"])


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_specialists_only_when_used(method):
    # the network always has three-class heads except for binary-heads; unused heads get no gradient
    heads = "binary" if method == "binary-heads" else "three-class"
    model, cfg, terms = _run(method, heads=heads)
    terms["total"].backward()
    spec_grads = [p.grad for p in model.specialists.parameters()]
    assert all(p.grad is not None for p in model.generalist.parameters())
    if cfg.uses_specialists:
        assert all(g is not None and g.abs().sum() > 0 for g in spec_grads)
    else:
        assert all(g is None for g in spec_grads)


def test_cgs_terms_follow_the_specification():
    torch.manual_seed(2)
    cfg = ObjectiveConfig(method="cgs", tau=0.8)
    labels = torch.randint(0, 3, (2, 6, 6))
    labeled = NetOutput(torch.randn(2, 3, 6, 6), torch.randn(2, 2, 3, 6, 6))
    strong = NetOutput(torch.randn(2, 3, 6, 6), torch.randn(2, 2, 3, 6, 6))
    teacher = NetOutput(
        torch.randn(2, 3, 6, 6).mul(3).softmax(1), torch.randn(2, 2, 3, 6, 6).mul(3).softmax(2)
    )
    terms = compute_losses(labeled, labels, strong, teacher, 1.0, cfg)

    confidence, y_g = teacher.generalist.max(dim=1)
    m_g = confidence > 0.8
    y_s, m_i = fused_specialist_label(teacher.specialists)
    m_e = y_g == y_s
    a_k = teacher.specialists.argmax(dim=2)
    t_g = specialist_targets(y_g, 3)
    assert 0 < m_i.float().mean() < 1 and 0 < m_e.float().mean() < 1 and 0 < m_g.float().mean() < 1
    expected = {
        "sup_gen": ce_dice(labeled.generalist, labels),
        "sup_spec": specialist_ce_dice(labeled.specialists, specialist_targets(labels, 3)),
        "g2g": ce_dice(strong.generalist, y_g, m_g),
        "s2g": ce_dice(strong.generalist, y_s, m_i),
        "cons_g": ce_dice(strong.generalist, y_g, m_e),
        "g2s": specialist_ce_dice(strong.specialists, t_g, m_g),
        "s2s": specialist_ce_dice(strong.specialists, a_k, m_i),
        "cons_s": specialist_ce_dice(strong.specialists, t_g, m_e),
    }
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, msg=name)
    torch.testing.assert_close(terms["frac_ihed"], m_i.float().mean())

    no_ihed = compute_losses(
        labeled, labels, strong, teacher, 1.0, ObjectiveConfig(method="no-ihed", tau=0.8)
    )
    torch.testing.assert_close(no_ihed["s2s"], specialist_ce_dice(strong.specialists, a_k))
    torch.testing.assert_close(no_ihed["s2g"], ce_dice(strong.generalist, y_s))
    torch.testing.assert_close(no_ihed["g2g"], terms["g2g"])


def test_no_confident_pixel_gives_zero_self_training():
    torch.manual_seed(3)
    uniform = NetOutput(torch.full((1, 3, 4, 4), 1 / 3), torch.full((1, 2, 3, 4, 4), 1 / 3))
    out = NetOutput(torch.randn(1, 3, 4, 4, requires_grad=True), torch.randn(1, 2, 3, 4, 4))
    terms = compute_losses(out, torch.zeros(1, 4, 4, dtype=torch.long), out, uniform, 1.0, ObjectiveConfig())
    assert terms["g2g"].item() == 0.0 and terms["g2s"].item() == 0.0
    assert terms["frac_conf"].item() == 0.0


def test_gate_drops_unsure_consistent_pixels_and_keeps_sure_ones():
    # pixel 0: every head says background but only with 0.5 (the untrained-heads collapse case);
    # pixel 1: every head says background with 0.99; pixel 2: head 1 claims it with 0.99, head 2
    # says remaining with 0.99, the generalist agrees (class 1) with only 0.6.
    def head(*probs):  # three-class probabilities of one head for the three pixels
        return torch.tensor(probs, dtype=torch.float32).T.reshape(3, 1, 3)

    spec = torch.stack(
        [
            head((0.5, 0.3, 0.2), (0.99, 0.005, 0.005), (0.005, 0.99, 0.005)),
            head((0.5, 0.2, 0.3), (0.99, 0.005, 0.005), (0.005, 0.005, 0.99)),
        ]
    ).unsqueeze(0)  # [1, K=2, 3, 1, 3]
    gen = torch.tensor([[0.5, 0.25, 0.25], [0.99, 0.005, 0.005], [0.3, 0.6, 0.1]]).T.reshape(1, 3, 1, 3)
    teacher = NetOutput(gen, spec)
    torch.manual_seed(4)
    student = NetOutput(torch.randn(1, 3, 1, 3), torch.randn(1, 2, 3, 1, 3))
    labels = torch.zeros(1, 1, 3, dtype=torch.long)

    plain = compute_losses(student, labels, student, teacher, 1.0, ObjectiveConfig(tau=0.95))
    gated = compute_losses(student, labels, student, teacher, 1.0, ObjectiveConfig(tau=0.95, gate_tau=0.9))
    assert plain["frac_ihed"].item() == 1.0 and plain["frac_agree"].item() == 1.0
    torch.testing.assert_close(gated["frac_ihed"], torch.tensor(2 / 3))
    torch.testing.assert_close(gated["frac_agree"], torch.tensor(2 / 3))
    keep = torch.tensor([[[False, True, True]]])
    y_s = torch.tensor([[[0, 0, 1]]])
    torch.testing.assert_close(gated["s2g"], ce_dice(student.generalist, y_s, keep))
    torch.testing.assert_close(gated["cons_g"], ce_dice(student.generalist, y_s, keep))
    a_k = spec.argmax(dim=2)
    torch.testing.assert_close(gated["s2s"], specialist_ce_dice(student.specialists, a_k, keep))
    torch.testing.assert_close(gated["g2g"], plain["g2g"])  # tau's mask is untouched by the gate


def test_gate_tau_validation():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="gate_tau"):
            ObjectiveConfig(gate_tau=bad)


def test_missing_or_wrong_specialists_raise():
    out = NetOutput(torch.randn(1, 3, 4, 4), None)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="specialist"):
        compute_losses(out, labels, out, out, 1.0, ObjectiveConfig(method="cgs"))
    three_class = NetOutput(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 3, 4, 4))
    with pytest.raises(ValueError, match="binary"):
        compute_losses(three_class, labels, None, None, 1.0, ObjectiveConfig(method="binary-heads"))
    with pytest.raises(ValueError, match="student_strong"):
        compute_losses(out, labels, None, None, 1.0, ObjectiveConfig(method="fixmatch"))
    terms = compute_losses(out, labels, None, None, 1.0, ObjectiveConfig(method="supervised"))
    assert terms["unsup"].item() == 0.0


def test_losses_are_float32_under_bf16_autocast():
    model = _model("three-class").to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, SIZE, SIZE).to(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        with torch.no_grad():
            teacher = _teacher_probs(model(x))
        terms = compute_losses(out, labels, out, teacher, 0.1, ObjectiveConfig())
    assert out.generalist.dtype == torch.bfloat16
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in terms.values())
    terms["total"].backward()


def test_objective_config_validation_and_round_trip():
    cfg = ObjectiveConfig(
        method="no-cross", tau=0.9, dice_masked=False, ce_normalise="all", fused_rule="reference"
    )
    assert ObjectiveConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.specialist_heads == "three-class"
    assert ObjectiveConfig(method="binary-heads").specialist_heads == "binary"
    assert ObjectiveConfig(method="fixmatch").specialist_heads == "none"
    for bad in ({"method": "mean-teacher"}, {"ce_normalise": "mean"}, {"fused_rule": "vote"}):
        with pytest.raises(ValueError):
            ObjectiveConfig(**bad)


def test_lambda_schedule_and_poly_lr():
    assert lambda_schedule(0, 100, 0.1) == pytest.approx(0.1 * math.exp(-5))
    assert lambda_schedule(50, 100, 2.0) == pytest.approx(2.0 * math.exp(-1.25))
    assert lambda_schedule(100, 100, 0.1) == pytest.approx(0.1)
    assert lambda_schedule(500, 100, 0.1) == pytest.approx(0.1)
    assert lambda_schedule(3, 0, 0.1) == pytest.approx(0.1)
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
    assert poly_lr(0.01, 150, 100) == 0.0
