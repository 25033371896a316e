"""Label ids mapped organ by organ onto a receiver's classes (cgs_engine.classes.relabel)."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.relabel import renumbered
from cgs_engine.classes.table import class_table_from_list, derive_class_table


def table(*names: str, first: int = 1):
    return class_table_from_list([{"id": first + i, "name": name} for i, name in enumerate(names)])


def test_organs_are_matched_by_name_tg263_name_and_alias_never_across_sides():
    receiver = derive_class_table(["background", "Brainstem", "RightParotid", "LeftParotid", "Mandible"])
    labels = np.array([[0, 1, 2, 3, 4]], np.uint8)
    moved = renumbered(
        labels, table("Parotid_L", "Parotid_R", "Bone_Mandible", "brainstem"), receiver, "map", "it"
    )
    assert moved.labels.tolist() == [[0, 3, 2, 4, 1]]
    assert moved.describe().startswith("ids renumbered by organ: Parotid_L 1 -> 3")


def test_names_in_other_scripts_are_matched_exactly_and_never_merged():
    receiver = derive_class_table(["background", "脑干", "腮腺左", "腮腺右"])
    labels = np.array([1, 2, 3], np.uint8)
    assert renumbered(labels, table("腮腺右", "脑干", "腮腺左"), receiver, "map", "it").labels.tolist() == [
        3,
        1,
        2,
    ]
    with pytest.raises(ClassTableError, match="'Левая', a class it does not have"):
        renumbered(labels, table("Левая", "Правая", "脑干"), receiver, "map", "it")


def test_two_organs_of_the_map_never_become_one():
    receiver = derive_class_table(["background", "Mandible", "Brainstem"])
    with pytest.raises(
        ClassTableError, match="values 1 'Mandible' and 2 'Bone_Mandible', which both stand for"
    ):
        renumbered(np.array([1, 2], np.uint8), table("Mandible", "Bone_Mandible"), receiver, "map", "it")


def test_a_uint8_map_renumbered_past_255_and_bad_values():
    receiver = class_table_from_list([{"id": 300, "name": "Liver"}, {"id": 2, "name": "Spleen"}])
    moved = renumbered(np.array([0, 1, 2], np.uint8), table("Liver", "Spleen"), receiver, "map", "it")
    assert moved.labels.tolist() == [0, 300, 2] and moved.labels.dtype == np.uint16
    with pytest.raises(ClassTableError, match="label values must be 0..65535"):
        renumbered(np.array([-1, 1]), table("Liver"), receiver, "map", "it")
    with pytest.raises(ClassTableError, match="does not name the value 2"):
        renumbered(np.array([1, 2], np.uint8), table("Liver"), receiver, "map", "it")
    unchanged = np.zeros((2, 3, 4, 5), np.uint16)
    assert renumbered(unchanged, table("Liver"), receiver, "map", "it").labels is unchanged


def test_kept_voxels_are_renumbered_onto_the_model_that_re_ran():
    from cgs_engine.classes.relabel import kept_in_new_classes

    labels = np.zeros((2, 3, 3), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1], labels[1, 2, 2] = 1, 2, 1
    keep = labels > 0
    keep[1, 2, 2] = False  # not kept: the prediction takes it
    before, now = ["background", "Brainstem", "Mandible"], ["background", "Mandible", "Brainstem"]
    kept = kept_in_new_classes(labels, keep, before, now)
    assert kept[0, 0, 0] == 2 and kept[1, 1, 1] == 1 and kept[1, 2, 2] == 0
    same = kept_in_new_classes(labels, keep, before, before)
    np.testing.assert_array_equal(same, np.where(keep, labels, 0))
    with pytest.raises(ClassTableError, match="Mandible"):
        kept_in_new_classes(labels, keep, before, ["background", "Brainstem", "Larynx"])
