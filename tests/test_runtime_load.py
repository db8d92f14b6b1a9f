"""A TFLite runtime that will not load or run here is one line naming the versions and the fix,
exit 78 (EX_CONFIG), never a traceback.

The failures are the ones seen on 32-bit Raspberry Pi OS (issue 36): tflite-runtime 2.14 was
built against NumPy 1.x, and beside NumPy 2 NumPy prints a warning, "_ARRAY_API not found", and
the interpreter's constructor raises SystemError ("<built-in method CreateWrapperFromFile>
returned a result with an exception set"). Here they are forced: in-process by replacing the
interpreter class, and in a real `fer-kiosk check` / `run` process by stand-in runtime packages
on PYTHONPATH (an `ai_edge_litert` that is not installed, a `tflite_runtime` that fails as the
real one does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edge.vision.classifier as classifier_module
from edge import DEFAULT_MODEL
from edge.cli import EX_CONFIG
from edge.contract import ContractError
from edge.vision.classifier import EmotionClassifier, RuntimeMissingError
from tests.conftest import ROOT

# What NumPy 2 writes to stderr when a module built against NumPy 1.x asks for its C API.
NUMPY_WARNING = (
    "\nA module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.1.3 as it may crash. "
    "To support both 1.x and 2.x\nversions of NumPy, modules must be compiled with NumPy 2.0.\n"
    "Traceback (most recent call last):  File ...\nAttributeError: _ARRAY_API not found\n"
)


class NumpyOneInterpreter:
    """The constructor of tflite-runtime 2.14's Interpreter beside NumPy 2."""

    def __init__(self, model_path, num_threads=1):
        sys.stderr.write(NUMPY_WARNING)
        try:
            raise ImportError("numpy.core.multiarray failed to import")
        except ImportError as err:
            raise SystemError(
                "<built-in method CreateWrapperFromFile of PyCapsule object at 0x7f> "
                "returned a result with an exception set"
            ) from err


def test_a_numpy_abi_mismatch_is_one_line_with_the_versions_and_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(
        classifier_module, "load_interpreter_class", lambda: (NumpyOneInterpreter, "tflite-runtime 2.14.0")
    )
    with pytest.raises(ContractError) as caught:
        EmotionClassifier(DEFAULT_MODEL)
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, RuntimeMissingError)
    assert "tflite-runtime 2.14.0 was built against NumPy 1.x" in message
    assert f"NumPy {np.__version__}" in message and "-m pip install 'numpy<2'" in message
    assert "opencv-python-headless>=4.8,<4.12" in message
    # NumPy's multi-line warning went into the diagnosis, not onto the screen.
    assert "compiled using NumPy 1.x" not in capsys.readouterr().err


def test_any_other_system_error_names_the_runtime_and_the_versions(monkeypatch):
    class Broken:
        def __init__(self, model_path, num_threads=1):
            raise SystemError(
                "<built-in method CreateWrapperFromFile> returned NULL without setting an error"
            )

    monkeypatch.setattr(classifier_module, "load_interpreter_class", lambda: (Broken, "ai-edge-litert 9.9"))
    with pytest.raises(RuntimeMissingError) as caught:
        EmotionClassifier(DEFAULT_MODEL)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("ai-edge-litert 9.9 cannot run here (SystemError: <built-in method")
    assert f"NumPy {np.__version__}, Python" in message and "--force-reinstall" in message


def test_check_says_it_in_one_line_and_exits_78(monkeypatch, capsys, tmp_path):
    from edge.cli import main

    monkeypatch.setattr(
        classifier_module, "load_interpreter_class", lambda: (NumpyOneInterpreter, "tflite-runtime 2.14.0")
    )
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "config.yaml").read_text())
    assert main(["check", "--config", str(config)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: tflite-runtime 2.14.0 was built against NumPy 1.x")
    assert "Traceback" not in err and "SystemError" not in err


# ---- a real process with stand-in runtimes -----------------------------------------------


def _stand_ins(tmp_path: Path, tflite_interpreter: str | None) -> dict[str, str]:
    """PYTHONPATH with an `ai_edge_litert` that is not there and, unless None, a `tflite_runtime`
    whose interpreter module is ``tflite_interpreter``."""
    path = tmp_path / "stand-ins"
    (path / "ai_edge_litert").mkdir(parents=True)
    (path / "ai_edge_litert/__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ai_edge_litert'\", name='ai_edge_litert')\n"
    )
    if tflite_interpreter is None:
        (path / "tflite_runtime").mkdir()
        (path / "tflite_runtime/__init__.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'tflite_runtime'\", name='tflite_runtime')\n"
        )
    else:
        (path / "tflite_runtime").mkdir()
        (path / "tflite_runtime/__init__.py").write_text("__version__ = '2.14.0'\n")
        (path / "tflite_runtime/interpreter.py").write_text(textwrap.dedent(tflite_interpreter))
    return {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{ROOT}"}


NUMPY_ONE_MODULE = f"""
    import sys
    WARNING = {NUMPY_WARNING!r}

    class Interpreter:
        def __init__(self, model_path=None, num_threads=1):
            sys.stderr.write(WARNING)
            try:
                raise ImportError("numpy.core.multiarray failed to import")
            except ImportError as err:
                raise SystemError(
                    "<built-in method CreateWrapperFromFile of PyCapsule object at 0x7f> "
                    "returned a result with an exception set"
                ) from err
"""

IMPORT_FAILS_MODULE = f"""
    import sys
    sys.stderr.write({NUMPY_WARNING!r})
    raise ImportError("numpy.core.multiarray failed to import")
"""


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (NUMPY_ONE_MODULE, "tflite-runtime 2.14.0 was built against NumPy 1.x"),
        (IMPORT_FAILS_MODULE, "tflite-runtime 2.14.0 was built against NumPy 1.x"),
        (None, "no TFLite runtime is installed"),
    ],
    ids=["constructor-SystemError", "import-ImportError", "no-runtime"],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_the_cli_exits_78_with_one_line(tmp_path, module, expected, command):
    config = tmp_path / "config.yaml"
    # run: a broker port nobody listens on; the model is loaded before anything connects.
    config.write_text((ROOT / "config.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "edge", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**_stand_ins(tmp_path, module), "FER_KIOSK_LOG_FORMAT": "plain"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == EX_CONFIG, output
    assert "Traceback" not in output and "_ARRAY_API" not in output, output
    lines = [line for line in output.splitlines() if expected in line]
    assert len(lines) == 1, output
    assert f"NumPy {np.__version__}" in lines[0] and " -m pip install " in lines[0], lines[0]


def test_the_runtimes_delegate_notice_is_not_printed():
    """LiteRT's C++ prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on stderr,
    in its own format, for every model it loads: every command would show it."""
    code = (
        "from edge import DEFAULT_MODEL\n"
        "from edge.vision.classifier import EmotionClassifier\n"
        "EmotionClassifier(DEFAULT_MODEL)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XNNPACK" not in done.stderr and "INFO:" not in done.stderr, done.stderr
