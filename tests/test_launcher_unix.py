"""run_popup.sh and tools/ensure_venv.sh in a stub environment: a PATH with bash, a few POSIX tools and Pythons only.

There is no sha256sum (macOS has none) and nothing else the launcher must not rely on. The Pythons are small wrappers
around the Python running the tests, named and answering as the Python each test needs (a version, no Tk, Debian's
Python without its venv package); each logs how it was called. The checkout is a copy of the launcher with its own
requirements file (no packages, so pip needs no network) and a popup_main.py that prints the arguments it got.
Creating a venv takes seconds, so tests about later runs start from a copy of one made once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "dirname", "basename", "cp", "rm")  # what run_popup.sh and ensure_venv.sh use besides Python
REAL_PYTHON = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
REAL_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
REQUIREMENTS = "# no packages: pip installs nothing and needs no network\n"
DEBIAN_VENV_ERROR = (
    "The virtual environment was not created successfully because ensurepip is not\navailable.  On Debian/Ubuntu "
    "systems, you need to install the python3-venv\npackage using the following command.\n\n    apt install "
    "python{version}-venv\n")


@pytest.fixture(scope="session")
def made_venv(tmp_path_factory) -> Path:
    """A venv as the launcher's first run makes it, before any package is installed."""
    venv = tmp_path_factory.mktemp("made") / ".venv"
    subprocess.run([str(REAL_PYTHON), "-m", "venv", str(venv)], check=True, timeout=300)
    return venv


class Unix:
    """A checkout of the launcher and the PATH it runs with."""

    def __init__(self, folder: Path) -> None:
        self.checkout = folder / "My Name" / "LoRA (2)"
        (self.checkout / "tools").mkdir(parents=True)
        shutil.copy(ROOT / "run_popup.sh", self.checkout / "run_popup.sh")
        shutil.copy(ROOT / "tools" / "ensure_venv.sh", self.checkout / "tools" / "ensure_venv.sh")
        (self.checkout / "requirements.txt").write_text(REQUIREMENTS)
        (self.checkout / "popup_main.py").write_text(
            "import json, sys\nprint('wizard got', json.dumps(sys.argv[1:]))\n")
        self.bin = folder / "bin"
        self.bin.mkdir()
        for tool in TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        self.log = folder / "python-calls.log"

    @property
    def venv(self) -> Path:
        return self.checkout / ".venv"

    def add_python(self, name: str, *, version: str = REAL_VERSION, tk: bool = True, venv_module: bool = True) -> None:
        """A Python called `name` that says it is `version`; the work is done by the Python running the tests."""
        lines = ["#!/bin/sh", f'echo "{name} $*" >> "{self.log}"',
                 'case "$*" in *"sys.version_info"*) echo ' + version + '; exit 0 ;; esac']
        if not tk:
            lines.append('[ "$*" = "-c import tkinter" ] && { echo "No module named \'_tkinter\'" >&2; exit 1; }')
        if not venv_module:  # Debian's python3 without python3-venv: the venv is made, ensurepip is missing
            message = DEBIAN_VENV_ERROR.format(version=version)
            lines.append(f'if [ "$1 $2" = "-m venv" ]; then "{REAL_PYTHON}" -m venv --without-pip "$3"; '
                         f"printf '%s' '{message}'; exit 1; fi")
        lines.append(f'exec "{REAL_PYTHON}" "$@"')
        program = self.bin / name
        program.write_text("\n".join(lines) + "\n")
        program.chmod(0o755)

    def find_python(self) -> subprocess.CompletedProcess[str]:
        """ensure_venv.sh's choice of Python, printed as "<command> <version>"."""
        script = 'source tools/ensure_venv.sh && find_python && echo "$PYTHON_COMMAND $PYTHON_VERSION"'
        return subprocess.run(["bash", "-c", script], cwd=self.checkout, env={"PATH": str(self.bin)},
                              capture_output=True, text=True, timeout=60)

    def run(self, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {"PATH": str(self.bin), "HOME": os.environ.get("HOME", "/tmp"), "PIP_RETRIES": "0", **env}
        return subprocess.run([str(self.checkout / "run_popup.sh"), *arguments], cwd="/", env=environment,
                              capture_output=True, text=True, timeout=300)

    def python_calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def unix(tmp_path: Path) -> Unix:
    return Unix(tmp_path)


@pytest.fixture
def unix_with_venv(unix: Unix, made_venv: Path) -> Unix:
    """A checkout whose first run stopped after making the venv: the next run installs, then starts."""
    unix.add_python(f"python{REAL_VERSION}")
    shutil.copytree(made_venv, unix.venv, symlinks=True)
    return unix


def test_the_stub_path_has_no_sha256sum(unix: Unix):
    assert sorted(path.name for path in unix.bin.iterdir()) == sorted(TOOLS)
    assert shutil.which("sha256sum", path=str(unix.bin)) is None


def test_first_run_without_sha256sum_creates_installs_and_starts_with_the_arguments(unix: Unix):
    unix.add_python(f"python{REAL_VERSION}")
    result = unix.run("--load-json", "/home/me/my settings/a (1).json", "--demo")
    assert result.returncode == 0, result.stderr
    assert 'wizard got ["--load-json", "/home/me/my settings/a (1).json", "--demo"]' in result.stdout
    assert f"Creating the Python environment in {unix.venv} with Python {REAL_VERSION}" in result.stdout
    assert (unix.venv / "requirements.txt.installed").read_text() == REQUIREMENTS
    assert result.stderr == ""


def test_second_run_starts_at_once(unix_with_venv: Unix):
    unix = unix_with_venv
    assert unix.run().returncode == 0
    started = time.monotonic()
    result = unix.run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'wizard got ["--help"]\n'
    assert time.monotonic() - started < 5  # one Python to compare the requirements, one for the wizard


def test_requirements_going_a_b_a_are_installed_each_time(unix_with_venv: Unix):
    unix = unix_with_venv
    requirements = unix.checkout / "requirements.txt"
    assert unix.run().returncode == 0
    requirements.write_text(REQUIREMENTS + "# B\n")
    assert "Installing the pinned packages" in unix.run().stdout
    requirements.write_text(REQUIREMENTS)
    result = unix.run()
    assert "Installing the pinned packages" in result.stdout
    assert (unix.venv / "requirements.txt.installed").read_text() == REQUIREMENTS
    assert "Installing" not in unix.run().stdout


def test_a_half_made_venv_is_made_again(unix: Unix):
    unix.add_python(f"python{REAL_VERSION}")
    subprocess.run([str(REAL_PYTHON), "-m", "venv", "--without-pip", str(unix.venv)], check=True)
    result = unix.run()
    assert result.returncode == 0, result.stderr
    assert f"The environment in {unix.venv} is incomplete" in result.stdout
    assert (unix.venv / "bin" / "pip").exists()
    assert "wizard got []" in result.stdout


def test_debians_python_without_its_venv_package_is_named_and_leaves_nothing_behind(unix: Unix):
    unix.add_python("python3.11", version="3.11", venv_module=False)
    result = unix.run()
    assert result.returncode == 1
    assert (f"Python 3.11 could not create the environment in {unix.venv} (see the message above): on Debian or "
            "Ubuntu install its venv module with sudo apt-get install python3.11-venv, then run this again."
            ) in result.stderr
    assert not unix.venv.exists()


def test_a_python_without_tk_is_used_with_the_command_that_adds_tk(unix: Unix):
    unix.add_python("python3.12", version="3.12", tk=False)
    result = unix.find_python()
    assert result.stdout == "python3.12 3.12\n"
    assert result.stderr.startswith("Note: python3.12 (Python 3.12) has no Tk, so the questions will be asked in the "
                                    "terminal; for the popups install Tk (sudo apt-get install python3-tk on Debian or "
                                    "Ubuntu, sudo dnf install python3-tkinter on Fedora, brew install python-tk@3.12 "
                                    "on macOS) and run this again.")


def test_the_newest_supported_python_with_tk_is_chosen(unix: Unix):
    unix.add_python("python3.14", version="3.14", tk=False)
    unix.add_python("python3.13", version="3.13")
    unix.add_python("python3.12", version="3.12")
    unix.add_python("python3", version="3.15")
    result = unix.find_python()
    assert (result.returncode, result.stdout, result.stderr) == (0, "python3.13 3.13\n", "")


def test_wizard_python_is_tried_first(unix: Unix):
    unix.add_python("python3.13", version="3.13")
    unix.add_python("python-mine", version="3.11")
    script = 'source tools/ensure_venv.sh && find_python && echo "$PYTHON_COMMAND $PYTHON_VERSION"'
    result = subprocess.run(["bash", "-c", script], cwd=unix.checkout, capture_output=True, text=True, timeout=60,
                            env={"PATH": str(unix.bin), "WIZARD_PYTHON": "python-mine"})
    assert result.stdout == "python-mine 3.11\n"


def test_no_supported_python_names_the_versions_needed(unix: Unix):
    unix.add_python("python3", version="3.10")
    unix.add_python("python", version="3.10")
    result = unix.run()
    assert result.returncode == 1
    assert result.stderr == ("No Python 3.11, 3.12, 3.13 or 3.14 was found (only Python 3.10): install one with Tk "
                             "(sudo apt-get install python3.11 python3.11-venv python3-tk on Debian or Ubuntu, brew "
                             "install python-tk@3.13 on macOS, or from python.org), then run this again.\n")
    assert not unix.venv.exists()


def test_no_internet_is_told_apart(unix_with_venv: Unix):
    unix = unix_with_venv
    (unix.checkout / "requirements.txt").write_text("wizard-test-no-such-package==1.0\n")
    result = unix.run(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # nothing listens there
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith(
        "The packages could not be downloaded because pypi.org cannot be reached: check the internet connection "
        "(and the proxy settings, if any), then run this again.")
    assert not (unix.venv / "requirements.txt.installed").exists()


def test_run_tests_stamps_each_requirements_file(unix_with_venv: Unix):
    unix = unix_with_venv
    (unix.checkout / "requirements-test.txt").write_text("# test packages\n")
    script = 'source tools/ensure_venv.sh && ensure_venv requirements.txt requirements-test.txt && echo "$VENV_PYTHON"'
    result = subprocess.run(["bash", "-c", script], cwd=unix.checkout, env={"PATH": str(unix.bin)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(unix.venv / "bin" / "python")
    assert (unix.venv / "requirements-test.txt.installed").read_text() == "# test packages\n"
    assert "wizard got []" in unix.run().stdout  # requirements.txt alone is still up to date
