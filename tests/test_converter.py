"""Conversion of a small trained model to every format, each proven and its contract checked."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import training  # noqa: F401  (before TensorFlow: sets its environment)

keras = pytest.importorskip(
    "keras", reason="converter tests need the train extra (pip install -e '.[train]')"
)

from converter.convert import FORMATS, ConversionError, convert_and_check, operator_versions  # noqa: E402
from edge.contract import ContractError, file_sha256, load_contract, save_contract  # noqa: E402
from edge.tools.datasets import load_fer2013  # noqa: E402
from edge.vision.classifier import EmotionClassifier, contract_mismatches  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from training.model import make_mini_xception  # noqa: E402


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, synthetic_csv):
    """The real architecture, briefly trained on the synthetic classes so its outputs are decisive."""
    faces = load_fer2013(synthetic_csv, "Training")
    keras.utils.set_random_seed(0)
    model = make_mini_xception()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(faces.images[..., None].astype(np.float32), faces.labels, batch_size=32, epochs=12, verbose=0)
    path = tmp_path_factory.mktemp("keras") / "small.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def check_faces(synthetic_csv):
    return load_fer2013(synthetic_csv, "PublicTest")


@pytest.fixture(scope="module")
def calibration(synthetic_csv):
    return load_fer2013(synthetic_csv, "Training").images[::4]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_converts_with_a_contract_the_runtime_agrees_with(
    tmp_path, small_model, check_faces, calibration, fmt
):
    out = tmp_path / f"m_{fmt}.tflite"
    contract, result = convert_and_check(
        small_model, out, fmt, check_faces, calibration if fmt == "int8" else None
    )
    assert result.agreement >= 0.95 and result.accuracy_drop_points <= 1.0
    saved = load_contract(out)
    assert saved == contract
    assert saved.sha256 == file_sha256(out)
    assert saved.model_format == fmt
    assert saved.labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert saved.input_shape == (1, 48, 48, 1)
    assert saved.source["parameters"] == 58_423 and saved.source["checkpoint"] == "small.keras"
    assert saved.evaluation["faces"] == 70 and saved.evaluation["top1_agreement"] == result.agreement
    assert "CONV_2D" in saved.checked_with["operators"]
    classifier = EmotionClassifier(out)  # the daemon's loader accepts it
    if fmt == "int8":
        assert saved.input_dtype == "int8" and saved.output_dtype == "int8"
        assert saved.input_quantization is not None and saved.output_quantization is not None
        # the normalization layer folds into the first convolution: no extra ops
        assert set(operator_versions(out.read_bytes())) == {
            "CONV_2D",
            "DEPTHWISE_CONV_2D",
            "MAX_POOL_2D",
            "ADD",
            "MEAN",
            "SOFTMAX",
        }
    else:
        assert saved.input_dtype == "float32" and saved.input_quantization is None
    probs = classifier.classify(check_faces.images[:5])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    if fmt == "int8":
        assert out.stat().st_size < 150_000


@pytest.mark.slow
def test_accuracy_gate_fails_the_command_with_a_clear_message(
    tmp_path, small_model, synthetic_csv, monkeypatch, capsys
):
    import converter.convert
    from converter.__main__ import main

    proven = converter.convert.check_conversion

    def two_points_lost(*args, **kwargs):  # a conversion that costs accuracy, made to order
        result = proven(*args, **kwargs)
        return replace(result, tflite_accuracy=result.keras_accuracy - 0.02)

    monkeypatch.setattr(converter.convert, "check_conversion", two_points_lost)
    out = tmp_path / "gated.tflite"
    arguments = ["--keras", str(small_model), "--out", str(out), "--format", "float16"]
    assert main([*arguments, "--data", str(synthetic_csv), "--max-accuracy-drop", "1.5"]) == 1
    stderr = capsys.readouterr().err
    assert "float16 conversion loses 2.00 accuracy points" in stderr and "the limit is 1.50" in stderr


def test_contract_records_the_run_without_this_machines_paths(tmp_path, small_model, synthetic_csv):
    from dataclasses import asdict

    from training.run_folder import RunState
    from training.settings import TrainSettings

    run = tmp_path / "runs" / "student"
    run.mkdir(parents=True)
    settings = TrainSettings(
        data=str(synthetic_csv),
        init_from=str(tmp_path / "runs" / "stage1.keras"),
        # an ensemble: each member by its run folder and name
        teacher=f"{tmp_path / 'teacher-a' / 'best.keras'}, {tmp_path / 'teacher-b' / 'best.keras'}",
        max_train_faces=200,
        face_normalization="equalize",
    )
    (run / "settings.json").write_text(json.dumps(asdict(settings)))
    (run / "state.json").write_text(json.dumps(asdict(RunState(epoch=3, finished=True, stop_reason="done"))))
    out = tmp_path / "model.tflite"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "converter",
            "--keras",
            str(small_model),
            "--out",
            str(out),
            "--format",
            "float32",
            "--data",
            str(synthetic_csv),
            "--run-dir",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.with_suffix(".json").read_text()
    assert str(tmp_path) not in text
    recorded = json.loads(text)["training_data"]["settings"]
    assert recorded["init_from"] == "runs/stage1.keras"
    assert recorded["teacher"] == "teacher-a/best.keras,teacher-b/best.keras"
    assert recorded["data"] == synthetic_csv.name
    # The run's face normalization is the contract's: every classifier of the file applies it.
    assert json.loads(text)["face_normalization"] == "equalize"
    # The temperature is fitted on the run's validation split and written into the contract.
    contract = json.loads(text)
    calibration = contract["evaluation"]["calibration"]
    assert calibration["temperature"] == contract["temperature"] and 0.05 <= contract["temperature"] <= 10
    assert calibration["fitted_on"].startswith("validation split")
    assert calibration["validation"]["nll_after"] <= calibration["validation"]["nll_before"] + 1e-4


def test_an_int8_conversion_of_a_run_parses_training_once(tmp_path, small_model, synthetic_csv, monkeypatch):
    """Calibration faces and the validation split come from one parse of Training (4 s on FER2013)."""
    from dataclasses import asdict

    import edge.tools.datasets
    from converter.__main__ import main
    from training.run_folder import RunState
    from training.settings import TrainSettings

    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps(asdict(TrainSettings(data=str(synthetic_csv)))))
    (run / "state.json").write_text(json.dumps(asdict(RunState(epoch=1, finished=True))))
    parsed = []

    def counting_load(path, usage, *args, **kwargs):
        parsed.append(usage)
        return load_fer2013(path, usage, *args, **kwargs)

    import converter.calibrate
    import training.run_folder

    for module in (edge.tools.datasets, converter.calibrate, training.run_folder):  # each imports it by name
        monkeypatch.setattr(module, "load_fer2013", counting_load)
    out = tmp_path / "model.tflite"
    arguments = ["--keras", str(small_model), "--out", str(out), "--format", "int8"]
    assert (
        main([*arguments, "--data", str(synthetic_csv), "--run-dir", str(run), "--max-accuracy-drop", "100"])
        == 0
    )
    assert parsed.count("Training") == 1 and out.exists()
    assert json.loads(out.with_suffix(".json").read_text())["evaluation"]["calibration"][
        "fitted_on"
    ].startswith("validation split")


def test_unloadable_keras_file_is_a_conversion_error(tmp_path, check_faces):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"no model here")
    with pytest.raises(ConversionError, match="cannot load Keras model"):
        convert_and_check(bad, tmp_path / "x.tflite", "float32", check_faces, None)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory, small_model, check_faces):
    out = tmp_path_factory.mktemp("float") / "m.tflite"
    convert_and_check(small_model, out, "float32", check_faces, None)
    return out


def test_a_float_conversion_rebuilds_into_the_very_network_it_came_from(
    small_model, float_model, check_faces
):
    """training.recover undoes the converter's folding (BatchNorm into the convolutions, the
    rescaling into conv1): from a float32 file, without int8 rounding, the rebuilt network must
    be the original one, in inference and in a training step on the faces it was measured on."""
    from training.model import keras_probabilities
    from training.recover import rebuild
    from training.settings import TrainSettings

    original = keras.models.load_model(small_model, compile=False)
    rebuilt = rebuild(float_model, TrainSettings(data="synthetic.csv.gz"), check_faces.images)
    expected = keras_probabilities(original, check_faces.images)
    np.testing.assert_allclose(keras_probabilities(rebuilt, check_faces.images), expected, atol=1e-4)
    in_training = rebuilt(check_faces.images[..., None].astype(np.float32), training=True).numpy()
    np.testing.assert_allclose(in_training, expected, atol=1e-3)


def test_corrupt_model_file_is_refused_naming_the_hash(tmp_path, float_model):
    out = tmp_path / "m.tflite"
    data = bytearray(float_model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    (tmp_path / "m.json").write_text(float_model.with_suffix(".json").read_text())
    with pytest.raises(ContractError, match="does not match its contract: sha256"):
        EmotionClassifier(out)


def test_calibrate_fits_an_already_converted_model_and_refits_the_same(tmp_path, float_model, synthetic_csv):
    """python -m converter.calibrate: a model converted without calibration gets its
    temperature and the report; run again, it fits the raw probabilities, not the scaled."""
    model = tmp_path / "m.tflite"
    model.write_bytes(float_model.read_bytes())
    (tmp_path / "m.json").write_text(float_model.with_suffix(".json").read_text())
    assert load_contract(model).temperature == 1.0

    def calibrate(*extra):
        return subprocess.run(
            [sys.executable, "-m", "converter.calibrate", "--model", str(model), *extra],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )

    first = calibrate("--data", str(synthetic_csv))
    assert first.returncode == 0, first.stderr[-2000:]
    contract = load_contract(model)
    report = json.loads(first.stdout)
    assert contract.temperature == report["temperature"] != 1.0
    assert list(contract.class_bias) == report["class_bias"]  # () when no balance wins on validation
    # No balance is among the strengths tried, so the one chosen is at least as good there.
    assert report["validation"]["macro_f1_after"] >= report["validation"]["macro_f1_before"]
    assert contract.evaluation["calibration"]["fitted_on"].startswith("validation split")
    assert report["validation"]["nll_after"] <= report["validation"]["nll_before"] + 1e-4
    assert contract.evaluation["tflite"] == load_contract(float_model).evaluation["tflite"]  # kept
    assert file_sha256(model) == file_sha256(float_model)  # the model file is not touched
    again = calibrate("--data", str(synthetic_csv))
    assert again.returncode == 0 and load_contract(model).temperature == contract.temperature
    assert load_contract(model).class_bias == contract.class_bias
    missing = calibrate("--data", str(tmp_path / "nowhere.csv"))
    assert missing.returncode == 1 and "error:" in missing.stderr and "nowhere.csv" in missing.stderr
    assert load_contract(model).temperature == contract.temperature


def test_truncated_model_file_is_refused_by_the_runtime(tmp_path, float_model):
    out = tmp_path / "m.tflite"
    out.write_bytes(float_model.read_bytes()[:1000])
    (tmp_path / "m.json").write_text(float_model.with_suffix(".json").read_text())
    with pytest.raises(ContractError, match="cannot be loaded"):
        EmotionClassifier(out, verify_hash=False)


def test_contract_that_disagrees_with_the_interpreter_says_what_differs(tmp_path, float_model):
    out = tmp_path / "m.tflite"
    out.write_bytes(float_model.read_bytes())
    contract = load_contract(float_model)
    save_contract(replace(contract, input_shape=(1, 64, 64, 1), input_dtype="int8"), out)
    with pytest.raises(ContractError) as err:
        EmotionClassifier(out)
    assert "input shape: model [1, 48, 48, 1], contract [1, 64, 64, 1]" in str(err.value)
    assert "input type: model float32, contract int8" in str(err.value)


def test_missing_or_malformed_contract(tmp_path, float_model):
    out = tmp_path / "m.tflite"
    out.write_bytes(float_model.read_bytes())
    with pytest.raises(ContractError, match="m.json not found"):
        EmotionClassifier(out)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ContractError, match="not valid JSON"):
        EmotionClassifier(out)
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["a"]}))
    with pytest.raises(ContractError, match="malformed model contract"):
        EmotionClassifier(out)


def test_contract_mismatches_compares_quantization():
    from edge.contract import ModelContract, Quantization

    contract = ModelContract(
        input_dtype="int8",
        output_dtype="int8",
        input_quantization=Quantization(1.0, -128),
        output_quantization=Quantization(1 / 256, -128),
    )
    inp = {"shape": [1, 48, 48, 1], "dtype": np.int8, "quantization": (1.0, -127)}
    out = {"shape": [1, 7], "dtype": np.int8, "quantization": (1 / 256, -128)}
    assert contract_mismatches(contract, inp, out) == [
        "input quantization: model Quantization(scale=1.0, zero_point=-127), "
        "contract Quantization(scale=1.0, zero_point=-128)"
    ]


def test_views_are_chosen_on_validation_and_ties_go_to_fewer_views():
    from converter.convert import choose_views

    assert (
        choose_views({"accuracy": {"single": 0.60, "mirror": 0.61, "mirror-shift": 0.62}}) == "mirror-shift"
    )
    assert choose_views({"accuracy": {"single": 0.60, "mirror": 0.61, "mirror-shift": 0.61}}) == "mirror"
    assert choose_views({"accuracy": {"single": 0.63, "mirror": 0.61, "mirror-shift": 0.62}}) == "single"


def test_face_normalization_comes_from_the_run_and_two_runs_that_disagree_are_refused(tmp_path, caplog):
    """A wrong normalization would pass every check (both sides would get it) and lose
    accuracy on the box: it is taken from the run, said when nothing tells, refused when
    the run folder of the .keras file and --run-dir disagree."""
    import logging

    from converter.__main__ import chosen_face_normalization
    from training.run_folder import RunFolder
    from training.settings import TrainingError

    def run_folder(name: str, normalization: str):
        folder = tmp_path / name
        folder.mkdir()
        settings = {"data": "f.csv", "face_normalization": normalization}
        (folder / "settings.json").write_text(json.dumps(settings))
        return folder

    equalized, plain = run_folder("eq", "equalize"), run_folder("plain", "none")

    def chosen(option: str, keras: Path, run: Path | None = None) -> str:
        settings = RunFolder(run).settings() if run else None
        return chosen_face_normalization(option, str(keras), settings, str(run) if run else None)

    assert chosen("auto", equalized / "best.keras") == "equalize"
    assert chosen("auto", tmp_path / "m.keras", equalized) == "equalize"
    assert chosen("none", equalized / "best.keras") == "none"  # said outright
    with pytest.raises(TrainingError, match=r"trained with face normalization 'equalize'.*says 'none'"):
        chosen("auto", equalized / "best.keras", plain)
    with caplog.at_level(logging.WARNING):
        assert chosen("auto", tmp_path / "loose.keras") == "none"
    assert "no run's settings say how its faces were normalized; assuming none" in caplog.text
