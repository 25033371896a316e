"""The retrain recipe: the training settings a retrain starts from, and what it inherits.

See the package docstring (``cgs_engine.retrain``) for why these values.
"""

from __future__ import annotations

from typing import Any

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.project.project import Project
from cgs_engine.train.config import TrainConfig

# The quick retrain (minutes after a day's corrections); project settings["train"] and the
# ``settings`` argument override. Chosen on ACDC's dev patients (bench/retrain_loop_acdc.py, k = 3,
# fold 0; base dev Dice 71.9): batch 4+4, lr 1e-4, 300 steps, teacher 0.999 (the recipe until now,
# which hardly moved the model) 72.5; batch 8+8, 600 steps, teacher 0.99 with lr 3e-4 80.5, lr 1e-3
# 80.8, lr 1e-3 with pseudo-labels from the EMA teacher 80.5. Batch 4+4 was only safe because
# the model barely moved: the Dice loss then made small organs vanish (cgs_engine.method.losses,
# bench/finetune_drift.py), and the base models train at 8+8.
RETRAIN_DEFAULTS: dict[str, Any] = {
    "method": "cgs",
    "optimizer": "adamw",
    "lr": 1e-3,
    "warmup_fraction": 0.1,
    "ema_warmup": False,
    "freeze_batchnorm": True,
    "batch_labeled": 8,
    "batch_unlabeled": 8,
    "gate_tau": 0.95,  # trust only confident pseudo-labels (see TrainConfig.gate_tau)
    # The kept teacher averages the last ~100 steps: a steadier model than the last student, and
    # unlike the 0.999 used before (74 % of its weights still the start model's after 300 steps)
    # it ends where the training went.
    "ema_decay": 0.99,
    # A longer budget still stops here (about 5 minutes on 2 cores at 128 px); --thorough trains
    # as long as the model was first trained.
    "max_iterations": 600,
    "val_every": 100,
}
# Even at 0.999 the teacher had followed the student after 2,500 steps and the drift came back
# (k = 1: Larynx -18 and -9 on new patients): when there is an active model, the pseudo-labels
# come from it, frozen (distillation), while the EMA teacher averages the student for keeping.
FINE_TUNING_DEFAULTS: dict[str, Any] = {"pseudo_labeler": "initial"}
# Taken from the active model's own training settings when it has them: fine-tuning keeps the
# objective and sampling the model learnt with (the bundled model: foreground oversampling 0.5).
INHERITED_SETTINGS = (
    "foreground_fraction",
    "lambda_max",
    "ramp_fraction",
    "tau",
    "gate_tau",
    "fused_rule",
    "dice_masked",
    "ce_normalise",
    "teacher_mode",
    "student_pass",
    # which classes are left/right twins: a user's explicit pairs must outlive the first retrain
    "mirror",
    "lateral_pairs",
)
# The thorough mode (``retrain(thorough=True)``, ``cgs retrain --thorough``), on top of the above:
# as many steps as the active model's first training (``trained_steps``; at most thorough_minutes),
# with pseudo-labels from the EMA teacher, as CGS trains, so the unlabeled scans teach more than
# the start model knew, and BatchNorm statistics that follow the new data. Kept frozen, they stay
# those of the first training's few patients for all of its 3,000 steps: on ACDC's dev patients
# (bench/retrain_loop_acdc.py, k = 1 / 3 / 5, folds 0 / 0 / 1) frozen 80.54 / 82.38 / 84.14,
# trained 81.49 / 83.68 / 85.02; with lr 2e-3 as well 83.25 at k = 3 (not taken).
THOROUGH_DEFAULTS: dict[str, Any] = {"pseudo_labeler": "ema", "val_every": 250, "freeze_batchnorm": False}
THOROUGH_STEPS_WITHOUT_RECORD = 3000


def train_config(project: Project, active, minutes, iterations, settings, thorough=False) -> TrainConfig:
    values = dict(RETRAIN_DEFAULTS)
    checkpoint = None if active is None else load_checkpoint(active.model_path)
    if checkpoint is not None:  # keep the objective the model was trained with
        recipe = checkpoint.train_config or {}
        values.update({key: recipe[key] for key in INHERITED_SETTINGS if key in recipe})
        values.update(FINE_TUNING_DEFAULTS)
    if thorough:
        values.update(THOROUGH_DEFAULTS)
        values["max_iterations"] = first_training_steps(project) or THOROUGH_STEPS_WITHOUT_RECORD
    values.update({**project.settings["train"], **(settings or {})})
    values.update(minutes=minutes, iterations=iterations)
    if checkpoint is not None:  # the active model's architecture and input size win
        values.update(
            init_checkpoint=str(active.model_path.resolve()),
            input_size=checkpoint.input_size,
            widths=list(checkpoint.model_config.widths),
            dropouts=list(checkpoint.model_config.dropouts),
        )
    return TrainConfig.from_dict(values, source="retrain settings")


def first_training_steps(project: Project) -> int | None:
    """Steps of the first training behind the project's models: its imported (not retrained) version."""
    imported = [v for v in project.versions() if v.origin != "retrained"]
    return trained_steps(load_checkpoint(imported[0].model_path)) if imported else None


def trained_steps(checkpoint) -> int | None:
    """How many steps a model's first training ran (from its recipe and training record), if known."""
    recipe = checkpoint.train_config or {}
    metrics = checkpoint.metrics or {}
    steps = [recipe.get("iterations"), metrics.get("steps"), (metrics.get("best") or {}).get("step")]
    steps += [entry.get("step") for entry in metrics.get("history") or [] if isinstance(entry, dict)]
    known = [int(value) for value in steps if isinstance(value, (int, float)) and value > 0]
    return max(known) if known else None
