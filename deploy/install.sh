#!/usr/bin/env bash
# Install fer-kiosk as a systemd service on Debian / Raspberry Pi OS.
# Run from a checkout of the repository, as root:  deploy/install.sh  (or sudo deploy/install.sh;
# see docs/deploy.md). --dry-run lists every file it would write and every command it would run.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/install.sh [--wheel FILE] [--python PYTHON] [--root DIR] [--dry-run] [--no-venv] [--no-prune]
                         [--no-apt] [--no-start] [--help]        (as root, or with sudo)

Installs fer-kiosk from this repository checkout:
  /opt/fer-kiosk/venv                   virtual environment with the fer-kiosk wheel (the model inside it)
  /opt/fer-kiosk/docs/deploy.md         this documentation
  /etc/fer-kiosk/config.yaml            configuration (kept if it exists; config.yaml.dist beside it)
  /etc/fer-kiosk/credentials            MQTT username/password template, root 0600 (never overwritten)
  /etc/systemd/system/fer-kiosk.service the unit; then daemon-reload, enable, (re)start

Options:
  --wheel FILE install this fer-kiosk wheel (as built by `python -m build`, e.g. dist/*.whl)
               instead of building one from the checkout with `pip wheel`
  --python PYTHON
               the Python the service's venv is made from (default: Debian's /usr/bin/python3,
               which apt-get installs). It must be one the service's user can run: a pyenv or
               other Python under /root or /home is refused (the unit's ProtectHome= hides it)
  --dry-run    change nothing: check the platform, systemd and the Python, then list every
               file that would be written and every command that would run
  --root DIR   install into DIR instead of / (every path is prefixed with DIR). Skips apt-get
               and every systemctl call; the unit is enabled by creating the
               multi-user.target.wants symlink inside DIR. Meant for tests and image builds.
  --no-venv    do not create the virtual environment / run pip (layout only, no downloads)
  --no-prune   keep the whole venv as pip leaves it (by default, parts the daemon never loads
               are removed: pip, setuptools, LiteRT's GPU/NPU plugins, numpy's tests, ...;
               see deploy/prune_venv.py), about 80 MB
  --no-apt     do not run apt-get (the packages are already there, or no network)
  --no-start   enable the unit but do not (re)start it
  -h, --help   this text

No compiler is needed on the box: the daemon is pure Python over binary wheels (LiteRT,
OpenCV, numpy) and speaks to systemd and the journal over their sockets. It refuses, before
changing anything, a machine with no TFLite runtime (armv6l; a 32-bit Python on a 64-bit
kernel) and a system not running systemd, saying what to use instead.

Running it again upgrades the installation (venv, model, unit) and keeps
/etc/fer-kiosk/config.yaml and /etc/fer-kiosk/credentials as they are.
EOF
}

ROOT=""
WHEEL=""
DO_VENV=1
DO_PRUNE=1
DO_APT=1
DO_START=1
DRY=0
PYTHON=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --root)
            [[ $# -ge 2 && -n "$2" ]] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
            ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --wheel)
            [[ $# -ge 2 && -n "$2" ]] || { echo "install.sh: --wheel needs a file" >&2; exit 2; }
            WHEEL="$2"; shift 2 ;;
        --wheel=*) WHEEL="${1#--wheel=}"; shift ;;
        --python)
            [[ $# -ge 2 && -n "$2" ]] || { echo "install.sh: --python needs an interpreter" >&2; exit 2; }
            PYTHON="$2"; shift 2 ;;
        --python=*) PYTHON="${1#--python=}"; shift ;;
        --dry-run) DRY=1; shift ;;
        --no-venv) DO_VENV=0; shift ;;
        --no-prune) DO_PRUNE=0; shift ;;
        --no-apt) DO_APT=0; shift ;;
        --no-start) DO_START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ -n "$WHEEL" ]]; then
    [[ -f "$WHEEL" && "$WHEEL" == *.whl ]] || { echo "install.sh: --wheel $WHEEL is not a .whl file" >&2; exit 2; }
    WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
fi

if [[ -n "$ROOT" ]]; then
    [[ -d "$ROOT" ]] || { echo "install.sh: --root $ROOT is not a directory" >&2; exit 2; }
    ROOT="$(cd "$ROOT" && pwd)"
    [[ "$ROOT" == "/" ]] && ROOT=""
fi

IS_ROOT=0
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=1
if [[ -z "$ROOT" && $IS_ROOT -eq 0 && $DRY -eq 0 ]]; then
    echo "install.sh: run as root (deploy/install.sh as root, or sudo deploy/install.sh), or use" \
        "--root DIR for a scratch install, or --dry-run to see what it would do" >&2
    exit 1
fi

# The repository checkout this script belongs to.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/platform.sh
source "$REPO/deploy/platform.sh"

# Paths on the target system (what the unit and the config refer to) ...
APP=/opt/fer-kiosk
VENV=$APP/venv
MODELS=$APP/models
ETC=/etc/fer-kiosk
UNIT_DIR=/etc/systemd/system
UNIT=fer-kiosk.service
# ... and where they are written (the same unless --root).
D_APP=$ROOT$APP
D_VENV=$ROOT$VENV
D_MODELS=$ROOT$MODELS
D_ETC=$ROOT$ETC
D_UNIT_DIR=$ROOT$UNIT_DIR

log() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
# A platform the service cannot run on: stop before anything changes (--dry-run: say so, go on
# listing, and exit 1 at the end).
REFUSED=0
refuse() {
    echo "install.sh: cannot install here: $*" >&2
    [[ $DRY -eq 1 ]] || exit 1
    REFUSED=1
}

# Every change goes through run (a command) or note (a file written by a redirection):
# with --dry-run they are listed instead of done.
run() {
    if [[ $DRY -eq 1 ]]; then
        echo "install.sh: would run: $*"
    else
        "$@"
    fi
}
note() { if [[ $DRY -eq 1 ]]; then echo "install.sh: would write: $*"; fi; }

# chown only when we can (root); a non-root --root install keeps the caller as owner.
own_root() { if [[ $IS_ROOT -eq 1 || $DRY -eq 1 ]]; then run chown root:root "$@"; fi; }

for f in "$REPO/deploy/$UNIT" "$REPO/config.yaml" "$REPO/pyproject.toml"; do
    [[ -f "$f" ]] || die "$f is missing: run this script from a complete checkout"
done

# ---- 0. checks, before anything changes ---------------------------------------------
# A board no TFLite runtime is built for: refused before apt-get (Python may not be there yet).
if [[ "$(uname -m)" == armv6l ]]; then
    refuse "$(fer_kiosk_armv6l)"
fi
# The unit needs a running systemd: without one (a container, WSL without systemd, another
# init) systemctl would fail after everything was written.
if [[ -z "$ROOT" && ! -d /run/systemd/system ]]; then
    refuse "this system is not running systemd (a container, WSL without systemd, another init):" \
        "the service cannot be installed. Run the daemon without it: bash deploy/quickstart.sh" \
        "(a venv in the checkout, started in the foreground), or under your own supervisor:" \
        "fer-kiosk run --config config.yaml; or build an image's layout with --root DIR (docs/deploy.md)"
fi

# ---- 1. packages ---------------------------------------------------------------------
if [[ -z "$ROOT" && $DO_APT -eq 1 ]]; then
    log "installing Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update
    # python3-venv: the venv; ca-certificates: pip over HTTPS, MQTT TLS. No build tools:
    # every dependency is a binary wheel and sd_notify/journal are spoken over sockets.
    run apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
fi

# The Python the service's venv is made from: one the service's user can run. The unit runs
# as a DynamicUser= (no home, no groups but video) with ProtectHome=yes, so a Python under
# /root or /home (pyenv, a user's build) cannot start there, even when root can run it.
if [[ -z "$PYTHON" ]]; then
    if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=$(command -v python3 || true); fi
fi
if [[ $DO_VENV -eq 1 ]]; then
    if [[ -z "$PYTHON" ]] || ! command -v "$PYTHON" >/dev/null 2>&1; then
        if [[ $DRY -eq 1 ]]; then
            log "would use ${PYTHON:-/usr/bin/python3} (apt-get install python3 python3-venv brings it)"
        else
            refuse "no Python ${PYTHON:-python3}: apt-get install python3 python3-venv, or --python PYTHON"
        fi
    else
        PYTHON=$(command -v "$PYTHON")
        problem=$(fer_kiosk_platform_problem "$PYTHON") || refuse "$problem"
        real=$(readlink -f "$PYTHON")
        base=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
        for path in "$real" "$base"; do
            case "$path/" in
                /root/* | /home/* | /run/user/*)
                    refuse "$PYTHON ($path) lies under /$(echo "$path" | cut -d/ -f2); the service cannot run it there" \
                        "(its unit has ProtectHome=yes and runs as a DynamicUser=). Use Debian's Python:" \
                        "apt-get install python3 python3-venv, then deploy/install.sh --python /usr/bin/python3" ;;
            esac
        done
        # Checked as an unprivileged user (nobody, as the service's dynamic user would be):
        # the interpreter, its standard library and the venv module must all be readable.
        if [[ $IS_ROOT -eq 1 ]] && command -v setpriv >/dev/null 2>&1; then
            if ! err=$(setpriv --reuid=65534 --regid=65534 --clear-groups -- "$PYTHON" -c 'import encodings, venv' 2>&1); then
                refuse "$PYTHON cannot be run by an unprivileged user (as the service's user: ${err##*$'\n'})." \
                    "Use Debian's Python: apt-get install python3 python3-venv, then" \
                    "deploy/install.sh --python /usr/bin/python3"
            fi
        fi
        "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
            || refuse "$PYTHON has no venv module: apt-get install python3-venv (or use --python)"
        log "the service's venv is made from $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version(), platform.machine())'))"
    fi
fi

# ---- 2. application: the venv with the wheel (the model is package data) ---------------
run install -d -m 0755 "$D_APP" "$D_APP/docs"
own_root "$D_APP" "$D_APP/docs"

if [[ $DO_VENV -eq 1 && $DRY -eq 1 ]]; then
    if [[ -f "$D_VENV/pyvenv.cfg" ]] && ! grep -qx "home = $(dirname "$PYTHON")" "$D_VENV/pyvenv.cfg"; then
        run rm -rf "$D_VENV"   # made from another Python: made again
    fi
    [[ -x "$D_VENV/bin/python" ]] || run "${PYTHON:-/usr/bin/python3}" -m venv "$D_VENV"
    [[ -n "$WHEEL" ]] || run "$D_VENV/bin/python" -m pip wheel --no-deps -w WORK/dist "WORK/src (a clean copy of $REPO)"
    run "$D_VENV/bin/python" -m pip install "${WHEEL:-WORK/dist/fer_kiosk-*.whl}"
    [[ $DO_PRUNE -eq 0 ]] || run "$D_VENV/bin/python" "$REPO/deploy/prune_venv.py" "$D_VENV"
    run "$D_VENV/bin/python" - "(venv check: the bundled model, the runtime and the Haar cascade load)"
    [[ ! -d "$D_MODELS" ]] || note "$MODELS/emotion_int8.tflite and .json, from the package"
elif [[ $DO_VENV -eq 1 ]]; then
    # A venv made from another Python (an older install from a pyenv Python) is made again.
    if [[ -f "$D_VENV/pyvenv.cfg" ]] \
        && ! grep -qx "home = $(dirname "$PYTHON")" "$D_VENV/pyvenv.cfg"; then
        log "making $D_VENV again from $PYTHON (it was made from $(sed -n 's/^home = //p' "$D_VENV/pyvenv.cfg"))"
        rm -rf "$D_VENV"
    fi
    [[ -x "$D_VENV/bin/python" ]] || { log "creating $D_VENV"; "$PYTHON" -m venv "$D_VENV"; }
    # A pruned venv has no pip: bring it back to upgrade (prune_venv.py removes it again).
    "$D_VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$D_VENV/bin/python" -m ensurepip --upgrade >/dev/null
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    if [[ -z "$WHEEL" ]]; then
        # Build the wheel from a clean copy of the checkout: setuptools builds in the source
        # tree, and a stale build/ there could put deleted modules into the wheel; it also
        # keeps root-owned build files out of the admin's checkout.
        log "building the fer-kiosk wheel from $REPO"
        tar -C "$REPO" -cf - --exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./build \
            --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
            --exclude=./.benchmarks --exclude='./.venv-*' . | (mkdir "$WORK/src" && tar -C "$WORK/src" -xf -)
        "$D_VENV/bin/python" -m pip wheel --disable-pip-version-check --no-input --no-deps \
            -w "$WORK/dist" "$WORK/src" >/dev/null
        WHEEL="$(ls "$WORK"/dist/fer_kiosk-*.whl)"
    fi
    # Non-editable, from the wheel users get: the service never depends on the checkout.
    # --force-reinstall --no-deps first: a re-run with the same version still upgrades it.
    log "installing $(basename "$WHEEL") into $D_VENV"
    "$D_VENV/bin/python" -m pip install --disable-pip-version-check --no-input "$WHEEL"
    "$D_VENV/bin/python" -m pip install --disable-pip-version-check --no-input --force-reinstall --no-deps "$WHEEL" >/dev/null
    [[ -x "$D_VENV/bin/fer-kiosk" ]] || die "$D_VENV/bin/fer-kiosk was not installed"
else
    log "--no-venv: not creating $D_VENV"
fi

# Installations before 0.2 copied the model to $MODELS and pointed config.yaml at it; that
# config is never overwritten, so keep that copy current from the package while it exists.
if [[ $DO_VENV -eq 1 && $DRY -eq 0 && -d "$D_MODELS" ]]; then
    log "refreshing the model an older config.yaml points at ($D_MODELS)"
    "$D_VENV/bin/python" - "$D_MODELS" <<'PY'
import os, shutil, sys
from edge import DEFAULT_MODEL
for source in (DEFAULT_MODEL, DEFAULT_MODEL.with_suffix(".json")):
    target = os.path.join(sys.argv[1], source.name)
    shutil.copyfile(source, target + ".new")  # a running daemon never sees half a model
    os.chmod(target + ".new", 0o644)
    os.replace(target + ".new", target)
PY
fi
if [[ $DO_VENV -eq 1 && $DRY -eq 0 ]]; then
    if [[ $DO_PRUNE -eq 1 ]]; then
        log "pruning what the daemon never loads from $D_VENV (deploy/prune_venv.py)"
        "$D_VENV/bin/python" "$REPO/deploy/prune_venv.py" "$D_VENV" | tail -n 1
    fi
    # Prove the installed venv still loads the model, the runtime and the cascade: on the box
    # as an unprivileged user (nobody), as the service's dynamic user will run it.
    as_service=()
    if [[ -z "$ROOT" && $IS_ROOT -eq 1 ]] && command -v setpriv >/dev/null 2>&1; then
        as_service=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
    fi
    (cd / && "${as_service[@]}" "$D_VENV/bin/python" -) <<'PY' \
        || die "the installed environment cannot load the daemon's parts (re-run with --no-prune?)"
from edge.config import parse_config
from edge.daemon.service import build_pipeline
pipeline = build_pipeline(parse_config({}))
print(f"install.sh: venv check: the bundled model, {pipeline.classifier.runtime} and the Haar cascade load")
PY
fi
if [[ -f "$REPO/docs/deploy.md" ]]; then
    run install -m 0644 "$REPO/docs/deploy.md" "$D_APP/docs/deploy.md"
    own_root "$D_APP/docs/deploy.md"
fi

# ---- 3. configuration ----------------------------------------------------------------
run install -d -m 0755 "$D_ETC"
own_root "$D_ETC"

# config.yaml.dist: the repository's config.yaml as it is (model.path empty: the model
# inside the installed package), refreshed by every install.
DIST="$D_ETC/config.yaml.dist"
run install -m 0644 "$REPO/config.yaml" "$DIST.tmp"
own_root "$DIST.tmp"
run mv -f "$DIST.tmp" "$DIST"

if [[ -e "$D_ETC/config.yaml" ]]; then
    log "keeping the existing $D_ETC/config.yaml (new defaults: $D_ETC/config.yaml.dist)"
else
    log "writing $D_ETC/config.yaml"
    run install -m 0644 "$DIST" "$D_ETC/config.yaml"
    own_root "$D_ETC/config.yaml"
fi

# The MQTT secret: read by systemd (LoadCredential=mqtt:...), handed to the service in a
# private ramfs. root-only on disk; never overwritten.
if [[ -e "$D_ETC/credentials" ]]; then
    log "keeping the existing $D_ETC/credentials"
else
    log "writing the template $D_ETC/credentials (mode 0600): fill in username= and password="
    note "$D_ETC/credentials (a commented template, umask 077)"
    [[ $DRY -eq 1 ]] || (
        umask 077
        cat > "$D_ETC/credentials" <<'EOF'
# MQTT login of this kiosk, read by systemd (LoadCredential=) for fer-kiosk.
# Lines username=... and password=...; '#' starts a comment. Keep this file root 0600.
# With every line commented out the daemon connects without credentials.
#username=kiosk-01
#password=
EOF
    )
    own_root "$D_ETC/credentials"
    run chmod 0600 "$D_ETC/credentials"
fi

# ---- 4. systemd unit -----------------------------------------------------------------
run install -d -m 0755 "$D_UNIT_DIR"
run install -m 0644 "$REPO/deploy/$UNIT" "$D_UNIT_DIR/$UNIT"
own_root "$D_UNIT_DIR/$UNIT"
[[ $DRY -eq 1 ]] || log "installed $D_UNIT_DIR/$UNIT"

if [[ -n "$ROOT" ]]; then
    # What `systemctl enable` would do, without talking to a service manager.
    run install -d -m 0755 "$D_UNIT_DIR/multi-user.target.wants"
    run ln -sfn "$UNIT_DIR/$UNIT" "$D_UNIT_DIR/multi-user.target.wants/$UNIT"
    log "--root: enabled by symlink; no systemctl calls. Done."
    [[ $DRY -eq 0 ]] || log "--dry-run: nothing was changed"
    exit $REFUSED
fi

run systemctl daemon-reload
run systemctl enable "$UNIT"
if [[ $DRY -eq 1 ]]; then
    [[ $DO_START -eq 0 ]] || run systemctl restart "$UNIT"
    log "--dry-run: nothing was changed"
    exit $REFUSED
elif [[ $DO_START -eq 1 ]]; then
    # restart, not start: a re-run (upgrade) must load the new code and model.
    if ! systemctl restart "$UNIT"; then
        systemctl --no-pager status "$UNIT" || true
        die "fer-kiosk did not start: see journalctl -u fer-kiosk (exit status 78: configuration" \
            "or model error; a start timeout: no camera frame yet)"
    fi
    log "fer-kiosk is running: journalctl -u fer-kiosk -f"
else
    log "--no-start: enabled, not started (systemctl start fer-kiosk)"
fi
