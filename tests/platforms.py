"""The base install's requirements on another machine, read from pyproject.toml's markers.

    python -m tests.platforms armv7l     # one requirement a line, as pip would select them

tests/run.sh installs the armv7l set into .venv-tflite214 (on x86: the same versions a 32-bit
Raspberry Pi gets, so the model is proven to load and classify with them);
tests/test_platforms.py checks the sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements_for(machine: str, python_version: str = "3.11") -> list[Requirement]:
    """The base dependencies whose markers hold on Linux on ``machine`` (markers dropped)."""
    return select(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"], machine, python_version)


def select(requirements: list[str], machine: str, python_version: str = "3.11") -> list[Requirement]:
    """Those of ``requirements`` (PEP 508 strings: pyproject's, or a wheel's Requires-Dist)
    that pip installs on Linux on ``machine`` without extras, markers dropped."""
    environment = {
        **default_environment(),
        "platform_machine": machine,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "extra": "",
    }
    chosen = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            chosen.append(requirement)
    return chosen


if __name__ == "__main__":
    for requirement in requirements_for(sys.argv[1] if len(sys.argv) > 1 else "armv7l"):
        print(requirement)
