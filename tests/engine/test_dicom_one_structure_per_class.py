"""Two structures standing for one class: the class takes one of them (a name match before a code
match, then the first in the file), never their union, and the other is named in a warning.

A structure named in another language ("Tronco_encefalico") is matched to Brainstem by its SNOMED
code; merging two would make a larger organ than either without a word. A PRV, which planning
systems give the organ's own code, is never taken for the organ by its code ("Brainstem_PRV03")."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from dicom_rt_cases import TABLE
from dicom_series_cases import SHAPE, good_series

from cgs_engine.cli.main import main
from cgs_engine.dicom import export_rtstruct, export_seg, import_rtstruct, import_seg, read_series

BRAINSTEM, SPINAL_CORD, RIGHT_PAROTID = 1, 2, 3


def three_boxes(series_volume):
    array = np.zeros(SHAPE, np.uint8)
    array[2:6, 5:15, 8:20] = BRAINSTEM
    array[3:5, 10:20, 20:28] = SPINAL_CORD
    array[5:7, 2:8, 24:30] = RIGHT_PAROTID  # becomes the PRV-like third structure below
    return series_volume.like(array, "labels")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-per-class")
    series_folder = good_series(root / "series")
    series = read_series(series_folder)
    labels = three_boxes(series.volume)
    rs = export_rtstruct(labels, series, TABLE, root / "RS.dcm").path
    seg = export_seg(labels, series, TABLE, root / "SEG.dcm").path
    return root, series_folder, labels, rs, seg


def box(labels, class_id):
    return np.asarray(labels.array) == class_id


def rtstruct_variant(exported, name, first_name=None, third_code_from=BRAINSTEM):
    """RS.dcm with the third ROI renamed ``name`` and given the code of ROI ``third_code_from``."""
    root, _, _, rs, _ = exported
    dataset = pydicom.dcmread(rs)
    rois, observations = dataset.StructureSetROISequence, dataset.RTROIObservationsSequence
    rois[2].ROIName = name
    observations[2].RTROIIdentificationCodeSequence = copy.deepcopy(
        observations[third_code_from - 1].RTROIIdentificationCodeSequence
    )
    if first_name is not None:
        rois[0].ROIName = first_name
    path = root / f"RS-{name}-{first_name}.dcm"
    dataset.save_as(path)
    return path


def test_a_prv_with_the_organs_code_is_left_out_not_merged(exported):
    _, series_folder, labels, _, _ = exported
    series = read_series(series_folder)
    result = import_rtstruct(rtstruct_variant(exported, "Tronco_encefalico"), series, TABLE)
    np.testing.assert_array_equal(box(result.labels, BRAINSTEM), box(labels, BRAINSTEM))
    assert not box(result.labels, RIGHT_PAROTID).any()
    assert [roi.roi_name for roi in result.rois] == ["Brainstem", "SpinalCord"]
    assert result.warnings == [
        "ROI 'Tronco_encefalico' left out: it stands for class 1 Brainstem (by code), "
        "which ROI 'Brainstem' gives (by name)"
    ]
    assert result.dropped.counts["class taken"] == {"Tronco_encefalico": 2}  # its box on 2 slices


def test_a_name_match_wins_over_an_earlier_code_match(exported):
    _, series_folder, labels, _, _ = exported
    series = read_series(series_folder)
    path = rtstruct_variant(
        exported, "Brainstem", first_name="Tronco_encefalico", third_code_from=RIGHT_PAROTID
    )
    result = import_rtstruct(path, series, TABLE)
    np.testing.assert_array_equal(box(result.labels, BRAINSTEM), box(labels, RIGHT_PAROTID))
    assert "ROI 'Tronco_encefalico' left out" in result.warnings[0], result.warnings


def test_of_two_name_matches_the_first_in_the_file_is_kept(exported):
    _, series_folder, labels, _, _ = exported
    series = read_series(series_folder)
    result = import_rtstruct(rtstruct_variant(exported, "Brain Stem"), series, TABLE)
    np.testing.assert_array_equal(box(result.labels, BRAINSTEM), box(labels, BRAINSTEM))
    assert result.warnings == [
        "ROI 'Brain Stem' left out: it stands for class 1 Brainstem (by name), "
        "which ROI 'Brainstem' gives (by name)"
    ]


def test_an_roi_without_contours_does_not_take_the_class(exported):
    root, series_folder, labels, _, _ = exported
    dataset = pydicom.dcmread(rtstruct_variant(exported, "Brainstem", first_name="Tronco_encefalico"))
    dataset.ROIContourSequence[2].ContourSequence = []  # the name match has nothing drawn
    path = root / "RS-empty-name-match.dcm"
    dataset.save_as(path)
    result = import_rtstruct(path, read_series(series_folder), TABLE)
    np.testing.assert_array_equal(box(result.labels, BRAINSTEM), box(labels, BRAINSTEM))
    assert result.empty == ["Brainstem"]
    assert not any("left out:" in line for line in result.warnings)


def test_seg_segments_follow_the_same_rule(exported):
    root, series_folder, labels, _, seg = exported
    dataset = pydicom.dcmread(seg)
    segments = dataset.SegmentSequence
    segments[2].SegmentLabel = "Tronco_encefalico"
    segments[2].SegmentedPropertyTypeCodeSequence = copy.deepcopy(
        segments[0].SegmentedPropertyTypeCodeSequence
    )
    path = root / "SEG-prv.dcm"
    dataset.save_as(path)
    result = import_seg(path, read_series(series_folder), TABLE)
    np.testing.assert_array_equal(box(result.labels, BRAINSTEM), box(labels, BRAINSTEM))
    assert not box(result.labels, RIGHT_PAROTID).any()
    assert [label for label, _ in result.segments] == ["Brainstem", "SpinalCord"]
    assert result.duplicates == [
        "segment 'Tronco_encefalico' left out: it stands for class 1 Brainstem (by code), "
        "which segment 'Brainstem' gives (by name)"
    ]


def test_the_cli_says_which_structure_was_left_out(exported, tmp_path, capsys):
    _, series_folder, _, _, _ = exported
    path = rtstruct_variant(exported, "Tronco_encefalico")
    out = tmp_path / "labels.nii.gz"
    assert main(["rtstruct", "import", str(path), "--dicom", str(series_folder), "-o", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: {path}: ROI 'Tronco_encefalico' left out: it stands for class 1 Brainstem (by code), "
        "which ROI 'Brainstem' gives (by name)"
    ]


@pytest.mark.parametrize(
    "name", ["Brainstem_PRV03", "PRV Brainstem 5mm", "Brainstem+3mm", "BrainstemPRV03", "Brainstem_0.5cm"]
)
def test_a_prv_alone_with_the_organs_code_is_not_taken_for_the_organ(exported, name):
    """With no ROI named as the organ, the PRV (the brainstem grown by 3 mm) became the brainstem."""
    _, series_folder, labels, _, _ = exported
    path = rtstruct_variant(exported, "Parotid_R", first_name=name, third_code_from=RIGHT_PAROTID)
    result = import_rtstruct(path, read_series(series_folder), TABLE)
    assert not box(result.labels, BRAINSTEM).any()
    assert name in result.unmatched and [roi.roi_name for roi in result.rois] == ["SpinalCord", "Parotid_R"]
