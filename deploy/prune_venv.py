"""Removes from the kiosk's virtual environment what the daemon never loads.

pip installs whole wheels: LiteRT brings its GPU accelerator and NPU compiler plugins,
numpy its own test suite, OpenCV cascades for cats and licence plates, and the venv pip and
setuptools. On a small box that is a third of the install. ``deploy/install.sh`` runs this
after pip, with the venv's own Python, then checks that the daemon still loads (a failed
check names --no-prune); re-running install.sh brings pip back with ensurepip first.

    VENV/bin/python deploy/prune_venv.py VENV [--dry-run]

Each rule is a glob relative to site-packages and the reason the daemon does not need it.
A rule that matches nothing is fine (another version of a package may not ship the part).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

PRUNE: tuple[tuple[str, str], ...] = (
    ("pip", "installs nothing at run time; install.sh restores it with ensurepip to upgrade"),
    ("pip-*.dist-info", "pip's metadata"),
    ("setuptools", "a build tool; the project is installed as a built wheel"),
    ("setuptools-*.dist-info", "setuptools' metadata"),
    ("pkg_resources", "part of setuptools"),
    ("_distutils_hack", "part of setuptools"),
    ("distutils-precedence.pth", "part of setuptools"),
    (
        "ai_edge_litert/libLiteRtWebGpuAccelerator.so",
        "GPU accelerator of LiteRT's CompiledModel API; the daemon runs the CPU Interpreter",
    ),
    ("ai_edge_litert/vendors", "NPU compiler plugins (Qualcomm, MediaTek, Google Tensor, ...)"),
    ("ai_edge_litert/tools", "command-line tools that compile models for NPUs"),
    ("ai_edge_litert/aot", "ahead-of-time compilation for NPUs"),
    ("numpy/tests", "numpy's own test suite"),
    ("numpy/*/tests", "numpy's own test suite"),
    ("numpy/*/*/tests", "numpy's own test suite"),
    ("numpy/f2py", "the Fortran binding generator"),
    ("numpy/distutils", "numpy's old build tooling"),
    ("cv2/data/haarcascade_[!f]*.xml", "cascades for eyes, bodies, smiles and licence plates"),
    ("cv2/data/haarcascade_frontalcatface*.xml", "cascades for cats"),
    ("cv2/data/haarcascade_fullbody.xml", "a cascade for whole bodies"),
    ("numpy/**/*.pyi", "type stubs, read by type checkers, never at run time"),
    ("cv2/**/*.pyi", "type stubs, read by type checkers, never at run time"),
)

# Never removed, whatever a rule says: what the daemon loads.
KEEP = (
    "cv2/cv2*.so",
    "cv2/data/haarcascade_frontalface_default.xml",
    "ai_edge_litert/interpreter.py",
    "ai_edge_litert/_pywrap_litert_interpreter_wrapper*.so",
    "ai_edge_litert/libLiteRt.so",
    "ai_edge_litert/libpywrap_litert_common.so",
)


def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise SystemExit(f"error: {venv} has no lib/python3*/site-packages: not a virtual environment")
    return found[-1]


def disk_bytes(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_blocks * 512
    return sum(
        (Path(root) / name).lstat().st_blocks * 512
        for root, dirs, files in os.walk(path)
        for name in dirs + files
    )


def planned(packages: Path) -> list[tuple[Path, str]]:
    """(path, reason) of everything the rules match, minus what KEEP protects."""
    keep = {p.resolve() for pattern in KEEP for p in packages.glob(pattern)}
    chosen: dict[Path, str] = {}
    for pattern, reason in PRUNE:
        for path in sorted(packages.glob(pattern)):
            inside = {path.resolve()} | ({p.resolve() for p in path.rglob("*")} if path.is_dir() else set())
            if inside & keep:
                raise SystemExit(f"error: rule {pattern!r} would remove {path}, which the daemon loads")
            chosen.setdefault(path, reason)
    # A match inside another match goes with it.
    return [
        (path, reason)
        for path, reason in sorted(chosen.items())
        if not any(other in path.parents for other in chosen)
    ]


def prune(venv: Path, dry_run: bool = False) -> int:
    packages = site_packages(venv)
    total = 0
    for path, reason in planned(packages):
        size = disk_bytes(path)
        total += size
        print(
            f"{'would remove' if dry_run else 'removed'} {path.relative_to(packages)} "
            f"({size / 2**20:.1f} MiB): {reason}"
        )
        if dry_run:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    print(f"{'would free' if dry_run else 'freed'} {total / 2**20:.1f} MiB in {packages}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    args = parser.parse_args(argv)
    prune(args.venv, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
