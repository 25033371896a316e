"""Names in the DICOM files we write: UTF-8 declared, one line, no backslash, at most 64 characters,
never empty, never two alike; each change warned about, and read back to its class."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_series_cases import SHAPE, good_series

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.organs import Code
from cgs_engine.classes.table import ClassEntry, ClassTable
from cgs_engine.dicom import (
    export_rtstruct,
    export_seg,
    import_rtstruct,
    import_seg,
    read_series,
)
from cgs_engine.dicom.names import conformant, structure_names

NAMES = ["Parótida_D 腮腺", "a\nb", "x\\y", "L" * 70, "", "a b"]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return read_series(good_series(tmp_path_factory.mktemp("names") / "series"))


def table_of(names) -> ClassTable:
    return ClassTable(tuple(ClassEntry(i + 1, name, (10, 20, 30)) for i, name in enumerate(names)))


def labels_for(series, count: int):
    array = np.zeros(SHAPE, np.uint8)
    for index in range(count):
        array[1 + index, 2:8, 3 + 4 * index : 6 + 4 * index] = index + 1
    return series.volume.like(array, "labels")


def test_conformant_values():
    assert conformant("Parotid\r\nR\\left\x00 ", 64) == "Parotid R left"
    assert conformant("L" * 70, 64) == "L" * 64
    assert conformant("\n\t", 64) == ""


def test_names_are_made_conformant_distinct_and_each_change_is_said():
    names = structure_names(table_of(NAMES).entries)
    assert [names[i] for i in range(1, 7)] == [
        "Parótida_D 腮腺",
        "a b",
        "x y",
        "L" * 64,
        "Class 5",
        "a b (6)",
    ]
    assert len(names.changes) == 5 and all("\n" not in line for line in names.changes)
    assert "class 6 is written as 'a b (6)', not 'a b' (another class has that name)" in names.changes


def test_a_name_made_distinct_never_meets_another_classes_name():
    """'organ' of id 3 became 'organ (3)', alike (case-blind) to class 2's own 'Organ (3)': two
    ROIs named alike, and the re-import lost one organ."""
    names = structure_names(table_of(["Organ", "Organ (3)", "organ", "ORGAN"]).entries)
    written = [names[i] for i in range(1, 5)]
    assert written == ["Organ", "Organ (3)", "organ (3-2)", "ORGAN (4)"]
    assert len({name.casefold() for name in written}) == 4


@pytest.mark.parametrize("kind", ["RTSTRUCT", "SEG"])
def test_files_declare_utf8_and_names_survive_the_round_trip(series, tmp_path, kind):
    table = table_of(NAMES)
    labels = labels_for(series, len(NAMES))
    if kind == "RTSTRUCT":
        result = export_rtstruct(labels, series, table, tmp_path / "RS.dcm")
        dataset = pydicom.dcmread(result.path)
        written = [roi.ROIName for roi in dataset.StructureSetROISequence]
        back = import_rtstruct(result.path, series, table)
    else:
        result = export_seg(labels, series, table, tmp_path / "SEG.dcm")
        dataset = pydicom.dcmread(result.path)
        written = [segment.SegmentLabel for segment in dataset.SegmentSequence]
        back = import_seg(result.path, series, table)
    assert dataset.SpecificCharacterSet == "ISO_IR 192"
    assert written[0] == "Parótida_D 腮腺"  # not "??"
    assert written == ["Parótida_D 腮腺", "a b", "x y", "L" * 64, "Class 5", "a b (6)"]
    assert len(result.renamed) == 5
    np.testing.assert_array_equal(back.labels.array, labels.array)  # every class read back as itself


def test_a_code_value_dicom_cannot_hold_is_refused_before_writing(series, tmp_path):
    entry = ClassEntry(1, "Liver", (10, 20, 30), code=Code("1234567890123456789", "SCT", "Liver"))
    with pytest.raises(ClassTableError, match="code value '1234567890123456789'"):
        export_rtstruct(labels_for(series, 1), series, ClassTable((entry,)), tmp_path / "RS.dcm")
    assert not (tmp_path / "RS.dcm").exists()


@pytest.mark.parametrize("export", [export_rtstruct, export_seg])
def test_a_series_without_a_study_or_labels_with_fractions_are_refused(series, tmp_path, export):
    """RTSTRUCT was written with StudyInstanceUID '' (filed under no study), SEG failed with a raw
    AttributeError; labels of 1.5 lost those voxels from the RTSTRUCT in silence (IndexError in SEG)."""
    import dataclasses

    from cgs_engine.dicom import DicomError

    labels = labels_for(series, 2)
    no_study = dataclasses.replace(series, study_instance_uid="")
    with pytest.raises(DicomError, match="no StudyInstanceUID; an RTSTRUCT or SEG must name the study"):
        export(labels, no_study, table_of(["a", "b"]), tmp_path / "out.dcm")
    for odd in (1.5, np.inf):
        fractions = labels.array.astype(np.float32)
        fractions[fractions == 2] = odd
        with pytest.raises(DicomError, match=rf"non-integer values \(e.g. {odd:g}\)"):
            export(labels.like(fractions, "labels"), series, table_of(["a", "b"]), tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()
