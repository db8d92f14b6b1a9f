#!/usr/bin/env bash
# Install fer-kiosk as a systemd service on Debian / Raspberry Pi OS (64-bit).
# Run from a checkout of the repository:  sudo deploy/install.sh   (see docs/deploy.md)
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo deploy/install.sh [--root DIR] [--no-venv] [--no-prune] [--no-apt] [--no-start] [--help]

Installs fer-kiosk from this repository checkout:
  /opt/fer-kiosk/venv                   virtual environment with fer-kiosk[systemd] (non-editable)
  /opt/fer-kiosk/models/                the emotion model (.tflite + .json contract)
  /opt/fer-kiosk/docs/deploy.md         this documentation
  /etc/fer-kiosk/config.yaml            configuration (kept if it exists; config.yaml.dist beside it)
  /etc/fer-kiosk/credentials            MQTT username/password template, root 0600 (never overwritten)
  /etc/systemd/system/fer-kiosk.service the unit; then daemon-reload, enable, (re)start

Options:
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

Running it again upgrades the installation (venv, models, unit) and keeps
/etc/fer-kiosk/config.yaml and /etc/fer-kiosk/credentials as they are.
EOF
}

ROOT=""
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
        --no-venv) DO_VENV=0; shift ;;
        --no-prune) DO_PRUNE=0; shift ;;
        --no-apt) DO_APT=0; shift ;;
        --no-start) DO_START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

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
MODEL_NAME=emotion_int8
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

for f in "$REPO/deploy/$UNIT" "$REPO/config.yaml" "$REPO/pyproject.toml" \
         "$REPO/edge/models/$MODEL_NAME.tflite" "$REPO/edge/models/$MODEL_NAME.json"; do
    [[ -f "$f" ]] || die "$f is missing: run this script from a complete checkout"
done

# ---- 1. packages ---------------------------------------------------------------------
if [[ -z "$ROOT" && $DO_APT -eq 1 ]]; then
    log "installing Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # python3-venv: the venv; python3-dev, gcc, libsystemd-dev, pkg-config: to build the
    # systemd-python wheel (sd_notify, journal); ca-certificates: pip over HTTPS, MQTT TLS.
    apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libsystemd-dev pkg-config ca-certificates
fi

# The camera group. Debian creates it (GID 44); make sure a minimal image has it too.
if [[ -z "$ROOT" ]] && ! getent group video >/dev/null; then
    log "creating the system group video"
    groupadd --system video
fi

# ---- 2. application: venv and models -------------------------------------------------
install -d -m 0755 "$D_APP" "$D_MODELS" "$D_APP/docs"
own_root "$D_APP" "$D_MODELS" "$D_APP/docs"

if [[ $DO_VENV -eq 1 ]]; then
    [[ -x "$D_VENV/bin/python" ]] || { log "creating $VENV"; python3 -m venv "$D_VENV"; }
    # A pruned venv has no pip: bring it back to upgrade (prune_venv.py removes it again).
    "$D_VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$D_VENV/bin/python" -m ensurepip --upgrade >/dev/null
    log "installing fer-kiosk[systemd] from $REPO into $VENV"
    # Build from a clean copy of the checkout: setuptools builds in the source tree, and a
    # stale build/ there could put deleted modules into the wheel; it also keeps root-owned
    # build files out of the admin's checkout.
    SRC="$(mktemp -d)"
    trap 'rm -rf "$SRC"' EXIT
    tar -C "$REPO" -cf - --exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./build \
        --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
        --exclude=./.benchmarks . | tar -C "$SRC" -xf -
    # Non-editable: the service must not depend on the checkout staying where it is. pip
    # rebuilds and reinstalls a local directory every time, so re-running upgrades.
    "$D_VENV/bin/python" -m pip install --disable-pip-version-check --no-input "${SRC}[systemd]"
    [[ -x "$D_VENV/bin/fer-kiosk" ]] || die "$VENV/bin/fer-kiosk was not installed"
else
    log "--no-venv: not creating $VENV"
fi

log "copying the model to $MODELS"
for ext in tflite json; do
    # Via a temporary file and rename: a running daemon never sees a half-written model.
    install -m 0644 "$REPO/edge/models/$MODEL_NAME.$ext" "$D_MODELS/.$MODEL_NAME.$ext.new"
    own_root "$D_MODELS/.$MODEL_NAME.$ext.new"
    mv -f "$D_MODELS/.$MODEL_NAME.$ext.new" "$D_MODELS/$MODEL_NAME.$ext"
done
if [[ $DO_VENV -eq 1 ]]; then
    if [[ $DO_PRUNE -eq 1 ]]; then
        log "pruning what the daemon never loads from $VENV (deploy/prune_venv.py)"
        "$D_VENV/bin/python" "$REPO/deploy/prune_venv.py" "$D_VENV" | tail -n 1
    fi
    # Prove the installed venv still loads the model, the runtime and the cascade.
    "$D_VENV/bin/python" - "$D_MODELS/$MODEL_NAME.tflite" <<'PY' \
        || die "the installed environment cannot load the daemon's parts (re-run with --no-prune?)"
import sys
from edge.config import parse_config
from edge.service import build_pipeline
pipeline = build_pipeline(parse_config({"model": {"path": sys.argv[1]}}))
print(f"install.sh: venv check: {pipeline.classifier.runtime} and the Haar cascade load")
PY
fi
if [[ -f "$REPO/docs/deploy.md" ]]; then
    install -m 0644 "$REPO/docs/deploy.md" "$D_APP/docs/deploy.md"
    own_root "$D_APP/docs/deploy.md"
fi

# ---- 3. configuration ----------------------------------------------------------------
install -d -m 0755 "$D_ETC"
own_root "$D_ETC"

# config.yaml.dist: the repository's config.yaml with model.path set to the installed
# model. Only the `path:` line inside the top-level `model:` block changes (spool: has a
# `path:` too); plain (m)awk, because PyYAML may not exist before the venv does.
DIST="$D_ETC/config.yaml.dist"
awk -v model_path="$MODELS/$MODEL_NAME.tflite" '
    /^[^ \t#]/ { in_model = ($0 ~ /^model:[ \t]*(#.*)?$/) }
    in_model && /^[ \t]+path:/ && !done {
        match($0, /^[ \t]+/)
        print substr($0, 1, RLENGTH) "path: \"" model_path "\"   # set by deploy/install.sh"
        done = 1
        next
    }
    { print }
    END { if (!done) exit 3 }
' "$REPO/config.yaml" > "$DIST.tmp" || { rm -f "$DIST.tmp"; die "no model: path: line found in $REPO/config.yaml"; }
chmod 0644 "$DIST.tmp"
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
