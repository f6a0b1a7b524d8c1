"""run_popup.bat under a real cmd implementation: Wine's cmd, with stand-ins for py, python, pip and nvidia-smi.

The stand-ins are one small Windows program (tests/launcher/standin.c, built with mingw-w64) that logs how it was
called and creates what the real programs would (a venv's Scripts\\python.exe and pyvenv.cfg, pip's folder). Wine's
cmd expands a ( ... ) block as Windows does, so a variable set inside a block and read in it reads empty here too.
Two things Wine does differently are avoided by the launcher rather than by the tests: Wine's fc.exe always answers
"same" (the launcher compares with Python) and `exit /b` inside a FOR body ends the loop first (the launcher has none).

Every test runs the launcher from a checkout whose path holds spaces, parentheses, & and ^. The launcher under test
is the working tree's run_popup.bat, or the file named by WIZARD_LAUNCHER_BAT (to show what an older one does).
Missing wine or mingw-w64 make the tests FAIL with a message naming ./run_tests.sh (which installs them), unless
WIZARD_ALLOW_NO_WINE=1 is set, for machines that cannot have them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
STANDIN_SOURCE = ROOT / "tests" / "launcher" / "standin.c"
TOOLS = {"wine": "wine", "wineserver": "wine", "x86_64-w64-mingw32-gcc": "gcc-mingw-w64-x86-64"}
CHECKOUT_NAME = "My Name/LoRA (2) & co ^1"  # C:\Users\My Name\LoRA (2)\, with & and ^ as well
TORCH_PIN = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
RUN_TIMEOUT_S = 120


def windows_path(path: Path) -> str:
    """The path as a Windows program under Wine sees it: Wine's Z: drive is the Unix root."""
    return str(PureWindowsPath("Z:\\", *path.resolve().parts[1:]))


@dataclass
class Wine:
    """A Wine prefix of this test session with a wineserver kept running (each cmd then starts in about 0.5 s)."""

    prefix: Path
    standin: Path
    env: dict[str, str]
    prefix_seconds: float


@pytest.fixture(scope="session")
def wine(tmp_path_factory) -> Wine:
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        message = f"The launcher tests need {', '.join(missing)}: run ./run_tests.sh, which installs them."
        if os.environ.get("WIZARD_ALLOW_NO_WINE") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    folder = tmp_path_factory.mktemp("wine")
    standin = folder / "standin.exe"
    subprocess.run(["x86_64-w64-mingw32-gcc", "-municode", "-O2", "-Wall", "-Werror", "-static", "-o", str(standin),
                    str(STANDIN_SOURCE)], check=True, capture_output=True, timeout=120)
    env = {**os.environ, "WINEPREFIX": str(folder / "prefix"), "WINEDEBUG": "-all",
           "WINEDLLOVERRIDES": "mscoree,mshtml="}  # no Mono or Gecko installer dialogs
    env.pop("DISPLAY", None)
    started = time.monotonic()
    subprocess.run(["wineboot", "--init"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run(["wineserver", "-w"], env=env, check=True, timeout=300)  # the prefix is written when it exits
    subprocess.run(["wineserver", "-p"], env=env, check=True, timeout=60)
    # Wine's own background processes start with the first program and live as long as the server: started here,
    # they hold no test's output pipe open.
    subprocess.run(["wine", "cmd", "/c", "echo"], env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    prefix_seconds = time.monotonic() - started
    yield Wine(folder / "prefix", standin, env, prefix_seconds)
    subprocess.run(["wineserver", "-k"], env=env, timeout=60)


@dataclass
class Run:
    returncode: int
    output: str
    calls: list[dict]

    def commands(self) -> list[list[str]]:
        """Each logged call as [program name, arguments...]."""
        return [[PureWindowsPath(call["exe"]).name.lower(), *call["args"]] for call in self.calls]


@dataclass
class Machine:
    """A Windows machine as the launcher finds it: which programs are on PATH and how they behave (see standin.c)."""

    wine: Wine
    folder: Path
    programs: tuple[str, ...] = ()
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def checkout(self) -> Path:
        return self.folder / CHECKOUT_NAME

    @property
    def venv(self) -> Path:
        return self.checkout / ".venv"

    def run(self, arguments: str = "", *, pause_allowed: bool = False) -> Run:
        """Run the launcher as a terminal would: `"<checkout>\\run_popup.bat" <arguments>`."""
        bin_folder = self.folder / "bin"
        shutil.rmtree(bin_folder, ignore_errors=True)
        bin_folder.mkdir()
        for program in self.programs:
            shutil.copy(self.wine.standin, bin_folder / f"{program}.exe")
        config = self.folder / "standin.cfg"
        config.write_text("".join(f"{key}={value}\n" for key, value in self.settings.items()))
        log = self.folder / "calls.log"
        log.unlink(missing_ok=True)
        driver = self.folder / "driver.bat"
        driver.write_bytes(f'@echo off\r\n"{windows_path(self.checkout)}\\run_popup.bat" {arguments}\r\n'.encode())
        env = {**self.wine.env, "WINEPATH": windows_path(bin_folder), "STANDIN_CONFIG": windows_path(config),
               "STANDIN_LOG": windows_path(log)}
        if not pause_allowed:
            env["WIZARD_NO_PAUSE"] = "1"
        transcript = self.folder / "output.txt"
        with transcript.open("wb") as output:  # a file, not a pipe: a Wine process left running cannot hold it up
            result = subprocess.run(["wine", "cmd", "/c", windows_path(driver)], env=env, stdin=subprocess.DEVNULL,
                                    stdout=output, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
        text = transcript.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
        return Run(result.returncode, text, calls)


@pytest.fixture
def machine(wine: Wine, tmp_path: Path) -> Machine:
    """A checkout in a folder named like C:\\Users\\My Name\\LoRA (2)\\: the launcher, requirements, popup_main.py."""
    launcher = Path(os.environ.get("WIZARD_LAUNCHER_BAT", ROOT / "run_popup.bat"))
    checkout = tmp_path / CHECKOUT_NAME
    checkout.mkdir(parents=True)
    shutil.copy(launcher, checkout / "run_popup.bat")
    shutil.copy(ROOT / "requirements.txt", checkout / "requirements.txt")
    shutil.copy(ROOT / "popup_main.py", checkout / "popup_main.py")
    return Machine(wine, tmp_path)


def venv_python(machine: Machine) -> str:
    return windows_path(machine.venv / "Scripts" / "python.exe")


def installs_of(run: Run) -> list[list[str]]:
    """The `pip install` calls, as their arguments after `install`."""
    return [command[command.index("install") + 1:] for command in run.commands()
            if command[1:4] == ["-m", "pip", "install"]]


def wizard_calls(run: Run, machine: Machine) -> list[list[str]]:
    script = windows_path(machine.checkout / "popup_main.py")
    return [call["args"][1:] for call in run.calls if call["args"][:1] == [script]]


# --- the first run ------------------------------------------------------------------------------------------------


def test_first_run_with_only_the_py_launcher_creates_the_venv_installs_and_starts(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.13.1"}
    run = machine.run("--demo")
    assert run.returncode == 0, run.output
    assert ["py.exe", "-3.13", "-m", "venv", windows_path(machine.venv)] in run.commands()
    assert (machine.venv / "Scripts" / "python.exe").is_file()
    requirements = machine.checkout / "requirements.txt"
    assert installs_of(run) == [["--disable-pip-version-check", "-r", windows_path(requirements)]]
    assert wizard_calls(run, machine) == [["--demo"]]
    assert (machine.venv / "requirements.txt.installed").read_bytes() == requirements.read_bytes()
    assert "Creating the Python environment" in run.output


def test_first_run_with_only_python_on_path(machine: Machine):
    machine.programs = ("python",)
    machine.settings = {"python_version": "3.12.4"}
    run = machine.run()
    assert run.returncode == 0, run.output
    assert ["python.exe", "-m", "venv", windows_path(machine.venv)] in run.commands()
    assert wizard_calls(run, machine) == [[]]


def test_the_newest_supported_python_with_tk_is_chosen(machine: Machine):
    machine.programs = ("py", "python")
    machine.settings = {"py_versions": "3.15.0,3.14.0,3.13.1,3.11.9", "no_tk": "3.14", "python_version": "3.12.4"}
    run = machine.run()
    assert run.returncode == 0, run.output
    venvs = [command for command in run.commands() if command[-3:-1] == ["-m", "venv"]]
    assert venvs == [["py.exe", "-3.13", "-m", "venv", windows_path(machine.venv)]]


def test_no_python_at_all_says_which_to_install_and_keeps_nothing(machine: Machine):
    run = machine.run()
    assert run.returncode == 1
    assert "No Python was found: install Python 3.14 from python.org" in run.output
    assert "3.11, 3.12, 3.13 or 3.14" in run.output
    assert not machine.venv.exists()
    assert "-m venv" not in run.output  # nothing was run without a Python


def test_only_unsupported_pythons_name_the_versions_needed(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.10.11"}
    run = machine.run()
    assert run.returncode == 1
    assert "Python 3.10 was found, but the wizard needs Python 3.11, 3.12, 3.13 or 3.14" in run.output
    assert not machine.venv.exists()


def test_python_without_tk_says_how_to_add_it(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.13.1", "no_tk": "3.13"}
    run = machine.run()
    assert run.returncode == 1
    assert 'Python 3.13 was found, but without Tk' in run.output
    assert 'tick "tcl/tk and IDLE"' in run.output


# --- the CUDA build of PyTorch ------------------------------------------------------------------------------------


def test_nvidia_smi_present_installs_the_cuda_build_first(machine: Machine):
    machine.programs = ("py", "nvidia-smi")
    machine.settings = {"py_versions": "3.12.1", "torch_build": "cu130"}
    run = machine.run()
    assert run.returncode == 0, run.output
    assert installs_of(run) == [
        ["--disable-pip-version-check", f"torch=={TORCH_PIN}+cu130", "--index-url",
         "https://download.pytorch.org/whl/cu130"],
        ["--disable-pip-version-check", "-r", windows_path(machine.checkout / "requirements.txt")],
    ]
    asked = run.commands().index(["python.exe", "-m", "wizard.hardware"])
    assert run.commands()[asked - 1] == ["nvidia-smi.exe"]  # asked only after nvidia-smi answered


def test_without_nvidia_smi_no_cuda_build_is_installed(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1", "torch_build": "cu130"}
    run = machine.run()
    assert run.returncode == 0, run.output
    assert ["python.exe", "-m", "wizard.hardware"] not in run.commands()
    assert len(installs_of(run)) == 1


def test_a_failed_cuda_build_is_said_and_tried_again_next_time(machine: Machine):
    machine.programs = ("py", "nvidia-smi")
    machine.settings = {"py_versions": "3.12.1", "torch_build": "cu126", "torch_install_fails": "1"}
    run = machine.run()
    assert run.returncode == 0, run.output
    assert "PyTorch's CUDA build could not be installed" in run.output
    assert wizard_calls(run, machine) == [[]]
    assert not (machine.venv / "requirements.txt.installed").exists()
    again = machine.run()
    assert installs_of(again)[0][1] == f"torch=={TORCH_PIN}+cu126"


# --- paths, arguments, later runs ---------------------------------------------------------------------------------


def test_arguments_and_a_path_with_spaces_parentheses_ampersand_and_caret_pass_unchanged(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1"}
    run = machine.run(r'--load-json "C:\my configs\a&b (1).json" --queue "D:\x ^y" --no-popups')
    assert run.returncode == 0, run.output
    assert wizard_calls(run, machine) == [["--load-json", r"C:\my configs\a&b (1).json", "--queue", r"D:\x ^y",
                                           "--no-popups"]]
    assert run.calls[-1]["exe"] == venv_python(machine)


def test_second_run_starts_at_once(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1"}
    assert machine.run().returncode == 0
    run = machine.run("--demo")
    assert run.returncode == 0, run.output
    stamp_check, start = run.commands()
    assert stamp_check[:2] == ["python.exe", "-c"] and start[2:] == ["--demo"]
    assert "Installing" not in run.output


def test_changed_requirements_are_installed_again_even_back_to_an_earlier_file(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1"}
    requirements = machine.checkout / "requirements.txt"
    first = requirements.read_bytes()
    assert machine.run().returncode == 0
    requirements.write_bytes(first + b"einops==0.8.2\r\n")
    assert len(installs_of(machine.run())) == 1
    requirements.write_bytes(first)  # A -> B -> A
    run = machine.run()
    assert len(installs_of(run)) == 1
    assert (machine.venv / "requirements.txt.installed").read_bytes() == first
    assert installs_of(machine.run()) == []


def test_a_venv_without_pip_is_made_again(machine: Machine):
    """A first run that stopped after the venv was created (closed window, ensurepip failure) leaves no pip."""
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1", "venv_without_pip": "1"}
    failed = machine.run()
    assert failed.returncode == 1
    assert "could not create the environment" in failed.output
    assert not machine.venv.exists()
    # the same half-made venv, left by an interrupted run of an older launcher
    (machine.venv / "Scripts").mkdir(parents=True)
    shutil.copy(machine.wine.standin, machine.venv / "Scripts" / "python.exe")
    (machine.venv / "pyvenv.cfg").write_text("version = 3.12.1\n")
    machine.settings = {"py_versions": "3.12.1"}
    run = machine.run()
    assert run.returncode == 0, run.output
    assert "is incomplete" in run.output
    assert ["py.exe", "-3.12", "-m", "venv", windows_path(machine.venv)] in run.commands()
    assert wizard_calls(run, machine) == [[]]


# --- failures: one sentence each, and the window stays open -------------------------------------------------------


def test_a_pip_error_is_told_apart_from_no_internet(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1", "pip_fails": "1"}
    run = machine.run()
    assert run.returncode == 1
    assert "Installing the packages failed (pip's messages are above)" in run.output
    assert not (machine.venv / "requirements.txt.installed").exists()
    machine.settings["internet"] = "0"
    run = machine.run()
    assert run.returncode == 1
    assert "pypi.org cannot be reached: check the internet connection" in run.output
    assert wizard_calls(run, machine) == []


def test_the_window_stays_open_after_a_failure_but_not_after_success(machine: Machine):
    failed = machine.run(pause_allowed=True)
    assert failed.output.rstrip().endswith("Press any key to continue...")
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1"}
    assert "Press any key" not in machine.run(pause_allowed=True).output


def test_the_wizard_exit_code_comes_back(machine: Machine):
    machine.programs = ("py",)
    machine.settings = {"py_versions": "3.12.1", "wizard_exit": "3"}
    assert machine.run().returncode == 3
