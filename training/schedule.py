"""The schedule of a run, as pure functions of its settings and its state.

Keras's own callbacks keep their counters in memory, so a stopped run would forget them;
here every counter lives in ``RunState`` (saved after each epoch), and each rule is one
function: the learning rate of the next epoch (cosine, or plateau as it stands), what an
epoch's validation figures change (best epoch, plateau drop), and whether the run stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from training.run_folder import RunState
from training.settings import TrainSettings

# A validation loss must beat the best by this much to count as better.
MIN_LOSS_IMPROVEMENT = 1e-4


def cosine_learning_rate(settings: TrainSettings, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` on a half cosine from the initial to the minimum."""
    progress = min(epoch / max(settings.epochs - 1, 1), 1.0)
    low, high = settings.min_learning_rate, settings.learning_rate
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def learning_rate_for(settings: TrainSettings, state: RunState, epoch: int) -> float:
    """The rate 0-based ``epoch`` trains at: the cosine's, or the plateau schedule's current one."""
    return cosine_learning_rate(settings, epoch) if settings.schedule == "cosine" else state.learning_rate


def record_validation(state: RunState, epoch: int, val_loss: float, val_accuracy: float) -> bool:
    """Counts 0-based ``epoch`` as finished with these figures; True when its accuracy is
    the best so far (the epoch whose checkpoint is kept)."""
    state.epoch = epoch + 1
    best = val_accuracy > state.best_val_accuracy
    if best:
        state.best_val_accuracy, state.best_epoch = val_accuracy, epoch + 1
    if val_loss < state.best_val_loss - MIN_LOSS_IMPROVEMENT:
        state.best_val_loss, state.lr_wait, state.stop_wait = val_loss, 0, 0
    else:
        state.lr_wait += 1
        state.stop_wait += 1
    return best


def plateau_drop(settings: TrainSettings, state: RunState) -> bool:
    """The plateau schedule: after ``lr_patience`` epochs without a better validation loss,
    the rate is multiplied by ``lr_factor`` (not below the minimum). True when it dropped."""
    if (
        settings.schedule != "plateau"
        or state.lr_wait < settings.lr_patience
        or state.learning_rate <= settings.min_learning_rate * 1.0001
    ):
        return False
    state.learning_rate = max(state.learning_rate * settings.lr_factor, settings.min_learning_rate)
    state.lr_wait = 0
    return True


def stop_if_done(settings: TrainSettings, state: RunState) -> bool:
    """Early stopping after ``stop_patience`` epochs without a better validation loss, or the
    last epoch reached: marks the state finished with the reason. True on an early stop."""
    if state.stop_wait >= settings.stop_patience:
        state.finished = True
        state.stop_reason = f"early stopping: no better validation loss for {settings.stop_patience} epochs"
        return True
    if state.epoch >= settings.epochs:
        finish(settings, state)
    return False


def finish(settings: TrainSettings, state: RunState) -> None:
    state.finished, state.stop_reason = True, f"reached the maximum of {settings.epochs} epochs"


@dataclass(frozen=True)
class EpochOutcome:
    best: bool  # best validation accuracy so far: keep this epoch's checkpoint
    learning_rate_dropped: bool
    early_stop: bool


def end_of_epoch(
    settings: TrainSettings, state: RunState, epoch: int, val_loss: float, val_accuracy: float
) -> EpochOutcome:
    """Every rule, in order, after 0-based ``epoch``."""
    best = record_validation(state, epoch, val_loss, val_accuracy)
    dropped = plateau_drop(settings, state)
    return EpochOutcome(best, dropped, stop_if_done(settings, state))
