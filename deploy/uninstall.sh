#!/usr/bin/env bash
# Remove what deploy/install.sh installed (see docs/deploy.md).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo deploy/uninstall.sh [--root DIR] [--purge] [--help]

Stops and disables fer-kiosk, removes /etc/systemd/system/fer-kiosk.service (and any
drop-ins in fer-kiosk.service.d/) and /opt/fer-kiosk (venv, models, docs).
Keeps /etc/fer-kiosk (config, credentials) and the state directory
/var/lib/fer-kiosk (spool of undelivered MQTT messages) unless --purge is given.

Options:
  --root DIR   operate on a scratch root made by install.sh --root DIR (no systemctl calls)
  --purge      also delete /etc/fer-kiosk and the state directory, and first clear the
               kiosk's retained topics on the broker (`fer-kiosk unregister`): Home
               Assistant then forgets the device instead of keeping a ghost of it
  -h, --help   this text
EOF
}

ROOT=""
PURGE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --root)
            [[ $# -ge 2 && -n "$2" ]] || { echo "uninstall.sh: --root needs a directory" >&2; exit 2; }
            ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "uninstall.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ -n "$ROOT" ]]; then
    [[ -d "$ROOT" ]] || { echo "uninstall.sh: --root $ROOT is not a directory" >&2; exit 2; }
    ROOT="$(cd "$ROOT" && pwd)"
    [[ "$ROOT" == "/" ]] && ROOT=""
fi
if [[ -z "$ROOT" && "$(id -u)" -ne 0 ]]; then
    echo "uninstall.sh: run as root (sudo deploy/uninstall.sh)" >&2
    exit 1
fi

UNIT=fer-kiosk.service
UNIT_DIR=$ROOT/etc/systemd/system
log() { echo "uninstall.sh: $*"; }

if [[ -z "$ROOT" ]] && command -v systemctl >/dev/null; then
    # Either may fail harmlessly (unit never installed, already stopped, no systemd as PID 1).
    systemctl disable --now "$UNIT" 2>/dev/null || systemctl stop "$UNIT" 2>/dev/null || true
    systemctl reset-failed "$UNIT" 2>/dev/null || true
fi

rm -f "$UNIT_DIR/$UNIT" "$UNIT_DIR/multi-user.target.wants/$UNIT"
rm -rf "$UNIT_DIR/$UNIT.d"
log "removed the unit"

if [[ -z "$ROOT" ]] && command -v systemctl >/dev/null; then
    systemctl daemon-reload 2>/dev/null || true
fi

if [[ $PURGE -eq 1 && -z "$ROOT" && -x /opt/fer-kiosk/venv/bin/fer-kiosk && -f /etc/fer-kiosk/config.yaml ]]; then
    # The daemon's own login, handed over as systemd would (LoadCredential=mqtt:...).
    CREDS="$(mktemp -d)"
    [[ -f /etc/fer-kiosk/credentials ]] && ln -s /etc/fer-kiosk/credentials "$CREDS/mqtt"
    if CREDENTIALS_DIRECTORY="$CREDS" /opt/fer-kiosk/venv/bin/fer-kiosk unregister \
            --config /etc/fer-kiosk/config.yaml --force; then
        log "cleared the kiosk's retained topics (Home Assistant discovery, state, availability)"
    else
        log "warning: could not clear the retained topics on the broker; Home Assistant may keep" \
            "the device until they are cleared (fer-kiosk unregister)"
    fi
    rm -rf "$CREDS"
fi

rm -rf "$ROOT/opt/fer-kiosk"
log "removed /opt/fer-kiosk"

# DynamicUser=yes keeps the state under /var/lib/private/fer-kiosk with a symlink
# /var/lib/fer-kiosk pointing at it; a static-user setup would have a plain directory.
STATE_PATHS=("$ROOT/var/lib/fer-kiosk" "$ROOT/var/lib/private/fer-kiosk")
if [[ $PURGE -eq 1 ]]; then
    rm -rf "$ROOT/etc/fer-kiosk"
    rm -rf "${STATE_PATHS[@]}"
    log "--purge: removed /etc/fer-kiosk and the state directory"
else
    log "kept /etc/fer-kiosk and /var/lib/fer-kiosk (use --purge to delete them)"
fi
