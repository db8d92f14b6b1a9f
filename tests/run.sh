#!/usr/bin/env bash
# The test command of README.md (and exactly what .ci/run runs), for a fresh machine:
# installs what the tests need (system packages when missing: Mosquitto, Chromium, ..., a virtual environment with
# the project and its train/test extras), then runs the whole suite.
#   bash tests/run.sh [pytest arguments]
#   bash tests/run.sh --edge [pytest arguments]
#       the kiosk box's check after installing: a virtual environment with the base install
#       and the test tools only (no TensorFlow, which has no wheel for some boxes); the tests
#       that need TensorFlow are skipped, each saying so.
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
# the dashboard's browser tests: Debian's Chromium, driven by Playwright (no browser download)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Debian's python3 has no venv module (ensurepip) without python3-venv (or python3.X-venv).
if ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
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
  extras="test"
else
  venv=.venv
  extras="train,test"
fi
if [ ! -x $venv/bin/python ]; then
  echo "creating the virtual environment $venv (fer-kiosk[$extras])"
  "$python" -m venv $venv
fi
$venv/bin/python -m pip install -q --upgrade pip >/dev/null
$venv/bin/python -m pip install -q -e ".[$extras]"

# A second runtime to prove the bundled model also loads in tflite-runtime 2.14 (32-bit ARM
# boxes get it instead of LiteRT); it needs numpy<2, hence its own environment.
if [ ! -x .venv-tflite214/bin/python ]; then
  if "$python" -m venv .venv-tflite214 && .venv-tflite214/bin/python -m pip install -q "tflite-runtime==2.14.0" "numpy<2"; then
    :
  else
    echo "note: tflite-runtime 2.14 is not installable here; its compatibility test will be skipped"
    rm -rf .venv-tflite214
  fi
fi
[ -x .venv-tflite214/bin/python ] && export FER_KIOSK_TFLITE214_PYTHON="$PWD/.venv-tflite214/bin/python"

# Lint and format first: fast, and the rules are pinned (pyproject.toml, ruff in the test extra).
$venv/bin/ruff check .
$venv/bin/ruff format --check .

set +e
$venv/bin/python -m pytest "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit $status
