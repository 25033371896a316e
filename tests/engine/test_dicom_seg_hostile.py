"""SEGs that used to import with exit 0 and a wrong label map, or with a traceback: frames that lie
elsewhere than the images they reference (shifted, of another pixel spacing or orientation, of
another size) and overlapping segments resolved without a word; and SEG export refused on slices
without the Type 2 patient and study attributes, which RTSTRUCT export and `cgs predict` accept."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_rt_cases import TABLE, foreign_seg, two_organs
from dicom_series_cases import SHAPE, good_series, shift
from pydicom.pixels import pack_bits

from cgs_engine.cli.main import main
from cgs_engine.dicom import DicomError, export_rtstruct, export_seg, import_seg, read_series
from cgs_engine.dicom.rtstruct_export import PATIENT_AND_STUDY


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory):
    return good_series(tmp_path_factory.mktemp("seg_hostile") / "series")  # 0.9 x 0.8 mm pixels


@pytest.fixture(scope="module")
def series(series_folder):
    return read_series(series_folder)


@pytest.fixture(scope="module")
def seg_path(series, tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg")
    return export_seg(two_organs(series.volume), series, TABLE, folder / "SEG.dcm").path


def _changed(seg_path, tmp_path, change):
    dataset = pydicom.dcmread(seg_path)
    change(dataset)
    path = tmp_path / "SEG_changed.dcm"
    dataset.save_as(path)
    return path


def _refusal(series, path) -> str:
    with pytest.raises(DicomError) as error:
        import_seg(path, series, TABLE)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize(
    "offset, distance",
    [((10, 0, 0), "10 mm"), ((0, 0, 2.5), "2.5 mm"), ((0, 0.3, 0), "0.3 mm")],  # 0.3 mm: a third of a row
)
def test_a_frame_off_the_slice_it_references_is_refused(series, seg_path, tmp_path, offset, distance):
    def move_third_frame(dataset):
        shift(dataset.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0], offset)

    message = _refusal(series, _changed(seg_path, tmp_path, move_third_frame))
    assert f"frame 3 lies {distance} from the slice it references" in message


def test_frames_within_a_tenth_of_a_voxel_of_their_slices_are_read(series, seg_path, tmp_path):
    # as a writer that places frames on the regular grid, not on each (slightly jittered) slice
    def nudge_every_frame(dataset):
        for group in dataset.PerFrameFunctionalGroupsSequence:
            shift(group.PlanePositionSequence[0], (0.07, -0.08, 0.2))  # 0.09, 0.09, 0.08 of a voxel

    result = import_seg(_changed(seg_path, tmp_path, nudge_every_frame), series, TABLE)
    np.testing.assert_array_equal(result.labels.array, two_organs(series.volume).array)


def _shared_spacing(dataset):
    dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = ["1.8", "1.6"]


def _shared_orientation(dataset):  # turned 90 degrees in its plane
    dataset.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [
        "0", "1", "0", "-1", "0", "0"
    ]  # fmt: skip


def _blank_orientation(dataset):  # a NaN after scaling to unit length passed every comparison
    dataset.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = ["0"] * 6


def _one_frame_spacing(dataset):
    measures = pydicom.Dataset()
    measures.PixelSpacing = ["0.9", "0.9"]
    measures.SliceThickness = "2.5"
    dataset.PerFrameFunctionalGroupsSequence[1].PixelMeasuresSequence = [measures]


@pytest.mark.parametrize(
    "change, words",
    [
        (_shared_spacing, "its pixel spacing 1.8 x 1.6 mm is not the series' 0.9 x 0.8 mm"),
        (_one_frame_spacing, "frame 2's pixel spacing 0.9 x 0.9 mm is not the series' 0.9 x 0.8 mm"),
        (
            _shared_orientation,
            "its image orientation (0, 1, 0, -1, 0, 0) is not the series' (1, 0, 0, 0, 1, 0)",
        ),
        (_blank_orientation, "its image orientation (0, 0, 0, 0, 0, 0) is not the series'"),
    ],
)
def test_frames_of_another_pixel_spacing_or_orientation_are_refused(
    series, seg_path, tmp_path, change, words
):
    assert words in _refusal(series, _changed(seg_path, tmp_path, change))


def test_frames_of_another_size_are_one_line_not_a_traceback(series_folder, seg_path, tmp_path, capsys):
    def coarser(dataset):  # a SEG made on the series resampled to half its pixels
        frames = dataset.pixel_array.reshape(-1, *SHAPE[1:])[:, ::2, ::2]
        dataset.Rows, dataset.Columns = frames.shape[1:]
        _shared_spacing(dataset)
        dataset.PixelData = pack_bits(frames.ravel())

    path = _changed(seg_path, tmp_path, coarser)
    out = tmp_path / "labels.nii.gz"
    code = main(["seg", "import", str(path), "--dicom", str(series_folder), "-o", str(out)])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and not out.exists()
    assert lines == [
        f"cgs seg: error: {path}: its frames are 12 x 16 pixels (rows x columns), the series' slices "
        "24 x 32 (a SEG made on another grid)"
    ]


def test_overlapping_segments_go_to_the_lower_class_id_with_a_warning(
    series, series_folder, tmp_path, capsys
):
    brainstem, cord = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    brainstem[2:4, 2:10, 2:10] = True
    cord[2:4, 6:14, 6:14] = True  # 2 x 4 x 4 = 32 voxels marked by both
    path = foreign_seg(series, {"SpinalCord": cord, "Brainstem": brainstem}, tmp_path / "SEG.dcm")
    result = import_seg(path, series, TABLE)
    expected = np.where(brainstem, 1, np.where(cord, 2, 0))
    np.testing.assert_array_equal(result.labels.array, expected)
    line = "32 voxels lie in more than one segment; the lower class id got them"  # as RTSTRUCT import says
    assert result.warnings == [line]
    out = tmp_path / "labels.nii.gz"
    assert main(["seg", "import", str(path), "--dicom", str(series_folder), "-o", str(out)]) == 0
    assert capsys.readouterr().err.splitlines() == [f"warning: {path}: {line}"]


def test_seg_export_on_slices_without_type_2_attributes_fills_them_empty(tmp_path):
    assert {"PatientBirthDate", "PatientSex", "AccessionNumber"} <= set(PATIENT_AND_STUDY)  # anonymisers'
    folder = good_series(tmp_path / "series")
    for file in sorted(folder.glob("*.dcm")):
        dataset = pydicom.dcmread(file)
        for keyword in (*PATIENT_AND_STUDY, "SliceThickness"):  # SliceThickness: Type 2 of the image
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.save_as(file)
    before = {file: file.read_bytes() for file in folder.iterdir()}
    series = read_series(folder)  # what `cgs predict` reads
    labels = two_organs(series.volume)
    export_rtstruct(labels, series, TABLE, tmp_path / "RS.dcm")
    result = export_seg(labels, series, TABLE, tmp_path / "SEG.dcm")
    written = pydicom.dcmread(result.path)
    assert {keyword: str(written[keyword].value or "") for keyword in PATIENT_AND_STUDY} == dict.fromkeys(
        PATIENT_AND_STUDY, ""
    )
    assert {file: file.read_bytes() for file in folder.iterdir()} == before  # the user's slices untouched
    np.testing.assert_array_equal(import_seg(result.path, series, TABLE).labels.array, labels.array)


def test_a_seg_with_the_series_orientation_normalised_is_read(tmp_path):
    """A series storing 0.985\\-0.174 (accepted: unit length to 1e-3) and a SEG written by a tool that
    normalises the direction cosines (GDCM: dcmqi, Slicer): the SEG was refused as another orientation."""
    folder = good_series(tmp_path / "series")
    rounded = ["0.985", "0.174", "0", "-0.174", "0.985", "0"]  # turned 10 degrees in the slice plane
    for file in sorted(folder.glob("*.dcm")):
        dataset = pydicom.dcmread(file)
        dataset.ImageOrientationPatient = rounded
        dataset.save_as(file)
    series = read_series(folder)
    labels = two_organs(series.volume)
    path = export_seg(labels, series, TABLE, tmp_path / "SEG.dcm").path
    dataset = pydicom.dcmread(path)
    unit = np.array([0.985, 0.174]) / np.linalg.norm([0.985, 0.174])
    normalised = [f"{v:.6f}" for v in (unit[0], unit[1], 0.0, -unit[1], unit[0], 0.0)]
    for group in [dataset.SharedFunctionalGroupsSequence[0], *dataset.PerFrameFunctionalGroupsSequence]:
        if "PlaneOrientationSequence" in group:
            group.PlaneOrientationSequence[0].ImageOrientationPatient = normalised
    dataset.save_as(path)
    np.testing.assert_array_equal(import_seg(path, series, TABLE).labels.array, labels.array)


@pytest.mark.parametrize("padding", ["each frame", "each row"])
def test_frames_or_rows_padded_to_whole_bytes_are_refused(tmp_path, padding):
    """Older Slicer/dcmqi, dcmjs and GDCM padded each frame (or row) of a BINARY SEG to a byte;
    read as packed, every later frame slid by the padding bits (652 voxels wrong of 408, exit 0)."""
    from dicom_series_cases import write_ct_series

    from cgs_engine.volume import Geometry, Volume

    shape = (6, 29, 37)  # 1,073 pixels a frame: not a whole number of bytes
    values = np.indices(shape).sum(axis=0).astype(np.float32)
    geometry = Geometry(spacing=(0.8, 0.9, 2.5), origin=(-10.0, -20.0, 30.0))
    write_ct_series(Volume(values, geometry, "image", "odd"), tmp_path / "odd")
    odd = read_series(tmp_path / "odd")
    labels = np.zeros(shape, np.uint8)
    labels[1:5, 4:20, 5:30] = 1
    labels[2:4, 22:27, 3:9] = 2
    path = export_seg(Volume(labels, odd.volume.geometry, "labels"), odd, TABLE, tmp_path / "SEG.dcm").path
    assert np.array_equal(import_seg(path, odd, TABLE).labels.array, labels)  # packed: read exactly

    def padded(dataset):
        frames = dataset.pixel_array.reshape(-1, shape[1], shape[2])
        if padding == "each frame":
            data = b"".join(pack_bits(frame.ravel(), pad=False) for frame in frames)
        else:
            data = b"".join(pack_bits(row, pad=False) for frame in frames for row in frame)
        dataset.PixelData = data + b"\0" * (len(data) % 2)

    message = _refusal(odd, _changed(path, tmp_path, padded))
    assert "pixel data holds" in message and "cannot be read without guessing" in message


def test_a_seg_of_another_series_without_its_series_references_is_refused(series, seg_path, tmp_path):
    """Without the ReferencedSeriesSequence (some writers leave it out) highdicom lists no source
    image, so a SEG of another series passed the check and every slice read as empty, exit 0."""

    def of_another_series(dataset):
        del dataset.ReferencedSeriesSequence
        for group in dataset.PerFrameFunctionalGroupsSequence:
            for derivation in group.DerivationImageSequence:
                for source in derivation.SourceImageSequence:
                    source.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()

    message = _refusal(series, _changed(seg_path, tmp_path, of_another_series))
    assert "images that are not in" in message


def test_two_segments_sharing_a_number_are_refused(series, seg_path, tmp_path):
    # the one's voxels were written as the other's organ, the other's lost
    def renumber(dataset):
        dataset.SegmentSequence[1].SegmentNumber = dataset.SegmentSequence[0].SegmentNumber
        for group in dataset.PerFrameFunctionalGroupsSequence:
            group.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 1

    assert "two segments share the segment number 1" in _refusal(
        series, _changed(seg_path, tmp_path, renumber)
    )


def test_a_frame_of_an_undefined_segment_is_refused(series, seg_path, tmp_path):
    # its voxels were dropped without a word
    def to_segment_9(dataset):
        dataset.PerFrameFunctionalGroupsSequence[-1].SegmentIdentificationSequence[
            0
        ].ReferencedSegmentNumber = 9

    frames = len(pydicom.dcmread(seg_path).PerFrameFunctionalGroupsSequence)
    message = _refusal(series, _changed(seg_path, tmp_path, to_segment_9))
    assert f"frame {frames} belongs to segment 9, which it does not define" in message


def test_a_segment_that_marks_no_voxel_is_said_so(series, tmp_path):
    labels = two_organs(series.volume)
    path = export_seg(labels, series, TABLE, tmp_path / "SEG.dcm").path

    def empty_second_segment(dataset):
        frames = dataset.PerFrameFunctionalGroupsSequence
        keep = [
            i for i, g in enumerate(frames) if g.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
        ]
        pixels = dataset.pixel_array.reshape(len(frames), *SHAPE[1:])
        blank = np.zeros_like(pixels)
        blank[keep] = pixels[keep]
        dataset.PixelData = pack_bits(blank.ravel())

    result = import_seg(_changed(path, tmp_path, empty_second_segment), series, TABLE)
    said = f"segment {result.segments[1][0]!r} marks no voxel of this series"
    assert [w for w in result.warnings if "marks no voxel" in w] == [
        f"{said} (an empty segment, or frames left out)"
    ]
