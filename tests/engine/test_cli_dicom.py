"""`cgs rtstruct export|import` and `cgs seg export|import` on a series made from the sample CT."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from dicom_cases import dice, shared_series

from cgs_engine.classes.files import class_file_for, find_class_file
from cgs_engine.cli.class_source import openkbp_table
from cgs_engine.cli.main import main
from cgs_engine.io import read_volume, write_volume


def _labels_file(tmp_path, case="oblique"):
    """The labels as `cgs predict` leaves them: with the class table that names each value."""
    series, labels = shared_series(case)
    path = write_volume(labels, tmp_path / f"{case}_labels.nii.gz")
    class_file_for(path).write_text(openkbp_table().to_json())
    return series, labels, path


def test_rtstruct_export_and_import(tmp_path, capsys):
    series, labels, labels_path = _labels_file(tmp_path)
    rs = tmp_path / "RS.dcm"
    assert main(["rtstruct", "export", str(labels_path), "--dicom", str(series.folder), "-o", str(rs)]) == 0
    out = capsys.readouterr().out
    assert "ROI Parotid_R (class 3 RightParotid)" in out and f"wrote {rs}" in out
    assert pydicom.dcmread(rs).Modality == "RTSTRUCT"
    back = tmp_path / "back.nii.gz"
    assert main(["rtstruct", "import", str(rs), "--dicom", str(series.folder), "-o", str(back)]) == 0
    assert "ROI Bone_Mandible -> class 7 Mandible" in capsys.readouterr().out
    imported = read_volume(back, kind="labels")
    assert imported.geometry.is_close(labels.geometry)
    for class_id in range(1, 8):
        assert dice(imported.array == class_id, labels.array == class_id) >= 0.95


def test_seg_export_and_import(tmp_path, capsys):
    series, labels, labels_path = _labels_file(tmp_path, "feet_first")
    seg = tmp_path / "SEG.dcm"
    command = [
        "seg",
        "export",
        str(labels_path),
        "--dicom",
        str(series.folder),
        "-o",
        str(seg),
        "--type",
        "labelmap",
    ]
    assert main(command) == 0
    assert (
        "segment 4 Parotid_L (class 4 LeftParotid): SCT 45289007 Parotid gland, Left"
        in capsys.readouterr().out
    )
    back = tmp_path / "back.nii.gz"
    assert main(["seg", "import", str(seg), "--dicom", str(series.folder), "-o", str(back)]) == 0
    assert np.array_equal(read_volume(back, kind="labels").array, labels.array)


def test_an_export_without_a_class_table_is_refused_not_guessed(tmp_path, capsys):
    """The ROI names a planning system reads must not be guessed from the OpenKBP organs."""
    series, _, labels_path = _labels_file(tmp_path)
    class_file_for(labels_path).unlink()
    for verb, output in (("rtstruct", tmp_path / "RS.dcm"), ("seg", tmp_path / "SEG.dcm")):
        argv = [verb, "export", str(labels_path), "--dicom", str(series.folder), "-o", str(output)]
        _fails_with_one_line(capsys, argv, str(labels_path), "no class table", "--classes")
        assert not output.exists()
        assert main([*argv, "--classes", "openkbp"]) == 0  # said so: the OpenKBP organs
        assert "classes: the OpenKBP organs" in capsys.readouterr().out


def _fails_with_one_line(capsys, argv, *fragments):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cgs {argv[0]}: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    series, _, labels_path = _labels_file(tmp_path, "head_first")
    other, _ = shared_series("feet_first")
    out = tmp_path / "out"
    out.mkdir()
    rs, seg = out / "RS.dcm", out / "SEG.dcm"
    # labels on another grid
    _fails_with_one_line(
        capsys,
        ["rtstruct", "export", str(labels_path), "--dicom", str(other.folder), "-o", str(rs)],
        str(labels_path),
        "not on the grid",
    )
    _fails_with_one_line(
        capsys,
        ["seg", "export", str(labels_path), "--dicom", str(other.folder), "-o", str(seg)],
        "not on the grid",
    )
    # a series with a missing slice
    gappy = tmp_path / "gappy"
    shutil.copytree(series.folder, gappy)
    (gappy / "0020.dcm").unlink()
    _fails_with_one_line(
        capsys,
        ["rtstruct", "export", str(labels_path), "--dicom", str(gappy), "-o", str(rs)],
        str(gappy),
        "missing slices",
    )
    assert list(out.iterdir()) == []
    # an RTSTRUCT for another series
    assert main(["rtstruct", "export", str(labels_path), "--dicom", str(series.folder), "-o", str(rs)]) == 0
    capsys.readouterr()
    labels_out = out / "labels.nii.gz"
    _fails_with_one_line(
        capsys,
        ["rtstruct", "import", str(rs), "--dicom", str(other.folder), "-o", str(labels_out)],
        str(rs),
        "frame of reference",
    )
    assert not labels_out.exists()
    # existing outputs are kept
    before = rs.read_bytes()
    _fails_with_one_line(
        capsys,
        ["rtstruct", "export", str(labels_path), "--dicom", str(series.folder), "-o", str(rs)],
        "already exists",
        "--overwrite",
    )
    assert rs.read_bytes() == before
    labels_out.write_bytes(b"kept")
    _fails_with_one_line(
        capsys,
        ["rtstruct", "import", str(rs), "--dicom", str(series.folder), "-o", str(labels_out)],
        "already exists",
    )
    assert labels_out.read_bytes() == b"kept"
    _fails_with_one_line(
        capsys,
        [
            "seg",
            "export",
            str(labels_path),
            "--dicom",
            str(series.folder),
            "-o",
            str(seg),
            "--classes",
            "model.ckpt",
        ],
        "--classes takes",
    )
    assert sorted(p.name for p in out.iterdir()) == ["RS.dcm", "labels.nii.gz"]


def test_predict_then_export_uses_the_models_class_table(tmp_path, capsys):
    import json
    from pathlib import Path

    model = Path(__file__).resolve().parents[2] / "napari_cgs" / "models" / "default.pt"
    series, _ = shared_series("head_first")
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(series.folder), "-o", str(out)]) == 0
    labels = out / f"{series.folder.name}_labels.nii.gz"
    table = json.loads((out / f"{series.folder.name}_classes.json").read_text())["classes"]
    assert table[3]["tg263"] == "Parotid_R" and table[3]["snomed"]["value"] == "45289007"
    capsys.readouterr()
    rs = tmp_path / "RS.dcm"
    assert main(["rtstruct", "export", str(labels), "--dicom", str(series.folder), "-o", str(rs)]) == 0
    assert f"classes: class table {out}" in capsys.readouterr().out
    names = {roi.ROIName for roi in pydicom.dcmread(rs).StructureSetROISequence}
    assert names and names <= {
        "Brainstem",
        "SpinalCord",
        "Parotid_R",
        "Parotid_L",
        "Esophagus",
        "Larynx",
        "Bone_Mandible",
    }


def test_labels_are_never_exported_onto_another_patients_series_of_the_same_grid(tmp_path, capsys):
    """Two patients scanned with one protocol can share size, spacing and origin: then only the
    series the labels were predicted on tells their contours apart from the other patient's."""
    import json
    from pathlib import Path

    from dicom_cases import case_volumes

    from cgs_engine.dicom import write_ct_series

    ct, _ = case_volumes("head_first")
    mine, theirs = tmp_path / "patient_A", tmp_path / "patient_B"
    write_ct_series(ct, mine, patient_id="PAT-A")
    write_ct_series(ct, theirs, patient_id="PAT-B")
    model = Path(__file__).resolve().parents[2] / "napari_cgs" / "models" / "default.pt"
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(mine), "-o", str(out)]) == 0
    labels = out / "patient_A_labels.nii.gz"
    made_on = json.loads((out / "patient_A_classes.json").read_text())["made_on"]
    assert made_on["patient_id"] == "PAT-A" and made_on["dicom_series"].startswith("1.")
    # an edit keeps the record with its output
    edited = tmp_path / "edited.nii.gz"
    assert main(["edit", "keep-largest", str(labels), "-o", str(edited), "--class", "Mandible"]) == 0
    assert json.loads(class_file_for(edited).read_text())["made_on"] == made_on
    # so does a format conversion of the map
    converted = tmp_path / "converted.nrrd"
    assert main(["convert", str(labels), str(converted), "--labels"]) == 0
    assert json.loads(class_file_for(converted).read_text())["made_on"] == made_on
    capsys.readouterr()

    for verb, output in (("rtstruct", tmp_path / "RS.dcm"), ("seg", tmp_path / "SEG.dcm")):
        for source in (labels, edited, converted):
            argv = [verb, "export", str(source), "--dicom", str(theirs), "-o", str(output)]
            _fails_with_one_line(
                capsys, argv, str(source), made_on["dicom_series"], "patient PAT-A", "patient PAT-B"
            )
            assert not output.exists()
        assert main([verb, "export", str(edited), "--dicom", str(mine), "-o", str(output)]) == 0
        assert pydicom.dcmread(output).PatientID == "PAT-A"
        # read back onto its series, the map records that series (and its organs) in its class file
        back = tmp_path / f"{verb}_back.nii.gz"
        assert main([verb, "import", str(output), "--dicom", str(mine), "-o", str(back)]) == 0
        record = json.loads(class_file_for(back).read_text())
        assert record["made_on"] == made_on and record["labels"] == back.name
        assert "Mandible" in {entry["name"] for entry in record["classes"]}
        again = tmp_path / f"{verb}_again.dcm"
        argv = [verb, "export", str(back), "--dicom", str(theirs), "-o", str(again)]
        _fails_with_one_line(capsys, argv, str(back), "patient PAT-A", "patient PAT-B")
        # importing again over it needs --overwrite, for the class file as for the map
        argv = [verb, "import", str(output), "--dicom", str(mine), "-o", str(back)]
        _fails_with_one_line(capsys, argv, str(back), "--overwrite")
        # a --classes table where the imported map's class file would go is never replaced
        own_table = tmp_path / f"{verb}_mine_classes.json"
        own_table.write_text(class_file_for(back).read_text())
        before = own_table.read_bytes()
        argv = [
            verb,
            "import",
            str(output),
            "--dicom",
            str(mine),
            "-o",
            str(tmp_path / f"{verb}_mine.nii.gz"),
        ]
        _fails_with_one_line(capsys, [*argv, "--classes", str(own_table), "--overwrite"], "--classes table")
        assert own_table.read_bytes() == before


def test_a_damaged_made_on_record_is_refused_in_one_line(tmp_path, capsys):
    import json

    series, _, labels_path = _labels_file(tmp_path, "head_first")
    table = json.loads(class_file_for(labels_path).read_text())
    class_file_for(labels_path).write_text(json.dumps({**table, "made_on": ["1.2.3"]}))
    argv = [
        "rtstruct",
        "export",
        str(labels_path),
        "--dicom",
        str(series.folder),
        "-o",
        str(tmp_path / "RS.dcm"),
    ]
    _fails_with_one_line(capsys, argv, "made_on")


def test_a_class_table_left_from_another_map_never_names_a_new_one(tmp_path, capsys):
    """A map written under a name whose class file an earlier prediction left (a conversion of the
    user's own labels, which have no table) took that table's organ names, and went out as DICOM."""
    import json

    series, labels, predicted = _labels_file(tmp_path, "head_first")
    table = json.loads(class_file_for(predicted).read_text())
    mine = tmp_path / "head_first.nrrd"  # the user's own labels, no class file
    write_volume(labels, mine)
    stale = class_file_for(tmp_path / "head_first.nii.gz")
    stale.write_text(json.dumps({**table, "labels": predicted.name}))  # left by `cgs predict`
    converted = tmp_path / "head_first.nii.gz"
    argv = ["convert", str(mine), str(converted), "--labels"]
    _fails_with_one_line(capsys, argv, str(stale), f"is {predicted.name}'s", mine.name)
    assert not converted.exists()
    write_volume(labels, converted)  # as another program writes it
    for verb in ("rtstruct", "seg"):
        output = tmp_path / f"{verb}.dcm"
        argv = [verb, "export", str(converted), "--dicom", str(series.folder), "-o", str(output)]
        _fails_with_one_line(capsys, argv, str(stale), f"is {predicted.name}'s", converted.name)
        assert not output.exists()
        assert main([*argv, "--classes", "openkbp"]) == 0  # named explicitly, the table is not needed
    # a table naming its map in other letter case is its own (case-blind file systems)
    stale.write_text(json.dumps({**table, "labels": converted.name.upper()}))
    assert find_class_file(converted) == stale


def test_a_class_table_naming_its_own_map_or_none_is_found(tmp_path):
    import json

    map_path = tmp_path / "scan_labels.nii.gz"
    entries = json.loads(openkbp_table().to_json())
    for record in (entries, {"classes": entries["classes"], "labels": map_path.name}):
        class_file_for(map_path).write_text(json.dumps(record))
        assert find_class_file(map_path) == class_file_for(map_path)
    (tmp_path / "scan_classes.json").write_text(json.dumps({**entries, "labels": "scan_labels.nii.gz"}))
    class_file_for(map_path).unlink()
    assert find_class_file(map_path) == tmp_path / "scan_classes.json"  # as cgs predict writes them


@pytest.mark.parametrize("verb", ["rtstruct", "seg"])
def test_an_import_that_matches_no_organ_is_refused_not_written_empty(tmp_path, capsys, verb):
    """Without --classes the OpenKBP organs are the default: a structure set of other organs came
    in as an all-background map with exit 0 (a warning line only)."""
    from cgs_engine.classes.table import derive_class_table

    series, _, labels_path = _labels_file(tmp_path, "head_first")
    exported = tmp_path / f"{verb}.dcm"
    assert main([verb, "export", str(labels_path), "--dicom", str(series.folder), "-o", str(exported)]) == 0
    other = tmp_path / "abdomen.json"
    other.write_text(derive_class_table(["background", "Spleen", "Liver"]).to_json())
    back = tmp_path / "back.nii.gz"
    capsys.readouterr()
    argv = [
        verb,
        "import",
        str(exported),
        "--dicom",
        str(series.folder),
        "-o",
        str(back),
        "--classes",
        str(other),
    ]
    _fails_with_one_line(capsys, argv, str(exported), "Mandible", "--classes", "nothing written")
    assert not back.exists() and not class_file_for(back).exists()


def test_an_import_is_refused_only_when_the_table_matches_no_roi_at_all():
    """Organs the table has, but without contours or on another frame, beside one unknown ROI: not
    'none of its ROIs is a class' (--classes would not help), the warnings say what is wrong."""
    from cgs_engine.dicom.rtstruct_import import RTStructImport

    _, labels = shared_series("head_first")
    assert RTStructImport(labels, unmatched=["External"], named=1).no_class_matched
    assert not RTStructImport(labels, unmatched=["External"], empty=["Brainstem"], named=2).no_class_matched
    assert not RTStructImport(labels, named=0).no_class_matched
