#!/usr/bin/env bash
# Sourced by run_popup.sh and run_tests.sh: makes sure ./.venv exists with the pinned requirements.
# Usage: ensure_venv <requirements file>...   (sets VENV_PYTHON)
# A requirements file counts as installed when .venv/<file>.installed, the copy saved after its last complete
# install, is the same byte for byte; Python compares them (macOS has no sha256sum). A .venv whose pip does not work
# (an interrupted first run, or Debian's Python without its venv package) is made again. Runs under macOS's bash 3.2.

# Every pinned package has wheels for these Pythons on Windows, Linux and macOS; the newest found is used.
WIZARD_PYTHON_VERSIONS="3.14 3.13 3.12 3.11"
SAME_FILES="import sys; sys.exit(open(sys.argv[1], 'rb').read() != open(sys.argv[2], 'rb').read())"
PYPI_REACHABLE="import urllib.request; urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=15)"

find_python() {
    # Sets PYTHON_COMMAND and PYTHON_VERSION to the newest supported Python, preferring one with Tk (the popups need
    # it; without Tk the questions are asked in the terminal). Returns 1, saying what to install, when none is found.
    local candidate version others="" candidates=()
    PYTHON_COMMAND=""
    [ -z "${WIZARD_PYTHON:-}" ] || candidates+=("$WIZARD_PYTHON")
    for version in $WIZARD_PYTHON_VERSIONS; do candidates+=("python$version"); done
    candidates+=(python3 python)
    for candidate in "${candidates[@]}"; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        version=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
        case " $WIZARD_PYTHON_VERSIONS " in
            *" $version "*) ;;
            *) case ", $others, " in *", $version, "*) ;; *) others="${others:+$others, }$version" ;; esac
               continue ;;
        esac
        if "$candidate" -c 'import tkinter' >/dev/null 2>&1; then
            PYTHON_COMMAND=$candidate PYTHON_VERSION=$version
            return 0
        fi
        [ -n "$PYTHON_COMMAND" ] || PYTHON_COMMAND=$candidate PYTHON_VERSION=$version
    done
    if [ -n "$PYTHON_COMMAND" ]; then
        echo "Note: $PYTHON_COMMAND (Python $PYTHON_VERSION) has no Tk, so the questions will be asked in the" \
             "terminal; for the popups install Tk (sudo apt-get install python3-tk on Debian or Ubuntu, sudo dnf" \
             "install python3-tkinter on Fedora, brew install python-tk@$PYTHON_VERSION on macOS) and run this" \
             "again." >&2
        return 0
    fi
    echo "No Python 3.11, 3.12, 3.13 or 3.14 was found${others:+ (only Python $others)}: install one with Tk" \
         "(sudo apt-get install python3.11 python3.11-venv python3-tk on Debian or Ubuntu, brew install" \
         "python-tk@3.13 on macOS, or from python.org), then run this again." >&2
    return 1
}

ensure_venv() {
    local here root file
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    root="$here/.venv"
    VENV_PYTHON="$root/bin/python"
    if [ -x "$VENV_PYTHON" ] && _installed "$here" "$root" "$@"; then
        return 0
    fi
    if [ -x "$VENV_PYTHON" ] && ! "$VENV_PYTHON" -m pip --version >/dev/null 2>&1; then
        echo "The environment in $root is incomplete (an earlier first run did not finish): making it again..."
        rm -rf "$root"
    fi
    if [ ! -x "$VENV_PYTHON" ]; then
        rm -rf "$root"
        find_python || return 1
        echo "Creating the Python environment in $root with Python $PYTHON_VERSION" \
             "(first run only; this takes a minute)..."
        if ! "$PYTHON_COMMAND" -m venv "$root"; then
            rm -rf "$root"
            echo "Python $PYTHON_VERSION could not create the environment in $root (see the message above):" \
                 "on Debian or Ubuntu install its venv module with sudo apt-get install python$PYTHON_VERSION-venv," \
                 "then run this again." >&2
            return 1
        fi
    fi
    echo "Installing the pinned packages into $root ..."
    local args=()
    for file in "$@"; do args+=(-r "$here/$file"); done
    if ! "$VENV_PYTHON" -m pip install --disable-pip-version-check "${args[@]}"; then
        if "$VENV_PYTHON" -c "$PYPI_REACHABLE" >/dev/null 2>&1; then
            echo "Installing the packages failed (pip's messages are above): run this again, and if it fails the same" \
                 "way, delete the .venv folder and report pip's messages." >&2
        else
            echo "The packages could not be downloaded because pypi.org cannot be reached: check the internet" \
                 "connection (and the proxy settings, if any), then run this again." >&2
        fi
        return 1
    fi
    for file in "$@"; do cp "$here/$file" "$root/$(basename "$file").installed"; done
}

_installed() {
    # _installed HERE ROOT FILE...: is every requirements file byte for byte the copy saved when it was installed?
    local here=$1 root=$2 file
    shift 2
    for file in "$@"; do
        "$VENV_PYTHON" -c "$SAME_FILES" "$here/$file" "$root/$(basename "$file").installed" 2>/dev/null || return 1
    done
}
