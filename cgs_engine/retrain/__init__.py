"""Retraining: fine-tune the active model on the project's corrections and unlabeled scans.

Run folder ``runs/<id>/``: ``store.h5`` (the training store built for this run), ``train/``
(the training run directory, see ``cgs_engine.train.loop``), ``plan.json`` (what went in) and
``finished.json`` (the outcome; absent while running or after a crash).

Training data
  Corrected slices with at least one reviewed voxel are labeled data; unreviewed voxels are
  ignored by the loss. Slices with no reviewed voxel are only used as unlabeled images, as are
  the unlabeled scans (normalised with the project's normalization). When there is no
  unlabeled image at all, the training corrections' images double as the unlabeled pool.
  The project's prior data (the labeled volumes its base model was trained on, see
  ``cgs_engine.project.prior``) are labeled data too, so the model rehearses what it knew instead of
  forgetting it; corrections are drawn more often (``correction_share`` of the labeled draws,
  at least their natural share), so a few of them are not drowned by the prior data.

Recipe
  The active model's own objective settings (``INHERITED_SETTINGS``: foreground
  oversampling, lambda, tau, gates...) are kept; ``RETRAIN_DEFAULTS`` make it a warm start:
  AdamW at lr 1e-3 with a linear warm-up, batch 8 + 8, BatchNorm statistics kept, an EMA
  teacher that starts as the active model and follows it at decay 0.99 (the kept model),
  pseudo-labels for the unlabeled terms made by the active model itself, frozen
  (``pseudo_labeler`` "initial"), and at most 600 iterations whatever the time budget
  (``max_iterations``). The thorough mode trains as many steps as the model's first training,
  with pseudo-labels from the teacher and BatchNorm statistics that follow the new data.
  Project settings["train"] override both. (Why these values, and why a small learning rate is
  no longer needed: README, "Why fine-tuning lost organs": the Dice loss over classes absent
  from a batch, now left out.)

Held-out rule (held-out data go to split "val" and are never trained on, not even unlabeled)
  * 3 or more corrected volumes: whole volumes, ``heldout_fraction`` of them (default 1 in 4),
    at least 1 and never all. The volumes whose names hash lowest are chosen, so the held-out
    set is stable as corrections are added and no model is compared on data it trained on.
  * 1 or 2 volumes: a contiguous block of ``heldout_fraction`` of each volume's reviewed
    slices (at least 1, only from volumes with 2+ reviewed slices): the block holding the most
    organ voxels the user drew or corrected, else the top block. The reviewed slices right
    next to it do not train (near copies on thin slices), unless nothing else would.
  * the prior data's validation cases, when it has any.
  A held-out correction judges on all its reviewed voxels: those the user drew or corrected
  (EDITED) and those the user accepted as the model drew them (ACCEPTED). Both are the user's
  word on the truth, and both models can get them right. (Judging on EDITED voxels alone, as
  before, scored the active model on exactly the voxels it had got wrong: after a few strokes
  every version, good or bad, was rejected at "held-out Dice 0.0".) The held-out block is the one
  holding most of the user's edits, so the part judges where the models can differ. The training
  loop's validation scores the same voxels, so the held-out Dice shown during training is the
  figure the rule compares.

Activation rule
  The new model and the active model are both scored on the held-out data (mean foreground
  Dice over classes, per held-out part, then averaged). The new version is activated when new
  >= active - tolerance (project setting ``activation_tolerance``, default 0); otherwise it is
  kept as "rejected" with the reason. Without held-out data it is kept as "unverified" and not
  activated, except for the first model of a project (there is nothing to regress from). The
  kept model is the EMA teacher at the end of training (project setting ``retrain_keep``
  "final"), which nothing was chosen on, so the comparison is fair. ``retrain_keep`` "best"
  keeps the training loop's best on the held-out data instead; that data then judges its own
  choice, and the rule is optimistic (bench/retrain_from_default.py: 10 of 10 such versions
  activated, 5 of them worse on new patients).

Cancel (``should_stop``) stops training; the EMA teacher at that point (with "best": the best
checkpoint so far) is evaluated and kept as a version under the same activation rule, and the
run is finished. Cancelling before the first step keeps nothing.

Under torchrun every rank runs ``cgs retrain``: rank 0 alone takes the project lock, builds the
store, decides activation and writes versions; it shares the run folder and the settings with the
other ranks, which join the data-parallel training and then exit.

Resume: a run killed or failed mid-training (``train/state.pt``, no version) continues with
``resume=True`` from its last saved state. A failure with a Python error marks the run failed.
"""

from __future__ import annotations

from cgs_engine.retrain.run import RetrainResult, retrain
from cgs_engine.retrain.scoring import HeldoutScore

__all__ = ["HeldoutScore", "RetrainResult", "retrain"]
