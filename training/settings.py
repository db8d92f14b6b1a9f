"""The settings of a training run: one frozen dataclass, and the command line derived from it.

Each setting is written once, here: its name, default, valid values and help text. ``python
-m training`` offers every field as ``--field-name`` (``add_arguments``), so a new setting is
a new field and nothing else. Settings are checked when they are made, from the command line
or from a run's settings.json, as the daemon checks its config: a wrong type or a value out of
range is a SettingsError naming the setting (``epochs: must be at least 1, got -1``).
Importable without TensorFlow (``--help`` works in the base install).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from edge.config import allowed, field_problems
from edge.contract import FACE_NORMALIZATIONS, VIEW_SETS
from edge.tools.datasets import SPLIT_SEED, VALIDATION_FRACTION
from training.augment import Augmentation

CLASS_WEIGHT_MODES = ("none", "balanced", "sqrt")
SCHEDULES = ("plateau", "cosine")
# What `--architecture` may name, with its default L2 weight. The shipped model is always
# the mini-Xception; "vgg" is a larger teacher for distillation.
DEFAULT_L2 = {"mini_xception": 0.01, "vgg": 1e-4}
ARCHITECTURE_NAMES = tuple(DEFAULT_L2)


class TrainingError(Exception):
    """A run that cannot start or go on, said in one line."""


class SettingsError(TrainingError):
    """Settings with a wrong type or a value out of range, each named, in one line."""


def _setting(
    default: Any = MISSING,
    help: str = "",
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple | None = None,
    **cli: Any,
) -> Any:
    """A field with its help text, its valid values (``lo``, ``hi``, ``choices``: as the
    daemon's config says them, edge.config.allowed) and its command-line options
    (``type``, ``hidden``) in its metadata."""
    return field(default=default, metadata={"help": help, **allowed(lo, hi, choices), **cli})


@dataclass(frozen=True)
class TrainSettings:
    data: str = _setting(help="fer2013.csv[.gz] or a folder with train/<emotion>/ and test/<emotion>/")
    epochs: int = _setting(200, "maximum epochs; early stopping usually ends sooner", lo=1, hi=100_000)
    batch_size: int = _setting(64, "faces per step", lo=1, hi=65_536)
    learning_rate: float = _setting(
        1e-3, "Adam's learning rate at the start (the cosine schedule's highest)", lo=1e-9, hi=10.0
    )
    validation_fraction: float = _setting(
        VALIDATION_FRACTION,
        "share of Training held out (stratified) to pick the checkpoint and drive the schedule",
        lo=0.01,
        hi=0.9,
    )
    seed: int = _setting(
        SPLIT_SEED,
        "seed of the validation split and, unless --init-seed is given, of the initial "
        "weights and each epoch's shuffle and augmentation",
        lo=0,
        hi=2**32 - 1,
    )
    init_seed: int | None = _setting(
        None,
        "seed of the initial weights and each epoch's shuffle and augmentation, drawn from "
        "(init seed, epoch) (default: --seed): an independently seeded network on the same "
        "validation split, e.g. a second teacher for an ensemble",
        lo=0,
        hi=2**32 - 1,
        type=int,
    )
    class_weights: str = _setting(
        "none",
        "weigh rare classes (disgust) up: 'balanced' = inverse frequency, 'sqrt' = its square root",
        choices=CLASS_WEIGHT_MODES,
    )
    l2: float | None = _setting(
        None,
        "L2 weight on the convolutions (default: "
        + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_L2.items())
        + ")",
        lo=0.0,
        hi=1.0,
        type=float,
    )
    lr_patience: int = _setting(
        6,
        "plateau schedule: epochs without a better validation loss before the learning rate drops",
        lo=1,
        hi=100_000,
    )
    lr_factor: float = _setting(
        0.1, "plateau schedule: the learning rate is multiplied by this at each drop", lo=1e-6, hi=1.0
    )
    min_learning_rate: float = _setting(
        1e-6, "the plateau schedule's floor; where the cosine schedule ends", lo=0.0, hi=10.0
    )
    stop_patience: int = _setting(
        15, "stop after this many epochs without a better validation loss", lo=1, hi=100_000
    )
    augmentation: dict[str, Any] = field(
        default_factory=lambda: asdict(Augmentation()),
        metadata={
            "help": "JSON object overriding augmentation fields, e.g. "
            '\'{"erasing_probability": 0.5, "brightness": 0.2}\' (fields and defaults: '
            + ", ".join(f"{k} {v}" for k, v in asdict(Augmentation()).items())
            + ")",
            "type": "json",
        },
    )
    max_train_faces: int = _setting(0, "train on the first N training faces only (0: all)", lo=0, hidden=True)
    schedule: str = _setting(
        "plateau",
        "plateau: drop the rate when validation loss stalls (the thesis's); "
        "cosine: anneal it from --learning-rate to --min-learning-rate over --epochs, "
        "for a second stage that starts from a converged checkpoint",
        choices=SCHEDULES,
    )
    init_from: str = _setting(
        "", "start from this .keras checkpoint instead of random weights (a second stage)"
    )
    keep_epoch_weights: bool = _setting(
        False, "save every epoch's weights under RUN/epochs/ (for averaging them afterwards)"
    )
    # Distillation: the teacher's probabilities (averaged over `teacher_views`, softened by
    # `distill_temperature`) are mixed into each training target with weight
    # `distill_weight`; the rest stays the one-hot label.
    teacher: str = _setting(
        "",
        "distil from this trained .keras model, or from the mean of several given "
        "comma-separated (an ensemble): its probabilities on each training face are "
        "mixed into the target",
    )
    teacher_views: str = _setting(
        "mirror-shift",
        "test-time views the teacher's probabilities are averaged over",
        choices=tuple(VIEW_SETS),
    )
    distill_weight: float = _setting(
        0.5, "share of the target that is the teacher's distribution (the rest is the label)", lo=0.0, hi=1.0
    )
    distill_temperature: float = _setting(
        2.0, "softens the teacher's distribution (1: as it is)", lo=0.01, hi=100.0
    )
    teacher_augmented_epochs: int = _setting(
        0,
        "the teacher judges the faces of the first N augmented epochs, each face as the student "
        "sees it, and the student cycles through those N epochs (reshuffled each time); 0: the "
        "teacher judges each face once, unaugmented, whatever augmentation the student then gets",
        lo=0,
        hi=10_000,
    )
    architecture: str = _setting(
        "mini_xception",
        "mini_xception: the shipped model; vgg: a larger teacher to distil from",
        choices=ARCHITECTURE_NAMES,
    )
    width: float = _setting(
        1.0,
        "mini_xception only: filters per block multiplied by this; 1 is the thesis's network "
        "(58,423 parameters), 2 twice the filters (about 4x the parameters and compute)",
        lo=0.25,
        hi=4.0,
    )
    face_normalization: str = _setting(
        "none",
        "what is done to each face before the model sees it, in training and, through the "
        "model contract, everywhere else: none, or equalize (histogram equalization, which "
        "FER2013's faces already nearly have and camera crops do not)",
        choices=FACE_NORMALIZATIONS,
    )

    # Settings that may change when a run resumes: they do not alter the schedule.
    RESUMABLE_CHANGES = ("data", "epochs")

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teacher models (several: an ensemble, their probabilities averaged)."""
        return model_list(self.teacher)

    def __post_init__(self) -> None:
        problems = field_problems(self)
        if problems:
            raise SettingsError("; ".join(problems))
        if self.width != 1.0 and self.architecture != "mini_xception":
            raise TrainingError(f"--width {self.width}: only the mini_xception has a width multiplier")
        if self.l2 is None:
            object.__setattr__(self, "l2", DEFAULT_L2[self.architecture])
        if self.teacher.strip() and not self.teachers:
            raise TrainingError(f"--teacher {self.teacher!r} names no model")
        if self.teacher_augmented_epochs and not self.teachers:
            raise TrainingError(
                f"--teacher-augmented-epochs {self.teacher_augmented_epochs}: more than 0 only with --teacher"
            )
        if self.init_seed is None:  # as runs before the setting: one seed for everything
            object.__setattr__(self, "init_seed", self.seed)
        # Augmentation fields not given keep their defaults, so a run's settings.json is complete.
        object.__setattr__(self, "augmentation", augmentation_fields(self.augmentation))

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainSettings:
        """Settings as saved in a run's settings.json; keys added since take their defaults."""
        unknown = set(saved) - {s.name for s in fields(cls)}
        if unknown:
            raise TrainingError(f"settings {sorted(unknown)} are unknown to this version of training/")
        return cls(**saved)


def model_list(text: str) -> tuple[str, ...]:
    """The models an option names: one path, or several comma-separated (an ensemble)."""
    return tuple(path.strip() for path in text.split(",") if path.strip())


def augmentation_fields(overrides: dict[str, Any]) -> dict[str, Any]:
    """Every augmentation field: the defaults, overridden by ``overrides`` (unknown names refused)."""
    defaults = asdict(Augmentation())
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TrainingError(f"--augmentation: unknown fields {sorted(unknown)}")
    return {**defaults, **overrides}


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err})") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    try:
        augmentation_fields(value)
    except TrainingError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--augmentation: ")) from err
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` option per setting. Options not given are absent from the parsed
    namespace, so the dataclass alone decides every default."""
    for setting in fields(TrainSettings):
        meta = setting.metadata
        default = setting.default if setting.default_factory is MISSING else setting.default_factory()
        help_text = meta["help"]
        if default not in (MISSING, None, "", False) and setting.name != "augmentation":
            help_text += f" (default: {default})"
        help_text = argparse.SUPPRESS if meta.get("hidden") else help_text.replace("%", "%%")
        options: dict[str, Any] = {"help": help_text}
        if default is MISSING:
            options["required"] = True
        else:
            options["default"] = argparse.SUPPRESS
        kind = meta.get("type", str if default is MISSING else type(default))
        if kind is bool:
            options["action"] = "store_true"
        else:
            options["type"] = _json_object if kind == "json" else kind
            if meta.get("choices"):
                options["choices"] = meta["choices"]
        parser.add_argument("--" + setting.name.replace("_", "-"), **options)


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The settings the parsed command line gives (``add_arguments``)."""
    given = {s.name: getattr(args, s.name) for s in fields(TrainSettings) if hasattr(args, s.name)}
    return TrainSettings(**given)
