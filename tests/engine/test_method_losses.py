import math

import pytest
import torch
import torch.nn.functional as F

from cgs_engine.method import IGNORE_INDEX, ce_dice, cross_entropy, dice_loss, specialist_ce_dice
from cgs_engine.method.losses import DICE_SMOOTH


def _dice_by_hand(pairs: list[tuple[float, float]]) -> float:
    """pairs: per class (intersection, denominator) -> 1 - mean smoothed Dice."""
    dices = [(2 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH) for inter, denom in pairs]
    return 1 - sum(dices) / len(dices)


def test_masked_and_unmasked_dice_differ_exactly_as_expected():
    # two pixels, two classes: A has target 1 and probs (0.2, 0.8); B has target 0 and probs (0.6, 0.4)
    logits = torch.tensor([[0.2, 0.6], [0.8, 0.4]]).log().view(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    mask = torch.tensor([[[True, False]]])
    # denominator = sum p^2 + sum onehot, over counted pixels
    only_a = _dice_by_hand([(0.0, 0.04), (0.8, 0.64 + 1)])
    both = _dice_by_hand([(0.6, 0.04 + 0.36 + 1), (0.8, 0.64 + 0.16 + 1)])
    assert dice_loss(logits, target, mask, absent="include").item() == pytest.approx(only_a, rel=1e-5)
    assert dice_loss(logits, target, mask, masked=False).item() == pytest.approx(both, rel=1e-5)
    assert dice_loss(logits, target).item() == pytest.approx(both, rel=1e-5)
    # class 0 has no counted target pixel under the mask: by default it leaves the Dice mean
    class_1 = 1.0 - (2 * 0.8 + 1e-5) / (0.64 + 1 + 1e-5)
    assert dice_loss(logits, target, mask).item() == pytest.approx(class_1, rel=1e-5)


def test_a_class_absent_from_the_batch_gets_no_dice_push():
    # The reference's Dice scores an absent class ~0 whatever the network does, and its gradient
    # 2 p eps / (sum p^2 + eps)^2 pushes that class down on every pixel, the harder the fainter it
    # already is: a force that never settles. Skipping absent classes removes it.
    torch.manual_seed(1)
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, 8:20, 8:20] = 1  # class 2 absent

    def push(offset: float, absent: str) -> float:
        logits = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        logits[:, 2] += offset
        logits.requires_grad_(True)
        dice_loss(logits, target, absent=absent).backward()
        return float(logits.grad[:, 2].abs().sum())

    # Once the class is faint (sum p^2 near eps) its push grows: 300x from logit -6 to -10 here
    assert push(-10.0, "include") > 100 * push(-6.0, "include")
    assert push(-10.0, "skip") < push(-6.0, "skip")  # only the present classes' share remains
    assert push(-10.0, "skip") < 0.001 * push(-10.0, "include")
    with pytest.raises(ValueError, match="absent"):
        dice_loss(torch.zeros(1, 3, 2, 2), target[:1, :2, :2], absent="never")


def test_specialist_dice_skips_absent_class_head_pairs():
    torch.manual_seed(2)
    spec_logits = torch.randn(2, 2, 3, 6, 6)  # 2 heads, 3 classes each
    targets = torch.zeros(2, 2, 6, 6, dtype=torch.long)
    targets[:, 0, 1:3, 1:3] = 1  # head 0: "mine" present, "remaining" absent
    targets[:, 1, 1:3, 1:3] = 2  # head 1: "remaining" present, "mine" absent
    probs = spec_logits.softmax(dim=2)
    dice = {}
    for head in range(2):
        for c in range(3):
            p, t = probs[:, head, c], (targets[:, head] == c).float()
            dice[head, c] = (2 * (p * t).sum() + 1e-5) / ((p * p).sum() + t.sum() + 1e-5)
    present = [dice[0, 0], dice[0, 1], dice[1, 0], dice[1, 2]]
    all_pairs = list(dice.values())
    # same cross-entropy in both; the Dice part averages over present pairs only, or over all six
    difference = specialist_ce_dice(spec_logits, targets, dice_absent="include") - specialist_ce_dice(
        spec_logits, targets
    )
    expected = torch.stack(present).mean() - torch.stack(all_pairs).mean()
    assert float(difference) == pytest.approx(float(expected), rel=1e-4)


def test_cross_entropy_kept_versus_all_normalisation():
    logits = torch.zeros(1, 2, 2, 2)  # uniform over 2 classes: ln 2 per pixel
    target = torch.tensor([[[0, 1], [1, 0]]])
    mask = torch.tensor([[[True, False], [False, False]]])
    assert cross_entropy(logits, target, mask, normalise="kept").item() == pytest.approx(math.log(2))
    assert cross_entropy(logits, target, mask, normalise="all").item() == pytest.approx(math.log(2) / 4)
    three_kept = torch.tensor([[[True, True], [True, False]]])
    assert cross_entropy(logits, target, three_kept, normalise="all").item() == pytest.approx(
        3 * math.log(2) / 4
    )
    with pytest.raises(ValueError, match="normalise"):
        cross_entropy(logits, target, normalise="mean")


def test_unmasked_losses_match_torch_and_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0, :3] = IGNORE_INDEX
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(cross_entropy(logits, target), expected)
    # ignored pixels count in the "all" denominator, not in the sum
    expected_all = expected * (target != IGNORE_INDEX).sum() / target.numel()
    torch.testing.assert_close(cross_entropy(logits, target, normalise="all"), expected_all)
    # Dice skips ignored pixels: same as dropping them by a mask on a clean target
    clean = target.clamp(max=3)
    keep = target != IGNORE_INDEX
    torch.testing.assert_close(dice_loss(logits, target), dice_loss(logits, clean, keep))


def test_all_masked_out_gives_zero_with_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    nothing = torch.zeros(2, 4, 4, dtype=torch.bool)
    loss = ce_dice(logits, target, nothing)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    spec_logits = torch.randn(2, 2, 3, 4, 4, requires_grad=True)
    spec_loss = specialist_ce_dice(spec_logits, torch.randint(0, 3, (2, 2, 4, 4)), nothing)
    assert spec_loss.item() == 0.0
    spec_loss.backward()
    assert torch.isfinite(spec_logits.grad).all()


@pytest.mark.parametrize("dice_masked", [True, False])
@pytest.mark.parametrize("normalise", ["kept", "all"])
@pytest.mark.parametrize("per_head_mask", [False, True])
def test_specialist_loss_is_mean_of_per_head_losses(dice_masked, normalise, per_head_mask):
    torch.manual_seed(1)
    batch, heads, channels = 2, 3, 3
    logits = torch.randn(batch, heads, channels, 4, 5)
    targets = torch.randint(0, channels, (batch, heads, 4, 5))
    targets[1, :, 0, 0] = IGNORE_INDEX
    mask = torch.rand(batch, *(heads,) * per_head_mask, 4, 5) > 0.4
    got = specialist_ce_dice(logits, targets, mask, dice_masked=dice_masked, normalise=normalise)
    per_head = [
        ce_dice(
            logits[:, k],
            targets[:, k],
            mask[:, k] if per_head_mask else mask,
            dice_masked=dice_masked,
            normalise=normalise,
        )
        for k in range(heads)
    ]
    torch.testing.assert_close(got, torch.stack(per_head).mean())


def test_losses_are_float32_for_bf16_logits():
    logits = torch.randn(2, 3, 4, 4).bfloat16().requires_grad_()
    target = torch.randint(0, 3, (2, 4, 4))
    mask = torch.rand(2, 4, 4) > 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ce_dice(logits, target, mask)
        spec = specialist_ce_dice(logits.unsqueeze(1), target.unsqueeze(1), mask)
    assert loss.dtype == torch.float32 and spec.dtype == torch.float32
    torch.testing.assert_close(loss, ce_dice(logits.float(), target, mask))
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_shared_softmax_gives_the_losses_and_gradients_of_separate_terms():
    """CGS scores one logits tensor against several targets with one softmax (ClassScores):
    the sum of the terms and its gradient must be those of computing each term from the logits."""
    from cgs_engine.method.losses import class_scores, specialist_scores

    torch.manual_seed(0)
    gen = torch.randn(2, 4, 6, 6, requires_grad=True)
    spec = torch.randn(2, 3, 3, 6, 6, requires_grad=True)
    targets = [torch.randint(0, 4, (2, 6, 6)) for _ in range(3)]
    targets[0][0, :2] = IGNORE_INDEX
    masks = [None, torch.rand(2, 6, 6) > 0.5, torch.zeros(2, 6, 6, dtype=torch.bool)]

    def total(shared: bool):
        g = class_scores(gen) if shared else gen
        s = specialist_scores(spec) if shared else spec
        loss = sum(ce_dice(g, t, m) for t, m in zip(targets, masks, strict=True))
        heads = [
            torch.where(t == IGNORE_INDEX, t, t.clamp(max=2)).unsqueeze(1).expand(-1, 3, -1, -1)
            for t in targets
        ]
        return loss + sum(specialist_ce_dice(s, h, m) for h, m in zip(heads, masks, strict=True))

    separate = total(False)
    separate_grads = torch.autograd.grad(separate, (gen, spec))
    shared = total(True)
    shared_grads = torch.autograd.grad(shared, (gen, spec))
    torch.testing.assert_close(shared, separate)
    for a, b in zip(shared_grads, separate_grads, strict=True):
        torch.testing.assert_close(a, b)
    # cross-entropy from the shared log-probabilities is torch's, ignore index included
    expected = F.cross_entropy(gen, targets[0], ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(cross_entropy(class_scores(gen), targets[0]), expected)
