# Sourced by scripts/run and scripts/test: makes .venv/ at the repo root, with the package
# installed (editable, so `-s counting_addon/addon.py` and the installed package are one code).
# Usage: ensure_venv EXTRAS   (e.g. "embedded" or "test")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

is_python312() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

# A Python >= 3.12: $PYTHON, then PATH, then pyenv's versions (whose shims fail unless
# PYENV_VERSION is set), then the usual install places.
find_python() {
    local candidates=() c
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    for c in python3.14 python3.13 python3.12 python3; do
        command -v "$c" >/dev/null 2>&1 && candidates+=("$(command -v "$c")")
    done
    local roots=("${PYENV_ROOT:-}" "$HOME/.pyenv")
    command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null || true)")
    for r in "${roots[@]}"; do
        [ -n "$r" ] && [ -d "$r/versions" ] || continue
        for c in $(ls -d "$r"/versions/3.* 2>/dev/null | sort -rV); do
            candidates+=("$c/bin/python3")
        done
    done
    candidates+=(/usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9] /opt/homebrew/bin/python3)
    for c in "${candidates[@]}"; do
        if [ -x "$c" ] && is_python312 "$c"; then
            echo "$c"
            return 0
        fi
    done
    echo "error: counting_addon needs Python >= 3.12 (for mitmproxy 12); none found." >&2
    echo "Install one, or point PYTHON at it: PYTHON=/path/to/python3.12 $0" >&2
    return 1
}

ensure_venv() {
    local extras="$1"
    if [ -x "$VENV/bin/python" ] && ! is_python312 "$VENV/bin/python"; then
        echo "counting_addon: $VENV uses Python < 3.12, recreating it" >&2
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(find_python)"
        echo "counting_addon: creating $VENV with $python" >&2
        "$python" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    # Reinstall only when the project's metadata changed since the last install.
    local stamp="$VENV/.installed-$extras"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "counting_addon: installing into $VENV (extras: $extras)" >&2
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$extras]"
        touch "$stamp"
    fi
}
