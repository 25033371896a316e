"""Left/right class pairs and mirror images: a mirrored sample must never keep a pair's labels."""

import pytest
import torch

from cgs_engine.classes import LateralityError, lateral_pairs, mirror_permutation, mirror_plan, resolve_pairs
from cgs_engine.train.augment import (
    ROT90_FLIP,
    apply_weak_geometry,
    mirrored_samples,
    weak_augment,
    weak_augment_params,
)
from cgs_engine.train.config import ConfigError, TrainConfig
from cgs_engine.train.data import BatchSource, SliceBank

OPENKBP = ["background", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx"]


def test_pairs_found_from_the_usual_ways_of_naming_sides():
    assert lateral_pairs(OPENKBP) == [(3, 4)]
    assert lateral_pairs(["bg", "Parotid_L", "Parotid_R", "Kidney_R", "Kidney_L"]) == [(2, 1), (3, 4)]
    assert lateral_pairs(["bg", "left kidney", "right kidney", "lung_left", "Lung_Right"]) == [(2, 1), (4, 3)]
    assert lateral_pairs(["bg", "L_Femur", "R_Femur"]) == [(2, 1)]


def test_names_that_only_look_like_sides_pair_nothing():
    # RV / LV (ventricles) are not mirror images of each other; "Liver" and "Lr" carry no side word
    assert lateral_pairs(["bg", "RV", "Myo", "LV"]) == []
    assert lateral_pairs(["bg", "Liver", "Rectum", "Larynx"]) == []
    assert lateral_pairs(["bg", "LeftParotid"]) == []  # no partner
    assert lateral_pairs(["bg", "Left Parotid", "left parotid", "Right Parotid"]) == []  # ambiguous
    assert lateral_pairs(["LeftX", "RightX"]) == []  # id 0 is background, never paired


def test_explicit_pairs_are_checked_against_the_classes():
    assert resolve_pairs(OPENKBP, [["RightParotid", "LeftParotid"]]) == [(3, 4)]
    assert resolve_pairs(OPENKBP, []) == []
    with pytest.raises(LateralityError, match="not a foreground class"):
        resolve_pairs(OPENKBP, [["RightParotid", "Nope"]])
    with pytest.raises(LateralityError, match="one pair only"):
        resolve_pairs(OPENKBP, [["RightParotid", "LeftParotid"], ["LeftParotid", "Larynx"]])
    with pytest.raises(ConfigError, match="lateral_pairs"):
        TrainConfig(lateral_pairs="both")
    with pytest.raises(ConfigError, match="mirror"):
        TrainConfig(mirror="sometimes")


def test_mirror_permutation_swaps_only_the_pairs():
    assert mirror_permutation(5, [(3, 4)]) == [0, 1, 2, 4, 3]


def _sided_slices(batch: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The patient's right organ (id 3) on the image's left, the left one (id 4) on its right."""
    labels = torch.zeros((batch, size, size), dtype=torch.long)
    labels[:, 4:10, 2:5] = 3
    labels[:, 4:10, 11:14] = 4
    labels[:, 12:15, 6:10] = 1  # an unpaired organ towards the back (asymmetric top/bottom)
    images = labels.float()[:, None]
    return images, labels


def test_mirrored_samples_swap_the_pair_and_nothing_else():
    images, labels = _sided_slices(64)
    table = torch.arange(256)
    table[3], table[4] = 4, 3
    generator = torch.Generator().manual_seed(7)
    params = weak_augment_params(64, 16, 16, torch.Generator().manual_seed(7))
    out_images, out_labels = weak_augment(images, labels, generator, label_table=table)
    geometric = apply_weak_geometry(labels, params)
    mirrored = mirrored_samples(params)
    assert mirrored.any() and (~mirrored).any()
    assert torch.equal(out_images, apply_weak_geometry(images, params))
    assert torch.equal(out_labels[~mirrored], geometric[~mirrored])
    assert torch.equal(out_labels[mirrored], table[geometric[mirrored]])


def test_with_swapping_the_pair_is_told_apart_by_position_in_every_view():
    # The image shows both organs alike (it cannot say which is which) and the unpaired organ 1 marks
    # "down". Turn each weak view (no free rotation) back until organ 1 is at the bottom: with
    # swapping, id 3 is then on the image's left in every view, mirrored or not, as at inference.
    _, labels = _sided_slices(128)
    images = ((labels > 0).float() + (labels == 1).float())[:, None]
    table = torch.arange(256)
    table[3], table[4] = 4, 3
    out_images, out_labels = weak_augment(
        images, labels, torch.Generator().manual_seed(3), max_angle_degrees=0.0, label_table=table
    )
    reference = images[0, 0]
    checked = 0
    for image, label in zip(out_images[:, 0], out_labels, strict=True):
        turns = [
            t for t in range(4) if image.rot90(t).equal(reference) or image.rot90(t).flip(-1).equal(reference)
        ]
        assert len(turns) == 1
        upright = label.rot90(turns[0])
        left = torch.nonzero(upright == 3, as_tuple=True)[1].float().mean()
        right = torch.nonzero(upright == 4, as_tuple=True)[1].float().mean()
        assert left < right
        checked += 1
    assert checked == 128


def test_no_mirror_draws_turns_only():
    params = weak_augment_params(128, 16, 16, torch.Generator().manual_seed(1), mirror=False)
    assert not mirrored_samples(params).any()
    assert (params.branch == ROT90_FLIP).any()
    images, labels = _sided_slices(128)
    out = apply_weak_geometry(labels, params)
    for sample, branch, k in zip(out, params.branch, params.rot90_k, strict=True):
        if branch == ROT90_FLIP:  # exactly a rotation of the original: the pair stays on its side
            assert torch.equal(sample, labels[0].rot90(int(k), (-2, -1)))


def test_training_config_decides_per_class_table():
    assert TrainConfig().mirror_policy(["bg", "RV", "Myo", "LV"]) == (True, None)
    assert TrainConfig().mirror_policy(OPENKBP) == (True, [0, 1, 2, 4, 3, 5, 6])
    assert TrainConfig(mirror="off").mirror_policy(OPENKBP) == (False, None)
    assert TrainConfig(mirror="keep").mirror_policy(OPENKBP) == (True, None)
    # explicit pairs come on top of those the names give: an empty list pairs what the names pair
    assert TrainConfig(lateral_pairs=[]).mirror_policy(OPENKBP) == (True, [0, 1, 2, 4, 3, 5, 6])


def test_batch_source_swaps_pairs_on_mirrored_labeled_samples():
    images, labels = _sided_slices(8)
    bank = SliceBank(images.half(), labels.to(torch.uint8), ["v"])
    swapping = BatchSource(bank, None, 8, 0, seed=0, mirror_table=[0, 1, 2, 4, 3])
    keeping = BatchSource(bank, None, 8, 0, seed=0)
    differs = 0
    for step in range(6):
        a, b = swapping.batch(step), keeping.batch(step)
        assert torch.equal(a.labeled_images, b.labeled_images)
        table = torch.tensor([0, 1, 2, 4, 3])
        same = (a.labels == b.labels).flatten(1).all(1)
        swapped = (a.labels == table[b.labels]).flatten(1).all(1)
        assert bool((same | swapped).all())
        differs += int((~same).sum())
    assert differs > 0


def test_clinical_ways_of_naming_sides_pair():
    # a run of capitals is one word: cardiac abbreviations name no side, so neither does "LParotid"
    assert lateral_pairs(["bg", "LVendo", "RVendo", "LAD", "LCx", "RCA", "LParotid", "RParotid"]) == []
    assert mirror_plan(["bg", "LVendo", "LVepi", "LA", "LCx"], "auto", "swap").mirror
    other_languages = [
        "bg",
        "Parotide gauche",
        "Parotide droite",
        "左肾",
        "右肾",
        "Почка левая",
        "Почка правая",
    ]
    assert lateral_pairs(other_languages) == [(2, 1), (4, 3), (6, 5)]
    # й decomposes (и + breve): the side words are compared as the names are
    assert lateral_pairs(["bg", "Почка левый", "Почка правый"]) == [(2, 1)]
    german_latin = ["bg", "Niere links", "Niere rechts", "Parotis sin", "Parotis dx"]
    assert lateral_pairs(german_latin) == [(2, 1), (4, 3)]
    assert lateral_pairs(["bg", "Kidney (L)", "Kidney (R)"]) == [(2, 1)]
    # a margin suffix keeps the side at the end, and a PRV pairs with its own side's PRV only
    names = ["bg", "Parotid_L_PRV05", "Parotid_R_PRV05", "Parotid_L", "Parotid_R"]
    assert lateral_pairs(names) == [(2, 1), (4, 3)]
    # capitals inside an acronym are no side ("CTVHigh"), nor L/R inside words or with a digit
    assert lateral_pairs(["bg", "CTVHigh", "Larynx", "Lips", "Vertebra_L1", "Vertebra_R1"]) == []


def test_heart_chambers_are_named_by_anatomy_and_never_swapped():
    # a mirrored heart's left ventricle is still the chamber the myocardium encloses
    for names in (
        ["bg", "Left Ventricle", "Myocardium", "Right Ventricle"],
        ["bg", "Ventricle_L", "Ventricle_R", "Atrium_L", "Atrium_R"],
        ["bg", "A_Coronary_L", "A_Coronary_R"],
    ):
        assert lateral_pairs(names) == []
        plan = mirror_plan(names, "auto", "swap")
        assert plan.mirror and plan.table is None and "named by anatomy" in plan.note
    # and in the other languages whose side words are read ("Ventrikel links" paired: LV and RV swapped)
    for names in (
        ["bg", "Ventrikel links", "Ventrikel rechts"],
        ["bg", "Ventriculus sinister", "Ventriculus dexter"],
        ["bg", "Ventrículo izquierdo", "Ventrículo derecho"],
        ["bg", "Ventricolo sinistro", "Ventricolo destro"],
    ):
        assert lateral_pairs(names) == [] and mirror_plan(names, "auto", "swap").mirror
    # the brain's lateral ventricles are mirror twins, however "lateral" is written
    assert lateral_pairs(["bg", "Lateral Ventricle Left", "Lateral Ventricle Right"]) == [(2, 1)]
    assert lateral_pairs(["bg", "Ventricle_Lat_L", "Ventricle_Lat_R"]) == [(2, 1)]


def test_a_sided_class_without_its_partner_turns_mirror_images_off():
    # mirrored, "Parotid_L" alone would be taught on both sides: no label table can keep it
    for names in (["bg", "Parotid_L", "Brainstem"], ["bg", "LeftParotid", "RightParotid", "Kidney_L"]):
        plan = mirror_plan(names, "auto", "swap")
        assert not plan.mirror and plan.table is None
        assert "no partner" in plan.note and names[-1 if "Kidney_L" in names else 1] in plan.note
        assert TrainConfig().mirror_policy(names) == (False, None)
    # explicit pairs add to those of the names (Kidney_L/R, unlisted, was taught on both sides)
    names = ["bg", "Parotid_L", "Parotid_R", "Liver lobe L", "Kidney_L", "Kidney_R"]
    assert mirror_plan(names, [["Parotid_R", "Parotid_L"]], "swap").table == [0, 2, 1, 3, 5, 4]
    # and win for the classes they name
    names = ["bg", "Parotid_L", "Parotid_R", "Gland"]
    assert mirror_plan(names, [["Gland", "Parotid_L"]], "swap").mirror is False  # Parotid_R left alone
    assert mirror_plan(OPENKBP, "auto", "swap").note == "mirror images swap RightParotid/LeftParotid"
    assert mirror_plan(OPENKBP, "auto", "keep").table is None


def test_adapt_and_retrain_keep_the_models_own_left_right_settings(tmp_path):
    from dataclasses import replace
    from types import SimpleNamespace

    from synthetic import CLASS_NAMES
    from test_project import make_project

    from cgs_engine.checkpoint import load_checkpoint, save_checkpoint
    from cgs_engine.edit.adapt import _mirroring
    from cgs_engine.retrain.recipe import train_config

    project = make_project(tmp_path, corrections=1, unlabeled=0)
    active = project.active_version()
    pair = [CLASS_NAMES[2], CLASS_NAMES[1]]
    recipe = {"lateral_pairs": [pair], "mirror": "swap"}
    checkpoint = replace(load_checkpoint(active.model_path), train_config=recipe)
    table = list(range(len(CLASS_NAMES)))
    table[1], table[2] = 2, 1
    assert _mirroring(checkpoint) == (True, table)
    saved = tmp_path / "paired.pt"
    save_checkpoint(checkpoint, saved)
    config = train_config(project, SimpleNamespace(model_path=saved), None, 2, {})
    assert config.lateral_pairs == [pair] and config.mirror_policy(CLASS_NAMES) == (True, table)
