import itertools

import pytest
import torch
import torch.nn.functional as F

from cgs_engine.method import (
    IGNORE_INDEX,
    disagreement_map,
    fused_specialist_label,
    ihed_consistent,
    specialist_targets,
)
from cgs_engine.method.labels import (
    argmax_along,
)


def _pixels(*head_values: tuple[int, ...]) -> torch.Tensor:
    """One pixel per argument, each giving the K heads' argmax: -> [1, K, 1, N]."""
    return torch.tensor(head_values).T.reshape(1, len(head_values[0]), 1, len(head_values))


def _probs(*pixels: list[list[float]]) -> torch.Tensor:
    """One pixel per argument, each a K x S list of head probabilities: -> [1, K, S, 1, N]."""
    return torch.tensor(pixels).permute(1, 2, 0).unsqueeze(0).unsqueeze(3)


def test_specialist_targets_three_class_binary_and_ignore():
    y = torch.tensor([[[0, 1, 2, 3, IGNORE_INDEX]]])
    expected = torch.tensor([[0, 1, 2, 2, 255], [0, 2, 1, 2, 255], [0, 2, 2, 1, 255]])
    assert torch.equal(specialist_targets(y, num_classes=4)[0, :, 0], expected)
    expected_binary = torch.tensor([[0, 1, 0, 0, 255], [0, 0, 1, 0, 255], [0, 0, 0, 1, 255]])
    assert torch.equal(specialist_targets(y, num_classes=4, binary=True)[0, :, 0], expected_binary)
    assert specialist_targets(y, num_classes=4).dtype == torch.long


IHED_CASES = {
    "all background": ((0, 0, 0), True),
    "head 1 mine, rest remaining": ((1, 2, 2), True),
    "head 2 mine, rest remaining": ((2, 1, 2), True),
    "head 3 mine, rest remaining": ((2, 2, 1), True),
    "two heads claim": ((1, 1, 2), False),
    "all heads claim": ((1, 1, 1), False),
    "nobody claims, all remaining": ((2, 2, 2), False),
    "nobody claims, one remaining": ((0, 2, 0), False),
    "claim with background": ((1, 0, 2), False),
    "claim with all background": ((1, 0, 0), False),
    "claim twice with background": ((1, 1, 0), False),
}


@pytest.mark.parametrize("case", list(IHED_CASES))
def test_ihed_every_case_of_the_rule(case):
    heads, consistent = IHED_CASES[case]
    assert ihed_consistent(_pixels(heads)).item() is consistent


@pytest.mark.parametrize("num_heads", [1, 2, 3, 4])
def test_ihed_matches_sum_formulation_exhaustively(num_heads):
    combos = list(itertools.product(range(3), repeat=num_heads))
    got = ihed_consistent(_pixels(*combos))[0, 0]
    for combo, value in zip(combos, got.tolist(), strict=True):
        expected = all(a == 0 for a in combo) or (sum(combo) == 2 * num_heads - 1)
        assert value == expected, combo


def test_ihed_single_head():
    assert ihed_consistent(_pixels((0,), (1,), (2,)))[0, 0].tolist() == [True, True, False]
    assert ihed_consistent(_pixels((0,), (1,)), binary=True)[0, 0].tolist() == [True, True]


def test_ihed_binary_heads():
    got = ihed_consistent(_pixels((0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1)), binary=True)
    assert got[0, 0].tolist() == [True, True, True, False, False]


def test_ihed_batched_shape():
    assert ihed_consistent(torch.zeros(2, 3, 4, 5, dtype=torch.long)).shape == (2, 4, 5)


# K = 2 heads, channels (background, mine, remaining)
CLAIM_1_BUT_HEAD_2_MINE_HIGHER = [[0.3, 0.4, 0.3], [0.0, 0.45, 0.55]]  # consistent, implied 1, ref 2
ALL_BACKGROUND = [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]]  # consistent, 0 for both rules
HEAD_2_CLAIMS = [[0.1, 0.2, 0.7], [0.2, 0.7, 0.1]]  # consistent, 2 for both rules
TWO_CLAIMS = [[0.1, 0.6, 0.3], [0.1, 0.8, 0.1]]  # inconsistent, ref 2
NOBODY_CLAIMS = [[0.5, 0.2, 0.3], [0.3, 0.25, 0.45]]  # inconsistent (mixed), ref 0


def test_fused_label_implied_and_reference_rules():
    probs = _probs(CLAIM_1_BUT_HEAD_2_MINE_HIGHER, ALL_BACKGROUND, HEAD_2_CLAIMS, TWO_CLAIMS, NOBODY_CLAIMS)
    implied, consistent = fused_specialist_label(probs, rule="implied")
    reference, consistent_ref = fused_specialist_label(probs, rule="reference")
    assert consistent[0, 0].tolist() == [True, True, True, False, False]
    assert torch.equal(consistent, consistent_ref)
    assert implied[0, 0].tolist() == [1, 0, 2, 2, 0]  # inconsistent pixels take the reference value
    assert reference[0, 0].tolist() == [2, 0, 2, 2, 0]
    from_logits, _ = fused_specialist_label(probs.log(), rule="reference", from_logits=True)
    assert torch.equal(from_logits, reference)


def test_fused_label_binary_heads():
    probs = _probs([[0.3, 0.7], [0.8, 0.2]], [[0.6, 0.4], [0.9, 0.1]], [[0.4, 0.6], [0.2, 0.8]])
    label, consistent = fused_specialist_label(probs, binary=True)
    assert consistent[0, 0].tolist() == [True, True, False]
    assert label[0, 0].tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="binary"):
        fused_specialist_label(_probs(ALL_BACKGROUND), binary=True)
    with pytest.raises(ValueError, match="rule"):
        fused_specialist_label(_probs(ALL_BACKGROUND), rule="vote")


def _brute_force_consistent_mass(probs: torch.Tensor, binary: bool) -> torch.Tensor:
    """Sum over every joint head configuration of its probability times [consistent]."""
    num_heads, channels = probs.shape[1], probs.shape[2]
    mass = torch.zeros(probs.shape[0], *probs.shape[3:])
    for combo in itertools.product(range(channels), repeat=num_heads):
        config = torch.tensor(combo).view(1, num_heads, 1, 1)
        if ihed_consistent(config, binary).item():
            mass += torch.stack([probs[:, k, c] for k, c in enumerate(combo)]).prod(dim=0)
    return mass


@pytest.mark.parametrize(("num_heads", "channels"), [(1, 3), (3, 3), (4, 3), (3, 2)])
def test_soft_disagreement_is_one_minus_consistent_probability(num_heads, channels):
    torch.manual_seed(0)
    probs = torch.randn(2, num_heads, channels, 3, 4).mul(2).softmax(dim=2)
    probs[0, 0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.0][:channels])  # exact zeros must not break it
    soft = disagreement_map(probs, soft=True)
    assert soft.shape == (2, 3, 4) and soft.dtype == torch.float32
    assert soft.min() >= 0 and soft.max() <= 1
    expected = 1 - _brute_force_consistent_mass(probs, binary=channels == 2)
    torch.testing.assert_close(soft, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [3, 2])
def test_soft_disagreement_equals_hard_for_one_hot_heads(channels):
    combos = list(itertools.product(range(channels), repeat=3))
    argmax = _pixels(*combos)
    one_hot = F.one_hot(argmax, channels).permute(0, 1, 4, 2, 3).float()
    hard = disagreement_map(one_hot, soft=False)
    assert torch.equal(hard, 1.0 - ihed_consistent(argmax, binary=channels == 2).float())
    assert torch.equal(disagreement_map(one_hot, soft=True), hard)
    assert hard.sum() > 0 and hard.min() == 0


@pytest.mark.parametrize("shape, dim", [((2, 4, 5, 6), 1), ((2, 3, 3, 5, 6), 2), ((7, 3), 0)])
def test_argmax_along_matches_argmax_including_ties(shape, dim):
    # few distinct values: many ties, which must resolve to the first maximum like argmax
    values = torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(0)).float()
    assert torch.equal(argmax_along(values, dim), values.argmax(dim=dim))
    assert torch.equal(argmax_along(values.to(torch.uint8), dim), values.argmax(dim=dim))
