#!/usr/bin/env bash
# Install fer-kiosk as a systemd service on Debian / Raspberry Pi OS (64-bit).
# Run from a checkout of the repository:  sudo deploy/install.sh   (see docs/deploy.md)
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo deploy/install.sh [--wheel FILE] [--root DIR] [--no-venv] [--no-prune] [--no-apt] [--no-start] [--help]

Installs fer-kiosk from this repository checkout:
  /opt/fer-kiosk/venv                   virtual environment with the fer-kiosk wheel (the model inside it)
  /opt/fer-kiosk/docs/deploy.md         this documentation
  /etc/fer-kiosk/config.yaml            configuration (kept if it exists; config.yaml.dist beside it)
  /etc/fer-kiosk/credentials            MQTT username/password template, root 0600 (never overwritten)
  /etc/systemd/system/fer-kiosk.service the unit; then daemon-reload, enable, (re)start

Options:
  --wheel FILE install this fer-kiosk wheel (as built by `python -m build`, e.g. dist/*.whl)
               instead of building one from the checkout with `pip wheel`
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
OpenCV, numpy) and speaks to systemd and the journal over their sockets.

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
if [[ -z "$ROOT" && $IS_ROOT -eq 0 ]]; then
    echo "install.sh: run as root (sudo deploy/install.sh), or use --root DIR for a scratch install" >&2
    exit 1
fi

# The repository checkout this script belongs to.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

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

# chown only when we can (root); a non-root --root install keeps the caller as owner.
own_root() { if [[ $IS_ROOT -eq 1 ]]; then chown root:root "$@"; fi; }

for f in "$REPO/deploy/$UNIT" "$REPO/config.yaml" "$REPO/pyproject.toml"; do
    [[ -f "$f" ]] || die "$f is missing: run this script from a complete checkout"
done

# ---- 1. packages ---------------------------------------------------------------------
if [[ -z "$ROOT" && $DO_APT -eq 1 ]]; then
    log "installing Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # python3-venv: the venv; ca-certificates: pip over HTTPS, MQTT TLS. No build tools:
    # every dependency is a binary wheel and sd_notify/journal are spoken over sockets.
    apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
fi

# The camera group. Debian creates it (GID 44); make sure a minimal image has it too.
if [[ -z "$ROOT" ]] && ! getent group video >/dev/null; then
    log "creating the system group video"
    groupadd --system video
fi

# ---- 2. application: the venv with the wheel (the model is package data) ---------------
install -d -m 0755 "$D_APP" "$D_APP/docs"
own_root "$D_APP" "$D_APP/docs"

if [[ $DO_VENV -eq 1 ]]; then
    [[ -x "$D_VENV/bin/python" ]] || { log "creating $VENV"; python3 -m venv "$D_VENV"; }
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
    log "installing $(basename "$WHEEL") into $VENV"
    "$D_VENV/bin/python" -m pip install --disable-pip-version-check --no-input "$WHEEL"
    "$D_VENV/bin/python" -m pip install --disable-pip-version-check --no-input --force-reinstall --no-deps "$WHEEL" >/dev/null
    [[ -x "$D_VENV/bin/fer-kiosk" ]] || die "$VENV/bin/fer-kiosk was not installed"
else
    log "--no-venv: not creating $VENV"
fi

# Installations before 0.2 copied the model to $MODELS and pointed config.yaml at it; that
# config is never overwritten, so keep that copy current from the package while it exists.
if [[ $DO_VENV -eq 1 && -d "$D_MODELS" ]]; then
    log "refreshing the model an older config.yaml points at ($MODELS)"
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
if [[ $DO_VENV -eq 1 ]]; then
    if [[ $DO_PRUNE -eq 1 ]]; then
        log "pruning what the daemon never loads from $VENV (deploy/prune_venv.py)"
        "$D_VENV/bin/python" "$REPO/deploy/prune_venv.py" "$D_VENV" | tail -n 1
    fi
    # Prove the installed venv still loads the model, the runtime and the cascade.
    "$D_VENV/bin/python" - <<'PY' \
        || die "the installed environment cannot load the daemon's parts (re-run with --no-prune?)"
from edge.config import parse_config
from edge.service import build_pipeline
pipeline = build_pipeline(parse_config({}))
print(f"install.sh: venv check: the bundled model, {pipeline.classifier.runtime} and the Haar cascade load")
PY
fi
if [[ -f "$REPO/docs/deploy.md" ]]; then
    install -m 0644 "$REPO/docs/deploy.md" "$D_APP/docs/deploy.md"
    own_root "$D_APP/docs/deploy.md"
fi

# ---- 3. configuration ----------------------------------------------------------------
install -d -m 0755 "$D_ETC"
own_root "$D_ETC"

# config.yaml.dist: the repository's config.yaml as it is (model.path empty: the model
# inside the installed package), refreshed by every install.
DIST="$D_ETC/config.yaml.dist"
install -m 0644 "$REPO/config.yaml" "$DIST.tmp"
own_root "$DIST.tmp"
mv -f "$DIST.tmp" "$DIST"

if [[ -e "$D_ETC/config.yaml" ]]; then
    log "keeping the existing $ETC/config.yaml (new defaults: $ETC/config.yaml.dist)"
else
    log "writing $ETC/config.yaml"
    install -m 0644 "$DIST" "$D_ETC/config.yaml"
    own_root "$D_ETC/config.yaml"
fi

# The MQTT secret: read by systemd (LoadCredential=mqtt:...), handed to the service in a
# private ramfs. root-only on disk; never overwritten.
if [[ -e "$D_ETC/credentials" ]]; then
    log "keeping the existing $ETC/credentials"
else
    log "writing the template $ETC/credentials (mode 0600): fill in username= and password="
    (
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
    chmod 0600 "$D_ETC/credentials"
fi

# ---- 4. systemd unit -----------------------------------------------------------------
install -d -m 0755 "$D_UNIT_DIR"
install -m 0644 "$REPO/deploy/$UNIT" "$D_UNIT_DIR/$UNIT"
own_root "$D_UNIT_DIR/$UNIT"
log "installed $UNIT_DIR/$UNIT"

if [[ -n "$ROOT" ]]; then
    # What `systemctl enable` would do, without talking to a service manager.
    install -d -m 0755 "$D_UNIT_DIR/multi-user.target.wants"
    ln -sfn "$UNIT_DIR/$UNIT" "$D_UNIT_DIR/multi-user.target.wants/$UNIT"
    log "--root: enabled by symlink; no systemctl calls. Done."
    exit 0
fi

systemctl daemon-reload
systemctl enable "$UNIT"
if [[ $DO_START -eq 1 ]]; then
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
