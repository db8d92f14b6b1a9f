"""Rebuilding a Keras mini-Xception from the bundled int8 model (its checkpoint is gone)."""

import json
import shutil

import numpy as np
import pytest

import training  # noqa: F401  (before TensorFlow: sets its environment)

pytest.importorskip("keras", reason="training tests need the train extra (pip install -e '.[train]')")

from edge import DEFAULT_MODEL  # noqa: E402
from edge.contract import load_contract, save_contract  # noqa: E402
from edge.vision.classifier import EmotionClassifier  # noqa: E402
from edge.vision.preprocess import crop_face, to_gray  # noqa: E402
from training.model import keras_probabilities  # noqa: E402
from training.recover import main, rebuild, training_settings  # noqa: E402
from training.run_folder import settings_of_model  # noqa: E402


@pytest.fixture(scope="module")
def astronaut_crops(astronaut_bgr):
    """Real photograph crops the shipped model answers in several ways: the astronaut's face
    (boxes jittered and scaled) and other parts of the picture, each also mirrored."""
    gray = to_gray(astronaut_bgr)
    rng = np.random.default_rng(0)
    contract = load_contract(DEFAULT_MODEL)
    crops = []
    for i in range(64):
        side = int(rng.integers(88, 116)) if i % 2 else int(rng.integers(60, 200))
        x, y = (170, 60) + rng.integers(-8, 9, 2) if i % 2 else rng.integers(0, 512 - side, 2)
        crops.append(crop_face(gray, (int(x), int(y), side, side), contract.crop, (48, 48)))
    crops = np.stack(crops)
    return np.concatenate([crops, crops[:, :, ::-1]])


def test_the_rebuilt_network_answers_as_the_shipped_model_and_keeps_that_in_training_mode(astronaut_crops):
    settings = training_settings(DEFAULT_MODEL)
    model = rebuild(DEFAULT_MODEL, settings, astronaut_crops)
    assert model.count_params() == 58_423
    ours = keras_probabilities(model, astronaut_crops, normalization=settings.face_normalization)
    shipped = EmotionClassifier(DEFAULT_MODEL).invoke(astronaut_crops)
    assert len(set(shipped.argmax(1))) >= 3  # crops it answers in several ways, not one face
    # Float weights against the int8 file: the same answer but for crops on a knife edge.
    assert (ours.argmax(1) == shipped.argmax(1)).mean() >= 0.9
    assert np.abs(ours - shipped).mean() < 0.02
    # BatchNorm is unfolded around the statistics of the crops it was measured on, so a
    # training step on those crops (batch statistics) computes the same function: training
    # continues the shipped model instead of scrambling it.
    in_training = model(astronaut_crops[..., None].astype(np.float32), training=True).numpy()
    np.testing.assert_allclose(in_training, ours, atol=1e-3)


def test_the_command_checks_the_rebuilt_network_and_writes_it_with_its_training_settings(
    tmp_path, synthetic_csv, capsys
):
    out = tmp_path / "recovered" / "rebuilt.keras"  # a folder that is not there yet, as on a new machine
    command = ["--model", str(DEFAULT_MODEL), "--data", str(synthetic_csv), "--out", str(out)]
    # Synthetic bars are no faces, so the two may well disagree on them: the command refuses
    # to write a network that does not answer as the converted file.
    assert main([*command, "--min-agreement", "1.01"]) == 1
    refused = capsys.readouterr()
    assert "nothing written" in refused.err and not out.exists()
    assert json.loads(refused.out)["validation_faces"] == 42  # the contract's split: 10 % of 420
    assert main([*command, "--min-agreement", "0"]) == 0
    capsys.readouterr()
    # The checkpoint says how it was trained, as every checkpoint a run saves: split and lineage.
    assert settings_of_model(out) == training_settings(DEFAULT_MODEL)
    assert settings_of_model(out).init_from == "recovered/bundled.keras"  # the lineage of the shipped model
    # A model whose contract does not say how it was trained cannot be rebuilt honestly.
    bare = tmp_path / "bare.tflite"
    shutil.copy(DEFAULT_MODEL, bare)
    contract = load_contract(DEFAULT_MODEL)
    save_contract(type(contract).from_dict({**contract.to_dict(), "training_data": {}}), bare)
    assert main(["--model", str(bare), "--data", str(synthetic_csv), "--out", str(tmp_path / "x.keras")]) == 1
    assert "does not say how it was trained" in capsys.readouterr().err
    assert not (tmp_path / "x.keras").exists()
