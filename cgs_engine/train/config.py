"""The one typed training configuration; the run directory records it resolved as JSON."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cgs_engine.classes import MIRROR_MODES, MirrorPlan, mirror_plan
from cgs_engine.errors import CGSError
from cgs_engine.method.objective import METHODS, ObjectiveConfig
from cgs_engine.runtime import DEVICES, PRECISIONS

REFERENCE_ITERATIONS = 30_000
TEACHER_MODES = ("eval", "train")
PSEUDO_LABELERS = ("ema", "initial")
OPTIMIZERS = ("sgd", "adamw")


class ConfigError(CGSError):
    """A training setting that cannot be used; one line."""


@dataclass
class TrainConfig:
    """Every knob of a training run. Defaults follow the reference unless a comment says why not."""

    method: str = "cgs"
    iterations: int | None = None  # None: from `minutes`, or the reference's 30,000
    minutes: float | None = None  # wall-time budget; fixes `iterations` after a short calibration
    # With `minutes`: also stop after this many iterations, whichever comes first (the schedule
    # follows the nearer end). Fine-tuning a trained model on a few volumes wants few steps.
    max_iterations: int | None = None
    input_size: int = 256
    batch_labeled: int = 12
    batch_unlabeled: int = 12
    foreground_fraction: float = 0.0  # share of labeled picks forced onto slices with an organ (reference 0)
    optimizer: str = "sgd"  # reference; "adamw" converges in far fewer steps for short fine-tuning
    lr: float = 0.01
    lr_scaling: str = "none"  # under torchrun: "linear" multiplies lr by the number of ranks
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    # Fine-tuning a trained model (init_checkpoint) wants a gentler start than training from
    # scratch: a linear LR warm-up over this share of the run before the poly decay (0 = none,
    # the reference), ...
    warmup_fraction: float = 0.0
    lambda_max: float = 0.1  # reference; the paper summary says 2.0
    ramp_fraction: float = 1.0  # lambda ramps over this fraction of the run (reference: whole run)
    # Not in the reference: the unlabeled terms are computed only once lambda(t) has reached this
    # share of lambda_max (0 = from the first step, the reference). Before that the steps are
    # supervised only: a term weighted at a few percent costs a whole teacher pass and half the
    # student pass, and teaches almost nothing (a ramp over the whole run spends its first 23 %
    # under 5 % of lambda_max; on SegTHOR a full CGS step costs 2.5 supervised-only ones).
    unlabeled_start: float = 0.0
    tau: float = 0.95  # reference; the paper summary says 0.9
    # Not in the reference: also require teacher confidence > gate_tau on the IHED and consensus
    # masks (0 = off, the reference). Stops untrained heads' "all background" from being trusted.
    gate_tau: float = 0.0
    dice_masked: bool = True  # False reproduces the reference defect (masks ignored by Dice)
    # Classes absent from a batch: "skip" leaves them out of the Dice mean (see method.losses: their
    # Dice gradient shrank small organs); "include" is the reference.
    dice_absent: str = "skip"
    ce_normalise: str = "kept"  # "all" reproduces the reference (divide by all pixels)
    fused_rule: str = "implied"  # "reference": argmax over [mean bg, p_1(mine) .. p_K(mine)]
    teacher_mode: str = "eval"  # "train" reproduces the reference (dropout on, batch BN stats)
    # Who makes the pseudo-labels: "ema" the EMA teacher (the method), or "initial" the model the
    # run started from, frozen (fine-tuning only): distillation from the active model, which
    # cannot drift with the student. The EMA teacher is still what is validated and kept.
    pseudo_labeler: str = "ema"
    ema_decay: float = 0.99
    # ... an EMA teacher that starts as the initial model and moves at ``ema_decay`` from the first
    # step (False) instead of averaging over the steps so far, which makes it follow the early
    # student closely (True, the reference) ...
    ema_warmup: bool = True
    # ... and BatchNorm layers of the student kept in eval mode (False = reference): their running
    # statistics stay those of the initial model instead of drifting to small-batch statistics;
    # their scale and shift still train.
    freeze_batchnorm: bool = False
    # Mirror images in the weak view where classes form left/right pairs (cgs_engine.classes):
    # "swap" relabels the pair on mirrored samples, "off" draws no mirror, "keep" leaves the labels
    # (the reference, which teaches each parotid on both sides). Without pairs mirroring is as ever.
    mirror: str = "swap"
    lateral_pairs: Any = "auto"  # "auto" (from the class names) or [[right name, left name], ...]
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropouts: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
    seed: int = 0
    init_checkpoint: str | None = None  # fine-tune from this model (its architecture wins over widths)
    val_every: int = 200
    # Every this many steps also keep the teacher and the student as snapshots/teacher-STEP.pt and
    # snapshots/student-STEP.pt (0 = off): learning curves, e.g. how long a fine-tuning should run.
    snapshot_every: int = 0
    # ... or every this many minutes of the run (0 = off): learning curves against time
    # (bench/curves.py); each snapshot records its step, wall seconds and process CPU seconds.
    snapshot_minutes: float = 0.0
    val_max_volumes: int | None = None  # cap validation cost on large val sets
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    # Recompute full-resolution layers in backward: ~40 % less peak memory for ~10 % more time.
    # None = automatic: on from 192 px inputs, where activations dominate memory.
    save_memory: bool | None = None
    # "joint": one student forward over labeled + strong unlabeled views (the reference), so
    # BatchNorm normalises both with the same batch statistics. "split": two passes, each with its
    # own backward, ~half the activation memory, but BatchNorm statistics differ between the two
    # parts, which lets the student tell labeled batches from unlabeled ones: with a large
    # lambda_max it learnt "background on unlabeled batches" and its EMA teacher collapsed.
    student_pass: str = "joint"

    @property
    def saves_memory(self) -> bool:
        return self.save_memory if self.save_memory is not None else self.input_size >= 192

    threads: int = 0  # 0: every usable core

    def __post_init__(self) -> None:
        _check_types(self)
        self.widths = tuple(int(w) for w in self.widths)
        self.dropouts = tuple(float(d) for d in self.dropouts)
        checks = [
            (
                self.batch_labeled <= MAX_BATCH and self.batch_unlabeled <= MAX_BATCH,
                f"batch sizes must be at most {MAX_BATCH}",
            ),
            (self.input_size <= MAX_INPUT_SIZE, f"input_size must be at most {MAX_INPUT_SIZE}"),
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}"),
            (self.iterations is None or self.iterations > 0, "iterations must be positive"),
            (self.minutes is None or self.minutes > 0, "minutes must be positive"),
            (self.max_iterations is None or self.max_iterations > 0, "max_iterations must be positive"),
            (self.input_size >= 16, "input_size must be at least 16"),
            (self.batch_labeled > 0 and self.batch_unlabeled >= 0, "batch sizes must be positive"),
            (self.lr > 0, "lr must be positive"),
            (0 <= self.foreground_fraction <= 1, "foreground_fraction must be in [0, 1]"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.lr_scaling in ("none", "linear"), "lr_scaling must be none or linear"),
            (0 <= self.tau < 1, "tau must be in [0, 1)"),
            (0 < self.ramp_fraction <= 1, "ramp_fraction must be in (0, 1]"),
            (0 <= self.unlabeled_start < 1, "unlabeled_start must be in [0, 1)"),
            (0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)"),
            (self.teacher_mode in TEACHER_MODES, f"teacher_mode must be one of {TEACHER_MODES}"),
            (self.pseudo_labeler in PSEUDO_LABELERS, f"pseudo_labeler must be one of {PSEUDO_LABELERS}"),
            (
                self.pseudo_labeler == "ema" or bool(self.init_checkpoint),
                "pseudo_labeler initial needs init_checkpoint (a model to fine-tune)",
            ),
            (0 < self.ema_decay < 1, "ema_decay must be in (0, 1)"),
            (self.device in DEVICES, f"device must be one of {DEVICES}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.val_every > 0, "val_every must be positive"),
            (self.snapshot_every >= 0, "snapshot_every must be 0 (off) or positive"),
            (self.snapshot_minutes >= 0, "snapshot_minutes must be 0 (off) or positive"),
            (self.student_pass in ("joint", "split"), "student_pass must be joint or split"),
            (self.mirror in MIRROR_MODES, f"mirror must be one of {', '.join(MIRROR_MODES)}"),
            (_pairs_setting_ok(self.lateral_pairs), "lateral_pairs must be 'auto' or a list of [name, name]"),
            (len(self.widths) == len(self.dropouts), "widths and dropouts must have the same length"),
            # each below failed later with a traceback, or changed the method in silence: a negative
            # lambda_max switched the unlabeled terms off (CGS recorded, supervised trained), a
            # val_max_volumes of 0 validated on nothing, a poly_power < 0 raised the learning rate
            (
                self.iterations is None or self.minutes is None,
                "give iterations or minutes, not both (max_iterations caps a minutes budget)",
            ),
            (all(w >= 1 for w in self.widths), "widths must be whole numbers >= 1"),
            (all(0 <= d < 1 for d in self.dropouts), "dropouts must lie in [0, 1)"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be 0 or positive"),
            (self.poly_power >= 0, "poly_power must be 0 or positive"),
            (self.lambda_max >= 0, "lambda_max must be 0 or positive"),
            (0 <= self.seed < 2**63, "seed must be a whole number in [0, 2**63)"),
            (self.val_max_volumes is None or self.val_max_volumes > 0, "val_max_volumes must be positive"),
            (self.threads >= 0, "threads must be 0 (every usable core) or positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        divisor = 2 ** (len(self.widths) - 1)
        if self.input_size % divisor:
            raise ConfigError(
                f"input_size {self.input_size} must be a multiple of {divisor} for "
                f"a {len(self.widths)}-level UNet"
            )
        if self.method != "supervised" and self.batch_unlabeled == 0:
            raise ConfigError(f"method {self.method} needs batch_unlabeled > 0")
        try:
            self.objective()
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def mirror_policy(self, class_names: list[str]) -> tuple[bool, list[int] | None]:
        """(draw mirror images?, label table id -> id for mirrored samples or None) for these classes."""
        plan = self.mirror_plan(class_names)
        return plan.mirror, plan.table

    def mirror_plan(self, class_names: list[str]) -> MirrorPlan:
        """What mirror images do for these classes, with the line that says so at a run's start."""
        return mirror_plan(class_names, self.lateral_pairs, self.mirror)

    def objective(self) -> ObjectiveConfig:
        return ObjectiveConfig(
            method=self.method,
            tau=self.tau,
            dice_masked=self.dice_masked,
            ce_normalise=self.ce_normalise,
            fused_rule=self.fused_rule,
            gate_tau=self.gate_tau,
            dice_absent=self.dice_absent,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"], data["dropouts"] = list(self.widths), list(self.dropouts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except ConfigError as error:  # name the file (or the flags) the bad setting came from
            raise ConfigError(f"{source}: {error}") from None
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source}: a setting has the wrong type ({error})") from None

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Settings from a JSON file, then ``overrides`` (e.g. command-line flags) on top."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of settings")
        overrides = overrides or {}
        # one budget: --iterations over a file's minutes (the run followed wall time, its
        # recorded 20 iterations a fiction), --minutes over a file's iterations
        for flag, other in (("iterations", "minutes"), ("minutes", "iterations")):
            if overrides.get(flag) is not None:
                data.pop(other, None)
        return cls.from_dict({**data, **overrides}, source=str(path))


MAX_BATCH = 4096
MAX_INPUT_SIZE = 4096


def _check_types(config: TrainConfig) -> None:
    """Each setting has its declared type (a JSON file can hold anything): ``batch_labeled: 1e9``
    would otherwise reach the data loader as a float, and ``lr: "fast"`` the optimiser."""
    for item in fields(config):
        value, declared = getattr(config, item.name), str(item.type)
        if value is None and "None" in declared:
            continue
        base = declared.split("|")[0].strip()
        if base == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            wanted = "a whole number"
        elif base == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            wanted = "a finite number"
        elif base == "bool":
            ok, wanted = isinstance(value, bool), "true or false"
        elif base == "str":
            ok, wanted = isinstance(value, str), "a text"
        else:
            continue
        if not ok:
            raise ConfigError(f"{item.name} must be {wanted}, got {value!r}")


def _pairs_setting_ok(value: Any) -> bool:
    if value == "auto":
        return True
    return isinstance(value, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(n, str) for n in pair)
        for pair in value
    )
