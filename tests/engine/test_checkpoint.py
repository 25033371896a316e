"""Checkpoints: round trip, half weights, atomic writes, clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from cgs_engine.checkpoint import (
    CheckpointError,
    ModelCheckpoint,
    atomic_torch_save,
    build_network,
    load_checkpoint,
    save_checkpoint,
    weights_digest,
)
from cgs_engine.durable import WriteError
from cgs_engine.model import ModelConfig, build_model


def _checkpoint(num_classes: int = 3) -> ModelCheckpoint:
    config = ModelConfig(num_classes=num_classes, widths=(4, 8), dropouts=(0.0, 0.0))
    return ModelCheckpoint(
        model_config=config,
        state_dict=build_model(config).state_dict(),
        class_names=["background", "a", "b"][:num_classes],
        input_size=32,
        normalization={"mode": "identity"},
        metrics={"dice_mean": 0.5},
    )


def test_round_trip_and_network(tmp_path):
    original = _checkpoint()
    path = save_checkpoint(original, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    assert loaded.class_names == original.class_names and loaded.input_size == 32
    assert loaded.metrics == {"dice_mean": 0.5} and loaded.engine_version == original.engine_version
    network = build_network(loaded, path)
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, original.state_dict[name])
    assert not list(tmp_path.glob("*.partial"))


def test_half_weights_load_as_float32(tmp_path):
    path = save_checkpoint(_checkpoint(), tmp_path / "half.pt", half=True)
    assert load_checkpoint(path).state_dict["generalist.weight"].dtype == torch.float16
    network = build_network(load_checkpoint(path), path)
    assert network.generalist.weight.dtype == torch.float32


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.pt"
    save_checkpoint(_checkpoint(), target)
    before = target.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(WriteError, match="model.pt: could not be written .disk full"):
        atomic_torch_save({"x": Unpicklable()}, target)
    assert target.read_bytes() == before
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"not a checkpoint at all", "not a readable checkpoint"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert message in str(error.value) and "bad.pt" in str(error.value) and "\n" not in str(error.value)


def test_a_scan_given_as_the_model_is_named_as_such(tmp_path):
    """`cgs predict scan.nii.gz model.pt`: not a "corrupt checkpoint" with torch's advice."""
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CheckpointError, match="scan.nii.gz: is an image, not a checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(_checkpoint(), tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="model.pt: not a readable checkpoint"):
        load_checkpoint(path)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a napari-cgs model checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_incompatible_checkpoints(tmp_path):
    payload = _checkpoint().to_payload()
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="newer than this engine"):
        load_checkpoint(tmp_path / "future.pt")
    payload = _checkpoint().to_payload()
    payload["class_names"] = ["background"]
    torch.save(payload, tmp_path / "names.pt")
    with pytest.raises(CheckpointError, match="1 class names for a 3-class model"):
        load_checkpoint(tmp_path / "names.pt")
    payload = _checkpoint().to_payload()
    payload["state_dict"] = build_model(
        ModelConfig(num_classes=3, widths=(8, 16), dropouts=(0, 0))
    ).state_dict()
    payload["weights_sha256"] = weights_digest(payload["state_dict"])  # intact, but the wrong shape
    torch.save(payload, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        build_network(load_checkpoint(tmp_path / "shape.pt"), tmp_path / "shape.pt")


class AnotherProgramsObject:
    """Pickled by reference: loading it would import and run this module's code."""


def test_a_run_folder_or_another_programs_pickle_given_as_the_model(tmp_path):
    """torch's message for a pickle with objects advised loading it with weights_only=False (which
    runs the file's code); a run folder was "no such checkpoint file"."""
    run = tmp_path / "runs" / "cgs"
    save_checkpoint(_checkpoint(), run / "best.pt")
    with pytest.raises(CheckpointError, match=r"cgs: is a folder, not a checkpoint file \(.pt\); its model"):
        load_checkpoint(run)
    torch.save({"model": AnotherProgramsObject()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "other.pt")
    assert "holds Python objects" in str(error.value) and "weights_only" not in str(error.value)


def test_torch_files_of_the_older_pickle_format_are_named_as_checkpoints(tmp_path):
    # a foreign or cut file of torch's pre-zip format was called "no PyTorch archive"
    torch.save(
        {"model": AnotherProgramsObject()}, tmp_path / "foreign.pt", _use_new_zipfile_serialization=False
    )
    with pytest.raises(CheckpointError, match=r"holds Python objects \(.*AnotherProgramsObject\)"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"w": torch.zeros(3)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "old.pt").read_bytes()[:300])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "cut.pt")
    assert "truncated or corrupt" in str(error.value) and "weights_only" not in str(error.value)
