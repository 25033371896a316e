"""find_regions: ranking, geometry of regions, likely classes, low confidence, slice profile."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cgs_engine.review import (
    Region,
    busiest_slices,
    component_mask,
    find_regions,
    find_regions_with_map,
    slice_profile,
)

SHAPE = (10, 20, 30)


def two_blobs() -> np.ndarray:
    """A small very uncertain blob and a big mildly uncertain one with more mass in total."""
    disagreement = np.zeros(SHAPE, np.uint8)
    disagreement[1:3, 2:4, 2:5] = 255  # 12 voxels, mass 12
    disagreement[5:9, 10:15, 20:26] = 153  # 120 voxels at 0.6, mass 72
    return disagreement


def test_two_blobs_ranked_by_mass_with_exact_geometry():
    regions, component_map = find_regions_with_map(two_blobs(), spacing_zyx=(2.5, 0.5, 0.8))
    assert [r.id for r in regions] == [1, 2]
    big, small = regions
    assert big.bbox == (slice(5, 9), slice(10, 15), slice(20, 26))
    assert big.voxels == 120
    assert big.mass == pytest.approx(120 * 153 / 255)
    assert big.mean_disagreement == pytest.approx(0.6)
    assert big.centroid == pytest.approx((6.5, 12.0, 22.5))
    assert big.volume_ml == pytest.approx(120 * 2.5 * 0.5 * 0.8 / 1000)
    assert big.source == "disagreement"
    assert small.bbox == (slice(1, 3), slice(2, 4), slice(2, 5))
    assert small.voxels == 12 and small.mass == pytest.approx(12.0)
    assert component_map.dtype == np.int32
    assert np.array_equal(np.bincount(component_map.ravel()), [component_map.size - 132, 120, 12])
    assert component_mask(component_map, small).sum() == 12
    assert component_mask(component_map, small)[1, 2, 2]


def test_threshold_min_voxels_and_max_regions():
    disagreement = two_blobs()
    disagreement[0, 18, 28] = 255  # one lonely voxel
    disagreement[8, 0:3, 0:3] = 100  # below 0.5
    regions = find_regions(disagreement)
    assert [r.voxels for r in regions] == [120, 12]
    assert [r.voxels for r in find_regions(disagreement, min_voxels=1)] == [120, 12, 1]
    assert [r.voxels for r in find_regions(disagreement, threshold=0.3)] == [120, 12, 9]
    assert [r.voxels for r in find_regions(disagreement, threshold=0.7)] == [12]
    regions, component_map = find_regions_with_map(disagreement, max_regions=1)
    assert [r.voxels for r in regions] == [120]
    assert set(np.unique(component_map)) == {0, 1}


def test_threshold_is_exact_on_uint8_and_float_inputs():
    disagreement = np.zeros(SHAPE, np.uint8)
    disagreement[0, 0, :6] = 128  # 0.502 >= 0.5
    disagreement[5, 5, :6] = 127  # 0.498 < 0.5
    assert [r.bbox[0] for r in find_regions(disagreement)] == [slice(0, 1)]
    as_float = disagreement / 255.0
    assert [r.bbox[0] for r in find_regions(as_float)] == [slice(0, 1)]
    assert find_regions(as_float)[0].mass == pytest.approx(6 * 128 / 255)


def test_diagonal_neighbours_join_one_region():
    disagreement = np.zeros(SHAPE, np.uint8)
    for step in range(6):  # touching only by corners
        disagreement[step, step, step] = 255
    assert [r.voxels for r in find_regions(disagreement)] == [6]


def test_equal_mass_breaks_ties_by_size_then_scan_order():
    disagreement = np.zeros(SHAPE, np.uint8)
    disagreement[0, 0, 0:6] = 255  # 6 voxels, mass 6
    disagreement[5, 0, 0:12] = 128  # 12 voxels, mass ~6.02: more mass, ranks first
    disagreement[8, 10, 0:6] = 255  # same mass and size as the first, later in scan order
    regions = find_regions(disagreement)
    assert [r.bbox[0].start for r in regions] == [5, 0, 8]


def test_likely_classes_from_specialists_then_labels_fallback():
    disagreement = two_blobs()
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:9, 10:15, 20:23] = 2
    labels[5:7, 10:15, 23:26] = 3
    labels[1:3, 2:4, 2:5] = 1
    maps = {c: np.zeros(SHAPE, np.uint8) for c in (1, 2, 3, 4)}
    maps[4][5:9, 10:15, 20:26] = 200
    maps[1][5:9, 10:15, 20:21] = 255
    big, small = find_regions(disagreement, labels=labels, specialist_maps=maps, split_by_organ=False)
    assert big.likely_classes == (4, 1)  # zero-evidence classes are left out
    assert small.likely_classes == (1,)  # all specialists say 0 here: label fallback
    big, small = find_regions(disagreement, labels=labels)
    assert big.likely_classes == (2, 3)
    assert small.likely_classes == (1,)
    assert find_regions(disagreement)[0].likely_classes == ()


def test_a_blob_across_two_organs_splits_at_their_border():
    disagreement = np.zeros(SHAPE, np.uint8)
    disagreement[2:8, 5:15, 5:25] = 200  # one 26-connected blob over two touching organs
    maps = {c: np.zeros(SHAPE, np.uint8) for c in (1, 2, 3)}
    maps[2][:, :, :12] = 180  # organ 2 likeliest left of x = 12
    maps[3][:, :, 12:] = 90  # organ 3 right of it, less sure but the only claim there
    maps[1][:, :, 15:] = 90  # ...tied with organ 1 from x = 15: the lower class id, 1, wins
    regions, component_map = find_regions_with_map(disagreement, specialist_maps=maps)
    assert sorted((r.likely_classes[0], r.voxels) for r in regions) == [
        (1, 6 * 10 * 10),
        (2, 6 * 10 * 7),
        (3, 6 * 10 * 3),
    ]
    for region in regions:
        assert int(component_mask(component_map, region).sum()) == region.voxels
    assert len({r.id for r in regions}) == 3 and int(component_map.max()) == 3
    (whole,) = find_regions(disagreement, specialist_maps=maps, split_by_organ=False)
    assert whole.voxels == 6 * 10 * 20
    (unsplit,) = find_regions(disagreement)  # without specialist maps there is nothing to split by
    assert unsplit.voxels == whole.voxels


def test_at_most_three_likely_classes():
    disagreement = two_blobs()
    maps = {c: np.full(SHAPE, 10 * c, np.uint8) for c in range(1, 6)}
    assert find_regions(disagreement, specialist_maps=maps)[0].likely_classes == (5, 4, 3)


def test_low_confidence_regions_only_near_organs():
    disagreement = np.zeros(SHAPE, np.uint8)
    disagreement[1:3, 2:4, 2:5] = 255
    confidence = np.full(SHAPE, 250, np.uint8)
    labels = np.zeros(SHAPE, np.uint8)
    labels[6:8, 10:15, 10:15] = 2
    confidence[6:8, 10:15, 10:15] = 102  # 0.4 on an organ: 50 voxels, doubt mass 30
    confidence[0:4, 15:20, 25:30] = 50  # low but background without disagreement: ignored
    confidence[1:3, 4, 2:5] = 100  # low, next to the disagreement blob: joins it
    disagreement[1:3, 4, 2:5] = 1
    regions = find_regions(disagreement, labels=labels, confidence=confidence)
    assert [r.source for r in regions] == ["low-confidence", "both"]
    organ, blob = regions
    assert organ.voxels == 50 and organ.mass == pytest.approx(50 * (1 - 102 / 255))
    assert organ.mean_disagreement == 0
    assert organ.likely_classes == (2,)
    assert blob.voxels == 18 and blob.mass == pytest.approx(12 + 6 / 255)
    without_labels = find_regions(disagreement, confidence=confidence)
    assert [r.source for r in without_labels] == ["both"]


def test_empty_inputs_give_no_regions():
    regions, component_map = find_regions_with_map(np.zeros(SHAPE, np.uint8))
    assert regions == [] and not component_map.any()
    assert find_regions(np.zeros(SHAPE, np.float32), labels=np.ones(SHAPE, np.uint8)) == []


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        find_regions(np.zeros(SHAPE, np.int16))
    with pytest.raises(ValueError, match="labels shape"):
        find_regions(np.zeros(SHAPE, np.uint8), labels=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="threshold"):
        find_regions(np.zeros(SHAPE, np.uint8), threshold=0)
    with pytest.raises(ValueError, match="max_regions"):
        find_regions(np.zeros(SHAPE, np.uint8), max_regions=0)
    with pytest.raises(ValueError, match="confidence must be uint8"):
        find_regions(np.zeros(SHAPE, np.uint8), confidence=np.zeros(SHAPE, np.int32))


def test_region_dict_round_trip_is_json_able():
    import json

    region = find_regions(two_blobs(), specialist_maps={3: np.full(SHAPE, 9, np.uint8)})[0]
    data = json.loads(json.dumps(region.to_dict()))
    assert data["bbox"] == [[5, 9], [10, 15], [20, 26]]
    assert Region.from_dict(data) == region
    assert {region, Region.from_dict(data)} == {region}  # hashable despite its slices


def test_slice_profile_and_busiest_slices():
    disagreement = two_blobs()
    profile = slice_profile(disagreement)
    expected = np.zeros(SHAPE[0])
    expected[1:3] = 6.0
    expected[5:9] = 30 * 153 / 255
    assert profile.dtype == np.float64
    assert np.allclose(profile, expected)
    assert np.allclose(slice_profile(disagreement / 255.0), expected)
    assert np.allclose(slice_profile(disagreement, axis=2).sum(), expected.sum())
    assert busiest_slices(profile, 3) == [5, 6, 7]
    assert busiest_slices(np.zeros(4)) == []


def test_fast_on_a_128_cube():
    rng = np.random.default_rng(0)
    disagreement = np.zeros((128, 128, 128), np.uint8)
    for z, y, x in rng.integers(8, 120, (150, 3)):
        disagreement[z - 3 : z + 3, y - 4 : y + 4, x - 4 : x + 4] = rng.integers(100, 255)
    confidence = (255 - disagreement // 2).astype(np.uint8)
    labels = (disagreement > 150).astype(np.uint8)
    started = time.perf_counter()
    regions = find_regions(
        disagreement, labels=labels, confidence=confidence, specialist_maps={1: disagreement}
    )
    assert time.perf_counter() - started < 1.0  # target 0.2 s; loose for busy CI machines
    assert regions and [r.id for r in regions] == list(range(1, len(regions) + 1))
    masses = [r.mass for r in regions]
    assert masses == sorted(masses, reverse=True)


# The `cgs review` verb, on the files `cgs predict --maps` writes.

CLI_SPACING = (0.8, 0.5, 2.5)  # x, y, z as SimpleITK has it
CLI_ORIGIN = (-50.0, 10.0, 100.0)


def _write_map(path, array):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(CLI_SPACING)
    image.SetOrigin(CLI_ORIGIN)
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture
def predicted(tmp_path):
    import json

    disagreement = two_blobs()
    _write_map(tmp_path / "case_disagreement.nii.gz", disagreement)
    liver = np.zeros(SHAPE, np.uint8)
    liver[5:9, 10:15, 20:26] = 220
    spleen = np.zeros(SHAPE, np.uint8)
    spleen[1:3, 2:4, 2:5] = 180
    spleen[5:9, 10:15, 20:26] = 30
    _write_map(tmp_path / "case_map_liver.nii.gz", liver)
    _write_map(tmp_path / "case_map_left_spleen.nii.gz", spleen)
    table = [{"id": 0, "name": "background"}, {"id": 1, "name": "liver"}, {"id": 2, "name": "left spleen"}]
    (tmp_path / "case_classes.json").write_text(json.dumps({"classes": table}))
    return tmp_path


def test_cli_prints_the_ranked_queue_in_world_mm(predicted, capsys):
    from cgs_engine.cli.main import main

    assert main(["review", str(predicted / "case_disagreement.nii.gz"), "--maps-dir", str(predicted)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2 region(s)" in lines[0]
    first, second = lines[2].split(), lines[3].split()
    assert first[:3] == ["1", "120", f"{120 * 0.8 * 0.5 * 2.5 / 1000:.2f}"]
    # centroid index (z, y, x) = (6.5, 12, 22.5) -> world x, y, z
    assert "(-32.0, 16.0, 116.2)" in lines[2] and lines[2].endswith("liver, left spleen")
    assert second[:2] == ["2", "12"] and lines[3].endswith("left spleen")
    assert lines[4].startswith("busiest slices") and "5 (18.0)" in lines[4]


def test_cli_json_and_overwrite(predicted, capsys):
    import json

    from cgs_engine.cli.main import main

    report = predicted / "queue.json"
    args = ["review", str(predicted / "case_disagreement.nii.gz"), "--top", "1", "--json", str(report)]
    assert main(args) == 0
    data = json.loads(report.read_text())
    assert [r["rank"] for r in data["regions"]] == [1]
    assert data["regions"][0]["bbox"] == [[5, 9], [10, 15], [20, 26]]
    assert data["regions"][0]["centroid_mm"] == [-32.0, 16.0, 116.25]
    assert len(data["slice_profile"]) == SHAPE[0] and data["busiest_slices"][0] == 5
    assert data["class_names"] == {"1": "liver", "2": "left spleen"}  # the table beside the map
    capsys.readouterr()
    assert main(args) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and str(report) in message and "--overwrite" in message
    assert main([*args, "--overwrite", "--threshold", "0.9"]) == 0
    assert [r["voxels"] for r in json.loads(report.read_text())["regions"]] == [12]


def test_cli_labels_fallback_and_grid_check(predicted, capsys):
    from cgs_engine.cli.main import main

    labels = np.zeros(SHAPE, np.uint8)
    labels[5:9, 10:15, 20:26] = 2
    labels_path = _write_map(predicted / "case_labels.nii.gz", labels)
    disagreement = str(predicted / "case_disagreement.nii.gz")
    assert main(["review", disagreement, "--labels", labels_path]) == 0
    assert capsys.readouterr().out.splitlines()[2].endswith("left spleen")
    # the label map given where the disagreement map goes: its ids were read as 1/255, 2/255
    assert main(["review", labels_path]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "case_labels.nii.gz: is a label map" in message
    wrong = _write_map(predicted / "small_labels.nii.gz", labels[:4])
    assert main(["review", disagreement, "--labels", wrong]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "small_labels.nii.gz" in message and "shape" in message


def test_cli_missing_file_is_one_line_with_exit_code_2(tmp_path, capsys):
    from cgs_engine.cli.main import main

    missing = tmp_path / "nope_disagreement.nii.gz"
    assert main(["review", str(missing)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("cgs review: error:") and str(missing) in message and "\n" not in message
    assert main(["review", str(missing), "--maps-dir", str(tmp_path / "no_dir")]) == 2
