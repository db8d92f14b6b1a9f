"""The builder, the augmentation and a real (tiny) training run that is killed and resumed."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import training  # noqa: E402,F401  (before TensorFlow: sets its environment)
from tests.conftest import ROOT

keras = pytest.importorskip("keras", reason="training tests need the train extra (pip install -e '.[train]')")

from edge.vision.preprocess import normalize_faces  # noqa: E402
from training.augment import Augmentation, affine_matrices, augmented_epoch  # noqa: E402
from training.data import class_weight_vector  # noqa: E402
from training.model import EXPECTED_PARAMETERS, make_mini_xception  # noqa: E402
from training.settings import TrainingError, TrainSettings  # noqa: E402
from training.train import train, without_odd_face  # noqa: E402


def test_mini_xception_has_the_thesis_parameter_count():
    model = make_mini_xception()
    assert model.count_params() == EXPECTED_PARAMETERS == 58_423
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    # no biases except the last 3x3 convolution's 7
    biased = [w.path for w in model.weights if w.path.endswith("bias")]
    assert biased == ["class_maps/bias"]


def test_width_multiplies_every_block_but_the_class_maps():
    wide = make_mini_xception(width=2)
    assert wide.count_params() == 205_031  # about 3.5x the thesis's network
    assert wide.get_layer("conv1").filters == 16 and wide.get_layer("block4_sep2").filters == 256
    assert wide.output_shape == (None, 7)


def test_width_is_a_setting_of_the_mini_xception_only():
    from training.model import untrained_model

    assert untrained_model(TrainSettings(data="x", width=1.5)).count_params() == 120_703
    with pytest.raises(TrainingError, match="only the mini_xception"):
        TrainSettings(data="x", architecture="vgg", width=2)
    with pytest.raises(TrainingError, match="width: must be at least 0.25, got 0"):
        TrainSettings(data="x", width=0)


def test_model_normalizes_raw_pixels_itself():
    model = make_mini_xception()
    normalize = model.get_layer("normalize")
    out = normalize(np.array([[0.0, 127.5, 255.0]], dtype=np.float32))
    np.testing.assert_allclose(np.asarray(out), [[-1.0, 0.0, 1.0]], atol=1e-6)


def test_augmented_epoch_is_a_function_of_seed_and_epoch():
    images = np.random.default_rng(0).integers(0, 255, (20, 48, 48), dtype=np.uint8)
    labels = np.arange(20) % 7
    a = augmented_epoch(images, labels, seed=5, epoch=3)
    b = augmented_epoch(images, labels, seed=5, epoch=3)
    c = augmented_epoch(images, labels, seed=5, epoch=4)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[2], c[2])
    np.testing.assert_array_equal(a[1], labels[a[2]])


def test_face_normalization_comes_last_on_the_augmented_face_as_the_daemon_applies_it(tmp_path):
    """With equalize, every training face is the equalized (rounded) augmented face, drawn
    as without it; and a model's normalization is found from the run folder it sits in."""
    import cv2

    from training.run_folder import face_normalization_of

    images = (np.random.default_rng(0).random((12, 48, 48)) * 100 + 60).astype(np.uint8)
    labels = np.arange(12) % 7
    augmentation = Augmentation(brightness=0.1, contrast=0.2, noise_std=2)
    raw, _, order = augmented_epoch(images, labels, 5, 0, augmentation)
    equalized, _, same_order = augmented_epoch(images, labels, 5, 0, augmentation, "equalize")
    np.testing.assert_array_equal(order, same_order)
    for plain, normalized in zip(raw[..., 0], equalized[..., 0]):
        expected = cv2.equalizeHist(np.clip(np.rint(plain), 0, 255).astype(np.uint8))
        np.testing.assert_array_equal(normalized, expected)
    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"data": "x.csv", "face_normalization": "equalize"}))
    assert face_normalization_of(run / "best.keras") == "equalize"
    assert face_normalization_of(tmp_path / "elsewhere.keras") is None  # nothing says


def test_affine_matrices_stay_within_the_configured_ranges():
    m = affine_matrices(2000, 48, Augmentation(), np.random.default_rng(0))
    scale = np.sqrt(np.abs(np.linalg.det(m[:, :, :2])))
    assert scale.min() >= 0.9 - 1e-9 and scale.max() <= 1.1 + 1e-9
    flips = np.linalg.det(m[:, :, :2]) < 0
    assert 0.4 < flips.mean() < 0.6
    no_flip = Augmentation(horizontal_flip=False, rotation_degrees=0, zoom_fraction=0, shift_fraction=0)
    np.testing.assert_allclose(
        affine_matrices(3, 48, no_flip, np.random.default_rng(0))[:, :, :2], [np.eye(2)] * 3
    )


def test_class_weights_favour_rare_classes_and_keep_mean_one():
    labels = np.repeat(np.arange(7), [400, 40, 400, 700, 480, 310, 490])
    for mode in ("balanced", "sqrt"):
        w = class_weight_vector(labels, mode)
        assert w[1] == w.max()
        assert abs(w[labels].mean() - 1.0) < 1e-9
    np.testing.assert_array_equal(class_weight_vector(labels, "none"), np.ones(7))
    with pytest.raises(TrainingError):
        class_weight_vector(labels, "loud")


def _log_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "log.csv") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _python_with_onednn(value: str | None, code: str) -> subprocess.CompletedProcess:
    """``code`` run by a Python of its own (this one imported TensorFlow with oneDNN off, via
    training/) with TF_ENABLE_ONEDNN_OPTS set to ``value``, or unset for None."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update({"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    if value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


ONEDNN_PROBE = "from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())"


def _tensorflow_runs_onednn_when_asked() -> bool:
    answer = _python_with_onednn("1", ONEDNN_PROBE)
    # a TensorFlow without this probe must fail the test, not skip it for good
    assert answer.returncode == 0, f"cannot ask TensorFlow about oneDNN: {answer.stderr[-500:]}"
    return answer.stdout.strip().endswith("True")


@pytest.mark.slow
def test_the_mini_xception_trains_with_onednn_on_an_odd_number_of_faces(tmp_path, synthetic_csv):
    # oneDNN (off by default, faster) crashes the mini-Xception's training step on a batch of odd
    # size: 375 faces in batches of 8 leave a last batch of 7, which killed the process with
    # SIGSEGV or SIGABRT before the run left the odd face out. Its 93 validation faces give
    # inference odd batches, which oneDNN takes.
    if not _tensorflow_runs_onednn_when_asked():
        pytest.skip("this TensorFlow build has no oneDNN: nothing to crash")

    def run(*options):
        command = [sys.executable, "-m", "training", "--data", str(synthetic_csv), "--epochs", "1"]
        command += ["--max-train-faces", "375", "--verbose", "0", *options]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_ENABLE_ONEDNN_OPTS": "1"}
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    trained = run("--run-dir", str(tmp_path / "even"), "--batch-size", "8")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads(trained.stdout)["state"]["epoch"] == 1
    assert "an epoch of odd length leaves its last face out" in trained.stderr

    refused = run("--run-dir", str(tmp_path / "odd"), "--batch-size", "7")
    assert refused.returncode == 1
    assert "--batch-size 7 with TF_ENABLE_ONEDNN_OPTS on" in refused.stderr
    assert not (tmp_path / "odd" / "settings.json").exists()


def test_an_epoch_of_odd_length_leaves_out_its_last_face_only():
    x, y, weights = np.arange(7), np.arange(7) * 10, np.linspace(0.5, 2, 7)
    kept_x, kept_y, kept_weights = without_odd_face(x, y, weights)
    assert kept_x.tolist() == list(range(6)) and kept_y.tolist() == [0, 10, 20, 30, 40, 50]
    assert kept_weights.tolist() == weights[:6].tolist()
    assert without_odd_face(x, None)[1] is None
    assert len(without_odd_face(np.arange(8))[0]) == 8


def test_onednn_counts_as_on_unless_the_variable_turns_it_off():
    assert training.onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert training.onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": "True"})
    for off in ({}, {"TF_ENABLE_ONEDNN_OPTS": "0"}, {"TF_ENABLE_ONEDNN_OPTS": "FALSE"}):
        assert not training.onednn_enabled(off)
    # TensorFlow takes any other spelling as its default, on; " 0" once counted as off here and
    # let the mini-Xception train on odd batches under oneDNN, which crashes it
    for unparsed in (" 0", "false ", "off"):
        assert training.onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": unparsed})


@pytest.mark.slow
def test_onednn_is_on_exactly_when_tensorflow_says_so():
    if not _tensorflow_runs_onednn_when_asked():
        pytest.skip("this TensorFlow build has no oneDNN: it is off whatever the variable says")
    for value in ("0", " 0", "False", "off", "1"):
        answer = _python_with_onednn(value, ONEDNN_PROBE)
        assert answer.returncode == 0, answer.stderr[-500:]
        tensorflow_on = answer.stdout.strip().endswith("True")
        assert training.onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": value}) == tensorflow_on, repr(value)


@pytest.mark.slow
def test_tensorflow_imported_first_is_warned_of_only_when_the_variable_is_unset():
    # TensorFlow imported before training/ runs oneDNN unless the variable said otherwise; a user
    # who set it (to 1 for the VGG teacher, or to 0) made the choice and is not warned.
    def imported_first(value):
        done = _python_with_onednn(value, "import tensorflow, training")
        assert done.returncode == 0, f"importing failed with {value=}: {done.stderr[-500:]}"
        return done.stderr

    assert "TensorFlow was imported before training/" in imported_first(None)
    for chosen in ("1", "0"):
        assert "TensorFlow was imported before training/" not in imported_first(chosen)


@pytest.mark.slow
def test_training_killed_mid_run_resumes_on_its_schedule(tmp_path, synthetic_csv):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "training",
        "--data",
        str(synthetic_csv),
        "--run-dir",
        str(run_dir),
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--lr-patience",
        "1",
        "--stop-patience",
        "10",
        "--verbose",
        "0",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 180
    state_path = run_dir / "state.json"
    while time.monotonic() < deadline:
        if state_path.exists() and json.loads(state_path.read_text())["epoch"] >= 1:
            break
        assert process.poll() is None, process.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # a hard stop, as when a session ends
    process.wait()
    stopped = json.loads(state_path.read_text())
    assert 1 <= stopped["epoch"] < 4 and not stopped["finished"]
    assert (run_dir / "last.keras").exists() and (run_dir / "best.keras").exists()

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {run_dir} at epoch {stopped['epoch'] + 1}" in result.stderr
    final = json.loads(state_path.read_text())
    assert final["epoch"] == 4 and final["finished"]
    # every epoch logged once (an epoch cut short by the kill may be logged by neither run)
    epochs = _log_epochs(run_dir)
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3
    assert final["seconds"] >= stopped["seconds"]
    with open(run_dir / "log.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < losses[0]  # it learned across the stop
    assert json.loads(result.stdout)["state"]["epoch"] == 4
    report = json.loads((run_dir / "report.json").read_text())
    assert report["PublicTest"]["n"] == 70

    # A resume with different schedule settings is refused rather than silently mixed.
    with pytest.raises(TrainingError, match="other settings"):
        train(TrainSettings(data=str(synthetic_csv), epochs=4, batch_size=64), run_dir)


def test_cosine_schedule_anneals_from_the_initial_to_the_minimum_rate():
    from training.schedule import cosine_learning_rate

    settings = TrainSettings(
        data="x", epochs=5, learning_rate=1e-3, min_learning_rate=1e-6, schedule="cosine"
    )
    rates = [cosine_learning_rate(settings, epoch) for epoch in range(5)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-6)
    assert rates[2] == pytest.approx((1e-3 + 1e-6) / 2)
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_second_stage_starts_from_a_checkpoint_and_keeps_every_epoch(tmp_path, synthetic_csv):
    first = tmp_path / "first"
    train(TrainSettings(data=str(synthetic_csv), epochs=1, batch_size=32), first, verbose=0)
    start = keras.models.load_model(first / "best.keras")
    second = tmp_path / "second"
    settings = TrainSettings(
        data=str(synthetic_csv),
        epochs=3,
        batch_size=32,
        schedule="cosine",
        learning_rate=1e-5,
        min_learning_rate=1e-6,
        init_from=str(first / "best.keras"),
        keep_epoch_weights=True,
        stop_patience=100,
    )
    state = train(settings, second, verbose=0)
    assert state.epoch == 3 and state.learning_rate == pytest.approx(1e-6)
    assert sorted(p.name for p in (second / "epochs").iterdir()) == [
        f"epoch-00{i}.weights.h5" for i in (1, 2, 3)
    ]
    # Epoch 1 began from the first stage's weights, not from random ones: after one epoch at
    # a tiny rate its kernels are still those weights.
    epoch1 = make_mini_xception()
    epoch1.load_weights(second / "epochs" / "epoch-001.weights.h5")

    def kernel_distance(model):
        return max(
            float(np.abs(a.numpy() - b.numpy()).max())
            for a, b in zip(model.trainable_weights, start.trainable_weights)
        )

    assert kernel_distance(epoch1) < 1e-3 < kernel_distance(make_mini_xception())

    # Those epochs average into a model of their mean weights, scored on validation.
    from training.average import average_run

    summary = average_run(second, last=3)
    assert len(summary["averaged_epochs"]) == 3 and (second / "averaged.keras").exists()
    assert set(summary["validation_accuracy"]) == {"averaged", "best"}
    averaged = keras.models.load_model(second / "averaged.keras")
    epochs = []
    for i in (1, 2, 3):
        m = make_mini_xception()
        m.load_weights(second / "epochs" / f"epoch-00{i}.weights.h5")
        epochs.append(m)
    for k, weight in enumerate(averaged.trainable_weights):  # BatchNorm's statistics are re-measured
        expected = np.mean([m.trainable_weights[k].numpy() for m in epochs], axis=0)
        np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(TrainingError, match="no such checkpoint"):
        train(
            TrainSettings(data=str(synthetic_csv), init_from=str(tmp_path / "absent.keras")),
            tmp_path / "third",
        )
    with pytest.raises(TrainingError, match="schedule: must be one of plateau, cosine, got 'linear'"):
        train(TrainSettings(data=str(synthetic_csv), schedule="linear"), tmp_path / "fourth")


def test_softened_teacher_targets_keep_the_label_and_sum_to_one():
    from training.data import distillation_targets, soften

    teacher = np.array([[0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03], [0.2, 0.1, 0.1, 0.4, 0.1, 0.05, 0.05]])
    np.testing.assert_allclose(soften(teacher, 1.0), teacher, rtol=1e-6)
    softer = soften(teacher, 2.0)
    assert (softer.argmax(1) == teacher.argmax(1)).all() and (softer.max(1) < teacher.max(1)).all()
    targets = distillation_targets(np.array([0, 4]), softer, 0.5)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(distillation_targets(np.array([0, 4]), softer, 0.0), np.eye(7)[[0, 4]])
    assert targets[1].argmax() == 4  # half the weight on the label outweighs a teacher that disagrees


def test_distillation_trains_against_the_teachers_cached_probabilities(tmp_path, synthetic_csv):
    first = tmp_path / "teacher"
    train(TrainSettings(data=str(synthetic_csv), epochs=1, batch_size=32), first, verbose=0)
    student = tmp_path / "student"
    settings = TrainSettings(
        data=str(synthetic_csv),
        epochs=2,
        batch_size=32,
        teacher=str(first / "best.keras"),
        teacher_views="mirror",
        schedule="cosine",
        stop_patience=100,
    )
    state = train(settings, student, verbose=0)
    assert state.epoch == 2 and np.isfinite(state.best_val_loss)
    cached = np.load(student / "teacher-probabilities.npy")
    np.testing.assert_allclose(cached.sum(1), 1.0, rtol=1e-5)
    assert (cached.max(1) < 1.0).all()  # softened: a distribution, not the teacher's hard answer
    # A resumed run reads the same targets back instead of asking the teacher again.
    (first / "best.keras").unlink()
    state = train(TrainSettings(**{**settings.__dict__, "epochs": 3}), student, verbose=0)
    assert state.epoch == 3

    with pytest.raises(TrainingError, match="--teacher .*no such model"):
        train(
            TrainSettings(data=str(synthetic_csv), teacher=str(tmp_path / "absent.keras")), tmp_path / "other"
        )
    with pytest.raises(TrainingError, match="teacher_views: must be one of .*got 'sideways'"):
        train(
            TrainSettings(
                data=str(synthetic_csv), teacher=str(student / "best.keras"), teacher_views="sideways"
            ),
            tmp_path / "another",
        )


def test_an_ensemble_teacher_is_averaged_and_must_hold_out_the_students_validation_split(
    tmp_path, synthetic_csv
):
    from edge.tools.evaluate import EvaluationError
    from training.data import soften, split
    from training.evaluate import KerasClassifier
    from training.model import keras_probabilities
    from training.run_folder import RunFolder

    base = {"data": str(synthetic_csv), "epochs": 1, "batch_size": 32}
    train(TrainSettings(**base), tmp_path / "a", verbose=0)
    # Same split, other weights, and equalized faces: each member sees faces as it was trained.
    train(TrainSettings(**base, init_seed=7, face_normalization="equalize"), tmp_path / "b", verbose=0)
    first, second = (keras.models.load_model(tmp_path / name / "best.keras") for name in "ab")
    assert not np.allclose(first.get_weights()[0], second.get_weights()[0])

    teachers = f"{tmp_path / 'a' / 'best.keras'}, {tmp_path / 'b' / 'best.keras'}"
    student = TrainSettings(**base, teacher=teachers, teacher_views="mirror", distill_temperature=2.0)
    train(student, tmp_path / "student", verbose=0)
    faces = RunFolder(tmp_path / "student").training_faces(str(synthetic_csv))
    images = faces.images[split(student, faces.labels)[0]]
    views = KerasClassifier(teachers, "mirror").contract.views
    by_member = [
        keras_probabilities(first, images, views),
        keras_probabilities(second, images, views, "equalize"),
    ]
    mean = np.mean(by_member, axis=0)
    cached = np.load(tmp_path / "student" / "teacher-probabilities.npy")
    np.testing.assert_allclose(cached, soften(mean, 2.0), atol=1e-5)
    # training.evaluate reads the same comma-separated list as one averaged model.
    ensemble = KerasClassifier(teachers, "mirror")
    np.testing.assert_allclose(ensemble.classify(images[:5]), mean[:5], atol=1e-5)
    assert ensemble.contract.source["checkpoint"] == "a/best.keras (none) + b/best.keras (equalize)"
    with pytest.raises(EvaluationError, match="names no model"):
        KerasClassifier(" , ")
    with pytest.raises(TrainingError, match="names no model"):
        TrainSettings(**base, teacher=",")

    # A network seeded with --seed held out other faces: it has seen this run's validation
    # faces. It is refused before the run opens its folder or asks any other teacher.
    train(TrainSettings(**base, seed=5), tmp_path / "other-split", verbose=0)
    leaky = str(tmp_path / "other-split" / "best.keras")
    with pytest.raises(TrainingError, match="--teacher .*seed 5, this run 0.1 with seed 1337"):
        train(TrainSettings(**base, teacher=f"{teachers},{leaky}"), tmp_path / "s2", verbose=0)
    with pytest.raises(TrainingError, match="--init-from .*trained on this run's validation faces"):
        train(TrainSettings(**base, init_from=leaky), tmp_path / "s3", verbose=0)
    assert not (tmp_path / "s2" / "settings.json").exists() and not (tmp_path / "s3").exists()
    # Nor may one ensemble's members disagree on what they held out.
    with pytest.raises(EvaluationError, match="different validation splits"):
        KerasClassifier(f"{teachers},{leaky}")
    # Nor may a member that learned from such a model (training's check, through its runs).
    descendant = tmp_path / "descendant"
    descendant.mkdir()
    (descendant / "settings.json").write_text(json.dumps({**base, "init_from": leaky}))
    (descendant / "best.keras").write_bytes(b"")  # refused before it is loaded
    with pytest.raises(
        EvaluationError,
        match=r"descendant/best.keras, which learned from \(--init-from\) .*other-split/best.keras: "
        r"its run held out validation fraction 0.1 with seed 5, the evaluated split 0.1 with seed 1337",
    ):
        KerasClassifier(f"{teachers},{descendant / 'best.keras'}")
    assert KerasClassifier(leaky).contract.training_data["settings"]["seed"] == 5  # its own split


def test_a_teacher_judging_augmented_epochs_targets_the_very_faces_the_student_is_shown(
    tmp_path, synthetic_csv, monkeypatch
):
    """With --teacher-augmented-epochs N the teacher judges each face of the first N augmented
    epochs as the student is shown it (before the student's own normalization); the student
    cycles through those epochs, reshuffled, each face keeping its own judgement; a run stopped
    while the teacher judged resumes with the epochs not yet judged."""
    import training.model
    from training.data import distillation_targets, soften, training_data
    from training.model import keras_probabilities
    from training.run_folder import RunFolder

    base = {"data": str(synthetic_csv), "epochs": 1, "batch_size": 32}
    train(TrainSettings(**base), tmp_path / "teacher", verbose=0)
    teacher_path = tmp_path / "teacher" / "best.keras"
    teacher = keras.models.load_model(teacher_path)
    student = TrainSettings(
        **{**base, "epochs": 3},
        teacher=str(teacher_path),
        teacher_views="single",
        teacher_augmented_epochs=2,
        distill_weight=0.7,
        face_normalization="equalize",
        class_weights="balanced",
        augmentation={"rotation_degrees": 10, "shift_fraction": 0.1, "noise_std": 3},
    )
    augmentation = Augmentation(**student.augmentation)
    run = RunFolder(tmp_path / "student")
    run.start(student)
    data = training_data(student, run)
    assert data.teacher.shape == (2, len(data.labels), 7)
    class_weights = class_weight_vector(data.labels, "balanced")

    def shown_with_their_targets(epoch: int) -> dict[bytes, tuple[np.ndarray, float]]:
        """Each face of augmented epoch ``epoch`` as the student is shown it (equalized),
        with the target and sample weight it must come with: the teacher's own judgement of
        that face (rounded to grey levels, not equalized: the teacher's run did not), the label."""
        shown, labels, _ = augmented_epoch(data.images, data.labels, student.init_seed, epoch, augmentation)
        faces = np.clip(np.rint(shown[..., 0]), 0, 255).astype(np.uint8)
        judged = soften(keras_probabilities(teacher, faces), 2.0)
        targets = distillation_targets(labels, judged, 0.7)
        by_face = {
            face.tobytes(): (target, class_weights[label])
            for face, target, label in zip(normalize_faces(faces, "equalize"), targets, labels, strict=True)
        }
        assert len(by_face) == len(labels)  # every face told apart by its pixels
        return by_face

    for epoch in (0, 1, 2):  # epoch 2 shows epoch 0's faces again, in another order
        expected = shown_with_their_targets(epoch % 2)
        x, y, weights = data.epoch(student, epoch, augmentation)
        for face, target, weight in zip(x[..., 0].astype(np.uint8), y, weights, strict=True):
            expected_target, expected_weight = expected[face.tobytes()]
            np.testing.assert_allclose(target, expected_target, atol=1e-5)
            assert weight == pytest.approx(expected_weight)
    first, third = data.epoch(student, 0, augmentation)[0], data.epoch(student, 2, augmentation)[0]
    assert not np.array_equal(first, third)  # the same faces in another order

    # Stopped after judging one epoch: only the second is judged on resuming.
    np.save(run.path / "teacher-probabilities.npy", data.teacher[:1])
    judged_faces = []
    judge = training.model.keras_probabilities
    monkeypatch.setattr(
        training.model,
        "keras_probabilities",
        lambda model, faces, *args: judged_faces.append(len(faces)) or judge(model, faces, *args),
    )
    np.testing.assert_allclose(training_data(student, run).teacher, data.teacher, atol=1e-6)
    assert judged_faces == [len(data.labels)]
    monkeypatch.undo()
    final = train(student, run.path, verbose=0)
    assert final.epoch == 3 and np.load(run.path / "teacher-probabilities.npy").shape == data.teacher.shape
    with pytest.raises(TrainingError, match="more than 0 only with --teacher"):
        TrainSettings(**base, teacher_augmented_epochs=2)


def test_a_model_is_refused_when_anything_it_learned_from_held_out_other_faces(tmp_path, caplog):
    """The leak check follows teachers and starting checkpoints back through their run folders
    and compares data by content (a difference is warned of); it reads settings.json files only."""
    import shutil

    from training.run_folder import RunFolder, check_models_it_learns_from

    data = tmp_path / "fer.csv.gz"
    data.write_bytes(b"Training faces")

    def run(name: str, **settings) -> str:
        """A run folder as training leaves it: its settings.json and its best.keras."""
        folder = tmp_path / name
        folder.mkdir()
        (folder / "settings.json").write_text(json.dumps({"data": str(data), **settings}))
        (folder / "best.keras").write_bytes(b"")
        return str(folder / "best.keras")

    def check(**settings) -> None:
        check_models_it_learns_from(TrainSettings(data=str(data), **settings), RunFolder(tmp_path / "new"))

    leaky_start = run("other-split", seed=5)
    teacher = run("teacher", init_from=leaky_start)  # same split itself, started from a leaky one
    with pytest.raises(
        TrainingError,
        match=r"--teacher .*teacher/best.keras, which learned from \(--init-from\) "
        r".*other-split/best.keras: its run held out validation fraction 0.1 with seed 5",
    ):
        check(teacher=teacher)
    student = run("student", teacher=teacher)  # two generations down, through a teacher
    with pytest.raises(TrainingError, match="--init-from .*student.*teacher.*other-split"):
        check(init_from=student)

    # Data are compared by content: a moved copy is the same data; other bytes may hold the
    # same faces (fer2013.csv and its .csv.gz), so they are said, not refused.
    moved = tmp_path / "moved" / "fer.csv.gz"
    moved.parent.mkdir()
    shutil.copy(data, moved)
    with caplog.at_level("WARNING", logger="training.run_folder"):
        check(teacher=run("moved-data", data=str(moved)))
        assert not caplog.text
        moved.write_bytes(b"other faces")
        check(teacher=str(tmp_path / "moved-data" / "best.keras"))
    assert "moved-data/best.keras: its run trained on" in caplog.text and "(other bytes)" in caplog.text
    caplog.clear()

    # Nor what cannot be checked: data that are gone, a model outside a run.
    moved.unlink()
    outside = tmp_path / "outside.keras"
    outside.write_bytes(b"")
    cyclic = run("cyclic", teacher=str(tmp_path / "cyclic" / "best.keras"), init_from=str(outside))
    with caplog.at_level("WARNING", logger="training.run_folder"):
        check(teacher=f"{tmp_path / 'moved-data' / 'best.keras'},{cyclic}")
    assert "moved/fer.csv.gz, which is not there" in caplog.text
    assert "outside.keras was not saved by a training run" in caplog.text
    assert not (tmp_path / "new").exists()


def test_a_checkpoint_copied_out_of_its_run_still_says_how_it_was_trained(tmp_path):
    """Every .keras file a run saves carries the run's settings (its archive's comment, which
    Keras does not read): a copy taken out of the folder, or into another run's, still gives
    its face normalization and its validation split, so a student taught by it is checked
    (and refused here: another seed held out other faces)."""
    import shutil
    import zipfile

    from training.run_folder import RunFolder, check_models_it_learns_from, settings_of_model

    trained_with = TrainSettings(data="fer.csv.gz", face_normalization="equalize", seed=5)
    run = RunFolder(tmp_path / "teacher")
    run.start(trained_with)
    model = make_mini_xception()
    run.save_model(model, run.best_checkpoint)
    copy = tmp_path / "elsewhere" / "teacher-epoch22.keras"
    copy.parent.mkdir()
    shutil.copy(run.best_checkpoint, copy)

    assert settings_of_model(copy) == trained_with
    with zipfile.ZipFile(copy) as archive:  # Keras unpacks an archive with more members on every load
        assert sorted(archive.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    loaded = keras.models.load_model(copy, compile=False)
    for ours, theirs in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(TrainingError, match=r"teacher-epoch22.keras: its run held out .* seed 5"):
        check_models_it_learns_from(
            TrainSettings(data="fer.csv.gz", teacher=str(copy)), RunFolder(tmp_path / "student")
        )

    # Kept beside a student, in the student's run folder: still the teacher's own settings.
    student = RunFolder(tmp_path / "student-run")
    student.start(TrainSettings(data="fer.csv.gz"))
    shutil.copy(copy, student.path / "teacher.keras")
    assert settings_of_model(student.path / "teacher.keras") == trained_with
    # A file saved before runs carried their settings is read by the settings.json beside it.
    make_mini_xception().save(student.path / "older.keras")
    assert settings_of_model(student.path / "older.keras") == TrainSettings(data="fer.csv.gz")
    # Settings that are not a run's are named, not taken for none.
    with zipfile.ZipFile(copy, "a") as archive:
        archive.comment = b"{not json"
    with pytest.raises(TrainingError, match="teacher-epoch22.keras: not the settings of a training run"):
        settings_of_model(copy)


def test_batchnorm_statistics_are_re_measured_as_the_mean_over_all_batches():
    from training.average import recompute_batchnorm

    model = make_mini_xception()
    images = np.random.default_rng(0).integers(0, 256, (96, 48, 48)).astype(np.uint8)
    recompute_batchnorm(model, images, batch_size=32)
    first_bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    conv = keras.Model(model.input, first_bn.input)  # one input, not a list of one: no warning
    outputs = conv(images[..., None].astype(np.float32)).numpy()
    batch_means = [outputs[i : i + 32].mean(axis=(0, 1, 2)) for i in range(0, 96, 32)]
    np.testing.assert_allclose(
        first_bn.moving_mean.numpy(), np.mean(batch_means, axis=0), rtol=1e-4, atol=1e-5
    )
    assert first_bn.momentum == 0.99  # restored


# -- settings, the command line and the run folder ----------------------------------------


def test_every_setting_is_a_documented_option_and_the_dataclass_decides_the_defaults():
    from dataclasses import fields

    from training.__main__ import build_parser
    from training.settings import settings_from_args

    parser = build_parser()
    help_text = parser.format_help()
    for setting in fields(TrainSettings):
        flag = "--" + setting.name.replace("_", "-")
        assert flag in [option for action in parser._actions for option in action.option_strings], flag
        assert (flag in help_text) == (setting.name != "max_train_faces"), flag  # that one is hidden

    def parsed(*argv: str) -> TrainSettings:
        return settings_from_args(parser.parse_args(["--data", "d.csv", "--run-dir", "r", *argv]))

    assert parsed() == TrainSettings(data="d.csv")
    assert parsed().l2 == 0.01 and parsed("--architecture", "vgg").l2 == 1e-4
    assert parsed("--architecture", "vgg", "--l2", "0.5").l2 == 0.5
    assert parsed("--keep-epoch-weights", "--max-train-faces", "9").keep_epoch_weights
    custom = parsed("--augmentation", '{"brightness": 0.2}', "--lr-factor", "0.5")
    assert custom.augmentation == {**asdict(Augmentation()), "brightness": 0.2} and custom.lr_factor == 0.5
    with pytest.raises(SystemExit):
        parsed("--augmentation", '{"colour": 1}')
    with pytest.raises(TrainingError, match="schedule: must be one of plateau, cosine, got 'linear'"):
        TrainSettings(data="d", schedule="linear")


def test_settings_out_of_range_are_refused_naming_each_as_the_daemons_config_is(tmp_path):
    from training.run_folder import RunFolder
    from training.settings import SettingsError

    with pytest.raises(SettingsError) as err:
        TrainSettings(data="x", epochs=-1, batch_size=0, validation_fraction=1.5, distill_weight=5)
    assert str(err.value) == (
        "epochs: must be at least 1, got -1; batch_size: must be at least 1, got 0; "
        "validation_fraction: must be at most 0.9, got 1.5; distill_weight: must be at most 1.0, got 5"
    )
    with pytest.raises(SettingsError, match="epochs: expected an integer, got 2.5"):
        TrainSettings(data="x", epochs=2.5)
    with pytest.raises(SettingsError, match="learning_rate: expected a finite number, got nan"):
        TrainSettings(data="x", learning_rate=float("nan"))
    # a run's settings.json is held to the same ranges, and named
    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({**asdict(TrainSettings(data="x")), "lr_factor": 0}))
    with pytest.raises(SettingsError, match=r"run/settings.json: lr_factor: must be at least 1e-06, got 0"):
        RunFolder(run).settings()


# The settings.json a run started before the settings were derived from the dataclass wrote
# (a VGG teacher, cosine schedule, custom augmentation): the same command must resume it.
EARLIER_RUN_SETTINGS = {
    "data": "fer2013.csv.gz",
    "epochs": 100,
    "batch_size": 64,
    "learning_rate": 0.001,
    "validation_fraction": 0.1,
    "seed": 1337,
    "class_weights": "none",
    "l2": 0.0001,
    "lr_patience": 6,
    "lr_factor": 0.1,
    "min_learning_rate": 1e-05,
    "stop_patience": 1000,
    "augmentation": {
        "rotation_degrees": 15,
        "shift_fraction": 0.15,
        "zoom_fraction": 0.15,
        "horizontal_flip": True,
        "brightness": 0.15,
        "contrast": 0.25,
        "gamma": 0.25,
        "blur_probability": 0.2,
        "noise_std": 3,
        "erasing_probability": 0.5,
    },
    "max_train_faces": 0,
    "schedule": "cosine",
    "init_from": "",
    "keep_epoch_weights": False,
    "teacher": "",
    "teacher_views": "mirror-shift",
    "distill_weight": 0.5,
    "distill_temperature": 2.0,
    "architecture": "vgg",
}
EARLIER_RUN_STATE = {
    "epoch": 4,
    "learning_rate": 0.0009977586016736769,
    "best_val_loss": 1.5311061143875122,
    "best_val_accuracy": 0.46518105268478394,
    "best_epoch": 4,
    "lr_wait": 0,
    "stop_wait": 0,
    "finished": False,
    "stop_reason": "",
    "seconds": 1438.789818695,
}


def test_a_run_started_by_an_earlier_version_resumes_with_the_same_command(tmp_path):
    from training.__main__ import build_parser
    from training.run_folder import RunFolder
    from training.schedule import learning_rate_for
    from training.settings import settings_from_args

    run_dir = tmp_path / "teacher"
    run_dir.mkdir()
    saved = json.dumps(EARLIER_RUN_SETTINGS, indent=2) + "\n"
    (run_dir / "settings.json").write_text(saved)
    (run_dir / "state.json").write_text(json.dumps(EARLIER_RUN_STATE, indent=2))
    augmentation = (
        '{"rotation_degrees": 15, "shift_fraction": 0.15, "zoom_fraction": 0.15, '
        '"erasing_probability": 0.5, "brightness": 0.15, "contrast": 0.25, "gamma": 0.25, '
        '"blur_probability": 0.2, "noise_std": 3}'
    )
    args = build_parser().parse_args(
        [
            "--data",
            "fer2013.csv.gz",
            "--run-dir",
            str(run_dir),
            "--architecture",
            "vgg",
            "--schedule",
            "cosine",
            "--epochs",
            "100",
            "--learning-rate",
            "1e-3",
            "--min-learning-rate",
            "1e-5",
            "--stop-patience",
            "1000",
            "--verbose",
            "2",
            "--augmentation",
            augmentation,
        ]
    )
    settings = settings_from_args(args)
    run = RunFolder(run_dir)
    assert run.settings() == settings
    state = run.start(settings)
    assert (run_dir / "settings.json").read_text() == saved  # accepted as it is
    assert asdict(state) == EARLIER_RUN_STATE and not state.is_over(settings)
    assert learning_rate_for(settings, state, state.epoch) == pytest.approx(0.0009960175957530737)
    from dataclasses import replace

    with pytest.raises(TrainingError, match=r"other settings \(l2: 0.0001 -> 0.01\)"):
        run.start(replace(settings, l2=0.01))
    assert run.start(replace(settings, epochs=120, data="elsewhere.csv.gz")).epoch == 4  # resumable changes
    rewritten = json.loads((run_dir / "settings.json").read_text())  # and recorded, with every field
    assert (rewritten["epochs"], rewritten["data"], rewritten["face_normalization"]) == (
        120,
        "elsewhere.csv.gz",
        "none",
    )


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_a_run_stopped_after_an_epoch_resumes_as_if_never_stopped(
    tmp_path, synthetic_csv, monkeypatch, schedule
):
    import training.train as loop
    from training.run_folder import RunFolder

    settings = TrainSettings(
        data=str(synthetic_csv),
        epochs=4,
        batch_size=32,
        lr_patience=1,
        stop_patience=10,
        schedule=schedule,
        min_learning_rate=1e-5,
    )
    rates: list[tuple[int, float]] = []  # (epoch, learning rate) as each epoch began
    learning_rate_for = loop.learning_rate_for

    def record(settings, state, epoch):
        rates.append((epoch, learning_rate_for(settings, state, epoch)))
        return rates[-1][1]

    monkeypatch.setattr(loop, "learning_rate_for", record)
    whole = train(settings, tmp_path / "whole", verbose=0)
    whole_rates, rates[:] = list(rates), []

    class Killed(Exception):
        pass

    save_state = RunFolder.save_state

    def save_then_die(self, state):  # killed right after epoch 2 was saved
        save_state(self, state)
        if state.epoch == 2:
            raise Killed

    monkeypatch.setattr(RunFolder, "save_state", save_then_die)
    with pytest.raises(Killed):
        train(settings, tmp_path / "resumed", verbose=0)
    monkeypatch.setattr(RunFolder, "save_state", save_state)
    resumed = train(settings, tmp_path / "resumed", verbose=0)

    assert [epoch for epoch, _ in rates] == [0, 1, 2, 3]
    assert rates == whole_rates
    if schedule == "plateau":
        assert len(set(rate for _, rate in rates)) > 1  # the plateau drops were carried across the stop
    for key in ("epoch", "learning_rate", "best_epoch", "lr_wait", "stop_wait", "finished", "stop_reason"):
        assert getattr(resumed, key) == getattr(whole, key), key
    # The epoch the kill cut short is logged by neither run (its state was saved, its log row not).
    with open(tmp_path / "whole" / "log.csv") as a, open(tmp_path / "resumed" / "log.csv") as b:
        losses = [
            {int(row["epoch"]): float(row["val_loss"]) for row in csv.DictReader(handle)} for handle in (a, b)
        ]
    assert list(losses[0]) == [0, 1, 2, 3] and list(losses[1]) == [0, 2, 3]
    assert [losses[1][e] for e in (0, 2, 3)] == pytest.approx([losses[0][e] for e in (0, 2, 3)], rel=0.05)
