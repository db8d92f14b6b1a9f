"""The dependency sets of the platforms a kiosk box may be (pyproject.toml's markers), and the
32-bit ARM set proven on this machine: the same versions load the model and classify.

32-bit ARM (armv7l, or armv8l: a 32-bit userland over a 64-bit kernel with pip run under
`linux32`) cannot use LiteRT (no 32-bit wheel) and gets tflite-runtime 2.14, built against
NumPy 1.x: beside NumPy 2 it fails to load (issue 36), so its set pins numpy<2 and the OpenCV
releases that allow it (< 4.12). tests/run.sh installs that set into .venv-tflite214
(FER_KIOSK_TFLITE214_PYTHON); the 64-bit ARM install itself is tests/arm64.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest

from tests.conftest import ROOT
from tests.platforms import requirements_for

THIRTY_TWO_BIT_ARM = {
    "tflite-runtime": "==2.14.*",
    "opencv-python-headless": "<4.12,>=4.8",
    "numpy": "<2,>=1.24",
    "paho-mqtt": "<3,>=2.0",
    "pyyaml": ">=6",
}


def _named(machine: str) -> dict[str, str]:
    return {r.name: str(r.specifier) for r in requirements_for(machine)}


@pytest.mark.parametrize("machine", ["armv7l", "armv8l"])
def test_32_bit_arm_gets_tflite_runtime_with_numpy_1_and_an_opencv_that_allows_it(machine):
    assert _named(machine) == THIRTY_TWO_BIT_ARM


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_64_bit_machines_get_litert_and_current_numpy_and_opencv(machine):
    named = _named(machine)
    assert "tflite-runtime" not in named and named["ai-edge-litert"] == ">=1.2"
    assert named["numpy"] == ">=1.24" and named["opencv-python-headless"] == "<5,>=4.8"


def test_armv6l_gets_no_runtime_it_cannot_install():
    """Pi Zero / Pi 1: no TFLite wheel exists; the installers refuse it before pip runs."""
    named = _named("armv6l")
    assert "ai-edge-litert" not in named and "tflite-runtime" not in named


def test_python_m_tests_platforms_prints_the_set_tests_run_sh_installs():
    printed = subprocess.run(
        [os.environ.get("PYTHON", "python3"), "-m", "tests.platforms", "armv7l"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    if printed.returncode != 0 and "No module named 'packaging'" in printed.stderr:
        pytest.skip("the python3 on PATH has no packaging")
    assert printed.returncode == 0, printed.stderr
    assert sorted(printed.stdout.split()) == sorted(str(r) for r in requirements_for("armv7l"))


# ---- the 32-bit ARM versions, on x86 -----------------------------------------------------

TFLITE214_PYTHON = os.environ.get("FER_KIOSK_TFLITE214_PYTHON")
needs_tflite214 = pytest.mark.skipif(
    not TFLITE214_PYTHON,
    reason="FER_KIOSK_TFLITE214_PYTHON is not set (tests/run.sh makes .venv-tflite214 when it can)",
)


def _versions(python: str) -> dict[str, str]:
    script = (
        "import json, importlib.metadata as m\n"
        "names = ('tflite-runtime', 'opencv-python-headless', 'numpy', 'paho-mqtt', 'pyyaml',\n"
        "         'ai-edge-litert')\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@needs_tflite214
def test_the_tflite214_environment_holds_exactly_the_32_bit_arm_set():
    from packaging.version import Version

    versions = _versions(TFLITE214_PYTHON)
    assert "ai-edge-litert" not in versions, versions
    for requirement in requirements_for("armv7l"):
        assert requirement.name in versions, (requirement, versions)
        assert Version(versions[requirement.name]) in requirement.specifier, (requirement, versions)
    print("32-bit ARM set on x86:", versions)


@needs_tflite214
def test_the_32_bit_arm_set_loads_the_model_and_classifies_like_litert(tmp_path, astronaut_bgr):
    """`fer-kiosk check` and `classify` from the checkout, run by the .venv-tflite214 Python:
    tflite-runtime 2.14 with NumPy 1.x and OpenCV < 4.12; the astronaut's emotions agree with
    LiteRT's here within 0.02."""
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "config.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)

    def edge(*args: str, python: str = TFLITE214_PYTHON) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, "-m", "edge", *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )

    check = edge("check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "tflite-runtime 2.14" in check.stdout, check.stdout
    classified = edge("classify", str(photo), "--json")
    assert classified.returncode == 0, classified.stderr
    faces = json.loads(classified.stdout.strip().splitlines()[-1])["faces"]
    assert len(faces) == 1 and faces[0]["emotion"] == "happy", faces

    litert = edge("classify", str(photo), "--json", python=sys.executable)
    assert litert.returncode == 0, litert.stderr
    ours = json.loads(litert.stdout.strip().splitlines()[-1])["faces"]
    assert len(ours) == 1 and ours[0]["box"] == faces[0]["box"], (ours, faces)
    difference = max(abs(ours[0]["probabilities"][k] - v) for k, v in faces[0]["probabilities"].items())
    print(
        f"tflite-runtime 2.14 vs this environment's runtime: largest probability difference {difference:.4f}"
    )
    assert difference <= 0.02
