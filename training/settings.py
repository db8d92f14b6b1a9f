"""The settings of a training run, importable without TensorFlow (so ``--help`` works in
the base install)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from training.augment import Augmentation

CLASS_WEIGHT_MODES = ("none", "balanced", "sqrt")
SCHEDULES = ("plateau", "cosine")
ARCHITECTURE_NAMES = ("mini_xception", "vgg")


@dataclass(frozen=True)
class TrainSettings:
    data: str
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    seed: int = 1337
    class_weights: str = "none"
    l2: float = 0.01
    lr_patience: int = 6
    lr_factor: float = 0.1
    min_learning_rate: float = 1e-6
    stop_patience: int = 15
    augmentation: dict[str, Any] = field(default_factory=lambda: asdict(Augmentation()))
    max_train_faces: int = 0  # 0: all; a small number makes a quick run for tests
    # "plateau": drop the learning rate when validation loss stalls (the thesis's schedule).
    # "cosine": anneal it from learning_rate to min_learning_rate over `epochs`, for a
    # second stage that starts from a converged checkpoint (`init_from`).
    schedule: str = "plateau"
    init_from: str = ""  # a .keras checkpoint to start from instead of random weights
    keep_epoch_weights: bool = False  # weights of every epoch, for averaging them afterwards
    # Distillation: a trained .keras model whose probabilities (averaged over
    # `teacher_views`, softened by `distill_temperature`) are mixed into each training
    # target with weight `distill_weight`; the rest stays the one-hot label.
    teacher: str = ""
    teacher_views: str = "mirror-shift"
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    # "mini_xception" (the shipped model) or "vgg" (a larger teacher for distillation).
    architecture: str = "mini_xception"

    # Settings that may change when a run resumes: they do not alter the schedule.
    RESUMABLE_CHANGES = ("data", "epochs")
