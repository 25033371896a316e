"""`cgs edit TOOL LABELS -o OUT`: the segment-editor tools from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.cli.main import main
from cgs_engine.edit import fill_between_slices, grow
from cgs_engine.io import read_volume

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")

SPACING_XYZ = (0.8, 0.8, 2.5)
ORIGIN = (-120.5, 33.25, 410.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in-plane: a geometry worth keeping


def write_labels(path, array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path))
    return path


def organs() -> np.ndarray:
    labels = np.zeros((12, 24, 24), np.uint8)
    labels[3:9, 6:14, 6:14] = 1  # "Liver"
    labels[3:9, 6:14, 16:20] = 2  # "Spleen", 2 voxels from the liver
    return labels


@pytest.fixture
def scan(tmp_path):
    path = write_labels(tmp_path / "scan.nii.gz", organs())
    classes = [{"id": 0, "name": "background"}, {"id": 1, "name": "Liver"}, {"id": 2, "name": "Spleen"}]
    (tmp_path / "scan_classes.json").write_text(json.dumps({"classes": classes}), encoding="utf-8")
    return path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cgs edit: error: "), captured.err
    assert captured.out == ""
    return lines[0]


def test_grow_by_class_name_keeps_the_geometry_exactly(scan, tmp_path, capsys):
    out = tmp_path / "grown.nii.gz"
    assert main(["edit", "grow", str(scan), "-o", str(out), "--class", "liver", "--mm", "2"]) == 0
    line = capsys.readouterr().out.strip()
    source, written = read_volume(scan, kind="labels"), read_volume(out, kind="labels")
    assert written.geometry == source.geometry and written.array.dtype == np.uint8
    expected = grow(source.array, 1, 2.0, source.geometry.spacing[::-1])
    assert np.array_equal(written.array, expected.labels)
    assert (written.array == 2).sum() == (source.array == 2).sum()  # the spleen is untouched
    voxel_ml = np.prod(SPACING_XYZ) / 1000
    assert line.splitlines() == [line]
    assert "grow Liver (1)" in line and f"{expected.changed_voxels} voxels changed" in line
    assert f"({expected.changed_voxels * voxel_ml:.2f} mL)" in line and "grown.nii.gz" in line


def test_fill_between_slices_with_a_box_and_a_class_id(tmp_path, capsys):
    labels = organs()
    labels[[4, 5, 7, 8]] = np.where(labels[[4, 5, 7, 8]] == 1, 0, labels[[4, 5, 7, 8]])  # liver on 3, 6
    scan = write_labels(tmp_path / "ct_labels.mha", labels)
    out = tmp_path / "filled.nrrd"
    box = "0:5,:,:"  # only the gap between slices 3 and 6 that lies in z < 5
    assert main(["edit", "fill-between-slices", str(scan), "-o", str(out), "--class", "1", "--box", box]) == 0
    assert "fill-between-slices class 1:" in capsys.readouterr().out
    written = read_volume(out, kind="labels").array
    free = fill_between_slices(labels, 1).labels
    assert (written[4] == 1).sum() == (free[4] == 1).sum() > 0
    assert np.array_equal(written[5:], labels[5:])


def test_class_table_beside_a_cgs_predict_labels_file(tmp_path, capsys):
    """`cgs predict` writes scan_labels.nii.gz with scan_classes.json."""
    labels = organs()
    labels[10, 20, 20] = 2  # a stray spleen voxel
    scan = write_labels(tmp_path / "scan_labels.nii.gz", labels)
    classes = [{"id": 1, "name": "Liver"}, {"id": 2, "name": "Spleen"}]
    (tmp_path / "scan_classes.json").write_text(json.dumps({"classes": classes}), encoding="utf-8")
    out = tmp_path / "clean.nii.gz"
    assert main(["edit", "keep-largest", str(scan), "-o", str(out), "--class", "Spleen"]) == 0
    assert "keep-largest Spleen (2): 1 voxels changed" in capsys.readouterr().out
    assert np.array_equal(read_volume(out, kind="labels").array, organs())


def test_the_edited_map_carries_its_class_table_along(scan, tmp_path, capsys):
    """Without it, the next edit by name fails and an RT export would name the organs from the
    OpenKBP table: "Liver" exported as "Brainstem"."""
    out_dir = tmp_path / "edited"
    out_dir.mkdir()
    table = json.loads((tmp_path / "scan_classes.json").read_text())
    table["classes"][1]["map"] = "scan_map_Liver.nii.gz"  # a map file named relative to the table
    (tmp_path / "scan_classes.json").write_text(json.dumps(table))
    first = out_dir / "grown.nii.gz"
    assert main(["edit", "grow", str(scan), "-o", str(first), "--class", "Liver", "--mm", "2"]) == 0
    assert "and grown_classes.json" in capsys.readouterr().out
    carried = json.loads((out_dir / "grown_classes.json").read_text())
    assert [c["name"] for c in carried["classes"]] == ["background", "Liver", "Spleen"]
    assert carried["labels"] == "grown.nii.gz" and all("map" not in c for c in carried["classes"])
    second = out_dir / "clean.nii.gz"  # the next edit finds the organ by name
    assert main(["edit", "keep-largest", str(first), "-o", str(second), "--class", "Spleen"]) == 0
    capsys.readouterr()
    # a class table already beside the output is not replaced without --overwrite, before any work
    (out_dir / "other_classes.json").write_text("{}")
    assert (
        main(["edit", "grow", str(scan), "-o", str(out_dir / "other.nii.gz"), "--class", "1", "--mm", "2"])
        == 2
    )
    assert "other_classes.json: already exists" in one_error_line(capsys)
    assert not (out_dir / "other.nii.gz").exists() and (out_dir / "other_classes.json").read_text() == "{}"


def test_overwrite_replaces_and_the_only_organ_is_the_default(tmp_path, capsys):
    labels = np.zeros((6, 10, 10), np.uint8)
    labels[1:5, 2:8, 2:8] = 3
    labels[2:4, 4:6, 4:6] = 0  # a cavity
    scan = write_labels(tmp_path / "one.nii.gz", labels)
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"old")
    args = ["edit", "fill-holes", str(scan), "-o", str(out), "--mode", "3d", "--overwrite"]
    assert main(args) == 0
    assert "fill-holes class 3: 8 voxels changed" in capsys.readouterr().out
    assert (read_volume(out, kind="labels").array[1:5, 2:8, 2:8] == 3).all()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["erode", "{scan}"], "unknown tool 'erode'"),
        (["grow", "{scan}", "--class", "Liver"], "grow needs --mm"),
        (["remove-islands", "{scan}", "--class", "1"], "needs --ml"),
        (["keep-largest", "{scan}", "--class", "1", "--mm", "2"], "--mm does not apply to keep-largest"),
        (["fill-holes", "{scan}", "--class", "1", "--mode", "2d"], "--mode must be slice or 3d"),
        (["fill-between-slices", "{scan}", "--class", "1", "--axis", "w"], "--axis must be z, y or x"),
        (["fill-holes", "{scan}", "--class", "1", "--mode", "3d", "--axis", "x"], "--axis does not apply"),
        (["grow", "{scan}", "--class", "Kidney", "--mm", "1"], "no such class"),
        (["grow", "{scan}", "--class", "9", "--mm", "1"], "--class 9: not an organ of this label map"),
        (["grow", "{scan}", "--class", "0", "--mm", "1"], "class id 0 is out of range"),
        (["grow", "{scan}", "--mm", "1"], "give the organ with --class"),
        (["grow", "{scan}", "--class", "1", "--mm", "-1"], "margin_mm must be a finite number >= 0"),
        (["grow", "{scan}", "--class", "1", "--mm", "0.5"], "less than its finest voxel spacing (0.80 mm)"),
        (["shrink", "{scan}", "--class", "1", "--mm", "0.7"], "shrink would change nothing; give --mm 0.8"),
        (["grow", "{scan}", "--class", "1", "--mm", "1", "--box", "1:2,3:4"], "--box"),
        (["grow", "{scan}", "--class", "1", "--mm", "1", "--box", "20:30,:,:"], "z range holds no voxel"),
        (["grow", "{missing}", "--class", "1", "--mm", "1"], "missing.nii.gz"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(scan, tmp_path, capsys, args, words):
    out = tmp_path / "out.nii.gz"
    missing = tmp_path / "missing.nii.gz"
    argv = ["edit", *(a.format(scan=scan, missing=missing) for a in args), "-o", str(out)]
    assert main(argv) == 2
    assert words in one_error_line(capsys)
    assert not out.exists()


def test_the_smallest_margin_offered_is_the_spacing_the_header_states(tmp_path, capsys):
    """1.1 mm reads back from NIfTI as 1.1000000238 mm, and 1.11 was offered."""
    image = sitk.GetImageFromArray(organs())
    image.SetSpacing((1.1, 1.1, 3.0))
    scan = tmp_path / "fine.nii.gz"
    sitk.WriteImage(image, str(scan))
    out = tmp_path / "out.nii.gz"
    assert main(["edit", "grow", str(scan), "--class", "1", "--mm", "1", "-o", str(out)]) == 2
    assert "give --mm 1.1 or more" in one_error_line(capsys)
    assert main(["edit", "grow", str(scan), "--class", "1", "--mm", "1.1", "-o", str(out)]) == 0


def test_a_margin_of_one_voxel_works_and_a_sigma_under_one_voxel_says_why_nothing_changed(
    scan, tmp_path, capsys
):
    assert (
        main(["edit", "grow", str(scan), "-o", str(tmp_path / "g.nii.gz"), "--class", "1", "--mm", "0.8"])
        == 0
    )
    assert "0 voxels changed" not in capsys.readouterr().out  # exactly one voxel reaches its neighbours
    assert (
        main(["edit", "smooth", str(scan), "-o", str(tmp_path / "s.nii.gz"), "--class", "1", "--mm", "0.1"])
        == 0
    )
    line = capsys.readouterr().out
    assert (
        "0 voxels changed" in line and "a sigma under one voxel, 0.80 mm, changes little or nothing" in line
    )


def test_a_name_without_a_class_table_asks_for_the_id(tmp_path, capsys):
    scan = write_labels(tmp_path / "bare.nii.gz", organs())
    out = tmp_path / "out.nii.gz"
    assert main(["edit", "grow", str(scan), "-o", str(out), "--class", "Liver", "--mm", "1"]) == 2
    assert "bare_classes.json" in one_error_line(capsys)


@pytest.mark.parametrize("target", ["exists", "no folder", "bad type"])
def test_the_output_is_checked_before_the_labels_are_read(tmp_path, capsys, target):
    outputs = {
        "exists": tmp_path / "taken.nii.gz",
        "no folder": tmp_path / "nowhere" / "out.nii.gz",
        "bad type": tmp_path / "out.png",
    }
    out = outputs[target]
    (tmp_path / "taken.nii.gz").write_bytes(b"keep me")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")  # would fail if it were read first
    assert main(["edit", "keep-largest", str(broken), "-o", str(out), "--class", "1"]) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "broken" not in line
    assert (tmp_path / "taken.nii.gz").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nii.gz", "taken.nii.gz"]


def _organ_drawn_on_some_slices(tool: str) -> np.ndarray:
    """[z, y, x]: for fill-holes a tube along z, hollow in every axial slice; for fill-between a
    disk that moves and grows from slice to slice, drawn on every other one (contour interpolation
    is not symmetric in z, so storing the slices the other way round shows in its result)."""
    labels = np.zeros((9, 16, 16), np.uint8)
    yy, xx = np.mgrid[:16, :16]
    for z in range(1, 8):
        if tool == "fill-holes":
            labels[z][(np.hypot(yy - 7, xx - 7) <= 4) & (np.hypot(yy - 7, xx - 7) > 1.5)] = 1
        elif z % 2:
            labels[z][np.hypot(yy - 4 - z, xx - 5 - z // 2) <= 1.5 + z * 0.6] = 1
    return labels


@pytest.mark.parametrize("stored", ["ASR", "LPI"])  # sagittal slices first; axial, feet first
@pytest.mark.parametrize("tool", ["fill-holes", "fill-between-slices"])
def test_slice_tools_work_on_the_patients_axial_slices_whatever_the_storage_order(
    tmp_path, capsys, tool, stored
):
    """On a file stored sagittally the 'axial' tools worked on its first array axis, its sagittal
    slices: fill-holes filled other holes, fill-between-slices changed nothing, exit 0. Stored feet
    first, contour interpolation filled 26 of 120 voxels otherwise than head first."""
    organ = _organ_drawn_on_some_slices(tool)
    axial = sitk.GetImageFromArray(organ)
    axial.SetSpacing((1.0, 1.0, 2.0))
    other = sitk.DICOMOrient(axial, stored)  # the same labels, stored in another order
    results = {}
    for name, image in (("axial", axial), ("other", other)):
        source, output = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_out.nii.gz"
        sitk.WriteImage(image, str(source))
        assert main(["edit", tool, str(source), "--class", "1", "-o", str(output)]) == 0
        back = sitk.Resample(sitk.ReadImage(str(output)), axial, sitk.Transform(), sitk.sitkNearestNeighbor)
        results[name] = sitk.GetArrayFromImage(back)
    capsys.readouterr()
    np.testing.assert_array_equal(results["other"], results["axial"])
    assert (results["axial"] != organ).sum() > 0  # the axial result did change the organ


def test_the_panels_tools_work_on_the_patients_axial_slices_given_the_scans_geometry():
    """The panel passes the layer's stored array: fill-holes filled a sagittally stored scan's
    sagittal slices. With the scan's geometry the tool turns the arrays to the patient's axes."""
    from cgs_engine.edit.tools import EDIT_TOOLS
    from cgs_engine.volume import Geometry

    organ = _organ_drawn_on_some_slices("fill-holes")
    axial = sitk.GetImageFromArray(organ)
    sagittal = sitk.DICOMOrient(axial, "ASR")
    stored = sitk.GetArrayFromImage(sagittal)
    geometry = Geometry(sagittal.GetSpacing(), sagittal.GetOrigin(), sagittal.GetDirection())
    result = EDIT_TOOLS["fill-holes"].run(stored, 1, geometry.spacing[::-1], geometry=geometry)
    filled = sitk.GetImageFromArray(result.labels)
    filled.CopyInformation(sagittal)
    back = sitk.Resample(filled, axial, sitk.Transform(), sitk.sitkNearestNeighbor)
    expected = EDIT_TOOLS["fill-holes"].run(organ, 1, (1.0, 1.0, 1.0)).labels
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), expected)
    assert result.changed.shape == stored.shape and result.changed.sum() == (expected != organ).sum()


def test_class_tables_follow_their_maps_through_convert_and_edit(tmp_path, capsys):
    """The check that a class table names its map must not refuse what worked before: a predicted
    map after a conversion wrote its own table, a map converted to another format beside its table,
    and a map edited onto the name whose table is the predicted map's is refused up front."""
    from cgs_engine.classes.files import class_file_entries, write_class_file

    entries = class_file_entries(["background", "Spleen", "Liver"])
    array = np.zeros((6, 12, 12), np.uint8)
    array[1:5, 3:9, 3:9] = 1
    array[2:4, 5:7, 5:7] = 0
    for stem, table in (("scan_labels", "scan_classes.json"), ("x", "x_classes.json")):
        path = write_labels(tmp_path / f"{stem}.nii.gz", array)
        write_class_file(tmp_path / table, entries, path)
    run = lambda *argv: main([str(part) for part in argv])  # noqa: E731
    # as cgs predict leaves them: scan_labels.nii.gz with scan_classes.json; edited onto scan.nii.gz,
    # whose table would be scan_classes.json too: refused before anything is written
    predicted = tmp_path / "scan_labels.nii.gz"
    assert run("edit", "fill-holes", predicted, "--class", "1", "-o", tmp_path / "scan.nii.gz") == 2
    error = one_error_line(capsys)
    assert "scan_classes.json" in error and "scan_labels.nii.gz's" in error and "otherwise" in error
    assert not (tmp_path / "scan.nii.gz").exists()
    # converted to another format (which writes its own table), the predicted map still finds its own
    assert run("convert", predicted, tmp_path / "scan_labels.nrrd", "--labels") == 0
    assert run("edit", "fill-holes", predicted, "--class", "Spleen", "-o", tmp_path / "b.nii.gz") == 0
    # as the panel exports: x.nii.gz with x_classes.json, shared by x.nrrd
    assert run("convert", tmp_path / "x.nii.gz", tmp_path / "x.nrrd", "--labels") == 0
    assert (
        run("edit", "fill-holes", tmp_path / "x.nrrd", "--class", "Spleen", "-o", tmp_path / "c.nii.gz") == 0
    )


def test_a_map_without_a_class_table_does_not_inherit_the_one_beside_the_output(scan, tmp_path, capsys):
    """An earlier edit left fixed_classes.json (Liver, Spleen) beside fixed.nii.gz; another patient's
    map without a table written over fixed.nii.gz kept it, so its ids were read and exported under
    the earlier map's organ names. Refused before any work, --overwrite or not."""
    fixed = tmp_path / "fixed.nii.gz"
    assert main(["edit", "grow", str(scan), "-o", str(fixed), "--class", "Liver", "--mm", "2"]) == 0
    capsys.readouterr()
    old_map, old_table = fixed.read_bytes(), (tmp_path / "fixed_classes.json").read_text()
    other = write_labels(tmp_path / "other_patient.nii.gz", organs())
    argv = ["edit", "shrink", str(other), "--class", "1", "--mm", "1", "-o", str(fixed), "--overwrite"]
    assert main(argv) == 2
    error = one_error_line(capsys)
    assert "fixed_classes.json" in error and "other_patient.nii.gz has no class table" in error
    assert fixed.read_bytes() == old_map and (tmp_path / "fixed_classes.json").read_text() == old_table
    # written elsewhere it works, and in place (no table at all) too
    assert (
        main(["edit", "shrink", str(other), "--class", "1", "--mm", "1", "-o", str(tmp_path / "b.nii.gz")])
        == 0
    )
    argv = ["edit", "shrink", str(other), "--class", "1", "--mm", "1", "-o", str(other), "--overwrite"]
    assert main(argv) == 0


def test_a_map_converted_as_an_image_onto_a_name_a_table_describes_is_refused(scan, tmp_path, capsys):
    """`cgs convert` without --labels of another map onto cgs predict's scan_labels.nii.gz (or beside
    it as scan_labels.nrrd, no --overwrite needed) kept scan_classes.json as its table: exported
    and scored under the predicted organs' names, exit 0. Refused before any work."""
    from cgs_engine.classes.files import class_file_entries, write_class_file

    predicted = write_labels(tmp_path / "scan_labels.nii.gz", organs())
    write_class_file(
        tmp_path / "scan_classes.json", class_file_entries(["background", "Liver", "Spleen"]), predicted
    )
    before = predicted.read_bytes()
    other = write_labels(tmp_path / "other_patient.nii.gz", organs()[:, :, ::-1].copy())
    for output, extra in ((predicted, ["--overwrite"]), (tmp_path / "scan_labels.nrrd", [])):
        assert main(["convert", str(other), str(output), *extra]) == 2
        error = capsys.readouterr().err
        assert "scan_classes.json beside it names the organs of an earlier map" in error, error
        assert "converted as an image (no --labels)" in error
    assert predicted.read_bytes() == before and not (tmp_path / "scan_labels.nrrd").exists()
    assert main(["convert", str(other), str(tmp_path / "elsewhere.nii.gz")]) == 0


def test_an_edit_in_place_writes_no_second_class_table(tmp_path, capsys):
    """`cgs predict` leaves scan_labels.nii.gz with scan_classes.json. Edited in place, a copy of the
    table went to scan_labels_classes.json, which is found first: the next prediction's table there
    (another model's organs) was hidden behind the old copy."""
    from cgs_engine.classes.files import class_file_entries, find_class_file, write_class_file

    predicted = write_labels(tmp_path / "scan_labels.nii.gz", organs())
    write_class_file(
        tmp_path / "scan_classes.json", class_file_entries(["background", "Liver", "Spleen"]), predicted
    )
    argv = [
        "edit",
        "grow",
        str(predicted),
        "--class",
        "Liver",
        "--mm",
        "2",
        "-o",
        str(predicted),
        "--overwrite",
    ]
    assert main(argv) == 0
    assert " and " not in capsys.readouterr().out
    assert not (tmp_path / "scan_labels_classes.json").exists()
    assert find_class_file(predicted) == tmp_path / "scan_classes.json"
    assert (read_volume(predicted, kind="labels").array == 1).sum() > (organs() == 1).sum()


def test_a_bad_region_is_refused_alike_whatever_the_storage_order():
    """Turned to the patient's axes, a box was made into a mask before it was checked: a box with a
    step, or of two slices only, was refused on an axial scan and used on a feet-first one."""
    from cgs_engine.edit import EditError
    from cgs_engine.edit.tools import EDIT_TOOLS
    from cgs_engine.volume import Geometry

    labels = np.zeros((10, 10, 10), np.uint8)
    labels[3:7, 3:7, 3:7] = 1
    feet_first = Geometry(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    for geometry in (Geometry(), feet_first):
        for region, words in (
            ((slice(0, 10, 2), slice(None), slice(None)), "step 1"),
            ((slice(2, 8), slice(None)), "3 slices"),
        ):
            with pytest.raises(EditError, match=words):
                EDIT_TOOLS["grow"].run(labels, 1, (1.0, 1.0, 1.0), region, amount=1.0, geometry=geometry)
    boxed = EDIT_TOOLS["grow"].run(
        labels, 1, (1.0, 1.0, 1.0), (slice(0, 5),) * 3, amount=1.0, geometry=feet_first
    )
    plain = EDIT_TOOLS["grow"].run(labels, 1, (1.0, 1.0, 1.0), (slice(0, 5),) * 3, amount=1.0)
    assert boxed.changed.any() and not boxed.changed[5:].any() and not boxed.changed[:, 5:].any()
    assert plain.changed.sum() == boxed.changed.sum()
