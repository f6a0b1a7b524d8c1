#!/usr/bin/env bash
# Run the whole test suite: creates ./.venv with the test packages, installs Xvfb, xdotool and ImageMagick
# through apt-get when they are missing (the Tk tests drive real popups on a virtual screen), and Wine with mingw-w64
# (the Windows launcher's tests run run_popup.bat under Wine's cmd), then runs pytest.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k queue (-n 0 runs the tests one at a time).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/ensure_venv.sh
source "$here/tools/ensure_venv.sh"
ensure_venv requirements.txt requirements-test.txt

missing=()
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
command -v xdotool >/dev/null 2>&1 || missing+=(xdotool)
command -v import >/dev/null 2>&1 || missing+=(imagemagick)
command -v xdpyinfo >/dev/null 2>&1 || missing+=(x11-utils)
command -v wine >/dev/null 2>&1 || missing+=(wine)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null 2>&1; then
        echo "Installing ${missing[*]} for the popup and launcher tests..."
        $sudo apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
            || echo "Could not install ${missing[*]}: the popup or launcher tests will fail and say so." >&2
    else
        echo "apt-get is not available: install ${missing[*]} yourself, or the popup or launcher tests will fail." >&2
    fi
fi

cd "$here"
# Two workers, one per core of the CI machine; a test file's tests stay together on one worker (its fixtures
# are made once). conftest.py gives each worker one torch thread.
exec "$VENV_PYTHON" -m pytest tests -n 2 --dist loadfile "$@"
