#!/usr/bin/env bash
# The test command of README.md (and exactly what .ci/run runs), for a fresh machine:
# installs what the tests need (system packages when missing: Mosquitto, Chromium, ..., a
# virtual environment .venv-test with the project and its train/test extras), then runs the
# 64-bit ARM install under emulation (tests/arm64.sh) and the whole suite.
#   bash tests/run.sh [pytest arguments]
#   bash tests/run.sh --edge [pytest arguments]
#       the kiosk box's check after installing: a virtual environment .venv-edge with the base
#       install and the edge-test tools only (no TensorFlow, which has no wheel for some boxes;
#       no browser, no linter); the tests that need what it lacks are skipped, each saying so.
# The user's own .venv (deploy/quickstart.sh's, "as users get it") is never touched.
# tests/arm64.sh runs when pytest gets no arguments (the whole suite, as CI runs it) or with
# FER_KIOSK_ARM64=1, at most FER_KIOSK_ARM64_TIMEOUT seconds (default 1500: a first run builds
# its cached chroot); FER_KIOSK_ARM64=0 leaves it out. It skips, saying why, where the
# machine cannot emulate arm64 (not root, no binfmt_misc, no Debian mirror).
# Set FER2013_PATH (fer2013.csv[.gz] or the image-folder root) to also run the tests that
# measure the bundled model on FER2013; they are skipped, with that reason, without it.
set -euo pipefail
cd "$(dirname "$0")/.."

edge_only=0
if [ "${1:-}" = "--edge" ]; then
  edge_only=1
  shift
fi
python=${PYTHON:-python3}

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# the dashboard's browser tests: Debian's Chromium, driven by Playwright (no browser download);
# not on the kiosk box, whose check has no browser tests
[ $edge_only -eq 1 ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Debian's python3 has no venv module (ensurepip) without python3-venv (or python3.X-venv);
# the installer's tests make the service's venv from Debian's /usr/bin/python3 whatever runs them.
if ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1 \
    || { [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1; }; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $edge_only -eq 1 ]; then
  venv=.venv-edge
  extras="edge-test"
else
  venv=.venv-test
  extras="train,test"
fi
if [ ! -x $venv/bin/python ]; then
  echo "creating the virtual environment $venv (fer-kiosk[$extras])"
  "$python" -m venv $venv
fi
$venv/bin/python -m pip install -q --upgrade pip >/dev/null
# setuptools' ten-line note on every editable install ("Editable installation ... be careful
# with folders ... with the same name as your package") says nothing about this project.
PYTHONWARNINGS="ignore:Editable installation:UserWarning" $venv/bin/python -m pip install -q -e ".[$extras]"

# The 32-bit ARM set (pyproject.toml's markers for armv7l: tflite-runtime 2.14, numpy<2,
# opencv-python-headless<4.12, ...) on this machine, to prove those versions load the model
# and classify (tests/test_platforms.py, FER_KIOSK_TFLITE214_PYTHON); its own environment.
if [ $edge_only -eq 0 ]; then
  mapfile -t arm32 < <($venv/bin/python -m tests.platforms armv7l)
  stamp=.venv-tflite214/fer-kiosk-requirements.txt
  if [ "$(cat $stamp 2>/dev/null)" != "$(printf '%s\n' "${arm32[@]}")" ]; then
    if { [ -x .venv-tflite214/bin/python ] || "$python" -m venv .venv-tflite214; } \
        && .venv-tflite214/bin/python -m pip install -q --disable-pip-version-check "${arm32[@]}"; then
      printf '%s\n' "${arm32[@]}" >$stamp
    else
      echo "note: the 32-bit ARM set (${arm32[*]}) is not installable here; its tests will be skipped"
      rm -rf .venv-tflite214
    fi
  fi
  [ -x .venv-tflite214/bin/python ] && export FER_KIOSK_TFLITE214_PYTHON="$PWD/.venv-tflite214/bin/python"
fi

# Lint and format first: fast, and the rules are pinned (pyproject.toml, ruff in the test extra).
# Not on the kiosk box: it checks what runs there, not the code's style.
if [ $edge_only -eq 0 ]; then
  $venv/bin/ruff check .
  $venv/bin/ruff format --check .
fi

# The wheel on 64-bit ARM (a Raspberry Pi's userland under qemu), before pytest so that
# pytest's summary stays the last line.
arm64_status=0
if [ $edge_only -eq 0 ] && { [ "${FER_KIOSK_ARM64:-}" = 1 ] || { [ $# -eq 0 ] && [ "${FER_KIOSK_ARM64:-}" != 0 ]; }; }; then
  cap=${FER_KIOSK_ARM64_TIMEOUT:-1500}
  set +e
  PYTHON=$venv/bin/python timeout "$cap" bash tests/arm64.sh
  arm64_status=$?
  set -e
  case $arm64_status in
    0 | 77) arm64_status=0 ;;
    124) echo "tests/arm64.sh: FAILED: not done within FER_KIOSK_ARM64_TIMEOUT=$cap s" >&2 ;;
    *) echo "tests/arm64.sh: FAILED (exit $arm64_status)" >&2 ;;
  esac
else
  echo "tests/arm64.sh: not run (pytest arguments given, --edge, or FER_KIOSK_ARM64=0; FER_KIOSK_ARM64=1 runs it)"
fi

set +e
$venv/bin/python -m pytest "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
[ $status -ne 0 ] || status=$arm64_status
exit $status
