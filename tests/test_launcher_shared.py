"""What run_popup.bat and tools/ensure_venv.sh must agree on, and the Python programs they run, run by Python.

The launchers accept the Pythons every pinned package has wheels for (tools/check_python_versions.py measured 3.11
to 3.14 for the pins of requirements.txt); their messages and the README name the same list.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAT = (ROOT / "run_popup.bat").read_text()
SH = (ROOT / "tools" / "ensure_venv.sh").read_text()
README = (ROOT / "README.md").read_text()
ACCEPTED = ["3.14", "3.13", "3.12", "3.11"]  # newest first, as the launchers try them
IN_WORDS = "3.11, 3.12, 3.13 or 3.14"


def bat_program(marker: str) -> str:
    """The `-c "..."` program of run_popup.bat's line that contains `marker`."""
    line = next(line for line in BAT.splitlines() if marker in line and ' -c "' in line)
    return re.search(r' -c "([^"]*)"', line)[1]


def test_both_launchers_accept_the_same_pythons_newest_first():
    assert re.search(r'set "PYTHON_VERSIONS=([^"]*)"', BAT)[1].split() == ACCEPTED
    assert re.search(r'WIZARD_PYTHON_VERSIONS="([^"]*)"', SH)[1].split() == ACCEPTED


def test_every_message_about_versions_names_the_accepted_list():
    for text in (BAT, SH):
        named = re.findall(r"3\.1\d, 3\.1\d(?:, 3\.1\d)* or 3\.1\d", text)
        assert named and set(named) == {IN_WORDS}
    install = README.split("## What the demo does")[0]
    assert IN_WORDS in install
    assert not re.search(r"3\.10(,| or| to)", install)  # the earlier promise of 3.10 is gone


def test_the_launchers_compare_requirements_with_the_same_program():
    assert bat_program("read() !=") == re.search(r'SAME_FILES="([^"]*)"', SH)[1]


def test_the_comparison_is_exact_and_a_missing_copy_means_not_installed(tmp_path: Path):
    program = bat_program("read() !=")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"

    def same() -> int:
        return subprocess.run([sys.executable, "-c", program, str(a), str(b)], capture_output=True).returncode

    a.write_bytes(b"torch==2.13.0\r\n")
    assert same() == 1  # no copy yet
    b.write_bytes(b"torch==2.13.0\r\n")
    assert same() == 0
    b.write_bytes(b"torch==2.13.0\n")  # one byte differs
    assert same() == 1


def test_the_connectivity_check_is_the_same_and_fails_without_a_network():
    program = bat_program("urlopen")
    assert program in SH
    answer = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60,
                            env={"HTTPS_PROXY": "http://127.0.0.1:9"})  # nothing listens there
    assert answer.returncode == 1
