# shellcheck shell=bash
# Sourced by deploy/install.sh and deploy/quickstart.sh (bash): can this machine run fer-kiosk?
#   fer_kiosk_platform_problem PYTHON   prints why not, and what to use instead, and returns 1;
#                                       prints nothing and returns 0 where it can.
# The machine is the one pip's markers see (platform.machine() of PYTHON: armv8l under
# `linux32` on a 64-bit ARM kernel), with the pointer size of that Python: a 32-bit
# userland on a 64-bit kernel says aarch64, but can only load 32-bit wheels. Which runtime
# each machine gets: pyproject.toml's dependency markers and docs/deploy.md.

fer_kiosk_platform_problem() {
    local python=$1 facts machine bits version
    facts=$("$python" -c 'import platform, struct, sys
print(platform.machine(), struct.calcsize("P") * 8, "%d.%d" % sys.version_info[:2])' 2>/dev/null) || {
        echo "$python does not run: install Python 3 (Debian: apt-get install python3 python3-venv)"
        return 1
    }
    read -r machine bits version <<<"$facts"
    case "$version" in
        3.[0-9]) echo "Python $version ($python) is too old: fer-kiosk needs Python 3.10 or later"; return 1 ;;
    esac
    case "$machine" in
        x86_64 | amd64)
            if [[ $bits != 64 ]]; then
                echo "32-bit Python ($python) on x86-64: ai-edge-litert has no 32-bit wheel; use a 64-bit Python"
                return 1
            fi ;;
        aarch64 | arm64)
            if [[ $bits != 64 ]]; then
                echo "32-bit Python ($python) on a 64-bit ARM kernel (a 32-bit Raspberry Pi OS on a Pi 4/5?):" \
                    "pip would choose ai-edge-litert, which has no 32-bit wheel, and the daemon would have no" \
                    "TFLite runtime. Use 64-bit Raspberry Pi OS, or run this under linux32 so that the 32-bit" \
                    "ARM set (tflite-runtime 2.14) is chosen: see docs/deploy.md, \"32-bit Raspberry Pi OS\""
                return 1
            fi ;;
        armv7l | armv8l)
            case "$version" in
                3.10 | 3.11) ;;
                *)
                    echo "Python $version on 32-bit ARM ($machine): tflite-runtime 2.14, the only TFLite runtime" \
                        "with a 32-bit ARM wheel, exists for Python 3.9-3.11 only. Use 64-bit Raspberry Pi OS, or" \
                        "32-bit Raspberry Pi OS bookworm (Python 3.11)"
                    return 1 ;;
            esac
            if ! fer_kiosk_has_extra_index; then
                echo "32-bit ARM ($machine) without piwheels: PyPI has no 32-bit ARM wheels of NumPy 1.x and" \
                    "OpenCV, so pip would compile them (hours, and a compiler). Raspberry Pi OS names piwheels in" \
                    "/etc/pip.conf; elsewhere add it there (docs/deploy.md, \"32-bit Raspberry Pi OS\")"
                return 1
            fi ;;
        armv6l) fer_kiosk_armv6l; return 1 ;;
        *)
            echo "$machine: no TFLite runtime wheel for it. Use an x86-64 or 64-bit ARM (aarch64, e.g. 64-bit" \
                "Raspberry Pi OS) machine, or 32-bit ARM (armv7l) with tflite-runtime"
            return 1 ;;
    esac
    return 0
}

fer_kiosk_armv6l() {
    echo "armv6l (Raspberry Pi Zero / Zero W / 1) has no TFLite runtime: neither ai-edge-litert nor" \
        "tflite-runtime is built for it. Use a Raspberry Pi Zero 2 W, 3, 4 or 5 with 64-bit Raspberry Pi OS"
}

# Whether pip is told of an index besides PyPI (piwheels on Raspberry Pi OS: /etc/pip.conf).
fer_kiosk_has_extra_index() {
    [[ -n "${PIP_EXTRA_INDEX_URL:-}${PIP_INDEX_URL:-}" ]] && return 0
    local file
    for file in /etc/pip.conf /etc/xdg/pip/pip.conf "${XDG_CONFIG_HOME:-$HOME/.config}/pip/pip.conf" \
        "$HOME/.pip/pip.conf" "${PIP_CONFIG_FILE:-/nonexistent}"; do
        grep -qsE '^[[:space:]]*(extra-)?index-url' "$file" && return 0
    done
    return 1
}
