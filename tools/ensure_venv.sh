#!/usr/bin/env bash
# Sourced by run_popup.sh and run_tests.sh: makes sure ./.venv exists with the pinned requirements.
# Usage: ensure_venv <requirements file>...   (sets VENV_PYTHON)
# Packages are installed again only when a requirement file changes: .venv/.installed keeps "<hash> <file>" lines.

find_python() {
    # A Python from 3.10 to 3.12, preferring one that has Tk (the popups need it).
    local candidate version fallback=""
    for candidate in "${WIZARD_PYTHON:-}" python3.12 python3.11 python3.10 python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        version=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
        case "$version" in
            3.10|3.11|3.12) ;;
            *) continue ;;
        esac
        if "$candidate" -c 'import tkinter' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
        [ -n "$fallback" ] || fallback="$candidate"
    done
    if [ -n "$fallback" ]; then
        echo "Note: $fallback has no Tk, so the popups will use the terminal instead." >&2
        echo "$fallback"
        return 0
    fi
    return 1
}

ensure_venv() {
    local root here stamp_file python file up_to_date=1
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    root="$here/.venv"
    stamp_file="$root/.installed"
    VENV_PYTHON="$root/bin/python"
    for file in "$@"; do
        grep -qxF "$(cd "$here" && sha256sum "$file")" "$stamp_file" 2>/dev/null || up_to_date=0
    done
    if [ -x "$VENV_PYTHON" ] && [ "$up_to_date" = 1 ]; then
        return 0
    fi
    if [ ! -x "$VENV_PYTHON" ]; then
        python=$(find_python) || {
            echo "No Python 3.10, 3.11 or 3.12 was found: install one (with Tk) from python.org and run this again." >&2
            return 1
        }
        echo "Creating the Python environment in $root (first run only; this takes a minute)..."
        "$python" -m venv "$root" || return 1
    fi
    echo "Installing the pinned packages into $root ..."
    "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    local args=()
    for file in "$@"; do args+=(-r "$here/$file"); done
    "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check "${args[@]}" || {
        echo "Installing the packages failed (see the messages above); check your internet connection and run this again." >&2
        return 1
    }
    for file in "$@"; do
        (cd "$here" && sha256sum "$file") >> "$stamp_file"
    done
}
