#!/usr/bin/env bash
# Start the LoRA training wizard (Linux / macOS). Creates ./.venv on the first run.
#   ./run_popup.sh            the popups
#   ./run_popup.sh --demo     train the built-in demo LoRA, no questions asked
#   ./run_popup.sh --help     every option
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/ensure_venv.sh
source "$here/tools/ensure_venv.sh"
ensure_venv requirements.txt
cd "$here"
exec "$VENV_PYTHON" "$here/popup_main.py" "$@"
