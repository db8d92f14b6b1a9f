"""The bundled default model, run in the edge runtime (LiteRT) on a real photograph."""

import numpy as np
import pytest

from edge import DEFAULT_MODEL
from edge.config import DetectorConfig
from edge.contract import EMOTIONS, CropRule, file_sha256, load_contract
from edge.vision.classifier import EmotionClassifier, contract_mismatches
from edge.vision.detect import HaarFaceDetector
from edge.vision.pipeline import FramePipeline
from edge.vision.preprocess import crop_face, expand_box, to_gray


def test_default_model_is_small_and_its_contract_matches_the_interpreter():
    assert DEFAULT_MODEL.stat().st_size <= 150 * 1024
    contract = load_contract(DEFAULT_MODEL)
    assert contract.sha256 == file_sha256(DEFAULT_MODEL)
    assert contract.labels == EMOTIONS and contract.model_format == "int8"
    classifier = EmotionClassifier(DEFAULT_MODEL)
    assert contract_mismatches(contract, classifier._input, classifier._output) == []
    assert list(classifier._input["shape"][1:]) == [48, 48, 1]
    assert classifier.runtime.startswith(("ai-edge-litert", "tflite-runtime"))


def test_default_model_contract_records_its_provenance():
    contract = load_contract(DEFAULT_MODEL)
    assert contract.source["parameters"] == 58_423
    assert contract.training_data["usage"] == "Training"
    assert contract.evaluation["faces"] > 0 and "tflite" in contract.evaluation
    assert "also_runs_in" in contract.checked_with  # proven in tflite-runtime 2.14 too


def test_haar_finds_the_astronauts_face(astronaut_bgr):
    boxes = HaarFaceDetector(DetectorConfig(detect_width=0)).detect(to_gray(astronaut_bgr))
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200  # her face, not her suit


def test_smiling_astronaut_is_happy(astronaut_bgr):
    pipeline = FramePipeline(
        HaarFaceDetector(DetectorConfig(detect_width=0)), EmotionClassifier(DEFAULT_MODEL)
    )
    faces = pipeline.process(astronaut_bgr)
    assert len(faces) == 1
    probs = faces[0].probabilities
    assert EMOTIONS[int(np.argmax(probs))] == "happy", dict(zip(EMOTIONS, probs.round(3)))
    assert abs(probs.sum() - 1) < 0.02


def test_batch_and_single_classification_agree(astronaut_bgr):
    classifier = EmotionClassifier(DEFAULT_MODEL)
    gray = to_gray(astronaut_bgr)
    crops = np.stack(
        [
            crop_face(gray, (170 + d, 60, 100, 100), classifier.contract.crop, (48, 48))
            for d in range(0, 40, 8)
        ]
    )
    batch = classifier.classify(crops)
    single = np.concatenate([classifier.classify(c) for c in crops])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_crop_rule_squares_adds_margin_and_pads_at_edges():
    assert expand_box((10, 10, 20, 40), CropRule(margin=0.0)) == (0, 10, 40, 40)
    assert expand_box((10, 10, 20, 20), CropRule(margin=0.25)) == (5, 5, 30, 30)
    frame = np.full((100, 100), 7, np.uint8)
    crop = crop_face(frame, (-20, -20, 60, 60), CropRule(), (48, 48))
    assert crop.shape == (48, 48) and (crop == 7).all()
    with pytest.raises(ValueError):
        crop_face(frame, (200, 200, 10, 10), CropRule(), (48, 48))


def test_views_in_the_contract_average_the_crop_seen_each_way(tmp_path, astronaut_bgr):
    from dataclasses import replace

    from edge.contract import VIEW_SETS, save_contract
    from edge.vision.arrays import apply_view

    model = tmp_path / "m.tflite"
    model.write_bytes(DEFAULT_MODEL.read_bytes())
    contract = replace(load_contract(DEFAULT_MODEL), temperature=1.0, class_bias=())
    save_contract(replace(contract, views=VIEW_SETS["single"]), model)
    plain = EmotionClassifier(model)
    gray = to_gray(astronaut_bgr)
    crops = np.stack([crop_face(gray, (170 + d, 60, 100, 100), contract.crop, (48, 48)) for d in (0, 12)])
    for name in ("mirror", "mirror-shift"):
        views = VIEW_SETS[name]
        expected = np.mean([plain.classify(apply_view(crops, view)) for view in views], axis=0)
        save_contract(replace(contract, views=views), model)
        np.testing.assert_allclose(EmotionClassifier(model).classify(crops), expected, atol=1e-6)


def test_the_contracts_calibration_rescales_the_averaged_probabilities(tmp_path, astronaut_bgr):
    from dataclasses import replace

    from edge.contract import ContractError, save_contract
    from edge.vision.calibration import PROBABILITY_FLOOR, calibrate

    model = tmp_path / "m.tflite"
    model.write_bytes(DEFAULT_MODEL.read_bytes())
    contract = replace(load_contract(DEFAULT_MODEL), class_bias=())  # raw: no balance
    gray = to_gray(astronaut_bgr)
    crops = crop_face(gray, (170, 60, 100, 100), contract.crop, (48, 48))[None]
    save_contract(replace(contract, temperature=1.0), model)
    raw = EmotionClassifier(model).classify(crops)
    save_contract(replace(contract, temperature=2.0), model)
    softened = EmotionClassifier(model).classify(crops)
    np.testing.assert_allclose(softened, calibrate(raw, 2.0), atol=1e-6)
    assert softened.max() < raw.max() and softened.argmax() == raw.argmax()
    save_contract(replace(contract, temperature=0.0), model)
    with pytest.raises(ContractError, match="temperature"):
        EmotionClassifier(model)
    # The class balance is added to the log-probabilities before the temperature divides them.
    runner_up = int(np.argsort(raw[0])[-2])
    bias = tuple(5.0 if c == runner_up else 0.0 for c in range(len(contract.labels)))
    save_contract(replace(contract, temperature=2.0, class_bias=bias), model)
    balanced = EmotionClassifier(model).classify(crops)
    # A class the int8 output rounds to 0 on every view is floored before its log is taken.
    by_hand = np.exp(
        (np.log(np.clip(raw[0].astype(np.float64), PROBABILITY_FLOOR, 1.0)) + np.array(bias)) / 2.0
    )
    np.testing.assert_allclose(balanced[0], by_hand / by_hand.sum(), atol=1e-5)
    assert balanced.argmax() == runner_up
    assert load_contract(model).class_bias == bias
    # A contract without a balance leaves the key out, as contracts before it, and reads back ().
    assert "class_bias" not in contract.to_dict()
    assert type(contract).from_dict(contract.to_dict()).class_bias == ()
    for wrong in ((1.0,), (float("nan"),) * len(contract.labels)):
        save_contract(replace(contract, class_bias=wrong), model)
        with pytest.raises(ContractError, match="class_bias"):
            EmotionClassifier(model)


def test_apply_view_mirrors_then_shifts_repeating_the_edge():
    from edge.contract import View
    from edge.vision.arrays import apply_view

    crops = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    assert (apply_view(crops, View()) == crops).all()
    assert (apply_view(crops, View(flip=True)) == crops[:, :, ::-1]).all()
    right = apply_view(crops, View(dx=2))
    assert (right[:, :, 2:] == crops[:, :, :3]).all() and (right[:, :, :2] == crops[:, :, :1]).all()
    up = apply_view(crops, View(flip=True, dy=-1))
    assert (up[:, :3] == crops[:, 1:, ::-1]).all() and (up[:, 3] == crops[:, 3, ::-1]).all()


def test_contract_written_with_flip_average_still_loads_as_views(tmp_path):
    import json

    from edge.contract import VIEW_SETS, ModelContract

    data = load_contract(DEFAULT_MODEL).to_dict()
    data.pop("views")
    for flag, name in ((True, "mirror"), (False, "single")):
        assert ModelContract.from_dict({**data, "flip_average": flag}).views == VIEW_SETS[name]
    from edge.contract import ContractError

    with pytest.raises(ContractError, match="views"):
        ModelContract.from_dict(json.loads(json.dumps({**data, "views": []})))


def test_config_can_trade_the_contracts_views_for_cpu():
    from edge.config import ConfigError, parse_config
    from edge.contract import VIEW_SETS
    from edge.daemon.service import build_pipeline

    assert build_pipeline(parse_config({})).classifier.contract.views == load_contract(DEFAULT_MODEL).views
    single = build_pipeline(parse_config({"model": {"views": "single"}}))
    assert single.classifier.contract.views == VIEW_SETS["single"]
    with pytest.raises(ConfigError, match="model.views"):
        parse_config({"model": {"views": "all"}})


def test_the_contracts_face_normalization_is_applied_by_the_classifier(tmp_path):
    """A contract saying "equalize" makes the classifier equalize each crop before its
    views (each view, after mirroring and shifting): with mirror views, which commute with
    it, the same answers as a "none" contract given equalized crops."""
    import shutil
    from dataclasses import replace

    import cv2

    from edge.contract import VIEW_SETS, ContractError, save_contract
    from edge.vision.preprocess import normalize_faces

    model = tmp_path / "m.tflite"
    shutil.copy(DEFAULT_MODEL, model)
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), model.with_suffix(".json"))
    plain = EmotionClassifier(model)
    assert plain.contract.face_normalization == "none"  # contracts before the field: none
    rng = np.random.default_rng(0)
    crops = (rng.random((4, 48, 48)) * 120 + 40).astype(np.uint8)  # low contrast, like a dim camera
    equalized = normalize_faces(crops, "equalize")
    assert all((equalized[i] == cv2.equalizeHist(crops[i])).all() for i in range(4))
    assert normalize_faces(crops, "none") is crops
    # Each view is normalized (after mirroring and shifting); a mirror commutes with it.
    mirror = VIEW_SETS["mirror"]
    save_contract(replace(plain.contract, views=mirror), model)
    plain = EmotionClassifier(model)
    save_contract(replace(plain.contract, face_normalization="equalize"), model)
    normalizing = EmotionClassifier(model)
    assert np.allclose(normalizing.classify(crops), plain.classify(equalized), atol=1e-6)
    assert np.allclose(normalizing.invoke(crops), plain.invoke(equalized), atol=1e-6)
    views = [mirror] * 4
    expected = plain.classify_with(equalized, views)
    assert np.allclose(normalizing.classify_with(crops, views), expected, atol=1e-6)
    save_contract(replace(plain.contract, face_normalization="clahe-ish"), model)
    with pytest.raises(ContractError, match="face_normalization 'clahe-ish' is not one of none, equalize"):
        EmotionClassifier(model)


def test_a_contract_from_another_release_is_refused_naming_what_this_edge_cannot_apply():
    from edge.contract import CONTRACT_VERSION, ContractError, ModelContract

    data = load_contract(DEFAULT_MODEL).to_dict()
    assert ModelContract.from_dict(data) == load_contract(DEFAULT_MODEL)
    # A field a newer converter might add (here a made-up per-view weighting): ignoring it would
    # change the answers, so it is refused by name, not as a bare "malformed" TypeError.
    with pytest.raises(ContractError, match="does not know: view_weights, zz_extra .*upgrade fer-kiosk"):
        ModelContract.from_dict({**data, "view_weights": [1.0], "zz_extra": 1})
    # Inside the objects too: a view's new setting ignored would average other views.
    views = [dict(view) for view in data["views"]]
    views[3]["rotate"] = 10
    crop = {**data["crop"], "aspect": 1.2}
    with pytest.raises(ContractError, match=r"does not know: crop\.aspect, views\[3\]\.rotate "):
        ModelContract.from_dict({**data, "views": views, "crop": crop})
    # The version is read first, so a contract of another release says so even with new fields.
    with pytest.raises(ContractError, match=f"version 2 is not supported \\(expected {CONTRACT_VERSION}\\)"):
        ModelContract.from_dict({**data, "version": 2, "view_weights": [1.0]})
    with pytest.raises(ContractError, match="version 1.0 is not supported"):
        ModelContract.from_dict({**data, "version": 1.0})
