#!/usr/bin/env bash
# The first command of README.md: on a fresh Debian/Ubuntu machine, set up everything the
# kiosk needs and run the daemon on its defaults (camera 0, broker on localhost:1883, the
# bundled model):
#   bash deploy/quickstart.sh                      # the webcam
#   bash deploy/quickstart.sh --source clip.mp4    # a recording instead (any `fer-kiosk run` option)
# It installs python3-venv and Mosquitto when they are missing, starts Mosquitto when no
# broker listens on localhost:1883, installs fer-kiosk into .venv as a user gets it (not
# editable), then runs `fer-kiosk run --config config.yaml`. Stop it with Ctrl-C (a Mosquitto
# it started keeps running: it says how to stop that).
# For a kiosk box that runs it as a service, use deploy/install.sh (docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${FER_KIOSK_VENV:-.venv}
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

# Before anything is installed: a machine no TFLite runtime is built for (armv6l, a 32-bit
# Python on a 64-bit kernel, ...) is refused, saying why and what to use instead.
# shellcheck source=deploy/platform.sh
source deploy/platform.sh
if [ "$(uname -m)" = armv6l ]; then
  echo "quickstart: cannot run here: $(fer_kiosk_armv6l)" >&2
  exit 1
fi
if command -v "$python" >/dev/null 2>&1 && ! problem=$(fer_kiosk_platform_problem "$python"); then
  echo "quickstart: cannot run here: $problem" >&2
  exit 1
fi

broker_listening() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }

missing=()
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
if ! broker_listening && ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  missing+=(mosquitto mosquitto-clients)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "quickstart: installing system packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stop_broker=""  # how to stop the Mosquitto this script starts (it outlives the daemon)
if broker_listening; then
  echo "quickstart: an MQTT broker already listens on localhost:1883"
else
  echo "quickstart: starting Mosquitto on localhost:1883"
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] \
      && $sudo_cmd systemctl start mosquitto 2>/dev/null; then
    stop_broker="${sudo_cmd:+$sudo_cmd }systemctl stop mosquitto"
  else
    # No service manager (a container): Mosquitto 2 alone listens on loopback only.
    mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    "$mosquitto" -d -p 1883
    pid=$(pgrep -n -x mosquitto 2>/dev/null || true)
    stop_broker=${pid:+kill $pid}
    stop_broker=${stop_broker:-pkill -x mosquitto}
  fi
  for _ in $(seq 50); do broker_listening && break; sleep 0.1; done
  broker_listening || { echo "quickstart: Mosquitto did not start on localhost:1883" >&2; exit 1; }
fi

[ -x "$venv/bin/python" ] || { echo "quickstart: creating $venv"; "$python" -m venv "$venv"; }
echo "quickstart: installing fer-kiosk into $venv (pip install .)"
"$venv/bin/python" -m pip install -q --disable-pip-version-check .
echo "quickstart: $("$venv/bin/fer-kiosk" --version); in another terminal: $venv/bin/fer-kiosk watch --config config.yaml"
# Ctrl-C (or SIGTERM) stops the daemon; the script then says what it leaves running.
trap : INT TERM
status=0
"$venv/bin/fer-kiosk" run --config config.yaml "$@" || status=$?
if [ -n "$stop_broker" ]; then
  echo "quickstart: the Mosquitto it started still listens on localhost:1883; to stop it: $stop_broker"
fi
exit $status
