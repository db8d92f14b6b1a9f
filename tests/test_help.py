"""Every command's --help works on the install that has the command, reads as plain text and
names the command as it was typed; a command that needs the train extra says how to install
it, in one line. Light: no TensorFlow needed (it is hidden from the child processes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Run in a child: TensorFlow and Keras hidden, as on the kiosk's base install.
WITHOUT_TRAIN_EXTRA = """
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("keras", "tensorflow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
module = sys.argv[1]
sys.argv = [module.replace(".", "/") + ".py", *sys.argv[2:]]  # as python -m sets it
runpy.run_module(module, run_name="__main__")
"""


def without_train_extra(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TRAIN_EXTRA, module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "module", ["training", "training.recover", "training.average", "training.evaluate", "converter"]
)
def test_help_works_without_the_train_extra(module):
    done = without_train_extra(module, "--help")
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.startswith(f"usage: python -m {module} "), done.stdout[:200]
    assert "``" not in done.stdout


@pytest.mark.parametrize(
    "module, args",
    [
        ("training.recover", ["--model", "m.tflite", "--data", "f.csv", "--out", "o.keras"]),
        ("training.average", ["--run-dir", "RUN"]),
        ("training.evaluate", ["--model", "best.keras", "--data", "f.csv"]),
    ],
)
def test_running_without_the_train_extra_names_what_to_install(module, args):
    done = without_train_extra(module, *args)
    assert done.returncode == 2, done.stderr[-1500:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert (
        lines[0].startswith(f"error: python -m {module} needs ")
        and "pip install 'fer-kiosk[train]'" in lines[0]
    )


@pytest.mark.parametrize(
    "module, args, line",
    [
        (
            "training",
            ["--data", "f.csv", "--run-dir", "RUN", "--epochs", "-1", "--distill-weight", "5"],
            "error: epochs: must be at least 1, got -1; distill_weight: must be at most 1.0, got 5.0",
        ),
        (
            "converter",
            ["--keras", "m.keras", "--data", "f.csv", "--calibration-faces", "0"]
            + ["--max-accuracy-drop", "-1"],
            "error: --calibration-faces: must be at least 1, got 0; "
            "--max-accuracy-drop: must be at least 0.0, got -1.0",
        ),
    ],
)
def test_a_setting_out_of_range_is_refused_in_one_line_before_anything_loads(module, args, line):
    """As argparse refuses a value of the wrong type (exit 2), so a value out of range: one
    line naming each, before TensorFlow is needed (here it is absent) or any data is read."""
    done = without_train_extra(module, *args)
    assert done.returncode == 2, done.stderr[-1500:]
    assert done.stderr.strip().splitlines() == [line]


@pytest.mark.parametrize(
    "script, main",
    [
        ("fer-kiosk", "edge.cli"),
        ("fer-kiosk-train", "training.__main__"),
        ("fer-kiosk-convert", "converter.__main__"),
    ],
)
def test_console_scripts_call_themselves_by_their_name_in_plain_text(script, main):
    code = f"import sys; sys.argv = ['/usr/bin/{script}', '--help']; from {main} import main; main()"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.startswith(f"usage: {script} "), done.stdout[:200]
    assert "``" not in done.stdout and "python -m" not in done.stdout.split("\n\n")[1], done.stdout[:600]
