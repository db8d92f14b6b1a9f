"""A training run's folder: its settings, state, checkpoints and caches, and resuming it.

    settings.json               the settings it was started with; a resume must not change them
    state.json                  epoch reached, learning rate, plateau and early-stopping counters
    last.keras                  weights and optimizer state after the last finished epoch
    best.keras                  the checkpoint with the best validation accuracy so far
    log.csv                     one row per epoch
    report.json                 validation and PublicTest figures of best.keras, when the run ends
    training-faces.npz          the parsed Training faces (parsing the CSV costs ~20 s)
    teacher-probabilities.npy   the teacher's targets, when distilling (per judged epoch)
    epochs/                     every epoch's weights, with --keep-epoch-weights
    averaged.keras, .json       python -m training.average's model and its figures

Every .keras file a run saves also carries the run's settings.json as its zip archive's
comment (which Keras does not read), so a checkpoint copied out of its folder, or into
another run's, still says how it was trained.

Every other module reads and writes a run through ``RunFolder``, never by file name.
Importable without TensorFlow: models are saved through their own methods.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.contract import file_sha256
from edge.tools.datasets import FaceSet, load_fer2013
from training.settings import SettingsError, TrainingError, TrainSettings

_LOGGER = logging.getLogger(__name__)


@dataclass
class RunState:
    epoch: int = 0  # epochs finished
    learning_rate: float = 1e-3
    best_val_loss: float = float("inf")
    best_val_accuracy: float = -1.0
    best_epoch: int = -1
    lr_wait: int = 0
    stop_wait: int = 0
    finished: bool = False
    stop_reason: str = ""
    seconds: float = 0.0

    def is_over(self, settings: TrainSettings) -> bool:
        """True when the run ended and these settings give it nothing more to do (a run that
        reached its epochs may go on when ``--epochs`` grows; an early stop is final)."""
        return self.finished and (self.epoch >= settings.epochs or "early" in self.stop_reason)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.keras"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "best.keras"

    @property
    def averaged_checkpoint(self) -> Path:
        return self.path / "averaged.keras"

    @property
    def log_csv(self) -> Path:
        return self.path / "log.csv"

    # -- settings and state -------------------------------------------------------------

    def settings(self) -> TrainSettings:
        """The settings the run was started with (last resumed with)."""
        saved = _read_json(self.path / "settings.json")
        if saved is None:
            raise TrainingError(f"{self.path} is not a training run (no settings.json)")
        try:
            return TrainSettings.from_dict(saved)
        except SettingsError as err:  # edited by hand, or written by another version
            raise SettingsError(f"{self.path / 'settings.json'}: {err}") from None

    def state(self) -> RunState | None:
        saved = _read_json(self.path / "state.json")
        return None if saved is None else RunState(**saved)

    def save_state(self, state: RunState) -> None:
        _write_json(self.path / "state.json", asdict(state))

    def start(self, settings: TrainSettings) -> RunState:
        """Opens the run for ``settings``: a new folder records them; an existing one must have
        been started with the same schedule (only ``RESUMABLE_CHANGES`` may differ) and gives
        back its state. Raises TrainingError naming what differs."""
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / "settings.json"
        saved = _read_json(path)
        previous = None if saved is None else asdict(TrainSettings.from_dict(saved))
        if previous is not None:
            changed = {
                key: (previous[key], value)
                for key, value in asdict(settings).items()
                if key not in TrainSettings.RESUMABLE_CHANGES and previous[key] != value
            }
            if changed:
                details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
                raise TrainingError(
                    f"{self.path} was started with other settings ({details}); use a new run folder"
                )
        # Rewritten only when a resumable setting changed: a run started by an earlier version
        # keeps its file as it is (settings added since read back as their defaults).
        if previous != asdict(settings):
            _write_json(path, asdict(settings))
        return self.state() or RunState(learning_rate=settings.learning_rate)

    # -- checkpoints ----------------------------------------------------------------------

    def save_model(self, model: Any, path: Path) -> None:
        """Saves a Keras model whole or not at all (a kill mid-save leaves the old file), with
        the run's settings inside it: a copy taken out of the run folder still names its
        validation split, face normalization and the models it learned from."""
        save_with_settings(model, path, (self.path / "settings.json").read_bytes())

    def save_epoch_weights(self, model: Any, epoch: int) -> None:
        """The weights after 1-based ``epoch``, for averaging the last epochs afterwards."""
        folder = self.path / "epochs"
        folder.mkdir(exist_ok=True)
        model.save_weights(folder / f"epoch-{epoch:03d}.weights.h5")

    def epoch_weights(self) -> list[Path]:
        """Every kept epoch's weights, oldest first."""
        return sorted((self.path / "epochs").glob("epoch-*.weights.h5"))

    # -- caches ---------------------------------------------------------------------------

    def training_faces(self, data: str) -> FaceSet:
        """FER2013's Training faces, parsed once per run; a resumed run reads its own copy."""
        cache = self.path / "training-faces.npz"
        if cache.exists():
            with np.load(cache) as saved:
                return FaceSet(saved["images"], saved["labels"], str(saved["source"]))
        faces = load_fer2013(data, "Training")
        np.savez(cache, images=faces.images, labels=faces.labels, source=faces.source)
        return faces

    def teacher_probabilities(self, faces: int, classes: int) -> np.ndarray | None:
        """The cached teacher targets, if they are ``faces`` x ``classes`` (judged once) or
        epochs x ``faces`` x ``classes`` (judged on augmented epochs)."""
        cache = self.path / "teacher-probabilities.npy"
        if cache.exists():
            saved = np.load(cache)
            if saved.ndim in (2, 3) and saved.shape[-2:] == (faces, classes):
                return saved
        return None

    def save_teacher_probabilities(self, probabilities: np.ndarray) -> None:
        """Whole or not at all: a run stopped while the teacher judges resumes from the file."""
        tmp = self.path / "teacher-probabilities.tmp.npy"
        np.save(tmp, probabilities)
        os.replace(tmp, self.path / "teacher-probabilities.npy")

    # -- results --------------------------------------------------------------------------

    def save_report(self, report: dict[str, Any]) -> None:
        _write_json(self.path / "report.json", report)

    def save_averaging(self, model: Any, summary: dict[str, Any]) -> None:
        self.save_model(model, self.averaged_checkpoint)
        (self.path / "averaged.json").write_text(json.dumps(summary, indent=2) + "\n")

    def averaging(self) -> dict[str, Any] | None:
        """What ``python -m training.average`` wrote about averaged.keras, if it ran."""
        return _read_json(self.path / "averaged.json")


def save_with_settings(model: Any, path: Path, settings: bytes) -> None:
    """Saves a Keras model whole or not at all (a kill mid-save leaves the old file), with the
    settings (JSON) of the run that trained it as the archive's comment."""
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    # The archive's comment, not a member: Keras unpacks an archive with extra members
    # to a temporary folder on every load.
    with zipfile.ZipFile(tmp, "a") as archive:
        archive.comment = settings
    os.replace(tmp, path)


def face_normalization_of(model_path: str | Path) -> str | None:
    """The ``face_normalization`` a .keras model was trained with, from its run's settings
    (``settings_of_model``); None for a model no run saved (nothing says)."""
    settings = settings_of_model(model_path)
    return None if settings is None else settings.face_normalization


def check_models_it_learns_from(settings: TrainSettings, run: RunFolder) -> None:
    """Before a run opens its folder: each teacher and the ``--init-from`` checkpoint exists
    (a resumed run may have lost them: its teacher targets are cached, its start is behind it)
    and held out this run's validation split, as did every model they learned from in turn."""
    starting = run.state() is None
    kinds = {"--teacher": "model", "--init-from": "checkpoint"}
    checked: set[Path] = set()  # shared: a lineage met twice is read and warned of once
    for option, path in models_learned_from(settings):
        if Path(path).is_file():
            check_same_validation_split(path, settings, option, checked)
        elif starting:
            raise TrainingError(f"{option} {path}: no such {kinds[option]}")


def models_learned_from(settings: TrainSettings) -> list[tuple[str, str]]:
    """(option, path) of each teacher and of the checkpoint a run started from."""
    teachers = [("--teacher", path) for path in settings.teachers]
    return teachers + ([("--init-from", settings.init_from)] if settings.init_from else [])


def check_same_validation_split(
    model_path: str | Path, settings: TrainSettings, option: str, checked: set[Path], whose: str = "this run"
) -> None:
    """Refuses a model (a teacher, a checkpoint to start from) whose run held out another
    validation split than ``settings`` (another fraction or seed), or that learned from such a
    model, back through the runs it descends from: it has trained on this run's validation
    faces, or learned them from a model that did, and this run's selection would no longer be
    honest. Warns where it cannot tell: a model no run saved, data that are gone or
    that differ from this run's (another file may hold the same faces). ``checked``: models
    already checked (skipped), added to as it goes; ``whose`` names ``settings`` in messages."""
    pending = [(str(model_path), f"{option} {model_path}")]
    while pending:
        path, lineage = pending.pop()
        resolved = Path(path).resolve()
        if resolved in checked:
            continue
        checked.add(resolved)
        if not Path(path).is_file():
            _LOGGER.warning(
                "%s is not there: whether it trained on %s's validation faces cannot be checked",
                lineage,
                whose,
            )
            continue
        theirs = settings_of_model(path)
        if theirs is None:
            _LOGGER.warning(
                "%s was not saved by a training run (neither carrying its settings nor in a run "
                "folder): whether it trained on %s's validation faces cannot be checked",
                lineage,
                whose,
            )
            continue
        split, ours = (theirs.validation_fraction, theirs.seed), (settings.validation_fraction, settings.seed)
        if split != ours:
            raise TrainingError(
                f"{lineage}: its run held out validation fraction {split[0]} with seed "
                f"{split[1]}, {whose} {ours[0]} with seed {ours[1]}, so it has trained on {whose}'s "
                "validation faces (seed independent networks with --init-seed, not --seed)"
            )
        _warn_of_other_data(theirs.data, settings.data, lineage, whose)
        for their_option, ancestor in models_learned_from(theirs):
            pending.append((ancestor, f"{lineage}, which learned from ({their_option}) {ancestor}"))


def _warn_of_other_data(theirs: str, ours: str, lineage: str, whose: str) -> None:
    """Warns unless two runs' data are surely the same: the same file or folder, or files with
    the same bytes (a data file may move between runs). Not refused: fer2013.csv and its
    .csv.gz, or a moved copy of a folder, hold the same faces in other bytes; but another data
    set splits another way. A relative path is read from the current folder, as training reads it."""
    their_path, our_path = Path(theirs).expanduser(), Path(ours).expanduser()
    if not their_path.exists():
        _LOGGER.warning(
            "%s trained on %s, which is not there: whether its data were %s's cannot be checked",
            lineage,
            theirs,
            whose,
        )
    elif their_path.resolve() != our_path.resolve() and not (
        their_path.is_file() and our_path.is_file() and _file_digest(their_path) == _file_digest(our_path)
    ):
        _LOGGER.warning(
            "%s: its run trained on %s, %s on %s (other bytes): unless they hold the same faces "
            "in the same order, its validation split is not %s's and it may have trained on %s's "
            "validation faces",
            lineage,
            theirs,
            whose,
            ours,
            whose,
            whose,
        )


def _file_digest(path: Path) -> str:
    """The SHA-256 of a data file (FER2013's 87 MB take about 0.1 s), once per process and version."""
    status = path.stat()
    return _cached_sha256(path.resolve(), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: Path, size: int, modified_ns: int) -> str:
    return file_sha256(path)


def settings_of_model(model_path: str | Path) -> TrainSettings | None:
    """The settings of the run that saved a .keras model: those it carries (``save_model``),
    else, for a file saved before runs wrote them into it, the settings.json of the run
    folder it sits in; None for a model nothing says of."""
    inside = _settings_inside(Path(model_path))
    folder_settings = Path(model_path).parent / "settings.json"
    if inside is not None:
        source, text = Path(model_path), inside
    elif folder_settings.is_file():
        source, text = folder_settings, folder_settings.read_text()
    else:
        return None
    try:
        return TrainSettings.from_dict(json.loads(text))
    except (TypeError, ValueError, TrainingError) as err:  # settings that are not a training run's
        raise TrainingError(f"{source}: not the settings of a training run ({err})") from err


def _settings_inside(model_path: Path) -> str | None:
    """The run settings a .keras file carries as its archive's comment (``RunFolder.save_model``),
    if it is a file with a comment."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            return archive.comment.decode() or None
    except (FileNotFoundError, IsADirectoryError, zipfile.BadZipFile):
        return None
