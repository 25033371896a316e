"""Adapt to this scan: fine-tune a copy of the model on the slices the user corrected, then
re-predict only the voxels the user has not touched.

The model is copied into memory (the checkpoint file and a project's versions are never written).
Training uses the public pieces of ``cgs_engine.train``: the network built from the checkpoint,
its weak augmentation through ``BatchSource`` (mirrored slices swap left/right organs, as in
training), and the method's supervised loss (generalist and specialist heads, Dice + CE) on the
trusted voxels only; every other voxel is ``IGNORE_INDEX``. BatchNorm statistics stay the
model's (a few slices of one scan are no estimate of them). It runs for a bounded time (or
steps), can be cancelled between steps, and the re-prediction changes no voxel in ``keep``.

Which voxels are trusted (:func:`trusted_voxels`): the user corrects an organ on a slice by
looking at its outline there, so on each axial slice where they edited or accepted voxels, the
organs they worked on are trusted on that slice, and so are the reviewed voxels themselves and the
slice's background, except within ``band_mm`` of an organ they did not work on (its missed voxels
hide there; next to a worked-on organ the background is trusted). Other slices: nothing.

Why the background of the whole slice: trusting only the organs and a band around them left the
loss with about half organ voxels where a slice has a few percent, and the adapted model grew every
organ on the slices it had not seen (OpenKBP, two training patients, 60 s: organ volumes up 17-51 %,
mean Dice -0.07 to -0.10; with the slice's background -0.02 to -0.04; bench/annotation_effort.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from cgs_engine.checkpoint import ModelCheckpoint, build_network, load_checkpoint
from cgs_engine.classes.relabel import same_organ
from cgs_engine.classes.table import ClassTable, checkpoint_class_table
from cgs_engine.edit.checks import EditError, check_labels, check_spacing
from cgs_engine.edit.result import EditResult
from cgs_engine.errors import CGSError
from cgs_engine.infer.field import padding_for_volume
from cgs_engine.infer.slices import Cancelled, iterate_slice_probs, resize_images, resize_labels
from cgs_engine.method import IGNORE_INDEX
from cgs_engine.method.objective import METHODS, ObjectiveConfig, supervised_losses
from cgs_engine.model.fold import fold_batch_norm
from cgs_engine.normalize import Normalization
from cgs_engine.orientation import Reorientation
from cgs_engine.runtime import resolve_runtime
from cgs_engine.train.config import TrainConfig
from cgs_engine.train.data import BatchSource, SliceBank
from cgs_engine.train.loop import train_mode
from cgs_engine.volume import Geometry

# Chosen on the 6 OpenKBP val patients (bench/annotation_effort.py --adapt): see README.
ADAPT_DEFAULTS = {"seconds": 60.0, "max_steps": 300, "lr": 3e-4, "batch": 8, "band_mm": 10.0}
PREDICT_SHARE = 0.15  # of the time budget kept for the re-prediction (measured: ~4 s of 60 on 128^3)


@dataclass(frozen=True, eq=False)
class AdaptResult(EditResult):
    """The new labels and changed voxels, plus what the adaptation did."""

    steps: int = 0
    seconds: float = 0.0
    trained_slices: int = 0
    final_loss: float | None = None


def trusted_voxels(
    labels,
    reviewed,
    spacing_zyx=None,
    band_mm: float = ADAPT_DEFAULTS["band_mm"],
    geometry: Geometry | None = None,
) -> np.ndarray:
    """Bool mask of the voxels whose label the user vouched for (see the module docstring).

    The slices are the patient's axial ones: with ``geometry`` (the scan's) the stored arrays are
    turned to them first, so a scan stored sagittally or coronally is not read slice by slice
    along its first stored axis (every axial slice of an organ reviewed on one became trusted).
    Without it the arrays are taken as stored axially, with ``spacing_zyx``.
    """
    labels = check_labels(labels)
    reviewed = np.asarray(reviewed)
    if reviewed.shape != labels.shape:
        raise EditError(f"review mask has shape {reviewed.shape}, the labels {labels.shape}")
    reviewed = reviewed != 0
    if geometry is None:
        if spacing_zyx is None:
            raise EditError("trusted_voxels needs the scan's geometry or its spacing")
        return _trusted_on_axial_slices(labels, reviewed, check_spacing(spacing_zyx), band_mm)
    turn = Reorientation.of(geometry)
    spacing = check_spacing(turn.canonical_geometry(geometry, labels.shape).spacing[::-1])
    labels_c, reviewed_c = turn.canonical_copies(labels, reviewed)
    trusted = _trusted_on_axial_slices(labels_c, reviewed_c, spacing, band_mm)
    return np.ascontiguousarray(turn.from_canonical(trusted))


def _trusted_on_axial_slices(labels, reviewed, spacing, band_mm: float) -> np.ndarray:
    trusted = reviewed.copy()
    for z in np.flatnonzero(reviewed.reshape(len(reviewed), -1).any(axis=1)):
        plane, marks = labels[z], reviewed[z]
        organs = set(np.unique(plane[marks]).tolist()) - {0}
        erased = marks & (plane == 0)
        if erased.any():  # background the user made: the organs beside it were being corrected
            near = ndimage.binary_dilation(erased, iterations=2)
            organs |= set(np.unique(plane[near]).tolist()) - {0}
        if not organs:
            continue
        worked_on = np.isin(plane, sorted(organs))
        near_worked = ndimage.distance_transform_edt(~worked_on, sampling=spacing[1:]) <= band_mm
        others = (plane != 0) & ~worked_on
        near_others = (
            ndimage.distance_transform_edt(~others, sampling=spacing[1:]) <= band_mm
            if others.any()
            else np.zeros_like(others)
        )
        trusted[z] |= worked_on | ((plane == 0) & (near_worked | ~near_others))
    return trusted


def adapt_to_scan(
    checkpoint: str | Path | ModelCheckpoint,
    image,
    labels,
    trusted,
    keep=None,
    seconds: float = ADAPT_DEFAULTS["seconds"],
    max_steps: int = ADAPT_DEFAULTS["max_steps"],
    lr: float = ADAPT_DEFAULTS["lr"],
    batch: int = ADAPT_DEFAULTS["batch"],
    device: str = "cpu",
    threads: int = 0,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    geometry: Geometry | None = None,
    class_table: ClassTable | None = None,
) -> AdaptResult:
    """Fine-tune a copy of ``checkpoint`` on ``labels`` where ``trusted`` and re-predict the scan.

    ``image``: raw intensities [z, y, x]; ``keep``: voxels the re-prediction must not change
    (default: ``trusted``). ``seconds`` bounds training and prediction together (after setup);
    ``threads``: CPU threads (0: every usable core); ``progress`` gets (stage, done, total);
    ``cancel()`` true raises ``Cancelled`` (nothing is changed). ``geometry``: the scan's, so that
    the network learns and predicts in the orientation it was trained in (``cgs_engine.orientation``;
    without it the arrays are taken as stored in that orientation). ``class_table``: the organs the
    labels' ids stand for (their class file, the layer's classes); they must be numbered as the
    model numbers its organs, which it is taught under and predicts in (refused otherwise).
    """
    labels, image, trusted, keep = _checked_arrays(labels, image, trusted, keep)
    stored_labels = labels
    turn = Reorientation() if geometry is None else Reorientation.of(geometry)
    image, labels, trusted = turn.canonical_copies(image, labels, trusted)
    if not (seconds > 0 and max_steps > 0 and lr > 0 and batch > 0):
        raise EditError("seconds, max_steps, lr and batch must be positive")
    model_checkpoint = checkpoint if isinstance(checkpoint, ModelCheckpoint) else load_checkpoint(checkpoint)
    known = len(model_checkpoint.class_names)
    if labels.max(initial=0) >= known:
        raise EditError(f"labels hold class {int(labels.max())}, the model knows {known} classes")
    if class_table is not None:
        _check_numbering(class_table, model_checkpoint)
    slices = np.flatnonzero(trusted.reshape(len(trusted), -1).any(axis=1))
    if slices.size == 0:
        raise EditError("no corrected slice to adapt to: correct or accept some voxels first")

    runtime = resolve_runtime(device, "auto", threads)
    normalize = Normalization.from_dict(model_checkpoint.normalization).slab_normalizer(image)
    size = model_checkpoint.input_size
    network = build_network(model_checkpoint).to(runtime.device)
    # the slices widened to the trained field of view as the pre-segmentation read them: trained
    # and re-predicted stretched instead, the adapted labels wiped out the organs on a small field
    padding = None
    if geometry is not None:
        spacing = turn.canonical_geometry(geometry, stored_labels.shape).spacing
        padding = padding_for_volume(image.shape, spacing, model_checkpoint.scope)
    bank = _slice_bank(image, labels, trusted, slices, normalize, size, padding)
    mirror, table = _mirroring(model_checkpoint)
    source = BatchSource(
        bank, None, batch, 0, seed, foreground_fraction=0.5, mirror=mirror, mirror_table=table
    )
    if runtime.channels_last:
        network = network.to(memory_format=torch.channels_last)
    train_mode(network, TrainConfig(freeze_batchnorm=True))
    method = model_checkpoint.method if model_checkpoint.method in METHODS else "cgs"
    objective = ObjectiveConfig(method=method)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    # the budget starts here: the first optimiser of a process imports much of torch (seconds)
    started = time.perf_counter()
    deadline = started + seconds * (1.0 - PREDICT_SHARE)
    steps, loss = _train(
        network, source, optimizer, objective, runtime, max_steps, deadline, progress, cancel
    )
    predicted = _predict(network.eval(), image, size, runtime, normalize, progress, cancel, padding)
    predicted = turn.from_canonical(predicted)
    labels = stored_labels
    new = np.where(keep, labels, predicted.astype(labels.dtype))
    return AdaptResult(
        labels=new,
        changed=new != labels,
        steps=steps,
        seconds=time.perf_counter() - started,
        trained_slices=int(slices.size),
        final_loss=loss,
    )


def _check_numbering(table: ClassTable, model_checkpoint: ModelCheckpoint) -> None:
    """The labels' ids must be the model's: its head k is taught on the labels' value k, and what it
    predicts is written back as its own ids (a map whose 1 is the Mandible trained the model's
    Brainstem head on the mandible, and the adapted labels went out under the map's names)."""
    model = checkpoint_class_table(model_checkpoint)
    for organ in model.entries:
        theirs = table.by_id(organ.id)
        same = None if theirs is None else same_organ(theirs, model)
        if same is None or same.id != organ.id:
            found = next((e for e in table.entries if (m := same_organ(e, model)) and m.id == organ.id), None)
            where = f"is {found.id} there" if found is not None else "is not among them"
            held = f", and {organ.id} is {theirs.name}" if theirs is not None else ""
            raise EditError(
                f"the labels' classes number the organs otherwise than the model: {organ.name} (the model's "
                f"{organ.id}) {where}{held}; adapt needs labels numbered as the model's (as it predicts them)"
            )


def _checked_arrays(labels, image, trusted, keep):
    """``labels``, ``image``, ``trusted`` and ``keep`` (default: ``trusted``) as arrays of one shape."""
    labels = check_labels(labels)
    image = np.asarray(image)
    trusted = np.asarray(trusted).astype(bool, copy=False)
    keep = trusted if keep is None else np.asarray(keep).astype(bool, copy=False)
    for name, array in (("image", image), ("trusted mask", trusted), ("keep mask", keep)):
        if array.shape != labels.shape:
            raise EditError(f"{name} has shape {array.shape}, the labels {labels.shape}")
    return labels, image, trusted, keep


def _train(network, source, optimizer, objective, runtime, max_steps, deadline, progress, cancel):
    """Train until ``deadline`` (``time.perf_counter()``) or ``max_steps``: (steps, last loss)."""
    steps, loss = 0, None
    # at least one step, however slow the machine: an adaptation that never trained changes nothing
    while steps < max_steps and (steps == 0 or time.perf_counter() < deadline):
        if cancel is not None and cancel():
            raise Cancelled("adaptation cancelled")
        drawn = source.batch(steps)
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            output = network(runtime.prepare(drawn.labeled_images), specialists=objective.uses_specialists)
        terms = supervised_losses(output, drawn.labels.to(runtime.device), objective)
        terms["sup"].backward()
        optimizer.step()
        steps, loss = steps + 1, float(terms["sup"].detach())
        if progress is not None:
            progress("training", steps, max_steps)
    return steps, loss


def _slice_bank(image, labels, trusted, slices, normalize, size: int, padding=None) -> SliceBank:
    """The trained slices at the model's input size, whole.

    Cropping them to where their trusted voxels are made steps several times cheaper but the
    adapted model worse on the other slices (bench/annotation_effort.py: mean Dice 0.69 -> 0.56
    on the 6 OpenKBP val patients; whole slices 0.69 -> 0.69 on two of them), so it is not done.
    """
    images = torch.from_numpy(normalize(image[slices]))
    targets = torch.from_numpy(np.where(trusted[slices], labels[slices], IGNORE_INDEX).astype(np.uint8))
    if padding is not None:
        images, targets = padding.pad_images(images.float()), padding.pad_labels(targets)
    images = resize_images(images, size)
    return SliceBank(images.half(), resize_labels(targets, size), ["this scan"])


def _predict(network, image, size, runtime, normalize, progress, cancel, padding=None) -> np.ndarray:
    model = fold_batch_norm(network)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    predicted = np.zeros(image.shape, dtype=np.uint8)

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress("predicting", done, total)

    for batch in iterate_slice_probs(
        model,
        image,
        size,
        runtime,
        16,
        specialists=False,
        progress=report,
        cancel=cancel,
        normalize=normalize,
        padding=padding,
    ):
        predicted[batch.start : batch.stop] = batch.labels.numpy()
    return predicted


def _mirroring(model_checkpoint: ModelCheckpoint) -> tuple[bool, list[int] | None]:
    """Mirror images as the model's training had them (its explicit left/right pairs, its mode)."""
    recipe = model_checkpoint.train_config or {}
    chosen = {key: recipe[key] for key in ("mirror", "lateral_pairs") if key in recipe}
    try:
        return TrainConfig(**chosen).mirror_policy(model_checkpoint.class_names)
    except CGSError as error:
        raise EditError(f"the model's left/right training settings: {error}") from None
